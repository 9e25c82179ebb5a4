//! Parsing, kind detection, loading and saving of config documents.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{ConfigError, Problem, Problems, Rule, read_error};
use crate::types::{GuestOSConfig, HostOSConfig, ParseNameError, SetupOSConfig};
use crate::validate::{validate_guestos, validate_hostos, validate_setupos};

/// The three kinds of config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    /// A [`SetupOSConfig`].
    SetupOS,
    /// A [`HostOSConfig`].
    HostOS,
    /// A [`GuestOSConfig`].
    GuestOS,
}

impl ConfigKind {
    /// Every kind, in boot order.
    pub const ALL: [ConfigKind; 3] = [ConfigKind::SetupOS, ConfigKind::HostOS, ConfigKind::GuestOS];

    /// The name: `SetupOS`, `HostOS` or `GuestOS`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::SetupOS => "SetupOS",
            ConfigKind::HostOS => "HostOS",
            ConfigKind::GuestOS => "GuestOS",
        }
    }

    /// Detects the kind of a parsed JSON document from its top-level
    /// members: `setupos_settings` means SetupOS, otherwise
    /// `hostos_settings` means HostOS, otherwise `guestos_settings` means
    /// GuestOS. The problem names the rule when none is present.
    pub fn detect(document: &Value) -> Result<ConfigKind, Problem> {
        let has = |key: &str| document.get(key).is_some();
        if has("setupos_settings") {
            Ok(ConfigKind::SetupOS)
        } else if has("hostos_settings") {
            Ok(ConfigKind::HostOS)
        } else if has("guestos_settings") {
            Ok(ConfigKind::GuestOS)
        } else {
            Err(Problem::new("", Rule::UnknownKind))
        }
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigKind {
    type Err = ParseNameError;

    /// Parses `setupos`, `hostos` or `guestos`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "setupos" => Ok(ConfigKind::SetupOS),
            "hostos" => Ok(ConfigKind::HostOS),
            "guestos" => Ok(ConfigKind::GuestOS),
            _ => Err(ParseNameError {
                what: "config kind",
                value: s.to_string(),
                expected: "setupos, hostos or guestos",
            }),
        }
    }
}

/// What the three config types have in common.
pub trait ConfigDocument: Serialize + DeserializeOwned + Clone + fmt::Debug {
    /// The kind of document this type is.
    const KIND: ConfigKind;

    /// The `config_version` member.
    fn config_version(&self) -> &str;

    /// Checks every rule and returns all problems (empty when valid).
    fn validate(&self) -> Vec<Problem>;
}

impl ConfigDocument for SetupOSConfig {
    const KIND: ConfigKind = ConfigKind::SetupOS;

    fn config_version(&self) -> &str {
        &self.config_version
    }

    fn validate(&self) -> Vec<Problem> {
        validate_setupos(self)
    }
}

impl ConfigDocument for HostOSConfig {
    const KIND: ConfigKind = ConfigKind::HostOS;

    fn config_version(&self) -> &str {
        &self.config_version
    }

    fn validate(&self) -> Vec<Problem> {
        validate_hostos(self)
    }
}

impl ConfigDocument for GuestOSConfig {
    const KIND: ConfigKind = ConfigKind::GuestOS;

    fn config_version(&self) -> &str {
        &self.config_version
    }

    fn validate(&self) -> Vec<Problem> {
        validate_guestos(self)
    }
}

/// A config of any of the three kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyConfig {
    /// A SetupOS config.
    SetupOS(SetupOSConfig),
    /// A HostOS config.
    HostOS(HostOSConfig),
    /// A GuestOS config.
    GuestOS(GuestOSConfig),
}

impl AnyConfig {
    /// The kind of the config.
    pub fn kind(&self) -> ConfigKind {
        match self {
            AnyConfig::SetupOS(_) => ConfigKind::SetupOS,
            AnyConfig::HostOS(_) => ConfigKind::HostOS,
            AnyConfig::GuestOS(_) => ConfigKind::GuestOS,
        }
    }

    /// The `config_version` member.
    pub fn config_version(&self) -> &str {
        match self {
            AnyConfig::SetupOS(c) => &c.config_version,
            AnyConfig::HostOS(c) => &c.config_version,
            AnyConfig::GuestOS(c) => &c.config_version,
        }
    }

