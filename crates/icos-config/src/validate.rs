//! Validation: every rule is checked and every problem is reported, each
//! with the JSON path of the member that broke it.
//!
//! The `check_*` functions test single values and can be used on their own
//! (for example while reading `config.ini`); the `validate_*` functions walk
//! a config and collect all problems.

use std::net::Ipv6Addr;

use serde_json::Value;
use url::Url;

use crate::CONFIG_VERSION;
use crate::problem::{Problem, Rule};
use crate::types::{
    GuestOSConfig, HostOSConfig, HostOSSettings, ICOSSettings, Ipv6Config, NetworkSettings,
    SetupOSConfig,
};

/// A `MAJOR.MINOR.PATCH` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigVersion {
    /// Incompatible changes.
    pub major: u64,
    /// Compatible additions.
    pub minor: u64,
    /// Fixes.
    pub patch: u64,
}

impl ConfigVersion {
    /// Parses `MAJOR.MINOR.PATCH`: three decimal numbers without leading
    /// zeros, signs, pre-release or build suffixes.
    pub fn parse(text: &str) -> Option<ConfigVersion> {
        let mut parts = text.split('.');
        let mut number = || {
            let part = parts.next()?;
            let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            if !digits_only || (part.len() > 1 && part.starts_with('0')) {
                return None;
            }
            part.parse::<u64>().ok()
        };
        let version = ConfigVersion {
            major: number()?,
            minor: number()?,
            patch: number()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(version)
    }

    /// The version this crate writes, [`CONFIG_VERSION`].
    pub fn current() -> ConfigVersion {
        ConfigVersion::parse(CONFIG_VERSION).unwrap_or(ConfigVersion {
            major: 1,
            minor: 0,
            patch: 0,
        })
    }
}

/// Checks `config_version`: a `MAJOR.MINOR.PATCH` version whose major is not
/// newer than that of [`CONFIG_VERSION`] (a newer minor is fine).
pub fn check_config_version(text: &str) -> Result<ConfigVersion, Rule> {
    let version =
        ConfigVersion::parse(text).ok_or_else(|| Rule::VersionSyntax(text.to_string()))?;
    if version.major > ConfigVersion::current().major {
        return Err(Rule::VersionMajorTooNew {
            found: text.to_string(),
            supported: CONFIG_VERSION,
        });
    }
    Ok(version)
}

/// Checks a deterministic IPv6 prefix: at most 19 characters, and it must
/// parse as an IPv6 address with `::` appended (as IC-OS checks it).
pub fn check_ipv6_prefix(prefix: &str) -> Result<(), Rule> {
    if prefix.len() > 19 {
        return Err(Rule::PrefixTooLong(prefix.to_string()));
    }
    format!("{prefix}::")
        .parse::<Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| Rule::PrefixSyntax(prefix.to_string()))
}

