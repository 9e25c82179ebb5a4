//! `icos node derive`: the sample node from `examples/`, end to end.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn derive(extra: &[&str]) -> Command {
    let ex = examples();
    let mut cmd = icos();
    cmd.arg("node")
        .arg("derive")
        .arg("--config-ini")
        .arg(ex.join("config.ini"))
        .arg("--deployment-json")
        .arg(ex.join("deployment.json"))
        .arg("--ssh-keys")
        .arg(ex.join("ssh_authorized_keys"))
        .arg("--node-operator-key")
        .arg(ex.join("node_operator_private_key.pem"))
        .args(extra);
    cmd
}

fn net_ipv6(node_type: &str) -> String {
    let out = icos()
        .args([
            "net",
            "ipv6",
            "--mgmt-mac",
            "3c:ec:ef:6b:37:99",
            "--deployment-environment",
            "testnet",
            "--node-type",
            node_type,
            "--prefix",
            "2001:db8:1234:56",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap().trim().to_string()
}

#[test]
fn prints_addresses_and_three_configs_without_the_private_key() {
    let out = derive(&[]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    for node_type in ["hostos", "guestos"] {
        let ip = net_ipv6(node_type);
        assert!(
            text.contains(&ip),
            "{node_type} address {ip} missing:\n{text}"
        );
    }
    for title in ["SetupOS config", "HostOS config", "GuestOS config"] {
        assert!(text.contains(title), "{title} missing");
    }
    assert!(!text.contains("BEGIN EC PRIVATE KEY"), "private key shown");
    assert!(text.contains("<PEM private key"));
}

#[test]
fn json_output_and_written_configs_agree_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("node");
    let out = derive(&["--json", "--out-dir", out_dir.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let node: serde_json::Value = serde_json::from_slice(&out).unwrap();

    let guest_ip = net_ipv6("guestos");
    let upgrade_ip = net_ipv6("upgrade-guestos");
    let fixed = &node["guestos"]["network_settings"]["ipv6_config"]["Fixed"];
    assert_eq!(fixed["address"], format!("{guest_ip}/64"));
    assert_eq!(
        node["guestos"]["upgrade_config"]["peer_guest_vm_address"],
        upgrade_ip
    );
    let hostos = node["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["node_type"] == "hostos")
        .unwrap();
    assert_eq!(hostos["ipv6"], net_ipv6("hostos"));

    for (file, kind) in [
        ("setupos.json", "setupos"),
        ("hostos.json", "hostos"),
        ("guestos.json", "guestos"),
    ] {
        let path = out_dir.join(file);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written, node[kind], "{file} differs from --json output");
        icos()
            .args(["config", "check"])
            .arg(&path)
            .assert()
            .success();
    }
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("config.ini");
    std::fs::write(
        &ini,
        "ipv6_prefix=2a00:fb01:400:44:1234\nipv6_gateway=2a00:fb01:400:44::1\n\
         ipv4_address=192.0.2.10\nipv4_prefix_length=24\nverbose=yes\n",
    )
    .unwrap();
    let out_dir = dir.path().join("node");
    icos()
        .args(["node", "derive", "--config-ini"])
        .arg(&ini)
        .arg("--deployment-json")
        .arg(examples().join("deployment.json"))
        .arg("--out-dir")
        .arg(&out_dir)
        .assert()
        .code(2)
        .stdout("")
        .stderr(contains("ipv6_prefix"))
        .stderr(contains("ipv4_gateway"))
        .stderr(contains("verbose"))
        .stderr(contains("config.ini"));
    assert!(!out_dir.exists(), "output folder created on bad input");
}

#[test]
fn help_is_available() {
    icos()
        .args(["node", "derive", "--help"])
        .assert()
        .success()
        .stdout(contains("--config-ini"));
}
