//! `icos run setupos` refuses bad input before it makes anything (exit 2);
//! the machine runs themselves are `setupos_install` and `setupos_refusal`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

#[test]
fn a_missing_image_is_bad_input_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    icos()
        .args(["run", "setupos", "--image"])
        .arg(dir.path().join("missing.tar.zst"))
        .arg("--work")
        .arg(dir.path().join("work"))
        .assert()
        .code(2)
        .stderr(contains("missing.tar.zst").and(contains("icos build setupos")));
    // The run folder was removed again.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn flags_break_their_rules() {
    for (args, says) in [
        (&["--disks", "0"][..], "--disks"),
        (&["--disks", "17"][..], "--disks"),
        (&["--disk-size", "12X"][..], "unknown unit"),
        (&["--disk-size", "0"][..], "at least one byte"),
        (&["--check-hardware", "maybe"][..], "--check-hardware"),
        (&["--memory", "512"][..], "--memory"),
        (&["--timeout", "0"][..], "--timeout"),
    ] {
        icos()
            .args(["run", "setupos"])
            .args(args)
            .assert()
            .code(2)
            .stderr(contains(says));
    }
}

#[test]
fn help_names_the_flags_of_the_node_provider() {
    let out = icos().args(["run", "setupos", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for flag in [
        "--image",
        "--work",
        "--config-ini",
        "--deployment-json",
        "--node-operator-key",
        "--ssh-keys",
        "--check-hardware",
        "--perform-installation",
        "--reboot-after-installation",
        "--disks",
        "--disk-size",
        "--memory",
        "--timeout",
        "--no-ntp",
        "--keep",
        "--stay",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