/// Checks a fixed IPv6 address: `<ipv6>/<len>` with `len` at most 128.
pub fn check_fixed_address(address: &str) -> Result<(Ipv6Addr, u8), Rule> {
    let bad = || Rule::FixedAddress(address.to_string());
    let (ip, len) = address.split_once('/').ok_or_else(bad)?;
    let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 128 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// Checks an IPv4 prefix length: at most 32.
pub fn check_ipv4_prefix_length(prefix_length: u8) -> Result<(), Rule> {
    if prefix_length > 32 {
        return Err(Rule::Ipv4PrefixLength(prefix_length));
    }
    Ok(())
}

/// Checks a node reward type against `^type[0-9]+(\.[0-9])?$`.
pub fn check_node_reward_type(text: &str) -> Result<(), Rule> {
    let bad = || Rule::NodeRewardType(text.to_string());
    let rest = text.strip_prefix("type").ok_or_else(bad)?;
    let (number, fraction) = match rest.split_once('.') {
        Some((number, fraction)) => (number, Some(fraction)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number) {
        return Err(bad());
    }
    if let Some(fraction) = fraction
        && !(fraction.len() == 1 && digits(fraction))
    {
        return Err(bad());
    }
    Ok(())
}

/// Checks a domain name: at least two dot-separated labels, each 1 to 63
/// characters of `A-Z`, `a-z`, `0-9` and `-`, not starting or ending with a
/// hyphen; at most 253 characters in all.
pub fn check_domain_name(name: &str) -> Result<(), Rule> {
    let bad = |reason: String| Rule::DomainName {
        name: name.to_string(),
        reason,
    };
    if name.len() > 253 {
        return Err(bad("longer than 253 characters".to_string()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(bad(
            "it needs at least two labels, like example.com".to_string()
        ));
    }
    for label in labels {
        if label.is_empty() {
            return Err(bad("it has an empty label".to_string()));
        }
        if label.len() > 63 {
            return Err(bad(format!("label '{label}' is longer than 63 characters")));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(format!(
                "label '{label}' has characters other than letters, digits and '-'"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad(format!("label '{label}' starts or ends with '-'")));
        }
    }
    Ok(())
}

/// Checks an NNS URL: the scheme must be http or https.
pub fn check_nns_url(url: &Url) -> Result<(), Rule> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(Rule::NnsUrlScheme(url.to_string())),
    }
}

/// Checks a VM CPU model: `kvm` or `qemu`.
pub fn check_vm_cpu(cpu: &str) -> Result<(), Rule> {
    match cpu {
        "kvm" | "qemu" => Ok(()),
        _ => Err(Rule::VmCpu(cpu.to_string())),
    }
}

/// Collects problems under a path prefix.
struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn new() -> Self {
        Collector {
            problems: Vec::new(),
        }
    }

    fn check(&mut self, path: impl Into<String>, result: Result<impl Sized, Rule>) {
        if let Err(rule) = result {
            self.problems.push(Problem::new(path, rule));
        }
    }

    fn push(&mut self, path: impl Into<String>, rule: Rule) {
        self.problems.push(Problem::new(path, rule));
    }

    fn extend_under(&mut self, prefix: &str, problems: Vec<Problem>) {
        for mut problem in problems {
            problem.path = join(prefix, &problem.path);
            self.problems.push(problem);
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Validates `network_settings` (paths relative to it).
pub fn validate_network_settings(settings: &NetworkSettings) -> Vec<Problem> {
    let mut c = Collector::new();
    match &settings.ipv6_config {
        Ipv6Config::Deterministic(d) => {
            c.check(
                "ipv6_config.Deterministic.prefix",
                check_ipv6_prefix(&d.prefix),
            );
            if d.prefix_length != 64 {
                c.push(
                    "ipv6_config.Deterministic.prefix_length",
                    Rule::PrefixLength(d.prefix_length),
                );
            }
        }
        Ipv6Config::Fixed(f) => {
            c.check("ipv6_config.Fixed.address", check_fixed_address(&f.address));
        }
        Ipv6Config::RouterAdvertisement | Ipv6Config::Unknown(_) => {}
    }
    if let Some(ipv4) = &settings.ipv4_config {
        c.check(
            "ipv4_config.prefix_length",
            check_ipv4_prefix_length(ipv4.prefix_length),
        );
    }
    if let Some(domain) = &settings.domain_name {
        c.check("domain_name", check_domain_name(domain));
    }
    c.problems
}

/// Validates `icos_settings` (paths relative to it).
pub fn validate_icos_settings(settings: &ICOSSettings) -> Vec<Problem> {
    let mut c = Collector::new();
    if let Some(reward) = settings.node_reward_type.as_deref()
        && !reward.is_empty()
    {
        c.check("node_reward_type", check_node_reward_type(reward));
    }
    if settings.nns_urls.is_empty() {
        c.push("nns_urls", Rule::NnsUrlsEmpty);
    }
    for (i, url) in settings.nns_urls.iter().enumerate() {
        c.check(format!("nns_urls[{i}]"), check_nns_url(url));
    }
    c.problems
}

/// Validates `hostos_settings` (paths relative to it): the VM resources of
/// `hostos_dev_settings`, or of the legacy flat `vm_*` members when that is
/// absent.
pub fn validate_hostos_settings(settings: &HostOSSettings) -> Vec<Problem> {
    let mut c = Collector::new();
    if let Some(dev) = &settings.hostos_dev_settings {
        c.check("hostos_dev_settings.vm_cpu", check_vm_cpu(&dev.vm_cpu));
        if dev.vm_memory == 0 {
            c.push(
                "hostos_dev_settings.vm_memory",
                Rule::NotPositive("vm_memory"),
            );
        }
        if dev.vm_nr_of_vcpus == 0 {
            c.push(
                "hostos_dev_settings.vm_nr_of_vcpus",
                Rule::NotPositive("vm_nr_of_vcpus"),
            );
        }
    } else {
        if let Some(cpu) = settings.extra.get("vm_cpu") {
            let rule = match cpu {
                Value::String(cpu) => check_vm_cpu(cpu),
                other => Err(Rule::VmCpu(other.to_string())),
            };
            c.check("vm_cpu", rule);
        }
        for key in ["vm_memory", "vm_nr_of_vcpus"] {
            if let Some(value) = settings.extra.get(key) {
                let positive = value
                    .as_u64()
                    .is_some_and(|n| n > 0 && u32::try_from(n).is_ok());
                if !positive {
                    c.push(key, Rule::NotPositive(key));
                }
            }
        }
    }
    c.problems
}

fn validate_common(
    c: &mut Collector,
    version: &str,
    network: &NetworkSettings,
    icos: &ICOSSettings,
) {
    c.check("config_version", check_config_version(version));
    c.extend_under("network_settings", validate_network_settings(network));
    c.extend_under("icos_settings", validate_icos_settings(icos));
}

/// The checks shared by the SetupOS and HostOS configs, which differ only
/// in SetupOS's (empty) `setupos_settings`.
fn validate_host_side(
    version: &str,
    network: &NetworkSettings,
    icos: &ICOSSettings,
    hostos: &HostOSSettings,
) -> Vec<Problem> {
    let mut c = Collector::new();
    validate_common(&mut c, version, network, icos);
    c.extend_under("hostos_settings", validate_hostos_settings(hostos));
    c.problems
}

/// Validates a SetupOS config; returns every problem found.
pub fn validate_setupos(config: &SetupOSConfig) -> Vec<Problem> {
    validate_host_side(
        &config.config_version,
        &config.network_settings,
        &config.icos_settings,
        &config.hostos_settings,
    )
}

/// Validates a HostOS config; returns every problem found.
pub fn validate_hostos(config: &HostOSConfig) -> Vec<Problem> {
    validate_host_side(
        &config.config_version,
        &config.network_settings,
        &config.icos_settings,
        &config.hostos_settings,
    )
}

/// Validates a GuestOS config; returns every problem found.
pub fn validate_guestos(config: &GuestOSConfig) -> Vec<Problem> {
    let mut c = Collector::new();
    validate_common(
        &mut c,
        &config.config_version,
        &config.network_settings,
        &config.icos_settings,
    );
    if config.icos_settings.enable_trusted_execution_environment
        && config.trusted_execution_environment_config.is_none()
    {
        c.push(
            "trusted_execution_environment_config",
            Rule::TeeConfigMissing,
        );
    }
    c.problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problems;
    use crate::test_support::{guestos_json, hostos_json, setupos_json};
    use crate::{ConfigDocument, from_json_value};
    use serde_json::{Value, json};

    /// The problems of a HostOS config after `change` is applied to a valid one.
    fn host_problems(change: impl FnOnce(&mut Value)) -> Vec<Problem> {
        let mut value = hostos_json();
        change(&mut value);
        from_json_value::<HostOSConfig>(&value).unwrap().validate()
    }

    /// Asserts that exactly one problem is found, at `path`, and returns its rule.
    fn only_problem(problems: Vec<Problem>, path: &str) -> Rule {
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, path);
        problems[0].rule.clone()
    }

    #[test]
    fn valid_configs_have_no_problems() {
        assert!(host_problems(|_| {}).is_empty());
        let setup = from_json_value::<SetupOSConfig>(&setupos_json()).unwrap();
        assert!(setup.validate().is_empty());
        let guest = from_json_value::<GuestOSConfig>(&guestos_json()).unwrap();
        assert!(guest.validate().is_empty());
    }

    #[test]
    fn config_version_rule() {
        for good in ["1.17.0", "1.99.0", "0.1.0", "1.0.10"] {
            assert!(check_config_version(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1.17",
            "1.17.0.1",
            "v1.17.0",
            "1.017.0",
            "1.17.0-rc1",
            "1.x.0",
        ] {
            assert_eq!(
                check_config_version(bad),
                Err(Rule::VersionSyntax(bad.to_string())),
                "{bad}"
            );
        }
        assert!(matches!(
            check_config_version("2.0.0"),
            Err(Rule::VersionMajorTooNew { .. })
        ));
        let rule = only_problem(
            host_problems(|v| v["config_version"] = json!("1.2")),
            "config_version",
        );
        assert_eq!(rule, Rule::VersionSyntax("1.2".to_string()));
    }

    #[test]
    fn deterministic_prefix_rules() {
        let path = "network_settings.ipv6_config.Deterministic.prefix";
        let set = |prefix: &str| {
            let prefix = prefix.to_string();
            host_problems(move |v| {
                v["network_settings"]["ipv6_config"]["Deterministic"]["prefix"] = json!(prefix)
            })
        };
        assert!(set("2602:FFE4:801:17").is_empty());
        assert!(set("2a00:fb01:400:200").is_empty());
        assert_eq!(
            only_problem(set("2a00:fb01:0400:0200:"), path),
            Rule::PrefixTooLong("2a00:fb01:0400:0200:".to_string())
        );
        assert_eq!(
            only_problem(set("2a00:zz01"), path),
            Rule::PrefixSyntax("2a00:zz01".to_string())
        );
        assert_eq!(
            only_problem(
                host_problems(|v| {
                    v["network_settings"]["ipv6_config"]["Deterministic"]["prefix_length"] =
                        json!(48)
                }),
                "network_settings.ipv6_config.Deterministic.prefix_length"
            ),
            Rule::PrefixLength(48)
        );
    }

    #[test]
    fn fixed_address_rule() {
        assert_eq!(
            check_fixed_address("2001:db8::1/64"),
            Ok(("2001:db8::1".parse().unwrap(), 64))
        );
        assert!(check_fixed_address("::/0").is_ok());
        assert!(check_fixed_address("::1/128").is_ok());
        for bad in [
            "2001:db8::1",
            "2001:db8::1/129",
            "2001:db8::1/",
            "2001:db8::1/+64",
            "2001:db8::1/64/64",
            "10.0.0.1/24",
            "nonsense/64",
        ] {
            assert_eq!(
                check_fixed_address(bad),
                Err(Rule::FixedAddress(bad.to_string())),
                "{bad}"
            );
        }
        let problems = host_problems(|v| {
            v["network_settings"]["ipv6_config"] =
                json!({"Fixed": {"address": "2001:db8::1/200", "gateway": "2001:db8::1"}})
        });
        only_problem(problems, "network_settings.ipv6_config.Fixed.address");
    }

    #[test]
    fn ipv4_prefix_length_rule() {
        let problems = host_problems(|v| {
            v["network_settings"]["ipv4_config"] =
                json!({"address": "10.0.0.2", "gateway": "10.0.0.1", "prefix_length": 33})
        });
        assert_eq!(
            only_problem(problems, "network_settings.ipv4_config.prefix_length"),
            Rule::Ipv4PrefixLength(33)
        );
        assert!(check_ipv4_prefix_length(32).is_ok());
    }

    #[test]
    fn node_reward_type_rule() {
        for good in ["type0", "type1", "type3.1", "type12", "type12.9"] {
            assert!(check_node_reward_type(good).is_ok(), "{good}");
        }
        for bad in [
            "type",
            "type3.",
            "type3.12",
            "type3.x",
            "Type3",
            "typex",
            "type3.1.1",
            "type-1",
            " type3",
            "type3 ",
            "type3\n",
        ] {
            assert!(check_node_reward_type(bad).is_err(), "{bad:?}");
        }
        let problems = host_problems(|v| v["icos_settings"]["node_reward_type"] = json!("gen3"));
        assert_eq!(
            only_problem(problems, "icos_settings.node_reward_type"),
            Rule::NodeRewardType("gen3".to_string())
        );
        // Empty means "not set".
        assert!(host_problems(|v| v["icos_settings"]["node_reward_type"] = json!("")).is_empty());
    }

    #[test]
    fn domain_name_rule() {
        for good in ["ic.test", "a-b.example.org", "123.com", "X.Y"] {
            assert!(check_domain_name(good).is_ok(), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        for bad in [
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            "example.com.",
            ".example.com",
            "ex ample.com",
            "exämple.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(
                matches!(check_domain_name(bad), Err(Rule::DomainName { .. })),
                "{bad}"
            );
        }
        assert!(check_domain_name(&format!("{}.com", "a".repeat(63))).is_ok());
        let problems = host_problems(|v| v["network_settings"]["domain_name"] = json!("-x.org"));
        only_problem(problems, "network_settings.domain_name");
    }

    #[test]
    fn nns_url_rules() {
        let problems = host_problems(|v| v["icos_settings"]["nns_urls"] = json!([]));
        assert_eq!(
            only_problem(problems, "icos_settings.nns_urls"),
            Rule::NnsUrlsEmpty
        );
        let problems = host_problems(|v| {
            v["icos_settings"]["nns_urls"] = json!(["http://[2001:db8::1]:8080/", "ftp://x.org/"])
        });
        assert_eq!(
            only_problem(problems, "icos_settings.nns_urls[1]"),
            Rule::NnsUrlScheme("ftp://x.org/".to_string())
        );
    }

    #[test]
    fn tee_needs_its_config_in_guestos() {
        let mut value = guestos_json();
        value["icos_settings"]["enable_trusted_execution_environment"] = json!(true);
        let config: GuestOSConfig = from_json_value(&value).unwrap();
        assert_eq!(
            only_problem(config.validate(), "trusted_execution_environment_config"),
            Rule::TeeConfigMissing
        );
        value["trusted_execution_environment_config"] = json!({"sev_cert_chain_pem": "pem"});
        let config: GuestOSConfig = from_json_value(&value).unwrap();
        assert!(config.validate().is_empty());
        // HostOS gets the chain from the hardware; no rule there.
        assert!(
            host_problems(|v| {
                v["icos_settings"]["enable_trusted_execution_environment"] = json!(true)
            })
            .is_empty()
        );
    }

    #[test]
    fn vm_resource_rules() {
        let dev = "hostos_settings.hostos_dev_settings";
        let problems = host_problems(|v| {
            v["hostos_settings"]["hostos_dev_settings"] =
                json!({"vm_memory": 0, "vm_cpu": "tcg", "vm_nr_of_vcpus": 0})
        });
        let found: Vec<(String, Rule)> = problems.into_iter().map(|p| (p.path, p.rule)).collect();
        assert_eq!(
            found,
            vec![
                (format!("{dev}.vm_cpu"), Rule::VmCpu("tcg".to_string())),
                (format!("{dev}.vm_memory"), Rule::NotPositive("vm_memory")),
                (
                    format!("{dev}.vm_nr_of_vcpus"),
                    Rule::NotPositive("vm_nr_of_vcpus")
                ),
            ]
        );
        assert!(
            host_problems(|v| v["hostos_settings"]["hostos_dev_settings"]["vm_cpu"] = json!("qemu"))
                .is_empty()
        );
        // The legacy flat members are checked when they are in effect.
        let problems = host_problems(|v| {
            v["hostos_settings"] =
                json!({"vm_memory": "4096", "vm_cpu": 1, "vm_nr_of_vcpus": 8, "verbose": false})
        });
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["hostos_settings.vm_cpu", "hostos_settings.vm_memory"]
        );
        assert!(
            host_problems(|v| {
                v["hostos_settings"] = json!({"vm_memory": 4096, "vm_cpu": "kvm", "verbose": true})
            })
            .is_empty()
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut value = setupos_json();
        value["config_version"] = json!("one");
        value["network_settings"]["ipv6_config"]["Deterministic"]["prefix"] = json!("nope");
        value["network_settings"]["ipv6_config"]["Deterministic"]["prefix_length"] = json!(56);
        value["network_settings"]["domain_name"] = json!("host");
        value["icos_settings"]["node_reward_type"] = json!("type1.23");
        value["icos_settings"]["nns_urls"] = json!([]);
        value["hostos_settings"]["hostos_dev_settings"]["vm_cpu"] = json!("xen");
        let config: SetupOSConfig = from_json_value(&value).unwrap();
        let problems = config.validate();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "config_version",
                "network_settings.ipv6_config.Deterministic.prefix",
                "network_settings.ipv6_config.Deterministic.prefix_length",
                "network_settings.domain_name",
                "icos_settings.node_reward_type",
                "icos_settings.nns_urls",
                "hostos_settings.hostos_dev_settings.vm_cpu",
            ]
        );
        let shown = Problems::new(problems)
            .with_file("/boot/config/config.json")
            .to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[0],
            "/boot/config/config.json: config_version: 'one' is not a version of the form \
             MAJOR.MINOR.PATCH"
        );
        assert_eq!(
            lines[5],
            "/boot/config/config.json: icos_settings.nns_urls: at least one NNS URL is required"
        );
    }

    #[test]
    fn unknown_variants_are_not_problems() {
        assert!(
            host_problems(|v| v["network_settings"]["ipv6_config"] = json!({"Dhcp6": {}}))
                .is_empty()
        );
        let mut value = guestos_json();
        value["guest_vm_type"] = json!("recovery");
        let config: GuestOSConfig = from_json_value(&value).unwrap();
        assert!(config.validate().is_empty());
    }
}
