//! Every builder gives the same bytes in a process with another umask, time
//! zone, locale, working directory and stray build variables, from another
//! copy of the source tree.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use icos_imagefs::{
    Ext4Source, Ext4Spec, VeritySpec, VfatSpec, assemble_disk, make_ext4, make_vfat, verity_format,
    write_cpio_newc,
};
use icos_layout::{Layout, parse_partitions_csv};

const CHILD_VAR: &str = "ICOS_IMAGEFS_TEST_CHILD";

/// Builds every kind of image from `tree` into `out`.
fn build_all(tree: &Path, out: &Path) {
    let tools = tools();
    fs::create_dir_all(out).unwrap();
    let ext4 = Ext4Spec {
        size_bytes: 12 << 20,
        label: "root".into(),
        uuid: uuid::uuid!("6a5c1b1e-0000-4000-8000-000000000001"),
        hash_seed: uuid::uuid!("c61251eb-100b-48fe-b089-57dea7368612"),
        epoch: EPOCH,
    };
    let root = out.join("root.img");
    make_ext4(&tools, &ext4, Ext4Source::Dir(tree), &root).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&root)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let verity = VeritySpec {
        hash_offset: 14 << 20,
        data_blocks: 3 * 1024,
        salt: [0x5a; 32],
        uuid: uuid::uuid!("1736291d-aceb-42d7-b044-43ee31d86cd4"),
    };
    let hash = verity_format(&tools, &root, &verity).unwrap();
    fs::write(out.join("root_hash"), hash.to_string()).unwrap();

    let esp = out.join("esp.img");
    let files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), tree.join("bin/busybox")),
        ("hostname".to_string(), tree.join("etc/hostname")),
    ];
    let vfat = VfatSpec {
        size_bytes: 4 << 20,
        label: "ESP".into(),
        volume_id: 0x1234_5678,
        epoch: EPOCH,
    };
    make_vfat(&tools, &vfat, &files, &esp).unwrap();

    let mut cpio = Vec::new();
    write_cpio_newc(tree, &mut cpio).unwrap();
    fs::write(out.join("initrd.cpio"), cpio).unwrap();

    let rows = "esp,2048,8192,U,B78084E2-3363-1346-8C25-D426F26B8928,esp\n\
                A_root,10240,32768,L,7C0A626E-E5EA-E543-B5C5-300EB8304DB7,root\n";
    let layout = Layout::from_partitions("env", parse_partitions_csv(rows).unwrap());
    assemble_disk(
        &layout,
        &[("esp", &esp), ("A_root", &root)],
        &out.join("disk.img"),
    )
    .unwrap();
}

/// The child half: runs only when the parent sets the variable.
#[test]
fn child_build() {
    let Some(spec) = std::env::var_os(CHILD_VAR) else {
        return;
    };
    let spec = PathBuf::from(spec);
    let tree = spec.join("copy");
    build_all(&tree, &spec.join("out2"));
}

#[test]
fn builds_do_not_depend_on_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    build_all(&tree, &tmp.path().join("out1"));

    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy_tree(&tree, &tmp.path().join("copy"));
    let cwd = tmp.path().join("elsewhere");
    fs::create_dir(&cwd).unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 077; cd \"$1\"; shift; exec \"$@\"")
        .arg("sh")
        .arg(&cwd)
        .arg(&exe)
        .args(["--exact", "child_build", "--test-threads=1", "--nocapture"])
        .env(CHILD_VAR, tmp.path())
        .env("TZ", "Pacific/Chatham")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("SOURCE_DATE_EPOCH", "12345")
        .env("E2FSPROGS_FAKE_TIME", "54321")
        .env("MKE2FS_CONFIG", "/nonexistent")
        .env("MTOOLS_LOWER_CASE", "1")
        .status()
        .unwrap();
    assert!(status.success(), "child build failed: {status}");

    for name in [
        "root.img",
        "root_hash",
        "esp.img",
        "initrd.cpio",
        "disk.img",
    ] {
        assert_same_bytes(
            &tmp.path().join("out1").join(name),
            &tmp.path().join("out2").join(name),
        );
    }
}
