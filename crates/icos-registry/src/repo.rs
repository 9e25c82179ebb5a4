//! The TUF repository on disk and the governance flow over it.
//!
//! Layout of a repository directory:
//!
//! ```text
//! DIR/metadata/N.root.json        every root version (1.root.json is the trust root)
//! DIR/metadata/root.json          the newest root
//! DIR/metadata/N.targets.json     targets, signed by a governance quorum
//! DIR/metadata/N.admissions.json  node admissions, signed by the online key
//! DIR/metadata/N.snapshot.json    snapshot, signed by the online key
//! DIR/metadata/timestamp.json     timestamp, signed by the online key
//! DIR/targets/<sha256>.registry.json   the registry documents
//! DIR/targets/<sha256>.admission-N.json join requests admitted
//! DIR/governance/proposals/N.json      proposals and their votes
//! DIR/keys/online.pem             the online key (never served)
//! ```
//!
//! Only `metadata/` and `targets/` are meant to be served.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tough::TargetName;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{
    DelegatedRole, Delegations, Hashes, Metafile, PathPattern, PathSet, Role, RoleKeys, RoleType,
    Root, Signature, Signed, Snapshot, Target, Targets, Timestamp as TimestampRole,
};

use crate::error::RepoError;
use crate::join::{JOIN_SUCCESS, JoinRequest, JoinResponse, already_registered, apply_admissions};
use crate::keys::{self, SigningKey};
use crate::model::{REGISTRY_TARGET, Registry};
use crate::proposal::Proposal;

const SPEC_VERSION: &str = "1.0.0";

/// The delegated role holding node admissions (join requests).
pub const ADMISSIONS_ROLE: &str = "admissions";
/// Names of admission targets: `admission-<6-digit sequence>.json`.
const ADMISSION_PATTERN: &str = "admission-*";

/// How long each kind of metadata stays valid when signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// root.json.
    pub root: SignedDuration,
    /// targets.json (set when proposed; renewed by every executed proposal).
    pub targets: SignedDuration,
    /// snapshot.json.
    pub snapshot: SignedDuration,
    /// timestamp.json: short, re-signed by `refresh`.
    pub timestamp: SignedDuration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: i64 = 24 * 3600;
        Lifetimes {
            root: SignedDuration::from_secs(5 * 365 * DAY),
            targets: SignedDuration::from_secs(365 * DAY),
            snapshot: SignedDuration::from_secs(30 * DAY),
            timestamp: SignedDuration::from_secs(7 * DAY),
        }
    }
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

/// The registry and metadata a repository currently publishes.
#[derive(Debug, Clone)]
pub struct Published {
    /// The newest root.
    pub root: Signed<Root>,
    /// The published targets.
    pub targets: Signed<Targets>,
    /// The published snapshot.
    pub snapshot: Signed<Snapshot>,
    /// The published timestamp.
    pub timestamp: Signed<TimestampRole>,
    /// The published admissions (delegated targets of the online key).
    pub admissions_role: Signed<Targets>,
    /// The registry document as governance signed it.
    pub governance_registry: Registry,
    /// The admitted join requests, in order.
    pub admissions: Vec<JoinRequest>,
    /// The registry in effect: the governance registry with the
    /// admissions applied.
    pub registry: Registry,
}

/// A proposal file (`governance/proposals/N.json`).
///
/// `targets` is the exact targets metadata that will be published if the
/// proposal passes; a vote is a governance key's Ed25519 signature over its
/// canonical JSON, so `execute` only assembles the votes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalFile {
    /// The proposal number.
    pub id: u64,
    /// A one-line summary.
    pub summary: String,
    /// The change.
    pub proposal: Proposal,
    /// The targets version the change was made against.
    pub base_targets_version: u64,
    /// How many admissions were published when the change was made.
    #[serde(default)]
    pub base_admissions: usize,
    /// The registry after the change.
    pub registry: Registry,
    /// The targets metadata to publish (unsigned part).
    pub targets: Targets,
    /// Votes: signatures over the canonical form of `targets`.
    #[serde(default)]
    pub votes: Vec<Signature>,
    /// Whether it was executed.
    #[serde(default)]
    pub executed: bool,
}

/// The tally of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Valid votes.
    pub have: usize,
    /// Threshold.
    pub need: usize,
    /// Number of governance keys.
    pub of: usize,
}

