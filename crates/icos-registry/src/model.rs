//! The registry document (`registry.json`) and its rules.
//!
//! One document holds every record of a network at one registry version.
//! Maps are keyed by id and kept sorted, so the same records always
//! serialize to the same bytes (the bytes are what governance signs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv6Addr;

use icos_boundary::{Principal, parse_principal};
use serde::{Deserialize, Serialize};
use url::Url;

/// The file name of the registry document, as a TUF target.
pub const REGISTRY_TARGET: &str = "registry.json";

/// The whole registry at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The registry version: starts at 1 and grows by one with every change.
    pub version: u64,
    /// Elected GuestOS versions, by version id.
    #[serde(default)]
    pub guestos_versions: BTreeMap<String, ElectedVersion>,
    /// Elected HostOS versions, by version id.
    #[serde(default)]
    pub hostos_versions: BTreeMap<String, ElectedVersion>,
    /// Subnets, by subnet id (a textual principal).
    #[serde(default)]
    pub subnets: BTreeMap<String, Subnet>,
    /// Nodes, by node id (a textual principal).
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
    /// Node operators, by operator id (a textual principal).
    #[serde(default)]
    pub node_operators: BTreeMap<String, NodeOperator>,
    /// The GuestOS version nodes outside any subnet run.
    #[serde(default)]
    pub unassigned_nodes_guestos_version: Option<String>,
    /// Canister-id ranges and the subnet that hosts each.
    #[serde(default)]
    pub routing_table: Vec<RoutingEntry>,
    /// API boundary nodes, by node id.
    #[serde(default)]
    pub api_boundary_nodes: BTreeMap<String, ApiBoundaryNode>,
    /// Firewall rules every node applies, in order.
    #[serde(default)]
    pub firewall_rules: Vec<FirewallRule>,
}

/// An elected (blessed) GuestOS or HostOS version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectedVersion {
    /// Where `update-img.tar.zst` can be downloaded; nodes try them in a
    /// rotated order.
    pub release_package_urls: Vec<Url>,
    /// SHA-256 of `update-img.tar.zst`, lowercase hex.
    pub release_package_sha256: String,
    /// Expected SEV-SNP launch measurements (hex), if the version has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_measurements: Option<Vec<String>>,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// The member node ids.
    pub members: Vec<String>,
    /// The GuestOS version every member runs.
    pub guestos_version: String,
    /// SSH public keys allowed read-only access to members.
    #[serde(default)]
    pub ssh_readonly_keys: Vec<String>,
    /// SSH public keys allowed backup access to members.
    #[serde(default)]
    pub ssh_backup_keys: Vec<String>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The operator who runs it.
    pub operator: String,
    /// Its IPv6 address.
    pub ipv6: Ipv6Addr,
    /// The HostOS version it should run, if one was deployed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostos_version: Option<String>,
    /// Its Ed25519 public key (hex), when it joined with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// A node operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOperator {
    /// The operator's public key, hex: Ed25519 (32 bytes) or a compressed
    /// secp256k1 point (33 bytes); see [`crate::operator`].
    pub public_key: String,
    /// How many more nodes the operator may add.
    pub allowance: u64,
}

/// One routing-table entry: canister ids `start..=end` live on `subnet`.
///
/// Ids are textual principals, as in the boundary node's routing-table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingEntry {
    /// First canister id of the range.
    pub start: String,
    /// Last canister id of the range (included).
    pub end: String,
    /// The subnet id.
    pub subnet: String,
}

/// An API boundary node record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiBoundaryNode {
    /// The domain it serves.
    pub domain: String,
    /// The GuestOS version it runs.
    pub guestos_version: String,
}

/// What a firewall rule does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallAction {
    /// Let it through.
    Allow,
    /// Drop it.
    Deny,
}

