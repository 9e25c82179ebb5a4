//! `icos run guestos`: flags, bad input, and real OVMF boots of tiny test
//! disks.
//!
//! The boots use disks made here: a GPT disk whose EFI system partition
//! holds only a `startup.nsh`, which OVMF's built-in UEFI shell runs when
//! nothing else boots. It lists the CONFIG media (so the test sees the
//! guest reach `ic-bootstrap.tar` on the USB disk) and prints a boot
//! marker. A disk with no ESP boots nothing and must time out. The boots
//! run one at a time (a lock), each in well under 60 s under TCG.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use assert_cmd::prelude::*;
use predicates::prelude::*;

/// At most one QEMU of this test file at a time.
static VM: Mutex<()> = Mutex::new(());

fn icos() -> Command {
    Command::cargo_bin("icos").unwrap()
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 64 MiB GPT disk; with `startup` it has a FAT ESP (sectors 2048..22528)
/// holding that `startup.nsh`.
fn test_disk(dir: &Path, name: &str, startup: Option<&str>) -> PathBuf {
    let disk = dir.join(name);
    let d = disk.display();
    sh(&format!(
        "truncate -s 64M {d} && printf 'label: gpt\\nstart=2048, size=20480, type=U, name=esp\\n' | sfdisk -q {d}"
    ));
    if let Some(script) = startup {
        let nsh = dir.join("startup.nsh");
        std::fs::write(&nsh, script.replace('\n', "\r\n")).unwrap();
        sh(&format!(
            "mkfs.vfat --offset=2048 -n ESP {d} 10240 >/dev/null 2>&1 && MTOOLS_SKIP_CHECK=1 mcopy -i {d}@@1M {} ::startup.nsh",
            nsh.display()
        ));
    }
    disk
}

fn sha(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// No process mentions the work folder any more (QEMU is gone), and the
/// folder is empty (temporary files removed).
fn assert_cleaned_up(work: &Path) {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(work.to_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(work).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn help_lists_the_flags() {
    icos()
        .args(["run", "guestos", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--image")
                .and(predicate::str::contains("--config"))
                .and(predicate::str::contains("--timeout"))
                .and(predicate::str::contains("--memory"))
                .and(predicate::str::contains("--keep"))
                .and(predicate::str::contains("--json"))
                .and(predicate::str::contains("out/guestos/disk-img.tar.zst")),
        );
}

#[test]
fn a_missing_image_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    icos()
        .args(["run", "guestos", "--image"])
        .arg(dir.path().join("nope.tar.zst"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("nope.tar.zst").and(predicate::str::contains("not found")),
        );
}

#[test]
fn a_disk_without_gpt_and_a_bad_config_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    icos()
        .args(["run", "guestos", "--image"])
        .arg(&blank)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no usable GPT"));

    let disk = test_disk(dir.path(), "disk.img", None);
    let config = dir.path().join("guestos.json");
    std::fs::write(&config, r#"{"config_version": "1.17.0"}"#).unwrap();
    icos()
        .args(["run", "guestos", "--image"])
        .arg(&disk)
        .arg("--config")
        .arg(&config)
        .args(["--work-dir"])
        .arg(dir.path().join("work"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("guestos.json"));
    assert!(!dir.path().join("work").exists());
}

#[test]
fn an_archived_disk_boots_to_the_success_marker_and_sees_the_config_media() {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    test_disk(
        dir.path(),
        "disk.img",
        Some("@echo -off\nls fs0:\\\necho GUESTOS BOOT SUCCESS\n"),
    );
    let archive = dir.path().join("disk-img.tar.zst");
    sh(&format!(
        "tar -C {} --sparse --format=gnu -cf - disk.img | zstd -q -o {}",
        dir.path().display(),
        archive.display()
    ));
    let before = sha(&archive);
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = icos()
        .args([
            "run",
            "guestos",
            "--timeout",
            "50",
            "--memory",
            "512",
            "--json",
        ])
        .arg("--image")
        .arg(&archive)
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed().as_secs() < 60);
    // The serial console was streamed, without control sequences, and the
    // guest saw the CONFIG media's one file.
    assert!(stderr.contains("ic-bootstrap.tar"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "success");
    assert_eq!(report["marker_line"], "GUESTOS BOOT SUCCESS");
    assert!(report["elapsed_s"].as_f64().unwrap() > 0.0);
    assert_eq!(sha(&archive), before, "the artifact was modified");
    assert_cleaned_up(&work);
}

#[test]
fn a_failure_marker_exits_1_with_the_last_console_lines() {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let disk = test_disk(
        dir.path(),
        "disk.img",
        Some("@echo -off\necho step one\necho GUESTOS BOOT FAILURE: test disk\n"),
    );
    let before = sha(&disk);
    let work = dir.path().join("work");
    icos()
        .args(["run", "guestos", "--timeout", "50", "--memory", "512"])
        .arg("--image")
        .arg(&disk)
        .arg("--work-dir")
        .arg(&work)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("last")
                .and(predicate::str::contains("  | step one"))
                .and(predicate::str::contains(
                    "the guest reported failure: 'GUESTOS BOOT FAILURE: test disk'",
                )),
        );
    assert_eq!(sha(&disk), before, "the raw disk was modified");
    assert_cleaned_up(&work);
}

#[test]
fn a_disk_with_no_os_times_out_and_leaves_nothing_running() {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let disk = test_disk(dir.path(), "disk.img", None);
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = icos()
        .args([
            "run",
            "guestos",
            "--timeout",
            "20",
            "--memory",
            "512",
            "--json",
        ])
        .arg("--image")
        .arg(&disk)
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed().as_secs() < 60);
    // OVMF found nothing to boot on the disk, then tried the CONFIG media.
    assert!(stderr.contains("USB HARDDRIVE config"), "{stderr}");
    assert!(stderr.contains("(timeout)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "timeout");
    let tail = report["tail"].as_array().unwrap();
    assert!(!tail.is_empty() && tail.len() <= 30);
    assert_cleaned_up(&work);
}
