//! The command line: help, usage errors and start failures.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::str::contains;

fn cmd() -> Command {
    Command::cargo_bin("icos-gateway").unwrap()
}

#[test]
fn help_mentions_testnet_only_root_key_fetch() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("--fetch-root-key"))
        .stdout(contains("Testnets only"))
        .stdout(contains("Exit codes"));
}

#[test]
fn usage_errors_exit_2() {
    // clap's own errors.
    cmd().assert().code(2);
    // Our rules: a root key source is needed.
    cmd()
        .args(["--domain", "localhost"])
        .assert()
        .code(2)
        .stderr(contains("--root-key-file"));
    cmd()
        .args(["--domain", "bad domain", "--fetch-root-key"])
        .assert()
        .code(2);
    // HTTPS needs both files, and usable ones.
    cmd()
        .args(["--domain", "localhost", "--fetch-root-key"])
        .args(["--tls-listen", "127.0.0.1:0"])
        .assert()
        .code(2);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    cmd()
        .args(["--domain", "localhost", "--fetch-root-key"])
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(&empty)
        .arg("--tls-key-file")
        .arg(&empty)
        .assert()
        .code(2)
        .stderr(contains("empty.pem"));
}

#[test]
fn start_failure_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    cmd()
        .args([
            "--domain",
            "localhost",
            "--fetch-root-key",
            "--listen",
            "127.0.0.1:0",
            "--obs-disable-metrics",
            "--policy-denylist",
        ])
        .arg(&missing)
        .assert()
        .code(1)
        .stderr(contains("denylist"));
}

#[test]
fn sigterm_exits_0() {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("icos-gateway"))
        .args([
            "--domain",
            "localhost",
            "--fetch-root-key",
            "--listen",
            "127.0.0.1:0",
            "--obs-disable-metrics",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
