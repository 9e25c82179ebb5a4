//! The allow-listed extra files that travel next to `config.json`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{MAX_MEMBER_SIZE, MediaError};

/// The accounts whose SSH keys a dev CONFIG media may carry, as files
/// `accounts_ssh_authorized_keys/<account>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SshAccount {
    /// `admin`.
    Admin,
    /// `backup`.
    Backup,
    /// `readonly`.
    Readonly,
}

impl SshAccount {
    /// Every account, in name order.
    pub const ALL: [SshAccount; 3] = [SshAccount::Admin, SshAccount::Backup, SshAccount::Readonly];

    /// The account (and file) name.
    pub const fn name(self) -> &'static str {
        match self {
            SshAccount::Admin => "admin",
            SshAccount::Backup => "backup",
            SshAccount::Readonly => "readonly",
        }
    }

    /// The account called `name`; `None` for any other name.
    pub fn from_name(name: &str) -> Option<SshAccount> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for SshAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The extra files of a CONFIG media besides `config.json`. Only these are
/// written, and only these are read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// `node_operator_private_key.pem`: the node operator's key (PEM).
    pub node_operator_private_key: Option<Vec<u8>>,
    /// `accounts_ssh_authorized_keys/{admin,backup,readonly}` (dev images).
    pub ssh_authorized_keys: BTreeMap<SshAccount, Vec<u8>>,
    /// `nns_public_key_override.pem`: an NNS root key replacing the
    /// mainnet one (dev images).
    pub nns_public_key_override: Option<Vec<u8>>,
    /// `routing_table.json`: the boundary router's routing table
    /// (Boundary-GuestOS).
    pub routing_table: Option<Vec<u8>>,
    /// `registry_root.json`: a registry trust root for an image built
    /// without one (dev/testnet networks with their own governance keys);
    /// an image with its own trust root ignores it.
    pub registry_root: Option<Vec<u8>>,
}

/// Where [`Extras::load`] reads the extras from; every member is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraPaths {
    /// The node operator private key (PEM).
    pub node_operator_private_key: Option<PathBuf>,
    /// A folder with files `admin`, `backup` and/or `readonly`.
    pub ssh_authorized_keys_dir: Option<PathBuf>,
    /// The NNS public key override (PEM).
    pub nns_public_key_override: Option<PathBuf>,
    /// The boundary router's routing table (JSON).
    pub routing_table: Option<PathBuf>,
    /// The registry trust root (`root.json` of `icos registry init`).
    pub registry_root: Option<PathBuf>,
}

impl Extras {
    /// Whether there are no extras at all.
    pub fn is_empty(&self) -> bool {
        self.node_operator_private_key.is_none()
            && self.ssh_authorized_keys.is_empty()
            && self.nns_public_key_override.is_none()
            && self.routing_table.is_none()
            && self.registry_root.is_none()
    }

    /// Reads the extras named in `paths`. Files of the SSH key folder other
    /// than `admin`, `backup` and `readonly` are not taken; they are
    /// returned as the second value so the caller can say so. A file larger
    /// than [`MAX_MEMBER_SIZE`] is an error.
    pub fn load(paths: &ExtraPaths) -> Result<(Extras, Vec<PathBuf>), MediaError> {
        let mut extras = Extras::default();
        let mut skipped = Vec::new();
        if let Some(path) = &paths.node_operator_private_key {
            extras.node_operator_private_key = Some(read_limited(path)?);
        }
        if let Some(path) = &paths.nns_public_key_override {
            extras.nns_public_key_override = Some(read_limited(path)?);
        }
        if let Some(path) = &paths.routing_table {
            extras.routing_table = Some(read_limited(path)?);
        }
        if let Some(path) = &paths.registry_root {
            extras.registry_root = Some(read_limited(path)?);
        }
        if let Some(dir) = &paths.ssh_authorized_keys_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| MediaError::ReadInput {
                path: dir.clone(),
                source,
            })?;
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| MediaError::ReadInput {
                    path: dir.clone(),
                    source,
                })?;
                names.push(entry.path());
            }
            names.sort();
            for path in names {
                let account = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(SshAccount::from_name);
                match account {
                    Some(account) if path.is_file() => {
                        extras
                            .ssh_authorized_keys
                            .insert(account, read_limited(&path)?);
                    }
                    _ => skipped.push(path),
                }
            }
        }
        Ok((extras, skipped))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, MediaError> {
    let meta = std::fs::metadata(path).map_err(|source| MediaError::ReadInput {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(MediaError::BadInput {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    if meta.len() > MAX_MEMBER_SIZE {
        return Err(MediaError::BadInput {
            path: path.to_owned(),
            reason: format!(
                "{} bytes is more than the {MAX_MEMBER_SIZE} bytes a CONFIG media file may hold",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(|source| MediaError::ReadInput {
        path: path.to_owned(),
        source,
    })
}
