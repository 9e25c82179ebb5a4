//! Step 1: the CONFIG media.
//!
//! * [`find_media`] scans `/sys/class/block` for a block device holding a
//!   FAT file system labelled `CONFIG` whose disk is removable (HostOS
//!   attaches the media as a removable USB disk). The config partition of
//!   the GuestOS disk is ext4, so it never matches.
//! * [`read_media_dir`] reads the mounted media: only `ic-bootstrap.tar`,
//!   and of it only the allow-listed members
//!   ([`icos_config_media::read_bootstrap_tar`]); every other file is
//!   ignored and logged by name.
//! * [`apply`] writes the config to `/run/config/config.json` and the NNS
//!   public key to `/run/config/nns_public_key.pem` on every boot (and the
//!   boundary router's routing table, when the media has one, to
//!   `/run/config/routing_table.json`; the registry trust root, when it
//!   has one, to `/run/config/registry_root.json`), and once
//!   (guarded by `/boot/config/CONFIGURED`) the node operator key to
//!   `/var/lib/ic/data/node_operator_private_key.pem` (0400) and the SSH
//!   keys to `/boot/config/accounts_ssh_authorized_keys/<account>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use icos_config_media::Bootstrap;
use icos_config_media::{
    BOOTSTRAP_TAR, IgnoreReason, Ignored, MAX_MEMBER_SIZE, MEDIA_LABEL, MediaError,
};

use crate::{InitError, Paths, Result, write_file};

