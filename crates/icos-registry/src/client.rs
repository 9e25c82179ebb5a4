//! The node side: fetch the registry over TUF, verify it, keep it.
//!
//! [`fetch`] loads a repository from one base URL (`http://`, `https://`
//! when a TLS-capable client is added, or `file://`), verifies the chain
//! root → timestamp → snapshot → targets → `registry.json` with `tough`,
//! keeps the trusted metadata and the registry in a local datastore, and
//! maps every refusal to a [`FetchError`] that says which rule broke.
//! [`fetch_any`] tries a list of URLs in a rotated order and falls back to
//! the last verified registry when none answers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream;
use serde::{Deserialize, Serialize};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{RoleType, Root, Signed};
use tough::{
    IntoVec, RepositoryLoader, TargetName, Transport, TransportError, TransportErrorKind,
    TransportStream,
};
use url::Url;

use crate::join::{JoinRequest, apply_admissions};
use crate::model::{REGISTRY_TARGET, Registry};
use crate::repo::ADMISSIONS_ROLE;

/// Why a fetch was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Signatures that claim to be from authorized keys do not verify.
    #[error(
        "{url}: forged signature on {role} metadata: {valid} of {threshold} required signatures verify, {claimed} claimed"
    )]
    ForgedSignature {
        /// The repository.
        url: String,
        /// The role.
        role: String,
        /// Signatures from authorized key ids.
        claimed: u64,
        /// Signatures that verify.
        valid: u64,
        /// Required.
        threshold: u64,
    },
    /// Too few authorized signatures.
    #[error(
        "{url}: {role} metadata is signed by {valid} authorized key(s), {threshold} required (below threshold)"
    )]
    BelowThreshold {
        /// The repository.
        url: String,
        /// The role.
        role: String,
        /// Valid signatures.
        valid: u64,
        /// Required.
        threshold: u64,
    },
    /// Metadata older than what is already trusted (a replay).
    #[error("{url}: rollback refused: {detail}")]
    Rollback {
        /// The repository.
        url: String,
        /// Which versions.
        detail: String,
    },
    /// Metadata files from different versions.
    #[error("{url}: mixed metadata versions refused: {detail}")]
    MixedVersions {
        /// The repository.
        url: String,
        /// Which versions.
        detail: String,
    },
    /// Expired metadata.
    #[error("{url}: {role} metadata is expired")]
    Expired {
        /// The repository.
        url: String,
        /// The role.
        role: String,
    },
    /// The registry target does not match its hash.
    #[error(
        "{url}: registry.json does not match the hash in the signed targets metadata: {detail}"
    )]
    TargetHashMismatch {
        /// The repository.
        url: String,
        /// Calculated and expected hashes.
        detail: String,
    },
    /// The repository could not be reached or a file is missing.
    #[error("{url}: unreachable: {detail}")]
    Unreachable {
        /// The repository.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// The registry document is invalid although signed.
    #[error("{url}: registry.json breaks the registry rules: {detail}")]
    InvalidRegistry {
        /// The repository.
        url: String,
        /// The violations.
        detail: String,
    },
    /// Anything else TUF refused (bad JSON, unknown role ...).
    #[error("{url}: {detail}")]
    Other {
        /// The repository.
        url: String,
        /// The error.
        detail: String,
    },
    /// The trust root or the datastore is unusable.
    #[error("{path}: {detail}")]
    Local {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No URL answered and no registry was verified before.
    #[error("no registry URL answered and none was verified before: {0}")]
    NoneAvailable(String),
}

impl FetchError {
    /// Whether the error is a refusal of what the repository served (an
    /// attack or a broken repository), as opposed to not reaching it.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            FetchError::Unreachable { .. }
                | FetchError::Local { .. }
                | FetchError::NoneAvailable(_)
        )
    }
}

/// A verified registry and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    /// The registry.
    pub registry: Registry,
    /// The base URL it was fetched from (`None` for the kept copy).
    pub url: Option<String>,
    /// The targets metadata version.
    pub targets_version: u64,
    /// Nodes admitted by join requests on top of the governance-signed
    /// document (already included in `registry`).
    #[serde(default)]
    pub admitted_nodes: usize,
    /// When the timestamp metadata expires (RFC 3339).
    pub timestamp_expires: String,
    /// Whether this is the last verified copy kept locally because no URL
    /// answered.
    pub stale: bool,
}

