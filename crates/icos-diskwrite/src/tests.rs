//! The writer and the check, on a window of a temporary file.

#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::{
    DiskWriteError, HoleCheck, Medium, SAMPLE, Window, Writer, ZeroMethod, Zeroer, verify,
};

const MIB: u64 = 1 << 20;
const BASE: u64 = 3 * MIB + 512;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            u8::try_from(x >> 56).unwrap() | 1
        })
        .collect()
}

/// A disk file of `len` bytes of 0xFF.
fn garbage(dir: &std::path::Path, len: u64) -> (std::path::PathBuf, File) {
    let path = dir.join("disk");
    std::fs::write(&path, vec![0xFFu8; usize::try_from(len).unwrap()]).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (path, f)
}

/// The image: data pieces (unaligned too), holes between, an all-zero
/// chunk handed in as data, and a hole at the end.
fn image() -> (u64, Vec<(u64, Vec<u8>)>) {
    let size = 9 * MIB + 1234;
    let pieces = vec![
        (100, pattern(1, 700)),
        (MIB + 512, pattern(2, 700)),
        (2 * MIB, vec![0u8; 1 << 20]),
        (5 * MIB, pattern(3, 2 << 20)),
        (8 * MIB + 3, pattern(4, 5)),
    ];
    (size, pieces)
}

fn expected(size: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(size).unwrap()];
    for (at, bytes) in pieces {
        let at = usize::try_from(*at).unwrap();
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }
    v
}

#[test]
fn writes_data_zeroes_holes_and_verifies_inside_a_window() {
    let (size, pieces) = image();
    let want = expected(size, &pieces);
    for (hold, methods) in [
        (0, &ZeroMethod::ALL[..]),
        (MIB, &ZeroMethod::ALL[..]),
        (MIB, &[ZeroMethod::WriteZeros][..]),
        (4096, &[ZeroMethod::ZeroRange][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let disk_len = BASE + size + 5 * MIB;
        let (path, file) = garbage(dir.path(), disk_len);
        let win =
            Window::new(&file, &path, BASE, size + MIB).with_zeroer(Zeroer::with_methods(methods));
        let mut seen = Vec::new();
        let mut progress = |p: crate::Position| seen.push(p.done);
        let mut w = Writer::new(win, size)
            .unwrap()
            .hold_back(hold)
            .on_progress(&mut progress);
        for (at, bytes) in &pieces {
            w.data(*at, bytes).unwrap();
        }
        let (mut win, record, head) = w.finish().unwrap();
        assert_eq!(head.len() as u64, hold);
        assert!(head[..] == want[..head.len()]);
        // The head is not written yet: the disk still has garbage there.
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, BASE).unwrap();
        assert_eq!(b[0], if hold == 0 { 0 } else { 0xFF });
        win.write_at(0, &head).unwrap();
        file.sync_all().unwrap();
        assert_eq!(record.data_bytes() + record.zeroed_bytes(), size);
        // The zero chunk is a hole, not data.
        assert!(record.data_bytes() <= hold + 2 * MIB + 1405, "{record:?}");
        assert_eq!(record.data[0].offset, if hold == 0 { 100 } else { 0 });
        let data_hash: Vec<u8> = record
            .data
            .iter()
            .flat_map(|e| {
                want[usize::try_from(e.offset).unwrap()..usize::try_from(e.end()).unwrap()].to_vec()
            })
            .collect();
        assert_eq!(
            record.data_sha256,
            <[u8; 32]>::from(Sha256::digest(&data_hash))
        );
        if methods == [ZeroMethod::WriteZeros] {
            assert_eq!(record.zero_method, Some(ZeroMethod::WriteZeros));
        }
        assert!(record.zero_method.is_some());
        assert_eq!(seen.last(), Some(&size));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));

        let v = verify(&mut win, &record, HoleCheck::Full).unwrap();
        assert_eq!(v.zero_bytes_checked, record.zeroed_bytes());
        let after = std::fs::read(&path).unwrap();
        let base = usize::try_from(BASE).unwrap();
        let end = base + want.len();
        assert!(after[base..end] == want[..], "hold {hold} {methods:?}");
        assert!(
            after[..base].iter().all(|&b| b == 0xFF),
            "before the window"
        );
        assert!(after[end..].iter().all(|&b| b == 0xFF), "past the image");
    }
}

#[test]
fn a_changed_byte_is_found_in_data_and_in_holes() {
    let (size, pieces) = image();
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = garbage(dir.path(), BASE + size);
    let mut w = Writer::new(Window::new(&file, &path, BASE, size), size).unwrap();
    for (at, bytes) in &pieces {
        w.data(*at, bytes).unwrap();
    }
    let (mut win, record, _) = w.finish().unwrap();
    verify(&mut win, &record, HoleCheck::Sample).unwrap();

    let at = BASE + 5 * MIB + 12345;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    let err = verify(&mut win, &record, HoleCheck::Sample).unwrap_err();
    assert!(matches!(err, DiskWriteError::Verify { .. }), "{err}");
    assert!(err.to_string().contains("disk"), "{err}");
    file.write_all_at(&b, at).unwrap();

    // At the start of a hole (sampled), and deep inside one (only Full).
    let hole = record.zeroed[0];
    file.write_all_at(&[0xAA], BASE + hole.offset).unwrap();
    let err = verify(&mut win, &record, HoleCheck::Sample).unwrap_err();
    assert!(
        matches!(err, DiskWriteError::NotZero { offset, .. } if offset == hole.offset),
        "{err}"
    );
    file.write_all_at(&[0], BASE + hole.offset).unwrap();
    let big = record.zeroed.iter().find(|z| z.len > 3 * SAMPLE).unwrap();
    let inside = big.offset + SAMPLE + 17;
    file.write_all_at(&[0xAA], BASE + inside).unwrap();
    verify(&mut win, &record, HoleCheck::Sample).unwrap();
    let err = verify(&mut win, &record, HoleCheck::Full).unwrap_err();
    assert!(
        matches!(err, DiskWriteError::NotZero { offset, .. } if offset == inside),
        "{err}"
    );
}

#[test]
fn bad_order_and_oversize_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = garbage(dir.path(), 4 * MIB);
    let err = Writer::new(Window::new(&file, &path, MIB, MIB), MIB + 1).unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than the 1048576-byte target"),
        "{err}"
    );
    let mut w = Writer::new(Window::new(&file, &path, MIB, MIB), MIB).unwrap();
    w.data(4096, b"x").unwrap();
    let err = w.data(100, b"y").unwrap_err();
    assert!(err.to_string().contains("comes before byte 4097"), "{err}");
    let err = w.data(MIB - 1, b"yz").unwrap_err();
    assert!(err.to_string().contains("past the image"), "{err}");
    let untouched = std::fs::read(&path).unwrap();
    assert!(
        untouched[..usize::try_from(MIB).unwrap()]
            .iter()
            .all(|&b| b == 0xFF)
    );
}
