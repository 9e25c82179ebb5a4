//! The versioned IC-OS config JSON.
//!
//! IC-OS hands its configuration down as JSON documents:
//!
//! 1. SetupOS builds a [`SetupOSConfig`] from the node operator's
//!    `config.ini` and the image's `deployment.json`;
//! 2. [`generate_hostos_config`] turns it into the [`HostOSConfig`] that
//!    HostOS reads from `/boot/config/config.json`;
//! 3. on every VM start, [`generate_guestos_config`] turns that into the
//!    [`GuestOSConfig`] put on the guest VM's bootstrap media, replacing the
//!    deterministic IPv6 settings by the VM's fixed address.
//!
//! # Compatibility
//!
//! The documents carry a `config_version` (`MAJOR.MINOR.PATCH`; this crate
//! writes [`CONFIG_VERSION`]). A HostOS config written at install time is
//! read by every later HostOS, and a GuestOS config may come from a newer
//! or older HostOS, so:
//!
//! * members added later are optional or have defaults;
//! * members that older versions had, and members that newer versions
//!   added, are accepted and kept in each object's `extra` map, and written
//!   back unchanged: reading and writing a document loses nothing;
//! * unknown variants of [`Ipv6Config`] and [`GuestVmType`] are kept as raw
//!   JSON in their `Unknown` variants;
//! * removed member paths are listed in [`RESERVED_FIELD_PATHS`] and must
//!   not be reused;
//! * a newer minor version is fine; a newer major version is a validation
//!   problem.
//!
//! # Validation
//!
//! [`validate_setupos`], [`validate_hostos`] and [`validate_guestos`] (or
//! [`ConfigDocument::validate`]) check every rule and return all problems at
//! once; each [`Problem`] names the JSON path and the [`Rule`] broken.
//! Syntax and type errors are reported the same way by the parsing
//! functions. [`check_file`] reads, detects, parses and validates a file.
//!
//! # Example
//!
//! ```
//! use icos_config::{AnyConfig, ConfigKind, parse_any};
//!
//! let text = r#"{
//!   "config_version": "1.17.0",
//!   "network_settings": {
//!     "ipv6_config": {"Deterministic": {
//!       "prefix": "2602:fb2b:110:10", "prefix_length": 64, "gateway": "2602:fb2b:110:10::1"
//!     }}
//!   },
//!   "icos_settings": {
//!     "mgmt_mac": "b0:7b:25:c8:f6:c0",
//!     "deployment_environment": "mainnet",
//!     "nns_urls": ["https://icp-api.io"],
//!     "use_ssh_authorized_keys": false,
//!     "icos_dev_settings": {}
//!   },
//!   "hostos_settings": {"verbose": false},
//!   "guestos_settings": {}
//! }"#;
//! let config = parse_any(text).unwrap();
//! assert_eq!(config.kind(), ConfigKind::HostOS);
//! assert!(config.validate().is_empty());
//! ```

mod derive;
mod document;
mod problem;
mod types;
mod validate;

pub use derive::{DeriveError, GuestOsOptions, generate_guestos_config, generate_hostos_config};
pub use document::{
    AnyConfig, ConfigDocument, ConfigKind, check_file, from_json_str, from_json_value, load,
    load_any, parse_any, save, to_json_pretty,
};
pub use icos_deterministic_ips::MacAddr6;
pub use problem::{ConfigError, Problem, Problems, Rule};
pub use types::{
    DeploymentEnvironment, DeterministicIpv6Config, Extra, FixedIpv6Config, GuestOSConfig,
    GuestOSDevSettings, GuestOSSettings, GuestOSUpgradeConfig, GuestVmType, HostOSConfig,
    HostOSDevSettings, HostOSSettings, ICOSDevSettings, ICOSSettings, Ipv4Config, Ipv6Config,
    Ipv6ConfigError, LEGACY_VM_FIELDS, NetworkSettings, ParseNameError, RecoveryConfig,
    SetupOSConfig, SetupOSSettings, StaticIpv6, TrustedExecutionEnvironmentConfig, VmResources,
    VmResourcesSource,
};
pub use url::Url;
pub use validate::{
    ConfigVersion, check_config_version, check_domain_name, check_fixed_address,
    check_ipv4_prefix_length, check_ipv6_prefix, check_nns_url, check_node_reward_type,
    check_vm_cpu, validate_guestos, validate_hostos, validate_hostos_settings,
    validate_icos_settings, validate_network_settings, validate_setupos,
};