/// A firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallRule {
    /// Source prefixes (`addr/len`, IPv4 or IPv6).
    pub prefixes: Vec<String>,
    /// Destination TCP ports.
    pub ports: Vec<u16>,
    /// Allow or deny.
    pub action: FirewallAction,
    /// Why the rule exists.
    #[serde(default)]
    pub comment: String,
}

/// A rule of the registry that a document or a change broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Violation {
    /// Where: e.g. `subnets.<id>.guestos_version`.
    pub field: String,
    /// What is wrong.
    pub rule: String,
}

impl Violation {
    /// A violation at `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Every violation found in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Parses a textual principal, naming the field on failure.
pub fn principal(field: &str, text: &str) -> Result<Principal, Violation> {
    parse_principal(text)
        .map_err(|e| Violation::new(field, format!("{text:?} is not a textual principal: {e}")))
}

/// Checks a lowercase-hex SHA-256.
pub fn check_sha256(field: &str, text: &str) -> Result<(), Violation> {
    if text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Violation::new(
            field,
            format!("{text:?} is not a SHA-256 (64 lowercase hex digits)"),
        ))
    }
}

/// Checks a hex Ed25519 public key (32 bytes).
pub fn check_ed25519_hex(field: &str, text: &str) -> Result<[u8; 32], Violation> {
    let bytes = hex::decode(text)
        .map_err(|e| Violation::new(field, format!("{text:?} is not hex: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Violation::new(
            field,
            format!(
                "an Ed25519 public key has 32 bytes, this one {}",
                bytes.len()
            ),
        )
    })
}

/// The self-authenticating principal of an Ed25519 public key, as the IC
/// derives node and operator ids: SHA-224 of the key's DER encoding,
/// followed by the byte 0x02.
pub fn self_authenticating_id(public_key: &[u8; 32]) -> String {
    crate::operator::OperatorPublicKey::Ed25519(*public_key).id()
}

fn check_version_ref(
    out: &mut Vec<Violation>,
    field: &str,
    elected: &BTreeMap<String, ElectedVersion>,
    what: &str,
    version: &str,
) {
    if !elected.contains_key(version) {
        out.push(Violation::new(
            field,
            format!("{what} version {version:?} is not elected"),
        ));
    }
}

impl Registry {
    /// The empty registry at version 1.
    pub fn genesis() -> Self {
        Registry {
            version: 1,
            guestos_versions: BTreeMap::new(),
            hostos_versions: BTreeMap::new(),
            subnets: BTreeMap::new(),
            nodes: BTreeMap::new(),
            node_operators: BTreeMap::new(),
            unassigned_nodes_guestos_version: None,
            routing_table: Vec::new(),
            api_boundary_nodes: BTreeMap::new(),
            firewall_rules: Vec::new(),
        }
    }

