//! `config.ini`: the node provider's network and node settings.
//!
//! | key | required | rule |
//! |-----|----------|------|
//! | `ipv6_prefix` | yes | at most 19 characters, and `PREFIX::` parses as an IPv6 address; the prefix length is always 64 |
//! | `ipv6_gateway` | yes | an IPv6 address |
//! | `ipv4_address`, `ipv4_gateway` | no | IPv4 addresses |
//! | `ipv4_prefix_length` | no | 0 to 32 |
//! | `domain` | only with IPv4 | at least two dot-separated labels of 1–63 characters from `A-Z a-z 0-9 -`, no label starting or ending with `-` |
//! | `verbose` | no | exactly `true` or `false` |
//! | `node_reward_type` | no | empty means unset, else matches `^type[0-9]+(\.[0-9])?$` |
//! | `enable_trusted_execution_environment` | no | exactly `true` or `false` |
//! | `enable_beta_registration_feature` | no | exactly `true` or `false` |
//!
//! The three IPv4 keys go together: all of them or none. A partial set is an
//! error here, where IC-OS only prints a warning and drops IPv4; a node
//! provider who wrote two of the three meant to configure IPv4.
//!
//! Empty values (`ipv4_address=`) break the rule of their key, except for
//! `node_reward_type`, where an empty value means "not set". Unknown keys
//! and repeated keys are warnings; for a repeated key the last value counts.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::ini::{self, quote};
use crate::problem::{Problem, Problems};

/// The length of the IPv6 prefix of every node's network; not configurable.
pub const IPV6_PREFIX_LENGTH: u8 = 64;

/// The longest accepted `ipv6_prefix` (four full groups: `1234:5678:9abc:def0`).
pub const MAX_IPV6_PREFIX_LEN: usize = 19;

/// Every key `config.ini` may hold.
pub const KNOWN_KEYS: [&str; 10] = [
    "ipv6_prefix",
    "ipv6_gateway",
    "ipv4_address",
    "ipv4_gateway",
    "ipv4_prefix_length",
    "domain",
    "verbose",
    "node_reward_type",
    "enable_trusted_execution_environment",
    "enable_beta_registration_feature",
];

const IPV4_KEYS: [&str; 3] = ["ipv4_address", "ipv4_gateway", "ipv4_prefix_length"];

/// The node's static IPv4 settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Settings {
    /// The node's address.
    pub address: Ipv4Addr,
    /// The default gateway.
    pub gateway: Ipv4Addr,
    /// The network's prefix length, 0 to 32.
    pub prefix_length: u8,
}

/// The settings of a valid `config.ini`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIni {
    /// The network part of the node's /64, as written (`2a00:fb01:400:44`).
    pub ipv6_prefix: String,
    /// The IPv6 gateway.
    pub ipv6_gateway: Ipv6Addr,
    /// Static IPv4 settings, when all three keys are given.
    pub ipv4: Option<Ipv4Settings>,
    /// The node's domain name.
    pub domain: Option<String>,
    /// Show GuestOS console logs on the host terminal.
    pub verbose: bool,
    /// The node reward type (`type3.1`).
    pub node_reward_type: Option<String>,
    /// Run the GuestOS as a trusted execution environment (SEV-SNP).
    pub enable_trusted_execution_environment: bool,
    /// The beta node registration flow (accepted; not part of the config).
    pub enable_beta_registration_feature: bool,
    /// Things that are allowed but suspicious: unknown or repeated keys.
    pub warnings: Vec<Problem>,
}

impl ConfigIni {
    /// The IPv6 prefix length: always 64.
    pub fn ipv6_prefix_length(&self) -> u8 {
        IPV6_PREFIX_LENGTH
    }
}

/// Parses and checks the text of a `config.ini`.
///
/// Returns the settings, or every problem in the text (malformed lines and
/// broken rules alike). Warnings are returned in [`ConfigIni::warnings`] and
/// not logged; [`load_config_ini`] logs them. Never panics.
pub fn parse_config_ini(text: &str) -> Result<ConfigIni, Problems> {
    parse_with_warnings(text).0
}

