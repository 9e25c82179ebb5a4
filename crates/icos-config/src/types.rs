//! The config types, with the JSON field names IC-OS uses.
//!
//! Every object type keeps the members it does not know in an `extra` map and
//! writes them back, so a file from an older or a newer version survives a
//! read and a write unchanged. The enums [`Ipv6Config`] and [`GuestVmType`]
//! keep unknown variants as raw JSON for the same reason.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use icos_deterministic_ips::MacAddr6;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use url::Url;

/// Members of a JSON object that the types of this version do not know:
/// fields added by a newer version, or removed fields of an older one.
/// They are written back unchanged, after the known fields.
pub type Extra = serde_json::Map<String, Value>;

/// Declares a config object type: the struct (with an `extra` map for unknown
/// members), `Serialize` through serde's derive, and a hand-written
/// `Deserialize` that reads every known member with its own type (so error
/// paths stay exact) and puts every other member into `extra`.
///
/// Each field ends in `[required]`, `[default]` or `[(expression)]`, which
/// says what happens when the member is absent, and may add `via Type` to
/// read the member as `Type` and convert it with `Into`.
macro_rules! config_object {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty [$($missing:tt)+] $(via $via:ty)?
            ),* $(,)?
        }
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            /// Members this version does not know; written back unchanged.
            #[serde(flatten)]
            pub extra: Extra,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("an object (", stringify!($name), ")"))
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $( let mut $field: Option<$ty> = None; )*
                        let mut extra = Extra::new();
                        while let Some(key) = map.next_key::<String>()? {
                            match key.as_str() {
                                $(
                                    stringify!($field) => {
                                        if $field.is_some() {
                                            return Err(de::Error::duplicate_field(stringify!($field)));
                                        }
                                        $field = Some(config_object!(@read map, $ty $(, $via)?));
                                    }
                                )*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key, value);
                                }
                            }
                        }
                        Ok($name {
                            $(
                                $field: match $field {
                                    Some(value) => value,
                                    None => config_object!(@missing $field, $($missing)+),
                                },
                            )*
                            extra,
                        })
                    }
                }

                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
    (@read $map:ident, $ty:ty) => { $map.next_value::<$ty>()? };
    (@read $map:ident, $ty:ty, $via:ty) => { $map.next_value::<$via>()?.into() };
    (@missing $field:ident, required) => {
        return Err(de::Error::missing_field(stringify!($field)))
    };
    (@missing $field:ident, default) => { Default::default() };
    (@missing $field:ident, ($value:expr)) => { $value };
}

// ---------------------------------------------------------------------------
// Top-level configs

config_object! {
    /// The SetupOS config (`/var/ic/config/config.json` on SetupOS), built
    /// from the node operator's `config.ini` and the image's `deployment.json`.
    pub struct SetupOSConfig {
        /// The version of the schema the file was written with (`MAJOR.MINOR.PATCH`).
        pub config_version: String [required],
        /// Network settings.
        pub network_settings: NetworkSettings [required],
        /// Settings common to all IC-OS variants.
        pub icos_settings: ICOSSettings [required],
        /// SetupOS-only settings (none yet; written as `null`).
        pub setupos_settings: SetupOSSettings [required],
        /// HostOS-only settings, handed on to HostOS.
        pub hostos_settings: HostOSSettings [required],
        /// GuestOS-only settings, handed on to HostOS and then GuestOS.
        pub guestos_settings: GuestOSSettings [required],
    }
}

config_object! {
    /// The HostOS config (`/boot/config/config.json` on HostOS), derived from
    /// the SetupOS config by [`generate_hostos_config`](crate::generate_hostos_config).
    pub struct HostOSConfig {
        /// The version of the schema the file was written with (`MAJOR.MINOR.PATCH`).
        pub config_version: String [required],
        /// Network settings.
        pub network_settings: NetworkSettings [required],
        /// Settings common to all IC-OS variants.
        pub icos_settings: ICOSSettings [required],
        /// HostOS-only settings.
        pub hostos_settings: HostOSSettings [required],
        /// GuestOS-only settings, handed on to GuestOS.
        pub guestos_settings: GuestOSSettings [required],
    }
}

