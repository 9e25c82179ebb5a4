//! The command line: help, exit codes, the status view.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use assert_cmd::Command;
use icos_orchestrator::{State, Status};
use predicates::str::contains;

fn cmd() -> Command {
    Command::cargo_bin("icos-orchestrator").unwrap()
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("run"))
        .stdout(contains("status"))
        .stdout(contains("Exit codes"));
    cmd()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(contains("--registry-url"))
        .stdout(contains("--once"));
}

#[test]
fn usage_errors_exit_2() {
    // No registry URL, no node.
    cmd().arg("run").assert().code(2);
    // Node id and address together.
    cmd()
        .args(["run", "--registry-url", "http://127.0.0.1:1/"])
        .args(["--node-id", "2vxsx-fae", "--ipv6", "2001:db8::1"])
        .assert()
        .code(2);
    let dir = tempfile::tempdir().unwrap();
    // A trust root that does not exist.
    let missing = dir.path().join("root.json");
    cmd()
        .args(["run", "--registry-url", "http://127.0.0.1:1/"])
        .args(["--node-id", "2vxsx-fae", "--root"])
        .arg(&missing)
        .assert()
        .code(2)
        .stderr(contains("root.json: no such file"));
    // A version file that does not exist.
    let root = dir.path().join("real-root.json");
    std::fs::write(&root, "{}").unwrap();
    cmd()
        .args(["run", "--registry-url", "http://127.0.0.1:1/"])
        .args(["--node-id", "2vxsx-fae", "--root"])
        .arg(&root)
        .arg("--version-file")
        .arg(dir.path().join("version.txt"))
        .assert()
        .code(2)
        .stderr(contains("version.txt"));
}

#[test]
fn a_disk_that_cannot_be_opened_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.json");
    std::fs::write(&root, "{}").unwrap();
    let version = dir.path().join("version.txt");
    std::fs::write(&version, "v1\n").unwrap();
    cmd()
        .args([
            "run",
            "--once",
            "--no-hostos",
            "--registry-url",
            "http://127.0.0.1:1/",
        ])
        .args(["--node-id", "2vxsx-fae", "--root"])
        .arg(&root)
        .arg("--version-file")
        .arg(&version)
        .arg("--datastore")
        .arg(dir.path().join("store"))
        .arg("--status-file")
        .arg(dir.path().join("status.json"))
        .arg("--disk")
        .arg(dir.path().join("no-disk.img"))
        .assert()
        .code(1)
        .stderr(contains("confirming the boot"))
        .stderr(contains("no-disk.img"));
}

#[test]
fn status_shows_the_file_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    cmd()
        .args(["status", "--status-file"])
        .arg(&path)
        .assert()
        .code(1)
        .stderr(contains("status.json: reading"));
    let status = Status {
        state: Some(State::Downloading {
            version: "v2".into(),
        }),
        running_version: "v1".into(),
        target_version: Some("v2".into()),
        bytes_downloaded: 4096,
        ..Status::default()
    };
    status.write(&path).unwrap();
    cmd()
        .args(["status", "--status-file"])
        .arg(&path)
        .assert()
        .success()
        .stdout(contains("downloading v2"))
        .stdout(contains("running version:  v1"))
        .stdout(contains("bytes downloaded: 4096"));
    let out = cmd()
        .args(["status", "--json", "--status-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let back: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, status);
}

#[test]
fn the_daemon_serves_metrics_and_keeps_running_after_failures() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.json");
    std::fs::write(&root, "{}").unwrap();
    let version = dir.path().join("version.txt");
    std::fs::write(&version, "v1\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let status = dir.path().join("status.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("icos-orchestrator"))
        .args([
            "run",
            "--no-hostos",
            "--registry-url",
            "http://127.0.0.1:1/",
        ])
        .args(["--node-id", "2vxsx-fae", "--root"])
        .arg(&root)
        .arg("--version-file")
        .arg(&version)
        .arg("--datastore")
        .arg(dir.path().join("store"))
        .arg("--status-file")
        .arg(&status)
        .arg("--disk")
        .arg(dir.path().join("no-disk.img"))
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        text.clear();
        s.read_to_string(&mut text).unwrap();
        if text.contains("icos_orchestrator_state{state=\"backoff\"} 1") {
            break;
        }
    }
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive, "the daemon exited");
    assert!(
        text.contains("icos_orchestrator_state{state=\"backoff\"} 1"),
        "{text}"
    );
    let s = Status::read(&status).unwrap();
    let err = s.last_error.unwrap_or_default();
    // Every pass fails on the disk and is logged; the daemon goes on.
    assert!(err.contains("no-disk.img"), "{err}");
}
