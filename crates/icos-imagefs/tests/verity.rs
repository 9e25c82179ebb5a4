//! dm-verity in place: format, verify, tamper.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use common::*;
use icos_imagefs::{
    Ext4Source, Ext4Spec, ImageFsError, RootHash, VeritySpec, make_ext4, verity_format,
    verity_hash_size, verity_verify,
};

const FS_SIZE: u64 = 8 << 20;
const PART_SIZE: u64 = 12 << 20;

fn vspec() -> VeritySpec {
    let mut salt = [0u8; 32];
    salt[31] = 0x2a;
    VeritySpec {
        hash_offset: PART_SIZE - (2 << 20),
        data_blocks: FS_SIZE / 4096,
        salt,
        uuid: uuid::uuid!("1736291d-aceb-42d7-b044-43ee31d86cd4"),
    }
}

fn root_image(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let tools = tools();
    let tree = dir.join(format!("{name}-tree"));
    make_tree(&tree);
    let img = dir.join(name);
    let spec = Ext4Spec {
        size_bytes: FS_SIZE,
        label: "root".into(),
        uuid: uuid::uuid!("6a5c1b1e-0000-4000-8000-000000000001"),
        hash_seed: uuid::uuid!("c61251eb-100b-48fe-b089-57dea7368612"),
        epoch: EPOCH,
    };
    make_ext4(&tools, &spec, Ext4Source::Dir(&tree), &img).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(PART_SIZE)
        .unwrap();
    img
}

#[test]
fn verity_format_verify_and_tamper() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let a = root_image(tmp.path(), "a.img");
    let b = root_image(tmp.path(), "b.img");
    let ha = verity_format(&tools, &a, &vspec()).unwrap();
    let hb = verity_format(&tools, &b, &vspec()).unwrap();
    assert_eq!(ha, hb);
    assert_same_bytes(&a, &b);
    assert_eq!(fs::metadata(&a).unwrap().len(), PART_SIZE, "not extended");
    assert_eq!(ha.to_string().parse::<RootHash>().unwrap(), ha);
    verity_verify(&tools, &a, &vspec(), &ha).unwrap();

    // A wrong root hash fails.
    let mut wrong = ha;
    wrong.0[0] ^= 1;
    let err = verity_verify(&tools, &a, &vspec(), &wrong).unwrap_err();
    assert!(matches!(err, ImageFsError::VerityMismatch { .. }), "{err}");

    // Other parameters than the superblock's fail.
    let other = VeritySpec {
        salt: [7; 32],
        ..vspec()
    };
    let err = verity_verify(&tools, &a, &other, &ha).unwrap_err();
    assert!(err.to_string().contains("Salt"), "{err}");

    // One flipped bit in a data block fails.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .unwrap();
    let at = 1000 * 4096 + 123;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 1;
    file.write_all_at(&byte, at).unwrap();
    drop(file);
    let err = verity_verify(&tools, &a, &vspec(), &ha).unwrap_err();
    assert!(matches!(err, ImageFsError::VerityMismatch { .. }), "{err}");
    assert!(err.to_string().contains("failed"), "{err}");
}

#[test]
fn verity_refuses_bad_specs() {
    let tools = tools();
    let tmp = tempfile::tempdir().unwrap();
    let img = root_image(tmp.path(), "x.img");
    let inside = VeritySpec {
        hash_offset: 4096,
        ..vspec()
    };
    assert!(verity_format(&tools, &img, &inside).is_err());
    let unaligned = VeritySpec {
        hash_offset: vspec().hash_offset + 1,
        ..vspec()
    };
    assert!(verity_format(&tools, &img, &unaligned).is_err());
    let no_room = VeritySpec {
        hash_offset: PART_SIZE - 4096,
        ..vspec()
    };
    let err = verity_format(&tools, &img, &no_room).unwrap_err();
    assert!(err.to_string().contains("needs the file"), "{err}");
    assert!(verity_hash_size(vspec().data_blocks) <= PART_SIZE - vspec().hash_offset);
}
