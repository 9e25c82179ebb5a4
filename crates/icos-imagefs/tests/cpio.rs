//! newc cpio archives: determinism, GNU cpio reads them back.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::*;
use icos_imagefs::{CpioOptions, read_cpio_newc, write_cpio_newc, write_cpio_newc_with};

#[test]
fn cpio_is_deterministic_and_lists_with_gnu_cpio() {
    let cpio = tool("cpio", "cpio");
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree);
    let copy = tmp.path().join("copy");
    copy_tree(&tree, &copy);

    let mut a = Vec::new();
    write_cpio_newc(&tree, &mut a).unwrap();
    let mut b = Vec::new();
    write_cpio_newc(&tree, &mut b).unwrap();
    let mut c = Vec::new();
    write_cpio_newc(&copy, &mut c).unwrap();
    assert!(a == b, "same tree twice");
    assert!(a == c, "a copy of the tree");

    let archive = tmp.path().join("initrd.cpio");
    fs::write(&archive, &a).unwrap();
    let listing = run(Command::new(&cpio)
        .arg("-it")
        .arg("--quiet")
        .stdin(fs::File::open(&archive).unwrap()));
    let names: Vec<&str> = listing.lines().collect();
    let mut expected = vec![
        "a-directory-name-that-is-quite-long-on-purpose",
        LONG_DIR,
        "bin",
        "bin/busybox",
        "bin/hostname-link",
        "bin/sh",
        "data",
        "data/empty",
        "data/sparse.bin",
        "empty",
        "etc",
        "etc/hard1",
        "etc/hard2",
        "etc/hostname",
        "etc/shadow",
        "fifo",
    ];
    let long_file = format!("{LONG_DIR}/file-with-a-long-name.txt");
    expected.push(&long_file);
    if is_root() {
        expected.extend(["dev", "dev/null"]);
    }
    expected.sort();
    assert_eq!(names, expected);

    // Our reader agrees, and the header fields are the fixed ones.
    let entries = read_cpio_newc(a.as_slice()).unwrap();
    assert_eq!(entries.len(), expected.len());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            (e.uid, e.gid, e.mtime, e.dev_major, e.dev_minor),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(e.name.to_str().unwrap(), expected[i]);
    }
    let ino = |n: &str| entries.iter().find(|e| e.name.to_str() == Some(n)).unwrap();
    assert_eq!(ino("etc/hard1").ino, ino("etc/hard2").ino);
    assert_eq!(ino("etc/hard1").nlink, 2);
    assert!(
        ino("etc/hard1").data.is_empty(),
        "data goes with the last link"
    );
    assert_eq!(ino("etc/hard2").data, b"linked twice\n");
    assert_eq!(ino("bin/sh").data, b"busybox");
    assert_eq!(ino("bin").nlink, 2);
    assert_eq!(ino("bin/busybox").mode, 0o104_755);
    assert_eq!(ino("etc/shadow").mode, 0o100_640);

    // GNU cpio extracts it to the same contents.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let status = Command::new(&cpio)
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(&out)
        .stdin(fs::File::open(&archive).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success());
    for (name, data) in sample_files() {
        assert_eq!(fs::read(out.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        fs::read_link(out.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let (h1, h2) = (
        fs::metadata(out.join("etc/hard1")).unwrap(),
        fs::metadata(out.join("etc/hard2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino());

    // A fixed non-zero mtime.
    let mut d = Vec::new();
    write_cpio_newc_with(
        &tree,
        &mut d,
        &CpioOptions {
            mtime: 1_700_000_000,
        },
    )
    .unwrap();
    assert!(
        read_cpio_newc(d.as_slice())
            .unwrap()
            .iter()
            .all(|e| e.mtime == 1_700_000_000)
    );
}
