//! The testnet configuration file, shared by every replica of a testnet.
//!
//! ```json
//! {
//!   "root_key_seed": "000102030405060708090a0b0c0d0e0f",
//!   "subnets": [
//!     {
//!       "id": "<subnet principal>",
//!       "type": "application",
//!       "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
//!       "nodes": 4
//!     }
//!   ]
//! }
//! ```
//!
//! Unknown keys are errors and every problem is reported at once. From the
//! seed come the root key, each subnet's key and each node's key and id
//! ([`crate::keys`]). The built-in canisters of a subnet take the first two
//! canister ids of its first range: the counter, then the asset canister.

use std::path::{Path, PathBuf};

use candid::Principal;
use ed25519_consensus::SigningKey;
use ic_verify_bls_signature::PrivateKey;
use serde::Deserialize;

use crate::keys;

/// The largest number of nodes a subnet may have.
pub const MAX_NODES: u32 = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestnetFile {
    root_key_seed: String,
    subnets: Vec<SubnetFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetFile {
    id: String,
    #[serde(rename = "type", default = "default_type")]
    subnet_type: String,
    canister_ranges: Vec<[String; 2]>,
    nodes: u32,
}

fn default_type() -> String {
    "application".to_string()
}

/// Why a testnet configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{origin}: {message}")]
    Json {
        /// The file (or `<inline>`).
        origin: String,
        /// What serde said.
        message: String,
    },
    /// Values broke rules; every problem, one a line.
    #[error("{}", .problems.join("\n"))]
    Invalid {
        /// Each problem, naming the file and the key.
        problems: Vec<String>,
    },
}

/// One node of a subnet.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node id (self-authenticating principal of its key).
    pub id: Principal,
    /// The node's Ed25519 key, signing query responses.
    pub key: SigningKey,
    /// The DER public key.
    pub key_der: Vec<u8>,
}

/// One subnet of the testnet.
#[derive(Clone)]
pub struct Subnet {
    /// The subnet id.
    pub id: Principal,
    /// `application`, `system` or `verified_application`.
    pub subnet_type: String,
    /// Canister-id ranges, both ends included.
    pub ranges: Vec<(Principal, Principal)>,
    /// The subnet's certificate-signing key.
    pub key: PrivateKey,
    /// Its DER public key.
    pub key_der: Vec<u8>,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The built-in counter canister.
    pub counter_id: Principal,
    /// The built-in asset canister.
    pub assets_id: Principal,
}

impl std::fmt::Debug for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subnet")
            .field("id", &self.id.to_text())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Subnet {
    /// Whether `canister` is in one of the subnet's ranges.
    pub fn hosts(&self, canister: &Principal) -> bool {
        self.ranges.iter().any(|(a, b)| {
            a.as_slice() <= canister.as_slice() && canister.as_slice() <= b.as_slice()
        })
    }
}

/// A loaded, validated testnet.
#[derive(Clone)]
pub struct Testnet {
    /// The root seed.
    pub seed: Vec<u8>,
    /// The root (NNS) key.
    pub root_key: PrivateKey,
    /// Its DER public key, as `/api/v2/status` serves it.
    pub root_key_der: Vec<u8>,
    /// The subnets.
    pub subnets: Vec<Subnet>,
}

impl std::fmt::Debug for Testnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testnet")
            .field("root_key", &hex::encode(&self.root_key_der))
            .field("subnets", &self.subnets)
            .finish_non_exhaustive()
    }
}

/// The canister id with index `n`: 8 bytes big-endian, then `0x01 0x01`.
pub fn canister_id(n: u64) -> Principal {
    let mut b = n.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 1]);
    Principal::from_slice(&b)
}

/// The index of a canister id of the standard form.
pub fn canister_index(p: &Principal) -> Option<u64> {
    let b = p.as_slice();
    if b.len() == 10 && b[8] == 1 && b[9] == 1 {
        Some(u64::from_be_bytes(b[..8].try_into().ok()?))
    } else {
        None
    }
}