/// Parses and checks the text of a `config.ini`; the warnings are returned
/// beside the result, so that they are available when the text is invalid too.
fn parse_with_warnings(text: &str) -> (Result<ConfigIni, Problems>, Vec<Problem>) {
    let (entries, mut problems) = ini::read(text);
    let mut warnings = Vec::new();

    // Last value wins; remember where each key was first seen to warn on repeats.
    let mut values: Vec<(String, String, usize)> = Vec::new();
    for entry in entries {
        if !KNOWN_KEYS.contains(&entry.key.as_str()) {
            warnings.push(Problem::at(
                format!("line {}", entry.line),
                format!("unknown key '{}' is ignored", entry.key),
            ));
        }
        match values.iter_mut().find(|(k, _, _)| *k == entry.key) {
            Some(slot) => {
                warnings.push(Problem::at(
                    entry.key.clone(),
                    format!(
                        "set on line {} and again on line {}; the last value is used",
                        slot.2, entry.line
                    ),
                ));
                slot.1 = entry.value;
                slot.2 = entry.line;
            }
            None => values.push((entry.key, entry.value, entry.line)),
        }
    }
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    };

    let ipv6_prefix = match get("ipv6_prefix") {
        None => {
            problems.at(
                "ipv6_prefix",
                "missing; give the network part of the node's /64, e.g. ipv6_prefix=2a00:fb01:400:44",
            );
            None
        }
        Some(prefix) => check_ipv6_prefix(prefix, &mut problems).then(|| prefix.to_string()),
    };

    let ipv6_gateway = match get("ipv6_gateway") {
        None => {
            problems.at(
                "ipv6_gateway",
                "missing; give the IPv6 gateway, e.g. ipv6_gateway=2a00:fb01:400:44::1",
            );
            None
        }
        Some(text) => parse_ip::<Ipv6Addr>("ipv6_gateway", text, "IPv6", &mut problems),
    };

    let ipv4_address = get("ipv4_address")
        .and_then(|t| parse_ip::<Ipv4Addr>("ipv4_address", t, "IPv4", &mut problems));
    let ipv4_gateway = get("ipv4_gateway")
        .and_then(|t| parse_ip::<Ipv4Addr>("ipv4_gateway", t, "IPv4", &mut problems));
    let ipv4_prefix_length =
        get("ipv4_prefix_length").and_then(|t| parse_ipv4_prefix_length(t, &mut problems));

    let given: Vec<&str> = IPV4_KEYS.into_iter().filter(|k| get(k).is_some()).collect();
    if !given.is_empty() && given.len() < IPV4_KEYS.len() {
        for key in IPV4_KEYS.iter().filter(|k| !given.contains(k)) {
            problems.at(
                *key,
                format!(
                    "missing; ipv4_address, ipv4_gateway and ipv4_prefix_length go together \
                     and only {} {} set",
                    given.join(" and "),
                    if given.len() == 1 { "is" } else { "are" }
                ),
            );
        }
    }
    let ipv4 = match (ipv4_address, ipv4_gateway, ipv4_prefix_length) {
        (Some(address), Some(gateway), Some(prefix_length)) => Some(Ipv4Settings {
            address,
            gateway,
            prefix_length,
        }),
        _ => None,
    };

    let domain = match get("domain") {
        None => {
            if given.len() == IPV4_KEYS.len() {
                problems.at(
                    "domain",
                    "missing; a node with IPv4 needs a domain name, e.g. domain=node1.example.com",
                );
            }
            None
        }
        Some(domain) => check_domain(domain, &mut problems).then(|| domain.to_string()),
    };

    let verbose = parse_bool("verbose", get("verbose"), &mut problems);
    let enable_trusted_execution_environment = parse_bool(
        "enable_trusted_execution_environment",
        get("enable_trusted_execution_environment"),
        &mut problems,
    );
    let enable_beta_registration_feature = parse_bool(
        "enable_beta_registration_feature",
        get("enable_beta_registration_feature"),
        &mut problems,
    );

    // The reward type and the domain follow the rules of the config itself,
    // so that what passes here also passes the config's validation.
    let node_reward_type = match get("node_reward_type") {
        None | Some("") => None,
        Some(value) => match icos_config::check_node_reward_type(value) {
            Ok(()) => Some(value.to_string()),
            Err(rule) => {
                problems.at("node_reward_type", rule.to_string());
                None
            }
        },
    };

    let result = match (ipv6_prefix, ipv6_gateway) {
        (Some(ipv6_prefix), Some(ipv6_gateway)) if problems.is_empty() => Ok(ConfigIni {
            ipv6_prefix,
            ipv6_gateway,
            ipv4,
            domain,
            verbose,
            node_reward_type,
            enable_trusted_execution_environment,
            enable_beta_registration_feature,
            warnings: warnings.clone(),
        }),
        _ => Err(problems),
    };
    (result, warnings)
}

