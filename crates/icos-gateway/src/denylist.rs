//! The denylist: canisters the gateway refuses to serve (451).
//!
//! The file is JSON, either a list of canister ids
//! (`["rwlgt-iiaaa-aaaaa-aaaaa-cai", …]`) or the object form ic-gateway
//! reads (`{"canisters": {"<id>": {…}}}`; every listed canister is blocked
//! everywhere, as this gateway has no client geolocation). It is checked
//! for changes periodically and swapped in atomically; a file that fails to
//! parse is logged and the previous list stays in force.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use candid::Principal;

/// Why a denylist could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DenylistError {
    /// The file could not be read.
    #[error("reading the denylist {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a denylist.
    #[error("parsing the denylist {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The set of denied canisters, replaceable while requests read it.
#[derive(Debug, Default)]
pub struct Denylist {
    set: ArcSwap<HashSet<Principal>>,
}

impl Denylist {
    /// An empty denylist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the canister is denied.
    pub fn contains(&self, id: &Principal) -> bool {
        self.set.load().contains(id)
    }

    /// How many canisters are denied.
    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    /// Whether no canister is denied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the set.
    pub fn replace(&self, set: HashSet<Principal>) {
        self.set.store(Arc::new(set));
    }
}

/// Parses the file contents (see the module documentation).
pub fn parse(json: &str) -> Result<HashSet<Principal>, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let ids: Vec<&str> = match &value {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or("every list item must be a canister id string")
            })
            .collect::<Result<_, _>>()?,
        serde_json::Value::Object(o) => o
            .get("canisters")
            .and_then(|c| c.as_object())
            .ok_or("an object denylist needs a \"canisters\" object")?
            .keys()
            .map(String::as_str)
            .collect(),
        _ => return Err("expected a JSON list of canister ids".into()),
    };
    ids.into_iter()
        .map(|s| Principal::from_text(s).map_err(|e| format!("'{s}': {e}")))
        .collect()
}

/// Reads and parses the file.
pub async fn load(path: &Path) -> Result<HashSet<Principal>, DenylistError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| DenylistError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse(&text).map_err(|reason| DenylistError::Parse {
        path: path.to_owned(),
        reason,
    })
}

async fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = tokio::fs::metadata(path).await.ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads the file into `list`, then reloads it whenever its modification
/// time or size changes. `on_reload` is told whether each reload succeeded.
pub async fn watch(
    path: PathBuf,
    list: Arc<Denylist>,
    interval: Duration,
    on_reload: impl Fn(bool) + Send + 'static,
) {
    let mut last = stamp(&path).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = stamp(&path).await;
        if now == last {
            continue;
        }
        last = now;
        match load(&path).await {
            Ok(set) => {
                tracing::info!(path = %path.display(), canisters = set.len(), "denylist reloaded");
                list.replace(set);
                on_reload(true);
            }
            Err(e) => {
                tracing::warn!("{e}; keeping the previous denylist");
                on_reload(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn forms() {
        let id = "rwlgt-iiaaa-aaaaa-aaaaa-cai";
        let p = Principal::from_text(id).unwrap();
        assert!(parse(&format!("[\"{id}\"]")).unwrap().contains(&p));
        assert!(
            parse(&format!(
                "{{\"canisters\": {{\"{id}\": {{\"localities\": []}}}}}}"
            ))
            .unwrap()
            .contains(&p)
        );
        assert!(parse("[]").unwrap().is_empty());
        assert!(parse("[1]").is_err());
        assert!(parse("[\"not-a-principal\"]").is_err());
        assert!(parse("{}").is_err());
        assert!(parse("nope").is_err());
    }
}
