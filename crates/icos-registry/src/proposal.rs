//! Proposal kinds and the pure function that applies one to a registry.
//!
//! [`Proposal::apply`] never touches disk: it takes a registry, returns the
//! next one (version + 1) or says why the change is refused.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::model::{
    ApiBoundaryNode, ElectedVersion, FirewallRule, Node, NodeOperator, Registry, RoutingEntry,
    Subnet, Violations, check_ed25519_hex, check_sha256, principal, self_authenticating_id,
};
use crate::operator::OperatorPublicKey;

/// One change to the registry, as governance votes on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Proposal {
    /// Elect (bless) a GuestOS version.
    ElectGuestosVersion {
        /// Version id.
        version: String,
        /// Release package (`update-img.tar.zst`) URLs.
        urls: Vec<Url>,
        /// SHA-256 of the release package, hex.
        sha256: String,
        /// Launch measurements, hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        launch_measurements: Option<Vec<String>>,
    },
    /// Elect a HostOS version.
    ElectHostosVersion {
        /// Version id.
        version: String,
        /// Release package URLs.
        urls: Vec<Url>,
        /// SHA-256 of the release package, hex.
        sha256: String,
    },
    /// Make a subnet run an elected GuestOS version.
    DeployGuestosToSubnet {
        /// Subnet id.
        subnet: String,
        /// Version id.
        version: String,
    },
    /// Make nodes outside any subnet run an elected GuestOS version.
    DeployGuestosToUnassignedNodes {
        /// Version id.
        version: String,
    },
    /// Make nodes run an elected HostOS version.
    DeployHostosToNodes {
        /// Node ids.
        nodes: Vec<String>,
        /// Version id.
        version: String,
    },
    /// Add a node operator, identified by its Ed25519 public key.
    AddNodeOperator {
        /// Public key, hex.
        public_key: String,
        /// How many nodes it may add.
        allowance: u64,
    },
    /// Set how many more nodes an operator may add.
    SetNodeOperatorAllowance {
        /// Operator id.
        operator: String,
        /// The new allowance.
        allowance: u64,
    },
    /// Register a node on behalf of its operator (uses one of the
    /// operator's allowance).
    AddNode {
        /// The node's Ed25519 public key, hex; the node id derives from it.
        public_key: String,
        /// Operator id.
        operator: String,
        /// The node's IPv6 address.
        ipv6: Ipv6Addr,
    },
    /// Create a subnet from unassigned nodes.
    CreateSubnet {
        /// The new subnet's id (a textual principal).
        subnet: String,
        /// Member node ids.
        nodes: Vec<String>,
        /// Elected GuestOS version the subnet runs.
        version: String,
        /// SSH read-only keys.
        #[serde(default)]
        ssh_readonly_keys: Vec<String>,
        /// SSH backup keys.
        #[serde(default)]
        ssh_backup_keys: Vec<String>,
    },
    /// Add unassigned nodes to a subnet.
    AddNodesToSubnet {
        /// Subnet id.
        subnet: String,
        /// Node ids.
        nodes: Vec<String>,
    },
    /// Replace a subnet's SSH keys.
    SetSubnetSshKeys {
        /// Subnet id.
        subnet: String,
        /// SSH read-only keys.
        readonly: Vec<String>,
        /// SSH backup keys.
        backup: Vec<String>,
    },
    /// Make an unassigned node an API boundary node.
    AddApiBoundaryNode {
        /// Node id.
        node: String,
        /// The domain it serves.
        domain: String,
        /// Elected GuestOS version it runs.
        version: String,
    },
    /// Stop nodes being API boundary nodes.
    RemoveApiBoundaryNodes {
        /// Node ids.
        nodes: Vec<String>,
    },
    /// Replace the routing table.
    SetRoutingTable {
        /// The new entries.
        entries: Vec<RoutingEntry>,
    },
    /// Replace the firewall rules.
    SetFirewallRules {
        /// The new rules.
        rules: Vec<FirewallRule>,
    },
}

