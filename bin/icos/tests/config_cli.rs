//! `icos config`: from the sample SetupOS inputs in `examples/` to a
//! GuestOS config, and the handling of bad inputs.

// The helpers below are test code too: a failed setup step should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use icos_deterministic_ips::{NodeType, deterministic_ipv6, parse_mac};
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::Value;

/// The management MAC and prefix of the sample node in `examples/`.
const SAMPLE_MAC: &str = "3c:ec:ef:6b:37:99";
const SAMPLE_PREFIX: &str = "2001:db8:1234:56";

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs create-setupos-config on the examples with every optional input.
fn create_from_examples(out: &Path) -> assert_cmd::assert::Assert {
    let ex = examples();
    icos()
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(ex.join("config.ini"))
        .arg("--deployment-json")
        .arg(ex.join("deployment.json"))
        .arg("--ssh-keys")
        .arg(ex.join("ssh_authorized_keys"))
        .arg("--node-operator-key")
        .arg(ex.join("node_operator_private_key.pem"))
        .arg("-o")
        .arg(out)
        .assert()
}

fn guest_address(node_type: NodeType) -> String {
    let mac = parse_mac(SAMPLE_MAC).unwrap();
    deterministic_ipv6(&mac, "testnet", node_type, 0, SAMPLE_PREFIX)
        .unwrap()
        .to_string()
}

#[test]
fn examples_make_setupos_then_hostos_then_guestos_configs() {
    let dir = tempfile::tempdir().unwrap();
    let setupos = dir.path().join("config.json");
    let hostos = dir.path().join("config-hostos.json");
    let guestos = dir.path().join("config-guestos.json");

    create_from_examples(&setupos).success();
    icos()
        .args(["config", "check"])
        .arg(&setupos)
        .assert()
        .success()
        .stdout(contains("SetupOS config").and(contains("OK")));
    let s = read_json(&setupos);
    assert_eq!(
        s["network_settings"]["ipv6_config"]["Deterministic"]["prefix"],
        SAMPLE_PREFIX
    );
    assert_eq!(
        s["network_settings"]["ipv6_config"]["Deterministic"]["prefix_length"],
        64
    );
    assert_eq!(s["network_settings"]["ipv4_config"]["prefix_length"], 28);
    assert_eq!(s["network_settings"]["domain_name"], "node1.example.com");
    let icos_settings = &s["icos_settings"];
    assert_eq!(icos_settings["deployment_environment"], "testnet");
    assert_eq!(icos_settings["node_reward_type"], "type3.1");
    assert_eq!(icos_settings["use_ssh_authorized_keys"], true);
    let pem = fs::read_to_string(examples().join("node_operator_private_key.pem")).unwrap();
    assert_eq!(icos_settings["node_operator_private_key"], pem.as_str());
    assert_eq!(
        parse_mac(icos_settings["mgmt_mac"].as_str().unwrap()).unwrap(),
        parse_mac(SAMPLE_MAC).unwrap()
    );
    assert_eq!(s["hostos_settings"]["hostos_dev_settings"]["vm_memory"], 32);

    icos()
        .args(["config", "generate-hostos-config"])
        .arg(&setupos)
        .arg("-o")
        .arg(&hostos)
        .assert()
        .success();
    icos()
        .args(["config", "check"])
        .arg(&hostos)
        .assert()
        .success()
        .stdout(contains("HostOS config"));

    icos()
        .args(["config", "generate-guestos-config"])
        .arg(&hostos)
        .arg("-o")
        .arg(&guestos)
        .assert()
        .success();
    icos()
        .args(["config", "check", "--json"])
        .arg(&guestos)
        .assert()
        .success()
        .stdout(contains("\"ok\": true").and(contains("\"kind\": \"GuestOS\"")));

    let g = read_json(&guestos);
    let fixed = &g["network_settings"]["ipv6_config"]["Fixed"];
    assert_eq!(
        fixed["address"],
        format!("{}/64", guest_address(NodeType::GuestOS))
    );
    assert_eq!(fixed["gateway"], "2001:db8:1234:56::1");
    assert_eq!(g["guest_vm_type"], "default");
    assert_eq!(
        g["upgrade_config"]["peer_guest_vm_address"],
        guest_address(NodeType::UpgradeGuestOS)
    );
}

#[test]
fn upgrade_vm_gets_its_own_address_and_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let setupos = dir.path().join("config.json");
    let hostos = dir.path().join("config-hostos.json");
    let guestos = dir.path().join("config-guestos.json");
    let chain = dir.path().join("sev.pem");
    fs::write(
        &chain,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    create_from_examples(&setupos).success();
    icos()
        .args(["config", "generate-hostos-config"])
        .arg(&setupos)
        .arg("--output")
        .arg(&hostos)
        .assert()
        .success();
    icos()
        .args(["config", "generate-guestos-config", "--vm-type", "upgrade"])
        .args(["--recovery-hash", "abc123", "--sev-cert-chain"])
        .arg(&chain)
        .arg(&hostos)
        .arg("-o")
        .arg(&guestos)
        .assert()
        .success();
    let g = read_json(&guestos);
    assert_eq!(
        g["network_settings"]["ipv6_config"]["Fixed"]["address"],
        format!("{}/64", guest_address(NodeType::UpgradeGuestOS))
    );
    assert_eq!(g["guest_vm_type"], "upgrade");
    assert_eq!(g["recovery_config"]["recovery_hash"], "abc123");
    assert!(
        g["trusted_execution_environment_config"]["sev_cert_chain_pem"]
            .as_str()
            .unwrap()
            .contains("CERTIFICATE")
    );
}

