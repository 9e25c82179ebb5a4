//! Step 3: the nftables ruleset, written to
//! `/run/ic-node/nftables-ruleset/nftables.conf` (where IC-OS's node
//! software keeps it) and loaded with `nft -f`.
//!
//! Input and forwarding are dropped by default. Accepted: loopback,
//! established and related traffic, the ICMPv6 types IPv6 needs (neighbour
//! and router discovery, errors, echo), ICMP for IPv4 when the config has
//! IPv4, and new TCP connections to [`TCP_PORTS`] and UDP to [`UDP_PORTS`]
//! (IC-OS's ports for every peer: SSH, XNet, P2P and the replica's HTTP
//! interface), each source limited to 1000 new connections a minute
//! (burst 500), as IC-OS. Output is accepted.
//!
//! A boundary node ([`Profile::Boundary`]) opens SSH, HTTP (80) and HTTPS
//! (443) instead: its router listens on loopback only, and the gateway
//! serves the world on 80 and 443.

use std::fmt::Write;

use icos_config::GuestOSConfig;

use crate::{Paths, Result, write_file};

/// TCP ports open to everyone: SSH, XNet, P2P, the replica's HTTP interface.
pub const TCP_PORTS: &[(u16, &str)] = &[(22, "ssh"), (2497, "xnet"), (4100, "p2p"), (8080, "http")];
/// UDP ports open to everyone: P2P (QUIC).
pub const UDP_PORTS: &[(u16, &str)] = &[(4100, "p2p")];
/// TCP ports open to everyone on a boundary node: SSH, HTTP, HTTPS.
pub const BOUNDARY_TCP_PORTS: &[(u16, &str)] = &[(22, "ssh"), (80, "http"), (443, "https")];

/// Which node the ruleset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A replica node: [`TCP_PORTS`] and [`UDP_PORTS`].
    #[default]
    Replica,
    /// A boundary node: [`BOUNDARY_TCP_PORTS`], no UDP.
    Boundary,
}

impl std::str::FromStr for Profile {
    type Err = String;

    /// `replica` or `boundary`.
    fn from_str(s: &str) -> std::result::Result<Profile, String> {
        match s {
            "replica" => Ok(Profile::Replica),
            "boundary" => Ok(Profile::Boundary),
            _ => Err(format!("'{s}' is not a profile (replica or boundary)")),
        }
    }
}

impl Profile {
    fn tcp(self) -> &'static [(u16, &'static str)] {
        match self {
            Profile::Replica => TCP_PORTS,
            Profile::Boundary => BOUNDARY_TCP_PORTS,
        }
    }

    fn udp(self) -> &'static [(u16, &'static str)] {
        match self {
            Profile::Replica => UDP_PORTS,
            Profile::Boundary => &[],
        }
    }
}

fn ports(list: &[(u16, &str)]) -> String {
    list.iter()
        .map(|(p, _)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ruleset for `config` on a node of `profile`.
pub fn render(config: &GuestOSConfig, profile: Profile) -> String {
    let ipv4 = config.network_settings.ipv4_config.is_some();
    let mut s = String::from(
        "#!/usr/sbin/nft -f\n\
         # Generated at boot by icos-guestos-init from /run/config/config.json.\n\
         # Do not edit.\n\n\
         flush ruleset\n\n\
         table inet filter {\n",
    );
    for (name, ty) in [
        ("rate_limit_v6", "ipv6_addr"),
        ("rate_limit_v4", "ipv4_addr"),
    ] {
        let _ = write!(
            s,
            "\tset {name} {{\n\t\ttype {ty}\n\t\tsize 65535\n\t\tflags dynamic\n\t\ttimeout 1m\n\t}}\n\n"
        );
    }
    s.push_str(
        "\tchain input {\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\tct state invalid drop\n\
         \t\tct state { established, related } accept\n\
         \t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld2-listener-report } accept\n",
    );
    if ipv4 {
        s.push_str(
            "\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request, echo-reply } accept\n",
        );
    }
    s.push_str(
        "\t\tct state new add @rate_limit_v6 { ip6 saddr limit rate over 1000/minute burst 500 packets } counter drop\n",
    );
    if ipv4 {
        s.push_str(
            "\t\tct state new add @rate_limit_v4 { ip saddr limit rate over 1000/minute burst 500 packets } counter drop\n",
        );
    }
    let names = |l: &[(u16, &str)]| l.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "\t\ttcp dport {{ {} }} counter accept comment \"{}\"",
        ports(profile.tcp()),
        names(profile.tcp())
    );
    if !profile.udp().is_empty() {
        let _ = writeln!(
            s,
            "\t\tudp dport {{ {} }} counter accept comment \"{}\"",
            ports(profile.udp()),
            names(profile.udp())
        );
    }
    s.push_str(
        "\t}\n\n\
         \tchain forward {\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t}\n\n\
         \tchain output {\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t}\n\
         }\n",
    );
    s
}

/// Writes the ruleset for `config` and `profile`; returns its path (loading
/// it is the caller's: `nft -f <path>`).
pub fn apply(
    paths: &Paths,
    config: &GuestOSConfig,
    profile: Profile,
) -> Result<std::path::PathBuf> {
    let path = paths.nftables_conf();
    write_file(&path, render(config, profile).as_bytes(), 0o644)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::golden;

    #[test]
    fn ipv6_only() {
        let c = icos_config_media::dev_guestos_config().unwrap();
        let text = render(&c, Profile::Replica);
        assert!(text.contains("policy drop"));
        assert!(!text.contains("icmp type"));
        golden("nftables-ipv6.conf", &text);
    }

    #[test]
    fn boundary_node() {
        let mut c = icos_config_media::dev_guestos_config().unwrap();
        c.network_settings.ipv4_config = Some(icos_config::Ipv4Config {
            address: "192.0.2.10".parse().unwrap(),
            gateway: "192.0.2.1".parse().unwrap(),
            prefix_length: 24,
            extra: Default::default(),
        });
        let text = render(&c, Profile::Boundary);
        assert!(text.contains("tcp dport { 22, 80, 443 }"), "{text}");
        assert!(!text.contains("udp dport"), "{text}");
        assert!(!text.contains("8080"), "{text}");
        golden("nftables-boundary.conf", &text);
    }

    #[test]
    fn with_ipv4() {
        let mut c = icos_config_media::dev_guestos_config().unwrap();
        c.network_settings.ipv4_config = Some(icos_config::Ipv4Config {
            address: "192.0.2.10".parse().unwrap(),
            gateway: "192.0.2.1".parse().unwrap(),
            prefix_length: 24,
            extra: Default::default(),
        });
        golden("nftables-ipv4.conf", &render(&c, Profile::Replica));
    }

    #[test]
    fn apply_writes_ics_path() {
        let d = tempfile::tempdir().unwrap();
        let c = icos_config_media::dev_guestos_config().unwrap();
        let p = apply(&Paths::new(d.path()), &c, Profile::Boundary).unwrap();
        assert!(p.ends_with("run/ic-node/nftables-ruleset/nftables.conf"));
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            render(&c, Profile::Boundary)
        );
    }
}