/// Files the transport fetched: URL and bytes, in order.
type Fetched = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A transport for `http://` and `file://` URLs that remembers what it
/// fetched, so refusals can be explained.
#[derive(Debug, Clone)]
struct NetTransport {
    client: reqwest::Client,
    fetched: Fetched,
}

impl NetTransport {
    fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(NetTransport {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            fetched: Arc::default(),
        })
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, TransportError> {
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| TransportError::new(TransportErrorKind::Other, url.as_str()))?;
                tokio::fs::read(&path).await.map_err(|e| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        TransportErrorKind::FileNotFound
                    } else {
                        TransportErrorKind::Other
                    };
                    TransportError::new_with_cause(kind, url.as_str(), e)
                })
            }
            "http" | "https" => {
                let resp = self.client.get(url.clone()).send().await.map_err(|e| {
                    TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
                })?;
                let status = resp.status();
                if status == reqwest::StatusCode::NOT_FOUND
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    return Err(TransportError::new(
                        TransportErrorKind::FileNotFound,
                        url.as_str(),
                    ));
                }
                if !status.is_success() {
                    return Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        url.as_str(),
                        format!("HTTP status {status}"),
                    ));
                }
                let body = resp.bytes().await.map_err(|e| {
                    TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
                })?;
                Ok(body.to_vec())
            }
            _ => Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url.as_str(),
            )),
        }
    }
}

#[tough::async_trait]
impl Transport for NetTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let bytes = self.get(&url).await?;
        if let Ok(mut f) = self.fetched.lock() {
            f.push((url.to_string(), bytes.clone()));
        }
        let item: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(bytes));
        Ok(Box::pin(stream::iter([item])))
    }
}

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of each HTTP request.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(30),
        }
    }
}

/// The registry document kept in the datastore.
const KEPT_REGISTRY: &str = "verified-registry.json";

fn role_name(role: RoleType) -> String {
    role.to_string()
}

