//! Step 4: the role accounts `admin`, `backup` and `readonly`.
//!
//! The accounts themselves are in the image (`/etc/passwd` is on the
//! read-only root); their homes are `/var/lib/<account>`. At boot each
//! account whose keys came with the bootstrap
//! (`/boot/config/accounts_ssh_authorized_keys/<account>`, dev images) gets
//! them as `~/.ssh/authorized_keys` (0600, owned by the account). The SSH
//! host key lives in `/var/lib/ssh/` and is made on first use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{InitError, Paths, Result, write_file};

/// The role accounts, as IC-OS.
pub const ROLE_ACCOUNTS: [&str; 3] = ["admin", "backup", "readonly"];

/// The SSH host key file name under [`Paths::ssh_host_keys`].
pub const HOST_KEY: &str = "ssh_host_ed25519_key";

/// `(uid, gid)` of `account` in `<root>/etc/passwd`.
pub fn lookup(paths: &Paths, account: &str) -> Result<(u32, u32)> {
    let passwd = paths.at("/etc/passwd");
    let text = std::fs::read_to_string(&passwd).map_err(InitError::io("reading", &passwd))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == account)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| InitError::Config {
            field: "/etc/passwd",
            reason: format!("no valid entry for the role account {account}"),
        })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(InitError::io("chown", path))
}

fn mkdir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(InitError::io("creating", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(InitError::io("setting the mode of", path))?;
    chown(path, uid, gid)
}

/// What [`apply`] did for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKeys {
    /// The account.
    pub account: &'static str,
    /// How many keys it got (0: none came with the bootstrap).
    pub keys: usize,
}

/// Sets up the homes and keys of the role accounts.
pub fn apply(paths: &Paths) -> Result<Vec<AccountKeys>> {
    let mut out = Vec::new();
    for account in ROLE_ACCOUNTS {
        let (uid, gid) = lookup(paths, account)?;
        let home = paths.home(account);
        mkdir(&home, 0o755, uid, gid)?;
        let source = paths.ssh_keys_dir().join(account);
        let keys = if source.is_file() {
            let data = std::fs::read(&source).map_err(InitError::io("reading", &source))?;
            let ssh = home.join(".ssh");
            mkdir(&ssh, 0o700, uid, gid)?;
            let file = ssh.join("authorized_keys");
            write_file(&file, &data, 0o600)?;
            chown(&file, uid, gid)?;
            String::from_utf8_lossy(&data)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count()
        } else {
            0
        };
        out.push(AccountKeys { account, keys });
    }
    Ok(out)
}

/// What [`ensure_host_key`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKey {
    /// A usable key was there.
    Kept,
    /// There was none; a new one was made.
    Made,
    /// The key there could not be read (empty or torn by a power cut
    /// before it reached the disk); a new one replaced it.
    Replaced,
}

impl HostKey {
    /// `kept`, `made`, `replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKey::Kept => "kept",
            HostKey::Made => "made",
            HostKey::Replaced => "replaced",
        }
    }
}

/// Makes the SSH host key with `ssh_keygen` unless a usable one exists
/// (`ssh-keygen -y` reads it); returns its path and what was done.
///
/// A new key is made in a scratch folder and written durably (see
/// `write_file`), the public half first, so a VM killed at any point
/// leaves either no key or a whole one; a key left empty by an earlier
/// crash is replaced instead of keeping `sshd` from starting.
pub fn ensure_host_key(paths: &Paths, ssh_keygen: &Path) -> Result<(PathBuf, HostKey)> {
    let dir = paths.ssh_host_keys();
    let key = dir.join(HOST_KEY);
    let found = key.exists();
    if found && key_is_usable(ssh_keygen, &key) {
        return Ok((key, HostKey::Kept));
    }
    let scratch = dir.join(".keygen");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(InitError::io("creating", &scratch))?;
    let new = scratch.join(HOST_KEY);
    let out = Command::new(ssh_keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "guestos", "-f"])
        .arg(&new)
        .output()
        .map_err(InitError::io("running", ssh_keygen))?;
    if !out.status.success() {
        return Err(InitError::failed(
            format!("{} -t ed25519 -f {}", ssh_keygen.display(), new.display()),
            &out,
        ));
    }
    let public = new.with_extension("pub");
    let read = |p: &Path| std::fs::read(p).map_err(InitError::io("reading", p));
    write_file(&key.with_extension("pub"), &read(&public)?, 0o644)?;
    write_file(&key, &read(&new)?, 0o600)?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((
        key,
        if found {
            HostKey::Replaced
        } else {
            HostKey::Made
        },
    ))
}