/// Why a proposal cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// A GuestOS/HostOS version that is not elected.
    #[error("{what} version {version:?} is not elected")]
    UnknownVersion {
        /// "GuestOS" or "HostOS".
        what: &'static str,
        /// The version id.
        version: String,
    },
    /// The version id is already elected.
    #[error("{what} version {version:?} is already elected")]
    VersionExists {
        /// "GuestOS" or "HostOS".
        what: &'static str,
        /// The version id.
        version: String,
    },
    /// No such subnet.
    #[error("unknown subnet {0}")]
    UnknownSubnet(String),
    /// The subnet id is taken.
    #[error("subnet {0} already exists")]
    SubnetExists(String),
    /// No such node.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// The node is already registered.
    #[error("node {0} already exists")]
    NodeExists(String),
    /// The node already belongs to a subnet.
    #[error("node {node} is already a member of subnet {subnet}")]
    NodeAssigned {
        /// Node id.
        node: String,
        /// Its subnet.
        subnet: String,
    },
    /// No such node operator.
    #[error("unknown node operator {0}")]
    UnknownOperator(String),
    /// The operator exists.
    #[error("node operator {0} already exists")]
    OperatorExists(String),
    /// The operator has no allowance left.
    #[error("node operator {operator} has no node allowance left (allowance {allowance})")]
    AllowanceExceeded {
        /// Operator id.
        operator: String,
        /// Its remaining allowance.
        allowance: u64,
    },
    /// A value broke a rule, or the resulting registry would break one.
    #[error("{0}")]
    Invalid(Violations),
}

impl From<crate::model::Violation> for ProposalError {
    fn from(v: crate::model::Violation) -> Self {
        ProposalError::Invalid(Violations(vec![v]))
    }
}

fn elected(
    urls: &[Url],
    sha256: &str,
    launch_measurements: Option<Vec<String>>,
) -> Result<ElectedVersion, ProposalError> {
    check_sha256("sha256", sha256)?;
    Ok(ElectedVersion {
        release_package_urls: urls.to_vec(),
        release_package_sha256: sha256.to_owned(),
        launch_measurements,
    })
}

fn no_duplicates(field: &str, ids: &[String]) -> Result<(), ProposalError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(
                crate::model::Violation::new(field, format!("{id} is listed twice")).into(),
            );
        }
    }
    Ok(())
}

fn unassigned_nodes(r: &Registry, nodes: &[String]) -> Result<(), ProposalError> {
    no_duplicates("nodes", nodes)?;
    for n in nodes {
        if !r.nodes.contains_key(n) {
            return Err(ProposalError::UnknownNode(n.clone()));
        }
        if let Some(subnet) = r.subnet_of(n) {
            return Err(ProposalError::NodeAssigned {
                node: n.clone(),
                subnet: subnet.to_owned(),
            });
        }
    }
    Ok(())
}