/// How often [`find_media_retrying`] scans, and how long it waits between
/// scans: 30 s in all (IC-OS tries 10 times a second apart; USB enumeration
/// under emulation is slow), in short steps so that a media that appears
/// while the step waits is taken at once.
pub const MEDIA_TRIES: u32 = 300;
/// The wait between two scans.
pub const MEDIA_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The volume label of a FAT boot sector, if `head` (the first 512 bytes
/// of a device) is one.
pub fn fat_label(head: &[u8]) -> Option<String> {
    if head.len() < 512 || head[510] != 0x55 || head[511] != 0xaa {
        return None;
    }
    // FAT32 has 0 in the 16-bit "sectors per FAT" field; its extended
    // boot record sits 28 bytes further on.
    let base = if head[22] == 0 && head[23] == 0 {
        64
    } else {
        36
    };
    let (sig, label, fs_type) = (
        head[base + 2],
        &head[base + 7..base + 18],
        &head[base + 18..base + 26],
    );
    if sig != 0x29 || !fs_type.starts_with(b"FAT") {
        return None;
    }
    Some(String::from_utf8_lossy(label).trim_end().to_owned())
}

/// One block device as [`find_media`] saw it, for the error message.
fn describe(name: &str, removable: bool, label: Option<&str>) -> String {
    format!(
        "{name}({}{})",
        if removable { "removable" } else { "fixed" },
        label.map(|l| format!(", FAT {l:?}")).unwrap_or_default()
    )
}

fn read_flag(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1")
}

/// Scans the block devices once. `Ok(device)` for the first (by name)
/// CONFIG media, else `Err(what was seen)`.
pub fn find_media(paths: &Paths) -> std::result::Result<PathBuf, String> {
    use std::io::Read;
    let class = paths.sys().join("class/block");
    let mut names: Vec<String> = std::fs::read_dir(&class)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut seen = Vec::new();
    for name in names {
        let sys = class.join(&name);
        // A partition's `..` is its disk (sysfs links resolve to the
        // device hierarchy).
        let removable = read_flag(&sys.join("removable"))
            || (sys.join("partition").exists() && read_flag(&sys.join("../removable")));
        let dev = paths.dev().join(&name);
        let mut head = vec![0u8; 512];
        let label = std::fs::File::open(&dev)
            .and_then(|mut f| f.read_exact(&mut head))
            .ok()
            .and_then(|()| fat_label(&head));
        if removable && label.as_deref() == Some(MEDIA_LABEL) {
            return Ok(dev);
        }
        seen.push(describe(&name, removable, label.as_deref()));
    }
    Err(if seen.is_empty() {
        "no block devices".to_owned()
    } else {
        seen.join(" ")
    })
}

/// [`find_media`] up to `tries` times, `delay` apart.
pub fn find_media_retrying(paths: &Paths, tries: u32, delay: Duration) -> Result<PathBuf> {
    let mut looked = String::new();
    for i in 0..tries.max(1) {
        match find_media(paths) {
            Ok(dev) => {
                tracing::info!(device = %dev.display(), tries = i + 1, "found the CONFIG media");
                return Ok(dev);
            }
            Err(seen) => looked = seen,
        }
        if i + 1 < tries {
            std::thread::sleep(delay);
        }
    }
    Err(InitError::NoMedia { tries, looked })
}

/// Reads a mounted CONFIG media through the allow-list. Files other than
/// `ic-bootstrap.tar` (and members of it that are not allow-listed) are
/// listed in [`Bootstrap::ignored`] and logged as warnings.
pub fn read_media_dir(dir: &Path) -> Result<Bootstrap> {
    let mut names: Vec<(String, bool)> = std::fs::read_dir(dir)
        .map_err(InitError::io("listing", dir))?
        .map(|e| {
            let e = e.map_err(InitError::io("listing", dir))?;
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            Ok((e.file_name().to_string_lossy().into_owned(), is_dir))
        })
        .collect::<Result<_>>()?;
    names.sort();
    let tar_path = dir.join(BOOTSTRAP_TAR);
    let meta = std::fs::symlink_metadata(&tar_path).map_err(|_| MediaError::BadMedia {
        media: dir.to_owned(),
        reason: format!("{BOOTSTRAP_TAR} is missing"),
    })?;
    if !meta.is_file() || meta.len() > MAX_MEMBER_SIZE.saturating_mul(8) {
        return Err(MediaError::BadMedia {
            media: dir.to_owned(),
            reason: format!(
                "{BOOTSTRAP_TAR} is not a regular file of at most {} bytes",
                MAX_MEMBER_SIZE * 8
            ),
        }
        .into());
    }
    let bytes = std::fs::read(&tar_path).map_err(InitError::io("reading", &tar_path))?;
    let mut bootstrap = icos_config_media::read_bootstrap_tar(&bytes, &tar_path)?;
    let mut ignored: Vec<Ignored> = names
        .into_iter()
        .filter(|(n, _)| n != BOOTSTRAP_TAR)
        .map(|(n, is_dir)| Ignored {
            name: format!("media:{n}{}", if is_dir { "/" } else { "" }),
            reason: IgnoreReason::NotAllowed,
        })
        .collect();
    ignored.append(&mut bootstrap.ignored);
    for item in &ignored {
        tracing::warn!(media = %dir.display(), "{item}");
    }
    bootstrap.ignored = ignored;
    Ok(bootstrap)
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whether this was the first boot (the once-only part ran).
    pub first_boot: bool,
    /// Files written, as GuestOS paths, in order.
    pub written: Vec<String>,
}

/// Applies a bootstrap (see the module docs).
pub fn apply(paths: &Paths, bootstrap: &Bootstrap) -> Result<Applied> {
    let mut written = Vec::new();
    let mut put = |path: PathBuf, data: &[u8], mode: u32| -> Result<()> {
        write_file(&path, data, mode)?;
        let shown = path
            .strip_prefix(&paths.root)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| path.display().to_string());
        written.push(shown);
        Ok(())
    };

    let mut json =
        icos_config::to_json_pretty(&bootstrap.config).map_err(|e| InitError::Config {
            field: "config.json",
            reason: e.to_string(),
        })?;
    json.push('\n');
    put(paths.config_json(), json.as_bytes(), 0o644)?;

    let builtin = paths.builtin_nns_public_key();
    let nns = match &bootstrap.extras.nns_public_key_override {
        Some(key) => Some(key.clone()),
        None if builtin.is_file() => {
            Some(std::fs::read(&builtin).map_err(InitError::io("reading", &builtin))?)
        }
        None => None,
    };
    if let Some(key) = nns {
        put(paths.nns_public_key(), &key, 0o444)?;
    }
    if let Some(table) = &bootstrap.extras.routing_table {
        put(paths.routing_table(), table, 0o644)?;
    }
    if let Some(root) = &bootstrap.extras.registry_root {
        put(paths.registry_root(), root, 0o644)?;
    }

    let marker = paths.configured_marker();
    let first_boot = !marker.exists();
    if first_boot {
        if let Some(key) = &bootstrap.extras.node_operator_private_key {
            put(paths.node_operator_key(), key, 0o400)?;
        }
        for (account, keys) in &bootstrap.extras.ssh_authorized_keys {
            put(paths.ssh_keys_dir().join(account.name()), keys, 0o644)?;
        }
        put(marker, b"", 0o644)?;
    }
    Ok(Applied {
        first_boot,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use icos_config_media::{Extras, SshAccount};

    fn bootstrap() -> Bootstrap {
        let mut extras = Extras {
            node_operator_private_key: Some(b"NODE OPERATOR KEY\n".to_vec()),
            nns_public_key_override: Some(b"NNS KEY\n".to_vec()),
            ..Extras::default()
        };
        extras
            .ssh_authorized_keys
            .insert(SshAccount::Admin, b"ssh-ed25519 AAAA admin\n".to_vec());
        Bootstrap {
            config: icos_config_media::dev_guestos_config().unwrap(),
            extras,
            ignored: Vec::new(),
        }
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn fat_labels() {
        let mut head = vec![0u8; 512];
        assert_eq!(fat_label(&head), None);
        head[510] = 0x55;
        head[511] = 0xaa;
        head[22] = 1;
        head[38] = 0x29;
        head[43..54].copy_from_slice(b"CONFIG     ");
        head[54..62].copy_from_slice(b"FAT12   ");
        assert_eq!(fat_label(&head).as_deref(), Some("CONFIG"));
        // ext4 and other file systems have no FAT type string.
        head[54..62].copy_from_slice(b"EXT4    ");
        assert_eq!(fat_label(&head), None);
        // FAT32: the extended boot record is at 64.
        let mut head = vec![0u8; 512];
        head[510] = 0x55;
        head[511] = 0xaa;
        head[66] = 0x29;
        head[71..82].copy_from_slice(b"OTHER      ");
        head[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(fat_label(&head).as_deref(), Some("OTHER"));
    }

    #[test]
    fn routing_table_and_registry_root_are_written_on_every_boot() {
        type Slot = fn(&mut Extras) -> &mut Option<Vec<u8>>;
        type PathOf = fn(&Paths) -> PathBuf;
        type Case = (&'static str, &'static [u8], Slot, PathOf);
        let cases: [Case; 2] = [
            (
                "/run/config/routing_table.json",
                b"{\"subnets\": []}\n",
                |e| &mut e.routing_table,
                Paths::routing_table,
            ),
            (
                "/run/config/registry_root.json",
                b"{\"signed\": {}}\n",
                |e| &mut e.registry_root,
                Paths::registry_root,
            ),
        ];
        for (shown, content, slot, path) in cases {
            let d = tempfile::tempdir().unwrap();
            let p = Paths::new(d.path());
            let mut b = bootstrap();
            *slot(&mut b.extras) = Some(content.to_vec());
            for _ in 0..2 {
                let applied = apply(&p, &b).unwrap();
                assert!(applied.written.contains(&shown.to_owned()), "{shown}");
            }
            assert_eq!(std::fs::read(path(&p)).unwrap(), content);
            assert_eq!(mode(&path(&p)), 0o644);
            // Without it on the media, nothing is written.
            *slot(&mut b.extras) = None;
            let d = tempfile::tempdir().unwrap();
            let p = Paths::new(d.path());
            apply(&p, &b).unwrap();
            assert!(!path(&p).exists(), "{shown}");
        }
    }

    #[test]
    fn applies_once() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let first = apply(&p, &bootstrap()).unwrap();
        assert!(first.first_boot);
        assert_eq!(
            first.written,
            [
                "/run/config/config.json",
                "/run/config/nns_public_key.pem",
                "/var/lib/ic/data/node_operator_private_key.pem",
                "/boot/config/accounts_ssh_authorized_keys/admin",
                "/boot/config/CONFIGURED",
            ]
        );
        assert_eq!(mode(&p.node_operator_key()), 0o400);
        assert_eq!(mode(&p.nns_public_key()), 0o444);
        assert_eq!(
            std::fs::read(p.ssh_keys_dir().join("admin")).unwrap(),
            b"ssh-ed25519 AAAA admin\n"
        );
        let cfg: icos_config::GuestOSConfig =
            icos_config::from_json_str(&std::fs::read_to_string(p.config_json()).unwrap()).unwrap();
        assert_eq!(cfg, bootstrap().config);

        // A second boot writes the per-boot files only, even when the media
        // now carries a different key.
        std::fs::remove_file(p.node_operator_key()).unwrap();
        let mut b = bootstrap();
        b.extras.node_operator_private_key = Some(b"OTHER".to_vec());
        let second = apply(&p, &b).unwrap();
        assert!(!second.first_boot);
        assert_eq!(
            second.written,
            ["/run/config/config.json", "/run/config/nns_public_key.pem"]
        );
        assert!(!p.node_operator_key().exists());
    }

    #[test]
    fn builtin_nns_key_without_override() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let mut b = bootstrap();
        b.extras = Extras::default();
        let a = apply(&p, &b).unwrap();
        assert!(!a.written.iter().any(|w| w.contains("nns")));
        write_file(&p.builtin_nns_public_key(), b"BUILTIN", 0o644).unwrap();
        apply(&p, &b).unwrap();
        assert_eq!(std::fs::read(p.nns_public_key()).unwrap(), b"BUILTIN");
    }

    fn media_dir(d: &Path, extras: &Extras) -> PathBuf {
        let dir = d.join("media");
        std::fs::create_dir_all(&dir).unwrap();
        let tar = icos_config_media::bootstrap_tar(
            &icos_config_media::dev_guestos_config().unwrap(),
            extras,
        )
        .unwrap();
        std::fs::write(dir.join(BOOTSTRAP_TAR), tar).unwrap();
        dir
    }

    #[test]
    fn media_dir_extra_files_are_ignored_and_named() {
        let d = tempfile::tempdir().unwrap();
        let dir = media_dir(d.path(), &bootstrap().extras);
        std::fs::write(dir.join("evil.sh"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(dir.join("ic_state")).unwrap();
        let b = read_media_dir(&dir).unwrap();
        assert_eq!(b.extras, bootstrap().extras);
        let names: Vec<String> = b.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "media:evil.sh: ignored: not on the allow-list",
                "media:ic_state/: ignored: not on the allow-list",
            ]
        );
    }

    #[test]
    fn media_dir_without_the_archive_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let err = read_media_dir(d.path()).unwrap_err().to_string();
        assert!(err.contains("ic-bootstrap.tar is missing"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn finds_the_removable_fat_config_disk() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let dev = p.dev();
        std::fs::create_dir_all(&dev).unwrap();
        let sys = p.sys();
        let devices = sys.join("devices/pci0000:00");
        let class = sys.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xaa;
        fat[22] = 1;
        fat[38] = 0x29;
        fat[43..54].copy_from_slice(b"CONFIG     ");
        fat[54..62].copy_from_slice(b"FAT16   ");
        // vda: fixed disk; vda3 has a FAT labelled CONFIG but is not removable.
        // sda: removable, its partition sda1 holds the media.
        for (disk, removable) in [("vda", "0"), ("sda", "1")] {
            std::fs::create_dir_all(devices.join(disk)).unwrap();
            std::fs::write(devices.join(disk).join("removable"), removable).unwrap();
            symlink(devices.join(disk), class.join(disk)).unwrap();
            std::fs::write(dev.join(disk), vec![0u8; 512]).unwrap();
        }
        for (part, disk) in [("vda3", "vda"), ("sda1", "sda")] {
            let dir = devices.join(disk).join(part);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("partition"), "1").unwrap();
            symlink(&dir, class.join(part)).unwrap();
            std::fs::write(dev.join(part), &fat).unwrap();
        }
        assert_eq!(find_media(&p).unwrap(), dev.join("sda1"));
        std::fs::remove_file(class.join("sda1")).unwrap();
        let seen = find_media(&p).unwrap_err();
        assert_eq!(
            seen,
            "sda(removable) vda(fixed) vda3(fixed, FAT \"CONFIG\")"
        );
        let err = find_media_retrying(&p, 2, Duration::from_millis(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("after 2 tries"), "{err}");
    }

    #[test]
    fn real_media_image_has_a_config_label() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("config.img");
        // Needs mkfs.vfat and mtools, as icos-config-media's own tests.
        icos_config_media::build_media(
            &icos_config_media::dev_guestos_config().unwrap(),
            &Extras::default(),
            &img,
        )
        .unwrap();
        let head = std::fs::read(&img).unwrap();
        assert_eq!(fat_label(&head[..512]).as_deref(), Some(MEDIA_LABEL));
    }
}