/// Whether `ssh-keygen -y` can read the private key `key`.
fn key_is_usable(ssh_keygen: &Path, key: &Path) -> bool {
    Command::new(ssh_keygen)
        .arg("-y")
        .arg("-f")
        .arg(key)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        // Our own ids, so chown works without privileges.
        let uid = std::fs::metadata(d.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let (u, g) = (uid.uid(), uid.gid());
        let passwd = format!(
            "root:x:0:0:root:/root:/bin/bash\n\
             admin:x:{u}:{g}::/var/lib/admin:/bin/bash\n\
             backup:x:{u}:{g}::/var/lib/backup:/bin/bash\n\
             readonly:x:{u}:{g}::/var/lib/readonly:/bin/bash\n"
        );
        write_file(&p.at("/etc/passwd"), passwd.as_bytes(), 0o644).unwrap();
        (d, p)
    }

    #[test]
    fn keys_go_to_the_homes() {
        let (_d, p) = root();
        write_file(
            &p.ssh_keys_dir().join("admin"),
            b"# admins\nssh-ed25519 AAAA a\n\nssh-ed25519 BBBB b\n",
            0o644,
        )
        .unwrap();
        let r = apply(&p).unwrap();
        assert_eq!(
            r,
            [
                AccountKeys {
                    account: "admin",
                    keys: 2
                },
                AccountKeys {
                    account: "backup",
                    keys: 0
                },
                AccountKeys {
                    account: "readonly",
                    keys: 0
                },
            ]
        );
        let ak = p.home("admin").join(".ssh/authorized_keys");
        let mode = std::fs::metadata(&ak).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ssh_mode = std::fs::metadata(ak.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(ssh_mode, 0o700);
        assert!(p.home("backup").is_dir());
        assert!(!p.home("backup").join(".ssh").exists());
    }

    #[test]
    fn missing_account_is_an_error() {
        let (_d, p) = root();
        write_file(&p.at("/etc/passwd"), b"root:x:0:0::/root:/bin/sh\n", 0o644).unwrap();
        let err = apply(&p).unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/passwd: no valid entry for the role account admin"
        );
    }

    #[test]
    fn host_key_is_made_once() {
        let keygen = Path::new("/usr/bin/ssh-keygen");
        assert!(keygen.is_file(), "ssh-keygen (openssh-client) is needed");
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let (k, done) = ensure_host_key(&p, keygen).unwrap();
        assert_eq!(done, HostKey::Made);
        let first = std::fs::read(&k).unwrap();
        assert!(first.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----"));
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(k.with_extension("pub").is_file());
        assert!(!k.with_file_name(".keygen").exists());
        assert_eq!(
            ensure_host_key(&p, keygen).unwrap(),
            (k.clone(), HostKey::Kept)
        );
        assert_eq!(std::fs::read(&k).unwrap(), first);
    }

    #[test]
    fn an_empty_or_torn_host_key_is_replaced() {
        let keygen = Path::new("/usr/bin/ssh-keygen");
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let key = p.ssh_host_keys().join(HOST_KEY);
        for bad in [&b""[..], b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn"] {
            write_file(&key, bad, 0o600).unwrap();
            let (k, done) = ensure_host_key(&p, keygen).unwrap();
            assert_eq!((k.as_path(), done), (key.as_path(), HostKey::Replaced));
            assert!(key_is_usable(keygen, &k));
        }
    }
}
