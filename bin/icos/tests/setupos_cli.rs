//! `icos setupos`: injecting inputs into a SetupOS image, and the
//! installer's checks over captured output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn captured(machine: &str) -> PathBuf {
    root().join("crates/icos-setupos/tests/data").join(machine)
}

fn sha256(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[test]
fn check_passes_on_a_gen2_server() {
    icos()
        .args(["setupos", "check", "--captured"])
        .arg(captured("gen2-7313"))
        .assert()
        .success()
        .stdout(
            contains("age check: passed")
                .and(contains(
                    "hardware check: passed\n  CPU: 2 socket(s): AMD EPYC 7313",
                ))
                .and(contains("network check: passed"))
                .and(contains("time check: passed"))
                .and(contains("install plan: HostOS onto nvme0n1"))
                .and(contains("INTERNET COMPUTER - SETUP - FAILED").not()),
        );
}

#[test]
fn a_failed_check_prints_the_banner_with_every_reason() {
    icos()
        .args(["setupos", "check", "--captured"])
        .arg(captured("gen1-7302"))
        .assert()
        .code(1)
        .stdout(
            contains("INTERNET COMPUTER - SETUP - FAILED")
                .and(contains("  - network: interface br6 holds no address in the configured 2001:db8:1234:56::/64"))
                .and(contains("  - network: the IPv4 gateway 203.0.113.17 does not answer ping"))
                .and(contains("  - network: none of the NNS URLs answered"))
                .and(contains("warning: this SetupOS image is 72 days old"))
                // Not a terminal: no colour codes.
                .and(contains("\u{1b}[").not()),
        )
        .stderr(contains("error: 3 problem(s) stop the installation"));
}

#[test]
fn check_json_reports_switches_checks_and_plan() {
    let out = icos()
        .args(["setupos", "check", "--json", "--captured"])
        .arg(captured("qemu-vm"))
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["switches"]["check_hardware"], false);
    assert_eq!(v["switches"]["perform_installation"], false);
    assert_eq!(v["plan"], Value::Null);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks[1]["check"], "hardware");
    assert_eq!(checks[1]["skipped"], true);
    assert_eq!(checks[3]["check"], "time");
    assert_eq!(checks[3]["errors"].as_array().unwrap().len(), 2);
    assert_eq!(v["reasons"].as_array().unwrap().len(), 5);
}

#[test]
fn unusable_captures_exit_2_naming_each_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in fs::read_dir(captured("gen2-7313")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    fs::remove_file(dir.path().join("timedatectl")).unwrap();
    fs::write(dir.path().join("lshw.json"), "garbage").unwrap();
    icos()
        .args(["setupos", "check", "--captured"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(
            contains("2 captured files are unusable:")
                .and(contains("lshw.json: is not lshw JSON"))
                .and(contains("timedatectl: missing (the clock state)")),
        );
    icos()
        .args(["setupos", "check", "--captured"])
        .arg(dir.path().join("nowhere"))
        .assert()
        .code(2)
        .stderr(contains("not a directory of captured output"));
}

#[test]
fn inject_refuses_bad_inputs_untouched_then_writes_good_ones() {
    let tools = icos_imagefs::Tools::discover().expect("mtools, e2fsprogs, dosfstools");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("setupos.img");
    icos_setupos::blank_setupos_disk(&tools, &image).unwrap();
    let before = sha256(&image);

    let ini = dir.path().join("config.ini");
    fs::write(
        &ini,
        "ipv6_prefix=abcd::1234\nipv6_gateway=2001:db8::1\nverbose=yes\n",
    )
    .unwrap();
    let key = dir.path().join("operator.pem");
    fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    icos()
        .args(["setupos", "inject", "--image"])
        .arg(&image)
        .arg("--config-ini")
        .arg(&ini)
        .arg("--node-operator-key")
        .arg(&key)
        .assert()
        .code(2)
        .stderr(
            contains(format!("{}: ipv6_prefix: 'abcd::1234'", ini.display()))
                .and(contains(format!(
                    "{}: verbose: 'yes' is neither 'true' nor 'false'",
                    ini.display()
                )))
                .and(contains(key.display().to_string())),
        );
    assert_eq!(sha256(&image), before, "a refused inject changed the image");

    // Not a SetupOS image: refused, untouched.
    let other = dir.path().join("other.img");
    fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let ex = root().join("examples");
    icos()
        .args(["setupos", "inject", "--image"])
        .arg(&other)
        .arg("--config-ini")
        .arg(ex.join("config.ini"))
        .assert()
        .code(2)
        .stderr(contains("not a SetupOS image"));

    icos()
        .args(["setupos", "inject", "--image"])
        .arg(&image)
        .arg("--config-ini")
        .arg(ex.join("config.ini"))
        .arg("--node-operator-key")
        .arg(ex.join("node_operator_private_key.pem"))
        .arg("--ssh-keys")
        .arg(ex.join("ssh_authorized_keys/admin"))
        .arg("--deployment-json")
        .arg(ex.join("deployment.json"))
        .assert()
        .success()
        .stdout(
            contains("-> config partition: config.ini")
                .and(contains("-> config partition: ssh_authorized_keys/admin"))
                .and(contains("-> data partition: deployment.json"))
                .and(contains("4 file(s) written to")),
        );
    assert_ne!(sha256(&image), before);
    let config_at = 411_648 * 512;
    let data_at = 514_048 * 512;
    for (name, source) in [
        ("config.ini", "config.ini"),
        (
            "node_operator_private_key.pem",
            "node_operator_private_key.pem",
        ),
        ("ssh_authorized_keys/admin", "ssh_authorized_keys/admin"),
    ] {
        assert_eq!(
            icos_imagefs::read_file_from_vfat(&tools, &image, config_at, name).unwrap(),
            fs::read(ex.join(source)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        icos_imagefs::read_file_from_ext4(&tools, &image, data_at, "deployment.json").unwrap(),
        fs::read(ex.join("deployment.json")).unwrap()
    );
}

#[test]
fn help_lists_both_subcommands() {
    icos()
        .args(["setupos", "--help"])
        .assert()
        .success()
        .stdout(contains("inject").and(contains("check")));
}
