//! Which versions the registry asks this node to run: pure functions of the
//! verified registry.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use icos_registry::Registry;
use icos_registry::client::rotation_seed;
use icos_registry::model::ElectedVersion;
use url::Url;

use crate::error::Error;

/// How the node finds itself in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    /// By node id (a textual principal).
    Id(String),
    /// By the node's IPv6 address (each registered node has a unique one).
    Ipv6(Ipv6Addr),
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSelector::Id(id) => write!(f, "with id {id}"),
            NodeSelector::Ipv6(ip) => write!(f, "with IPv6 address {ip}"),
        }
    }
}

impl FromStr for NodeSelector {
    type Err = std::convert::Infallible;
    /// An IPv6 address selects by address, anything else by id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<Ipv6Addr>() {
            Ok(ip) => NodeSelector::Ipv6(ip),
            Err(_) => NodeSelector::Id(s.to_owned()),
        })
    }
}

/// The node's id in `registry`.
pub fn find_node(registry: &Registry, selector: &NodeSelector) -> Result<String, Error> {
    let found = match selector {
        NodeSelector::Id(id) => registry.nodes.contains_key(id).then(|| id.clone()),
        NodeSelector::Ipv6(ip) => registry
            .nodes
            .iter()
            .find(|(_, n)| n.ipv6 == *ip)
            .map(|(id, _)| id.clone()),
    };
    found.ok_or_else(|| Error::NodeNotFound {
        selector: selector.to_string(),
        registry_version: registry.version,
    })
}

/// The URL rotation seed of a node: the XOR of its principal's bytes, as
/// the IC does (the text's bytes if the id is no principal).
pub fn seed_of(node_id: &str) -> u64 {
    match icos_registry::model::principal("node", node_id) {
        Ok(p) => rotation_seed(p.as_slice()),
        Err(_) => rotation_seed(node_id.as_bytes()),
    }
}

/// A release to install: the version and its elected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The version id.
    pub version: String,
    /// URLs in the order this node tries them.
    pub urls: Vec<Url>,
    /// The elected SHA-256, lowercase hex.
    pub sha256: String,
}

fn release(
    kind: &'static str,
    elected: &std::collections::BTreeMap<String, ElectedVersion>,
    registry_version: u64,
    version: &str,
    seed: u64,
) -> Result<Release, Error> {
    let record = elected.get(version).ok_or_else(|| Error::NotElected {
        kind,
        version: version.to_owned(),
        registry_version,
    })?;
    Ok(Release {
        version: version.to_owned(),
        urls: icos_registry::client::rotated(&record.release_package_urls, seed),
        sha256: record.release_package_sha256.to_ascii_lowercase(),
    })
}

/// The GuestOS version the node must run: its subnet's, or the
/// unassigned-nodes version when it is in no subnet. `None` when that is
/// the running version, or when no version is set for unassigned nodes.
pub fn guestos_target(
    registry: &Registry,
    node_id: &str,
    running: &str,
) -> Result<Option<Release>, Error> {
    let Some(version) = registry.guestos_version_for(node_id) else {
        return Ok(None);
    };
    if version == running {
        return Ok(None);
    }
    release(
        "GuestOS",
        &registry.guestos_versions,
        registry.version,
        version,
        seed_of(node_id),
    )
    .map(Some)
}

