//! Deterministic MAC and IPv6 addresses of IC-OS nodes.
//!
//! Every IC-OS machine derives the MAC addresses of its SetupOS, HostOS and
//! GuestOS network interfaces from one stable input, the MAC of its management
//! (BMC/IPMI) interface, so that anyone who knows that MAC and the network's
//! /64 prefix knows the node's addresses:
//!
//! 1. seed = the management MAC as lower-case, colon-separated text, then the
//!    deployment environment name (`mainnet`, `testnet`), then a newline
//!    (the newline is part of the seed for compatibility with the original
//!    `echo … | sha256sum` derivation);
//! 2. h = SHA-256(seed);
//! 3. for slots below 16 the MAC is `6a:{type | slot << 4}:h0:h1:h2:h3`, for
//!    slots 16 and above `7a:{type}:{slot}:h0:h1:h2`, where the node-type byte
//!    is `0f` (SetupOS), `00` (HostOS), `01` (GuestOS) or `02` (upgrade
//!    GuestOS);
//! 4. the IPv6 address is the SLAAC EUI-64 address of that MAC in the /64.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

pub use macaddr::MacAddr6;
use sha2::{Digest, Sha256};

/// A rule that an input broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The text is not a MAC address.
    #[error("invalid MAC address '{0}': expected six hex octets such as 3c:ec:ef:6b:37:99")]
    Mac(String),
    /// The text is not an IPv6 /64 prefix.
    #[error(
        "invalid IPv6 prefix '{0}': expected up to four hex groups such as 2a00:fb01:400:44 \
         (optionally ending in '::')"
    )]
    Prefix(String),
    /// The text is not a known node type.
    #[error("invalid node type '{0}': expected setupos, hostos, guestos or upgrade-guestos")]
    NodeType(String),
}

/// The kind of operating system an interface belongs to; its byte goes into the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// The installer.
    SetupOS,
    /// The host.
    HostOS,
    /// The guest VM that runs the replica.
    GuestOS,
    /// The temporary guest VM used during SEV upgrades.
    UpgradeGuestOS,
}

impl NodeType {
    /// Every node type, in byte order of their use.
    pub const ALL: [NodeType; 4] = [
        NodeType::SetupOS,
        NodeType::HostOS,
        NodeType::GuestOS,
        NodeType::UpgradeGuestOS,
    ];

    /// The byte this node type contributes to the MAC.
    pub fn to_byte(self) -> u8 {
        match self {
            NodeType::SetupOS => 0x0f,
            NodeType::HostOS => 0x00,
            NodeType::GuestOS => 0x01,
            NodeType::UpgradeGuestOS => 0x02,
        }
    }

    /// The canonical lower-case name (`setupos`, `hostos`, `guestos`, `upgrade-guestos`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::SetupOS => "setupos",
            NodeType::HostOS => "hostos",
            NodeType::GuestOS => "guestos",
            NodeType::UpgradeGuestOS => "upgrade-guestos",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeType {
    type Err = AddrError;

    /// Parses a node type, ignoring case and the separators `-`, `_` and `.`,
    /// so `GuestOS`, `guestos`, `gUest.oS` and `upgrade-guest-os` all work.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let squashed: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | '.'))
            .collect::<String>()
            .to_ascii_lowercase();
        match squashed.as_str() {
            "setupos" => Ok(NodeType::SetupOS),
            "hostos" => Ok(NodeType::HostOS),
            "guestos" => Ok(NodeType::GuestOS),
            "upgradeguestos" => Ok(NodeType::UpgradeGuestOS),
            _ => Err(AddrError::NodeType(s.to_string())),
        }
    }
}

impl serde::Serialize for NodeType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for NodeType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a MAC address written as six hex octets separated by `:` or `-`,
/// or as twelve hex digits without separators.
pub fn parse_mac(text: &str) -> Result<MacAddr6, AddrError> {
    let err = || AddrError::Mac(text.to_string());
    let trimmed = text.trim();
    let digits: String = if trimmed.len() == 12 {
        trimmed.to_string()
    } else {
        let parts: Vec<&str> = trimmed.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(err());
        }
        parts.concat()
    };
    if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err());
    }
    let mut bytes = [0u8; 6];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| err())?;
    }
    Ok(MacAddr6::from(bytes))
}