config_object! {
    /// The GuestOS config (`config.json` on the GuestOS bootstrap media),
    /// derived from the HostOS config on every VM start by
    /// [`generate_guestos_config`](crate::generate_guestos_config).
    pub struct GuestOSConfig {
        /// The version of the schema the file was written with (`MAJOR.MINOR.PATCH`).
        pub config_version: String [required],
        /// Network settings; IPv6 is normally [`Ipv6Config::Fixed`] here.
        pub network_settings: NetworkSettings [required],
        /// Settings common to all IC-OS variants.
        pub icos_settings: ICOSSettings [required],
        /// GuestOS-only settings.
        pub guestos_settings: GuestOSSettings [required],
        /// Which of the two guest VMs this config is for.
        pub guest_vm_type: GuestVmType [default],
        /// Settings for the GuestOS upgrade hand-over.
        pub upgrade_config: GuestOSUpgradeConfig [default],
        /// The SEV-SNP certificate chain; present when the trusted execution
        /// environment is enabled.
        pub trusted_execution_environment_config: Option<TrustedExecutionEnvironmentConfig> [default],
        /// A one-shot recovery request.
        pub recovery_config: Option<RecoveryConfig> [default],
    }
}

// ---------------------------------------------------------------------------
// Network

config_object! {
    /// How the node's network is configured.
    #[derive(Default)]
    pub struct NetworkSettings {
        /// The IPv6 configuration.
        pub ipv6_config: Ipv6Config [required],
        /// An optional static IPv4 configuration.
        pub ipv4_config: Option<Ipv4Config> [default],
        /// An optional domain name for the node (used with IPv4).
        pub domain_name: Option<String> [default],
    }
}

config_object! {
    /// A static IPv4 configuration.
    pub struct Ipv4Config {
        /// The node's IPv4 address.
        pub address: Ipv4Addr [required],
        /// The IPv4 gateway.
        pub gateway: Ipv4Addr [required],
        /// The prefix length of the IPv4 network (at most 32).
        pub prefix_length: u8 [required],
    }
}

config_object! {
    /// IPv6 settings from which each OS derives its own address.
    pub struct DeterministicIpv6Config {
        /// The /64 network part, e.g. `2a00:fb01:400:200` (at most 19 characters).
        pub prefix: String [required],
        /// The prefix length; always 64.
        pub prefix_length: u8 [required],
        /// The IPv6 gateway.
        pub gateway: Ipv6Addr [required],
    }
}

config_object! {
    /// A fixed IPv6 address.
    pub struct FixedIpv6Config {
        /// The address with its prefix length, e.g. `2a00:fb01:400:200::1/64`.
        pub address: String [required],
        /// The IPv6 gateway.
        pub gateway: Ipv6Addr [required],
    }
}

impl FixedIpv6Config {
    /// [`FixedIpv6Config::address`] split into the address and its prefix
    /// length (64 when none is given); the error says what is wrong with
    /// the text.
    pub fn address_and_length(&self) -> Result<(Ipv6Addr, u8), String> {
        let text = self.address.as_str();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (
                a,
                l.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= 128)
                    .ok_or_else(|| format!("'{text}': the prefix length must be 0..=128"))?,
            ),
            None => (text, 64),
        };
        let addr = addr
            .parse::<Ipv6Addr>()
            .map_err(|e| format!("'{text}': {e}"))?;
        Ok((addr, len))
    }
}

/// The IPv6 configuration, written in JSON as an externally tagged enum:
/// `{"Deterministic": {…}}`, `{"Fixed": {…}}` or `"RouterAdvertisement"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ipv6Config {
    /// Each OS derives its address from the management MAC and the prefix.
    Deterministic(DeterministicIpv6Config),
    /// One fixed address.
    Fixed(FixedIpv6Config),
    /// The address is taken from router advertisements.
    #[default]
    RouterAdvertisement,
    /// A variant from a newer version, kept as its raw JSON.
    Unknown(Value),
}

/// A node's own IPv6 address and route, as [`Ipv6Config::static_address`]
/// resolves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIpv6 {
    /// The address.
    pub address: Ipv6Addr,
    /// Its prefix length.
    pub prefix_length: u8,
    /// The IPv6 gateway.
    pub gateway: Ipv6Addr,
}

