//! Micro benchmark: a 50 GiB sparse disk image holding about 500 MB of
//! real binaries (from `/usr`), archived to tar and to tar.zst.
//!
//! ```text
//! cargo test --release -p icos-sparse-tar --test bench -- --ignored --nocapture
//! ```
//!
//! `ICOS_BENCH_DIR` picks where the image is made (default: the system temp
//! directory; it needs ~500 MB free); `ICOS_BENCH_GNU=1` also times GNU tar
//! on the same file (several minutes: it reads all 50 GiB).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use icos_sparse_tar::{TarBuilder, ZstdOptions};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IMAGE_SIZE: u64 = 50 * GIB;
const DATA_TARGET: u64 = 500_000_000;

/// Regular files under `dir`, recursively, in name order.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = read.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => files_under(&path, out),
            Ok(m) if m.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Writes ~500 MB of binaries into a 50 GiB sparse file, in 4 MiB pieces
/// spread over the whole image (clustered at the start, like a root
/// filesystem, plus pieces everywhere).
fn make_image(path: &Path) -> u64 {
    let mut sources = Vec::new();
    files_under(Path::new("/usr/lib/x86_64-linux-gnu"), &mut sources);
    files_under(Path::new("/usr/bin"), &mut sources);
    files_under(Path::new("/usr/lib"), &mut sources);
    let image = File::create(path).unwrap();
    image.set_len(IMAGE_SIZE).unwrap();
    let mut piece = Vec::with_capacity(4 * 1024 * 1024);
    let mut written = 0u64;
    let mut index = 0u64;
    let mut sources = sources.into_iter();
    while written < DATA_TARGET {
        piece.clear();
        while piece.len() < 4 * 1024 * 1024 {
            let Some(src) = sources.next() else { break };
            if let Ok(bytes) = fs::read(&src) {
                piece.extend_from_slice(&bytes);
            }
        }
        if piece.is_empty() {
            break;
        }
        piece.truncate(4 * 1024 * 1024);
        // First half of the data packed at 1 GiB, the rest every 512 MiB.
        let offset = if written < DATA_TARGET / 2 {
            GIB + index * 4 * MIB
        } else {
            2 * GIB + (index % 90) * 512 * MIB + (index / 90) * 8 * MIB
        };
        image.write_all_at(&piece, offset).unwrap();
        written += piece.len() as u64;
        index += 1;
    }
    image.sync_all().unwrap();
    written
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
#[ignore = "benchmark: builds a 50 GiB sparse file; run with --ignored --nocapture"]
fn archive_50_gib_sparse_image() {
    let base = std::env::var_os("ICOS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base).unwrap();
    let image = dir.path().join("disk.img");
    let t = Instant::now();
    let data = make_image(&image);
    let blocks = fs::metadata(&image).unwrap().blocks();
    println!(
        "image: {} GiB, {data} bytes of data written, {} MB allocated, made in {:.1?}",
        IMAGE_SIZE / GIB,
        blocks * 512 / 1_000_000,
        t.elapsed()
    );

    let mut builder = TarBuilder::new();
    builder.add_file("disk.img", &image);

    let t = Instant::now();
    let plan = builder.plan(&mut |_| {}).unwrap();
    let entry = plan.entries().next().unwrap().clone();
    println!(
        "scan: {:.2?}; map has {} segments, {} bytes stored; tar size {}",
        t.elapsed(),
        entry.sparse_map.as_ref().map_or(0, Vec::len),
        entry.stored_size,
        plan.tar_size()
    );

    let t = Instant::now();
    let counter = plan.write_to(Counter(0), &mut |_| {}).unwrap();
    println!(
        "tar to a counting sink: {:.2?}, {} bytes",
        t.elapsed(),
        counter.0
    );

    for (level, workers) in [(3, 2), (3, 0), (10, 2), (10, 0), (19, 2)] {
        let out = dir
            .path()
            .join(format!("disk-img-{level}-{workers}.tar.zst"));
        let t = Instant::now();
        let summary = plan
            .write_tar_zst(&out, &ZstdOptions { level, workers }, &mut |_| {})
            .unwrap();
        println!(
            "tar.zst level {level:>2}, workers {workers}: {:>7.2?}, {} bytes ({:.1}% of tar)",
            t.elapsed(),
            summary.compressed_size,
            summary.compressed_size as f64 * 100.0 / summary.tar_size as f64
        );
        fs::remove_file(&out).unwrap();
    }

    let t = Instant::now();
    let full = builder.write_tar_zst(
        &dir.path().join("disk-img.tar.zst"),
        &ZstdOptions::default(),
        &mut |_| {},
    );
    println!(
        "default options, scan + write: {:.2?} ({:?})",
        t.elapsed(),
        full.map(|s| s.compressed_size)
    );

    if std::env::var_os("ICOS_BENCH_GNU").is_some() {
        let t = Instant::now();
        let status = Command::new("/usr/bin/tar")
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-cf", "gnu.tar", "--sort=name", "--mtime=UTC 1970-01-01"])
            .args(["--owner=root:0", "--group=root:0", "--numeric-owner"])
            .args([
                "--sparse",
                "--hole-detection=raw",
                "--format=gnu",
                "disk.img",
            ])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let gnu = fs::read(dir.path().join("gnu.tar")).unwrap();
        let ours = plan.write_to(Vec::new(), &mut |_| {}).unwrap();
        println!(
            "GNU tar: {:.2?}, identical to ours: {}",
            t.elapsed(),
            gnu == ours
        );
    }
}