fn now_secs() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Metadata is plain data; serializing into memory cannot fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn canonical<T: Role>(role: &T) -> Vec<u8> {
    role.canonical_form().unwrap_or_default()
}

/// Writes a file atomically (temporary file + rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RepoError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, bytes).map_err(|e| RepoError::io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| RepoError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RepoError::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RepoError> {
    let bytes = std::fs::read(path).map_err(|e| RepoError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| RepoError::corrupt(path, e.to_string()))
}

fn sign_role<T: Role + Clone>(role: &T, signers: &[&SigningKey]) -> Signed<T> {
    let msg = canonical(role);
    let mut seen = BTreeSet::new();
    let signatures = signers
        .iter()
        .filter(|k| seen.insert(k.key_id()))
        .map(|k| Signature {
            keyid: k.key_id(),
            sig: k.sign(&msg).into(),
        })
        .collect();
    Signed {
        signed: role.clone(),
        signatures,
    }
}

fn metafile(version: u64, bytes: &[u8]) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Sha256::digest(bytes).to_vec().into(),
            _extra: HashMap::new(),
        }),
        version: nz(version),
        _extra: HashMap::new(),
    }
}

fn role_keys(root: &Root, role: RoleType) -> (Vec<Decoded<Hex>>, usize) {
    root.roles
        .get(&role)
        .map(|r| {
            (
                r.keyids.clone(),
                usize::try_from(r.threshold.get()).unwrap_or(usize::MAX),
            )
        })
        .unwrap_or_default()
}

/// A new root: governance keys hold root and targets (threshold k), the
/// online key holds snapshot and timestamp.
pub fn make_root(
    version: u64,
    governance: &[tough::schema::key::Key],
    threshold: u64,
    online: &tough::schema::key::Key,
    expires: Timestamp,
) -> Result<Root, RepoError> {
    let ids: Vec<Decoded<Hex>> = governance.iter().map(keys::key_id).collect();
    let distinct: BTreeSet<_> = ids.iter().collect();
    if distinct.len() != ids.len() {
        return Err(RepoError::Usage(
            "the same governance key is given twice".into(),
        ));
    }
    let online_id = keys::key_id(online);
    if distinct.contains(&online_id) {
        return Err(RepoError::Usage(
            "the online key must not be a governance key".into(),
        ));
    }
    if threshold == 0 || threshold > ids.len() as u64 {
        return Err(RepoError::Usage(format!(
            "threshold {threshold} is impossible with {} governance key(s): it must be 1..={}",
            ids.len(),
            ids.len()
        )));
    }
    let mut keys = HashMap::new();
    for k in governance {
        keys.insert(keys::key_id(k), k.clone());
    }
    keys.insert(online_id.clone(), online.clone());
    let gov = RoleKeys {
        keyids: ids,
        threshold: nz(threshold),
        _extra: HashMap::new(),
    };
    let on = RoleKeys {
        keyids: vec![online_id],
        threshold: NonZeroU64::MIN,
        _extra: HashMap::new(),
    };
    let mut roles = HashMap::new();
    roles.insert(RoleType::Root, gov.clone());
    roles.insert(RoleType::Targets, gov);
    roles.insert(RoleType::Snapshot, on.clone());
    roles.insert(RoleType::Timestamp, on);
    Ok(Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version: nz(version),
        expires,
        keys,
        roles,
        _extra: HashMap::new(),
    })
}

fn registry_target(registry: &Registry) -> (Vec<u8>, Target) {
    let bytes = registry.to_bytes();
    let mut custom = HashMap::new();
    custom.insert(
        "registry_version".to_owned(),
        serde_json::Value::from(registry.version),
    );
    let target = Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: Sha256::digest(&bytes).to_vec().into(),
            _extra: HashMap::new(),
        },
        custom,
        _extra: HashMap::new(),
    };
    (bytes, target)
}