/// The HostOS version the node's record asks for, when it differs from the
/// running HostOS's.
pub fn hostos_target(
    registry: &Registry,
    node_id: &str,
    running: &str,
) -> Result<Option<Release>, Error> {
    let Some(version) = registry
        .nodes
        .get(node_id)
        .and_then(|n| n.hostos_version.as_deref())
    else {
        return Ok(None);
    };
    if version == running.trim() {
        return Ok(None);
    }
    release(
        "HostOS",
        &registry.hostos_versions,
        registry.version,
        version,
        seed_of(node_id),
    )
    .map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use icos_registry::model::{Node, Subnet};

    const NODE: &str = "2vxsx-fae";
    const OTHER: &str = "aaaaa-aa";

    fn elected(n: u8) -> ElectedVersion {
        ElectedVersion {
            release_package_urls: vec![
                Url::parse(&format!("http://a.example/{n}")).unwrap(),
                Url::parse(&format!("http://b.example/{n}")).unwrap(),
            ],
            release_package_sha256: format!("{n:02X}").repeat(32),
            launch_measurements: None,
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::genesis();
        r.guestos_versions.insert("v1".into(), elected(1));
        r.guestos_versions.insert("v2".into(), elected(2));
        r.hostos_versions.insert("h2".into(), elected(3));
        for (id, ip) in [(NODE, "2001:db8::1"), (OTHER, "2001:db8::2")] {
            r.nodes.insert(
                id.into(),
                Node {
                    operator: "op".into(),
                    ipv6: ip.parse().unwrap(),
                    hostos_version: None,
                    public_key: None,
                },
            );
        }
        r
    }

    #[test]
    fn nodes_are_found_by_id_or_address() {
        let r = registry();
        let by_ip: NodeSelector = "2001:db8::2".parse().unwrap();
        assert_eq!(by_ip, NodeSelector::Ipv6("2001:db8::2".parse().unwrap()));
        assert_eq!(find_node(&r, &by_ip).unwrap(), OTHER);
        let by_id: NodeSelector = NODE.parse().unwrap();
        assert_eq!(find_node(&r, &by_id).unwrap(), NODE);
        let err = find_node(&r, &"2001:db8::9".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "registry version 1: no node with IPv6 address 2001:db8::9"
        );
        assert!(find_node(&r, &NodeSelector::Id("nope".into())).is_err());
    }

    #[test]
    fn unassigned_nodes_follow_the_unassigned_version() {
        let mut r = registry();
        assert_eq!(guestos_target(&r, NODE, "v1").unwrap(), None);
        r.unassigned_nodes_guestos_version = Some("v1".into());
        assert_eq!(guestos_target(&r, NODE, "v1").unwrap(), None);
        r.unassigned_nodes_guestos_version = Some("v2".into());
        let t = guestos_target(&r, NODE, "v1").unwrap().unwrap();
        assert_eq!(t.version, "v2");
        assert_eq!(t.sha256, "02".repeat(32), "hashes are lowercased");
        assert_eq!(t.urls.len(), 2);
    }

    #[test]
    fn subnet_members_follow_their_subnet() {
        let mut r = registry();
        r.unassigned_nodes_guestos_version = Some("v1".into());
        r.subnets.insert(
            "subnet".into(),
            Subnet {
                members: vec![NODE.into()],
                guestos_version: "v2".into(),
                ssh_readonly_keys: vec![],
                ssh_backup_keys: vec![],
            },
        );
        assert_eq!(
            guestos_target(&r, NODE, "v1").unwrap().unwrap().version,
            "v2"
        );
        assert_eq!(guestos_target(&r, NODE, "v2").unwrap(), None);
        // The other node is unassigned and already runs v1.
        assert_eq!(guestos_target(&r, OTHER, "v1").unwrap(), None);
        r.subnets.get_mut("subnet").unwrap().guestos_version = "v9".into();
        let err = guestos_target(&r, NODE, "v1").unwrap_err();
        assert!(
            err.to_string()
                .contains("GuestOS version \"v9\" is not elected")
        );
    }

    #[test]
    fn hostos_follows_the_node_record() {
        let mut r = registry();
        assert_eq!(hostos_target(&r, NODE, "h1").unwrap(), None);
        r.nodes.get_mut(NODE).unwrap().hostos_version = Some("h2".into());
        assert_eq!(hostos_target(&r, NODE, "h2\n").unwrap(), None);
        let t = hostos_target(&r, NODE, "h1").unwrap().unwrap();
        assert_eq!(t.version, "h2");
        assert_eq!(t.sha256, "03".repeat(32));
        r.nodes.get_mut(NODE).unwrap().hostos_version = Some("h9".into());
        assert!(hostos_target(&r, NODE, "h1").is_err());
    }

    #[test]
    fn urls_are_rotated_by_the_node_id() {
        // 2vxsx-fae is the anonymous principal: one byte, 0x04: seed 4.
        assert_eq!(seed_of(NODE), 4);
        let mut r = registry();
        r.unassigned_nodes_guestos_version = Some("v2".into());
        let t = guestos_target(&r, NODE, "v1").unwrap().unwrap();
        assert_eq!(t.urls[0].as_str(), "http://a.example/2");
        // aaaaa-aa is the management canister: no bytes, seed 0.
        assert_eq!(seed_of(OTHER), 0);
        assert_eq!(
            seed_of("not a principal"),
            rotation_seed(b"not a principal")
        );
    }
}
