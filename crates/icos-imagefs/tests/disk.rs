//! Whole disks: GPT + partition images at their offsets, holes kept.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::*;
use icos_imagefs::{
    Ext4Source, Ext4Spec, ImageFsError, VfatSpec, assemble_disk, e2fsck_check, make_ext4,
    make_vfat, read_file_from_ext4, read_file_from_vfat,
};
use icos_layout::{Layout, parse_partitions_csv};

/// A small layout with GuestOS names and UUIDs.
fn layout() -> Layout {
    let rows = "\
esp    ,  2048, 16384,U,B78084E2-3363-1346-8C25-D426F26B8928,EFI system partition
grub   , 18432,  8192,L,6788E4CF-F456-104E-9A34-A2C58CFB0EE6,grub
config , 26624,  8192,L,A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6,config
A_root , 34816, 40960,L,7C0A626E-E5EA-E543-B5C5-300EB8304DB7,root
";
    let mut layout = Layout::from_partitions("mini", parse_partitions_csv(rows).unwrap());
    layout.disk_guid = icos_layout::IC_LABEL_ID;
    layout
}

#[test]
fn disk_has_gpt_and_partitions_at_their_offsets() {
    let tools = tools();
    let sfdisk = tool("sfdisk", "fdisk");
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout();

    let boot_src = tmp.path().join("BOOTX64.EFI");
    fs::write(&boot_src, bytes(5, 123_457)).unwrap();
    let esp = tmp.path().join("esp.img");
    let vfat = VfatSpec {
        size_bytes: 8 << 20,
        label: "ESP".into(),
        volume_id: 1,
        epoch: EPOCH,
    };
    make_vfat(
        &tools,
        &vfat,
        &[("EFI/BOOT/BOOTX64.EFI".into(), boot_src.clone())],
        &esp,
    )
    .unwrap();

    let tree = tmp.path().join("tree");
    make_tree(&tree);
    let root = tmp.path().join("root.img");
    let ext4 = Ext4Spec {
        size_bytes: 16 << 20,
        label: "root".into(),
        uuid: uuid::uuid!("6a5c1b1e-0000-4000-8000-000000000001"),
        hash_seed: uuid::uuid!("c61251eb-100b-48fe-b089-57dea7368612"),
        epoch: EPOCH,
    };
    make_ext4(&tools, &ext4, Ext4Source::Dir(&tree), &root).unwrap();
    let config = tmp.path().join("config.img");
    make_ext4(
        &tools,
        &Ext4Spec {
            size_bytes: 4 << 20,
            label: "CONFIG".into(),
            ..ext4.clone()
        },
        Ext4Source::Empty,
        &config,
    )
    .unwrap();

    let images = [
        ("esp", esp.as_path()),
        ("A_root", root.as_path()),
        ("config", config.as_path()),
    ];
    let disk = tmp.path().join("disk.img");
    let disk2 = tmp.path().join("disk2.img");
    assemble_disk(&layout, &images, &disk).unwrap();
    assemble_disk(&layout, &images, &disk2).unwrap();
    assert_same_bytes(&disk, &disk2);
    // Reassembling over an existing file replaces it.
    assemble_disk(&layout, &images, &disk2).unwrap();
    assert_same_bytes(&disk, &disk2);

    let meta = fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), layout.disk_size);
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "holes kept: {} bytes allocated of {}",
        meta.blocks() * 512,
        meta.len()
    );

    let dump = run(Command::new(&sfdisk).arg("--dump").arg(&disk));
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(
        dump.contains("label-id: 2B110BB7-CDEC-7D41-B97E-893EDCBE5428"),
        "{dump}"
    );
    for p in &layout.partitions {
        let line = dump
            .lines()
            .find(|l| l.contains(&format!("name=\"{}\"", p.name)))
            .unwrap_or_else(|| panic!("{} missing in\n{dump}", p.name));
        let field = |key: &str| {
            line.split(',')
                .find_map(|f| f.split_once('=').filter(|(k, _)| k.trim().ends_with(key)))
                .map(|(_, v)| v.trim().to_string())
                .unwrap()
        };
        assert_eq!(field("start"), p.start.to_string(), "{line}");
        assert_eq!(field("size"), p.size.to_string(), "{line}");
        assert!(
            line.contains(&p.uuid.hyphenated().to_string().to_uppercase()),
            "{line}"
        );
    }

    // Each partition reads back at its offset.
    let esp_off = layout.partition("esp").unwrap().offset_bytes();
    assert_eq!(
        read_file_from_vfat(&tools, &disk, esp_off, "EFI/BOOT/BOOTX64.EFI").unwrap(),
        fs::read(&boot_src).unwrap()
    );
    let root_off = layout.partition("A_root").unwrap().offset_bytes();
    for (name, data) in sample_files() {
        assert_eq!(
            read_file_from_ext4(&tools, &disk, root_off, name).unwrap(),
            data,
            "{name}"
        );
    }
    let whole = fs::read(&disk).unwrap();
    for (name, img) in images {
        let off = usize::try_from(layout.partition(name).unwrap().offset_bytes()).unwrap();
        let data = fs::read(img).unwrap();
        assert!(
            whole[off..off + data.len()] == data[..],
            "{name} bytes at its offset"
        );
    }
    // The partition images are still good filesystems.
    e2fsck_check(&tools, &root).unwrap();
    // The grub partition, given no image, is zero.
    let (g0, glen) = layout.byte_range("grub").unwrap();
    let (g0, glen) = (usize::try_from(g0).unwrap(), usize::try_from(glen).unwrap());
    assert!(whole[g0..g0 + glen].iter().all(|&b| b == 0));
}

#[test]
fn disk_refuses_bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout();
    let big = tmp.path().join("big.img");
    fs::File::create(&big)
        .unwrap()
        .set_len((4 << 20) + 512)
        .unwrap();
    let out = tmp.path().join("disk.img");
    let err = assemble_disk(&layout, &[("grub", big.as_path())], &out).unwrap_err();
    assert!(matches!(err, ImageFsError::ImageTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("grub"), "{err}");
    let err = assemble_disk(&layout, &[("B_root", big.as_path())], &out).unwrap_err();
    assert!(
        matches!(err, ImageFsError::UnknownPartition { .. }),
        "{err}"
    );
    let err = assemble_disk(
        &layout,
        &[("A_root", big.as_path()), ("A_root", big.as_path())],
        &out,
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageFsError::DuplicatePartition { .. }),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