    /// Checks every rule and returns all problems (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        match self {
            AnyConfig::SetupOS(c) => c.validate(),
            AnyConfig::HostOS(c) => c.validate(),
            AnyConfig::GuestOS(c) => c.validate(),
        }
    }

    /// The config as a JSON value.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// The config as pretty JSON, the way IC-OS writes it.
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        to_json_pretty(self)
    }
}

impl Serialize for AnyConfig {
    /// Serializes the inner config as it is (no tag is added).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AnyConfig::SetupOS(c) => c.serialize(serializer),
            AnyConfig::HostOS(c) => c.serialize(serializer),
            AnyConfig::GuestOS(c) => c.serialize(serializer),
        }
    }
}

/// Turns a deserialization error into a problem at the member it is about.
fn json_problem<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> Problem {
    let mut path = err.path().to_string();
    if path == "." {
        path.clear();
    }
    let message = err.inner().to_string();
    // "missing field `x`" is reported at the enclosing object; name the member.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field);
    }
    Problem::new(path, Rule::Json(message))
}

/// Parses JSON text as a config of type `T`. A syntax or type error is
/// reported as a problem at the member it is about (no validation is done).
pub fn from_json_str<T: DeserializeOwned>(text: &str) -> Result<T, Problems> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| Problems::from(json_problem(e)))?;
    deserializer
        .end()
        .map_err(|e| Problems::from(Problem::new("", Rule::Json(e.to_string()))))?;
    Ok(value)
}

/// Converts a JSON value to a config of type `T`, reporting a type error as a
/// problem at the member it is about (no validation is done).
pub fn from_json_value<T: DeserializeOwned>(value: &Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(value).map_err(|e| Problems::from(json_problem(e)))
}

/// Detects the kind of JSON text and parses it (no validation is done).
pub fn parse_any(text: &str) -> Result<AnyConfig, Problems> {
    let value: Value = from_json_str(text)?;
    match ConfigKind::detect(&value)? {
        // Parse the text again (not the value) so errors carry line numbers.
        ConfigKind::SetupOS => from_json_str(text).map(AnyConfig::SetupOS),
        ConfigKind::HostOS => from_json_str(text).map(AnyConfig::HostOS),
        ConfigKind::GuestOS => from_json_str(text).map(AnyConfig::GuestOS),
    }
}

/// Serializes a config (or any part of one) as pretty JSON with two-space
/// indentation and no trailing newline, the way IC-OS writes its files.
pub fn to_json_pretty<T: Serialize + ?Sized>(config: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(config)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(read_error(path))
}

/// Reads and parses a config file of type `T` (no validation is done).
pub fn load<T: ConfigDocument>(path: &Path) -> Result<T, ConfigError> {
    from_json_str(&read(path)?).map_err(|p| ConfigError::Invalid(p.with_file(path)))
}

/// Reads a config file, detects its kind and parses it (no validation is done).
pub fn load_any(path: &Path) -> Result<AnyConfig, ConfigError> {
    parse_any(&read(path)?).map_err(|p| ConfigError::Invalid(p.with_file(path)))
}

/// Reads a config file, detects its kind, parses it and validates it. All
/// validation problems are reported together, each naming the file.
pub fn check_file(path: &Path) -> Result<AnyConfig, ConfigError> {
    let config = load_any(path)?;
    Problems::check(config.validate()).map_err(|p| ConfigError::Invalid(p.with_file(path)))?;
    Ok(config)
}