/// Why [`Ipv6Config::static_address`] cannot give an address: the field at
/// fault and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6ConfigError {
    /// The field, e.g. `network_settings.ipv6_config.Fixed.address`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Ipv6Config {
    /// The static address of the node's `node_type` interface: the `Fixed`
    /// address, or the `Deterministic` one derived from `mgmt_mac` and
    /// `deployment_environment` (`icos_deterministic_ips`); `None` when
    /// addresses come from router advertisements.
    pub fn static_address(
        &self,
        mgmt_mac: &MacAddr6,
        deployment_environment: &str,
        node_type: icos_deterministic_ips::NodeType,
    ) -> Result<Option<StaticIpv6>, Ipv6ConfigError> {
        match self {
            Ipv6Config::Fixed(f) => {
                let (address, prefix_length) =
                    f.address_and_length().map_err(|reason| Ipv6ConfigError {
                        field: "network_settings.ipv6_config.Fixed.address",
                        reason,
                    })?;
                Ok(Some(StaticIpv6 {
                    address,
                    prefix_length,
                    gateway: f.gateway,
                }))
            }
            Ipv6Config::Deterministic(d) => {
                let address = icos_deterministic_ips::deterministic_ipv6(
                    mgmt_mac,
                    deployment_environment,
                    node_type,
                    0,
                    &d.prefix,
                )
                .map_err(|e| Ipv6ConfigError {
                    field: "network_settings.ipv6_config.Deterministic.prefix",
                    reason: e.to_string(),
                })?;
                Ok(Some(StaticIpv6 {
                    address,
                    prefix_length: d.prefix_length,
                    gateway: d.gateway,
                }))
            }
            Ipv6Config::RouterAdvertisement => Ok(None),
            Ipv6Config::Unknown(v) => Err(Ipv6ConfigError {
                field: "network_settings.ipv6_config",
                reason: format!(
                    "unknown variant {v}; expected Fixed, Deterministic or RouterAdvertisement"
                ),
            }),
        }
    }

    /// The variant's name as written in JSON (`None` for an unknown variant
    /// whose JSON is neither a string nor a one-member object).
    pub fn variant_name(&self) -> Option<&str> {
        match self {
            Ipv6Config::Deterministic(_) => Some("Deterministic"),
            Ipv6Config::Fixed(_) => Some("Fixed"),
            Ipv6Config::RouterAdvertisement => Some("RouterAdvertisement"),
            Ipv6Config::Unknown(Value::String(name)) => Some(name),
            Ipv6Config::Unknown(Value::Object(map)) if map.len() == 1 => {
                map.keys().next().map(String::as_str)
            }
            Ipv6Config::Unknown(_) => None,
        }
    }
}

impl Serialize for Ipv6Config {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Ipv6Config::Deterministic(config) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("Deterministic", config)?;
                map.end()
            }
            Ipv6Config::Fixed(config) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("Fixed", config)?;
                map.end()
            }
            Ipv6Config::RouterAdvertisement => serializer.serialize_str("RouterAdvertisement"),
            Ipv6Config::Unknown(raw) => raw.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Ipv6Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ipv6Visitor;

        impl<'de> Visitor<'de> for Ipv6Visitor {
            type Value = Ipv6Config;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an IPv6 config: {\"Deterministic\": {...}}, {\"Fixed\": {...}} or \
                     \"RouterAdvertisement\"",
                )
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Ipv6Config, E> {
                match name {
                    "RouterAdvertisement" => Ok(Ipv6Config::RouterAdvertisement),
                    "Deterministic" | "Fixed" => Err(E::custom(format_args!(
                        "the IPv6 config variant `{name}` needs its settings: {{\"{name}\": {{...}}}}"
                    ))),
                    other => Ok(Ipv6Config::Unknown(Value::String(other.to_string()))),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ipv6Config, A::Error> {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "the IPv6 config is an empty object; expected exactly one variant",
                    ));
                };
                let config = match name.as_str() {
                    "Deterministic" => Ipv6Config::Deterministic(map.next_value()?),
                    "Fixed" => Ipv6Config::Fixed(map.next_value()?),
                    "RouterAdvertisement" => {
                        let _: Value = map.next_value()?;
                        Ipv6Config::RouterAdvertisement
                    }
                    _ => {
                        let mut raw = Extra::new();
                        let value: Value = map.next_value()?;
                        raw.insert(name, value);
                        while let Some((key, value)) = map.next_entry::<String, Value>()? {
                            raw.insert(key, value);
                        }
                        return Ok(Ipv6Config::Unknown(Value::Object(raw)));
                    }
                };
                if let Some(other) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format_args!(
                        "the IPv6 config has more than one variant (`{name}` and `{other}`)"
                    )));
                }
                Ok(config)
            }
        }

        deserializer.deserialize_any(Ipv6Visitor)
    }
}