impl Testnet {
    /// Loads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Testnet, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Testnet, ConfigError> {
        let file: TestnetFile = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let seed = match hex::decode(&file.root_key_seed) {
            Ok(s) if s.len() >= 16 => s,
            Ok(_) => {
                problems.push(format!(
                    "{origin}: root_key_seed: must be at least 16 bytes"
                ));
                Vec::new()
            }
            Err(e) => {
                problems.push(format!("{origin}: root_key_seed: not hex: {e}"));
                Vec::new()
            }
        };
        if file.subnets.is_empty() {
            problems.push(format!("{origin}: subnets: at least one subnet is needed"));
        }
        let root_key = keys::root_key(&seed);
        let mut subnets = Vec::new();
        let mut all_ranges: Vec<(Principal, Principal, String)> = Vec::new();
        for (i, s) in file.subnets.iter().enumerate() {
            let at = format!("{origin}: subnets[{i}]");
            let id = match Principal::from_text(&s.id) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{at}.id: '{}' is not a principal: {e}", s.id));
                    continue;
                }
            };
            if subnets.iter().any(|x: &Subnet| x.id == id) {
                problems.push(format!("{at}.id: '{}' appears twice", s.id));
            }
            if !["application", "system", "verified_application"].contains(&s.subnet_type.as_str())
            {
                problems.push(format!(
                    "{at}.type: must be application, system or verified_application, got '{}'",
                    s.subnet_type
                ));
            }
            if s.nodes == 0 || s.nodes > MAX_NODES {
                problems.push(format!(
                    "{at}.nodes: must be 1..={MAX_NODES}, got {}",
                    s.nodes
                ));
            }
            let mut ranges = Vec::new();
            for (j, [a, b]) in s.canister_ranges.iter().enumerate() {
                match (Principal::from_text(a), Principal::from_text(b)) {
                    (Ok(a), Ok(b)) if a.as_slice() <= b.as_slice() => ranges.push((a, b)),
                    (Ok(_), Ok(_)) => problems.push(format!(
                        "{at}.canister_ranges[{j}]: the first id is after the last"
                    )),
                    _ => problems.push(format!(
                        "{at}.canister_ranges[{j}]: '{a}' or '{b}' is not a principal"
                    )),
                }
            }
            let Some(first) = ranges.first().map(|r| r.0) else {
                problems.push(format!(
                    "{at}.canister_ranges: at least one range is needed"
                ));
                continue;
            };
            let Some(n) = canister_index(&first) else {
                problems.push(format!(
                    "{at}.canister_ranges[0]: '{}' is not a canister id",
                    first.to_text()
                ));
                continue;
            };
            let counter_id = canister_id(n);
            let assets_id = canister_id(n.saturating_add(1));
            for (a, b) in &ranges {
                for (c, d, other) in &all_ranges {
                    if a.as_slice() <= d.as_slice() && c.as_slice() <= b.as_slice() {
                        problems.push(format!(
                            "{at}.canister_ranges: [{}, {}] overlaps a range of subnet {other}",
                            a.to_text(),
                            b.to_text()
                        ));
                    }
                }
            }
            for (a, b) in &ranges {
                all_ranges.push((*a, *b, s.id.clone()));
            }
            let key = keys::subnet_key(&seed, &id);
            let nodes = (0..s.nodes.min(MAX_NODES))
                .map(|k| {
                    let key = keys::node_key(&seed, &id, k);
                    Node {
                        id: keys::node_id(&key),
                        key_der: keys::ed25519_der(&key),
                        key,
                    }
                })
                .collect();
            let subnet = Subnet {
                id,
                subnet_type: s.subnet_type.clone(),
                ranges,
                key_der: keys::bls_der(&key),
                key,
                nodes,
                counter_id,
                assets_id,
            };
            if !subnet.hosts(&assets_id) {
                problems.push(format!(
                    "{at}.canister_ranges[0]: must hold at least two canister ids (the built-in canisters)"
                ));
            }
            subnets.push(subnet);
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(Testnet {
            root_key_der: keys::bls_der(&root_key),
            root_key,
            seed,
            subnets,
        })
    }

    /// The subnet with id `id`.
    pub fn subnet(&self, id: &Principal) -> Option<&Subnet> {
        self.subnets.iter().find(|s| &s.id == id)
    }

    /// A JSON description: root key, subnets, node ids and built-in canisters.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "root_key": hex::encode(&self.root_key_der),
            "subnets": self.subnets.iter().map(|s| serde_json::json!({
                "id": s.id.to_text(),
                "type": s.subnet_type,
                "public_key": hex::encode(&s.key_der),
                "canister_ranges": s.ranges.iter().map(|(a, b)| [a.to_text(), b.to_text()]).collect::<Vec<_>>(),
                "nodes": s.nodes.iter().map(|n| n.id.to_text()).collect::<Vec<_>>(),
                "canisters": { "counter": s.counter_id.to_text(), "assets": s.assets_id.to_text() },
            })).collect::<Vec<_>>(),
        })
    }

    /// The routing-table file of the `icos-boundary` router for this
    /// testnet; `url(subnet, node)` gives each node's `http://host:port`, and
    /// nodes without one are left out.
    pub fn routing_table(&self, url: impl Fn(usize, usize) -> Option<String>) -> serde_json::Value {
        serde_json::json!({
            "root_key": hex::encode(&self.root_key_der),
            "subnets": self.subnets.iter().enumerate().map(|(i, s)| serde_json::json!({
                "id": s.id.to_text(),
                "canister_ranges": s.ranges.iter().map(|(a, b)| [a.to_text(), b.to_text()]).collect::<Vec<_>>(),
                "nodes": s.nodes.iter().enumerate().filter_map(|(k, n)| url(i, k).map(|u| serde_json::json!({
                    "id": n.id.to_text(), "url": u,
                }))).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "root_key_seed": "000102030405060708090a0b0c0d0e0f",
      "subnets": [
        {"id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
         "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
         "nodes": 2}
      ]}"#;

    #[test]
    fn loads_and_derives() {
        let t = Testnet::parse(GOOD, "t.json").unwrap();
        assert_eq!(t.subnets[0].nodes.len(), 2);
        assert_eq!(
            t.subnets[0].counter_id.to_text(),
            "rwlgt-iiaaa-aaaaa-aaaaa-cai"
        );
        assert_eq!(
            t.subnets[0].assets_id.to_text(),
            "rrkah-fqaaa-aaaaa-aaaaq-cai"
        );
        assert_eq!(canister_id(0).to_text(), "rwlgt-iiaaa-aaaaa-aaaaa-cai");
        assert_eq!(t.root_key_der.len(), 133);
    }

    #[test]
    fn reports_every_problem() {
        let bad = r#"{"root_key_seed": "zz", "subnets": [
            {"id": "nope", "canister_ranges": [], "nodes": 1},
            {"id": "aaaaa-aa", "type": "x", "canister_ranges": [], "nodes": 0}]}"#;
        let Err(ConfigError::Invalid { problems }) = Testnet::parse(bad, "b.json") else {
            panic!("expected problems");
        };
        assert!(problems.len() >= 5, "{problems:?}");
        assert!(problems[0].starts_with("b.json: root_key_seed"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Testnet::parse(r#"{"root_key_seed":"00","subnets":[],"x":1}"#, "u.json");
        assert!(matches!(e, Err(ConfigError::Json { .. })));
    }
}
