//! `ic-bootstrap.tar`: writing it deterministically, and reading it through
//! the allow-list.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use icos_config::GuestOSConfig;

use crate::extras::{Extras, SshAccount};
use crate::{
    CONFIG_JSON, MAX_MEMBER_SIZE, MediaError, NNS_PUBLIC_KEY_OVERRIDE, NODE_OPERATOR_PRIVATE_KEY,
    REGISTRY_ROOT, ROUTING_TABLE, SSH_KEYS_DIR,
};

/// GNU tar's record size: archives are padded to a multiple of it.
const RECORD: usize = 10_240;

/// What the media handed over, after the allow-list.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// `config.json`.
    pub config: GuestOSConfig,
    /// The allow-listed extras that were present.
    pub extras: Extras,
    /// Everything that was present but not taken, each with the reason.
    pub ignored: Vec<Ignored>,
}

/// A file (or other entry) of the media that the reader did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Where it was: `ic-bootstrap.tar:<member>` or `media:<path>`.
    pub name: String,
    /// Why it was not taken.
    pub reason: IgnoreReason,
}

/// Why an entry of the media was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Its name is not on the allow-list.
    NotAllowed,
    /// It is not a regular file (a link, a device, a FIFO) or not a folder
    /// the allow-list expects.
    NotARegularFile(String),
    /// Its name is absolute or has `..`.
    UnsafeName,
    /// A member of the same name came earlier; the first one is used.
    Duplicate,
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::NotAllowed => f.write_str("not on the allow-list"),
            IgnoreReason::NotARegularFile(kind) => write!(f, "not a regular file ({kind})"),
            IgnoreReason::UnsafeName => f.write_str("absolute name or '..'"),
            IgnoreReason::Duplicate => f.write_str("duplicate member; the first one is used"),
        }
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ignored: {}", self.name, self.reason)
    }
}

/// One member to write: a name, its mode, and its data (`None` for a
/// folder).
struct Member<'a> {
    name: String,
    mode: u32,
    data: Option<&'a [u8]>,
}

