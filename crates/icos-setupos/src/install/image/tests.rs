#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;

use icos_diskwrite::SAMPLE;
use sha2::{Digest, Sha256};

use icos_sparse_tar::{TarBuilder, ZstdOptions};

use super::*;

const MIB: u64 = 1 << 20;

/// Deterministic non-zero-ish bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            u8::try_from(x >> 56).unwrap_or(1) | 1
        })
        .collect()
}

/// A sparse disk image: data at a few offsets (unaligned ones too), holes
/// elsewhere, a size that is not a multiple of 4 KiB.
struct Image {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
}

impl Image {
    fn new() -> Image {
        let size = 9 * MIB + 1234;
        let mut bytes = vec![0u8; usize::try_from(size).unwrap()];
        let parts: [(u64, usize); 5] = [
            (0, 4096),
            (MIB + 512, 700),
            (5 * MIB, 2 * usize::try_from(MIB).unwrap()),
            (8 * MIB + 3, 5),
            (size - 100, 100),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        for (i, (offset, len)) in parts.into_iter().enumerate() {
            let data = pattern(i as u64, len);
            file.write_all_at(&data, offset).unwrap();
            let o = usize::try_from(offset).unwrap();
            bytes[o..o + len].copy_from_slice(&data);
        }
        file.sync_all().unwrap();
        Image { dir, bytes }
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The image as a tar.zst; `sparse` false stores every byte.
    fn archive(&self, sparse: bool) -> PathBuf {
        let out = self.dir.path().join(if sparse {
            "sparse.tar.zst"
        } else {
            "plain.tar.zst"
        });
        let mut b = TarBuilder::new();
        b.add_file("disk.img", self.dir.path().join("disk.img"))
            .add_file("VERSION.TXT", self.version_file())
            .detect_sparse(sparse);
        b.write_tar_zst(&out, &ZstdOptions::default(), &mut |_| {})
            .unwrap();
        out
    }

    fn version_file(&self) -> PathBuf {
        let p = self.dir.path().join("version.txt");
        fs::write(&p, "1.0.0\n").unwrap();
        p
    }
}

/// A target of `size` bytes full of 0xFF.
fn garbage_target(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("target");
    let mut f = File::create(&path).unwrap();
    let chunk = vec![0xFFu8; usize::try_from(MIB).unwrap()];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(MIB)).unwrap();
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    path
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn streams_onto_garbage_and_verifies_with_every_zeroing_method() {
    let img = Image::new();
    for sparse in [true, false] {
        let archive = inspect_archive(&img.archive(sparse)).unwrap();
        assert_eq!(archive.size, img.size());
        assert_eq!(archive.members, ["VERSION.TXT", "disk.img"]);
        if sparse {
            assert!(archive.stored < archive.size, "{archive:?}");
        }
        for methods in [
            &ZeroMethod::ALL[..],
            &[ZeroMethod::ZeroRange][..],
            &[ZeroMethod::WriteZeros][..],
        ] {
            let work = tempfile::tempdir().unwrap();
            let extra = 3 * MIB + 7;
            let target = garbage_target(work.path(), img.size() + extra);
            let mut reports = Vec::new();
            let (written, verified) = install_image(
                &archive,
                &target,
                Zeroer::with_methods(methods),
                HoleCheck::Full,
                &mut |p| reports.push(*p),
            )
            .unwrap();
            let after = fs::read(&target).unwrap();
            let n = img.bytes.len();
            assert!(after[..n] == img.bytes[..], "sparse={sparse} {methods:?}");
            assert!(
                after[n..].iter().all(|&b| b == 0xFF),
                "bytes past the image are left alone"
            );
            assert_eq!(written.data_bytes() + written.zeroed_bytes(), img.size());
            let nonzero = img.bytes.iter().filter(|&&b| b != 0).count() as u64;
            assert!(written.data_bytes() >= nonzero);
            // Sparse: the segments only; plain: the 1 MiB chunks holding data.
            let limit = if sparse { 3 * MIB } else { 6 * MIB };
            assert!(
                written.data_bytes() <= limit,
                "holes are not written as data"
            );
            assert_eq!(verified.zero_bytes_checked, written.zeroed_bytes());
            assert_eq!(verified.data_bytes, written.data_bytes());
            assert!(written.zero_method.is_some());
            if methods == &[ZeroMethod::WriteZeros][..] {
                assert_eq!(written.zero_method, Some(ZeroMethod::WriteZeros));
            }
            let last = reports.last().unwrap();
            assert_eq!((last.done, last.total), (img.size(), img.size()));
            assert_eq!(last.percent(), 100);
            assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
        }
    }
}

#[test]
fn a_corrupted_write_is_found() {
    let img = Image::new();
    let archive = inspect_archive(&img.archive(true)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let target_path = garbage_target(work.path(), img.size());
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target_path)
        .unwrap();
    let written = write_image(
        &archive,
        &target,
        &target_path,
        Zeroer::default(),
        &mut |_| {},
    )
    .unwrap();
    verify_written(&target, &written, HoleCheck::Sample).unwrap();

    // One bit flipped in the data.
    let at = 5 * MIB + 12345;
    let mut b = [0u8; 1];
    target.read_exact_at(&mut b, at).unwrap();
    target.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    let err = verify_written(&target, &written, HoleCheck::Sample).unwrap_err();
    assert!(matches!(err, ImageError::Verify { .. }), "{err}");
    assert!(
        err.to_string().contains("does not match the image"),
        "{err}"
    );
    target.write_all_at(&b, at).unwrap();
    verify_written(&target, &written, HoleCheck::Full).unwrap();

    // Garbage left in a hole: at a sampled block, and deep inside a range.
    let hole = written.zeroed[0];
    target.write_all_at(&[0xAA], hole.offset).unwrap();
    let err = verify_written(&target, &written, HoleCheck::Sample).unwrap_err();
    assert!(
        matches!(err, ImageError::NotZero { offset, .. } if offset == hole.offset),
        "{err}"
    );
    target.write_all_at(&[0], hole.offset).unwrap();
    let big = written.zeroed.iter().find(|z| z.len > 3 * SAMPLE).unwrap();
    let inside = big.offset + SAMPLE + 17;
    target.write_all_at(&[0xAA], inside).unwrap();
    verify_written(&target, &written, HoleCheck::Sample).unwrap();
    let err = verify_written(&target, &written, HoleCheck::Full).unwrap_err();
    assert!(
        matches!(err, ImageError::NotZero { offset, .. } if offset == inside),
        "{err}"
    );
}

#[test]
fn an_image_larger_than_the_target_is_refused_before_writing() {
    let img = Image::new();
    let archive = inspect_archive(&img.archive(true)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = garbage_target(work.path(), img.size() - 1);
    let before = sha(&target);
    let mut called = false;
    let err = install_image(
        &archive,
        &target,
        Zeroer::default(),
        HoleCheck::Full,
        &mut |_| called = true,
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("more than the"), "{err}");
    assert!(!called);
    assert_eq!(sha(&target), before);
}

#[test]
fn archives_without_a_usable_disk_img_are_refused() {
    let img = Image::new();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.tar.zst");
    let mut b = TarBuilder::new();
    b.add_file("VERSION.TXT", img.version_file());
    b.write_tar_zst(&other, &ZstdOptions::default(), &mut |_| {})
        .unwrap();
    let err = inspect_archive(&other).unwrap_err();
    assert!(matches!(err, ImageError::MissingMember { .. }), "{err}");
    assert!(err.to_string().contains("members: VERSION.TXT"), "{err}");

    // A truncated archive is found while listing, before anything is written.
    let good = fs::read(img.archive(true)).unwrap();
    let cut = dir.path().join("cut.tar.zst");
    fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let err = inspect_archive(&cut).unwrap_err();
    assert!(matches!(err, ImageError::Archive { .. }), "{err}");
    let err = inspect_archive(&dir.path().join("missing.tar.zst")).unwrap_err();
    assert!(err.to_string().contains("missing.tar.zst"), "{err}");
}

#[test]
fn zeroing_handles_unaligned_edges() {
    let dir = tempfile::tempdir().unwrap();
    for methods in [&ZeroMethod::ALL[..], &[ZeroMethod::WriteZeros][..]] {
        let path = garbage_target(dir.path(), 64 * 1024);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut z = Zeroer::with_methods(methods);
        z.zero(&f, 100, 20_000).unwrap();
        z.zero(&f, 30_000, 10).unwrap();
        z.zero(&f, 40_960, 8192).unwrap();
        let bytes = fs::read(&path).unwrap();
        for (i, &b) in bytes.iter().enumerate() {
            let zero = (100..20_100).contains(&i)
                || (30_000..30_010).contains(&i)
                || (40_960..49_152).contains(&i);
            assert_eq!(b == 0, zero, "byte {i} with {methods:?}");
        }
    }
}
