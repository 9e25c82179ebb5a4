//! The routing-table file (`--routing-table FILE`) and its reloading.
//!
//! The file is JSON:
//!
//! ```json
//! {
//!   "root_key": "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100…",
//!   "subnets": [
//!     {
//!       "id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
//!       "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
//!       "nodes": [{ "id": "…", "url": "http://[2001:db8::1]:8080" }]
//!     }
//!   ]
//! }
//! ```
//!
//! - `root_key` (optional): the NNS root key, DER, in hex; served in
//!   `/api/v2/status`.
//! - `subnets[].id`, `nodes[].id` and the range ends are textual principals.
//! - `canister_ranges`: `[start, end]` pairs, both ends included; no two
//!   ranges of the whole table may overlap.
//! - `nodes[].url`: `http://host:port` of the replica's HTTP endpoint.
//!
//! Unknown keys are errors. The file is polled; when its modification time
//! or size changes it is read again, and a file that does not load keeps the
//! previous table in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Uri;
use serde::Deserialize;

use crate::principal::{Principal, parse_principal};
use crate::routing::{CanisterRange, Node, RoutingTable, Subnet, TableError};
use crate::warn_limited;

/// Why the routing-table file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TableFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Values broke rules (every problem is listed).
    #[error("{path}: {}", .problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem.
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    #[serde(default)]
    root_key: Option<String>,
    subnets: Vec<FileSubnet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubnet {
    id: String,
    #[serde(default)]
    canister_ranges: Vec<[String; 2]>,
    nodes: Vec<FileNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    id: String,
    url: String,
}

/// Reads and validates a routing-table file.
pub fn load_table_file(path: &Path) -> Result<RoutingTable, TableFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TableFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_table(&text).map_err(|e| match e {
        ParseError::Json(source) => TableFileError::Json {
            path: path.to_owned(),
            source,
        },
        ParseError::Invalid(problems) => TableFileError::Invalid {
            path: path.to_owned(),
            problems,
        },
    })
}

enum ParseError {
    Json(serde_json::Error),
    Invalid(Vec<String>),
}

fn parse_table(text: &str) -> Result<RoutingTable, ParseError> {
    let file: FileTable = serde_json::from_str(text).map_err(ParseError::Json)?;
    let mut problems = Vec::new();
    let mut principal = |what: String, text: &str| match parse_principal(text) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(format!("{what}: '{text}': {e}"));
            None
        }
    };
    let mut subnets = Vec::new();
    let mut url_problems = Vec::new();
    for (i, s) in file.subnets.iter().enumerate() {
        let id = principal(format!("subnets[{i}].id"), &s.id);
        let mut ranges = Vec::new();
        for (j, [start, end]) in s.canister_ranges.iter().enumerate() {
            let start = principal(format!("subnets[{i}].canister_ranges[{j}][0]"), start);
            let end = principal(format!("subnets[{i}].canister_ranges[{j}][1]"), end);
            if let (Some(start), Some(end)) = (start, end) {
                ranges.push(CanisterRange { start, end });
            }
        }
        let mut nodes = Vec::new();
        for (j, n) in s.nodes.iter().enumerate() {
            let node_id = principal(format!("subnets[{i}].nodes[{j}].id"), &n.id);
            let url = match parse_node_url(&n.url) {
                Ok(u) => Some(u),
                Err(e) => {
                    url_problems.push(format!("subnets[{i}].nodes[{j}].url: '{}': {e}", n.url));
                    None
                }
            };
            if let (Some(node_id), Some(subnet_id), Some(url)) = (node_id, id, url) {
                nodes.push(Arc::new(Node {
                    id: node_id,
                    subnet_id,
                    url,
                }));
            }
        }
        if let Some(id) = id {
            subnets.push(Subnet { id, nodes, ranges });
        }
    }
    let root_key = match file.root_key.as_deref().map(hex::decode).transpose() {
        Ok(k) => k,
        Err(e) => {
            problems.push(format!("root_key: not hex: {e}"));
            None
        }
    };
    problems.extend(url_problems);
    if !problems.is_empty() {
        return Err(ParseError::Invalid(problems));
    }
    RoutingTable::new(subnets, root_key).map_err(|e| match e {
        TableError::Empty => ParseError::Invalid(vec![e.to_string()]),
        TableError::Invalid(p) => ParseError::Invalid(p),
    })
}

/// Parses a replica base URL: `http://host[:port]` with no path or query.
fn parse_node_url(text: &str) -> Result<Uri, &'static str> {
    let uri: Uri = text.parse().map_err(|_| "not a URL")?;
    if uri.scheme_str() != Some("http") {
        return Err("the scheme must be http");
    }
    if uri.authority().is_none() {
        return Err("no host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must have no path or query");
    }
    Ok(uri)
}

