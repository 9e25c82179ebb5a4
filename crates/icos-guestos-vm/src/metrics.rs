//! The runner's Prometheus metrics, written as a node_exporter textfile
//! (atomically: a reader never sees half a file).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::restart::{BootResult, State};

type Labels = Vec<(&'static str, &'static str)>;

/// The metrics, and the textfile they go to.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    file: Option<PathBuf>,
    state: Family<Labels, Gauge>,
    starts: Counter,
    restarts: Counter,
    launch_failures: Counter,
    boots: Family<Labels, Counter>,
    last_boot: Family<Labels, Gauge>,
    boot_duration: Gauge<f64, AtomicU64>,
    slot: Family<Labels, Gauge>,
    last_start: Gauge<f64, AtomicU64>,
}

/// Writing the textfile failed.
#[derive(Debug, thiserror::Error)]
#[error("writing metrics textfile {}: {source}", path.display())]
pub struct MetricsError {
    /// The textfile.
    pub path: PathBuf,
    /// The cause.
    pub source: icos_fs::FsError,
}

impl Metrics {
    /// Metrics written to `file` (if any) by [`Metrics::write`].
    pub fn new(file: Option<PathBuf>) -> Metrics {
        let mut registry = Registry::with_prefix("guestos_vm");
        let state = Family::<Labels, Gauge>::default();
        registry.register(
            "state",
            "The runner's state: 1 for the current one",
            state.clone(),
        );
        let starts = Counter::default();
        registry.register("starts", "VM starts (QEMU launched)", starts.clone());
        let restarts = Counter::default();
        registry.register(
            "restarts",
            "VM starts after the first one",
            restarts.clone(),
        );
        let launch_failures = Counter::default();
        registry.register(
            "launch_failures",
            "Starts whose preparation or QEMU launch failed",
            launch_failures.clone(),
        );
        let boots = Family::<Labels, Counter>::default();
        registry.register(
            "boots",
            "Boot watches by result (success, failure, timeout)",
            boots.clone(),
        );
        let last_boot = Family::<Labels, Gauge>::default();
        registry.register(
            "last_boot",
            "The result of the last boot watch: 1 for it",
            last_boot.clone(),
        );
        let boot_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "boot_duration_seconds",
            "Time from the last QEMU launch to its boot marker",
            boot_duration.clone(),
        );
        let slot = Family::<Labels, Gauge>::default();
        registry.register(
            "slot",
            "The slot the running VM was booted from: 1 for it",
            slot.clone(),
        );
        let last_start = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_start_timestamp_seconds",
            "Unix time of the last QEMU launch",
            last_start.clone(),
        );
        let metrics = Metrics {
            registry,
            file,
            state,
            starts,
            restarts,
            launch_failures,
            boots,
            last_boot,
            boot_duration,
            slot,
            last_start,
        };
        metrics.set_state(State::INITIAL);
        metrics
    }

    /// Records the current state.
    pub fn set_state(&self, state: State) {
        for name in State::NAMES {
            let value = i64::from(name == state.name());
            self.state.get_or_create(&vec![("state", name)]).set(value);
        }
    }

    /// Records a QEMU launch of `slot`.
    pub fn launched(&self, slot: &'static str) {
        if self.starts.get() > 0 {
            self.restarts.inc();
        }
        self.starts.inc();
        for s in ["A", "B"] {
            self.slot
                .get_or_create(&vec![("slot", s)])
                .set(i64::from(s == slot));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_start.set(now.as_secs_f64());
    }

    /// Records a failed launch.
    pub fn launch_failed(&self) {
        self.launch_failures.inc();
    }

    /// Records the end of a boot watch `elapsed` after the launch.
    pub fn booted(&self, result: BootResult, elapsed: Duration) {
        self.boots
            .get_or_create(&vec![("result", result.as_str())])
            .inc();
        for r in BootResult::ALL {
            self.last_boot
                .get_or_create(&vec![("result", r.as_str())])
                .set(i64::from(r == result));
        }
        self.boot_duration.set(elapsed.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Writes the textfile, if there is one.
    pub fn write(&self) -> Result<(), MetricsError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        icos_fs::write_atomic(path, self.render().as_bytes()).map_err(|source| MetricsError {
            path: path.clone(),
            source,
        })
    }

    /// The textfile.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guestos_vm.prom");
        let m = Metrics::new(Some(path.clone()));
        m.launched("A");
        m.booted(BootResult::Success, Duration::from_millis(31_500));
        m.set_state(State::Up {
            failures: 0,
            boot: BootResult::Success,
        });
        m.launched("B");
        m.write().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            "guestos_vm_state{state=\"running\"} 1",
            "guestos_vm_state{state=\"booting\"} 0",
            "guestos_vm_starts_total 2",
            "guestos_vm_restarts_total 1",
            "guestos_vm_launch_failures_total 0",
            "guestos_vm_boots_total{result=\"success\"} 1",
            "guestos_vm_last_boot{result=\"success\"} 1",
            "guestos_vm_last_boot{result=\"timeout\"} 0",
            "guestos_vm_boot_duration_seconds 31.5",
            "guestos_vm_slot{slot=\"B\"} 1",
            "guestos_vm_slot{slot=\"A\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files stay behind");
    }
}
