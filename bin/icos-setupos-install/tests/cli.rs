//! The command line: help, exit codes, a refused run, the plan, writing
//! an image archive onto a file.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;

fn cmd() -> Command {
    Command::cargo_bin("icos-setupos-install").unwrap()
}

fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/icos-setupos/tests/data")
        .join(name)
}

#[test]
fn help_lists_the_commands_flags_and_exit_codes() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("run"))
        .stdout(contains("capture"))
        .stdout(contains("plan"))
        .stdout(contains("write"))
        .stdout(contains("Exit codes"));
    cmd()
        .args(["write", "--help"])
        .assert()
        .success()
        .stdout(contains("--archive"))
        .stdout(contains("--target"))
        .stdout(contains("--verify-holes"))
        .stdout(contains("--json"));
    cmd()
        .args(["write", "--archive", "x.tar.zst"])
        .assert()
        .code(2);
    cmd()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(contains("--config-dir"))
        .stdout(contains("[default: /config]"))
        .stdout(contains("--data-dir"))
        .stdout(contains("[default: /data]"))
        .stdout(contains("--commit-time"))
        .stdout(contains("--cmdline"))
        .stdout(contains("[default: /run/setupos]"))
        .stdout(contains("--age-pause-secs"))
        .stdout(contains("--reboot-delay-secs"))
        .stdout(contains("--plain"));
    cmd()
        .args(["capture", "--help"])
        .assert()
        .success()
        .stdout(contains("--out"));
    cmd().arg("capture").assert().code(2);
    cmd()
        .args(["run", "--verify-holes", "some"])
        .assert()
        .code(2);
}

#[test]
fn a_run_with_bad_inputs_prints_the_banner_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(config.join("config.ini"), "ipv6_prefix=nonsense\n").unwrap();
    std::fs::write(dir.path().join("cmdline"), "quiet\n").unwrap();
    cmd()
        .arg("run")
        .arg("--config-dir")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("--cmdline")
        .arg(dir.path().join("cmdline"))
        .arg("--work")
        .arg(dir.path().join("work"))
        .arg("--dev-dir")
        .arg(dir.path().join("dev"))
        .assert()
        .code(1)
        .stdout(contains("INTERNET COMPUTER - SETUP - FAILED"))
        .stdout(contains("ipv6_prefix"))
        .stdout(contains("deployment.json"))
        .stdout(contains("SETUPOS INSTALL FAILED at config"));
    assert!(!dir.path().join("work/config.json").exists());
}

#[test]
fn plan_of_a_capture() {
    cmd()
        .args(["plan", "--captured"])
        .arg(samples("gen2-7313"))
        .assert()
        .success()
        .stdout(contains("HostOS onto nvme0n1"));
    cmd()
        .args(["plan", "--json", "--captured"])
        .arg(samples("gen2-7313"))
        .assert()
        .success()
        .stdout(contains("\"system_drive\""));
    cmd()
        .args(["plan", "--captured"])
        .arg(samples("qemu-vm"))
        .assert()
        .code(1)
        .stderr(contains("no drive to install onto"));
    let dir = tempfile::tempdir().unwrap();
    cmd()
        .args(["plan", "--captured"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(contains("lsblk.json"));
}

#[test]
fn capture_needs_a_config() {
    let dir = tempfile::tempdir().unwrap();
    cmd()
        .args(["capture", "--out"])
        .arg(dir.path().join("out"))
        .arg("--config")
        .arg(dir.path().join("missing.json"))
        .assert()
        .code(2)
        .stderr(contains("missing.json"));
}

/// Deterministic bytes, none of them zero.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(7);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            u8::try_from(x >> 24).unwrap() | 1
        })
        .collect()
}

const MIB: usize = 1 << 20;