    /// The canonical bytes of the document (pretty JSON, newline at the end).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates a document.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Violations> {
        let registry: Registry = serde_json::from_slice(bytes)
            .map_err(|e| Violations(vec![Violation::new("registry.json", e.to_string())]))?;
        registry.validate()?;
        Ok(registry)
    }

    /// The subnet a node belongs to, if any.
    pub fn subnet_of(&self, node_id: &str) -> Option<&str> {
        self.subnets
            .iter()
            .find(|(_, s)| s.members.iter().any(|m| m == node_id))
            .map(|(id, _)| id.as_str())
    }

    /// The GuestOS version a node should run: its subnet's, or the
    /// unassigned-nodes version.
    pub fn guestos_version_for(&self, node_id: &str) -> Option<&str> {
        match self.subnet_of(node_id) {
            Some(subnet) => self.subnets.get(subnet).map(|s| s.guestos_version.as_str()),
            None => self.unassigned_nodes_guestos_version.as_deref(),
        }
    }

    /// Checks every rule; lists every violation.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut out = Vec::new();
        if self.version == 0 {
            out.push(Violation::new("version", "must be 1 or more"));
        }
        for (kind, map) in [
            ("guestos_versions", &self.guestos_versions),
            ("hostos_versions", &self.hostos_versions),
        ] {
            for (id, v) in map {
                let field = format!("{kind}.{id}");
                if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    out.push(Violation::new(
                        &field,
                        "a version id is non-empty, without spaces",
                    ));
                }
                if v.release_package_urls.is_empty() {
                    out.push(Violation::new(
                        format!("{field}.release_package_urls"),
                        "at least one URL is needed",
                    ));
                }
                for url in &v.release_package_urls {
                    if !matches!(url.scheme(), "http" | "https" | "file") {
                        out.push(Violation::new(
                            format!("{field}.release_package_urls"),
                            format!("{url}: only http, https and file URLs are allowed"),
                        ));
                    }
                }
                if let Err(e) = check_sha256(
                    &format!("{field}.release_package_sha256"),
                    &v.release_package_sha256,
                ) {
                    out.push(e);
                }
                for m in v.launch_measurements.iter().flatten() {
                    if hex::decode(m).map(|b| b.len() != 48).unwrap_or(true) {
                        out.push(Violation::new(
                            format!("{field}.launch_measurements"),
                            format!("{m:?} is not a 48-byte measurement in hex"),
                        ));
                    }
                }
            }
        }
        for (id, op) in &self.node_operators {
            let field = format!("node_operators.{id}");
            if let Err(e) = principal(&field, id) {
                out.push(e);
            }
            if let Err(e) = crate::operator::OperatorPublicKey::from_hex(
                &format!("{field}.public_key"),
                &op.public_key,
            ) {
                out.push(e);
            }
        }
        let mut ips = BTreeSet::new();
        for (id, node) in &self.nodes {
            let field = format!("nodes.{id}");
            if let Err(e) = principal(&field, id) {
                out.push(e);
            }
            if !self.node_operators.contains_key(&node.operator) {
                out.push(Violation::new(
                    format!("{field}.operator"),
                    format!("unknown node operator {}", node.operator),
                ));
            }
            if !ips.insert(node.ipv6) {
                out.push(Violation::new(
                    format!("{field}.ipv6"),
                    format!("{} is used by another node", node.ipv6),
                ));
            }
            if let Some(v) = &node.hostos_version {
                check_version_ref(
                    &mut out,
                    &format!("{field}.hostos_version"),
                    &self.hostos_versions,
                    "HostOS",
                    v,
                );
            }
            if let Some(key) = &node.public_key
                && let Err(e) = check_ed25519_hex(&format!("{field}.public_key"), key)
            {
                out.push(e);
            }
        }
        let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
        for (id, subnet) in &self.subnets {
            let field = format!("subnets.{id}");
            if let Err(e) = principal(&field, id) {
                out.push(e);
            }
            if subnet.members.is_empty() {
                out.push(Violation::new(
                    format!("{field}.members"),
                    "a subnet has at least one node",
                ));
            }
            for m in &subnet.members {
                if !self.nodes.contains_key(m) {
                    out.push(Violation::new(
                        format!("{field}.members"),
                        format!("unknown node {m}"),
                    ));
                }
                if let Some(other) = member_of.insert(m, id) {
                    out.push(Violation::new(
                        format!("{field}.members"),
                        format!("node {m} is already a member of subnet {other}"),
                    ));
                }
            }
            check_version_ref(
                &mut out,
                &format!("{field}.guestos_version"),
                &self.guestos_versions,
                "GuestOS",
                &subnet.guestos_version,
            );
        }
        if let Some(v) = &self.unassigned_nodes_guestos_version {
            check_version_ref(
                &mut out,
                "unassigned_nodes_guestos_version",
                &self.guestos_versions,
                "GuestOS",
                v,
            );
        }
        out.extend(check_routing_table(&self.routing_table, &self.subnets));
        for (id, bn) in &self.api_boundary_nodes {
            let field = format!("api_boundary_nodes.{id}");
            if !self.nodes.contains_key(id) {
                out.push(Violation::new(&field, format!("unknown node {id}")));
            }
            if let Some(subnet) = member_of.get(id.as_str()) {
                out.push(Violation::new(
                    &field,
                    format!("node {id} is a member of subnet {subnet}; API boundary nodes are unassigned"),
                ));
            }
            if bn.domain.is_empty() || bn.domain.contains(['/', ' ']) {
                out.push(Violation::new(
                    format!("{field}.domain"),
                    format!("{:?} is not a domain name", bn.domain),
                ));
            }
            check_version_ref(
                &mut out,
                &format!("{field}.guestos_version"),
                &self.guestos_versions,
                "GuestOS",
                &bn.guestos_version,
            );
        }
        for (i, rule) in self.firewall_rules.iter().enumerate() {
            let field = format!("firewall_rules[{i}]");
            if rule.prefixes.is_empty() {
                out.push(Violation::new(
                    format!("{field}.prefixes"),
                    "at least one prefix",
                ));
            }
            for p in &rule.prefixes {
                if !valid_prefix(p) {
                    out.push(Violation::new(
                        format!("{field}.prefixes"),
                        format!("{p:?} is not an address/length prefix"),
                    ));
                }
            }
            if rule.ports.contains(&0) {
                out.push(Violation::new(format!("{field}.ports"), "port 0"));
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Violations(out))
        }
    }
}