/// Reads, parses and checks the `config.ini` at `path`.
///
/// Every problem names `path`. Warnings name `path` too; they are logged
/// with `tracing::warn!` (also when the file is invalid, as an unknown key
/// is often a misspelt one) and kept in [`ConfigIni::warnings`].
pub fn load_config_ini(path: &Path) -> Result<ConfigIni, Problems> {
    let text = crate::read_text(path)?;
    let (result, warnings) = parse_with_warnings(&text);
    let warnings: Vec<Problem> = warnings.into_iter().map(|w| w.in_file(path)).collect();
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let mut config = result.map_err(|p| p.in_file(path))?;
    config.warnings = warnings;
    Ok(config)
}

/// Hints appended when a value looks like it carries an inline comment.
fn comment_hint(value: &str) -> &'static str {
    if value.contains('#') || value.contains(';') {
        " (comments must be on a line of their own)"
    } else {
        ""
    }
}

fn check_ipv6_prefix(prefix: &str, problems: &mut Problems) -> bool {
    let mut ok = true;
    if prefix.is_empty() {
        problems.at(
            "ipv6_prefix",
            "is empty; give e.g. ipv6_prefix=2a00:fb01:400:44",
        );
        return false;
    }
    if prefix.len() > MAX_IPV6_PREFIX_LEN {
        problems.at(
            "ipv6_prefix",
            format!(
                "{} is longer than {MAX_IPV6_PREFIX_LEN} characters{}",
                quote(prefix),
                comment_hint(prefix)
            ),
        );
        ok = false;
    }
    if format!("{prefix}::").parse::<Ipv6Addr>().is_err() {
        problems.at(
            "ipv6_prefix",
            format!(
                "{} is not the network part of an IPv6 /64: '{prefix}::' must be an IPv6 address \
                 (write up to four groups without '::', e.g. 2a00:fb01:400:44){}",
                quote(prefix),
                comment_hint(prefix)
            ),
        );
        ok = false;
    }
    ok
}

fn parse_ip<T: std::str::FromStr>(
    key: &str,
    text: &str,
    family: &str,
    problems: &mut Problems,
) -> Option<T> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.at(
                key,
                format!(
                    "{} is not an {family} address{}",
                    quote(text),
                    comment_hint(text)
                ),
            );
            None
        }
    }
}

fn parse_ipv4_prefix_length(text: &str, problems: &mut Problems) -> Option<u8> {
    match text.parse::<u8>() {
        Ok(n) if n <= 32 => Some(n),
        _ => {
            let slash = if text.starts_with('/') {
                " (write it without the '/')"
            } else {
                ""
            };
            problems.at(
                "ipv4_prefix_length",
                format!("{} is not a prefix length from 0 to 32{slash}", quote(text)),
            );
            None
        }
    }
}

fn parse_bool(key: &str, value: Option<&str>, problems: &mut Problems) -> bool {
    match value {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            problems.at(
                key,
                format!("{} is neither 'true' nor 'false'", quote(other)),
            );
            false
        }
    }
}

