//! `icos net mac` and `icos net ipv6` against IC's published vectors.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::str::contains;

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

fn net(args: &[&str]) -> assert_cmd::assert::Assert {
    icos().arg("net").args(args).assert()
}

#[test]
fn mac_vector_hostos_testnet() {
    net(&[
        "mac",
        "--mgmt-mac",
        "70:B5:E8:E8:25:DE",
        "--deployment-environment",
        "testnet",
        "--node-type",
        "hostos",
    ])
    .success()
    .stdout("6a:00:f8:87:a4:8a\n");
}

#[test]
fn ipv6_vector_guestos_mainnet() {
    net(&[
        "ipv6",
        "--mgmt-mac",
        "b0:7b:25:c8:f6:c0",
        "--deployment-environment",
        "mainnet",
        "--node-type",
        "guestos",
        "--prefix",
        "2602:FFE4:801:17",
    ])
    .success()
    .stdout("2602:ffe4:801:17:6801:ff:feec:bd51\n");
}

#[test]
fn ipv6_json_carries_mac_and_address() {
    let out = net(&[
        "ipv6",
        "--mgmt-mac",
        "b0:7b:25:c8:f6:c0",
        "--deployment-environment",
        "mainnet",
        "--node-type",
        "guestos",
        "--prefix",
        "2602:FFE4:801:17",
        "--json",
    ])
    .success()
    .get_output()
    .stdout
    .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["mac"], "6a:01:00:ec:bd:51");
    assert_eq!(v["ipv6"], "2602:ffe4:801:17:6801:ff:feec:bd51");
    assert_eq!(v["node_type"], "guestos");
}

#[test]
fn slot_and_upgrade_vm() {
    net(&[
        "mac",
        "--mgmt-mac",
        "70:b5:e8:e8:25:de",
        "--deployment-environment",
        "testnet",
        "--node-type",
        "upgrade-guestos",
        "--slot",
        "1",
    ])
    .success()
    .stdout("6a:12:f8:87:a4:8a\n");
}

#[test]
fn malformed_mac_is_bad_input() {
    net(&[
        "mac",
        "--mgmt-mac",
        "70:b5:e8:e8:25",
        "--deployment-environment",
        "testnet",
        "--node-type",
        "hostos",
    ])
    .code(2)
    .stdout("")
    .stderr(contains("invalid MAC address '70:b5:e8:e8:25'"));
}

#[test]
fn malformed_prefix_is_bad_input() {
    for prefix in [
        "gggg::",
        "1234:::",
        "2a04:9dc0:0:108:zzzz",
        "invalid_prefix",
    ] {
        net(&[
            "ipv6",
            "--mgmt-mac",
            "6a:01:e5:96:2d:49",
            "--deployment-environment",
            "mainnet",
            "--node-type",
            "guestos",
            "--prefix",
            prefix,
        ])
        .code(2)
        .stderr(contains(format!("invalid IPv6 prefix '{prefix}'")));
    }
}

#[test]
fn unknown_environment_and_node_type_are_bad_input() {
    net(&[
        "mac",
        "--mgmt-mac",
        "70:b5:e8:e8:25:de",
        "--deployment-environment",
        "devnet",
        "--node-type",
        "hostos",
    ])
    .code(2)
    .stderr(contains("devnet"));
    net(&[
        "mac",
        "--mgmt-mac",
        "70:b5:e8:e8:25:de",
        "--deployment-environment",
        "testnet",
        "--node-type",
        "replica",
    ])
    .code(2)
    .stderr(contains("invalid node type 'replica'"));
}

#[test]
fn missing_flag_is_usage_error() {
    net(&["mac", "--mgmt-mac", "70:b5:e8:e8:25:de"]).code(2);
}
