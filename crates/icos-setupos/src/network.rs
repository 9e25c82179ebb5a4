//! The network check: the address and default route the machine learnt
//! from router advertisements, the node's derived addresses, the gateway
//! pings and the NNS.
//!
//! The SetupOS bridge carries the deterministic SetupOS MAC, so the address
//! it forms from the router advertisement (SLAAC) is the derived SetupOS
//! address. The check fails when:
//!
//! * there is no default IPv6 route;
//! * the interface of that route holds no global address in the configured
//!   /64 (the router advertises another prefix than `ipv6_prefix`);
//! * with IPv4: the domain breaks the rule (at least two labels of 1–63
//!   characters from `A-Z a-z 0-9 -`, no label starting or ending with `-`),
//!   or the IPv4 gateway did not answer a ping;
//! * the IPv6 gateway did not answer a ping;
//! * no NNS URL answered.
//!
//! A default route not learnt from a router advertisement, or an address in
//! the right /64 that is not the derived one, is a warning.

use std::net::{IpAddr, Ipv6Addr};

use icos_config::{Ipv6Config, SetupOSConfig};
use icos_deterministic_ips::{NodeType, deterministic_ipv6};
use serde_json::Value;

use crate::hardware::ParseError;
use crate::report::{CheckName, CheckResult};

/// One address of an interface (`ip -j addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
    /// `global`, `link`, `host`.
    pub scope: String,
    /// Learnt dynamically (SLAAC or DHCP) rather than set by hand.
    pub dynamic: bool,
}

/// One network interface (`ip -j addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `br6`.
    pub name: String,
    /// The MAC address, when it has one.
    pub mac: Option<String>,
    /// `UP`, `DOWN`, `UNKNOWN`.
    pub operstate: String,
    /// The addresses.
    pub addrs: Vec<InterfaceAddr>,
}

/// One IPv6 route (`ip -j -6 route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `default` or `PREFIX/LEN`.
    pub dst: String,
    /// The next hop, if any.
    pub gateway: Option<String>,
    /// The interface.
    pub dev: String,
    /// Who installed it: `ra`, `kernel`, `static`, `boot`, ...
    pub protocol: String,
}

/// The summary of one `ping` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingOutcome {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// The summary line, or the error ping printed.
    pub summary: String,
}

impl PingOutcome {
    /// True when at least one reply came back (ping's exit status 0).
    pub fn answered(&self) -> bool {
        self.received > 0
    }
}

/// The answer to one NNS probe (`curl --head`, HTTP status `000` when
/// nothing answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NnsProbe {
    /// The URL probed.
    pub url: String,
    /// The HTTP status; 0 when no HTTP answer came.
    pub status: u16,
}

/// Everything the network check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// `ip -j addr`.
    pub interfaces: Vec<Interface>,
    /// `ip -j -6 route`.
    pub routes: Vec<Route>,
    /// `ping6 -c4 IPV6_GATEWAY`.
    pub ping6: PingOutcome,
    /// `ping4 -c2 -w20 IPV4_GATEWAY`, when IPv4 is configured.
    pub ping4: Option<PingOutcome>,
    /// One probe per NNS URL.
    pub nns: Vec<NnsProbe>,
}

fn json_array(text: &str, what: &str) -> Result<Vec<Value>, ParseError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| ParseError(format!("is not {what} JSON: {e}")))?;
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(ParseError(format!("is not a JSON array ({what})"))),
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Parses `ip -j addr` output.
pub fn parse_ip_addr(text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut out = Vec::new();
    for (i, link) in json_array(text, "ip -j addr")?.iter().enumerate() {
        let name = str_field(link, "ifname")
            .ok_or_else(|| ParseError(format!("entry {i} has no ifname")))?;
        let mut addrs = Vec::new();
        for a in link
            .get("addr_info")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            // Entries without "local" carry only lifetimes (iproute2 splits them).
            let Some(local) = str_field(a, "local") else {
                continue;
            };
            let addr: IpAddr = local
                .parse()
                .map_err(|_| ParseError(format!("{name}: '{local}' is not an IP address")))?;
            let prefix_len = a
                .get("prefixlen")
                .and_then(Value::as_u64)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| ParseError(format!("{name}: {local} has no prefixlen")))?;
            addrs.push(InterfaceAddr {
                addr,
                prefix_len,
                scope: str_field(a, "scope").unwrap_or("global").to_string(),
                dynamic: a.get("dynamic").and_then(Value::as_bool) == Some(true),
            });
        }
        out.push(Interface {
            name: name.to_string(),
            mac: str_field(link, "address").map(str::to_string),
            operstate: str_field(link, "operstate")
                .unwrap_or("UNKNOWN")
                .to_string(),
            addrs,
        });
    }
    Ok(out)
}