/// Turns a directory path into a `file://` base URL; URLs pass through.
pub fn base_url(source: &str) -> Result<Url, FetchError> {
    let local = |detail: String| FetchError::Local {
        path: PathBuf::from(source),
        detail,
    };
    let mut url = if source.contains("://") {
        Url::parse(source).map_err(|e| local(format!("not a URL: {e}")))?
    } else {
        let abs = std::fs::canonicalize(source).map_err(|e| local(e.to_string()))?;
        Url::from_directory_path(&abs).map_err(|()| local("not an absolute directory".into()))?
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// Counts signatures on the last fetched `role` file whose key ids the
/// roots know for that role.
fn claimed_signatures(fetched: &Fetched, role: RoleType, roots: &[Root]) -> Option<u64> {
    let suffix = format!("{role}.json");
    let list = fetched.lock().ok()?;
    let (_, bytes) = list.iter().rev().find(|(u, _)| u.ends_with(&suffix))?;
    let signed: Signed<serde_json::Value> = serde_json::from_slice(bytes).ok()?;
    // A new root is authorized by the root trusted before it (the first
    // entries of `roots`); other roles by any root seen.
    let roots = if role == RoleType::Root {
        &roots[..roots.len().min(2)]
    } else {
        roots
    };
    let authorized: Vec<&Decoded<Hex>> = roots
        .iter()
        .filter_map(|r| r.roles.get(&role))
        .flat_map(|k| k.keyids.iter())
        .collect();
    let mut ids: Vec<&Decoded<Hex>> = signed
        .signatures
        .iter()
        .map(|s| &s.keyid)
        .filter(|k| authorized.contains(k))
        .collect();
    ids.sort();
    ids.dedup();
    Some(ids.len() as u64)
}

fn map_error(e: tough::error::Error, url: &Url, fetched: &Fetched, roots: &[Root]) -> FetchError {
    use tough::error::Error as E;
    let url_s = url.to_string();
    let signature_error = |role: RoleType, source: &tough::schema::Error| {
        if let tough::schema::Error::SignatureThreshold {
            threshold, valid, ..
        } = source
        {
            let claimed = claimed_signatures(fetched, role, roots).unwrap_or(0);
            if claimed > *valid {
                return FetchError::ForgedSignature {
                    url: url_s.clone(),
                    role: role_name(role),
                    claimed,
                    valid: *valid,
                    threshold: *threshold,
                };
            }
            return FetchError::BelowThreshold {
                url: url_s.clone(),
                role: role_name(role),
                valid: *valid,
                threshold: *threshold,
            };
        }
        FetchError::Other {
            url: url_s.clone(),
            detail: format!("{role} metadata: {source}"),
        }
    };
    match &e {
        E::VerifyMetadata { role, source, .. } => signature_error(*role, source),
        E::VerifyTrustedMetadata { source, .. } => signature_error(RoleType::Root, source),
        E::ExpiredMetadata { role, .. } => FetchError::Expired {
            url: url_s,
            role: role_name(*role),
        },
        E::OlderMetadata { .. }
        | E::OlderSnapshotInTimestamp { .. }
        | E::SnapshotRoleRollback { .. }
        | E::SnapshotRoleMissing { .. } => FetchError::Rollback {
            url: url_s,
            detail: e.to_string(),
        },
        E::VersionMismatch { .. } => FetchError::MixedVersions {
            url: url_s,
            detail: e.to_string(),
        },
        // A metadata file that differs from the one the signed metadata
        // above it lists: files of different versions were mixed.
        E::HashMismatch { .. } => FetchError::MixedVersions {
            url: url_s,
            detail: e.to_string(),
        },
        E::Transport { .. } if integrity_failure(&e) => FetchError::MixedVersions {
            url: url_s,
            detail: e.to_string(),
        },
        E::Transport { .. } => FetchError::Unreachable {
            url: url_s,
            detail: e.to_string(),
        },
        _ => FetchError::Other {
            url: url_s,
            detail: e.to_string(),
        },
    }
}

/// Whether a failed download failed because the bytes differ from what
/// signed metadata lists (hash or length), rather than the network.
fn integrity_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<tough::error::Error>()
            && matches!(
                t,
                tough::error::Error::HashMismatch { .. }
                    | tough::error::Error::MaxSizeExceeded { .. }
            )
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("Hash mismatch") || text.contains("Maximum size") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn read_root(path: &Path) -> Result<(Vec<u8>, Root), FetchError> {
    read_signed_root(path).map(|(bytes, root)| (bytes, root.signed))
}

fn read_signed_root(path: &Path) -> Result<(Vec<u8>, Signed<Root>), FetchError> {
    let bytes = std::fs::read(path).map_err(|e| FetchError::Local {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let root: Signed<Root> = serde_json::from_slice(&bytes).map_err(|e| FetchError::Local {
        path: path.to_owned(),
        detail: format!("not a TUF root: {e}"),
    })?;
    Ok((bytes, root))
}

/// What a trust root says, once checked by [`check_trust_root`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustRoot {
    /// The root metadata's version.
    pub version: u64,
    /// Governance signatures needed for root and targets.
    pub threshold: u64,
    /// Governance key ids (root role), sorted.
    pub governance_keys: Vec<String>,
}

/// Checks that `path` holds a TUF root that its own governance quorum
/// signed (the file baked into images as the registry's trust root).
pub fn check_trust_root(path: &Path) -> Result<TrustRoot, FetchError> {
    let (_, root) = read_signed_root(path)?;
    root.signed
        .verify_role(&root)
        .map_err(|e| FetchError::Local {
            path: path.to_owned(),
            detail: format!("not signed by its own governance quorum: {e}"),
        })?;
    let role = root
        .signed
        .roles
        .get(&RoleType::Root)
        .ok_or_else(|| FetchError::Local {
            path: path.to_owned(),
            detail: "no root role".into(),
        })?;
    let mut governance_keys: Vec<String> = role
        .keyids
        .iter()
        .map(|k| hex::encode(k.as_ref()))
        .collect();
    governance_keys.sort();
    Ok(TrustRoot {
        version: root.signed.version.get(),
        threshold: role.threshold.get(),
        governance_keys,
    })
}

/// The last verified registry kept in `datastore`, if any.
pub fn kept(datastore: &Path) -> Option<Verified> {
    let bytes = std::fs::read(datastore.join(KEPT_REGISTRY)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Fetches and verifies the registry from one base URL (or directory).
///
/// `trust_root` is the baked-in `root.json`; once a newer root was
/// verified, the datastore's copy is used instead (TUF root rotation).
pub async fn fetch(
    base: &Url,
    trust_root: &Path,
    datastore: &Path,
    options: &ClientOptions,
) -> Result<Verified, FetchError> {
    std::fs::create_dir_all(datastore).map_err(|e| FetchError::Local {
        path: datastore.to_owned(),
        detail: e.to_string(),
    })?;
    let (baked_bytes, baked_root) = read_root(trust_root)?;
    let stored = datastore.join("root.json");
    let (root_bytes, trusted) = match read_root(&stored) {
        Ok((bytes, root)) if root.version > baked_root.version => (bytes, root),
        _ => (baked_bytes, baked_root.clone()),
    };
    let local = |detail: String| FetchError::Local {
        path: PathBuf::from(base.as_str()),
        detail,
    };
    let metadata = base.join("metadata/").map_err(|e| local(e.to_string()))?;
    let targets = base.join("targets/").map_err(|e| local(e.to_string()))?;
    let transport = NetTransport::new(options.timeout).map_err(|e| local(e.to_string()))?;
    let fetched = Arc::clone(&transport.fetched);
    let roots_seen = |fetched: &Fetched| {
        let mut roots = vec![baked_root.clone(), trusted.clone()];
        if let Ok(list) = fetched.lock() {
            for (u, b) in list.iter() {
                if u.ends_with(".root.json")
                    && let Ok(r) = serde_json::from_slice::<Signed<Root>>(b)
                {
                    roots.push(r.signed);
                }
            }
        }
        roots
    };
    let repo = RepositoryLoader::new(&root_bytes, metadata, targets)
        .transport(transport)
        .datastore(datastore)
        .load()
        .await
        .map_err(|e| map_error(e, base, &fetched, &roots_seen(&fetched)))?;
    let name = TargetName::new(REGISTRY_TARGET).map_err(|e| local(e.to_string()))?;
    let stream = repo
        .read_target(&name)
        .await
        .map_err(|e| map_error(e, base, &fetched, &roots_seen(&fetched)))?
        .ok_or_else(|| FetchError::Other {
            url: base.to_string(),
            detail: "the signed targets list no registry.json".into(),
        })?;
    let bytes = stream.into_vec().await.map_err(|e| {
        if integrity_failure(&e) {
            FetchError::TargetHashMismatch {
                url: base.to_string(),
                detail: e.to_string(),
            }
        } else {
            map_error(e, base, &fetched, &roots_seen(&fetched))
        }
    })?;
    let governance = Registry::from_bytes(&bytes).map_err(|v| FetchError::InvalidRegistry {
        url: base.to_string(),
        detail: v.to_string(),
    })?;
    // Node admissions, published by the online key under the delegated
    // role; each is re-checked against the governance-signed operators.
    let mut names: Vec<TargetName> = repo
        .delegated_role(ADMISSIONS_ROLE)
        .and_then(|r| r.targets.as_ref())
        .map(|t| t.signed.targets.keys().cloned().collect())
        .unwrap_or_default();
    names.sort_by(|a, b| a.raw().cmp(b.raw()));
    let mut requests = Vec::new();
    for name in &names {
        let stream = repo
            .read_target(name)
            .await
            .map_err(|e| map_error(e, base, &fetched, &roots_seen(&fetched)))?;
        let Some(stream) = stream else { continue };
        let bytes = stream.into_vec().await.map_err(|e| {
            if integrity_failure(&e) {
                FetchError::TargetHashMismatch {
                    url: base.to_string(),
                    detail: e.to_string(),
                }
            } else {
                map_error(e, base, &fetched, &roots_seen(&fetched))
            }
        })?;
        match serde_json::from_slice::<JoinRequest>(&bytes) {
            Ok(r) => requests.push(r),
            Err(e) => {
                tracing::warn!(admission = name.raw(), error = %e, "not a join request; ignored")
            }
        }
    }
    let (registry, admitted, refused) = apply_admissions(&governance, &requests);
    for (i, e) in refused {
        tracing::warn!(admission = i, error = %e, "admission refused; ignored");
    }
    if let Some(previous) = kept(datastore)
        && registry.version < previous.registry.version
    {
        return Err(FetchError::Rollback {
            url: base.to_string(),
            detail: format!(
                "registry version {} is older than the verified version {}",
                registry.version, previous.registry.version
            ),
        });
    }
    let verified = Verified {
        registry,
        url: Some(base.to_string()),
        targets_version: repo.targets().signed.version.get(),
        admitted_nodes: admitted.len(),
        timestamp_expires: repo.timestamp().signed.expires.to_string(),
        stale: false,
    };
    let path = datastore.join(KEPT_REGISTRY);
    let tmp = datastore.join(format!(".{KEPT_REGISTRY}.tmp"));
    let json = serde_json::to_vec_pretty(&verified).unwrap_or_default();
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| FetchError::Local {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    Ok(verified)
}

/// The order a node tries `n` URLs in: rotated by `seed` (e.g. derived
/// from the node id) so nodes spread over the mirrors.
pub fn rotated<T: Clone>(urls: &[T], seed: u64) -> Vec<T> {
    if urls.is_empty() {
        return Vec::new();
    }
    let start = usize::try_from(seed % urls.len() as u64).unwrap_or(0);
    urls[start..]
        .iter()
        .chain(&urls[..start])
        .cloned()
        .collect()
}

/// The rotation seed of a node id, as the IC orchestrator does: the XOR of
/// the id's bytes.
pub fn rotation_seed(id: &[u8]) -> u64 {
    u64::from(id.iter().fold(0u8, |a, b| a ^ b))
}

/// Poll intervals with exponential backoff: after a failed round the
/// delay doubles up to `max`; after a verified fetch it is back to `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            current: base,
        }
    }

    /// The delay before the next poll, given how the last one went.
    pub fn next(&mut self, verified: bool) -> Duration {
        self.current = if verified {
            self.base
        } else {
            self.current.saturating_mul(2).min(self.max)
        };
        self.current
    }
}

/// The outcome of trying several URLs.
#[derive(Debug)]
pub struct Attempted {
    /// The registry: freshly verified, or the kept copy (`stale`).
    pub verified: Verified,
    /// Errors of the URLs that failed before one answered, in order.
    pub errors: Vec<FetchError>,
}

/// Tries `urls` in a rotated order; the first that verifies wins. A
/// refusal (forged, rolled back, expired ...) is logged and the next URL is
/// tried. When all fail, the last verified registry in `datastore` is
/// returned, marked `stale`; without one, [`FetchError::NoneAvailable`].
pub async fn fetch_any(
    urls: &[Url],
    seed: u64,
    trust_root: &Path,
    datastore: &Path,
    options: &ClientOptions,
) -> Result<Attempted, FetchError> {
    let mut errors = Vec::new();
    for url in rotated(urls, seed) {
        match fetch(&url, trust_root, datastore, options).await {
            Ok(verified) => return Ok(Attempted { verified, errors }),
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "registry fetch failed");
                errors.push(e);
            }
        }
    }
    match kept(datastore) {
        Some(mut verified) => {
            verified.stale = true;
            Ok(Attempted { verified, errors })
        }
        None => Err(FetchError::NoneAvailable(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_on_failure_and_resets_on_success() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(10), s(60));
        assert_eq!(b.next(false), s(20));
        assert_eq!(b.next(false), s(40));
        assert_eq!(b.next(false), s(60));
        assert_eq!(b.next(false), s(60));
        assert_eq!(b.next(true), s(10));
        assert_eq!(Backoff::new(s(10), s(1)).next(false), s(10));
    }

    #[test]
    fn rotation_covers_every_url_once() {
        let urls = ["a", "b", "c"];
        for seed in 0..7 {
            let r = rotated(&urls, seed);
            let mut sorted = r.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, urls);
            assert_eq!(r[0], urls[usize::try_from(seed % 3).unwrap_or(0)]);
        }
        assert!(rotated::<&str>(&[], 5).is_empty());
        assert_eq!(rotation_seed(&[1, 2, 4]), 7);
    }

    #[test]
    fn directories_become_file_urls() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = base_url(&dir.path().to_string_lossy()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with('/'));
        let url = base_url("http://[2001:db8::1]:8080/reg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.as_str(), "http://[2001:db8::1]:8080/reg/");
        assert!(base_url("/does/not/exist").is_err());
    }
}
