//! The `icos-boundary` command: help, exit codes, and a run stopped by
//! SIGTERM. Everything listens on loopback only.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use predicates::prelude::*;

fn cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("icos-boundary").unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_documents_flags_and_exit_codes() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("--routing-table <FILE>"))
        .stdout(predicate::str::contains("--retry-count"))
        .stdout(predicate::str::contains("Exit codes:"));
}

#[test]
fn usage_errors_exit_2() {
    cmd()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--routing-table"));
    cmd()
        .args(["--routing-table", "t.json", "--retry-count", "11"])
        .assert()
        .code(2);
    cmd()
        .args(["--routing-table", "t.json", "--read-timeout", "5h"])
        .assert()
        .code(2);
    cmd()
        .args([
            "--routing-table",
            "t.json",
            "--health-subnets-alive-threshold",
            "2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not between 0 and 1"));
}

#[test]
fn a_taken_port_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    cmd()
        .args([
            "--routing-table",
            "/nonexistent.json",
            "--obs-disable-metrics",
        ])
        .args(["--listen", &addr])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("error: binding {addr}")));
}

#[test]
fn serves_until_sigterm_then_exits_0() {
    let port = free_port();
    let mut child = Command::cargo_bin("icos-boundary")
        .unwrap()
        .args([
            "--routing-table",
            "/nonexistent.json",
            "--obs-disable-metrics",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            break out;
        }
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    // No routing table: not healthy.
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(0));
}
