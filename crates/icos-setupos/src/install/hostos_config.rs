//! setup-hostos-config: the files SetupOS leaves on HostOS's config volume
//! (`hostlvm/config`, mounted by HostOS at `/boot/config`).
//!
//! Only names HostOS passes on to GuestOS's CONFIG media
//! (`icos-guestos-vm --extras-from /boot/config`) are written:
//!
//! | file | from |
//! |---|---|
//! | `config.json` | the HostOS config derived from the SetupOS config |
//! | `node_operator_private_key.pem` | the CONFIG partition, when present |
//! | `ssh_authorized_keys/{admin,backup,readonly}` | the CONFIG partition, when present and the config uses them |
//! | `nns_public_key_override.pem` | the data partition, when present (dev images) |
//! | `registry_root.json` | the data partition, when present (dev and test networks) |

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use icos_config::HostOSConfig;

/// One file for the config volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Its path on the volume.
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
    /// Where it came from (for the log).
    pub source: String,
}

/// Reading an input or writing the volume failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFilesError {
    /// An input could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The input.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config could not be serialised.
    #[error("serialising the HostOS config: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Writing a file on the volume failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file read back differs from what was written.
    #[error("{}: the content read back differs from what was written", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
    },
}

fn optional(path: &Path) -> Result<Option<Vec<u8>>, ConfigFilesError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigFilesError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The SSH key accounts HostOS passes on.
pub const SSH_ACCOUNTS: [&str; 3] = ["admin", "backup", "readonly"];

/// The files for the config volume: the HostOS config and the optional
/// extras from the CONFIG partition (`config_dir`) and the data partition
/// (`data_dir`).
pub fn hostos_config_files(
    hostos: &HostOSConfig,
    config_dir: &Path,
    data_dir: &Path,
) -> Result<Vec<ConfigFile>, ConfigFilesError> {
    let mut text = icos_config::to_json_pretty(hostos)?;
    text.push('\n');
    let mut files = vec![ConfigFile {
        name: "config.json".into(),
        bytes: text.into_bytes(),
        mode: 0o644,
        source: "the HostOS config".into(),
    }];
    let key = config_dir.join("node_operator_private_key.pem");
    if let Some(bytes) = optional(&key)? {
        files.push(ConfigFile {
            name: "node_operator_private_key.pem".into(),
            bytes,
            mode: 0o600,
            source: key.display().to_string(),
        });
    }
    if hostos.icos_settings.use_ssh_authorized_keys {
        for account in SSH_ACCOUNTS {
            let p = config_dir.join("ssh_authorized_keys").join(account);
            if let Some(bytes) = optional(&p)? {
                files.push(ConfigFile {
                    name: format!("ssh_authorized_keys/{account}"),
                    bytes,
                    mode: 0o644,
                    source: p.display().to_string(),
                });
            }
        }
    }
    for name in ["nns_public_key_override.pem", "registry_root.json"] {
        let p = data_dir.join(name);
        if let Some(bytes) = optional(&p)? {
            files.push(ConfigFile {
                name: name.into(),
                bytes,
                mode: 0o644,
                source: p.display().to_string(),
            });
        }
    }
    Ok(files)
}

/// Writes `files` under `dir` (the mounted volume), each synced with its
/// mode set, syncs the folders, then reads every file back and compares.
pub fn write_config_files(dir: &Path, files: &[ConfigFile]) -> Result<(), ConfigFilesError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigFilesError::Write { path, source }
    };
    let mut dirs = vec![dir.to_path_buf()];
    for f in files {
        let path = dir.join(&f.name);
        if let Some(parent) = path.parent().filter(|p| *p != dir) {
            fs::create_dir_all(parent).map_err(write_err(parent))?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
                .map_err(write_err(parent))?;
            if !dirs.iter().any(|d| d == parent) {
                dirs.push(parent.to_path_buf());
            }
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(f.mode)
            .open(&path)
            .map_err(write_err(&path))?;
        out.write_all(&f.bytes).map_err(write_err(&path))?;
        out.set_permissions(fs::Permissions::from_mode(f.mode))
            .map_err(write_err(&path))?;
        out.sync_all().map_err(write_err(&path))?;
    }
    for d in dirs.iter().rev() {
        File::open(d)
            .and_then(|h| h.sync_all())
            .map_err(write_err(d))?;
    }
    for f in files {
        let path = dir.join(&f.name);
        let back = fs::read(&path).map_err(|source| ConfigFilesError::Read {
            path: path.clone(),
            source,
        })?;
        if back != f.bytes {
            return Err(ConfigFilesError::Mismatch { path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hostos(ssh: bool) -> HostOSConfig {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qemu-vm/config.json"),
        )
        .unwrap();
        let mut setupos: icos_config::SetupOSConfig = serde_json::from_str(&text).unwrap();
        setupos.icos_settings.use_ssh_authorized_keys = ssh;
        icos_config::generate_hostos_config(&setupos)
    }

    #[test]
    fn only_allow_listed_files_are_written_and_read_back() {
        let inputs = tempfile::tempdir().unwrap();
        let config_dir = inputs.path().join("config");
        let data_dir = inputs.path().join("data");
        fs::create_dir_all(config_dir.join("ssh_authorized_keys")).unwrap();
        fs::create_dir_all(&data_dir).unwrap();
        fs::write(config_dir.join("node_operator_private_key.pem"), "KEY\n").unwrap();
        fs::write(
            config_dir.join("ssh_authorized_keys/admin"),
            "ssh-ed25519 AAAA a\n",
        )
        .unwrap();
        fs::write(
            config_dir.join("ssh_authorized_keys/root"),
            "ssh-ed25519 AAAA r\n",
        )
        .unwrap();
        fs::write(config_dir.join("config.ini"), "ipv6_prefix=x\n").unwrap();
        fs::write(data_dir.join("deployment.json"), "{}").unwrap();
        fs::write(data_dir.join("nns_public_key_override.pem"), "NNS\n").unwrap();

        let files = hostos_config_files(&hostos(true), &config_dir, &data_dir).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config.json",
                "node_operator_private_key.pem",
                "ssh_authorized_keys/admin",
                "nns_public_key_override.pem"
            ]
        );
        let parsed: HostOSConfig = serde_json::from_slice(&files[0].bytes).unwrap();
        assert_eq!(parsed, hostos(true));

        let volume = tempfile::tempdir().unwrap();
        write_config_files(volume.path(), &files).unwrap();
        let mode = |p: &str| {
            fs::metadata(volume.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("node_operator_private_key.pem"), 0o600);
        assert_eq!(mode("config.json"), 0o644);
        assert_eq!(mode("ssh_authorized_keys"), 0o755);
        assert_eq!(
            fs::read(volume.path().join("ssh_authorized_keys/admin")).unwrap(),
            b"ssh-ed25519 AAAA a\n"
        );
        assert!(!volume.path().join("ssh_authorized_keys/root").exists());

        // Without use_ssh_authorized_keys the keys stay behind.
        let files = hostos_config_files(&hostos(false), &config_dir, &data_dir).unwrap();
        assert!(!files.iter().any(|f| f.name.starts_with("ssh_")));
    }
}