/// A sparse disk.img (data at a few offsets, some unaligned; holes
/// elsewhere; a size that is no multiple of 4 KiB) as a tar.zst made by
/// icos-sparse-tar's writer. Returns the image's bytes and the archive.
fn image_archive(dir: &Path) -> (Vec<u8>, PathBuf) {
    let size = 6 * MIB + 333;
    let mut bytes = vec![0u8; size];
    for (i, (at, len)) in [
        (0, 4096),
        (MIB + 17, 999),
        (3 * MIB, MIB + 5),
        (size - 64, 64),
    ]
    .into_iter()
    .enumerate()
    {
        bytes[at..at + len].copy_from_slice(&pattern(u8::try_from(i).unwrap(), len));
    }
    let img = dir.join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(size as u64).unwrap();
    // Written piece by piece so the file has real holes.
    for (i, chunk) in bytes.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            std::os::unix::fs::FileExt::write_all_at(&f, chunk, (i * 4096) as u64).unwrap();
        }
    }
    f.sync_all().unwrap();
    let archive = dir.join("disk-img.tar.zst");
    let mut b = icos_sparse_tar::TarBuilder::new();
    b.add_file("disk.img", &img).detect_sparse(true);
    b.write_tar_zst(
        &archive,
        &icos_sparse_tar::ZstdOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    std::fs::remove_file(&img).unwrap();
    (bytes, archive)
}

#[test]
fn write_puts_the_image_onto_a_garbage_file_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, archive) = image_archive(dir.path());
    let target = dir.path().join("drive");
    let garbage = pattern(99, bytes.len() + 4096);
    std::fs::write(&target, &garbage).unwrap();
    let out = cmd()
        .args(["write", "--json", "--verify-holes", "full", "--archive"])
        .arg(&archive)
        .arg("--target")
        .arg(&target)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let after = std::fs::read(&target).unwrap();
    assert_eq!(after.len(), garbage.len(), "the target keeps its size");
    assert!(
        after[..bytes.len()] == bytes[..],
        "the target holds the image"
    );
    assert!(
        after[bytes.len()..] == garbage[bytes.len()..],
        "bytes past the image are left alone"
    );
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["image_bytes"], bytes.len() as u64);
    let data = report["data_bytes"].as_u64().unwrap();
    let zeroed = report["zeroed_bytes"].as_u64().unwrap();
    assert_eq!(data + zeroed, bytes.len() as u64);
    let nonzero = bytes.iter().filter(|&&b| b != 0).count() as u64;
    assert!(data >= nonzero && data < bytes.len() as u64 / 2, "{report}");
    assert_eq!(report["hole_check"], "full");
    assert_eq!(report["zero_bytes_checked"], zeroed);
    for key in ["write_secs", "sync_secs", "verify_secs", "data_mib_per_sec"] {
        assert!(report[key].as_f64().unwrap() >= 0.0, "{key}: {report}");
    }

    // Again, human-readable, onto garbage again.
    std::fs::write(&target, &garbage).unwrap();
    cmd()
        .args(["write", "--archive"])
        .arg(&archive)
        .arg("--target")
        .arg(&target)
        .assert()
        .success()
        .stdout(contains("data:"))
        .stdout(contains("sync"))
        .stdout(contains("verify"))
        .stdout(contains("sample check"));
    assert!(std::fs::read(&target).unwrap()[..bytes.len()] == bytes[..]);
}

#[test]
fn write_refuses_a_small_target_or_bad_archive_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, archive) = image_archive(dir.path());
    let target = dir.path().join("small");
    let garbage = pattern(5, bytes.len() - 1);
    std::fs::write(&target, &garbage).unwrap();
    cmd()
        .args(["write", "--archive"])
        .arg(&archive)
        .arg("--target")
        .arg(&target)
        .assert()
        .code(2)
        .stderr(contains("more than the"))
        .stderr(contains("small"));
    assert!(std::fs::read(&target).unwrap() == garbage, "left unchanged");

    let not_an_archive = dir.path().join("junk.tar.zst");
    std::fs::write(&not_an_archive, b"not zstd").unwrap();
    cmd()
        .args(["write", "--archive"])
        .arg(&not_an_archive)
        .arg("--target")
        .arg(&target)
        .assert()
        .code(2)
        .stderr(contains("junk.tar.zst"));
    cmd()
        .args(["write", "--archive"])
        .arg(&archive)
        .arg("--target")
        .arg(dir.path().join("missing"))
        .assert()
        .code(2)
        .stderr(contains("missing"));
    assert!(std::fs::read(&target).unwrap() == garbage, "left unchanged");
}