/// Parses `ip -j -6 route` output.
pub fn parse_ip_route(text: &str) -> Result<Vec<Route>, ParseError> {
    json_array(text, "ip -j -6 route")?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Route {
                dst: str_field(r, "dst")
                    .ok_or_else(|| ParseError(format!("route {i} has no dst")))?
                    .to_string(),
                gateway: str_field(r, "gateway").map(str::to_string),
                dev: str_field(r, "dev").unwrap_or("").to_string(),
                protocol: str_field(r, "protocol").unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Reads the summary of iputils `ping` output (`4 packets transmitted,
/// 4 received, ...`). Output without a summary (ping could not even send:
/// `connect: Network is unreachable`) counts as no reply.
pub fn parse_ping(text: &str) -> PingOutcome {
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == word)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    for line in text.lines() {
        if let (Some(transmitted), Some(received)) = (
            number_before(line, "packets"),
            number_before(line, "received"),
        ) {
            return PingOutcome {
                transmitted,
                received,
                summary: line.trim().to_string(),
            };
        }
    }
    PingOutcome {
        transmitted: 0,
        received: 0,
        summary: text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output")
            .to_string(),
    }
}

/// Parses NNS probe results: one `URL STATUS` line each, STATUS being
/// curl's `%{http_code}` (`000` when nothing answered). Blank lines and
/// `#` comments are skipped.
pub fn parse_nns_probes(text: &str) -> Result<Vec<NnsProbe>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| {
            let mut parts = l.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(url), Some(code), None) => Ok(NnsProbe {
                    url: url.to_string(),
                    status: code.parse().map_err(|_| {
                        ParseError(format!("line {}: '{code}' is not an HTTP status", n + 1))
                    })?,
                }),
                _ => Err(ParseError(format!(
                    "line {}: '{l}' is not 'URL HTTP_STATUS'",
                    n + 1
                ))),
            }
        })
        .collect()
}

/// The /64 network of an address.
fn net64(addr: &Ipv6Addr) -> u64 {
    u64::try_from(u128::from(*addr) >> 64).unwrap_or_default()
}