fn check_domain(domain: &str, problems: &mut Problems) -> bool {
    match icos_config::check_domain_name(domain) {
        Ok(()) => true,
        Err(rule) => {
            problems.at("domain", format!("{rule}{}", comment_hint(domain)));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "ipv6_prefix=2a00:fb01:400:44\nipv6_gateway=2a00:fb01:400:44::1\n";

    fn ok(text: &str) -> ConfigIni {
        match parse_config_ini(text) {
            Ok(c) => c,
            Err(p) => panic!("expected success, got {p}"),
        }
    }

    /// Parses BASE plus `extra` and expects exactly one problem, at `key`.
    fn fails_alone(extra: &str, key: &str) -> Problem {
        fails_alone_in(&format!("{BASE}{extra}\n"), key)
    }

    fn fails_alone_in(text: &str, key: &str) -> Problem {
        let problems = parse_config_ini(text).expect_err(text);
        assert_eq!(problems.len(), 1, "{text:?}: {problems}");
        let p = problems.iter().next().cloned().unwrap();
        assert_eq!(p.key.as_deref(), Some(key), "{text:?}: {p}");
        p
    }

    #[test]
    fn ic_template_parses() {
        let text = include_str!("../tests/fixtures/config.ini");
        let c = ok(text);
        assert_eq!(c.ipv6_prefix, "2a00:fb01:400:44");
        assert_eq!(
            c.ipv6_gateway,
            "2a00:fb01:400:44::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(c.ipv6_prefix_length(), 64);
        assert_eq!(c.ipv4, None);
        assert_eq!(c.domain, None);
        assert!(!c.verbose);
        assert_eq!(c.node_reward_type, None);
        assert!(!c.enable_trusted_execution_environment);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn ic_template_with_everything_uncommented_parses() {
        let text = include_str!("../tests/fixtures/config.ini");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains('=') && !rest.contains(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = ok(&uncommented);
        assert_eq!(
            c.ipv4,
            Some(Ipv4Settings {
                address: "212.71.124.178".parse().unwrap(),
                gateway: "212.71.124.177".parse().unwrap(),
                prefix_length: 28,
            })
        );
        assert_eq!(c.domain.as_deref(), Some("node1.example.com"));
        assert_eq!(c.node_reward_type.as_deref(), Some("type3.1"));
        assert!(c.verbose);
        assert!(c.enable_trusted_execution_environment);
        assert!(c.enable_beta_registration_feature);
    }

    #[test]
    fn full_config() {
        let c = ok(&format!(
            "{BASE}ipv4_address=212.71.124.178\nipv4_gateway=212.71.124.177\n\
             ipv4_prefix_length=28\ndomain=node-1.Example.com\nverbose=false\n\
             node_reward_type=type1\nenable_trusted_execution_environment=false\n"
        ));
        assert_eq!(c.ipv4.map(|v| v.prefix_length), Some(28));
        assert_eq!(c.domain.as_deref(), Some("node-1.Example.com"));
        assert_eq!(c.node_reward_type.as_deref(), Some("type1"));
    }

    #[test]
    fn crlf_sections_and_upper_case_keys() {
        let c = ok("[Network]\r\nIPV6_PREFIX = 2a00:fb01:400:44\r\n[gw]\r\n\
                    Ipv6_Gateway=2a00:fb01:400:44::1\r\nVerbose=true\r\n");
        assert_eq!(c.ipv6_prefix, "2a00:fb01:400:44");
        assert!(c.verbose);
    }

    #[test]
    fn missing_required_keys() {
        fails_alone_in("ipv6_gateway=2a00:fb01:400:44::1\n", "ipv6_prefix");
        fails_alone_in("ipv6_prefix=2a00:fb01:400:44\n", "ipv6_gateway");
        let both = parse_config_ini("").unwrap_err();
        assert!(
            both.has_key("ipv6_prefix") && both.has_key("ipv6_gateway"),
            "{both}"
        );
    }

    #[test]
    fn ipv6_prefix_rules() {
        for good in [
            "2a00:1111:1111:1111",
            "2a00:111:11:11",
            "2602:fb2b:100:10",
            "2001:db8",
        ] {
            let text = format!("ipv6_prefix={good}\nipv6_gateway=2001:db8::1\n");
            assert_eq!(ok(&text).ipv6_prefix, good);
        }
        let p = fails_alone_in(
            "ipv6_prefix=2a00:fb01:400:44:1234\nipv6_gateway=2001:db8::1\n",
            "ipv6_prefix",
        );
        assert_eq!(
            p.message,
            "'2a00:fb01:400:44:1234' is longer than 19 characters"
        );
        for bad in [
            "abcd::1234",
            "2a00:1111:1111:111:",
            "invalid_prefix",
            "2a04:9dc0:0:108::",
            "",
        ] {
            let text = format!("ipv6_prefix={bad}\nipv6_gateway=2001:db8::1\n");
            fails_alone_in(&text, "ipv6_prefix");
        }
        // Too long and not an address: both rules are reported.
        let text = "ipv6_prefix=2a00:1:1:1:1:1:1:1:1\nipv6_gateway=2001:db8::1\n";
        assert_eq!(parse_config_ini(text).unwrap_err().len(), 2);
    }

    #[test]
    fn inline_comment_is_part_of_the_value() {
        let text = "ipv6_prefix=2a00:fb01:400:44 # mine\nipv6_gateway=2001:db8::1\n";
        let p = parse_config_ini(text).unwrap_err();
        assert!(
            p.to_string()
                .contains("comments must be on a line of their own"),
            "{p}"
        );
    }

    #[test]
    fn ipv6_gateway_rule() {
        let text = "ipv6_prefix=2a00:fb01:400:44\nipv6_gateway=10.0.0.1\n";
        let p = fails_alone_in(text, "ipv6_gateway");
        assert!(p.message.contains("not an IPv6 address"), "{p}");
    }

    #[test]
    fn ipv4_values() {
        let triple = |a: &str, g: &str, l: &str| {
            format!("ipv4_address={a}\nipv4_gateway={g}\nipv4_prefix_length={l}\ndomain=a.b")
        };
        fails_alone(&triple("212.71.124.300", "1.2.3.4", "28"), "ipv4_address");
        fails_alone(&triple("1.2.3.4", "gateway", "28"), "ipv4_gateway");
        fails_alone(&triple("1.2.3.4", "1.2.3.1", "33"), "ipv4_prefix_length");
        fails_alone(&triple("1.2.3.4", "1.2.3.1", "-1"), "ipv4_prefix_length");
        let p = fails_alone(&triple("1.2.3.4", "1.2.3.1", "/28"), "ipv4_prefix_length");
        assert!(p.message.contains("without the '/'"), "{p}");
        assert_eq!(
            ok(&format!("{BASE}{}", triple("1.2.3.4", "1.2.3.1", "0")))
                .ipv4
                .map(|v| v.prefix_length),
            Some(0)
        );
        assert_eq!(
            ok(&format!("{BASE}{}", triple("1.2.3.4", "1.2.3.1", "32")))
                .ipv4
                .map(|v| v.prefix_length),
            Some(32)
        );
    }

    #[test]
    fn partial_ipv4_is_an_error_naming_the_missing_keys() {
        let problems = parse_config_ini(&format!(
            "{BASE}ipv4_address=1.2.3.4\nipv4_gateway=1.2.3.1\n"
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems}");
        assert!(problems.has_key("ipv4_prefix_length"), "{problems}");
        let problems = parse_config_ini(&format!("{BASE}ipv4_gateway=1.2.3.1\n")).unwrap_err();
        assert!(problems.has_key("ipv4_address") && problems.has_key("ipv4_prefix_length"));
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn domain_rules() {
        let ipv4 = "ipv4_address=1.2.3.4\nipv4_gateway=1.2.3.1\nipv4_prefix_length=24\n";
        fails_alone(ipv4, "domain");
        for bad in [
            "localhost",
            "-a.example.com",
            "a-.example.com",
            "a..com",
            "a_b.com",
            "ex ample.com",
            &format!("{}.com", "a".repeat(64)),
            "",
        ] {
            fails_alone(&format!("domain={bad}"), "domain");
        }
        for good in [
            "a.b",
            "node1.example.com",
            &format!("{}.com", "a".repeat(63)),
            "1-2.x-y.z",
        ] {
            assert_eq!(
                ok(&format!("{BASE}domain={good}\n")).domain.as_deref(),
                Some(good)
            );
        }
    }

    #[test]
    fn bools_must_be_exactly_true_or_false() {
        for key in [
            "verbose",
            "enable_trusted_execution_environment",
            "enable_beta_registration_feature",
        ] {
            for bad in ["yes", "True", "1", ""] {
                fails_alone(&format!("{key}={bad}"), key);
            }
        }
        assert!(ok(&format!("{BASE}verbose=true")).verbose);
        assert!(!ok(&format!("{BASE}verbose=false")).verbose);
    }

    #[test]
    fn node_reward_type_rules() {
        assert_eq!(
            ok(&format!("{BASE}node_reward_type=")).node_reward_type,
            None
        );
        for good in ["type0", "type3.1", "type12", "type1.0"] {
            let c = ok(&format!("{BASE}node_reward_type={good}"));
            assert_eq!(c.node_reward_type.as_deref(), Some(good));
        }
        for bad in ["type", "Type3", "type3.10", "type3.", "3.1", "type 3"] {
            fails_alone(&format!("node_reward_type={bad}"), "node_reward_type");
        }
    }

    #[test]
    fn unknown_and_repeated_keys_are_warnings() {
        let c = ok(&format!("{BASE}colour=blue\nverbose=true\nverbose=false\n"));
        assert!(!c.verbose, "the last value counts");
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].message.contains("unknown key 'colour'"));
        assert_eq!(c.warnings[1].key.as_deref(), Some("verbose"));
    }

    #[test]
    fn many_broken_rules_are_all_reported() {
        let text = "ipv6_prefix=2a00:fb01:400:44:1234\n\
                    ipv6_gateway=nope\n\
                    ipv4_address=1.2.3.4\n\
                    ipv4_gateway=1.2.3.1\n\
                    domain=-bad-\n\
                    verbose=yes\n\
                    node_reward_type=big\n\
                    enable_trusted_execution_environment=on\n\
                    not a key value line\n";
        let problems = parse_config_ini(text).unwrap_err();
        for key in [
            "ipv6_prefix",
            "ipv6_gateway",
            "ipv4_prefix_length",
            "domain",
            "verbose",
            "node_reward_type",
            "enable_trusted_execution_environment",
            "line 9",
        ] {
            assert!(problems.has_key(key), "{key} missing from {problems}");
        }
        assert_eq!(problems.len(), 8, "{problems}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ini");
        std::fs::write(
            &path,
            "ipv6_prefix=2a00:fb01:400:44:1234\nipv6_gateway=::1\nx=1\n",
        )
        .unwrap();
        let text = load_config_ini(&path).unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "{}: ipv6_prefix: '2a00:fb01:400:44:1234' is longer than 19 characters",
                path.display()
            )
        );
        let missing = load_config_ini(&dir.path().join("absent.ini")).unwrap_err();
        assert!(missing.to_string().contains("absent.ini"), "{missing}");
    }

    #[test]
    fn never_panics_on_generated_input() {
        // A small linear congruential generator over characters that matter
        // to the reader: separators, comment marks, brackets, line ends,
        // multi-byte characters and pieces of real keys and values.
        const PIECES: [&str; 24] = [
            "=",
            "#",
            ";",
            "[",
            "]",
            "\r",
            "\n",
            "\r\n",
            " ",
            "\t",
            ":",
            "::",
            ".",
            "-",
            "é",
            "\u{feff}",
            "ipv6_prefix",
            "ipv4_address",
            "domain",
            "verbose",
            "true",
            "2a00",
            "type3.1",
            "1.2.3.4",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut text = String::new();
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 59) + 1;
            for _ in 0..len * 4 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let index = usize::try_from(state >> 33).unwrap() % PIECES.len();
                text.push_str(PIECES[index]);
            }
            let _ = parse_config_ini(&text);
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "\u{feff}",
            "=",
            "[",
            "]",
            "\r",
            "\0=\0",
            "é=ü\n[é",
            "ipv6_prefix=é",
        ] {
            let _ = parse_config_ini(text);
        }
    }
}