/// The config version this crate writes.
pub const CONFIG_VERSION: &str = "1.17.0";

/// Member paths that were removed from the schema and must not be reused by
/// new members. (Files of older versions that have them still load; the
/// members are kept in `extra`.)
pub const RESERVED_FIELD_PATHS: &[&str] = &[
    "icos_settings.logging",
    "icos_settings.use_nns_public_key",
    "hostos_settings.vm_cpu",
    "hostos_settings.vm_memory",
    "hostos_settings.vm_nr_of_vcpus",
];

#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::{Value, json};

    /// A valid HostOS config with deterministic IPv6 settings.
    pub fn hostos_json() -> Value {
        json!({
            "config_version": "1.17.0",
            "network_settings": {
                "ipv6_config": {"Deterministic": {
                    "prefix": "2001:db8",
                    "prefix_length": 64,
                    "gateway": "2001:db8::1"
                }},
                "ipv4_config": null,
                "domain_name": null
            },
            "icos_settings": {
                "node_reward_type": null,
                "mgmt_mac": "00:00:00:00:00:00",
                "deployment_environment": "testnet",
                "nns_urls": ["https://icp-api.io/"],
                "node_operator_private_key": null,
                "enable_trusted_execution_environment": false,
                "use_ssh_authorized_keys": false,
                "icos_dev_settings": {}
            },
            "hostos_settings": {
                "hostos_dev_settings": {"vm_memory": 16, "vm_cpu": "kvm", "vm_nr_of_vcpus": 16},
                "verbose": false
            },
            "guestos_settings": {"guestos_dev_settings": {}}
        })
    }

    /// A valid SetupOS config.
    pub fn setupos_json() -> Value {
        let mut value = hostos_json();
        if let Some(map) = value.as_object_mut() {
            map.insert("setupos_settings".to_string(), Value::Null);
        }
        value
    }

    /// A valid GuestOS config with a fixed IPv6 address.
    pub fn guestos_json() -> Value {
        let mut value = hostos_json();
        if let Some(map) = value.as_object_mut() {
            map.remove("hostos_settings");
            map.insert("guest_vm_type".to_string(), json!("default"));
        }
        value["network_settings"]["ipv6_config"] = json!({"Fixed": {"address": "2001:db8::6801:94ff:feef:2978/64", "gateway": "2001:db8::1"}});
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn paths(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
        if let Value::Object(map) = value {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                paths(&path, child, out);
                out.insert(path);
            }
        }
    }

    #[test]
    fn reserved_field_paths_are_not_written_by_the_types() {
        // A SetupOS config with every optional object present covers all types.
        let mut value = test_support::setupos_json();
        value["network_settings"]["ipv4_config"] =
            serde_json::json!({"address": "10.0.0.2", "gateway": "10.0.0.1", "prefix_length": 24});
        let config: SetupOSConfig = from_json_value(&value).unwrap();
        let guest = generate_guestos_config(
            &generate_hostos_config(&config),
            GuestVmType::Default,
            &GuestOsOptions {
                sev_cert_chain_pem: Some("pem".to_string()),
                recovery_hash: Some("abc".to_string()),
            },
        )
        .unwrap();
        let mut written = BTreeSet::new();
        paths("", &serde_json::to_value(&config).unwrap(), &mut written);
        paths("", &serde_json::to_value(&guest).unwrap(), &mut written);
        for reserved in RESERVED_FIELD_PATHS {
            assert!(!written.contains(*reserved), "{reserved} is written");
        }
        assert!(written.contains("hostos_settings.hostos_dev_settings.vm_memory"));
        assert!(written.contains("recovery_config.recovery_hash"));
    }

    #[test]
    fn reserved_field_paths_from_old_files_are_kept() {
        let mut value = test_support::hostos_json();
        value["icos_settings"]["logging"] = serde_json::json!({});
        value["hostos_settings"] = serde_json::json!({"vm_memory": 8, "verbose": true});
        let config: HostOSConfig = from_json_value(&value).unwrap();
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["icos_settings"]["logging"], serde_json::json!({}));
        assert_eq!(written["hostos_settings"]["vm_memory"], 8);
    }

    #[test]
    fn config_version_is_a_valid_current_version() {
        assert_eq!(
            check_config_version(CONFIG_VERSION),
            Ok(ConfigVersion::current())
        );
        assert_eq!(ConfigVersion::current().minor, 17);
    }
}
