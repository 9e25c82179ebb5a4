//! Derivation of the HostOS config from the SetupOS config, and of the
//! GuestOS config from the HostOS config.
//!
//! Both produce exactly what IC-OS produces: the known members, at
//! [`CONFIG_VERSION`]. Members kept in `extra` maps are not handed on: in
//! these inputs they can only be members that older versions had and that
//! IC-OS no longer writes.

use std::net::Ipv6Addr;

use icos_deterministic_ips::{AddrError, NodeType};

use crate::CONFIG_VERSION;
use crate::types::{
    Extra, FixedIpv6Config, GuestOSConfig, GuestOSDevSettings, GuestOSSettings,
    GuestOSUpgradeConfig, GuestVmType, HostOSConfig, HostOSDevSettings, HostOSSettings,
    ICOSDevSettings, ICOSSettings, Ipv4Config, Ipv6Config, NetworkSettings, RecoveryConfig,
    SetupOSConfig, TrustedExecutionEnvironmentConfig,
};

/// Inputs of [`generate_guestos_config`] that come from outside the HostOS config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestOsOptions {
    /// The AMD SEV-SNP certificate chain (PEM); required when the trusted
    /// execution environment is enabled.
    pub sev_cert_chain_pem: Option<String>,
    /// A one-shot recovery hash (IC-OS reads it from
    /// `/run/config/guestos_recovery_hash`); an empty or blank value means none.
    pub recovery_hash: Option<String>,
}

/// Why a GuestOS config could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// The guest VM type is neither `default` nor `upgrade`.
    #[error("cannot generate a GuestOS config for the unknown guest VM type {0}")]
    UnknownVmType(String),
    /// The trusted execution environment is on but no certificate chain was given.
    #[error(
        "icos_settings.enable_trusted_execution_environment is true, but no SEV certificate \
         chain was given"
    )]
    MissingSevCertChain,
    /// The deterministic prefix cannot be used to build an address.
    #[error("network_settings.ipv6_config.Deterministic.prefix: {0}")]
    Prefix(#[source] AddrError),
}

/// Derives the HostOS config from the SetupOS config: the network, ICOS,
/// HostOS and GuestOS settings are copied and `config_version` is set to
/// [`CONFIG_VERSION`].
///
/// `hostos_settings.hostos_dev_settings` is always written, holding the
/// resources in effect ([`HostOSSettings::vm_resources`]), so legacy flat
/// `vm_*` members become nested ones.
pub fn generate_hostos_config(setupos: &SetupOSConfig) -> HostOSConfig {
    let resources = setupos.hostos_settings.vm_resources();
    HostOSConfig {
        config_version: CONFIG_VERSION.to_string(),
        network_settings: clean_network_settings(&setupos.network_settings),
        icos_settings: clean_icos_settings(&setupos.icos_settings),
        hostos_settings: HostOSSettings {
            hostos_dev_settings: Some(HostOSDevSettings {
                vm_memory: resources.memory_gib,
                vm_cpu: resources.cpu,
                vm_nr_of_vcpus: resources.nr_of_vcpus,
                extra: Extra::new(),
            }),
            verbose: setupos.hostos_settings.verbose,
            extra: Extra::new(),
        },
        guestos_settings: clean_guestos_settings(&setupos.guestos_settings),
        extra: Extra::new(),
    }
}

/// Derives the config of a guest VM from the HostOS config.
///
/// A `Deterministic` IPv6 config becomes `Fixed{address: "<ip>/<prefix_length>",
/// gateway}`, where `<ip>` is the deterministic address of the GuestOS (for
/// [`GuestVmType::Default`]) or of the upgrade GuestOS (for
/// [`GuestVmType::Upgrade`]), slot 0, and `upgrade_config.peer_guest_vm_address`
/// is the address of the other VM. Any other IPv6 config is passed through
/// unchanged and no peer address is set.
///
/// Fails for an unknown VM type, when the trusted execution environment is
/// enabled but `options.sev_cert_chain_pem` is missing, or when the prefix
/// is not a usable /64.
pub fn generate_guestos_config(
    hostos: &HostOSConfig,
    vm_type: GuestVmType,
    options: &GuestOsOptions,
) -> Result<GuestOSConfig, DeriveError> {
    let (own, peer) = match &vm_type {
        GuestVmType::Default => (NodeType::GuestOS, NodeType::UpgradeGuestOS),
        GuestVmType::Upgrade => (NodeType::UpgradeGuestOS, NodeType::GuestOS),
        GuestVmType::Unknown(raw) => return Err(DeriveError::UnknownVmType(raw.to_string())),
    };
    if hostos.icos_settings.enable_trusted_execution_environment
        && options.sev_cert_chain_pem.is_none()
    {
        return Err(DeriveError::MissingSevCertChain);
    }

    let mut network_settings = clean_network_settings(&hostos.network_settings);
    let mut peer_guest_vm_address = None;
    if let Ipv6Config::Deterministic(d) = &hostos.network_settings.ipv6_config {
        let address = |node_type| guest_address(hostos, node_type, &d.prefix);
        let own_address = address(own)?;
        peer_guest_vm_address = Some(address(peer)?);
        network_settings.ipv6_config = Ipv6Config::Fixed(FixedIpv6Config {
            address: format!("{own_address}/{}", d.prefix_length),
            gateway: d.gateway,
            extra: Extra::new(),
        });
    }

    let recovery_config = options
        .recovery_hash
        .as_deref()
        .map(str::trim)
        .filter(|hash| !hash.is_empty())
        .map(|hash| RecoveryConfig {
            recovery_hash: hash.to_string(),
            extra: Extra::new(),
        });

    Ok(GuestOSConfig {
        config_version: CONFIG_VERSION.to_string(),
        network_settings,
        icos_settings: clean_icos_settings(&hostos.icos_settings),
        guestos_settings: clean_guestos_settings(&hostos.guestos_settings),
        guest_vm_type: vm_type,
        upgrade_config: GuestOSUpgradeConfig {
            peer_guest_vm_address,
            extra: Extra::new(),
        },
        trusted_execution_environment_config: options.sev_cert_chain_pem.clone().map(|pem| {
            TrustedExecutionEnvironmentConfig {
                sev_cert_chain_pem: pem,
                extra: Extra::new(),
            }
        }),
        recovery_config,
        extra: Extra::new(),
    })
}

