//! The `icos-hostos-agent` command: help, usage errors, and serving a Unix
//! socket as a separate process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use icos_grubenv::{BootCycle, BootState, GrubEnv, Slot};
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
        .arg("--guest-seen-file")
        .arg(p("run/guest-seen"))
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
    let seen = std::fs::read_to_string(p("run/guest-seen")).unwrap();
    assert!(seen.contains("cid=3"), "{seen}");
    let metrics = std::fs::read_to_string(p("m.prom")).unwrap();
    assert!(
        metrics.contains(r#"{command="GetHostOSVersion",result="ok"} 1"#),
        "{metrics}"
    );
}

/// HostOS's slots as files: a FAT grub partition with grubenv in `state`
/// and six empty-but-sized volumes.
fn host_slots(dir: &std::path::Path, state: BootState) -> (PathBuf, PathBuf) {
    let tools = icos_imagefs::Tools::discover().unwrap();
    let mut env = GrubEnv::new();
    state.write_to_env(&mut env).unwrap();
    let env_file = dir.join("grubenv");
    std::fs::write(&env_file, env.to_bytes().unwrap()).unwrap();
    let grub = dir.join("grub");
    icos_imagefs::make_vfat(
        &tools,
        &icos_imagefs::VfatSpec {
            size_bytes: 1 << 21,
            label: "GRUB".into(),
            volume_id: 1,
            epoch: 1_700_000_000,
        },
        &[("grubenv".into(), env_file)],
        &grub,
    )
    .unwrap();
    let volumes = dir.join("hostlvm");
    std::fs::create_dir(&volumes).unwrap();
    for name in ["A_boot", "A_root", "A_var", "B_boot", "B_root", "B_var"] {
        std::fs::File::create(volumes.join(name))
            .unwrap()
            .set_len(1 << 21)
            .unwrap();
    }
    (grub, volumes)
}

fn confirm_boot(grub: &std::path::Path, volumes: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("icos-hostos-agent").unwrap();
    cmd.arg("confirm-boot")
        .arg("--grub-device")
        .arg(grub)
        .arg("--hostos-volumes")
        .arg(volumes)
        .args(["--guest-unit", "icos-no-such-unit.service"])
        .args(["--timeout-secs", "1", "--poll-secs", "1"]);
    cmd
}

#[test]
fn confirm_boot_leaves_a_stable_boot_and_an_unconfirmed_trial_without_guest() {
    let dir = tempfile::tempdir().unwrap();
    let (grub, volumes) = host_slots(dir.path(), BootState::new(Slot::A, BootCycle::Stable));
    confirm_boot(&grub, &volumes)
        .assert()
        .success()
        .stderr(contains("nothing to confirm"));

    let dir = tempfile::tempdir().unwrap();
    let trial = BootState::new(Slot::B, BootCycle::FailsafeCheck);
    let (grub, volumes) = host_slots(dir.path(), trial);
    let before = std::fs::read(&grub).unwrap();
    confirm_boot(&grub, &volumes)
        .arg("--guest-seen-file")
        .arg(dir.path().join("never"))
        .assert()
        .code(1)
        .stderr(contains("stays unconfirmed"));
    assert_eq!(std::fs::read(&grub).unwrap(), before);

    // Missing volumes are named.
    std::fs::remove_file(volumes.join("B_root")).unwrap();
    confirm_boot(&grub, &volumes)
        .assert()
        .code(1)
        .stderr(contains("B_root"));
}
