//! ext4 images: determinism, fsck, contents read back.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use icos_imagefs::{
    Ext4Source, Ext4Spec, ImageFsError, TarOptions, e2fsck_check, ext4_file_exists, make_ext4,
    read_file_from_ext4, write_dir_tar,
};

fn spec() -> Ext4Spec {
    Ext4Spec {
        size_bytes: 16 << 20,
        label: "root".into(),
        uuid: uuid::uuid!("6a5c1b1e-0000-4000-8000-000000000001"),
        hash_seed: uuid::uuid!("c61251eb-100b-48fe-b089-57dea7368612"),
        epoch: EPOCH,
    }
}

fn debugfs(img: &Path, request: &str) -> String {
    let tools = tools();
    run(Command::new(&tools.debugfs).arg("-R").arg(request).arg(img))
}

#[test]
fn ext4_from_dir_is_deterministic_and_complete() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    let (a, b, c) = (
        tmp.path().join("a.img"),
        tmp.path().join("b.img"),
        tmp.path().join("c.img"),
    );
    make_ext4(&tools, &spec(), Ext4Source::Dir(&tree), &a).unwrap();
    // Reading the tree bumped atimes; a later build must not care.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    make_ext4(&tools, &spec(), Ext4Source::Dir(&tree), &b).unwrap();
    assert_same_bytes(&a, &b);
    // An independent copy: new inodes, ctimes, mtimes and directory order.
    let copy = tmp.path().join("copy");
    copy_tree(&tree, &copy);
    make_ext4(&tools, &spec(), Ext4Source::Dir(&copy), &c).unwrap();
    assert_same_bytes(&a, &c);
    assert_eq!(fs::metadata(&a).unwrap().len(), 16 << 20);

    e2fsck_check(&tools, &a).unwrap();
    for (name, data) in sample_files() {
        assert_eq!(
            read_file_from_ext4(&tools, &a, 0, name).unwrap(),
            data,
            "{name}"
        );
    }
    let hard1 = debugfs(&a, "stat /etc/hard1");
    let hard2 = debugfs(&a, "stat /etc/hard2");
    let inode = |s: &str| s.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(inode(&hard1), inode(&hard2), "hard link kept");
    assert!(hard1.contains("Links: 2"), "{hard1}");
    let sh = debugfs(&a, "stat /bin/sh");
    assert!(
        sh.contains("Type: symlink") && sh.contains("Fast link dest: \"busybox\""),
        "{sh}"
    );
    let busybox = debugfs(&a, "stat /bin/busybox");
    assert!(busybox.contains("Mode:  04755"), "{busybox}");
    // Every time is the epoch: mtimes after it are clamped, and mke2fs
    // stamps atime/ctime/crtime with SOURCE_DATE_EPOCH.
    for line in busybox.lines().filter(|l| l.contains("time:")) {
        assert!(line.contains("0x6553f100:00000000"), "{line}");
    }
    let shadow = debugfs(&a, "stat /etc/shadow");
    assert!(shadow.contains("Mode:  0640"), "{shadow}");
    let empty = debugfs(&a, "stat /empty");
    assert!(
        empty.contains("Type: directory") && empty.contains("Mode:  0700"),
        "{empty}"
    );
    assert!(debugfs(&a, "stat /fifo").contains("Type: FIFO"));
    if is_root() {
        let null = debugfs(&a, "stat /dev/null");
        assert!(null.contains("Type: character special"), "{null}");
        assert!(null.contains("Device major/minor number: 01:03"), "{null}");
        let cap = debugfs(&a, "ea_list /bin/busybox");
        assert!(cap.contains("security.capability"), "{cap}");
    }
    let sb = run(Command::new(&tools.debugfs).args(["-R", "stats"]).arg(&a));
    assert!(sb.contains("Filesystem volume name:   root"), "{sb}");
    assert!(sb.contains("Filesystem UUID:          6a5c1b1e-0000-4000-8000-000000000001"));
    assert!(sb.contains("Directory Hash Seed:      c61251eb-100b-48fe-b089-57dea7368612"));
    assert!(
        sb.contains("Filesystem created:       Tue Nov 14 22:13:20 2023"),
        "{sb}"
    );
}

