//! Prometheus metrics and the status file.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

/// The orchestrator's metrics (`icos_orchestrator_*`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    state: Family<StateLabel, Gauge>,
    last_transition: Gauge,
    transitions: Family<StateLabel, Counter>,
    /// Release bytes fetched over the network, shared with downloads.
    pub downloaded: Arc<AtomicU64>,
    downloaded_counter: Counter,
    phase_seconds: Family<PhaseLabel, Histogram>,
    registry_version: Gauge,
    /// Restarts of the supervised replica.
    pub replica_restarts: Counter,
    /// 1 while the supervised replica runs.
    pub replica_up: Gauge,
    access_updates: Family<WhatLabel, Counter>,
    rollbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("icos_orchestrator");
        let state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "state",
            "1 for the upgrade state the orchestrator is in, 0 for the others",
            state.clone(),
        );
        let last_transition = Gauge::default();
        registry.register(
            "last_transition_timestamp_seconds",
            "Unix time of the last state transition",
            last_transition.clone(),
        );
        let transitions = Family::<StateLabel, Counter>::default();
        registry.register(
            "transitions",
            "State transitions, by the state entered",
            transitions.clone(),
        );
        let downloaded = Arc::new(AtomicU64::new(0));
        let downloaded_counter = Counter::default();
        registry.register(
            "downloaded_bytes",
            "Release package bytes downloaded",
            downloaded_counter.clone(),
        );
        let phase_seconds = Family::<PhaseLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0])
        });
        registry.register(
            "phase_duration_seconds",
            "Duration of each upgrade phase (checking, downloading, verifying, installing, committing)",
            phase_seconds.clone(),
        );
        let registry_version = Gauge::default();
        registry.register(
            "registry_version",
            "Version of the registry the orchestrator follows",
            registry_version.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "rollbacks",
            "Upgrades installed and booted that never confirmed, so GRUB went back to the old slot",
            rollbacks.clone(),
        );
        let replica_restarts = Counter::default();
        registry.register(
            "replica_restarts",
            "Restarts of the replica payload (after an exit or a new configuration)",
            replica_restarts.clone(),
        );
        let replica_up = Gauge::default();
        registry.register(
            "replica_up",
            "1 while the replica payload runs",
            replica_up.clone(),
        );
        let access_updates = Family::<WhatLabel, Counter>::default();
        registry.register(
            "access_updates",
            "Changes made to follow the registry (ssh_readonly, ssh_backup, firewall)",
            access_updates.clone(),
        );
        for name in State::NAMES {
            state
                .get_or_create(&StateLabel {
                    state: name.to_owned(),
                })
                .set(i64::from(name == "idle"));
        }
        let m = Metrics {
            registry,
            state,
            last_transition,
            transitions,
            downloaded: Arc::clone(&downloaded),
            downloaded_counter,
            phase_seconds,
            registry_version,
            replica_restarts,
            replica_up,
            access_updates,
            rollbacks,
        };
        m.sync_downloaded();
        m
    }

    fn sync_downloaded(&self) {
        let total = self.downloaded.load(Ordering::Relaxed);
        let counted = self.downloaded_counter.get();
        if total > counted {
            self.downloaded_counter.inc_by(total - counted);
        }
    }

    /// Records entering `state` at `now` (Unix seconds).
    pub fn entered(&self, state: &State, now: u64) {
        for name in State::NAMES {
            self.state
                .get_or_create(&StateLabel {
                    state: name.to_owned(),
                })
                .set(i64::from(name == state.name()));
        }
        self.transitions
            .get_or_create(&StateLabel {
                state: state.name().to_owned(),
            })
            .inc();
        self.last_transition
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Records how long a phase took.
    pub fn phase(&self, phase: &str, seconds: f64) {
        self.phase_seconds
            .get_or_create(&PhaseLabel {
                phase: phase.to_owned(),
            })
            .observe(seconds);
    }

    /// Records the registry version followed.
    pub fn registry(&self, version: u64) {
        self.registry_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Records an upgrade found rolled back.
    pub fn rolled_back(&self) {
        self.rollbacks.inc();
    }

    /// Counts one change made to follow the registry (`ssh_readonly`,
    /// `ssh_backup`, `firewall`).
    pub fn access_updated(&self, what: &str) {
        self.access_updates
            .get_or_create(&WhatLabel {
                what: what.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.sync_downloaded();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The outcome of the last HostOS check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostosStatus {
    /// The HostOS version the host reported.
    pub running: Option<String>,
    /// The version the registry asks for, if different.
    pub target: Option<String>,
    /// What was done or why nothing could be.
    pub last_result: Option<String>,
}

/// What `status.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The upgrade state.
    pub state: Option<State>,
    /// Unix time it was entered.
    pub since: u64,
    /// The GuestOS version running.
    pub running_version: String,
    /// The node id in the registry, once found.
    pub node_id: Option<String>,
    /// The GuestOS version the registry asks for.
    pub target_version: Option<String>,
    /// The registry version followed.
    pub registry_version: Option<u64>,
    /// Whether the registry is the kept copy because no URL answered.
    pub registry_stale: bool,
    /// What confirming the boot at start did.
    pub boot_confirm: Option<String>,
    /// Release bytes downloaded since start.
    pub bytes_downloaded: u64,
    /// Seconds of each phase of the last attempt.
    pub phase_seconds: Vec<(String, f64)>,
    /// The last error.
    pub last_error: Option<String>,
    /// HostOS.
    pub hostos: HostosStatus,
    /// The supervised replica, when the orchestrator runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
    /// Upgrades that never confirmed their boot; their packages are not
    /// installed again.
    #[serde(default)]
    pub failed_upgrades: Vec<crate::attempt::FailedUpgrade>,
    /// Why the registry's target is not being installed, if it is not.
    #[serde(default)]
    pub not_retrying: Option<String>,
    /// Unix time this file was written.
    pub updated: u64,
}

/// What the status file says about the supervised replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The process id while it runs.
    pub pid: Option<u32>,
    /// Unix time it was last started.
    pub started: Option<u64>,
    /// Restarts since the orchestrator started.
    pub restarts: u64,
    /// How it last ended (exit status, signal, or why it could not start).
    pub last_exit: Option<String>,
    /// Where its configuration came from (the GuestOS config alone, or the
    /// registry version, subnet and node index).
    pub config_source: Option<String>,
}

/// Status writes of one process take turns: the upgrade passes and the
/// replica supervisor both write the file.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

impl Status {
    /// Writes the status as JSON to `path`, atomically (temporary file,
    /// then rename). Without a `replica` section of its own, the one
    /// already in the file is kept (the supervisor writes it).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let _turn = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if self.replica.is_none()
            && let Ok(old) = Status::read(path)
            && old.replica.is_some()
        {
            let mut merged = self.clone();
            merged.replica = old.replica;
            return merged.write_unlocked(path);
        }
        self.write_unlocked(path)
    }

    /// Replaces the `replica` section of the file at `path` (a default
    /// status when there is none yet).
    pub fn write_replica(path: &Path, replica: &ReplicaStatus) -> Result<(), Error> {
        let _turn = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = Status::read(path).unwrap_or_default();
        status.replica = Some(replica.clone());
        status.write_unlocked(path)
    }

    fn write_unlocked(&self, path: &Path) -> Result<(), Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating", e))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, "writing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "replacing", e))
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> Result<Status, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::io(
                path,
                "parsing",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_state_bytes_and_phases() {
        let m = Metrics::new();
        m.entered(
            &State::Downloading {
                version: "v2".into(),
            },
            1_700_000_000,
        );
        m.downloaded.fetch_add(1234, Ordering::Relaxed);
        m.phase("downloading", 2.5);
        m.registry(7);
        m.replica_restarts.inc_by(2);
        m.replica_up.set(1);
        m.access_updated("firewall");
        m.rolled_back();
        let text = m.render();
        for line in [
            "icos_orchestrator_state{state=\"downloading\"} 1",
            "icos_orchestrator_state{state=\"idle\"} 0",
            "icos_orchestrator_last_transition_timestamp_seconds 1700000000",
            "icos_orchestrator_downloaded_bytes_total 1234",
            "icos_orchestrator_phase_duration_seconds_count{phase=\"downloading\"} 1",
            "icos_orchestrator_transitions_total{state=\"downloading\"} 1",
            "icos_orchestrator_registry_version 7",
            "icos_orchestrator_replica_restarts_total 2",
            "icos_orchestrator_replica_up 1",
            "icos_orchestrator_access_updates_total{what=\"firewall\"} 1",
            "icos_orchestrator_rollbacks_total 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn status_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/status.json");
        let s = Status {
            state: Some(State::Idle),
            running_version: "v1".into(),
            last_error: Some("x".into()),
            ..Status::default()
        };
        s.write(&path).unwrap();
        assert_eq!(Status::read(&path).unwrap(), s);
        // The supervisor's section survives the passes' writes.
        let r = ReplicaStatus {
            pid: Some(42),
            restarts: 3,
            ..ReplicaStatus::default()
        };
        Status::write_replica(&path, &r).unwrap();
        s.write(&path).unwrap();
        let back = Status::read(&path).unwrap();
        assert_eq!(back.replica, Some(r));
        assert_eq!(back.running_version, "v1");
        let err = Status::read(&dir.path().join("none.json")).unwrap_err();
        assert!(err.to_string().contains("none.json: reading"), "{err}");
    }
}
