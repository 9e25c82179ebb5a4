//! The command line: help, the plan from a config, and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const CONFIG: &str = include_str!("../../../crates/icos-config/tests/fixtures/hostos_v1.17.0.json");

fn cmd() -> Command {
    Command::cargo_bin("icos-hostos-network").unwrap()
}

fn config(dir: &Path, ipv6: serde_json::Value) -> std::path::PathBuf {
    let mut v: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    v["network_settings"]["ipv6_config"] = ipv6;
    v["icos_settings"]["mgmt_mac"] = serde_json::json!("b0:7b:25:c8:f6:c0");
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

#[test]
fn help_names_the_exit_codes() {
    cmd().arg("--help").assert().success().stdout(
        predicate::str::contains("--plan-only").and(predicate::str::contains("Exit codes")),
    );
}

#[test]
fn the_plan_gives_the_hostos_mac_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        serde_json::json!({"Deterministic": {"prefix": "2602:ffe4:801:17", "prefix_length": 64, "gateway": "2602:ffe4:801:17::1"}}),
    );
    let out = cmd()
        .arg("--config")
        .arg(&path)
        .arg("--plan-only")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(plan["mac"], "6a:00:00:ec:bd:51");
    assert_eq!(plan["addressing"]["kind"], "static");
    assert_eq!(
        plan["addressing"]["address"],
        "2602:ffe4:801:17:6800:ff:feec:bd51"
    );
}

#[test]
fn a_bad_config_is_refused_with_exit_2_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        serde_json::json!({"Fixed": {"address": "2a00::1/200", "gateway": "2a00::1"}}),
    );
    let out = dir.path().join("out");
    cmd()
        .arg("--config")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains(path.to_str().unwrap()).and(predicate::str::contains(
                "network_settings.ipv6_config.Fixed.address",
            )),
        );
    assert!(!out.exists(), "nothing written");
    cmd()
        .arg("--config")
        .arg(dir.path().join("missing.json"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.json"));
}

#[test]
fn no_nic_with_a_carrier_fails_with_exit_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), serde_json::json!("RouterAdvertisement"));
    let net = dir.path().join("class_net");
    std::fs::create_dir_all(net.join("lo")).unwrap();
    let out = dir.path().join("out");
    cmd()
        .arg("--config")
        .arg(&path)
        .arg("--class-net")
        .arg(&net)
        .arg("--out")
        .arg(&out)
        .args(["--wait-secs", "0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no Ethernet NIC").and(predicate::str::contains("lo")));
    assert!(!out.exists(), "nothing written");
}
