//! Tests of loading all inputs together and assembling the config.

use std::fs;
use std::path::Path;

use icos_config::{DeploymentEnvironment, Ipv6Config};
use icos_deterministic_ips::parse_mac;

use super::*;

const INI: &str = "ipv6_prefix=2a00:fb01:400:44\nipv6_gateway=2a00:fb01:400:44::1\n\
                   ipv4_address=212.71.124.178\nipv4_gateway=212.71.124.177\n\
                   ipv4_prefix_length=28\ndomain=node1.example.com\n\
                   node_reward_type=type3.1\nverbose=true\n";
const DEPLOYMENT: &str = r#"{"deployment":{"deployment_environment":"testnet","mgmt_mac":"70:b5:e8:e8:25:de"},
    "nns":{"urls":["https://icp-api.io"]},"dev_vm_resources":{"memory":"32","cpu":"qemu","nr_of_vcpus":8}}"#;
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQpxFIWRheULjPrD8UtAyKJlHGNDeYfiXFwp8BwUyqy admin@example\n";
const PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIAKRgxjcqkKj41bYWrnoUbpP0Tn9dr8ZStiNR+G0aI3qoAcGBSuBBAAK
oUQDQgAENJmYhVNqxjlvEDRCuhOi/YPKpx/9UGeto36Zuin+mBX7GX/eJbtaZbfN
mB+IRsp6RGep5zbKxEkcxVarKlVAfg==
-----END EC PRIVATE KEY-----
";

fn no_bmc() -> Result<MacAddr6, IpmitoolError> {
    panic!("ipmitool must not run")
}

fn write_inputs(dir: &Path, ini: &str, deployment: &str) -> InputPaths {
    let config_ini = dir.join("config.ini");
    let deployment_json = dir.join("deployment.json");
    fs::write(&config_ini, ini).unwrap();
    fs::write(&deployment_json, deployment).unwrap();
    InputPaths {
        config_ini,
        deployment_json,
        ssh_keys: None,
        node_operator_key: None,
        mgmt_mac: None,
    }
}

#[test]
fn full_inputs_make_the_config_ic_os_makes() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = write_inputs(dir.path(), INI, DEPLOYMENT);
    let keys = dir.path().join("ssh_authorized_keys");
    fs::create_dir(&keys).unwrap();
    fs::write(keys.join("admin"), SSH_KEY).unwrap();
    let pem = dir.path().join("node_operator_private_key.pem");
    fs::write(&pem, PEM).unwrap();
    paths.ssh_keys = Some(keys);
    paths.node_operator_key = Some(pem);

    let inputs = SetupOsInputs::load_with(&paths, no_bmc).unwrap();
    assert_eq!(inputs.mgmt_mac_source, MgmtMacSource::DeploymentJson);
    let config = create_setupos_config(&inputs);

    assert_eq!(config.config_version, icos_config::CONFIG_VERSION);
    let Ipv6Config::Deterministic(v6) = &config.network_settings.ipv6_config else {
        panic!(
            "not deterministic: {:?}",
            config.network_settings.ipv6_config
        );
    };
    assert_eq!(v6.prefix, "2a00:fb01:400:44");
    assert_eq!(v6.prefix_length, 64);
    assert_eq!(v6.gateway.to_string(), "2a00:fb01:400:44::1");
    let v4 = config.network_settings.ipv4_config.as_ref().unwrap();
    assert_eq!(
        (
            v4.address.to_string(),
            v4.gateway.to_string(),
            v4.prefix_length
        ),
        ("212.71.124.178".into(), "212.71.124.177".into(), 28)
    );
    assert_eq!(
        config.network_settings.domain_name.as_deref(),
        Some("node1.example.com")
    );
    let icos = &config.icos_settings;
    assert_eq!(icos.node_reward_type.as_deref(), Some("type3.1"));
    assert_eq!(icos.mgmt_mac, parse_mac("70:b5:e8:e8:25:de").unwrap());
    assert_eq!(icos.deployment_environment, DeploymentEnvironment::Testnet);
    assert_eq!(icos.nns_urls[0].as_str(), "https://icp-api.io/");
    assert_eq!(icos.node_operator_private_key.as_deref(), Some(PEM));
    assert!(!icos.enable_trusted_execution_environment);
    assert!(icos.use_ssh_authorized_keys);
    let dev = config.hostos_settings.hostos_dev_settings.as_ref().unwrap();
    assert_eq!(
        (dev.vm_memory, dev.vm_cpu.as_str(), dev.vm_nr_of_vcpus),
        (32, "qemu", 8)
    );
    assert!(config.hostos_settings.verbose);

    // The result is valid by the config crate's own rules and round-trips.
    let problems = icos_config::validate_setupos(&config);
    assert!(problems.is_empty(), "{problems:?}");
    let json = serde_json::to_string_pretty(&config).unwrap();
    let back: SetupOSConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn minimal_inputs_take_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let deployment =
        r#"{"deployment":{"deployment_environment":"mainnet"},"nns":{"urls":["https://ic0.app"]}}"#;
    let mut paths = write_inputs(
        dir.path(),
        "ipv6_prefix=2602:fb2b:100:10\nipv6_gateway=fe80::1\n",
        deployment,
    );
    paths.mgmt_mac = Some(parse_mac("3c:ec:ef:6b:37:99").unwrap());
    let inputs = SetupOsInputs::load_with(&paths, no_bmc).unwrap();
    assert_eq!(inputs.mgmt_mac_source, MgmtMacSource::Flag);
    let config = create_setupos_config(&inputs);
    assert_eq!(config.network_settings.ipv4_config, None);
    assert_eq!(config.network_settings.domain_name, None);
    assert_eq!(config.icos_settings.node_operator_private_key, None);
    assert!(!config.icos_settings.use_ssh_authorized_keys);
    assert_eq!(config.icos_settings.node_reward_type, None);
    assert_eq!(
        config.hostos_settings.hostos_dev_settings,
        Some(HostOSDevSettings::default())
    );
    assert!(!config.hostos_settings.verbose);
}