fn guest_address(
    hostos: &HostOSConfig,
    node_type: NodeType,
    prefix: &str,
) -> Result<Ipv6Addr, DeriveError> {
    let icos = &hostos.icos_settings;
    icos_deterministic_ips::deterministic_ipv6(
        &icos.mgmt_mac,
        icos.deployment_environment.as_str(),
        node_type,
        0,
        prefix,
    )
    .map_err(DeriveError::Prefix)
}

fn clean_network_settings(settings: &NetworkSettings) -> NetworkSettings {
    let ipv6_config = match &settings.ipv6_config {
        Ipv6Config::Deterministic(d) => {
            let mut d = d.clone();
            d.extra.clear();
            Ipv6Config::Deterministic(d)
        }
        Ipv6Config::Fixed(f) => {
            let mut f = f.clone();
            f.extra.clear();
            Ipv6Config::Fixed(f)
        }
        other => other.clone(),
    };
    NetworkSettings {
        ipv6_config,
        ipv4_config: settings.ipv4_config.as_ref().map(|ipv4| Ipv4Config {
            extra: Extra::new(),
            ..ipv4.clone()
        }),
        domain_name: settings.domain_name.clone(),
        extra: Extra::new(),
    }
}

fn clean_icos_settings(settings: &ICOSSettings) -> ICOSSettings {
    ICOSSettings {
        icos_dev_settings: ICOSDevSettings::default(),
        extra: Extra::new(),
        ..settings.clone()
    }
}

