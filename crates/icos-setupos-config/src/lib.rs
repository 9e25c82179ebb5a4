//! The node provider's SetupOS inputs, checked and turned into a
//! [`SetupOSConfig`].
//!
//! A SetupOS image carries the inputs that make a machine a particular node:
//!
//! * `config.ini` ([`config_ini`]): the IPv6 prefix and gateway, an optional
//!   static IPv4 triple and domain, the node reward type and a few flags;
//! * `deployment.json` ([`deployment`]): mainnet or testnet, the NNS URLs,
//!   an optional management MAC override and the dev VM resources;
//! * an optional SSH key folder ([`ssh_keys`]) with `admin`, `backup` and
//!   `readonly` files;
//! * an optional node operator private key ([`operator_key`]).
//!
//! Each input is read completely and every broken rule is collected, so one
//! run reports all of them ([`Problems`]); every problem names the file, the
//! key (or JSON path, or line) and the rule. Nothing is written unless all
//! inputs are valid.
//!
//! The management MAC ([`mgmt_mac`]) comes from the caller, else from
//! `deployment.json`, else from `ipmitool lan print`.
//!
//! [`create_setupos_config`] then assembles the config as IC-OS does:
//! a deterministic IPv6 config with prefix length 64, the IPv4 settings, the
//! ICOS settings (with the node operator key's PEM text embedded), the HostOS
//! dev settings from `dev_vm_resources` (or their defaults), and
//! [`icos_config::CONFIG_VERSION`].
//!
//! # Example
//!
//! ```
//! use icos_setupos_config::parse_config_ini;
//!
//! let ini = parse_config_ini("ipv6_prefix=2a00:fb01:400:44\nipv6_gateway=2a00:fb01:400:44::1\n")
//!     .unwrap();
//! assert_eq!(ini.ipv6_prefix_length(), 64);
//!
//! // Every broken rule is reported, each naming its key.
//! let problems = parse_config_ini("ipv6_prefix=abcd::1234\nverbose=yes\n").unwrap_err();
//! let keys: Vec<_> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
//! assert_eq!(keys, ["ipv6_prefix", "ipv6_gateway", "verbose"]);
//! ```
//!
//! # Differences from IC-OS
//!
//! * A partial IPv4 configuration (one or two of `ipv4_address`,
//!   `ipv4_gateway`, `ipv4_prefix_length`) is an error; IC-OS prints a
//!   warning and drops IPv4.
//! * `domain` is checked whenever it is given, and is required with IPv4;
//!   IC-OS checks it in a shell script during installation.
//! * Unknown `config.ini` keys are reported as warnings.
//! * `nns.urls` must not be empty and must hold `http`/`https` URLs.
//! * The SSH key files and the node operator key are checked for form.
//!
//! # Why `config.ini` is read by hand
//!
//! The `rust-ini` crate (0.21) does not read this format the way IC-OS does:
//! a line without `=` is silently joined with the next line into one key
//! (`verbose` followed by `ipv6_prefix=…` yields the key
//! `"verbose\nipv6_prefix"`), an indented `#` comment becomes part of a key,
//! `:` is taken as a key/value separator, and parsing stops at the first
//! error, so several malformed lines cannot be reported at once. IC-OS
//! itself reads the file with a small line-based reader; this crate does the
//! same, with the same rules (see [`config_ini`]).

pub mod config_ini;
pub mod deployment;
mod ini;
pub mod mgmt_mac;
pub mod operator_key;
mod problem;
pub mod ssh_keys;

use std::path::{Path, PathBuf};

use icos_config::{
    CONFIG_VERSION, DeterministicIpv6Config, Extra, GuestOSSettings, HostOSDevSettings,
    HostOSSettings, ICOSDevSettings, ICOSSettings, Ipv4Config, Ipv6Config, NetworkSettings,
    SetupOSConfig, SetupOSSettings,
};
use icos_deterministic_ips::MacAddr6;

pub use config_ini::{
    ConfigIni, IPV6_PREFIX_LENGTH, Ipv4Settings, load_config_ini, parse_config_ini,
};
pub use deployment::{DeploymentJson, DevVmResources, load_deployment_json, parse_deployment_json};
pub use mgmt_mac::{
    IpmitoolError, MgmtMacSource, parse_ipmitool_mac, read_ipmitool_mac, resolve_mgmt_mac,
};
pub use operator_key::{check_node_operator_key, load_node_operator_key};
pub use problem::{Problem, Problems};
pub use ssh_keys::{SshKeys, load_ssh_keys};

/// Reads a text input, turning a failure into a problem naming the file.
pub(crate) fn read_text(path: &Path) -> Result<String, Problems> {
    let bytes = std::fs::read(path)
        .map_err(|e| Problem::whole(format!("cannot read: {e}")).in_file(path))?;
    String::from_utf8(bytes).map_err(|e| {
        Problem::whole(format!("is not UTF-8 text: {e}"))
            .in_file(path)
            .into()
    })
}

/// Where the SetupOS inputs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPaths {
    /// The `config.ini` file.
    pub config_ini: PathBuf,
    /// The `deployment.json` file.
    pub deployment_json: PathBuf,
    /// The SSH key folder, if any.
    pub ssh_keys: Option<PathBuf>,
    /// The node operator private key, if any.
    pub node_operator_key: Option<PathBuf>,
    /// A management MAC that overrides deployment.json and the BMC.
    pub mgmt_mac: Option<MacAddr6>,
}

