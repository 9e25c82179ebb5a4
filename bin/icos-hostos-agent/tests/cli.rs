//! The `icos-hostos-agent` command: help, usage errors, and serving a Unix
//! socket as a separate process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use icos_vsock::client;
use icos_vsock::protocol::{Command as VsockCommand, Payload};
use icos_vsock::transport::Endpoint;
use predicates::str::contains;

#[test]
fn help_documents_exit_codes() {
    assert_cmd::Command::cargo_bin("icos-hostos-agent")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("Exit codes"))
        .stdout(contains("--unix"))
        .stdout(contains("not supported on this host"));
}

#[test]
fn bad_flag_is_exit_2() {
    assert_cmd::Command::cargo_bin("icos-hostos-agent")
        .unwrap()
        .args(["--port", "nope"])
        .assert()
        .code(2);
}

#[test]
fn unbindable_socket_is_exit_1() {
    assert_cmd::Command::cargo_bin("icos-hostos-agent")
        .unwrap()
        .args(["--unix", "/nonexistent-dir/x.sock"])
        .assert()
        .code(1)
        .stderr(contains("binding /nonexistent-dir/x.sock"));
}

#[test]
fn serves_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("version.txt"), "1.2.3\n").unwrap();
    let socket = p("vsock.sock_19090");
    let mut child = Command::new(cargo_bin("icos-hostos-agent"))
        .arg("--unix")
        .arg(&socket)
        .arg("--version-file")
        .arg(p("version.txt"))
        .arg("--metrics-file")
        .arg(p("m.prom"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = client::send(
        &Endpoint::Unix(socket),
        3,
        VsockCommand::GetHostOSVersion,
        Duration::from_secs(10),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(reply.unwrap(), Ok(Payload::HostOSVersion("1.2.3".into())));
    let metrics = std::fs::read_to_string(p("m.prom")).unwrap();
    assert!(
        metrics.contains(r#"{command="GetHostOSVersion",result="ok"} 1"#),
        "{metrics}"
    );
}