impl Proposal {
    /// The kebab-case name of the kind, as on the command line.
    pub fn kind(&self) -> &'static str {
        match self {
            Proposal::ElectGuestosVersion { .. } => "elect-guestos-version",
            Proposal::ElectHostosVersion { .. } => "elect-hostos-version",
            Proposal::DeployGuestosToSubnet { .. } => "deploy-guestos-to-subnet",
            Proposal::DeployGuestosToUnassignedNodes { .. } => "deploy-guestos-to-unassigned-nodes",
            Proposal::DeployHostosToNodes { .. } => "deploy-hostos-to-nodes",
            Proposal::AddNodeOperator { .. } => "add-node-operator",
            Proposal::SetNodeOperatorAllowance { .. } => "set-node-operator-allowance",
            Proposal::AddNode { .. } => "add-node",
            Proposal::CreateSubnet { .. } => "create-subnet",
            Proposal::AddNodesToSubnet { .. } => "add-nodes-to-subnet",
            Proposal::SetSubnetSshKeys { .. } => "set-subnet-ssh-keys",
            Proposal::AddApiBoundaryNode { .. } => "add-api-boundary-node",
            Proposal::RemoveApiBoundaryNodes { .. } => "remove-api-boundary-nodes",
            Proposal::SetRoutingTable { .. } => "set-routing-table",
            Proposal::SetFirewallRules { .. } => "set-firewall-rules",
        }
    }

    /// Applies the proposal: the next registry (version + 1), valid as a
    /// whole, or the reason it is refused.
    pub fn apply(&self, current: &Registry) -> Result<Registry, ProposalError> {
        let mut r = current.clone();
        match self {
            Proposal::ElectGuestosVersion {
                version,
                urls,
                sha256,
                launch_measurements,
            } => {
                if r.guestos_versions.contains_key(version) {
                    return Err(ProposalError::VersionExists {
                        what: "GuestOS",
                        version: version.clone(),
                    });
                }
                let v = elected(urls, sha256, launch_measurements.clone())?;
                r.guestos_versions.insert(version.clone(), v);
            }
            Proposal::ElectHostosVersion {
                version,
                urls,
                sha256,
            } => {
                if r.hostos_versions.contains_key(version) {
                    return Err(ProposalError::VersionExists {
                        what: "HostOS",
                        version: version.clone(),
                    });
                }
                let v = elected(urls, sha256, None)?;
                r.hostos_versions.insert(version.clone(), v);
            }
            Proposal::DeployGuestosToSubnet { subnet, version } => {
                guestos_elected(&r, version)?;
                let s = r
                    .subnets
                    .get_mut(subnet)
                    .ok_or_else(|| ProposalError::UnknownSubnet(subnet.clone()))?;
                s.guestos_version = version.clone();
            }
            Proposal::DeployGuestosToUnassignedNodes { version } => {
                guestos_elected(&r, version)?;
                r.unassigned_nodes_guestos_version = Some(version.clone());
            }
            Proposal::DeployHostosToNodes { nodes, version } => {
                if !r.hostos_versions.contains_key(version) {
                    return Err(ProposalError::UnknownVersion {
                        what: "HostOS",
                        version: version.clone(),
                    });
                }
                no_duplicates("nodes", nodes)?;
                for n in nodes {
                    let node = r
                        .nodes
                        .get_mut(n)
                        .ok_or_else(|| ProposalError::UnknownNode(n.clone()))?;
                    node.hostos_version = Some(version.clone());
                }
            }
            Proposal::AddNodeOperator {
                public_key,
                allowance,
            } => {
                let key = OperatorPublicKey::from_hex("public_key", public_key)?;
                let id = key.id();
                if r.node_operators.contains_key(&id) {
                    return Err(ProposalError::OperatorExists(id));
                }
                r.node_operators.insert(
                    id,
                    NodeOperator {
                        public_key: key.to_hex(),
                        allowance: *allowance,
                    },
                );
            }
            Proposal::SetNodeOperatorAllowance {
                operator,
                allowance,
            } => {
                let op = r
                    .node_operators
                    .get_mut(operator)
                    .ok_or_else(|| ProposalError::UnknownOperator(operator.clone()))?;
                op.allowance = *allowance;
            }
            Proposal::AddNode {
                public_key,
                operator,
                ipv6,
            } => {
                let key = check_ed25519_hex("public_key", public_key)?;
                admit_node(&mut r, &key, operator, *ipv6)?;
            }
            Proposal::CreateSubnet {
                subnet,
                nodes,
                version,
                ssh_readonly_keys,
                ssh_backup_keys,
            } => {
                principal("subnet", subnet)?;
                if r.subnets.contains_key(subnet) {
                    return Err(ProposalError::SubnetExists(subnet.clone()));
                }
                guestos_elected(&r, version)?;
                unassigned_nodes(&r, nodes)?;
                for n in nodes {
                    if r.api_boundary_nodes.contains_key(n) {
                        return Err(crate::model::Violation::new(
                            "nodes",
                            format!("{n} is an API boundary node"),
                        )
                        .into());
                    }
                }
                r.subnets.insert(
                    subnet.clone(),
                    Subnet {
                        members: nodes.clone(),
                        guestos_version: version.clone(),
                        ssh_readonly_keys: ssh_readonly_keys.clone(),
                        ssh_backup_keys: ssh_backup_keys.clone(),
                    },
                );
            }
            Proposal::AddNodesToSubnet { subnet, nodes } => {
                if !r.subnets.contains_key(subnet) {
                    return Err(ProposalError::UnknownSubnet(subnet.clone()));
                }
                unassigned_nodes(&r, nodes)?;
                if let Some(s) = r.subnets.get_mut(subnet) {
                    s.members.extend(nodes.iter().cloned());
                }
            }
            Proposal::SetSubnetSshKeys {
                subnet,
                readonly,
                backup,
            } => {
                let s = r
                    .subnets
                    .get_mut(subnet)
                    .ok_or_else(|| ProposalError::UnknownSubnet(subnet.clone()))?;
                s.ssh_readonly_keys = readonly.clone();
                s.ssh_backup_keys = backup.clone();
            }
            Proposal::AddApiBoundaryNode {
                node,
                domain,
                version,
            } => {
                guestos_elected(&r, version)?;
                unassigned_nodes(&r, std::slice::from_ref(node))?;
                if r.api_boundary_nodes.contains_key(node) {
                    return Err(crate::model::Violation::new(
                        "node",
                        format!("{node} is already an API boundary node"),
                    )
                    .into());
                }
                r.api_boundary_nodes.insert(
                    node.clone(),
                    ApiBoundaryNode {
                        domain: domain.clone(),
                        guestos_version: version.clone(),
                    },
                );
            }
            Proposal::RemoveApiBoundaryNodes { nodes } => {
                no_duplicates("nodes", nodes)?;
                for n in nodes {
                    if r.api_boundary_nodes.remove(n).is_none() {
                        return Err(crate::model::Violation::new(
                            "nodes",
                            format!("{n} is not an API boundary node"),
                        )
                        .into());
                    }
                }
            }
            Proposal::SetRoutingTable { entries } => {
                for e in entries {
                    if !r.subnets.contains_key(&e.subnet) {
                        return Err(ProposalError::UnknownSubnet(e.subnet.clone()));
                    }
                }
                r.routing_table = entries.clone();
            }
            Proposal::SetFirewallRules { rules } => {
                r.firewall_rules = rules.clone();
            }
        }
        r.version = current.version + 1;
        r.validate().map_err(ProposalError::Invalid)?;
        Ok(r)
    }
}