/// Formats a MAC as lower-case, colon-separated text (`6a:00:f8:87:a4:8a`).
pub fn format_mac(mac: &MacAddr6) -> String {
    let b = mac.as_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// The seed that is hashed: lower-case MAC text, environment name, newline.
fn seed(mgmt_mac: &MacAddr6, deployment_environment: &str) -> String {
    format!("{}{}\n", format_mac(mgmt_mac), deployment_environment)
}

/// Derives the deterministic MAC of a node's interface.
///
/// `deployment_environment` is the environment name as written in the config
/// (`mainnet` or `testnet`); `slot` numbers the VMs of one host (0 for the
/// usual single GuestOS).
pub fn deterministic_mac(
    mgmt_mac: &MacAddr6,
    deployment_environment: &str,
    node_type: NodeType,
    slot: u8,
) -> MacAddr6 {
    let h = Sha256::digest(seed(mgmt_mac, deployment_environment).as_bytes());
    let kind = node_type.to_byte();
    let bytes = if slot < 16 {
        [0x6a, kind | (slot << 4), h[0], h[1], h[2], h[3]]
    } else {
        [0x7a, kind, slot, h[0], h[1], h[2]]
    };
    MacAddr6::from(bytes)
}

/// Parses the network part of a /64: up to four hex groups, optionally
/// ending in `::` (`2a00:fb01:400:44`, `2001:db8`, `2a04:9dc0:0:108::`).
/// Returns the upper 64 bits.
pub fn parse_prefix(prefix: &str) -> Result<u64, AddrError> {
    let err = || AddrError::Prefix(prefix.to_string());
    let text = prefix.trim();
    let base = text.strip_suffix("::").unwrap_or(text);
    if base.is_empty() || base.contains("::") {
        return Err(err());
    }
    let addr: Ipv6Addr = format!("{base}::").parse().map_err(|_| err())?;
    let bits = u128::from(addr);
    let upper = u64::try_from(bits >> 64).map_err(|_| err())?;
    if bits & u128::from(u64::MAX) != 0 {
        // More than four groups: the prefix reaches into the interface part.
        return Err(err());
    }
    Ok(upper)
}

/// The SLAAC (modified EUI-64) IPv6 address of `mac` in the /64 `prefix`.
pub fn slaac_ipv6(mac: &MacAddr6, prefix: &str) -> Result<Ipv6Addr, AddrError> {
    let upper = parse_prefix(prefix)?;
    let m = mac.as_bytes();
    let eui64 = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    let lower = u64::from_be_bytes(eui64);
    Ok(Ipv6Addr::from(
        (u128::from(upper) << 64) | u128::from(lower),
    ))
}

/// The deterministic IPv6 address of a node's interface: [`deterministic_mac`]
/// followed by [`slaac_ipv6`].
pub fn deterministic_ipv6(
    mgmt_mac: &MacAddr6,
    deployment_environment: &str,
    node_type: NodeType,
    slot: u8,
    prefix: &str,
) -> Result<Ipv6Addr, AddrError> {
    slaac_ipv6(
        &deterministic_mac(mgmt_mac, deployment_environment, node_type, slot),
        prefix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr6 {
        parse_mac(s).unwrap()
    }

    #[test]
    fn vector_1_hostos_testnet() {
        let m = deterministic_mac(&mac("70:B5:E8:E8:25:DE"), "testnet", NodeType::HostOS, 0);
        assert_eq!(format_mac(&m), "6a:00:f8:87:a4:8a");
    }

    #[test]
    fn vector_2_guestos_mainnet_slaac() {
        let m = mac("b0:7b:25:c8:f6:c0");
        let d = deterministic_mac(&m, "mainnet", NodeType::GuestOS, 0);
        assert_eq!(format_mac(&d), "6a:01:00:ec:bd:51");
        let ip = deterministic_ipv6(&m, "mainnet", NodeType::GuestOS, 0, "2602:FFE4:801:17");
        assert_eq!(
            ip.unwrap(),
            "2602:ffe4:801:17:6801:ff:feec:bd51"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn slaac_vectors() {
        let cases = [
            (
                "6a01e5962d49",
                "2a04:9dc0:0:108",
                "2a04:9dc0:0:108:6801:e5ff:fe96:2d49",
            ),
            (
                "6a:01:e5:96:2d:49",
                "2001:db8",
                "2001:db8::6801:e5ff:fe96:2d49",
            ),
            (
                "6a:01:e5:96:2d:49",
                "2a04:9dc0:0:108::",
                "2a04:9dc0:0:108:6801:e5ff:fe96:2d49",
            ),
            ("00:00:00:00:00:00", "2001:db8::", "2001:db8::200:ff:fe00:0"),
            (
                "ff:ff:ff:ff:ff:ff",
                "2001:db8::",
                "2001:db8::fdff:ffff:feff:ffff",
            ),
        ];
        for (m, prefix, want) in cases {
            let got = slaac_ipv6(&mac(m), prefix).unwrap();
            assert_eq!(got, want.parse::<Ipv6Addr>().unwrap(), "{m} {prefix}");
        }
    }

    #[test]
    fn invalid_prefixes_are_rejected() {
        for prefix in [
            "invalid_prefix",
            "gggg::",
            "2a04:9dc0:0:108:zzzz",
            "1234:::",
            "",
            "1:2:3:4:5",
            "abcd::1234",
        ] {
            assert_eq!(
                slaac_ipv6(&mac("6a:01:e5:96:2d:49"), prefix),
                Err(AddrError::Prefix(prefix.to_string())),
                "{prefix}"
            );
        }
    }

    #[test]
    fn readme_seed_hashes_with_trailing_newline() {
        let s = seed(&mac("3c:ec:ef:6b:37:99"), "mainnet");
        let digest = Sha256::digest(s.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "f409d72aa8c98ea40a82ea5a0a437798a67d36e587b2cc49f9dabf2de1cedeeb"
        );
    }

    #[test]
    fn node_type_names() {
        let cases = [
            ("SetupOS", NodeType::SetupOS),
            ("setupos", NodeType::SetupOS),
            ("HostOS", NodeType::HostOS),
            ("gUest.oS", NodeType::GuestOS),
            ("upgrade-guest-os", NodeType::UpgradeGuestOS),
            ("upgrade-guestos", NodeType::UpgradeGuestOS),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<NodeType>().unwrap(), want, "{text}");
        }
        assert!("replica".parse::<NodeType>().is_err());
        for t in NodeType::ALL {
            assert_eq!(t.as_str().parse::<NodeType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<NodeType>(&json).unwrap(), t);
        }
    }

    #[test]
    fn node_type_bytes_and_slots() {
        let m = mac("70:b5:e8:e8:25:de");
        let base = deterministic_mac(&m, "testnet", NodeType::HostOS, 0);
        let hb = &base.as_bytes()[2..6];
        assert_eq!(
            deterministic_mac(&m, "testnet", NodeType::SetupOS, 0).as_bytes()[1],
            0x0f
        );
        assert_eq!(
            deterministic_mac(&m, "testnet", NodeType::GuestOS, 0).as_bytes()[1],
            0x01
        );
        let upgrade = deterministic_mac(&m, "testnet", NodeType::UpgradeGuestOS, 0);
        assert_eq!(upgrade.as_bytes()[1], 0x02);
        // Slot 3 of a GuestOS: type byte 0x01 | 0x30.
        let s3 = deterministic_mac(&m, "testnet", NodeType::GuestOS, 3);
        assert_eq!(s3.as_bytes()[..2], [0x6a, 0x31]);
        assert_eq!(&s3.as_bytes()[2..], hb);
        // Slot 20: the 7a form carries the slot in its own byte and 3 hash bytes.
        let s20 = deterministic_mac(&m, "testnet", NodeType::GuestOS, 20);
        assert_eq!(s20.as_bytes()[..3], [0x7a, 0x01, 20]);
        assert_eq!(&s20.as_bytes()[3..], &hb[..3]);
    }

    #[test]
    fn environment_changes_the_hash() {
        let m = mac("70:b5:e8:e8:25:de");
        assert_ne!(
            deterministic_mac(&m, "mainnet", NodeType::HostOS, 0),
            deterministic_mac(&m, "testnet", NodeType::HostOS, 0)
        );
    }

    #[test]
    fn malformed_macs_are_rejected() {
        for bad in [
            "",
            "70:b5:e8:e8:25",
            "70:b5:e8:e8:25:de:01",
            "zz:b5:e8:e8:25:de",
            "7:b5:e8:e8:25:dee",
            "70b5e8e825d",
        ] {
            assert_eq!(
                parse_mac(bad),
                Err(AddrError::Mac(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(format_mac(&mac("70-B5-E8-E8-25-DE")), "70:b5:e8:e8:25:de");
    }
}