/// Polls `path` every `interval` and calls `publish` with each table that
/// loads after a change (and once at start). Runs until dropped.
pub async fn watch_table_file<F>(path: PathBuf, interval: Duration, publish: F)
where
    F: Fn(Arc<RoutingTable>),
{
    let mut last: Option<(SystemTime, u64)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let stamp = match tokio::fs::metadata(&path).await {
            Ok(m) => (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()),
            Err(e) => {
                warn_limited!(path = %path.display(), error = %e, "routing table file unreadable, keeping the current table");
                continue;
            }
        };
        if last == Some(stamp) {
            continue;
        }
        last = Some(stamp);
        let p = path.clone();
        match tokio::task::spawn_blocking(move || load_table_file(&p)).await {
            Ok(Ok(table)) => {
                tracing::info!(
                    path = %path.display(),
                    subnets = table.subnets().len(),
                    nodes = table.node_count(),
                    ranges = table.range_count(),
                    "routing table loaded"
                );
                publish(Arc::new(table));
            }
            Ok(Err(e)) => {
                warn_limited!(error = %e, "routing table not loaded, keeping the current table");
            }
            Err(e) => {
                warn_limited!(error = %e, "routing table load task failed");
            }
        }
    }
}

/// One subnet, for [`table_file_json`].
#[derive(Debug, Clone)]
pub struct SubnetSpec {
    /// The subnet id.
    pub id: Principal,
    /// Canister ranges, both ends included.
    pub ranges: Vec<(Principal, Principal)>,
    /// Replicas: node id and base URL.
    pub nodes: Vec<(Principal, String)>,
}

/// Writes the file text for a table (for tests and tools).
pub fn table_file_json(root_key: Option<&[u8]>, subnets: &[SubnetSpec]) -> String {
    let subnets: Vec<serde_json::Value> = subnets
        .iter()
        .map(|s| {
            let ranges: Vec<[String; 2]> = s
                .ranges
                .iter()
                .map(|(a, b)| [a.to_string(), b.to_string()])
                .collect();
            let nodes: Vec<serde_json::Value> = s
                .nodes
                .iter()
                .map(|(n, url)| serde_json::json!({"id": n.to_string(), "url": url}))
                .collect();
            serde_json::json!({"id": s.id.to_string(), "canister_ranges": ranges, "nodes": nodes})
        })
        .collect();
    let mut doc = serde_json::json!({ "subnets": subnets });
    if let (Some(key), Some(obj)) = (root_key, doc.as_object_mut()) {
        obj.insert("root_key".into(), hex::encode(key).into());
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "root_key": "0102ff",
      "subnets": [
        {
          "id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
          "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
          "nodes": [{"id": "2vxsx-fae", "url": "http://127.0.0.1:8080"}]
        }
      ]
    }"#;

    #[test]
    fn a_good_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, GOOD).unwrap();
        let t = load_table_file(&path).unwrap();
        assert_eq!(t.root_key(), Some(&[1u8, 2, 255][..]));
        let canister = parse_principal("ryjl3-tyaaa-aaaaa-aaaba-cai").unwrap();
        let s = t.lookup_canister(&canister).unwrap();
        assert_eq!(s.nodes[0].url.to_string(), "http://127.0.0.1:8080/");
        assert_eq!(s.nodes[0].subnet_id, s.id);
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = GOOD
            .replace("2vxsx-fae", "2vxsx-faa")
            .replace("http://127.0.0.1:8080", "https://x/y")
            .replace("0102ff", "zz");
        let Err(ParseError::Invalid(problems)) = parse_table(&bad) else {
            panic!("expected Invalid")
        };
        let all = problems.join("\n");
        assert!(all.contains("nodes[0].id: '2vxsx-faa'"), "{all}");
        assert!(all.contains("scheme must be http"), "{all}");
        assert!(all.contains("root_key"), "{all}");
        assert!(matches!(
            parse_table("{\"subnets\": [], \"x\": 1}"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse_table("{\"subnets\": []}"),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load_table_file(Path::new("/nonexistent/t.json")).unwrap_err();
        assert!(e.to_string().starts_with("reading /nonexistent/t.json: "));
    }

    #[test]
    fn generated_json_loads() {
        let s = Principal::from_slice(&[1; 29]).unwrap();
        let a = Principal::from_slice(&[0, 1]).unwrap();
        let b = Principal::from_slice(&[0, 9]).unwrap();
        let n = Principal::from_slice(&[7]).unwrap();
        let spec = SubnetSpec {
            id: s,
            ranges: vec![(a, b)],
            nodes: vec![(n, "http://127.0.0.1:9".into())],
        };
        let text = table_file_json(Some(&[9]), &[spec]);
        let t = match parse_table(&text) {
            Ok(t) => t,
            Err(_) => panic!("generated table does not parse"),
        };
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.root_key(), Some(&[9u8][..]));
    }
}