// ---------------------------------------------------------------------------
// ICOS settings

/// The network the node belongs to; also part of the seed of its
/// deterministic MAC addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentEnvironment {
    /// The Internet Computer mainnet.
    Mainnet,
    /// A test network.
    Testnet,
}

impl DeploymentEnvironment {
    /// The lower-case name used in JSON and in the MAC seed.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentEnvironment::Mainnet => "mainnet",
            DeploymentEnvironment::Testnet => "testnet",
        }
    }
}

impl fmt::Display for DeploymentEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the values a setting allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}': expected {expected}")]
pub struct ParseNameError {
    /// What was being parsed.
    pub what: &'static str,
    /// The text that was given.
    pub value: String,
    /// The allowed values.
    pub expected: &'static str,
}

impl FromStr for DeploymentEnvironment {
    type Err = ParseNameError;

    /// Parses `mainnet` or `testnet`, ignoring case (as IC-OS does).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mainnet" => Ok(DeploymentEnvironment::Mainnet),
            "testnet" => Ok(DeploymentEnvironment::Testnet),
            _ => Err(ParseNameError {
                what: "deployment environment",
                value: s.to_string(),
                expected: "mainnet or testnet",
            }),
        }
    }
}

impl Serialize for DeploymentEnvironment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeploymentEnvironment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Reads a MAC address written as text (any case, `:` or `-` separators).
struct MacText(MacAddr6);

impl From<MacText> for MacAddr6 {
    fn from(mac: MacText) -> Self {
        mac.0
    }
}

impl<'de> Deserialize<'de> for MacText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        icos_deterministic_ips::parse_mac(&text)
            .map(MacText)
            .map_err(de::Error::custom)
    }
}

/// Writes a MAC as IC-OS does: upper-case hex octets separated by colons.
fn serialize_mac<S: Serializer>(mac: &MacAddr6, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(mac)
}

config_object! {
    /// Settings common to SetupOS, HostOS and GuestOS.
    pub struct ICOSSettings {
        /// The node reward type, e.g. `type3.1`.
        pub node_reward_type: Option<String> [default],
        /// The MAC of the management (BMC) interface, the input of the
        /// deterministic addresses. Read in any case; written in upper case
        /// (`B0:7B:25:C8:F6:C0`), as IC-OS writes it.
        #[serde(serialize_with = "serialize_mac")]
        pub mgmt_mac: MacAddr6 [required] via MacText,
        /// The network the node belongs to.
        pub deployment_environment: DeploymentEnvironment [required],
        /// The URLs of the NNS nodes.
        pub nns_urls: Vec<Url> [required],
        /// The node operator's private key (PEM), when one was supplied.
        pub node_operator_private_key: Option<String> [default],
        /// Whether the node runs its GuestOS in a trusted execution environment (SEV-SNP).
        pub enable_trusted_execution_environment: bool [default],
        /// Whether the `ssh_authorized_keys` directory is handed on.
        pub use_ssh_authorized_keys: bool [required],
        /// Development settings (none yet).
        pub icos_dev_settings: ICOSDevSettings [required],
    }
}

config_object! {
    /// Development settings common to all IC-OS variants (none yet).
    #[derive(Default)]
    pub struct ICOSDevSettings {}
}

/// SetupOS-only settings. There are none yet: IC-OS writes this as `null`,
/// and so does this type unless a newer version added members, which are
/// kept in `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetupOSSettings {
    /// Members this version does not know; written back unchanged.
    pub extra: Extra,
}

impl Serialize for SetupOSSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.extra.is_empty() {
            serializer.serialize_unit()
        } else {
            self.extra.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for SetupOSSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let extra = Option::<Extra>::deserialize(deserializer)?.unwrap_or_default();
        Ok(SetupOSSettings { extra })
    }
}