/// The members of the archive for `config_json` and `extras`, sorted by
/// name (byte order, which is also the order of a depth-first walk here).
fn members<'a>(config_json: &'a [u8], extras: &'a Extras) -> Vec<Member<'a>> {
    let mut out = vec![Member {
        name: CONFIG_JSON.to_owned(),
        mode: 0o644,
        data: Some(config_json),
    }];
    if let Some(key) = &extras.node_operator_private_key {
        out.push(Member {
            name: NODE_OPERATOR_PRIVATE_KEY.to_owned(),
            mode: 0o600,
            data: Some(key),
        });
    }
    if let Some(key) = &extras.nns_public_key_override {
        out.push(Member {
            name: NNS_PUBLIC_KEY_OVERRIDE.to_owned(),
            mode: 0o644,
            data: Some(key),
        });
    }
    if let Some(root) = &extras.registry_root {
        out.push(Member {
            name: REGISTRY_ROOT.to_owned(),
            mode: 0o644,
            data: Some(root),
        });
    }
    if let Some(table) = &extras.routing_table {
        out.push(Member {
            name: ROUTING_TABLE.to_owned(),
            mode: 0o644,
            data: Some(table),
        });
    }
    if !extras.ssh_authorized_keys.is_empty() {
        out.push(Member {
            name: format!("{SSH_KEYS_DIR}/"),
            mode: 0o755,
            data: None,
        });
        for (account, keys) in &extras.ssh_authorized_keys {
            out.push(Member {
                name: format!("{SSH_KEYS_DIR}/{account}"),
                mode: 0o644,
                data: Some(keys),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The config as it is stored: pretty JSON with a final newline.
pub(crate) fn config_json(config: &GuestOSConfig) -> Result<Vec<u8>, MediaError> {
    let problems = icos_config::validate_guestos(config);
    if !problems.is_empty() {
        return Err(MediaError::InvalidConfig(icos_config::Problems::new(
            problems,
        )));
    }
    let mut text = icos_config::to_json_pretty(config).map_err(MediaError::Serialize)?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// The bytes of `ic-bootstrap.tar` for a config and its extras.
///
/// The archive is a pure function of its inputs: members sorted by name,
/// GNU headers with uid/gid 0 and owner names `root`, mtime 0, fixed modes
/// (0644, 0600 for the node operator key, 0755 for the SSH key folder),
/// padded with zeros to a multiple of 10 240 bytes as GNU tar does. The
/// config is validated first.
pub fn bootstrap_tar(config: &GuestOSConfig, extras: &Extras) -> Result<Vec<u8>, MediaError> {
    let json = config_json(config)?;
    let mut builder = tar::Builder::new(Vec::new());
    let io = |source| MediaError::Io {
        action: "writing",
        path: Path::new(crate::BOOTSTRAP_TAR).to_owned(),
        source,
    };
    for member in members(&json, extras) {
        let mut header = tar::Header::new_gnu();
        header.set_path(&member.name).map_err(io)?;
        header.set_mode(member.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").map_err(io)?;
        header.set_groupname("root").map_err(io)?;
        header.set_mtime(0);
        let data = member.data.unwrap_or_default();
        header.set_size(data.len() as u64);
        header.set_entry_type(if member.data.is_some() {
            tar::EntryType::Regular
        } else {
            tar::EntryType::Directory
        });
        header.set_cksum();
        builder.append(&header, data).map_err(io)?;
    }
    let mut bytes = builder.into_inner().map_err(io)?;
    let padded = bytes.len().div_ceil(RECORD) * RECORD;
    bytes.resize(padded, 0);
    Ok(bytes)
}

/// A member name without leading `./`; `None` when it is absolute or has a
/// `..` component.
fn normalize(raw: &str) -> Option<String> {
    if raw.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// Which allow-listed file a normalized name is.
enum Allowed {
    Config,
    NodeOperatorKey,
    NnsKeyOverride,
    RoutingTable,
    RegistryRoot,
    SshKeys(SshAccount),
}

fn allowed(name: &str) -> Option<Allowed> {
    match name {
        CONFIG_JSON => Some(Allowed::Config),
        NODE_OPERATOR_PRIVATE_KEY => Some(Allowed::NodeOperatorKey),
        NNS_PUBLIC_KEY_OVERRIDE => Some(Allowed::NnsKeyOverride),
        ROUTING_TABLE => Some(Allowed::RoutingTable),
        REGISTRY_ROOT => Some(Allowed::RegistryRoot),
        _ => name
            .strip_prefix(SSH_KEYS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(SshAccount::from_name)
            .map(Allowed::SshKeys),
    }
}

fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "symbolic link".to_owned(),
        tar::EntryType::Link => "hard link".to_owned(),
        tar::EntryType::Char => "character device".to_owned(),
        tar::EntryType::Block => "block device".to_owned(),
        tar::EntryType::Fifo => "FIFO".to_owned(),
        tar::EntryType::Directory => "folder".to_owned(),
        other => format!("tar type {:?}", other.as_byte() as char),
    }
}

/// Reads `ic-bootstrap.tar` (its bytes; `origin` names it in errors)
/// through the allow-list: `config.json` (required),
/// `node_operator_private_key.pem`, `nns_public_key_override.pem`,
/// `routing_table.json`, `registry_root.json` and
/// `accounts_ssh_authorized_keys/{admin,backup,readonly}`, each a regular
/// file of at most [`MAX_MEMBER_SIZE`] bytes. Everything else is skipped
/// and listed in [`Bootstrap::ignored`]; the folders `.` and
/// `accounts_ssh_authorized_keys` are expected and not listed.
///
/// `config.json` must parse as a GuestOS config and pass validation.
pub fn read_bootstrap_tar(bytes: &[u8], origin: &Path) -> Result<Bootstrap, MediaError> {
    let bad = |reason: String| MediaError::BadMedia {
        media: origin.to_owned(),
        reason,
    };
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("reading the archive: {e}")))?;
    let mut config: Option<Vec<u8>> = None;
    let mut extras = Extras::default();
    let mut ignored = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut ignore = |reason| {
            ignored.push(Ignored {
                name: format!("{}:{raw}", crate::BOOTSTRAP_TAR),
                reason,
            });
        };
        let Some(name) = normalize(&raw) else {
            ignore(IgnoreReason::UnsafeName);
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_dir() && (name.is_empty() || name == SSH_KEYS_DIR) {
            continue;
        }
        let Some(which) = allowed(&name) else {
            ignore(IgnoreReason::NotAllowed);
            continue;
        };
        if !kind.is_file() {
            ignore(IgnoreReason::NotARegularFile(kind_name(kind)));
            continue;
        }
        if !seen.insert(name.clone()) {
            ignore(IgnoreReason::Duplicate);
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_MEMBER_SIZE {
            return Err(bad(format!(
                "{raw}: {size} bytes is more than the {MAX_MEMBER_SIZE} bytes allowed"
            )));
        }
        let mut data = Vec::new();
        (&mut entry)
            .take(MAX_MEMBER_SIZE)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{raw}: {e}")))?;
        match which {
            Allowed::Config => config = Some(data),
            Allowed::NodeOperatorKey => extras.node_operator_private_key = Some(data),
            Allowed::NnsKeyOverride => extras.nns_public_key_override = Some(data),
            Allowed::RoutingTable => extras.routing_table = Some(data),
            Allowed::RegistryRoot => extras.registry_root = Some(data),
            Allowed::SshKeys(account) => {
                extras.ssh_authorized_keys.insert(account, data);
            }
        }
    }
    let config = config.ok_or_else(|| bad(format!("{CONFIG_JSON} is missing")))?;
    let text = std::str::from_utf8(&config)
        .map_err(|e| bad(format!("{CONFIG_JSON} is not UTF-8: {e}")))?;
    let config: GuestOSConfig = icos_config::from_json_str(text).map_err(|p| {
        bad(format!(
            "{CONFIG_JSON} is not a GuestOS config:\n{}",
            p.with_file(CONFIG_JSON)
        ))
    })?;
    let problems = icos_config::validate_guestos(&config);
    if !problems.is_empty() {
        return Err(bad(format!(
            "{CONFIG_JSON} is invalid:\n{}",
            icos_config::Problems::new(problems).with_file(CONFIG_JSON)
        )));
    }
    Ok(Bootstrap {
        config,
        extras,
        ignored,
    })
}
