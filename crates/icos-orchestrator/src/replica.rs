//! The replica payload, supervised: its configuration made from the GuestOS
//! config and the registry, and the process started, restarted with
//! exponential backoff, restarted on a new configuration and stopped with
//! SIGTERM then SIGKILL.
//!
//! The configuration is the testnet replica's (`serve --config FILE
//! --subnet ID --node-index N --listen ADDR`). When the registry places the
//! node in a subnet, the testnet holds every registry subnet that has
//! canister ranges in the routing table (its members counted as nodes) and
//! the replica serves the node's subnet as the node's place among the
//! members. Otherwise (no registry yet, the node not in it or in no
//! subnet) it is the one-node testnet the boot writes
//! (`icos_guestos_init::replica`). The root key seed always comes from the
//! GuestOS config, so every node given the same NNS URLs serves the same
//! root key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use icos_config::GuestOSConfig;
use icos_guestos_init::replica as boot;
use icos_registry::Registry;
use tokio::sync::watch;

use crate::error::Error;
use crate::files::write_if_changed;
use crate::metrics::{Metrics, ReplicaStatus, Status};

/// The most nodes a testnet subnet may have.
pub const MAX_NODES: usize = 64;

/// The replica's configuration: the testnet file and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The testnet file's contents.
    pub testnet_json: String,
    /// The arguments after the program.
    pub args: Vec<String>,
    /// Where it came from, for the status and the log.
    pub source: String,
}

/// The replica's configuration for this node. `registry` is the verified
/// registry and this node's id in it, when known.
pub fn generate(
    guestos: &GuestOSConfig,
    registry: Option<(&Registry, &str)>,
    config_path: &Path,
    listen: SocketAddr,
) -> Generated {
    let seed = boot::root_key_seed(guestos);
    let mut why_boot = "no verified registry yet".to_owned();
    if let Some((registry, node_id)) = registry {
        match from_registry(registry, node_id, &seed) {
            Ok((json, subnet, index)) => {
                return Generated {
                    testnet_json: json,
                    args: args(config_path, &subnet, index, listen),
                    source: format!("registry: subnet {subnet}, node index {index}"),
                };
            }
            Err(why) => why_boot = format!("registry: {why}"),
        }
    }
    Generated {
        testnet_json: boot::testnet_json(guestos),
        args: args(config_path, boot::SUBNET_ID, 0, listen),
        source: format!("GuestOS config only ({why_boot})"),
    }
}

fn args(config_path: &Path, subnet: &str, index: usize, listen: SocketAddr) -> Vec<String> {
    vec![
        "serve".into(),
        "--config".into(),
        config_path.display().to_string(),
        "--subnet".into(),
        subnet.to_owned(),
        "--node-index".into(),
        index.to_string(),
        "--listen".into(),
        listen.to_string(),
    ]
}

/// The testnet of the registry's subnets, the node's subnet and its index;
/// or why the registry cannot give one.
fn from_registry(
    registry: &Registry,
    node_id: &str,
    seed: &str,
) -> Result<(String, String, usize), String> {
    let Some(own) = registry.subnet_of(node_id) else {
        return Err(format!("node {node_id} is in no subnet"));
    };
    let mut ranges: BTreeMap<&str, Vec<[&str; 2]>> = BTreeMap::new();
    for e in &registry.routing_table {
        ranges
            .entry(e.subnet.as_str())
            .or_default()
            .push([e.start.as_str(), e.end.as_str()]);
    }
    let mut subnets = Vec::new();
    for (id, subnet) in &registry.subnets {
        let problem = match ranges.get(id.as_str()) {
            None => Some("has no canister range in the routing table".to_owned()),
            Some(_) if subnet.members.len() > MAX_NODES => Some(format!(
                "has {} members, the testnet replica serves at most {MAX_NODES}",
                subnet.members.len()
            )),
            Some(_) => None,
        };
        match problem {
            Some(p) if id == own => return Err(format!("the node's subnet {id} {p}")),
            Some(p) => {
                tracing::debug!(subnet = %id, "left out of the replica's testnet: {p}");
                continue;
            }
            None => {}
        }
        subnets.push(serde_json::json!({
            "id": id,
            "type": "application",
            "canister_ranges": ranges.get(id.as_str()).cloned().unwrap_or_default(),
            "nodes": subnet.members.len(),
        }));
    }
    let index = registry
        .subnets
        .get(own)
        .and_then(|s| s.members.iter().position(|m| m == node_id))
        .unwrap_or(0);
    let value = serde_json::json!({ "root_key_seed": seed, "subnets": subnets });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    Ok((text, own.to_owned(), index))
}