// ---------------------------------------------------------------------------
// HostOS settings

config_object! {
    /// HostOS-only settings.
    #[derive(Default)]
    pub struct HostOSSettings {
        /// The guest VM's resources. Absent in files before the settings were
        /// nested (1.1.0 to 1.6.0 had flat `vm_memory`, `vm_cpu` and
        /// `vm_nr_of_vcpus` members, which are kept in `extra`); see
        /// [`HostOSSettings::vm_resources`]. Not written when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub hostos_dev_settings: Option<HostOSDevSettings> [default],
        /// Verbose logging on HostOS.
        pub verbose: bool [required],
    }
}

config_object! {
    /// The guest VM's resources (used by development images).
    pub struct HostOSDevSettings {
        /// The guest VM's memory in GiB.
        pub vm_memory: u32 [required],
        /// The CPU model: `kvm` or `qemu`.
        pub vm_cpu: String [required],
        /// The number of virtual CPUs.
        pub vm_nr_of_vcpus: u32 [required],
    }
}

impl Default for HostOSDevSettings {
    /// 16 GiB, `kvm`, 16 vCPUs, as in IC-OS.
    fn default() -> Self {
        HostOSDevSettings {
            vm_memory: 16,
            vm_cpu: "kvm".to_string(),
            vm_nr_of_vcpus: 16,
            extra: Extra::new(),
        }
    }
}

/// Where [`VmResources`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmResourcesSource {
    /// From `hostos_settings.hostos_dev_settings`.
    DevSettings,
    /// From the flat `hostos_settings.vm_*` members of files before 1.7.0.
    LegacyFlat,
    /// Neither was present: the defaults.
    Default,
}

/// The guest VM resources in effect for a HostOS config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmResources {
    /// Memory in GiB.
    pub memory_gib: u32,
    /// The CPU model (`kvm` or `qemu`).
    pub cpu: String,
    /// The number of virtual CPUs.
    pub nr_of_vcpus: u32,
    /// Where the values came from.
    pub source: VmResourcesSource,
}

/// The legacy flat VM members of `hostos_settings`.
pub const LEGACY_VM_FIELDS: [&str; 3] = ["vm_memory", "vm_cpu", "vm_nr_of_vcpus"];

impl HostOSSettings {
    /// The nested dev settings, or the defaults when absent.
    pub fn dev_settings(&self) -> HostOSDevSettings {
        self.hostos_dev_settings.clone().unwrap_or_default()
    }

    /// Whether this is the legacy flat layout: no `hostos_dev_settings`, but
    /// at least one flat `vm_*` member.
    pub fn has_legacy_vm_fields(&self) -> bool {
        self.hostos_dev_settings.is_none()
            && LEGACY_VM_FIELDS.iter().any(|k| self.extra.contains_key(*k))
    }

