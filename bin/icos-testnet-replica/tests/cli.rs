//! The command line: help, describe, routing-table, exit codes, and a served
//! status document.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use predicates::prelude::*;

const CONFIG: &str = r#"{
  "root_key_seed": "000102030405060708090a0b0c0d0e0f",
  "subnets": [
    {"id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
     "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
     "nodes": 2}
  ]}"#;

fn config() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(CONFIG.as_bytes()).unwrap();
    f
}

fn cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("icos-testnet-replica").unwrap()
}

#[test]
fn help_lists_exit_codes() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes"));
    cmd().args(["serve", "--help"]).assert().success();
}

#[test]
fn describe_prints_ids() {
    let f = config();
    cmd()
        .args(["describe", "--config"])
        .arg(f.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("rwlgt-iiaaa-aaaaa-aaaaa-cai"))
        .stdout(predicate::str::contains(
            "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100",
        ));
}

#[test]
fn routing_table_assigns_ports() {
    let f = config();
    cmd()
        .args(["routing-table", "--port-base", "9100", "--config"])
        .arg(f.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("http://127.0.0.1:9101"));
}

#[test]
fn bad_input_exits_2() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(br#"{"root_key_seed": "00", "subnets": []}"#)
        .unwrap();
    cmd()
        .args(["describe", "--config"])
        .arg(f.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("root_key_seed"));
    let good = config();
    cmd()
        .args(["serve", "--node-index", "5", "--subnet"])
        .arg("tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe")
        .arg("--config")
        .arg(good.path())
        .assert()
        .code(2);
    cmd().arg("--no-such-flag").assert().code(2);
}

#[test]
fn port_taken_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let f = config();
    cmd()
        .args([
            "serve",
            "--subnet",
            "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
        ])
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--config")
        .arg(f.path())
        .assert()
        .code(1);
}

#[test]
fn serves_status_and_stops_on_sigterm() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = config();
    let mut child = Command::cargo_bin("icos-testnet-replica")
        .unwrap()
        .args(["serve", "--impl-version", "v-test", "--subnet"])
        .arg("tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(f.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut body = Vec::new();
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /api/v2/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            s.read_to_end(&mut body).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("v-test") && text.contains("healthy"));

    // A signed query made by `envelope` is answered with a reply.
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("q.cbor");
    cmd()
        .args(["envelope", "--canister", "rwlgt-iiaaa-aaaaa-aaaaa-cai"])
        .args(["--identity-seed", &"07".repeat(32), "--nonce", "01", "-o"])
        .arg(&env)
        .assert()
        .success()
        .stdout(predicate::str::is_match("^[0-9a-f]{64}\n$").unwrap());
    let body = std::fs::read(&env).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v2/canister/rwlgt-iiaaa-aaaaa-aaaaa-cai/query HTTP/1.1\r\nhost: x\r\n\
         content-type: application/cbor\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("replied"), "{text}");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn envelope_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.cbor");
    for args in [
        vec!["--canister", "not-a-principal"],
        vec![
            "--canister",
            "rwlgt-iiaaa-aaaaa-aaaaa-cai",
            "--identity-seed",
            "0102",
        ],
        vec![
            "--canister",
            "rwlgt-iiaaa-aaaaa-aaaaa-cai",
            "--arg-hex",
            "zz",
        ],
        vec![
            "--canister",
            "rwlgt-iiaaa-aaaaa-aaaaa-cai",
            "--expires-in",
            "999",
        ],
    ] {
        cmd()
            .arg("envelope")
            .args(&args)
            .arg("-o")
            .arg(&out)
            .assert()
            .code(2);
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}
