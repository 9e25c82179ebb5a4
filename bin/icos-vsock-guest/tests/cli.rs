//! The `icos-vsock-guest` command against an in-process agent on a Unix socket.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use icos_vsock::server::{Agent, AgentConfig};
use icos_vsock::transport::UnixTransport;
use predicates::str::contains;

fn agent() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("version.txt"), "4.5.6\n").unwrap();
    std::fs::write(p("tty"), "").unwrap();
    let agent = Arc::new(Agent::new(AgentConfig {
        version_file: p("version.txt"),
        node_id_file: p("node-id"),
        tty: p("tty"),
        notify_interval: Duration::from_millis(5),
        upgrade_dir: p("upgrade"),
        ..AgentConfig::default()
    }));
    let socket = p("s_19090");
    let listener = UnixTransport::bind(&socket, 3).unwrap();
    std::thread::spawn(move || agent.serve(&listener));
    (dir, socket)
}

fn guest(socket: &PathBuf) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("icos-vsock-guest").unwrap();
    cmd.arg("--unix").arg(socket);
    cmd
}

#[test]
fn every_subcommand() {
    let (dir, socket) = agent();
    guest(&socket)
        .arg("get-vsock-protocol")
        .assert()
        .success()
        .stdout("1.0.0\n");
    guest(&socket)
        .arg("get-hostos-version")
        .assert()
        .success()
        .stdout("4.5.6\n");
    guest(&socket)
        .args(["--json", "get-hostos-version"])
        .assert()
        .success()
        .stdout("{\"Ok\":{\"HostOSVersion\":\"4.5.6\"}}\n");
    guest(&socket)
        .args(["notify", "--count", "2", "hello"])
        .assert()
        .success()
        .stdout("ok\n");
    let start = std::time::Instant::now();
    let printed = || {
        std::fs::read_to_string(dir.path().join("tty"))
            .unwrap()
            .matches("hello")
            .count()
    };
    while printed() < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(printed(), 2);
    guest(&socket)
        .args(["set-node-id", "node-abc"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node-id")).unwrap(),
        "node-abc\n"
    );
    // The host refuses: exit 1 with its reason.
    guest(&socket)
        .args(["upgrade", "--url", "http://127.0.0.1:9/x", "--hash", "zz"])
        .assert()
        .code(1)
        .stderr(contains("64 hex digits"));
    guest(&socket)
        .args(["--sender-cid", "9", "get-vsock-protocol"])
        .assert()
        .code(1)
        .stderr(contains("sender_cid 9"));
}

#[test]
fn no_host_is_exit_1_and_usage_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    guest(&dir.path().join("none"))
        .arg("get-vsock-protocol")
        .assert()
        .code(1)
        .stderr(contains("connecting to unix:"));
    guest(&dir.path().join("none"))
        .arg("reboot")
        .assert()
        .code(2);
    assert_cmd::Command::cargo_bin("icos-vsock-guest")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("Exit codes"));
}
