#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;

fn sample_extras() -> Extras {
    let mut extras = Extras {
        node_operator_private_key: Some(b"-----BEGIN PRIVATE KEY-----\nabc\n".to_vec()),
        nns_public_key_override: Some(b"-----BEGIN PUBLIC KEY-----\nxyz\n".to_vec()),
        ..Extras::default()
    };
    extras.ssh_authorized_keys.insert(
        SshAccount::Readonly,
        b"ssh-ed25519 AAAA readonly\n".to_vec(),
    );
    extras
        .ssh_authorized_keys
        .insert(SshAccount::Admin, b"ssh-ed25519 AAAA admin\n".to_vec());
    extras
}

fn sha(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn mcopy(media: &Path, source: &Path, target: &str) {
    let status = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i".as_ref(),
            media.as_os_str(),
            source.as_os_str(),
            target.as_ref(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_dev_config_is_valid_and_derived_like_hostos_does() {
    let config = dev_guestos_config().unwrap();
    assert!(icos_config::validate_guestos(&config).is_empty());
    match &config.network_settings.ipv6_config {
        icos_config::Ipv6Config::Fixed(fixed) => {
            assert!(
                fixed.address.starts_with("2001:db8:1234:56:"),
                "{}",
                fixed.address
            );
            assert!(fixed.address.ends_with("/64"));
        }
        other => panic!("expected a fixed address, got {other:?}"),
    }
    assert!(config.upgrade_config.peer_guest_vm_address.is_some());
}

#[test]
fn media_size_is_twice_the_tar_plus_a_mebibyte_rounded_up() {
    assert_eq!(media_size(0), 1 << 20);
    assert_eq!(media_size(10_240), (1 << 20) + 64 * 1024);
    assert_eq!(media_size(32 * 1024), (1 << 20) + 64 * 1024);
    assert_eq!(media_size(32 * 1024 + 1), (1 << 20) + 128 * 1024);
    assert_eq!(media_size(1 << 20) % SIZE_ALIGN, 0);
}

#[test]
fn the_archive_is_sorted_normalised_and_padded() {
    let config = dev_guestos_config().unwrap();
    let bytes = bootstrap_tar(&config, &sample_extras()).unwrap();
    assert_eq!(bytes.len() % 10_240, 0);
    assert_eq!(bytes, bootstrap_tar(&config, &sample_extras()).unwrap());
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.username().unwrap(), Some("root"));
        assert_eq!(h.groupname().unwrap(), Some("root"));
        seen.push((
            String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
            h.mode().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("accounts_ssh_authorized_keys/".to_owned(), 0o755),
            ("accounts_ssh_authorized_keys/admin".to_owned(), 0o644),
            ("accounts_ssh_authorized_keys/readonly".to_owned(), 0o644),
            ("config.json".to_owned(), 0o644),
            ("nns_public_key_override.pem".to_owned(), 0o644),
            ("node_operator_private_key.pem".to_owned(), 0o600),
        ]
    );
}

#[test]
fn an_invalid_config_is_refused_before_anything_is_written() {
    let mut config = dev_guestos_config().unwrap();
    config.config_version = "not a version".to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.img");
    let err = build_media(&config, &Extras::default(), &out).unwrap_err();
    assert!(matches!(err, MediaError::InvalidConfig(_)), "{err}");
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("config_version"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_media_is_byte_identical_across_time_folders_and_file_modes() {
    use std::os::unix::fs::PermissionsExt;

    let config = dev_guestos_config().unwrap();
    let mut hashes = Vec::new();
    for (round, mode) in [(0, 0o600), (1, 0o644)] {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join(format!("inputs-{round}/deeper"));
        let keys = inputs.join("ssh");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("admin"), "ssh-ed25519 AAAA admin\n").unwrap();
        std::fs::write(keys.join("readonly"), "ssh-ed25519 AAAA readonly\n").unwrap();
        let key = inputs.join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nabc\n").unwrap();
        for f in [keys.join("admin"), keys.join("readonly"), key.clone()] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let (extras, skipped) = Extras::load(&ExtraPaths {
            node_operator_private_key: Some(key),
            ssh_authorized_keys_dir: Some(keys),
            nns_public_key_override: None,
            routing_table: None,
            registry_root: None,
        })
        .unwrap();
        assert!(skipped.is_empty());
        let out = dir.path().join(format!("media-{round}.img"));
        let summary = build_media(&config, &extras, &out).unwrap();
        assert_eq!(summary.size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(summary.size, media_size(summary.tar_size));
        hashes.push(sha(&out));
        // Leave no staging folder behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        if round == 0 {
            // A FAT timestamp has a 2-second resolution.
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[test]
fn a_media_round_trips() {
    let config = dev_guestos_config().unwrap();
    let extras = sample_extras();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.img");
    let summary = build_media(&config, &extras, &out).unwrap();
    assert!(summary.members.contains(&"config.json".to_owned()));
    let back = read_bootstrap(&out).unwrap();
    assert_eq!(back.config, config);
    assert_eq!(back.extras, extras);
    assert!(back.ignored.is_empty(), "{:?}", back.ignored);
}

#[test]
fn routing_table_and_registry_root_travel_on_the_media() {
    type Pick = fn(&Extras) -> Option<&Vec<u8>>;
    type Set = fn(&mut ExtraPaths, PathBuf);
    type Case = (&'static str, &'static [u8], Set, Pick);
    let cases: [Case; 2] = [
        (
            "routing_table.json",
            b"{\"subnets\": []}\n",
            |p, f| p.routing_table = Some(f),
            |e| e.routing_table.as_ref(),
        ),
        (
            "registry_root.json",
            b"{\"signed\": {}}\n",
            |p, f| p.registry_root = Some(f),
            |e| e.registry_root.as_ref(),
        ),
    ];
    let config = dev_guestos_config().unwrap();
    for (member, content, set, pick) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.json");
        std::fs::write(&file, content).unwrap();
        let mut paths = ExtraPaths::default();
        set(&mut paths, file);
        let (extras, skipped) = Extras::load(&paths).unwrap();
        assert!(skipped.is_empty());
        assert!(!extras.is_empty());
        let out = dir.path().join("config.img");
        let summary = build_media(&config, &extras, &out).unwrap();
        assert_eq!(summary.members, ["config.json", member]);
        let back = read_bootstrap(&out).unwrap();
        assert_eq!(pick(&back.extras).map(Vec::as_slice), Some(content));
        assert!(back.ignored.is_empty(), "{:?}", back.ignored);
        assert_eq!(back.extras, extras);
    }
}

#[test]
fn extra_files_on_a_tampered_media_are_ignored_and_named() {
    let config = dev_guestos_config().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("config.img");
    build_media(&config, &Extras::default(), &media).unwrap();
    let evil = dir.path().join("evil.sh");
    std::fs::write(&evil, "#!/bin/sh\nrm -rf /\n").unwrap();
    mcopy(&media, &evil, "::evil.sh");

    let back = read_bootstrap(&media).unwrap();
    assert_eq!(back.config, config);
    assert_eq!(back.extras, Extras::default());
    assert_eq!(
        back.ignored,
        [Ignored {
            name: "media:evil.sh".to_owned(),
            reason: IgnoreReason::NotAllowed,
        }]
    );
    assert_eq!(
        back.ignored[0].to_string(),
        "media:evil.sh: ignored: not on the allow-list"
    );
}

/// An archive as a hostile host could write it: the real members plus
/// extra files, a link, a device, a path escape and a duplicate.
fn tampered_tar(config_json: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..100].fill(0);
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("./", tar::EntryType::Directory, b"", None);
    add("./config.json", tar::EntryType::Regular, config_json, None);
    add("./config.json", tar::EntryType::Regular, b"{}", None);
    add(
        "./accounts_ssh_authorized_keys/",
        tar::EntryType::Directory,
        b"",
        None,
    );
    add(
        "./accounts_ssh_authorized_keys/admin",
        tar::EntryType::Regular,
        b"ssh-ed25519 AAAA admin\n",
        None,
    );
    add(
        "./accounts_ssh_authorized_keys/root",
        tar::EntryType::Regular,
        b"ssh-ed25519 AAAA evil\n",
        None,
    );
    add("./ic_state/", tar::EntryType::Directory, b"", None);
    add("./ic_state/checkpoint", tar::EntryType::Regular, b"x", None);
    add(
        "./node_operator_private_key.pem",
        tar::EntryType::Symlink,
        b"",
        Some("/etc/shadow"),
    );
    add("../../etc/passwd", tar::EntryType::Regular, b"x", None);
    add("/etc/passwd", tar::EntryType::Regular, b"x", None);
    add(
        "./nns_public_key_override.pem",
        tar::EntryType::Fifo,
        b"",
        None,
    );
    b.into_inner().unwrap()
}

#[test]
fn members_off_the_allow_list_are_ignored_and_named() {
    let config = dev_guestos_config().unwrap();
    let json = icos_config::to_json_pretty(&config).unwrap();
    let back = read_bootstrap_tar(&tampered_tar(json.as_bytes()), Path::new("t.tar")).unwrap();
    assert_eq!(back.config, config);
    assert_eq!(
        back.extras
            .ssh_authorized_keys
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [SshAccount::Admin]
    );
    assert_eq!(back.extras.node_operator_private_key, None);
    assert_eq!(back.extras.nns_public_key_override, None);
    let named: Vec<String> = back.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        named,
        [
            "ic-bootstrap.tar:./config.json: ignored: duplicate member; the first one is used",
            "ic-bootstrap.tar:./accounts_ssh_authorized_keys/root: ignored: not on the allow-list",
            "ic-bootstrap.tar:./ic_state/: ignored: not on the allow-list",
            "ic-bootstrap.tar:./ic_state/checkpoint: ignored: not on the allow-list",
            "ic-bootstrap.tar:./node_operator_private_key.pem: ignored: not a regular file (symbolic link)",
            "ic-bootstrap.tar:../../etc/passwd: ignored: absolute name or '..'",
            "ic-bootstrap.tar:/etc/passwd: ignored: absolute name or '..'",
            "ic-bootstrap.tar:./nns_public_key_override.pem: ignored: not a regular file (FIFO)",
        ]
    );
}

#[test]
fn a_media_without_a_valid_config_is_rejected() {
    // No config.json at all.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("other").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let err = read_bootstrap_tar(&b.into_inner().unwrap(), Path::new("x.tar")).unwrap_err();
    assert!(err.to_string().contains("config.json is missing"), "{err}");
    assert!(err.is_bad_input());

    // A config.json that breaks a rule.
    let mut value = serde_json::to_value(dev_guestos_config().unwrap()).unwrap();
    value["config_version"] = "2.0.0".into();
    let tar = tampered_tar(value.to_string().as_bytes());
    let err = read_bootstrap_tar(&tar, Path::new("x.tar")).unwrap_err();
    assert!(err.to_string().contains("config_version"), "{err}");
}

#[test]
fn a_fat_image_with_another_label_or_without_the_archive_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("other.img");
    std::fs::File::create(&media)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let status = Command::new("mkfs.vfat")
        .args(["-n".as_ref(), "OTHER".as_ref(), media.as_os_str()])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let err = read_bootstrap(&media).unwrap_err();
    assert!(err.to_string().contains("\"OTHER\""), "{err}");

    let status = Command::new("mlabel")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i".as_ref(), media.as_os_str(), "::CONFIG".as_ref()])
        .status()
        .unwrap();
    assert!(status.success());
    let err = read_bootstrap(&media).unwrap_err();
    assert!(
        err.to_string().contains("ic-bootstrap.tar is missing"),
        "{err}"
    );
}

#[test]
fn loading_extras_skips_unknown_key_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin"), "a\n").unwrap();
    std::fs::write(dir.path().join("root"), "r\n").unwrap();
    std::fs::create_dir(dir.path().join("backup")).unwrap();
    let (extras, skipped) = Extras::load(&ExtraPaths {
        ssh_authorized_keys_dir: Some(dir.path().to_owned()),
        ..ExtraPaths::default()
    })
    .unwrap();
    assert_eq!(
        extras
            .ssh_authorized_keys
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [SshAccount::Admin]
    );
    assert_eq!(
        skipped,
        [dir.path().join("backup"), dir.path().join("root")]
    );

    let err = Extras::load(&ExtraPaths {
        node_operator_private_key: Some(dir.path().join("missing.pem")),
        ..ExtraPaths::default()
    })
    .unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
