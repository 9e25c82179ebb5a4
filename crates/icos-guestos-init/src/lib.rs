//! GuestOS early boot, in IC-OS's order. Each step is a function over a
//! [`Paths`] (a root folder: `/` on a GuestOS, a temporary folder in tests),
//! run by `icos-guestos-init <step>` from a systemd oneshot unit:
//!
//! 0. [`storage`] (before `/var` is mounted): open the encrypted `var` of
//!    the booted slot and the encrypted `store`, making the key, the store
//!    partition and the file systems on first boot.
//! 1. [`bootstrap`]: find the CONFIG media (a FAT file system labelled
//!    `CONFIG` on a removable disk), read `ic-bootstrap.tar` through the
//!    allow-list of `icos-config-media` (anything else is ignored and
//!    logged by name), write the GuestOS config and the NNS public key
//!    under `/run/config/` on every boot, and, once (guarded by
//!    `/boot/config/CONFIGURED`), the node operator key and the SSH keys
//!    where the node software expects them.
//! 2. [`network`]: systemd-networkd files from `network_settings`.
//! 3. [`firewall`]: a default-drop nftables ruleset.
//! 4. [`accounts`]: the `admin`, `backup` and `readonly` accounts' SSH keys.
//! 5. [`replica`]: the payload's configuration, and the readiness check
//!    before the success marker.
//! 6. [`orchestrator`]: the orchestrator's command line (registry URLs,
//!    trust root, the node's address), or why it does not run.
//! 7. [`vsock`]: whether the VM has a virtio vsock device.
//!
//! On Boundary-GuestOS, [`boundary`] takes the place of step 5: the
//! router's and the gateway's command lines and the gateway's TLS
//! certificate.
//!
//! [`marker`] makes the `GUESTOS BOOT SUCCESS` line and [`console`] writes
//! it, and the `GUESTOS BOOT FAILURE` lines, to the serial console. Before
//! it, [`power_button`] waits until systemd-logind watches the ACPI power
//! button, which the host presses to stop the VM.

pub mod accounts;
pub mod bootstrap;
pub mod boundary;
pub mod console;
mod error;
pub mod firewall;
pub mod marker;
pub mod network;
pub mod orchestrator;
pub mod power_button;
pub mod replica;
pub mod storage;
pub mod vsock;

use std::path::{Path, PathBuf};

pub use error::{InitError, Result};

/// The file locations early boot reads and writes, all under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/` on a GuestOS.
    pub root: PathBuf,
}

impl Paths {
    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    /// `root` joined with an absolute GuestOS path.
    pub fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// `/sys`.
    pub fn sys(&self) -> PathBuf {
        self.at("/sys")
    }

    /// `/dev`.
    pub fn dev(&self) -> PathBuf {
        self.at("/dev")
    }

    /// The config partition, mounted read-write: `/boot/config`.
    pub fn config_partition(&self) -> PathBuf {
        self.at("/boot/config")
    }

    /// The marker of an applied bootstrap: `/boot/config/CONFIGURED`.
    pub fn configured_marker(&self) -> PathBuf {
        self.at("/boot/config/CONFIGURED")
    }

    /// Where the SSH keys from the media are kept:
    /// `/boot/config/accounts_ssh_authorized_keys`.
    pub fn ssh_keys_dir(&self) -> PathBuf {
        self.at("/boot/config/accounts_ssh_authorized_keys")
    }

    /// The per-boot config folder: `/run/config`.
    pub fn run_config(&self) -> PathBuf {
        self.at("/run/config")
    }

    /// The GuestOS config of this boot: `/run/config/config.json`.
    pub fn config_json(&self) -> PathBuf {
        self.at("/run/config/config.json")
    }

    /// The NNS public key: `/run/config/nns_public_key.pem`.
    pub fn nns_public_key(&self) -> PathBuf {
        self.at("/run/config/nns_public_key.pem")
    }

    /// The boundary router's routing table, when the media carries one:
    /// `/run/config/routing_table.json`.
    pub fn routing_table(&self) -> PathBuf {
        self.at("/run/config/routing_table.json")
    }

    /// The registry trust root, when the media carries one (dev/testnet):
    /// `/run/config/registry_root.json`.
    pub fn registry_root(&self) -> PathBuf {
        self.at("/run/config/registry_root.json")
    }

    /// The registry trust root shipped in the image:
    /// `/opt/ic/share/registry-root.json`.
    pub fn builtin_registry_root(&self) -> PathBuf {
        self.at("/opt/ic/share/registry-root.json")
    }

    /// The NNS public key shipped in the image (used without an override).
    pub fn builtin_nns_public_key(&self) -> PathBuf {
        self.at("/opt/ic/share/nns_public_key.pem")
    }

    /// The node operator key:
    /// `/var/lib/ic/data/node_operator_private_key.pem`.
    pub fn node_operator_key(&self) -> PathBuf {
        self.at("/var/lib/ic/data/node_operator_private_key.pem")
    }

    /// Where the CONFIG media is mounted: `/mnt/config`.
    pub fn media_mount(&self) -> PathBuf {
        self.at("/mnt/config")
    }

    /// systemd-networkd's runtime folder: `/run/systemd/network`.
    pub fn networkd_dir(&self) -> PathBuf {
        self.at("/run/systemd/network")
    }

    /// The nftables ruleset: `/run/ic-node/nftables-ruleset/nftables.conf`.
    pub fn nftables_conf(&self) -> PathBuf {
        self.at("/run/ic-node/nftables-ruleset/nftables.conf")
    }

    /// The node software's generated configuration: `/run/ic-node/config`.
    pub fn node_config_dir(&self) -> PathBuf {
        self.at("/run/ic-node/config")
    }

    /// The home folder of a role account: `/var/lib/<account>`.
    pub fn home(&self, account: &str) -> PathBuf {
        self.at(&format!("/var/lib/{account}"))
    }

    /// The SSH host key folder: `/var/lib/ssh`.
    pub fn ssh_host_keys(&self) -> PathBuf {
        self.at("/var/lib/ssh")
    }

    /// The image version: `/opt/ic/share/version.txt`.
    pub fn version_txt(&self) -> PathBuf {
        self.at("/opt/ic/share/version.txt")
    }
}

/// Writes `data` to `path` (creating its folder) durably: a temporary file
/// in the same folder created with `mode`, written and fsynced, renamed
/// over `path`, then the folder fsynced. A VM killed at any point leaves
/// either no file or the whole file (the storage key must never be found
/// empty after a crash).
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(InitError::io("creating", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(InitError::io("creating", &tmp))?;
    f.write_all(data)
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .map_err(InitError::io("writing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(InitError::io("renaming into", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(InitError::io("syncing", dir))
}

/// Compares `actual` with the golden file `golden/<name>` of this crate;
/// `UPDATE_GOLDEN=1` rewrites the file.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}
