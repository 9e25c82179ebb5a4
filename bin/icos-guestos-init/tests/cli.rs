//! `icos-guestos-init` on a temporary root: the steps in boot order with a
//! media folder, the console lines, and the exit codes.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

fn init(root: &Path) -> Command {
    let mut c = Command::cargo_bin("icos-guestos-init").unwrap();
    c.arg("--root")
        .arg(root)
        .arg("--console")
        .arg(root.join("ttyS0"));
    c
}

fn console(root: &Path) -> String {
    std::fs::read_to_string(root.join("ttyS0")).unwrap()
}

#[test]
fn steps_in_order_on_a_temporary_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::write(root.join("ttyS0"), "").unwrap();
    let media = root.join("media");
    std::fs::create_dir(&media).unwrap();
    let tar = icos_config_media::bootstrap_tar(
        &icos_config_media::dev_guestos_config().unwrap(),
        &icos_config_media::Extras::default(),
    )
    .unwrap();
    std::fs::write(media.join("ic-bootstrap.tar"), tar).unwrap();
    std::fs::write(media.join("autorun.sh"), "x").unwrap();

    init(root)
        .args(["bootstrap", "--media-dir"])
        .arg(&media)
        .assert()
        .success();
    let c = console(root);
    assert!(
        c.contains("GUESTOS CONFIG media:autorun.sh: ignored: not on the allow-list"),
        "{c}"
    );
    assert!(
        c.contains("GUESTOS STEP bootstrap: ok: applied (first boot)"),
        "{c}"
    );
    init(root)
        .args(["bootstrap", "--media-dir"])
        .arg(&media)
        .assert()
        .success();
    assert!(console(root).contains("config refreshed (already configured)"));

    init(root).arg("network").assert().success();
    assert!(
        root.join("run/systemd/network/10-icos-guestos.network")
            .is_file()
    );
    init(root)
        .args(["firewall", "--no-load"])
        .assert()
        .success();
    assert!(
        root.join("run/ic-node/nftables-ruleset/nftables.conf")
            .is_file()
    );
    init(root).arg("replica-config").assert().success();
    assert!(root.join("run/ic-node/config/replica.env").is_file());
    // No vsock device under this root: nothing happens, nothing is printed.
    let before = console(root);
    init(root).arg("vsock").assert().success();
    assert_eq!(console(root), before);
}

#[test]
fn a_step_without_the_bootstrap_fails_with_the_marker() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ttyS0"), "").unwrap();
    init(d.path())
        .arg("network")
        .assert()
        .code(1)
        .stderr(contains("config.json"));
    let c = console(d.path());
    assert!(c.starts_with("GUESTOS BOOT FAILURE: network: "), "{c}");
    assert!(c.contains("did the bootstrap step run?"), "{c}");
}

#[test]
fn no_media_fails_after_the_tries() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ttyS0"), "").unwrap();
    init(d.path())
        .args(["bootstrap", "--tries", "1"])
        .assert()
        .code(1);
    let c = console(d.path());
    assert!(
        c.starts_with("GUESTOS BOOT FAILURE: bootstrap: no CONFIG media"),
        "{c}"
    );
}

#[test]
fn bad_config_on_the_media_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::write(root.join("ttyS0"), "").unwrap();
    let media = root.join("media");
    std::fs::create_dir(&media).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "config.json", &b"{}"[..]).unwrap();
    std::fs::write(media.join("ic-bootstrap.tar"), b.into_inner().unwrap()).unwrap();
    init(root)
        .args(["bootstrap", "--media-dir"])
        .arg(&media)
        .assert()
        .code(2);
    assert!(console(root).contains("config.json is not a GuestOS config"));
}

#[test]
fn usage_errors_exit_2() {
    Command::cargo_bin("icos-guestos-init")
        .unwrap()
        .arg("nonsense")
        .assert()
        .code(2);
    Command::cargo_bin("icos-guestos-init")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("bootstrap"));
}