/// How restarts are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The wait after the first quick exit.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A run at least this long counts as healthy: the next wait starts
    /// over at `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    /// 1 s doubling to 60 s, reset after 5 minutes up.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(300),
        }
    }
}

/// The wait before the next start after `failures` quick exits in a row
/// (1 or more): `initial * 2^(failures-1)`, at most `max`.
pub fn backoff_delay(policy: &BackoffPolicy, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    policy
        .initial
        .checked_mul(1u32 << doublings.min(31))
        .map(|d| if doublings > 31 { policy.max } else { d })
        .unwrap_or(policy.max)
        .min(policy.max)
}

/// The count of quick exits in a row after one more exit following a run
/// of `uptime`.
pub fn failures_after_exit(policy: &BackoffPolicy, failures: u32, uptime: Duration) -> u32 {
    if uptime >= policy.reset_after {
        1
    } else {
        failures.saturating_add(1)
    }
}

/// How to start the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Run as this `(uid, gid)` (the orchestrator runs as root).
    pub user: Option<(u32, u32)>,
    /// The configuration file's contents: a change restarts the replica
    /// even when the arguments stay.
    pub config: String,
    /// Where the configuration came from.
    pub source: String,
}

/// The supervisor's settings.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Restart spacing.
    pub backoff: BackoffPolicy,
    /// How long SIGTERM may take before SIGKILL.
    pub grace: Duration,
    /// The status file whose `replica` section is kept current.
    pub status_path: Option<PathBuf>,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            backoff: BackoffPolicy::default(),
            grace: Duration::from_secs(10),
            status_path: None,
        }
    }
}

/// A running supervisor task; [`Supervisor::set`] gives it what to run.
pub struct Supervisor {
    launch: watch::Sender<Option<Launch>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: Arc<Mutex<ReplicaStatus>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!(
            "killed by signal {}",
            nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| s.to_string())
        ),
        _ => status.to_string(),
    }
}

struct Shared {
    options: SupervisorOptions,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<ReplicaStatus>>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        let snapshot = {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
            s.clone()
        };
        self.metrics
            .replica_up
            .set(i64::from(snapshot.pid.is_some()));
        if let Some(path) = &self.options.status_path
            && let Err(e) = Status::write_replica(path, &snapshot)
        {
            tracing::warn!(error = %e, "replica status not written");
        }
    }
}

impl Supervisor {
    /// Starts the supervisor task (on the current tokio runtime); it runs
    /// nothing until [`Supervisor::set`].
    pub fn start(options: SupervisorOptions, metrics: Arc<Metrics>) -> Supervisor {
        let (launch, launch_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(ReplicaStatus::default()));
        let shared = Shared {
            options,
            metrics,
            status: Arc::clone(&status),
        };
        let task = tokio::spawn(supervise(shared, launch_rx, stop_rx));
        Supervisor {
            launch,
            stop,
            task,
            status,
        }
    }

    /// Runs `launch`: starts it, or restarts the replica when it differs
    /// from what runs. Returns whether it differed.
    pub fn set(&self, launch: Launch) -> bool {
        self.launch.send_if_modified(|current| {
            if current.as_ref() == Some(&launch) {
                false
            } else {
                *current = Some(launch);
                true
            }
        })
    }

    /// What the status file's `replica` section holds.
    pub fn status(&self) -> ReplicaStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the replica (SIGTERM, then SIGKILL after the grace) and the
    /// task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "replica supervisor");
        }
    }
}

fn spawn(launch: &Launch) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&launch.program);
    cmd.args(&launch.args)
        .stdin(std::process::Stdio::null())
        // Its own process group: stopping it stops what it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = launch.user {
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn()
}