    /// The guest VM resources in effect.
    ///
    /// `hostos_dev_settings` wins when present. Otherwise the legacy flat
    /// members are used, each one that is missing or not of the right type
    /// falling back to its default. The flat `vm_memory` is taken in GiB,
    /// the unit of the nested member; the value 4096 of the old test
    /// fixtures is a placeholder, not MiB. (Current IC-OS ignores the flat
    /// members altogether and uses the defaults.)
    pub fn vm_resources(&self) -> VmResources {
        if let Some(dev) = &self.hostos_dev_settings {
            return VmResources {
                memory_gib: dev.vm_memory,
                cpu: dev.vm_cpu.clone(),
                nr_of_vcpus: dev.vm_nr_of_vcpus,
                source: VmResourcesSource::DevSettings,
            };
        }
        let defaults = HostOSDevSettings::default();
        if !self.has_legacy_vm_fields() {
            return VmResources {
                memory_gib: defaults.vm_memory,
                cpu: defaults.vm_cpu,
                nr_of_vcpus: defaults.vm_nr_of_vcpus,
                source: VmResourcesSource::Default,
            };
        }
        let number = |key: &str| {
            self.extra
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        VmResources {
            memory_gib: number("vm_memory").unwrap_or(defaults.vm_memory),
            cpu: self
                .extra
                .get("vm_cpu")
                .and_then(Value::as_str)
                .map_or(defaults.vm_cpu, str::to_string),
            nr_of_vcpus: number("vm_nr_of_vcpus").unwrap_or(defaults.vm_nr_of_vcpus),
            source: VmResourcesSource::LegacyFlat,
        }
    }
}

// ---------------------------------------------------------------------------
// GuestOS settings

config_object! {
    /// GuestOS-only settings.
    #[derive(Default)]
    pub struct GuestOSSettings {
        /// Development settings.
        pub guestos_dev_settings: GuestOSDevSettings [default],
        /// The principal of the engine management canister (cloud engine nodes).
        pub engine_management_canister_id: Option<String> [default],
    }
}

config_object! {
    /// GuestOS development settings, used by test and development images.
    #[derive(Default)]
    pub struct GuestOSDevSettings {
        /// Backup spool settings (kept as raw JSON).
        pub backup_spool: Option<Value> [default],
        /// Malicious behaviour for tests (kept as raw JSON).
        pub malicious_behavior: Option<Value> [default],
        /// The query statistics epoch length.
        pub query_stats_epoch_length: Option<u64> [default],
        /// The bitcoind address.
        pub bitcoind_addr: Option<String> [default],
        /// The dogecoind address.
        pub dogecoind_addr: Option<String> [default],
        /// The Jaeger address.
        pub jaeger_addr: Option<String> [default],
        /// The SOCKS proxy.
        pub socks_proxy: Option<String> [default],
        /// A hostname overriding the generated one.
        pub hostname: Option<String> [default],
        /// Generate a self-signed ic-boundary TLS certificate for this domain.
        pub generate_ic_boundary_tls_cert: Option<String> [default],
        /// An ic-boundary TLS certificate.
        pub ic_boundary_tls_cert: Option<String> [default],
        /// Extra trust anchors (PEM) for API boundary nodes.
        pub extra_api_boundary_node_trust_anchors_pem: Option<String> [default],
        /// A PEM NNS public key overriding the built-in one.
        pub nns_pub_key_override: Option<String> [default],
    }
}

/// Which of the two guest VMs a GuestOS config is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GuestVmType {
    /// The VM that normally runs the replica (`default`).
    #[default]
    Default,
    /// The VM brought up temporarily during an upgrade (`upgrade`).
    Upgrade,
    /// A value from a newer version, kept as its raw JSON.
    Unknown(Value),
}

impl GuestVmType {
    /// The name used in JSON (`None` for an unknown value that is not a string).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GuestVmType::Default => Some("default"),
            GuestVmType::Upgrade => Some("upgrade"),
            GuestVmType::Unknown(Value::String(name)) => Some(name),
            GuestVmType::Unknown(_) => None,
        }
    }
}

impl FromStr for GuestVmType {
    type Err = ParseNameError;

    /// Parses `default` or `upgrade`; other names are an error here (but an
    /// unknown value in a file is kept, see [`GuestVmType::Unknown`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(GuestVmType::Default),
            "upgrade" => Ok(GuestVmType::Upgrade),
            _ => Err(ParseNameError {
                what: "guest VM type",
                value: s.to_string(),
                expected: "default or upgrade",
            }),
        }
    }
}

impl Serialize for GuestVmType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GuestVmType::Default => serializer.serialize_str("default"),
            GuestVmType::Upgrade => serializer.serialize_str("upgrade"),
            GuestVmType::Unknown(raw) => raw.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for GuestVmType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::String(name) if name == "default" => GuestVmType::Default,
            Value::String(name) if name == "upgrade" => GuestVmType::Upgrade,
            other => GuestVmType::Unknown(other),
        })
    }
}

config_object! {
    /// Settings for the GuestOS upgrade hand-over.
    #[derive(Default)]
    pub struct GuestOSUpgradeConfig {
        /// The IPv6 address of the other guest VM: the upgrade VM's address
        /// inside the default VM and the other way round.
        pub peer_guest_vm_address: Option<Ipv6Addr> [default],
    }
}

config_object! {
    /// The trusted execution environment (SEV-SNP) settings of a GuestOS.
    pub struct TrustedExecutionEnvironmentConfig {
        /// The AMD SEV-SNP certificate chain (PEM).
        pub sev_cert_chain_pem: String [required],
    }
}