#[test]
fn ipmitool_is_asked_only_without_flag_and_json_mac() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = r#"{"deployment":{"deployment_environment":"mainnet","mgmt_mac":null},"nns":{"urls":["https://ic0.app"]}}"#;
    let paths = write_inputs(dir.path(), INI, deployment);
    let bmc = parse_mac("b0:7b:25:c8:f6:c0").unwrap();
    let inputs = SetupOsInputs::load_with(&paths, || Ok(bmc)).unwrap();
    assert_eq!(
        (inputs.mgmt_mac, inputs.mgmt_mac_source),
        (bmc, MgmtMacSource::Ipmitool)
    );

    let err = SetupOsInputs::load_with(&paths, || {
        Err(IpmitoolError::Run(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )))
    })
    .unwrap_err();
    assert!(err.has_key("mgmt_mac"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("pass --mgmt-mac") && text.contains("deployment.mgmt_mac"),
        "{text}"
    );
}

#[test]
fn problems_of_every_input_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = write_inputs(
        dir.path(),
        "ipv6_prefix=2a00:fb01:400:44:1234\nipv6_gateway=2a00::1\nverbose=yes\n",
        r#"{"deployment":{"deployment_environment":"prodnet"},"nns":{"urls":["https://ic0.app"]}}"#,
    );
    let keys = dir.path().join("keys");
    fs::create_dir(&keys).unwrap();
    fs::write(keys.join("admin"), "not a key\n").unwrap();
    paths.ssh_keys = Some(keys.clone());
    paths.node_operator_key = Some(dir.path().join("missing.pem"));

    let problems = SetupOsInputs::load_with(&paths, no_bmc).unwrap_err();
    let text = problems.to_string();
    let ini = paths.config_ini.display().to_string();
    let json = paths.deployment_json.display().to_string();
    for want in [
        format!("{ini}: ipv6_prefix:"),
        format!("{ini}: verbose:"),
        format!("{json}: deployment.deployment_environment:"),
        format!("{}: line 1:", keys.join("admin").display()),
        "missing.pem: cannot read".to_string(),
    ] {
        assert!(text.contains(&want), "{want} not in {text}");
    }
    assert_eq!(problems.len(), 5, "{text}");
}

#[test]
fn missing_files_are_problems_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let paths = InputPaths {
        config_ini: dir.path().join("nope.ini"),
        deployment_json: dir.path().join("nope.json"),
        ssh_keys: Some(dir.path().join("nokeys")),
        node_operator_key: None,
        mgmt_mac: None,
    };
    let problems = SetupOsInputs::load_with(&paths, no_bmc).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems}");
}