/// SIGTERM to the process group, SIGKILL after `grace`; returns how it
/// ended.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) -> String {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return match child.wait().await {
            Ok(s) => describe(s),
            Err(e) => format!("waiting: {e}"),
        };
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => {
            // Whatever it left behind in its group goes too.
            let _ = killpg(group, Signal::SIGKILL);
            describe(s)
        }
        Ok(Err(e)) => format!("waiting: {e}"),
        Err(_) => {
            tracing::warn!(pid, "the replica ignored SIGTERM; killing it");
            let _ = killpg(group, Signal::SIGKILL);
            match child.wait().await {
                Ok(s) => format!("{} after the grace", describe(s)),
                Err(e) => format!("waiting: {e}"),
            }
        }
    }
}

async fn supervise(
    shared: Shared,
    mut launch_rx: watch::Receiver<Option<Launch>>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let policy = shared.options.backoff;
    let mut failures = 0u32;
    let mut starts = 0u64;
    loop {
        // What to run; nothing until told.
        let launch = loop {
            if *stop_rx.borrow() {
                return;
            }
            if let Some(l) = launch_rx.borrow_and_update().clone() {
                break l;
            }
            tokio::select! {
                r = launch_rx.changed() => if r.is_err() { return },
                _ = stop_rx.changed() => return,
            }
        };
        if starts > 0 {
            shared.metrics.replica_restarts.inc();
        }
        starts += 1;
        let restarts = starts - 1;
        let started = Instant::now();
        let delay = match spawn(&launch) {
            Err(e) => {
                let why = format!("not started: {}: {e}", launch.program.display());
                tracing::error!("replica {why}");
                failures = failures_after_exit(&policy, failures, Duration::ZERO);
                shared.update(|s| {
                    s.pid = None;
                    s.restarts = restarts;
                    s.last_exit = Some(why);
                    s.config_source = Some(launch.source.clone());
                });
                backoff_delay(&policy, failures)
            }
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(
                    pid,
                    program = %launch.program.display(),
                    args = %launch.args.join(" "),
                    source = %launch.source,
                    "replica started"
                );
                shared.update(|s| {
                    s.pid = pid;
                    s.started = Some(unix_now());
                    s.restarts = restarts;
                    s.config_source = Some(launch.source.clone());
                });
                tokio::select! {
                    r = child.wait() => {
                        let how = match r {
                            Ok(s) => describe(s),
                            Err(e) => format!("waiting: {e}"),
                        };
                        failures = failures_after_exit(&policy, failures, started.elapsed());
                        let delay = backoff_delay(&policy, failures);
                        tracing::warn!(
                            pid,
                            uptime_s = started.elapsed().as_secs_f64(),
                            "replica {how}; starting it again in {delay:?}"
                        );
                        shared.update(|s| {
                            s.pid = None;
                            s.last_exit = Some(how);
                        });
                        delay
                    }
                    r = launch_rx.changed() => {
                        let how = terminate(&mut child, shared.options.grace).await;
                        if r.is_err() {
                            shared.update(|s| { s.pid = None; s.last_exit = Some(how); });
                            return;
                        }
                        tracing::info!(pid, "replica {how} for its new configuration");
                        shared.update(|s| {
                            s.pid = None;
                            s.last_exit = Some(format!("{how} (new configuration)"));
                        });
                        failures = 0;
                        continue;
                    }
                    _ = stop_rx.changed() => {
                        let how = terminate(&mut child, shared.options.grace).await;
                        tracing::info!(pid, "replica {how} (stopping)");
                        shared.update(|s| { s.pid = None; s.last_exit = Some(how); });
                        return;
                    }
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            r = launch_rx.changed() => {
                if r.is_err() {
                    return;
                }
                // A new configuration starts at once.
                failures = 0;
            }
            _ = stop_rx.changed() => return,
        }
    }
}

/// The replica side of the daemon: makes the configuration after each
/// registry check, writes it, and hands the launch to the [`Supervisor`].
pub struct ReplicaSync {
    /// The payload.
    pub program: PathBuf,
    /// Where the generated testnet file is written.
    pub config_path: PathBuf,
    /// Where the replica serves HTTP.
    pub listen: SocketAddr,
    /// Run as this `(uid, gid)`.
    pub user: Option<(u32, u32)>,
    /// The GuestOS config.
    pub guestos: GuestOSConfig,
    /// The running supervisor.
    pub supervisor: Supervisor,
}

impl ReplicaSync {
    /// Makes the configuration for `registry` (the verified registry and
    /// this node's id, when known), writes it (atomically, only when it
    /// changed; readable by the replica's user) and hands it to the
    /// supervisor, which (re)starts the replica when it changed.
    pub fn update(&mut self, registry: Option<(&Registry, &str)>) -> Result<bool, Error> {
        let g = generate(&self.guestos, registry, &self.config_path, self.listen);
        write_if_changed(&self.config_path, g.testnet_json.as_bytes(), 0o644)?;
        let changed = self.supervisor.set(Launch {
            program: self.program.clone(),
            args: g.args,
            user: self.user,
            config: g.testnet_json,
            source: g.source.clone(),
        });
        if changed {
            tracing::info!(source = %g.source, "replica configuration");
        }
        Ok(changed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use icos_registry::model::{Node, NodeOperator, RoutingEntry, Subnet};

    const SUBNET_A: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
    const SUBNET_B: &str = "2vxsx-fae";

    fn id(n: u8) -> String {
        icos_registry::model::self_authenticating_id(&[n; 32])
    }

    pub(crate) fn registry() -> Registry {
        let mut r = Registry::genesis();
        r.version = 5;
        r.node_operators.insert(
            id(1),
            NodeOperator {
                public_key: hex::encode([1u8; 32]),
                allowance: 9,
            },
        );
        r.guestos_versions.insert(
            "v1".into(),
            icos_registry::model::ElectedVersion {
                release_package_urls: vec!["https://example.org/u.tar.zst".parse().unwrap()],
                release_package_sha256: hex::encode([7u8; 32]),
                launch_measurements: None,
            },
        );
        for n in 10u8..14 {
            r.nodes.insert(
                id(n),
                Node {
                    operator: id(1),
                    ipv6: format!("2001:db8::{n}").parse().unwrap(),
                    hostos_version: None,
                    public_key: None,
                },
            );
        }
        r.subnets.insert(
            SUBNET_A.into(),
            Subnet {
                members: vec![id(10), id(11)],
                guestos_version: "v1".into(),
                ssh_readonly_keys: vec!["ssh-ed25519 AAAAro readonly@ops".into()],
                ssh_backup_keys: vec!["ssh-ed25519 AAAAbk backup@ops".into()],
            },
        );
        r.subnets.insert(
            SUBNET_B.into(),
            Subnet {
                members: vec![id(12)],
                guestos_version: "v1".into(),
                ssh_readonly_keys: vec![],
                ssh_backup_keys: vec![],
            },
        );
        r.routing_table.push(RoutingEntry {
            start: "rwlgt-iiaaa-aaaaa-aaaaa-cai".into(),
            end: "renrk-eyaaa-aaaaa-aaada-cai".into(),
            subnet: SUBNET_A.into(),
        });
        r.validate().unwrap();
        r
    }

    fn guestos() -> GuestOSConfig {
        icos_config_media::dev_guestos_config().unwrap()
    }

    const LISTEN: &str = "[::]:8080";

    #[test]
    fn without_a_registry_the_boot_testnet_is_served() {
        let g = generate(
            &guestos(),
            None,
            Path::new("/c/t.json"),
            LISTEN.parse().unwrap(),
        );
        assert_eq!(g.testnet_json, boot::testnet_json(&guestos()));
        assert_eq!(
            g.args.join(" "),
            format!(
                "serve --config /c/t.json --subnet {} --node-index 0 --listen [::]:8080",
                boot::SUBNET_ID
            )
        );
        assert!(g.source.contains("no verified registry"), "{}", g.source);
        // Unassigned: the same.
        let r = registry();
        let g2 = generate(
            &guestos(),
            Some((&r, &id(13))),
            Path::new("/c/t.json"),
            LISTEN.parse().unwrap(),
        );
        assert_eq!(g2.testnet_json, g.testnet_json);
        assert!(g2.source.contains("is in no subnet"), "{}", g2.source);
    }

    #[test]
    fn a_subnet_member_serves_its_subnet_at_its_index() {
        let r = registry();
        let g = generate(
            &guestos(),
            Some((&r, &id(11))),
            Path::new("/c/t.json"),
            LISTEN.parse().unwrap(),
        );
        assert_eq!(
            g.args.join(" "),
            format!(
                "serve --config /c/t.json --subnet {SUBNET_A} --node-index 1 --listen [::]:8080"
            )
        );
        let v: serde_json::Value = serde_json::from_str(&g.testnet_json).unwrap();
        assert_eq!(v["root_key_seed"], boot::root_key_seed(&guestos()));
        // Subnet B has no canister range: left out.
        assert_eq!(v["subnets"].as_array().unwrap().len(), 1);
        assert_eq!(v["subnets"][0]["id"], SUBNET_A);
        assert_eq!(v["subnets"][0]["nodes"], 2);
        assert_eq!(
            v["subnets"][0]["canister_ranges"][0][1],
            "renrk-eyaaa-aaaaa-aaada-cai"
        );
        assert_eq!(
            g.source,
            format!("registry: subnet {SUBNET_A}, node index 1")
        );
        // A member of the subnet without a range gets the boot testnet
        // and the reason.
        let g = generate(
            &guestos(),
            Some((&r, &id(12))),
            Path::new("/c/t.json"),
            LISTEN.parse().unwrap(),
        );
        assert!(g.source.contains("has no canister range"), "{}", g.source);
        // A new member changes the file.
        let mut r2 = r.clone();
        r2.subnets.get_mut(SUBNET_A).unwrap().members.push(id(13));
        let g2 = generate(
            &guestos(),
            Some((&r2, &id(11))),
            Path::new("/c/t.json"),
            LISTEN.parse().unwrap(),
        );
        assert_ne!(
            g2.testnet_json,
            generate(
                &guestos(),
                Some((&r, &id(11))),
                Path::new("/c/t.json"),
                LISTEN.parse().unwrap()
            )
            .testnet_json
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let p = BackoffPolicy::default();
        let expected = [1u64, 2, 4, 8, 16, 32, 60, 60, 60];
        for (i, e) in expected.iter().enumerate() {
            let failures = u32::try_from(i + 1).unwrap();
            assert_eq!(
                backoff_delay(&p, failures),
                Duration::from_secs(*e),
                "{failures}"
            );
        }
        for failures in [0, 1] {
            assert_eq!(backoff_delay(&p, failures), p.initial);
        }
        for failures in [31, 32, 33, 1000, u32::MAX] {
            assert_eq!(backoff_delay(&p, failures), p.max, "{failures}");
        }
        let huge = BackoffPolicy {
            initial: Duration::MAX,
            ..p
        };
        assert_eq!(backoff_delay(&huge, 3), p.max);
        // Exits: quick ones add up, a long run starts over.
        let mut f = 0;
        for n in 1..=5 {
            f = failures_after_exit(&p, f, Duration::from_secs(1));
            assert_eq!(f, n);
        }
        assert_eq!(failures_after_exit(&p, f, p.reset_after), 1);
        assert_eq!(
            failures_after_exit(&p, f, p.reset_after - Duration::from_millis(1)),
            6
        );
        assert_eq!(failures_after_exit(&p, u32::MAX, Duration::ZERO), u32::MAX);
    }

    fn quick() -> SupervisorOptions {
        SupervisorOptions {
            backoff: BackoffPolicy {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
                reset_after: Duration::from_secs(30),
            },
            grace: Duration::from_millis(500),
            status_path: None,
        }
    }

    fn sh(script: &str, config: &str) -> Launch {
        Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            user: None,
            config: config.into(),
            source: "test".into(),
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashing_replica_is_restarted_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("starts");
        let metrics = Arc::new(Metrics::new());
        let mut opts = quick();
        opts.status_path = Some(dir.path().join("status.json"));
        let sup = Supervisor::start(opts, Arc::clone(&metrics));
        let script = format!("echo start >> {}; exit 3", log.display());
        assert!(sup.set(sh(&script, "a")));
        assert!(
            !sup.set(sh(&script, "a")),
            "the same launch changes nothing"
        );
        let started = Instant::now();
        let count = || {
            std::fs::read_to_string(&log)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        until("5 starts", || count() >= 5).await;
        // 50 + 100 + 200 + 200 ms of backoff at least.
        assert!(
            started.elapsed() >= Duration::from_millis(550),
            "{:?}",
            started.elapsed()
        );
        let s = sup.status();
        assert!(s.restarts >= 4, "{s:?}");
        assert_eq!(s.last_exit.as_deref(), Some("exited with code 3"));
        assert!(
            metrics
                .render()
                .contains("icos_orchestrator_replica_restarts_total")
        );
        let file = Status::read(&dir.path().join("status.json")).unwrap();
        assert!(file.replica.unwrap().restarts >= 3);
        sup.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_configuration_restarts_and_stop_terminates() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let metrics = Arc::new(Metrics::new());
        let sup = Supervisor::start(quick(), Arc::clone(&metrics));
        // Records its pid, then waits; SIGTERM ends it.
        let script = format!("echo $$ >> {}; exec sleep 30", pids.display());
        sup.set(sh(&script, "one"));
        let read = || std::fs::read_to_string(&pids).unwrap_or_default();
        until("the first start", || read().lines().count() == 1).await;
        until("running", || sup.status().pid.is_some()).await;
        assert!(metrics.render().contains("icos_orchestrator_replica_up 1"));
        let first = sup.status().pid.unwrap();
        // Same arguments, another configuration: restarted.
        assert!(sup.set(sh(&script, "two")));
        until("the second start", || read().lines().count() == 2).await;
        until("the new pid", || {
            sup.status().pid.is_some_and(|p| p != first)
        })
        .await;
        let s = sup.status();
        assert_eq!(s.restarts, 1);
        assert!(s.last_exit.as_deref().unwrap().contains("SIGTERM"), "{s:?}");
        let second = s.pid.unwrap();
        sup.stop().await;
        assert!(
            !Path::new(&format!("/proc/{second}")).exists() || {
                // A zombie is gone once reaped; the task waited for it.
                std::fs::read_to_string(format!("/proc/{second}/stat")).is_err()
            }
        );
        assert!(metrics.render().contains("icos_orchestrator_replica_up 0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_ignored_means_sigkill_after_the_grace() {
        let sup = Supervisor::start(quick(), Arc::new(Metrics::new()));
        sup.set(sh("trap '' TERM; while :; do sleep 0.05; done", "x"));
        until("running", || sup.status().pid.is_some()).await;
        // Let the shell install its trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = Arc::clone(&sup.status);
        let started = Instant::now();
        sup.stop().await;
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        let s = status.lock().unwrap().clone();
        assert!(
            s.last_exit
                .as_deref()
                .unwrap()
                .contains("SIGKILL after the grace"),
            "{s:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_program_is_retried_and_reported() {
        let sup = Supervisor::start(quick(), Arc::new(Metrics::new()));
        sup.set(Launch {
            program: "/nonexistent/replica".into(),
            args: vec![],
            user: None,
            config: String::new(),
            source: "test".into(),
        });
        until("two attempts", || sup.status().restarts >= 2).await;
        let s = sup.status();
        assert!(
            s.last_exit
                .unwrap()
                .contains("not started: /nonexistent/replica")
        );
        sup.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sync_writes_the_config_and_restarts_on_membership_changes() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let prog = dir.path().join("replica.sh");
        std::fs::write(
            &prog,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\nexec sleep 30\n",
                args.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config_path = dir.path().join("cfg/testnet.json");
        let mut sync = ReplicaSync {
            program: prog,
            config_path: config_path.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            user: None,
            guestos: guestos(),
            supervisor: Supervisor::start(quick(), Arc::new(Metrics::new())),
        };
        let r = registry();
        assert!(sync.update(None).unwrap());
        let lines = || std::fs::read_to_string(&args).unwrap_or_default();
        until("the boot config", || lines().lines().count() == 1).await;
        assert!(lines().contains(boot::SUBNET_ID));
        assert!(sync.update(Some((&r, &id(10)))).unwrap());
        until("the registry config", || lines().lines().count() == 2).await;
        assert!(!sync.update(Some((&r, &id(10)))).unwrap());
        // A new registry version with the same subnet changes nothing.
        let mut same = r.clone();
        same.version += 1;
        assert!(!sync.update(Some((&same, &id(10)))).unwrap());
        let text = std::fs::read_to_string(&config_path).unwrap();
        assert!(text.contains("\"nodes\": 2"), "{text}");
        let mut r2 = r.clone();
        r2.version += 1;
        r2.subnets.get_mut(SUBNET_A).unwrap().members.push(id(13));
        assert!(sync.update(Some((&r2, &id(10)))).unwrap());
        until("the new membership", || lines().lines().count() == 3).await;
        assert!(
            std::fs::read_to_string(&config_path)
                .unwrap()
                .contains("\"nodes\": 3")
        );
        sync.supervisor.stop().await;
    }
}