fn make_targets(
    version: u64,
    expires: Timestamp,
    registry: &Registry,
    online: &Key,
) -> Result<(Vec<u8>, Targets), RepoError> {
    let (bytes, target) = registry_target(registry);
    let mut targets = Targets::new(SPEC_VERSION.into(), nz(version), expires);
    let name = TargetName::new(REGISTRY_TARGET)
        .map_err(|e| RepoError::Usage(format!("target name: {e}")))?;
    targets.targets.insert(name, target);
    let online_id = keys::key_id(online);
    let mut delegation_keys = HashMap::new();
    delegation_keys.insert(online_id.clone(), online.clone());
    let pattern = PathPattern::new(ADMISSION_PATTERN)
        .map_err(|e| RepoError::Usage(format!("path pattern: {e}")))?;
    targets.delegations = Some(Delegations {
        keys: delegation_keys,
        roles: vec![DelegatedRole {
            name: ADMISSIONS_ROLE.into(),
            keyids: vec![online_id],
            threshold: NonZeroU64::MIN,
            paths: PathSet::Paths(vec![pattern]),
            terminating: true,
            targets: None,
        }],
    });
    Ok((bytes, targets))
}

fn online_key_of(root: &Root) -> Result<Key, RepoError> {
    let (ids, _) = role_keys(root, RoleType::Timestamp);
    ids.first()
        .and_then(|id| root.keys.get(id))
        .cloned()
        .ok_or_else(|| RepoError::Usage("the root lists no timestamp key".into()))
}