fn guestos_elected(r: &Registry, version: &str) -> Result<(), ProposalError> {
    if r.guestos_versions.contains_key(version) {
        Ok(())
    } else {
        Err(ProposalError::UnknownVersion {
            what: "GuestOS",
            version: version.to_owned(),
        })
    }
}

/// Adds a node for an operator, taking one from its allowance. Returns the
/// node id.
pub fn admit_node(
    r: &mut Registry,
    node_key: &[u8; 32],
    operator: &str,
    ipv6: Ipv6Addr,
) -> Result<String, ProposalError> {
    let id = self_authenticating_id(node_key);
    if r.nodes.contains_key(&id) {
        return Err(ProposalError::NodeExists(id));
    }
    let op = r
        .node_operators
        .get_mut(operator)
        .ok_or_else(|| ProposalError::UnknownOperator(operator.to_owned()))?;
    if op.allowance == 0 {
        return Err(ProposalError::AllowanceExceeded {
            operator: operator.to_owned(),
            allowance: 0,
        });
    }
    op.allowance -= 1;
    r.nodes.insert(
        id.clone(),
        Node {
            operator: operator.to_owned(),
            ipv6,
            hostos_version: None,
            public_key: Some(hex::encode(node_key)),
        },
    );
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{CANISTER_A, CANISTER_B, SUBNET, key, sample, sha};

    fn node(n: u8) -> String {
        self_authenticating_id(&key(n))
    }

    fn url() -> Vec<Url> {
        vec![
            Url::parse("http://[2001:db8::1]/update-img.tar.zst")
                .unwrap_or_else(|_| unreachable!()),
        ]
    }

    fn apply(p: Proposal) -> Result<Registry, ProposalError> {
        p.apply(&sample())
    }

    #[test]
    fn elect_and_deploy_guestos() {
        let r = apply(Proposal::ElectGuestosVersion {
            version: "v2".into(),
            urls: url(),
            sha256: sha(9),
            launch_measurements: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.version, 2);
        let r = Proposal::DeployGuestosToSubnet {
            subnet: SUBNET.into(),
            version: "v2".into(),
        }
        .apply(&r)
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.version, 3);
        assert_eq!(r.guestos_version_for(&node(10)), Some("v2"));
        assert_eq!(r.guestos_version_for(&node(11)), None);
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            (
                Proposal::ElectGuestosVersion {
                    version: "v1".into(),
                    urls: url(),
                    sha256: sha(9),
                    launch_measurements: None,
                },
                "GuestOS version \"v1\" is already elected",
            ),
            (
                Proposal::ElectHostosVersion {
                    version: "h2".into(),
                    urls: url(),
                    sha256: "abc".into(),
                },
                "sha256: \"abc\" is not a SHA-256",
            ),
            (
                Proposal::DeployGuestosToSubnet {
                    subnet: SUBNET.into(),
                    version: "v7".into(),
                },
                "GuestOS version \"v7\" is not elected",
            ),
            (
                Proposal::DeployGuestosToSubnet {
                    subnet: "aaaaa-aa".into(),
                    version: "v1".into(),
                },
                "unknown subnet aaaaa-aa",
            ),
            (
                Proposal::DeployHostosToNodes {
                    nodes: vec![node(50)],
                    version: "h1".into(),
                },
                "unknown node",
            ),
            (
                Proposal::AddNodesToSubnet {
                    subnet: SUBNET.into(),
                    nodes: vec![node(10)],
                },
                "is already a member of subnet",
            ),
            (
                Proposal::SetNodeOperatorAllowance {
                    operator: node(60),
                    allowance: 1,
                },
                "unknown node operator",
            ),
            (
                Proposal::CreateSubnet {
                    subnet: "not a principal".into(),
                    nodes: vec![node(11)],
                    version: "v1".into(),
                    ssh_readonly_keys: vec![],
                    ssh_backup_keys: vec![],
                },
                "is not a textual principal",
            ),
            (
                Proposal::SetRoutingTable {
                    entries: vec![
                        RoutingEntry {
                            start: CANISTER_A.into(),
                            end: CANISTER_B.into(),
                            subnet: SUBNET.into(),
                        },
                        RoutingEntry {
                            start: CANISTER_A.into(),
                            end: CANISTER_A.into(),
                            subnet: SUBNET.into(),
                        },
                    ],
                },
                "overlaps",
            ),
        ];
        for (p, want) in cases {
            let err = apply(p.clone()).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(want), "{}: {err:?} lacks {want:?}", p.kind());
        }
    }

    #[test]
    fn allowance_is_spent_and_enforced() {
        let mut r = sample();
        let op = node(1);
        let p = Proposal::SetNodeOperatorAllowance {
            operator: op.clone(),
            allowance: 1,
        };
        r = p.apply(&r).unwrap_or_else(|e| panic!("{e}"));
        let add = |n: u8| Proposal::AddNode {
            public_key: hex::encode(key(n)),
            operator: op.clone(),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, u16::from(n)),
        };
        r = add(20).apply(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.node_operators[&op].allowance, 0);
        assert!(r.nodes.contains_key(&node(20)));
        let err = add(21).apply(&r).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, ProposalError::AllowanceExceeded { .. }),
            "{err}"
        );
        assert_eq!(
            add(20).apply(&r).map(|_| ()).unwrap_err(),
            ProposalError::NodeExists(node(20))
        );
    }

    #[test]
    fn create_subnet_and_add_nodes() {
        let other = node(77);
        let r = apply(Proposal::CreateSubnet {
            subnet: other.clone(),
            nodes: vec![node(11)],
            version: "v1".into(),
            ssh_readonly_keys: vec!["ssh-ed25519 AAAA test".into()],
            ssh_backup_keys: vec![],
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.subnet_of(&node(11)), Some(other.as_str()));
        let err = Proposal::AddNodesToSubnet {
            subnet: SUBNET.into(),
            nodes: vec![node(11)],
        }
        .apply(&r)
        .map(|_| ())
        .unwrap_err();
        assert!(matches!(err, ProposalError::NodeAssigned { .. }));
    }

    #[test]
    fn api_boundary_nodes_are_unassigned_nodes() {
        let add = |node: String| Proposal::AddApiBoundaryNode {
            node,
            domain: "api.example.org".into(),
            version: "v1".into(),
        };
        let r = apply(add(node(11))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.api_boundary_nodes[&node(11)].domain, "api.example.org");
        let err = add(node(10)).apply(&r).map(|_| ()).unwrap_err();
        assert!(matches!(err, ProposalError::NodeAssigned { .. }), "{err}");
        let err = add(node(11)).apply(&r).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("already an API boundary node"));
        // A subnet cannot take it while it serves as a boundary node.
        let err = Proposal::AddNodesToSubnet {
            subnet: SUBNET.into(),
            nodes: vec![node(11)],
        }
        .apply(&r)
        .map(|_| ())
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("API boundary nodes are unassigned"),
            "{err}"
        );
        let r = Proposal::RemoveApiBoundaryNodes {
            nodes: vec![node(11)],
        }
        .apply(&r)
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.api_boundary_nodes.is_empty());
    }

    #[test]
    fn proposals_round_trip_as_json() {
        let p = Proposal::DeployHostosToNodes {
            nodes: vec![node(10)],
            version: "h1".into(),
        };
        let text = serde_json::to_string(&p).unwrap_or_default();
        assert!(
            text.contains("\"kind\":\"deploy-hostos-to-nodes\""),
            "{text}"
        );
        let back: Proposal = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
    }
}