#[test]
fn ext4_from_tar_equals_ext4_from_dir() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    let tar = tmp.path().join("tree.tar");
    let mut out = fs::File::create(&tar).unwrap();
    write_dir_tar(
        &tree,
        TarOptions {
            epoch: EPOCH,
            root_owned: false,
            xattrs: true,
        },
        &mut out,
    )
    .unwrap();
    drop(out);
    // GNU tar reads the stream and sees the expected members.
    let listing = run(Command::new(tool("tar", "tar")).arg("-tvf").arg(&tar));
    assert!(listing.contains("./bin/sh -> busybox"), "{listing}");
    assert!(
        listing.contains("./etc/hard2 link to ./etc/hard1"),
        "{listing}"
    );
    assert!(listing.contains(LONG_DIR), "{listing}");

    let (from_tar, from_dir) = (tmp.path().join("t.img"), tmp.path().join("d.img"));
    make_ext4(&tools, &spec(), Ext4Source::Tar(&tar), &from_tar).unwrap();
    make_ext4(&tools, &spec(), Ext4Source::Dir(&tree), &from_dir).unwrap();
    assert_same_bytes(&from_tar, &from_dir);
    e2fsck_check(&tools, &from_tar).unwrap();
}

#[test]
fn ext4_root_owned_and_empty() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    if is_root() {
        std::os::unix::fs::lchown(tree.join("etc/shadow"), Some(0), Some(42)).unwrap();
        std::os::unix::fs::lchown(tree.join("bin/sh"), Some(1000), Some(1000)).unwrap();
    }
    let kept = tmp.path().join("kept.img");
    let root = tmp.path().join("root.img");
    make_ext4(&tools, &spec(), Ext4Source::Dir(&tree), &kept).unwrap();
    make_ext4(&tools, &spec(), Ext4Source::DirRootOwned(&tree), &root).unwrap();
    if is_root() {
        assert!(debugfs(&kept, "stat /etc/shadow").contains("Group:    42"));
        assert!(debugfs(&kept, "stat /bin/sh").contains("User:  1000"));
    }
    let shadow = debugfs(&root, "stat /etc/shadow");
    assert!(shadow.contains("User:     0   Group:     0"), "{shadow}");
    e2fsck_check(&tools, &root).unwrap();

    let (e1, e2) = (tmp.path().join("e1.img"), tmp.path().join("e2.img"));
    make_ext4(&tools, &spec(), Ext4Source::Empty, &e1).unwrap();
    make_ext4(&tools, &spec(), Ext4Source::Empty, &e2).unwrap();
    assert_same_bytes(&e1, &e2);
    e2fsck_check(&tools, &e1).unwrap();
    assert!(ext4_file_exists(&tools, &e1, 0, "lost+found").unwrap());
    assert!(!ext4_file_exists(&tools, &e1, 0, "etc").unwrap());
}

#[test]
fn ext4_errors_name_what_is_wrong() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.img");
    make_ext4(&tools, &spec(), Ext4Source::Empty, &img).unwrap();

    let missing = read_file_from_ext4(&tools, &img, 0, "no/such/file").unwrap_err();
    assert!(
        matches!(missing, ImageFsError::FileNotFound { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("no/such/file"), "{missing}");
    let dir = read_file_from_ext4(&tools, &img, 0, "lost+found").unwrap_err();
    assert!(dir.to_string().contains("directory"), "{dir}");

    // A tree that does not fit: mke2fs fails and the error carries its
    // command line and stderr.
    let tree = tmp.path().join("big");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("blob"), bytes(3, 3 << 20)).unwrap();
    let small = Ext4Spec {
        size_bytes: 2 << 20,
        ..spec()
    };
    let err = make_ext4(&tools, &small, Ext4Source::Dir(&tree), &img).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ImageFsError::Command(_)), "{text}");
    assert!(
        text.contains("mke2fs") && text.contains("SOURCE_DATE_EPOCH=1700000000"),
        "{text}"
    );
    assert!(text.contains("hash_seed=c61251eb"), "{text}");

    // A corrupted filesystem fails e2fsck -fn.
    let good = tmp.path().join("good.img");
    make_ext4(&tools, &spec(), Ext4Source::Empty, &good).unwrap();
    let mut data = fs::read(&good).unwrap();
    // Scribble over the first block group descriptor (block 1).
    for b in &mut data[4096..4096 + 64] {
        *b ^= 0xff;
    }
    fs::write(&good, &data).unwrap();
    let err = e2fsck_check(&tools, &good).unwrap_err();
    assert!(matches!(err, ImageFsError::FsckFailed { .. }), "{err}");
}