config_object! {
    /// A one-shot manual recovery request.
    pub struct RecoveryConfig {
        /// The hash (prefix) of the recovery artifacts.
        pub recovery_hash: String [required],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{guestos_json, hostos_json, setupos_json};
    use crate::{from_json_value, to_json_pretty};
    use serde_json::json;

    #[test]
    fn mgmt_mac_is_read_in_any_case_and_written_in_upper_case() {
        for text in ["b0:7b:25:c8:f6:c0", "B0-7B-25-C8-F6-C0", "b07b25c8f6c0"] {
            let mut value = hostos_json();
            value["icos_settings"]["mgmt_mac"] = json!(text);
            let config: HostOSConfig = from_json_value(&value).unwrap();
            assert_eq!(config.icos_settings.mgmt_mac.as_bytes()[0], 0xb0);
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(written["icos_settings"]["mgmt_mac"], "B0:7B:25:C8:F6:C0");
        }
    }

    #[test]
    fn deployment_environment_ignores_case_and_is_written_lower_case() {
        let mut value = hostos_json();
        value["icos_settings"]["deployment_environment"] = json!("Mainnet");
        let config: HostOSConfig = from_json_value(&value).unwrap();
        assert_eq!(
            config.icos_settings.deployment_environment,
            DeploymentEnvironment::Mainnet
        );
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(
            written["icos_settings"]["deployment_environment"],
            "mainnet"
        );
        assert_eq!("TESTNET".parse(), Ok(DeploymentEnvironment::Testnet));
        assert!("devnet".parse::<DeploymentEnvironment>().is_err());
    }

    #[test]
    fn ipv6_config_variants() {
        let parse = |v: Value| serde_json::from_value::<Ipv6Config>(v);
        assert_eq!(
            parse(json!("RouterAdvertisement")).unwrap(),
            Ipv6Config::RouterAdvertisement
        );
        assert_eq!(
            serde_json::to_value(Ipv6Config::RouterAdvertisement).unwrap(),
            json!("RouterAdvertisement")
        );
        let fixed = parse(json!({"Fixed": {"address": "::1/128", "gateway": "::1"}})).unwrap();
        assert_eq!(fixed.variant_name(), Some("Fixed"));
        assert_eq!(
            serde_json::to_value(&fixed).unwrap(),
            json!({"Fixed": {"address": "::1/128", "gateway": "::1"}})
        );
        // Unknown variants, as a name or as an object, are kept as they are.
        for raw in [
            json!("Slaac"),
            json!({"Dhcp6": {"x": 1}}),
            json!({"Dhcp6": null, "Also": 2}),
        ] {
            let config = parse(raw.clone()).unwrap();
            assert_eq!(config, Ipv6Config::Unknown(raw.clone()));
            assert_eq!(serde_json::to_value(&config).unwrap(), raw);
        }
        assert_eq!(parse(json!("Slaac")).unwrap().variant_name(), Some("Slaac"));
        // Known variants must be well formed.
        assert!(parse(json!("Fixed")).is_err());
        assert!(parse(json!({})).is_err());
        assert!(parse(json!(5)).is_err());
        assert!(
            parse(json!({"Fixed": {"address": "::1/128", "gateway": "::1"}, "Other": 1})).is_err()
        );
        assert!(parse(json!({"Deterministic": {"prefix": "2001:db8"}})).is_err());
    }

    #[test]
    fn guest_vm_type_values() {
        let parse = |v: Value| serde_json::from_value::<GuestVmType>(v).unwrap();
        assert_eq!(parse(json!("default")), GuestVmType::Default);
        assert_eq!(parse(json!("upgrade")), GuestVmType::Upgrade);
        for raw in [json!("recovery"), json!(7), json!({"kind": "x"})] {
            let vm_type = parse(raw.clone());
            assert_eq!(vm_type, GuestVmType::Unknown(raw.clone()));
            assert_eq!(serde_json::to_value(&vm_type).unwrap(), raw);
        }
        assert_eq!(parse(json!("recovery")).as_str(), Some("recovery"));
        assert_eq!("upgrade".parse(), Ok(GuestVmType::Upgrade));
        assert!("recovery".parse::<GuestVmType>().is_err());
        // Absent means default.
        let mut value = guestos_json();
        value.as_object_mut().unwrap().remove("guest_vm_type");
        let config: GuestOSConfig = from_json_value(&value).unwrap();
        assert_eq!(config.guest_vm_type, GuestVmType::Default);
    }

    #[test]
    fn setupos_settings_is_null_unless_a_newer_version_filled_it() {
        let config: SetupOSConfig = from_json_value(&setupos_json()).unwrap();
        assert!(config.setupos_settings.extra.is_empty());
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["setupos_settings"], Value::Null);

        let mut value = setupos_json();
        value["setupos_settings"] = json!({"new_member": [1, 2]});
        let config: SetupOSConfig = from_json_value(&value).unwrap();
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["setupos_settings"], json!({"new_member": [1, 2]}));

        value["setupos_settings"] = json!(3);
        assert!(from_json_value::<SetupOSConfig>(&value).is_err());
    }

    #[test]
    fn unknown_members_are_written_after_the_known_ones() {
        let mut value = hostos_json();
        value["icos_settings"] = {
            let mut map = Extra::new();
            map.insert("zzz_new".to_string(), json!(1));
            for (k, v) in value["icos_settings"].as_object().unwrap() {
                map.insert(k.clone(), v.clone());
            }
            Value::Object(map)
        };
        let config: HostOSConfig = from_json_value(&value).unwrap();
        assert_eq!(config.icos_settings.extra.len(), 1);
        let text = to_json_pretty(&config.icos_settings).unwrap();
        let last_key = text.lines().rev().nth(1).unwrap().trim();
        assert_eq!(last_key, "\"zzz_new\": 1");
    }

    #[test]
    fn duplicate_members_are_an_error() {
        let text = r#"{"recovery_hash": "a", "recovery_hash": "b"}"#;
        let err = serde_json::from_str::<RecoveryConfig>(text).unwrap_err();
        assert!(err.to_string().contains("duplicate field `recovery_hash`"));
    }

    #[test]
    fn optional_members_default() {
        let value = json!({
            "config_version": "1.0.0",
            "network_settings": {"ipv6_config": "RouterAdvertisement"},
            "icos_settings": {
                "mgmt_mac": "00:00:00:00:00:01",
                "deployment_environment": "mainnet",
                "nns_urls": ["https://icp-api.io"],
                "use_ssh_authorized_keys": true,
                "icos_dev_settings": {}
            },
            "guestos_settings": {}
        });
        let config: GuestOSConfig = from_json_value(&value).unwrap();
        assert_eq!(config.network_settings.ipv4_config, None);
        assert_eq!(config.icos_settings.node_reward_type, None);
        assert!(!config.icos_settings.enable_trusted_execution_environment);
        assert_eq!(config.guestos_settings, GuestOSSettings::default());
        assert_eq!(config.upgrade_config, GuestOSUpgradeConfig::default());
        assert_eq!(config.trusted_execution_environment_config, None);
        assert_eq!(config.recovery_config, None);
        // URLs are normalised by the URL parser.
        assert_eq!(
            config.icos_settings.nns_urls[0].as_str(),
            "https://icp-api.io/"
        );
    }

    #[test]
    fn vm_resources_sources() {
        let mut settings = HostOSSettings::default();
        let defaults = settings.vm_resources();
        assert_eq!(defaults.source, VmResourcesSource::Default);
        assert_eq!((defaults.memory_gib, defaults.nr_of_vcpus), (16, 16));
        assert_eq!(defaults.cpu, "kvm");

        settings.extra.insert("vm_cpu".to_string(), json!("qemu"));
        settings
            .extra
            .insert("vm_memory".to_string(), json!("lots"));
        let legacy = settings.vm_resources();
        assert_eq!(legacy.source, VmResourcesSource::LegacyFlat);
        assert_eq!(legacy.cpu, "qemu");
        assert_eq!(legacy.memory_gib, 16);

        settings.hostos_dev_settings = Some(HostOSDevSettings {
            vm_memory: 8,
            ..HostOSDevSettings::default()
        });
        assert!(!settings.has_legacy_vm_fields());
        let nested = settings.vm_resources();
        assert_eq!(nested.source, VmResourcesSource::DevSettings);
        assert_eq!((nested.memory_gib, nested.cpu.as_str()), (8, "kvm"));
    }
}
