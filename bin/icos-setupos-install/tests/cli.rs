//! The command line: help, exit codes, a refused run, the plan.

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
        .stdout(contains("Exit codes"));
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
