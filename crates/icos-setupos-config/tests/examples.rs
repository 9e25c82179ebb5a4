//! The sample inputs in the repository's `examples/` folder are valid and
//! make a valid SetupOS config.

use std::path::{Path, PathBuf};

use icos_config::{DeploymentEnvironment, validate_setupos};
use icos_setupos_config::{
    InputPaths, MgmtMacSource, SetupOsInputs, create_setupos_config, load_config_ini,
    load_deployment_json, load_node_operator_key, load_ssh_keys,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn each_sample_input_is_valid() {
    let ex = examples();
    let ini = load_config_ini(&ex.join("config.ini")).unwrap();
    assert!(ini.warnings.is_empty(), "{:?}", ini.warnings);
    assert!(ini.ipv4.is_some() && ini.domain.is_some());

    let deployment = load_deployment_json(&ex.join("deployment.json")).unwrap();
    assert_eq!(
        deployment.deployment_environment,
        DeploymentEnvironment::Testnet
    );
    assert!(deployment.mgmt_mac.is_some());

    let keys = load_ssh_keys(&ex.join("ssh_authorized_keys")).unwrap();
    assert_eq!(keys.key_count(), 1);
    assert!(keys.warnings.is_empty(), "{:?}", keys.warnings);

    let pem = load_node_operator_key(&ex.join("node_operator_private_key.pem")).unwrap();
    assert!(pem.contains("BEGIN EC PRIVATE KEY"));
}

#[test]
fn samples_make_a_valid_setupos_config_without_asking_the_bmc() {
    let ex = examples();
    let paths = InputPaths {
        config_ini: ex.join("config.ini"),
        deployment_json: ex.join("deployment.json"),
        ssh_keys: Some(ex.join("ssh_authorized_keys")),
        node_operator_key: Some(ex.join("node_operator_private_key.pem")),
        mgmt_mac: None,
    };
    let inputs =
        SetupOsInputs::load_with(&paths, || panic!("the sample gives its own MAC")).unwrap();
    assert_eq!(inputs.mgmt_mac_source, MgmtMacSource::DeploymentJson);
    let config = create_setupos_config(&inputs);
    assert!(validate_setupos(&config).is_empty());
    assert!(config.icos_settings.use_ssh_authorized_keys);
    assert!(config.icos_settings.node_operator_private_key.is_some());
}