/// Runs the network check against the SetupOS config.
pub fn check_network(config: &SetupOSConfig, facts: &NetworkFacts) -> CheckResult {
    let mut r = CheckResult::new(CheckName::Network);
    let net = &config.network_settings;
    let icos = &config.icos_settings;
    let env = icos.deployment_environment.as_str();

    // What the node provider configured, and the addresses derived from it.
    let (prefix, gateway) = match &net.ipv6_config {
        Ipv6Config::Deterministic(d) => (Some(d.prefix.clone()), Some(d.gateway)),
        Ipv6Config::Fixed(f) => (None, Some(f.gateway)),
        other => {
            r.fact(format!("IPv6 configuration: {other:?}"));
            (None, None)
        }
    };
    if let (Some(prefix), Some(gateway)) = (&prefix, &gateway) {
        r.fact(format!(
            "configured: prefix {prefix}::/64, gateway {gateway}"
        ));
    }
    if let Some(v4) = &net.ipv4_config {
        r.fact(format!(
            "configured: IPv4 {}/{} gateway {}, domain {}",
            v4.address,
            v4.prefix_length,
            v4.gateway,
            net.domain_name.as_deref().unwrap_or("(none)")
        ));
    }
    let mut derived_setupos = None;
    let mut expected_net = None;
    if let Some(prefix) = &prefix {
        for (label, node_type) in [
            ("SetupOS", NodeType::SetupOS),
            ("HostOS", NodeType::HostOS),
            ("GuestOS", NodeType::GuestOS),
        ] {
            match deterministic_ipv6(&icos.mgmt_mac, env, node_type, 0, prefix) {
                Ok(a) => {
                    r.fact(format!("derived {label} address: {a}"));
                    if node_type == NodeType::SetupOS {
                        derived_setupos = Some(a);
                        expected_net = Some(net64(&a));
                    }
                }
                Err(e) => r.error(format!("cannot derive the {label} address: {e}")),
            }
        }
    }

    // What the network gave.
    let defaults: Vec<&Route> = facts.routes.iter().filter(|r| r.dst == "default").collect();
    let route = defaults
        .iter()
        .find(|r| r.protocol == "ra")
        .or_else(|| defaults.first())
        .copied();
    match route {
        None => r.error(
            "no default IPv6 route: no router advertisement was received; check the cabling \
             and that the switch port is in the node's network",
        ),
        Some(route) => {
            r.fact(format!(
                "system: default route via {} dev {} (proto {})",
                route.gateway.as_deref().unwrap_or("(none)"),
                route.dev,
                route.protocol
            ));
            if route.protocol != "ra" {
                r.warn(format!(
                    "the default IPv6 route was not learnt from a router advertisement \
                     (proto {})",
                    route.protocol
                ));
            }
        }
    }
    let iface = route
        .and_then(|rt| facts.interfaces.iter().find(|i| i.name == rt.dev))
        .or_else(|| {
            facts.interfaces.iter().find(|i| {
                i.addrs
                    .iter()
                    .any(|a| matches!(a.addr, IpAddr::V6(v6) if Some(net64(&v6)) == expected_net))
            })
        });
    let globals: Vec<Ipv6Addr> = iface
        .map(|i| {
            i.addrs
                .iter()
                .filter(|a| a.scope == "global")
                .filter_map(|a| match a.addr {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match iface {
        None => r.error("no interface holds an IPv6 default route or an address in the node's /64"),
        Some(i) => {
            r.fact(format!(
                "system: interface {} ({}, MAC {}), global IPv6 {}",
                i.name,
                i.operstate,
                i.mac.as_deref().unwrap_or("none"),
                if globals.is_empty() {
                    "none".to_string()
                } else {
                    globals
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            if let (Some(prefix), Some(want)) = (&prefix, expected_net) {
                let in_prefix: Vec<&Ipv6Addr> =
                    globals.iter().filter(|a| net64(a) == want).collect();
                if in_prefix.is_empty() {
                    r.error(format!(
                        "interface {} holds no address in the configured {prefix}::/64{}; \
                         check ipv6_prefix in config.ini",
                        i.name,
                        if globals.is_empty() {
                            String::new()
                        } else {
                            " (the router advertises another prefix)".to_string()
                        }
                    ));
                } else if let Some(setupos) = derived_setupos
                    && !in_prefix.contains(&&setupos)
                {
                    r.warn(format!(
                        "interface {} does not hold the derived SetupOS address {setupos}; \
                         check the management MAC",
                        i.name
                    ));
                }
            }
        }
    }

    // IPv4.
    if let Some(v4) = &net.ipv4_config {
        match net.domain_name.as_deref() {
            None => r.error("IPv4 is configured without a domain; set domain in config.ini"),
            Some(domain) => {
                if let Err(rule) = icos_config::check_domain_name(domain) {
                    r.error(format!("domain: {rule}"));
                }
            }
        }
        match &facts.ping4 {
            None => r.error(format!("the IPv4 gateway {} was not pinged", v4.gateway)),
            Some(p) if !p.answered() => r.error(format!(
                "the IPv4 gateway {} does not answer ping: {}",
                v4.gateway, p.summary
            )),
            Some(p) => r.fact(format!("IPv4 gateway {}: {}", v4.gateway, p.summary)),
        }
    }

    // IPv6 gateway.
    let gw = gateway.map_or("(unknown)".to_string(), |g| g.to_string());
    if facts.ping6.answered() {
        r.fact(format!("IPv6 gateway {gw}: {}", facts.ping6.summary));
    } else {
        r.error(format!(
            "the IPv6 gateway {gw} does not answer ping: {}",
            facts.ping6.summary
        ));
    }

    // NNS.
    for probe in &facts.nns {
        r.fact(format!(
            "NNS {}: {}",
            probe.url,
            if probe.status == 0 {
                "no answer".to_string()
            } else {
                format!("HTTP {}", probe.status)
            }
        ));
    }
    for url in &icos.nns_urls {
        let u = url.as_str();
        if !facts
            .nns
            .iter()
            .any(|p| p.url.trim_end_matches('/') == u.trim_end_matches('/'))
        {
            r.warn(format!("NNS URL {u} was not probed"));
        }
    }
    if !facts.nns.iter().any(|p| p.status != 0) {
        r.error(format!(
            "none of the NNS URLs answered ({}); the node needs to reach at least one",
            icos.nns_urls
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    r
}

#[cfg(test)]
mod tests;