fn clean_guestos_settings(settings: &GuestOSSettings) -> GuestOSSettings {
    GuestOSSettings {
        guestos_dev_settings: GuestOSDevSettings {
            extra: Extra::new(),
            ..settings.guestos_dev_settings.clone()
        },
        engine_management_canister_id: settings.engine_management_canister_id.clone(),
        extra: Extra::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{hostos_json, setupos_json};
    use crate::{ConfigDocument, from_json_value};
    use serde_json::json;

    fn hostos() -> HostOSConfig {
        let mut value = hostos_json();
        value["network_settings"]["ipv6_config"]["Deterministic"]["prefix"] = json!("2001:db8::");
        from_json_value(&value).unwrap()
    }

    fn fixed(config: &GuestOSConfig) -> &FixedIpv6Config {
        match &config.network_settings.ipv6_config {
            Ipv6Config::Fixed(fixed) => fixed,
            other => panic!("expected a fixed IPv6 config, got {other:?}"),
        }
    }

    #[test]
    fn default_vm_gets_the_guestos_address_and_the_upgrade_peer() {
        let guest =
            generate_guestos_config(&hostos(), GuestVmType::Default, &GuestOsOptions::default())
                .unwrap();
        assert_eq!(guest.config_version, CONFIG_VERSION);
        assert_eq!(fixed(&guest).address, "2001:db8::6801:94ff:feef:2978/64");
        assert_eq!(fixed(&guest).gateway.to_string(), "2001:db8::1");
        assert_eq!(
            guest.upgrade_config.peer_guest_vm_address,
            Some("2001:db8::6802:94ff:feef:2978".parse().unwrap())
        );
        assert_eq!(guest.guest_vm_type, GuestVmType::Default);
        assert_eq!(guest.trusted_execution_environment_config, None);
        assert_eq!(guest.recovery_config, None);
        assert_eq!(guest.icos_settings, hostos().icos_settings);
        assert_eq!(guest.guestos_settings, hostos().guestos_settings);
        assert!(guest.validate().is_empty());
    }

    #[test]
    fn upgrade_vm_swaps_the_addresses() {
        let guest =
            generate_guestos_config(&hostos(), GuestVmType::Upgrade, &GuestOsOptions::default())
                .unwrap();
        assert_eq!(fixed(&guest).address, "2001:db8::6802:94ff:feef:2978/64");
        assert_eq!(
            guest.upgrade_config.peer_guest_vm_address,
            Some("2001:db8::6801:94ff:feef:2978".parse().unwrap())
        );
        assert_eq!(guest.guest_vm_type, GuestVmType::Upgrade);
    }

    #[test]
    fn mainnet_vector() {
        let mut value = hostos_json();
        value["icos_settings"]["mgmt_mac"] = json!("b0:7b:25:c8:f6:c0");
        value["icos_settings"]["deployment_environment"] = json!("mainnet");
        value["network_settings"]["ipv6_config"]["Deterministic"]["prefix"] =
            json!("2602:FFE4:801:17");
        let host: HostOSConfig = from_json_value(&value).unwrap();
        let guest =
            generate_guestos_config(&host, GuestVmType::Default, &GuestOsOptions::default())
                .unwrap();
        assert_eq!(
            fixed(&guest).address,
            "2602:ffe4:801:17:6801:ff:feec:bd51/64"
        );
    }

    #[test]
    fn tee_needs_a_certificate_chain() {
        let mut host = hostos();
        host.icos_settings.enable_trusted_execution_environment = true;
        assert_eq!(
            generate_guestos_config(&host, GuestVmType::Default, &GuestOsOptions::default()),
            Err(DeriveError::MissingSevCertChain)
        );
        let options = GuestOsOptions {
            sev_cert_chain_pem: Some("chain".to_string()),
            recovery_hash: None,
        };
        let guest = generate_guestos_config(&host, GuestVmType::Default, &options).unwrap();
        let tee = guest.trusted_execution_environment_config.as_ref().unwrap();
        assert_eq!(tee.sev_cert_chain_pem, "chain");
        assert!(guest.validate().is_empty());
    }

    #[test]
    fn recovery_hash_is_trimmed_and_blank_means_none() {
        let options = |hash: &str| GuestOsOptions {
            sev_cert_chain_pem: None,
            recovery_hash: Some(hash.to_string()),
        };
        let guest =
            generate_guestos_config(&hostos(), GuestVmType::Default, &options(" ab12 \n")).unwrap();
        assert_eq!(guest.recovery_config.unwrap().recovery_hash, "ab12");
        let guest =
            generate_guestos_config(&hostos(), GuestVmType::Default, &options(" \t\n")).unwrap();
        assert_eq!(guest.recovery_config, None);
    }

    #[test]
    fn other_ipv6_configs_pass_through() {
        for ipv6 in [
            Ipv6Config::Fixed(FixedIpv6Config {
                address: "2001:db8::5/64".to_string(),
                gateway: "2001:db8::1".parse().unwrap(),
                extra: Extra::new(),
            }),
            Ipv6Config::RouterAdvertisement,
            Ipv6Config::Unknown(json!("Slaac")),
        ] {
            let mut host = hostos();
            host.network_settings.ipv6_config = ipv6.clone();
            let guest =
                generate_guestos_config(&host, GuestVmType::Default, &GuestOsOptions::default())
                    .unwrap();
            assert_eq!(guest.network_settings.ipv6_config, ipv6);
            assert_eq!(guest.upgrade_config.peer_guest_vm_address, None);
        }
    }

    #[test]
    fn unknown_vm_type_and_bad_prefix_are_errors() {
        let err = generate_guestos_config(
            &hostos(),
            GuestVmType::Unknown(json!("recovery")),
            &GuestOsOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err, DeriveError::UnknownVmType("\"recovery\"".to_string()));

        let mut host = hostos();
        if let Ipv6Config::Deterministic(d) = &mut host.network_settings.ipv6_config {
            d.prefix = "1:2:3:4:5".to_string();
        }
        let err = generate_guestos_config(&host, GuestVmType::Default, &GuestOsOptions::default())
            .unwrap_err();
        assert!(matches!(err, DeriveError::Prefix(_)));
        assert!(
            err.to_string()
                .starts_with("network_settings.ipv6_config.Deterministic.prefix: ")
        );
    }

    #[test]
    fn hostos_config_copies_and_sets_the_version() {
        let mut value = setupos_json();
        value["config_version"] = json!("1.10.0");
        value["icos_settings"]["use_node_operator_private_key"] = json!(true);
        value["hostos_settings"] = json!({"vm_memory": 64, "vm_cpu": "qemu", "verbose": true});
        let setup: SetupOSConfig = from_json_value(&value).unwrap();
        let host = generate_hostos_config(&setup);
        assert_eq!(host.config_version, CONFIG_VERSION);
        assert_eq!(host.network_settings, setup.network_settings);
        assert!(host.icos_settings.extra.is_empty());
        assert_eq!(host.icos_settings.mgmt_mac, setup.icos_settings.mgmt_mac);
        assert_eq!(
            host.hostos_settings.hostos_dev_settings,
            Some(HostOSDevSettings {
                vm_memory: 64,
                vm_cpu: "qemu".to_string(),
                vm_nr_of_vcpus: 16,
                extra: Extra::new(),
            })
        );
        assert!(host.hostos_settings.verbose);
        assert!(host.hostos_settings.extra.is_empty());
        assert!(host.validate().is_empty());
    }
}