impl Repo {
    /// A repository at `dir` (not checked).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Repo { dir: dir.into() }
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/metadata`.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    /// `DIR/targets`.
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// `DIR/governance/proposals`.
    pub fn proposals_dir(&self) -> PathBuf {
        self.dir.join("governance").join("proposals")
    }

    /// `DIR/keys/online.pem`.
    pub fn online_key_path(&self) -> PathBuf {
        self.dir.join("keys").join("online.pem")
    }

    /// `DIR/metadata/1.root.json`: the trust root nodes bake in.
    pub fn trust_root_path(&self) -> PathBuf {
        self.metadata_dir().join("1.root.json")
    }

    /// Creates a new repository: root 1, an empty registry (version 1) as
    /// targets 1, snapshot and timestamp. Every governance key given signs
    /// root and targets, so at least `threshold` of them are needed.
    pub fn init(
        dir: &Path,
        governance: &[SigningKey],
        threshold: u64,
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<Repo, RepoError> {
        let repo = Repo::new(dir);
        if repo.metadata_dir().join("root.json").exists() {
            return Err(RepoError::Usage(format!(
                "{} already holds a registry repository",
                dir.display()
            )));
        }
        let now = now_secs();
        let gov_keys: Vec<_> = governance.iter().map(SigningKey::tuf_key).collect();
        let root = make_root(
            1,
            &gov_keys,
            threshold,
            &online.tuf_key(),
            now + lifetimes.root,
        )?;
        let signers: Vec<&SigningKey> = governance.iter().collect();
        let root = sign_role(&root, &signers);
        let registry = Registry::genesis();
        let (reg_bytes, targets) =
            make_targets(1, now + lifetimes.targets, &registry, &online.tuf_key())?;
        let targets = sign_role(&targets, &signers);
        for d in [
            repo.metadata_dir(),
            repo.targets_dir(),
            repo.proposals_dir(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| RepoError::io(&d, e))?;
        }
        let root_bytes = to_json(&root);
        write_atomic(&repo.trust_root_path(), &root_bytes)?;
        write_atomic(&repo.metadata_dir().join("root.json"), &root_bytes)?;
        let admissions = Targets::new(
            SPEC_VERSION.into(),
            NonZeroU64::MIN,
            now + lifetimes.targets,
        );
        let admissions = repo.write_admissions(&sign_role(&admissions, &[online]))?;
        repo.write_targets(&targets, &reg_bytes)?;
        let targets_meta = (1, to_json(&targets));
        repo.publish_snapshot(&targets_meta, &admissions, online, lifetimes, 1)?;
        Ok(repo)
    }

    /// Writes a targets role and its registry target (new files only; not
    /// visible until a snapshot lists them).
    fn write_targets(
        &self,
        targets: &Signed<Targets>,
        registry_bytes: &[u8],
    ) -> Result<(u64, Vec<u8>), RepoError> {
        let sha = sha256_hex(registry_bytes);
        write_atomic(
            &self.targets_dir().join(format!("{sha}.{REGISTRY_TARGET}")),
            registry_bytes,
        )?;
        let tv = targets.signed.version.get();
        let targets_bytes = to_json(targets);
        write_atomic(
            &self.metadata_dir().join(format!("{tv}.targets.json")),
            &targets_bytes,
        )?;
        Ok((tv, targets_bytes))
    }

    /// Publishes new targets (and registry) with the admissions currently
    /// published: new snapshot, then timestamp.
    fn publish(
        &self,
        published: &Published,
        targets: &Signed<Targets>,
        registry_bytes: &[u8],
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<(), RepoError> {
        let targets = self.write_targets(targets, registry_bytes)?;
        let admissions = self.snapshot_listed(&published.snapshot.signed, ADMISSIONS_ROLE)?;
        self.publish_snapshot(
            &targets,
            &admissions,
            online,
            lifetimes,
            published.snapshot.signed.version.get() + 1,
        )
    }

    /// Writes an admissions role (new file only).
    fn write_admissions(&self, role: &Signed<Targets>) -> Result<(u64, Vec<u8>), RepoError> {
        let v = role.signed.version.get();
        let bytes = to_json(role);
        write_atomic(
            &self
                .metadata_dir()
                .join(format!("{v}.{ADMISSIONS_ROLE}.json")),
            &bytes,
        )?;
        Ok((v, bytes))
    }

    /// Reads the published file of a metadata role listed in the snapshot.
    fn snapshot_listed(
        &self,
        snapshot: &Snapshot,
        role: &str,
    ) -> Result<(u64, Vec<u8>), RepoError> {
        let meta = snapshot.meta.get(&format!("{role}.json")).ok_or_else(|| {
            RepoError::corrupt(
                &self.metadata_dir(),
                format!("the snapshot lists no {role}.json"),
            )
        })?;
        let v = meta.version.get();
        let path = self.metadata_dir().join(format!("{v}.{role}.json"));
        let bytes = std::fs::read(&path).map_err(|e| RepoError::io(&path, e))?;
        if let Some(h) = &meta.hashes
            && Sha256::digest(&bytes).as_slice() != h.sha256.as_ref()
        {
            return Err(RepoError::corrupt(
                &path,
                "SHA-256 differs from the snapshot",
            ));
        }
        Ok((v, bytes))
    }

    /// Writes a new snapshot listing `targets` and `admissions` (version,
    /// bytes), then the timestamp, last and atomically: readers see the old
    /// or the new version, never a mix.
    fn publish_snapshot(
        &self,
        targets: &(u64, Vec<u8>),
        admissions: &(u64, Vec<u8>),
        online: &SigningKey,
        lifetimes: &Lifetimes,
        snapshot_version: u64,
    ) -> Result<(), RepoError> {
        let now = now_secs();
        let mut snapshot = Snapshot::new(
            SPEC_VERSION.into(),
            nz(snapshot_version),
            now + lifetimes.snapshot,
        );
        snapshot
            .meta
            .insert("targets.json".into(), metafile(targets.0, &targets.1));
        snapshot.meta.insert(
            format!("{ADMISSIONS_ROLE}.json"),
            metafile(admissions.0, &admissions.1),
        );
        let snapshot = sign_role(&snapshot, &[online]);
        let snap_bytes = to_json(&snapshot);
        write_atomic(
            &self
                .metadata_dir()
                .join(format!("{snapshot_version}.snapshot.json")),
            &snap_bytes,
        )?;
        let ts_version = match self.read_timestamp() {
            Ok(ts) => ts.signed.version.get() + 1,
            Err(_) => 1,
        };
        let mut ts = TimestampRole::new(
            SPEC_VERSION.into(),
            nz(ts_version),
            now + lifetimes.timestamp,
        );
        ts.meta.insert(
            "snapshot.json".into(),
            metafile(snapshot_version, &snap_bytes),
        );
        let ts = sign_role(&ts, &[online]);
        write_atomic(&self.metadata_dir().join("timestamp.json"), &to_json(&ts))
    }

    fn read_timestamp(&self) -> Result<Signed<TimestampRole>, RepoError> {
        read_json(&self.metadata_dir().join("timestamp.json"))
    }

    fn read_target(&self, target: &Target, name: &str) -> Result<Vec<u8>, RepoError> {
        let sha = hex::encode(&target.hashes.sha256);
        let path = self.targets_dir().join(format!("{sha}.{name}"));
        let bytes = std::fs::read(&path).map_err(|e| RepoError::io(&path, e))?;
        if sha256_hex(&bytes) != sha {
            return Err(RepoError::corrupt(
                &path,
                "SHA-256 differs from the signed metadata",
            ));
        }
        Ok(bytes)
    }

    /// Reads what the repository publishes now, checking hashes along the
    /// way (signatures are the client's business, see [`crate::client`]).
    pub fn published(&self) -> Result<Published, RepoError> {
        let md = self.metadata_dir();
        let root: Signed<Root> = read_json(&md.join("root.json"))?;
        let timestamp = self.read_timestamp()?;
        let snap_meta = timestamp.signed.meta.get("snapshot.json").ok_or_else(|| {
            RepoError::corrupt(&md.join("timestamp.json"), "no snapshot.json entry")
        })?;
        let snap_path = md.join(format!("{}.snapshot.json", snap_meta.version));
        let snapshot: Signed<Snapshot> = read_json(&snap_path)?;
        let (t_version, t_bytes) = self.snapshot_listed(&snapshot.signed, "targets")?;
        let t_path = md.join(format!("{t_version}.targets.json"));
        let targets: Signed<Targets> = serde_json::from_slice(&t_bytes)
            .map_err(|e| RepoError::corrupt(&t_path, e.to_string()))?;
        let name = TargetName::new(REGISTRY_TARGET)
            .map_err(|e| RepoError::Usage(format!("target name: {e}")))?;
        let target = targets
            .signed
            .targets
            .get(&name)
            .ok_or_else(|| RepoError::corrupt(&t_path, "no registry.json target"))?;
        let bytes = self.read_target(target, REGISTRY_TARGET)?;
        let reg_path = self.targets_dir().join(REGISTRY_TARGET);
        let governance_registry =
            Registry::from_bytes(&bytes).map_err(|error| RepoError::Invalid {
                path: reg_path.clone(),
                error,
            })?;
        let (a_version, a_bytes) = self.snapshot_listed(&snapshot.signed, ADMISSIONS_ROLE)?;
        let a_path = md.join(format!("{a_version}.{ADMISSIONS_ROLE}.json"));
        let admissions_role: Signed<Targets> = serde_json::from_slice(&a_bytes)
            .map_err(|e| RepoError::corrupt(&a_path, e.to_string()))?;
        let mut names: Vec<&TargetName> = admissions_role.signed.targets.keys().collect();
        names.sort_by(|a, b| a.raw().cmp(b.raw()));
        let mut admissions = Vec::new();
        for name in names {
            let bytes = self.read_target(&admissions_role.signed.targets[name], name.raw())?;
            let req: JoinRequest = serde_json::from_slice(&bytes)
                .map_err(|e| RepoError::corrupt(&a_path, format!("{}: {e}", name.raw())))?;
            admissions.push(req);
        }
        let (registry, _, refused) = apply_admissions(&governance_registry, &admissions);
        for (i, e) in refused {
            tracing::warn!(admission = i, error = %e, "published admission does not apply");
        }
        Ok(Published {
            root,
            targets,
            snapshot,
            timestamp,
            admissions_role,
            governance_registry,
            admissions,
            registry,
        })
    }

    /// Admits a node on a join request, without a vote: checks it against
    /// the registry in effect (operator, signatures, allowance, duplicates)
    /// and publishes it as the next admission. Returns the node id.
    pub fn join(
        &self,
        request: &JoinRequest,
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<(String, Registry), RepoError> {
        let published = self.published()?;
        check_online_key(&published.root.signed, online)?;
        let (registry, id) = request
            .admit(&published.registry)
            .map_err(RepoError::Join)?;
        let bytes = to_json(request);
        let seq = published.admissions_role.signed.targets.len() + 1;
        let name = format!("admission-{seq:06}.json");
        let target = Target {
            length: bytes.len() as u64,
            hashes: Hashes {
                sha256: Sha256::digest(&bytes).to_vec().into(),
                _extra: HashMap::new(),
            },
            custom: HashMap::new(),
            _extra: HashMap::new(),
        };
        write_atomic(
            &self
                .targets_dir()
                .join(format!("{}.{name}", sha256_hex(&bytes))),
            &bytes,
        )?;
        let mut role = published.admissions_role.signed.clone();
        role.version = nz(role.version.get() + 1);
        role.expires = now_secs() + lifetimes.targets;
        let target_name =
            TargetName::new(name).map_err(|e| RepoError::Usage(format!("target name: {e}")))?;
        role.targets.insert(target_name, target);
        let admissions = self.write_admissions(&sign_role(&role, &[online]))?;
        let targets = self.snapshot_listed(&published.snapshot.signed, "targets")?;
        self.publish_snapshot(
            &targets,
            &admissions,
            online,
            lifetimes,
            published.snapshot.signed.version.get() + 1,
        )?;
        Ok((id, registry))
    }

    /// [`Repo::join`] for a registry service: a request repeating a node
    /// already registered with the same key, operator and address (its
    /// signatures still checked) is answered as such instead of refused,
    /// so a node that lost the answer can ask again.
    pub fn admit(
        &self,
        request: &JoinRequest,
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<JoinResponse, RepoError> {
        let published = self.published()?;
        check_online_key(&published.root.signed, online)?;
        let remaining = |r: &Registry| {
            r.node_operators
                .get(&request.operator)
                .map_or(0, |o| o.allowance)
        };
        if let Some(id) = already_registered(&published.registry, request) {
            request
                .verify(&published.registry)
                .map_err(RepoError::Join)?;
            return Ok(JoinResponse {
                message: format!("node {id} is already registered"),
                node_id: id,
                operator: request.operator.clone(),
                remaining_allowance: remaining(&published.registry),
                admitted: false,
            });
        }
        let (id, registry) = self.join(request, online, lifetimes)?;
        Ok(JoinResponse {
            message: JOIN_SUCCESS.to_owned(),
            node_id: id,
            operator: request.operator.clone(),
            remaining_allowance: remaining(&registry),
            admitted: true,
        })
    }

    /// Checks that `online` is the snapshot and timestamp key of the
    /// published root.
    pub fn check_online_key(&self, online: &SigningKey) -> Result<(), RepoError> {
        let root: Signed<Root> = read_json(&self.metadata_dir().join("root.json"))?;
        check_online_key(&root.signed, online)
    }

    fn proposal_path(&self, id: u64) -> PathBuf {
        self.proposals_dir().join(format!("{id}.json"))
    }

    /// Creates a proposal file against the published registry. The change
    /// is applied now, so an invalid proposal is refused before any vote.
    pub fn propose(
        &self,
        proposal: Proposal,
        summary: &str,
        lifetimes: &Lifetimes,
    ) -> Result<(PathBuf, ProposalFile), RepoError> {
        let published = self.published()?;
        let registry =
            proposal
                .apply(&published.registry)
                .map_err(|error| RepoError::Proposal {
                    path: PathBuf::from(proposal.kind()),
                    error,
                })?;
        let base = published.targets.signed.version.get();
        let online = online_key_of(&published.root.signed)?;
        let (_, targets) =
            make_targets(base + 1, now_secs() + lifetimes.targets, &registry, &online)?;
        let dir = self.proposals_dir();
        std::fs::create_dir_all(&dir).map_err(|e| RepoError::io(&dir, e))?;
        let mut id = 1;
        while self.proposal_path(id).exists() {
            id += 1;
        }
        let file = ProposalFile {
            id,
            summary: if summary.is_empty() {
                proposal.kind().to_owned()
            } else {
                summary.to_owned()
            },
            proposal,
            base_targets_version: base,
            base_admissions: published.admissions.len(),
            registry,
            targets,
            votes: Vec::new(),
            executed: false,
        };
        let path = self.proposal_path(id);
        write_atomic(&path, &to_json(&file))?;
        Ok((path, file))
    }

    /// Loads a proposal file and checks it is what it claims: its change
    /// applied to the published registry gives its registry, and its
    /// targets metadata names exactly that registry.
    pub fn load_proposal(&self, path: &Path) -> Result<(ProposalFile, Published), RepoError> {
        let file: ProposalFile = read_json(path)?;
        let published = self.published()?;
        if file.executed {
            return Ok((file, published));
        }
        let current = published.targets.signed.version.get();
        if file.base_admissions != published.admissions.len() {
            return Err(RepoError::corrupt(
                path,
                format!(
                    "{} node(s) joined since it was proposed ({} then, {} now); propose again",
                    published
                        .admissions
                        .len()
                        .saturating_sub(file.base_admissions),
                    file.base_admissions,
                    published.admissions.len()
                ),
            ));
        }
        if file.base_targets_version != current {
            return Err(RepoError::Stale {
                path: path.to_owned(),
                base: file.base_targets_version,
                current,
            });
        }
        let expected =
            file.proposal
                .apply(&published.registry)
                .map_err(|error| RepoError::Proposal {
                    path: path.to_owned(),
                    error,
                })?;
        if expected != file.registry {
            return Err(RepoError::corrupt(
                path,
                "its registry is not the result of its proposal",
            ));
        }
        let (_, target) = registry_target(&file.registry);
        let name = TargetName::new(REGISTRY_TARGET)
            .map_err(|e| RepoError::Usage(format!("target name: {e}")))?;
        if file.targets.targets.len() != 1
            || file.targets.targets.get(&name) != Some(&target)
            || file.targets.version.get() != current + 1
        {
            return Err(RepoError::corrupt(
                path,
                "its targets metadata does not describe its registry at the next version",
            ));
        }
        Ok((file, published))
    }

    /// Counts the valid votes of a proposal; a vote that does not verify is
    /// an error naming its key id.
    pub fn tally(
        &self,
        path: &Path,
        file: &ProposalFile,
        root: &Root,
    ) -> Result<(Tally, Vec<Signature>), RepoError> {
        let (ids, need) = role_keys(root, RoleType::Targets);
        let msg = canonical(&file.targets);
        let mut valid = Vec::new();
        let mut seen = BTreeSet::new();
        for vote in &file.votes {
            let key_id = hex::encode(&vote.keyid);
            let key = root.keys.get(&vote.keyid);
            let ok =
                ids.contains(&vote.keyid) && key.is_some_and(|k| keys::verify(k, &msg, &vote.sig));
            if !ok {
                return Err(RepoError::BadVote {
                    path: path.to_owned(),
                    key_id,
                });
            }
            if seen.insert(key_id) {
                valid.push(vote.clone());
            }
        }
        Ok((
            Tally {
                have: valid.len(),
                need,
                of: ids.len(),
            },
            valid,
        ))
    }

    /// Votes for a proposal: signs its targets metadata with a governance
    /// key and records the signature in the proposal file.
    pub fn vote(&self, path: &Path, key: &SigningKey) -> Result<Tally, RepoError> {
        let (mut file, published) = self.load_proposal(path)?;
        if file.executed {
            return Err(RepoError::AlreadyExecuted(path.to_owned()));
        }
        let root = &published.root.signed;
        let (ids, _) = role_keys(root, RoleType::Targets);
        let key_id = key.key_id();
        if !ids.contains(&key_id) {
            return Err(RepoError::NotGovernanceKey {
                path: key.path().to_owned(),
                key_id: hex::encode(&key_id),
            });
        }
        file.votes.retain(|v| v.keyid != key_id);
        file.votes.push(Signature {
            keyid: key_id,
            sig: key.sign(&canonical(&file.targets)).into(),
        });
        let (tally, _) = self.tally(path, &file, root)?;
        write_atomic(path, &to_json(&file))?;
        Ok(tally)
    }

    /// Executes a proposal that has a quorum of votes: publishes its targets
    /// metadata with the votes as signatures, its registry, and a new
    /// snapshot and timestamp signed by the online key.
    pub fn execute(
        &self,
        path: &Path,
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<(Tally, Registry), RepoError> {
        let (mut file, published) = self.load_proposal(path)?;
        if file.executed {
            return Err(RepoError::AlreadyExecuted(path.to_owned()));
        }
        let root = &published.root.signed;
        let (tally, votes) = self.tally(path, &file, root)?;
        if tally.have < tally.need {
            return Err(RepoError::BelowThreshold {
                path: path.to_owned(),
                have: tally.have,
                need: tally.need,
                of: tally.of,
            });
        }
        let signed = Signed {
            signed: file.targets.clone(),
            signatures: votes,
        };
        // The same check every client makes.
        root.verify_role(&signed)
            .map_err(|e| RepoError::corrupt(path, format!("assembled targets: {e}")))?;
        check_online_key(root, online)?;
        self.publish(
            &published,
            &signed,
            &file.registry.to_bytes(),
            online,
            lifetimes,
        )?;
        file.executed = true;
        write_atomic(path, &to_json(&file))?;
        Ok((tally, file.registry))
    }

    /// Re-signs snapshot and timestamp with fresh expirations (run it
    /// periodically: the timestamp is short-lived on purpose).
    pub fn refresh(&self, online: &SigningKey, lifetimes: &Lifetimes) -> Result<(), RepoError> {
        let published = self.published()?;
        check_online_key(&published.root.signed, online)?;
        let targets = self.snapshot_listed(&published.snapshot.signed, "targets")?;
        let admissions = self.snapshot_listed(&published.snapshot.signed, ADMISSIONS_ROLE)?;
        self.publish_snapshot(
            &targets,
            &admissions,
            online,
            lifetimes,
            published.snapshot.signed.version.get() + 1,
        )
    }

    /// Rotates the governance keys: root N+1 lists `new_governance` with
    /// `threshold`, and is signed by `old_signers` (which must reach the
    /// old root's threshold) and by `new_signers` (which must reach the new
    /// threshold). The current registry is re-published as targets signed
    /// by the new quorum.
    pub fn rotate_governance(
        &self,
        new_governance: &[tough::schema::key::Key],
        threshold: u64,
        old_signers: &[SigningKey],
        new_signers: &[SigningKey],
        online: &SigningKey,
        lifetimes: &Lifetimes,
    ) -> Result<Root, RepoError> {
        let published = self.published()?;
        let old = &published.root.signed;
        let version = old.version.get() + 1;
        let new_root = make_root(
            version,
            new_governance,
            threshold,
            &online.tuf_key(),
            now_secs() + lifetimes.root,
        )?;
        let signers: Vec<&SigningKey> = old_signers.iter().chain(new_signers).collect();
        let signed_root = sign_role(&new_root, &signers);
        old.verify_role(&signed_root)
            .map_err(|e| RepoError::Usage(format!("the old governance quorum must sign: {e}")))?;
        new_root
            .verify_role(&signed_root)
            .map_err(|e| RepoError::Usage(format!("the new governance quorum must sign: {e}")))?;
        self.write_root(&signed_root)?;
        let tv = published.targets.signed.version.get() + 1;
        let mut registry = published.registry.clone();
        registry.version += 1;
        check_online_key(&new_root, online)?;
        let (bytes, targets) = make_targets(
            tv,
            now_secs() + lifetimes.targets,
            &registry,
            &online.tuf_key(),
        )?;
        let new_signers: Vec<&SigningKey> = new_signers.iter().collect();
        let targets = sign_role(&targets, &new_signers);
        self.publish(&published, &targets, &bytes, online, lifetimes)?;
        Ok(new_root)
    }

    fn write_root(&self, root: &Signed<Root>) -> Result<(), RepoError> {
        let bytes = to_json(root);
        let v = root.signed.version.get();
        write_atomic(&self.metadata_dir().join(format!("{v}.root.json")), &bytes)?;
        write_atomic(&self.metadata_dir().join("root.json"), &bytes)
    }

    /// Lists proposal files, by id.
    pub fn proposals(&self) -> Result<Vec<(PathBuf, ProposalFile)>, RepoError> {
        let dir = self.proposals_dir();
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(RepoError::io(&dir, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| RepoError::io(&dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let file: ProposalFile = read_json(&path)?;
                out.push((path, file));
            }
        }
        out.sort_by_key(|(_, f)| f.id);
        Ok(out)
    }
}

fn check_online_key(root: &Root, online: &SigningKey) -> Result<(), RepoError> {
    for (role, name) in [
        (RoleType::Snapshot, "snapshot"),
        (RoleType::Timestamp, "timestamp"),
    ] {
        if !role_keys(root, role).0.contains(&online.key_id()) {
            return Err(RepoError::WrongOnlineKey {
                path: online.path().to_owned(),
                role: name,
            });
        }
    }
    Ok(())
}

/// Test support: writes metadata that breaks the rules, to show clients
/// refuse it.
#[cfg(test)]
pub(crate) mod attack {
    use super::*;

    /// Publishes `registry` as targets N+1 signed by `signers`, whoever they
    /// are, bypassing the vote count.
    pub fn publish_signed_by(
        repo: &Repo,
        registry: &Registry,
        signers: &[&SigningKey],
        online: &SigningKey,
    ) -> Result<(), RepoError> {
        let p = repo.published()?;
        let (bytes, targets) = make_targets(
            p.targets.signed.version.get() + 1,
            now_secs() + SignedDuration::from_secs(3600),
            registry,
            &online.tuf_key(),
        )?;
        let targets = sign_role(&targets, signers);
        repo.publish(&p, &targets, &bytes, online, &Lifetimes::default())
    }

    /// Writes root N+1 signed only by `signers`.
    pub fn write_root_signed_by(
        repo: &Repo,
        root: &Root,
        signers: &[&SigningKey],
    ) -> Result<(), RepoError> {
        repo.write_root(&sign_role(root, signers))
    }
}
