//! FAT images: determinism, fsck, contents read back, volume id.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use icos_imagefs::{ImageFsError, VfatSpec, list_vfat, make_vfat, read_file_from_vfat};

fn spec(size_bytes: u64) -> VfatSpec {
    VfatSpec {
        size_bytes,
        label: "ESP".into(),
        volume_id: 0x0b00_70e5,
        epoch: EPOCH,
    }
}

fn inputs(dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    fs::create_dir_all(dir).unwrap();
    let files = [
        ("EFI/BOOT/BOOTX64.EFI", bytes(11, 200_000)),
        ("grubenv", b"# GRUB Environment Block\n".to_vec()),
        ("EFI/debian/grub.cfg", b"set timeout=0\n".to_vec()),
        ("boot/vmlinuz", bytes(12, 70_001)),
    ];
    files
        .iter()
        .enumerate()
        .map(|(i, (inside, data))| {
            let src = dir.join(format!("src{i}"));
            fs::write(&src, data).unwrap();
            (inside.to_string(), src)
        })
        .collect()
}

#[test]
fn vfat_is_deterministic_and_readable() {
    let tools = tools();
    let fsck = tool("fsck.fat", "dosfstools");
    for size in [8u64 << 20, 64 << 20] {
        let tmp = tempfile::tempdir().unwrap();
        let files = inputs(&tmp.path().join("in"));
        let a = tmp.path().join("a.img");
        make_vfat(&tools, &spec(size), &files, &a).unwrap();
        // Other source files with the same contents, given in another order,
        // a second later.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut other = inputs(&tmp.path().join("in2"));
        other.reverse();
        let b = tmp.path().join("b.img");
        make_vfat(&tools, &spec(size), &other, &b).unwrap();
        assert_same_bytes(&a, &b);
        assert_eq!(fs::metadata(&a).unwrap().len(), size);

        run(Command::new(&fsck).arg("-n").arg(&a));
        for (inside, src) in &files {
            assert_eq!(
                read_file_from_vfat(&tools, &a, 0, inside).unwrap(),
                fs::read(src).unwrap(),
                "{inside}"
            );
        }
        assert_eq!(
            list_vfat(&tools, &a, 0).unwrap(),
            [
                "EFI",
                "EFI/BOOT",
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/debian",
                "EFI/debian/grub.cfg",
                "boot",
                "boot/vmlinuz",
                "grubenv"
            ]
        );
        let mdir = run(Command::new(&tools.mdir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
            .arg("-i")
            .arg(&a)
            .arg("::/EFI/BOOT"));
        assert!(mdir.contains("Volume Serial Number is 0B00-70E5"), "{mdir}");
        assert!(mdir.contains("Volume in drive : is ESP"), "{mdir}");
        assert!(mdir.contains("2023-11-14  22:13"), "{mdir}");
        let fat32 = fs::read(&a).unwrap()[82..87] == *b"FAT32";
        assert_eq!(fat32, size >= icos_imagefs::FAT32_MIN_SIZE, "size {size}");
    }
}

#[test]
fn vfat_refuses_bad_input() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let files = inputs(&tmp.path().join("in"));
    let out = tmp.path().join("x.img");
    let mut dup = files.clone();
    dup.push(("efi/boot/bootx64.efi".into(), files[0].1.clone()));
    let err = make_vfat(&tools, &spec(8 << 20), &dup, &out).unwrap_err();
    assert!(err.to_string().contains("given twice"), "{err}");
    let missing = vec![("a".to_string(), tmp.path().join("nope"))];
    let err = make_vfat(&tools, &spec(8 << 20), &missing, &out).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let too_big = vec![("big".to_string(), {
        let p = tmp.path().join("big");
        fs::write(&p, bytes(1, 2 << 20)).unwrap();
        p
    })];
    let err = make_vfat(&tools, &spec(1 << 20), &too_big, &out).unwrap_err();
    assert!(matches!(err, ImageFsError::Command(_)), "{err}");
    assert!(err.to_string().contains("mcopy"), "{err}");

    make_vfat(&tools, &spec(8 << 20), &files, &out).unwrap();
    let err = read_file_from_vfat(&tools, &out, 0, "EFI/none").unwrap_err();
    assert!(matches!(err, ImageFsError::FileNotFound { .. }), "{err}");
}