#[test]
fn bad_config_ini_reports_every_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad-config.ini");
    fs::write(
        &ini,
        "ipv6_prefix=2a00:fb01:400:44:1234\n\
         ipv6_gateway=2a00:fb01:400:44::1\n\
         ipv4_address=212.71.124.178\n\
         ipv4_gateway=212.71.124.177\n\
         verbose=yes\n",
    )
    .unwrap();
    let out = dir.path().join("config.json");
    let ini_name = ini.display().to_string();
    icos()
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(&ini)
        .arg("--deployment-json")
        .arg(examples().join("deployment.json"))
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            contains(format!(
                "{ini_name}: ipv6_prefix: '2a00:fb01:400:44:1234' is longer than 19 characters"
            ))
            .and(contains(format!("{ini_name}: ipv4_prefix_length:")))
            .and(contains(format!("{ini_name}: verbose: 'yes'"))),
        );
    assert!(!out.exists());
    // No temporary file is left behind either.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bad_input_leaves_an_existing_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = dir.path().join("deployment.json");
    fs::write(
        &deployment,
        r#"{"deployment":{"deployment_environment":"devnet"}}"#,
    )
    .unwrap();
    let out = dir.path().join("config.json");
    fs::write(&out, "previous").unwrap();
    icos()
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(examples().join("config.ini"))
        .arg("--deployment-json")
        .arg(&deployment)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            contains("deployment.deployment_environment: 'devnet'").and(contains("nns: missing")),
        );
    assert_eq!(fs::read_to_string(&out).unwrap(), "previous");
}

#[test]
fn mgmt_mac_flag_beats_deployment_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.json");
    let ex = examples();
    icos()
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(ex.join("config.ini"))
        .arg("--deployment-json")
        .arg(ex.join("deployment.json"))
        .args(["--mgmt-mac", "b0-7b-25-c8-f6-c0", "-o"])
        .arg(&out)
        .assert()
        .success();
    let s = read_json(&out);
    assert_eq!(
        parse_mac(s["icos_settings"]["mgmt_mac"].as_str().unwrap()).unwrap(),
        parse_mac("b0:7b:25:c8:f6:c0").unwrap()
    );
    assert_eq!(s["icos_settings"]["use_ssh_authorized_keys"], false);
    assert_eq!(s["icos_settings"]["node_operator_private_key"], Value::Null);

    icos()
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(ex.join("config.ini"))
        .arg("--deployment-json")
        .arg(ex.join("deployment.json"))
        .args(["--mgmt-mac", "not-a-mac", "-o"])
        .arg(dir.path().join("other.json"))
        .assert()
        .code(2)
        .stderr(contains("--mgmt-mac"));
}

#[test]
fn without_any_mac_source_the_error_says_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = dir.path().join("deployment.json");
    fs::write(
        &deployment,
        r#"{"deployment":{"deployment_environment":"mainnet","mgmt_mac":null},
            "nns":{"urls":["https://icp-api.io"]}}"#,
    )
    .unwrap();
    let out = dir.path().join("config.json");
    // An empty PATH: ipmitool cannot be found, whatever the machine has.
    let empty = dir.path().join("empty-path");
    fs::create_dir(&empty).unwrap();
    icos()
        .env("PATH", &empty)
        .args(["config", "create-setupos-config", "--config-ini"])
        .arg(examples().join("config.ini"))
        .arg("--deployment-json")
        .arg(&deployment)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            contains("pass --mgmt-mac")
                .and(contains("deployment.mgmt_mac"))
                .and(contains("ipmitool lan print")),
        );
    assert!(!out.exists());
}

#[test]
fn check_reports_every_problem_of_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let setupos = dir.path().join("config.json");
    create_from_examples(&setupos).success();
    let mut s = read_json(&setupos);
    s["network_settings"]["ipv6_config"]["Deterministic"]["prefix"] =
        "2a00:fb01:400:44:1234:5678".into();
    s["icos_settings"]["node_reward_type"] = "gold".into();
    let broken = dir.path().join("broken.json");
    fs::write(&broken, serde_json::to_string_pretty(&s).unwrap()).unwrap();

    icos()
        .args(["config", "check"])
        .arg(&broken)
        .assert()
        .code(2)
        .stderr(contains("prefix").and(contains("node_reward_type")));
    icos()
        .args(["config", "check", "--json"])
        .arg(&broken)
        .assert()
        .code(2)
        .stdout(contains("\"ok\": false").and(contains("\"kind\": \"SetupOS\"")));

    // A broken input is refused before anything is written.
    let out = dir.path().join("hostos.json");
    icos()
        .args(["config", "generate-hostos-config"])
        .arg(&broken)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2);
    assert!(!out.exists());
}

#[test]
fn wrong_kind_of_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let setupos = dir.path().join("config.json");
    create_from_examples(&setupos).success();
    let out = dir.path().join("out.json");
    icos()
        .args(["config", "generate-guestos-config"])
        .arg(&setupos)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("is a SetupOS config"));
    assert!(!out.exists());
    icos()
        .args(["config", "check"])
        .arg(examples().join("config.ini"))
        .assert()
        .code(2);
    icos()
        .args(["config", "check"])
        .arg(dir.path().join("absent.json"))
        .assert()
        .code(2)
        .stderr(contains("absent.json"));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["config", "--help"],
        vec!["config", "create-setupos-config", "--help"],
        vec!["config", "generate-hostos-config", "--help"],
        vec!["config", "generate-guestos-config", "--help"],
        vec!["config", "check", "--help"],
    ] {
        icos()
            .args(&args)
            .assert()
            .success()
            .stdout(contains("Usage:"));
    }
    icos()
        .args(["config", "create-setupos-config", "--help"])
        .assert()
        .stdout(contains("--config-ini").and(contains("--mgmt-mac")));
}