/// The SetupOS inputs, all read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOsInputs {
    /// The settings of `config.ini`.
    pub config_ini: ConfigIni,
    /// The settings of `deployment.json`.
    pub deployment: DeploymentJson,
    /// The SSH key folder, when one was given.
    pub ssh_keys: Option<SshKeys>,
    /// The PEM text of the node operator private key, when one was given.
    pub node_operator_private_key: Option<String>,
    /// The management MAC.
    pub mgmt_mac: MacAddr6,
    /// Where [`SetupOsInputs::mgmt_mac`] came from.
    pub mgmt_mac_source: MgmtMacSource,
}

impl SetupOsInputs {
    /// Reads and checks every input; asks the BMC (`ipmitool lan print`) for
    /// the management MAC when neither the caller nor deployment.json gives it.
    pub fn load(paths: &InputPaths) -> Result<Self, Problems> {
        Self::load_with(paths, read_ipmitool_mac)
    }

    /// Like [`SetupOsInputs::load`], with `from_bmc` in place of `ipmitool`.
    ///
    /// Every input is read even when an earlier one has problems, and all of
    /// the problems are returned together.
    pub fn load_with<F>(paths: &InputPaths, from_bmc: F) -> Result<Self, Problems>
    where
        F: FnOnce() -> Result<MacAddr6, IpmitoolError>,
    {
        fn keep<T>(problems: &mut Problems, result: Result<T, Problems>) -> Option<T> {
            result.map_err(|p| problems.extend(p)).ok()
        }
        let mut problems = Problems::new();
        let config_ini = keep(&mut problems, load_config_ini(&paths.config_ini));
        let deployment = keep(&mut problems, load_deployment_json(&paths.deployment_json));
        let ssh_keys = paths
            .ssh_keys
            .as_deref()
            .map(|d| keep(&mut problems, load_ssh_keys(d)));
        let operator_key = paths
            .node_operator_key
            .as_deref()
            .map(|p| keep(&mut problems, load_node_operator_key(p)));

        // Without a readable deployment.json its MAC is unknown; the BMC is
        // asked only when it is known that deployment.json has none.
        let mgmt_mac = match (&paths.mgmt_mac, &deployment) {
            (None, None) => None,
            (flag, _) => {
                let from_json = deployment.as_ref().and_then(|d| d.mgmt_mac);
                match resolve_mgmt_mac(*flag, from_json, from_bmc) {
                    Ok(found) => Some(found),
                    Err(e) => {
                        problems.push(Problem::at(
                            "mgmt_mac",
                            format!(
                                "no management MAC address: pass --mgmt-mac XX:XX:XX:XX:XX:XX \
                                 or set deployment.mgmt_mac in {} ({e})",
                                paths.deployment_json.display()
                            ),
                        ));
                        None
                    }
                }
            }
        };

        match (config_ini, deployment, mgmt_mac) {
            (Some(config_ini), Some(deployment), Some((mgmt_mac, mgmt_mac_source)))
                if problems.is_empty() =>
            {
                Ok(SetupOsInputs {
                    config_ini,
                    deployment,
                    ssh_keys: ssh_keys.flatten(),
                    node_operator_private_key: operator_key.flatten(),
                    mgmt_mac,
                    mgmt_mac_source,
                })
            }
            _ => Err(problems),
        }
    }
}

/// Assembles the SetupOS config from checked inputs, as IC-OS does.
pub fn create_setupos_config(inputs: &SetupOsInputs) -> SetupOSConfig {
    let ini = &inputs.config_ini;
    let network_settings = NetworkSettings {
        ipv6_config: Ipv6Config::Deterministic(DeterministicIpv6Config {
            prefix: ini.ipv6_prefix.clone(),
            prefix_length: IPV6_PREFIX_LENGTH,
            gateway: ini.ipv6_gateway,
            extra: Extra::new(),
        }),
        ipv4_config: ini.ipv4.map(|v4| Ipv4Config {
            address: v4.address,
            gateway: v4.gateway,
            prefix_length: v4.prefix_length,
            extra: Extra::new(),
        }),
        domain_name: ini.domain.clone(),
        extra: Extra::new(),
    };
    let icos_settings = ICOSSettings {
        node_reward_type: ini.node_reward_type.clone(),
        mgmt_mac: inputs.mgmt_mac,
        deployment_environment: inputs.deployment.deployment_environment,
        nns_urls: inputs.deployment.nns_urls.clone(),
        node_operator_private_key: inputs.node_operator_private_key.clone(),
        enable_trusted_execution_environment: ini.enable_trusted_execution_environment,
        use_ssh_authorized_keys: inputs.ssh_keys.is_some(),
        icos_dev_settings: ICOSDevSettings::default(),
        extra: Extra::new(),
    };
    let resources = inputs
        .deployment
        .dev_vm_resources
        .clone()
        .unwrap_or_default();
    let hostos_settings = HostOSSettings {
        hostos_dev_settings: Some(HostOSDevSettings {
            vm_memory: resources.memory_gib,
            vm_cpu: resources.cpu,
            vm_nr_of_vcpus: resources.nr_of_vcpus,
            extra: Extra::new(),
        }),
        verbose: ini.verbose,
        extra: Extra::new(),
    };
    SetupOSConfig {
        config_version: CONFIG_VERSION.to_string(),
        network_settings,
        icos_settings,
        setupos_settings: SetupOSSettings::default(),
        hostos_settings,
        guestos_settings: GuestOSSettings::default(),
        extra: Extra::new(),
    }
}

/// Reads and checks every input, then assembles the SetupOS config
/// ([`SetupOsInputs::load`] followed by [`create_setupos_config`]).
pub fn setupos_config_from(paths: &InputPaths) -> Result<SetupOSConfig, Problems> {
    SetupOsInputs::load(paths).map(|inputs| create_setupos_config(&inputs))
}

#[cfg(test)]
mod tests;
