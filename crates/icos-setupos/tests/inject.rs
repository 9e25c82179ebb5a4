//! SetupOS disks with IC's layout, and injecting a node provider's inputs
//! into one without mounting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_imagefs::{Tools, list_vfat, read_file_from_ext4, read_file_from_vfat};
use icos_layout::{OsKind, read_gpt_image};
use icos_setupos::inject::{InjectInputs, find_partitions, plan_placements};
use icos_setupos::{InjectError, SetupOsDiskContents, build_setupos_disk, inject};
use sha2::{Digest, Sha256};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn tools() -> Tools {
    Tools::discover().expect("mtools, e2fsprogs and dosfstools (scripts/prereqs.sh)")
}

fn sha256(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Copies `len` bytes at `offset` of `image` into a file of its own.
fn extract(image: &Path, offset: u64, len: u64, out: &Path) {
    let mut src = fs::File::open(image).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut dst = fs::File::create(out).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap();
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(len - left)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        left -= n as u64;
    }
    dst.set_len(len).unwrap();
}

fn all_inputs() -> InjectInputs {
    let ex = examples();
    InjectInputs {
        config_ini: ex.join("config.ini"),
        node_operator_key: Some(ex.join("node_operator_private_key.pem")),
        ssh_keys: Some(ex.join("ssh_authorized_keys")),
        deployment_json: Some(ex.join("deployment.json")),
    }
}

#[test]
fn inject_writes_every_input_and_reads_it_back() {
    let tools = tools();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("setupos.img");
    let template = dir.path().join("template.ini");
    fs::write(&template, "# fill in\n").unwrap();
    build_setupos_disk(
        &tools,
        &SetupOsDiskContents {
            config_files: vec![("config.ini".into(), template)],
            data_files: vec![],
            epoch: 1_700_000_000,
        },
        &image,
    )
    .unwrap();
    let table = read_gpt_image(&image).unwrap();
    assert!(table.differences_from(&OsKind::SetupOs.layout()).is_empty());
    let (config, data) = find_partitions(&image).unwrap();
    assert_eq!(config.offset, 411_648 * 512);
    assert_eq!(data.offset, 514_048 * 512);

    let done = inject(&tools, &image, &all_inputs()).unwrap();
    let inside: Vec<&str> = done.files.iter().map(|p| p.inside.as_str()).collect();
    assert_eq!(
        inside,
        [
            "config.ini",
            "node_operator_private_key.pem",
            "ssh_authorized_keys/admin",
            "deployment.json"
        ]
    );
    let ex = examples();
    assert_eq!(
        read_file_from_vfat(&tools, &image, config.offset, "config.ini").unwrap(),
        fs::read(ex.join("config.ini")).unwrap()
    );
    assert_eq!(
        read_file_from_vfat(&tools, &image, config.offset, "ssh_authorized_keys/admin").unwrap(),
        fs::read(ex.join("ssh_authorized_keys/admin")).unwrap()
    );
    assert_eq!(
        read_file_from_ext4(&tools, &image, data.offset, "deployment.json").unwrap(),
        fs::read(ex.join("deployment.json")).unwrap()
    );
    let listed = list_vfat(&tools, &image, config.offset).unwrap();
    assert_eq!(
        listed,
        [
            "config.ini",
            "node_operator_private_key.pem",
            "ssh_authorized_keys",
            "ssh_authorized_keys/admin"
        ]
    );

    // Injecting again replaces the files (a shorter config.ini leaves no
    // tail of the longer one).
    let short = dir.path().join("config.ini");
    fs::write(
        &short,
        "ipv6_prefix=2001:db8:1:2\nipv6_gateway=2001:db8:1:2::1\n",
    )
    .unwrap();
    let again = InjectInputs {
        config_ini: short.clone(),
        deployment_json: Some(ex.join("deployment.json")),
        ..InjectInputs::default()
    };
    inject(&tools, &image, &again).unwrap();
    assert_eq!(
        read_file_from_vfat(&tools, &image, config.offset, "config.ini").unwrap(),
        fs::read(&short).unwrap()
    );

    // Both filesystems are clean.
    let fat = dir.path().join("config.fat");
    extract(&image, config.offset, config.size, &fat);
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ext = dir.path().join("data.ext4");
    extract(&image, data.offset, icos_setupos::DATA_FS_SIZE, &ext);
    icos_imagefs::e2fsck_check(&tools, &ext).unwrap();
    let stat = Command::new(&tools.debugfs)
        .args(["-R", "stat /deployment.json"])
        .arg(&ext)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("Mode:  0644"), "{stat}");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
}

#[test]
fn bad_inputs_are_all_listed_and_the_image_is_untouched() {
    let tools = tools();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("setupos.img");
    icos_setupos::blank_setupos_disk(&tools, &image).unwrap();
    let before = sha256(&image);

    let ini = dir.path().join("config.ini");
    fs::write(
        &ini,
        "ipv6_prefix=2a00:fb01:400:44:1234\nipv6_gateway=x\nverbose=yes\n",
    )
    .unwrap();
    let key = dir.path().join("key.pem");
    fs::write(&key, "not a key\n").unwrap();
    let ssh = dir.path().join("admin");
    fs::write(&ssh, "ssh-ed25519 !!!notbase64 me@host\n").unwrap();
    let deployment = dir.path().join("deployment.json");
    fs::write(
        &deployment,
        "{\"deployment\": {\"deployment_environment\": \"moon\"}}",
    )
    .unwrap();
    let inputs = InjectInputs {
        config_ini: ini.clone(),
        node_operator_key: Some(key.clone()),
        ssh_keys: Some(ssh.clone()),
        deployment_json: Some(deployment.clone()),
    };
    let problems = plan_placements(&inputs).unwrap_err();
    for file in [&ini, &key, &ssh, &deployment] {
        assert!(
            problems
                .iter()
                .any(|p| p.file.as_deref() == Some(file.as_path())),
            "no problem names {}: {problems}",
            file.display()
        );
    }
    assert!(problems.has_key("ipv6_prefix") && problems.has_key("ipv6_gateway"));
    assert!(problems.has_key("verbose"));

    let err = inject(&tools, &image, &inputs).unwrap_err();
    assert!(err.is_bad_input());
    assert!(matches!(err, InjectError::Inputs(_)));
    assert_eq!(sha256(&image), before, "the image was changed");
}

#[test]
fn an_image_without_the_setupos_partitions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.img");
    fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    let err = find_partitions(&plain).unwrap_err();
    assert!(err.is_bad_input());
    assert!(
        err.to_string()
            .contains("not a SetupOS image: no readable GPT"),
        "{err}"
    );

    // A HostOS-layout GPT has no config or data partition.
    let hostos = dir.path().join("hostos.img");
    icos_layout::write_gpt_image(&hostos, &OsKind::HostOs.layout(), Default::default()).unwrap();
    let err = find_partitions(&hostos).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("the GPT has no partition named 'config'"),
        "{err}"
    );

    // The SetupOS GPT without filesystems.
    let bare = dir.path().join("bare.img");
    icos_layout::write_gpt_image(&bare, &OsKind::SetupOs.layout(), Default::default()).unwrap();
    let err = find_partitions(&bare).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("partition 'config' holds no FAT filesystem"),
        "{err}"
    );
}