/// Writes a config as pretty JSON (see [`to_json_pretty`]), atomically and
/// durably.
pub fn save<T: Serialize + ?Sized>(path: &Path, config: &T) -> Result<(), ConfigError> {
    let text = to_json_pretty(config).map_err(|source| ConfigError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    icos_fs::write_atomic(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{guestos_json, hostos_json, setupos_json};
    use serde_json::json;

    fn problem_of<T: DeserializeOwned + fmt::Debug>(value: &Value) -> Problem {
        let problems = from_json_value::<T>(value).unwrap_err();
        assert_eq!(problems.problems.len(), 1);
        problems.problems[0].clone()
    }

    #[test]
    fn detection() {
        assert_eq!(ConfigKind::detect(&setupos_json()), Ok(ConfigKind::SetupOS));
        assert_eq!(ConfigKind::detect(&hostos_json()), Ok(ConfigKind::HostOS));
        assert_eq!(ConfigKind::detect(&guestos_json()), Ok(ConfigKind::GuestOS));
        for other in [json!({"config_version": "1.0.0"}), json!([1]), json!("x")] {
            let problem = ConfigKind::detect(&other).unwrap_err();
            assert_eq!(problem.rule, Rule::UnknownKind);
            assert_eq!(problem.path, "");
        }
        assert_eq!("GuestOS".parse(), Ok(ConfigKind::GuestOS));
        assert!("replica".parse::<ConfigKind>().is_err());
        assert_eq!(ConfigKind::HostOS.to_string(), "HostOS");
    }

    #[test]
    fn parse_any_picks_the_type() {
        for (value, kind) in [
            (setupos_json(), ConfigKind::SetupOS),
            (hostos_json(), ConfigKind::HostOS),
            (guestos_json(), ConfigKind::GuestOS),
        ] {
            let config = parse_any(&value.to_string()).unwrap();
            assert_eq!(config.kind(), kind);
            assert_eq!(config.config_version(), "1.17.0");
            assert!(config.validate().is_empty(), "{:?}", config.validate());
        }
    }

    #[test]
    fn type_errors_name_the_member() {
        let mut value = hostos_json();
        value["network_settings"]["ipv6_config"]["Deterministic"]["prefix_length"] = json!("64");
        let problem = problem_of::<HostOSConfig>(&value);
        assert_eq!(
            problem.path,
            "network_settings.ipv6_config.Deterministic.prefix_length"
        );
        assert!(matches!(problem.rule, Rule::Json(ref m) if m.contains("invalid type")));

        let mut value = hostos_json();
        value["icos_settings"]["nns_urls"] = json!(["https://icp-api.io", "not a url"]);
        assert_eq!(
            problem_of::<HostOSConfig>(&value).path,
            "icos_settings.nns_urls[1]"
        );

        let mut value = hostos_json();
        value["icos_settings"]["mgmt_mac"] = json!("00:11:22");
        let problem = problem_of::<HostOSConfig>(&value);
        assert_eq!(problem.path, "icos_settings.mgmt_mac");
        assert!(problem.to_string().contains("invalid MAC address"));

        let mut value = hostos_json();
        value["icos_settings"]["deployment_environment"] = json!("devnet");
        assert_eq!(
            problem_of::<HostOSConfig>(&value).path,
            "icos_settings.deployment_environment"
        );

        let mut value = guestos_json();
        value["upgrade_config"] = json!({"peer_guest_vm_address": "10.0.0.1"});
        assert_eq!(
            problem_of::<GuestOSConfig>(&value).path,
            "upgrade_config.peer_guest_vm_address"
        );
    }

    #[test]
    fn missing_members_are_named() {
        let mut value = hostos_json();
        value["icos_settings"]
            .as_object_mut()
            .unwrap()
            .remove("mgmt_mac");
        let problem = problem_of::<HostOSConfig>(&value);
        assert_eq!(problem.path, "icos_settings.mgmt_mac");
        assert_eq!(
            problem.to_string(),
            "icos_settings.mgmt_mac: missing field `mgmt_mac`"
        );

        let mut value = hostos_json();
        value.as_object_mut().unwrap().remove("config_version");
        assert_eq!(problem_of::<HostOSConfig>(&value).path, "config_version");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let problems = parse_any("{\"config_version\": \"1.17.0\",\n  oops}").unwrap_err();
        assert!(problems.to_string().contains("line 2"), "{problems}");
        let problems = parse_any(&format!("{} trailing", hostos_json())).unwrap_err();
        assert!(
            problems.to_string().contains("trailing characters"),
            "{problems}"
        );
    }

    #[test]
    fn save_writes_pretty_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let config: HostOSConfig = from_json_value(&hostos_json()).unwrap();
        save(&path, &config).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"config_version\": \"1.17.0\",\n  \"network_settings\""));
        assert!(!text.ends_with('\n'));
        let loaded: HostOSConfig = load(&path).unwrap();
        assert_eq!(loaded, config);
        let any = check_file(&path).unwrap();
        assert_eq!(any, AnyConfig::HostOS(config));

        let err = save(&dir.path().join("no/such/dir/config.json"), &any).unwrap_err();
        assert!(!err.is_invalid_input());
    }
}