fn valid_prefix(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    if let Ok(a) = addr.parse::<std::net::Ipv4Addr>() {
        return len <= 32 && a.to_string() == addr;
    }
    addr.parse::<Ipv6Addr>().is_ok() && len <= 128
}

/// Checks routing-table entries: principals, `start <= end`, known
/// subnets, and no two ranges overlapping.
pub fn check_routing_table(
    entries: &[RoutingEntry],
    subnets: &BTreeMap<String, Subnet>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = format!("routing_table[{i}]");
        let start = principal(&format!("{field}.start"), &e.start);
        let end = principal(&format!("{field}.end"), &e.end);
        if !subnets.contains_key(&e.subnet) {
            out.push(Violation::new(
                format!("{field}.subnet"),
                format!("unknown subnet {}", e.subnet),
            ));
        }
        match (start, end) {
            (Ok(s), Ok(t)) => {
                let (s, t) = (s.to_u256(), t.to_u256());
                if s > t {
                    out.push(Violation::new(&field, "start is after end"));
                } else {
                    ranges.push((s, t, i));
                }
            }
            (s, t) => {
                out.extend(s.err());
                out.extend(t.err());
            }
        }
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 <= w[0].1 {
            out.push(Violation::new(
                format!("routing_table[{}]", w[1].2),
                format!("overlaps routing_table[{}]", w[0].2),
            ));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
    pub const CANISTER_A: &str = "rwlgt-iiaaa-aaaaa-aaaaa-cai";
    pub const CANISTER_B: &str = "renrk-eyaaa-aaaaa-aaada-cai";
    pub const CANISTER_C: &str = "qoctq-giaaa-aaaaa-aaaea-cai";

    pub fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    pub fn sha(n: u8) -> String {
        hex::encode([n; 32])
    }

    pub fn version(n: u8) -> ElectedVersion {
        ElectedVersion {
            release_package_urls: vec![
                Url::parse("https://example.org/update-img.tar.zst")
                    .unwrap_or_else(|_| unreachable!()),
            ],
            release_package_sha256: sha(n),
            launch_measurements: None,
        }
    }

    /// A registry with one operator, two nodes, one subnet on version "v1".
    pub fn sample() -> Registry {
        let mut r = Registry::genesis();
        let op = self_authenticating_id(&key(1));
        r.node_operators.insert(
            op.clone(),
            NodeOperator {
                public_key: hex::encode(key(1)),
                allowance: 3,
            },
        );
        r.guestos_versions.insert("v1".into(), version(1));
        r.hostos_versions.insert("h1".into(), version(2));
        for n in [10u8, 11] {
            r.nodes.insert(
                self_authenticating_id(&key(n)),
                Node {
                    operator: op.clone(),
                    ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)),
                    hostos_version: Some("h1".into()),
                    public_key: Some(hex::encode(key(n))),
                },
            );
        }
        r.subnets.insert(
            SUBNET.into(),
            Subnet {
                members: vec![self_authenticating_id(&key(10))],
                guestos_version: "v1".into(),
                ssh_readonly_keys: vec![],
                ssh_backup_keys: vec![],
            },
        );
        r.routing_table.push(RoutingEntry {
            start: CANISTER_A.into(),
            end: CANISTER_B.into(),
            subnet: SUBNET.into(),
        });
        r
    }

    fn fields(r: &Registry) -> Vec<String> {
        match r.validate() {
            Ok(()) => vec![],
            Err(v) => v.0.into_iter().map(|v| format!("{v}")).collect(),
        }
    }

    #[test]
    fn sample_is_valid_and_round_trips() {
        let r = sample();
        assert_eq!(fields(&r), Vec::<String>::new());
        let back = Registry::from_bytes(&r.to_bytes());
        assert_eq!(back, Ok(r.clone()));
        // Same records, same bytes.
        assert_eq!(r.to_bytes(), sample().to_bytes());
    }

    #[test]
    fn node_ids_are_self_authenticating_principals() {
        let id = self_authenticating_id(&key(7));
        let p = parse_principal(&id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.as_slice().len(), 29);
        assert_eq!(p.as_slice()[28], 2);
        assert_ne!(id, self_authenticating_id(&key(8)));
    }

    #[test]
    fn unknown_references_are_named() {
        let mut r = sample();
        if let Some(s) = r.subnets.get_mut(SUBNET) {
            s.guestos_version = "v9".into();
            s.members.push("aaaaa-aa".into());
        }
        let f = fields(&r);
        assert!(
            f.iter()
                .any(|m| m.contains("guestos_version") && m.contains("\"v9\" is not elected")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("unknown node aaaaa-aa")),
            "{f:?}"
        );
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut r = sample();
        r.routing_table.push(RoutingEntry {
            start: CANISTER_B.into(),
            end: CANISTER_C.into(),
            subnet: SUBNET.into(),
        });
        let f = fields(&r);
        assert_eq!(
            f,
            vec!["routing_table[1]: overlaps routing_table[0]".to_string()]
        );
        r.routing_table[1].start = CANISTER_C.into();
        assert_eq!(fields(&r), Vec::<String>::new());
        r.routing_table[1].end = CANISTER_B.into();
        assert!(fields(&r)[0].contains("start is after end"));
    }

    #[test]
    fn a_node_in_two_subnets_is_refused() {
        let mut r = sample();
        let other = self_authenticating_id(&key(99));
        r.subnets.insert(
            other,
            Subnet {
                members: vec![self_authenticating_id(&key(10))],
                guestos_version: "v1".into(),
                ssh_readonly_keys: vec![],
                ssh_backup_keys: vec![],
            },
        );
        assert!(fields(&r).iter().any(|m| m.contains("already a member")));
    }

    #[test]
    fn bad_values_are_reported_together() {
        let mut r = sample();
        if let Some(v) = r.guestos_versions.get_mut("v1") {
            v.release_package_sha256 = "XYZ".into();
            v.release_package_urls.clear();
        }
        r.firewall_rules.push(FirewallRule {
            prefixes: vec!["10.0.0.0/33".into()],
            ports: vec![0],
            action: FirewallAction::Allow,
            comment: String::new(),
        });
        let f = fields(&r);
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(Registry::from_bytes(b"{\"version\":1,\"bogus\":1}").is_err());
    }
}
