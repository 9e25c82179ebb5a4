//! One orchestrator: the boot confirmation at start, then passes that
//! follow the registry.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use icos_grubenv::BootCycle;
use icos_registry::client::{ClientOptions, fetch_any};
use icos_slots::Step;
use url::Url;

use crate::attempt::{Attempt, FailedUpgrade, Records, Verdict, judge};
use crate::download::{self, DownloadOptions};
use crate::error::Error;
use crate::metrics::{HostosStatus, Metrics, Status};
use crate::seams::{DiskSource, HostAgent, Rebooter};
use crate::state::{Event, State, transition};
use crate::target::{self, NodeSelector, Release};

/// Where things are and how the orchestrator finds itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry base URLs (`nns_urls`), tried in an order rotated by the
    /// node id.
    pub registry_urls: Vec<Url>,
    /// The baked-in TUF trust root (`root.json`).
    pub trust_root: PathBuf,
    /// The datastore: verified registry under `registry/`, releases under
    /// `releases/`.
    pub datastore: PathBuf,
    /// How this node is found in the registry.
    pub node: NodeSelector,
    /// The running GuestOS version (the image's `version.txt`).
    pub running_version: String,
    /// Where the status JSON is written.
    pub status_path: PathBuf,
    /// Download timeouts.
    pub download: DownloadOptions,
    /// Timeout of each registry request.
    pub registry_timeout: Duration,
}

impl Config {
    fn registry_store(&self) -> PathBuf {
        self.datastore.join("registry")
    }

    /// Where release packages are downloaded.
    pub fn releases_dir(&self) -> PathBuf {
        self.datastore.join("releases")
    }

    /// The upgrade attempt and failed upgrades, kept in the datastore.
    pub fn records(&self) -> Records {
        Records::new(&self.datastore)
    }
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node runs what the registry asks for.
    UpToDate,
    /// An upgrade to this version is committed and the reboot was asked for.
    RebootRequested(String),
    /// Still waiting for the reboot asked for before.
    RebootPending(String),
    /// The registry names a package that was installed before and never
    /// confirmed its boot; the node stays on the running version.
    NotRetrying(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The orchestrator with its seams: the disk `D`, the reboot `R` and the
/// HostOS agent `H`.
pub struct Orchestrator<D, R, H> {
    config: Config,
    disk: D,
    rebooter: R,
    host: Option<H>,
    state: State,
    status: Status,
    metrics: Arc<Metrics>,
    last_registry: Option<(icos_registry::Registry, String)>,
    failed: Vec<FailedUpgrade>,
}

impl<D: DiskSource, R: Rebooter, H: HostAgent> Orchestrator<D, R, H> {
    /// An orchestrator in `Idle`. `host` is `None` where no HostOS agent
    /// exists (e.g. a VM run without HostOS).
    pub fn new(
        config: Config,
        disk: D,
        rebooter: R,
        host: Option<H>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let status = Status {
            state: Some(State::Idle),
            since: now(),
            running_version: config.running_version.clone(),
            ..Status::default()
        };
        Orchestrator {
            config,
            disk,
            rebooter,
            host,
            state: State::Idle,
            status,
            metrics,
            last_registry: None,
            failed: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    fn write_status(&mut self) {
        self.status.updated = now();
        self.status.bytes_downloaded = self.metrics.downloaded.load(Ordering::Relaxed);
        if let Err(e) = self.status.write(&self.config.status_path) {
            tracing::warn!(error = %e, "status not written");
        }
    }

    fn apply(&mut self, event: Event) {
        match transition(&self.state, &event) {
            Ok(next) => {
                tracing::info!(from = %self.state, to = %next, "upgrade state");
                let t = now();
                self.metrics.entered(&next, t);
                if let State::Backoff { reason, .. } = &next {
                    self.status.last_error = Some(reason.clone());
                }
                self.state = next;
                self.status.state = Some(self.state.clone());
                self.status.since = t;
                self.write_status();
            }
            // The driver below only sends events the table has; a miss is
            // a bug worth a log line, not a crash of the daemon.
            Err(e) => tracing::error!(error = %e, "state machine"),
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        tracing::warn!(state = %self.state, error = %error, "upgrade step failed");
        self.apply(Event::Failed(error.to_string()));
        error
    }

    fn phase_done(&mut self, phase: &str, started: Instant) {
        let s = started.elapsed().as_secs_f64();
        self.metrics.phase(phase, s);
        self.status.phase_seconds.retain(|(p, _)| p != phase);
        self.status.phase_seconds.push((phase.to_owned(), s));
    }

    /// Confirms the current boot, as the first thing at start: the boot
    /// cycle's `failsafe_check` (or `install`) becomes `stable`. A disk in
    /// `first_boot` holds an upgrade committed before a reboot that did not
    /// happen: the state becomes `RebootPending` and the reboot is asked
    /// for again.
    pub fn start(&mut self) -> Result<(), Error> {
        let records = self.config.records();
        self.failed = records.failed().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "failed upgrades not readable; starting without them");
            Vec::new()
        });
        let attempt = records.attempt().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "upgrade attempt record not readable; ignored");
            None
        });
        let (_, state) = self.disk.open()?.read_state()?;
        let verdict = judge(attempt, state, now());
        if let Some(label) = self.committed_slot()? {
            self.status.boot_confirm = Some(format!(
                "not confirmed: an upgrade of {label} is committed (first_boot) but not booted yet"
            ));
            self.apply(Event::PendingCommit(label));
            return self.request_reboot();
        }
        let mut disk = self.disk.open()?;
        let report = disk.confirm()?;
        let text = format!(
            "{} -> {} (slot {}{})",
            report.before,
            report.after,
            report.slot,
            if report.changed { "" } else { ", unchanged" }
        );
        tracing::info!(disk = %self.disk.name(), "boot confirmed: {text}");
        self.status.boot_confirm = Some(text);
        self.settle(&records, verdict);
        self.status.failed_upgrades = self.failed.clone();
        self.write_status();
        Ok(())
    }

    /// Acts on what became of the last upgrade, once the boot is
    /// confirmed: the record is cleared, and a rollback is remembered.
    fn settle(&mut self, records: &Records, verdict: Verdict) {
        match verdict {
            Verdict::Nothing | Verdict::Pending => return,
            Verdict::Booted(a) => tracing::info!(
                from = %a.from_version,
                to = %a.version,
                slot = %a.slot,
                "upgrade booted and confirmed"
            ),
            Verdict::Interrupted(a) => tracing::warn!(
                version = %a.version,
                slot = %a.slot,
                "an install stopped before its commit; the spare slot is invalid and the next pass starts over"
            ),
            Verdict::RolledBack(f) => {
                tracing::warn!(version = %f.version, reason = %f.reason, "upgrade rolled back");
                self.status.last_error = Some(format!("upgrade rolled back: {}", f.reason));
                self.metrics.rolled_back();
                match records.add_failed(f.clone()) {
                    Ok(all) => self.failed = all,
                    Err(e) => {
                        tracing::warn!(error = %e, "failed upgrade not recorded");
                        self.failed.push(f);
                    }
                }
            }
        }
        if let Err(e) = records.clear() {
            tracing::warn!(error = %e, "upgrade attempt record not removed");
        }
    }

    /// The slot of an upgrade that is committed (`first_boot`) and waits
    /// for its reboot, if the disk holds one.
    fn committed_slot(&mut self) -> Result<Option<String>, Error> {
        let (_, state) = self.disk.open()?.read_state()?;
        Ok((state.cycle == BootCycle::FirstBoot).then(|| {
            tracing::warn!(%state, "an upgrade is committed but not booted yet");
            format!("slot {}", state.alternative)
        }))
    }

    fn request_reboot(&mut self) -> Result<(), Error> {
        match self.rebooter.reboot() {
            Ok(()) => {
                tracing::info!("reboot requested");
                Ok(())
            }
            Err(e) => Err(self.fail(Error::Reboot(e))),
        }
    }

    /// One pass: fetch and verify the registry, decide, and when the
    /// GuestOS version differs, download, verify, install, commit and ask
    /// for the reboot; otherwise check HostOS. An `Err` leaves the state in
    /// `Backoff` with the reason.
    pub async fn pass(&mut self) -> Result<Outcome, Error> {
        if let State::RebootPending { version } = &self.state {
            return Ok(Outcome::RebootPending(version.clone()));
        }
        // The status shows the errors of the latest pass.
        self.status.last_error = None;
        self.apply(Event::Poll);

        // A commit whose reboot did not happen (the request failed): ask
        // again rather than install once more.
        match self.committed_slot() {
            Ok(None) => {}
            Ok(Some(label)) => {
                self.apply(Event::PendingCommit(label.clone()));
                self.request_reboot()?;
                return Ok(Outcome::RebootRequested(label));
            }
            Err(e) => return Err(self.fail(e)),
        }

        // Checking.
        let started = Instant::now();
        let release = match self.check().await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        self.phase_done("checking", started);
        let Some(release) = release else {
            self.apply(Event::UpToDate);
            self.check_hostos();
            self.write_status();
            return Ok(Outcome::UpToDate);
        };
        if let Some(failed) = self
            .failed
            .iter()
            .find(|f| f.version == release.version && f.sha256 == release.sha256)
        {
            let why = format!(
                "not installing {} again: {}; staying on {} until the registry names another version",
                release.version, failed.reason, self.config.running_version
            );
            if self.status.not_retrying.as_deref() != Some(why.as_str()) {
                tracing::warn!("{why}");
            }
            self.status.not_retrying = Some(why);
            self.apply(Event::UpToDate);
            self.check_hostos();
            self.write_status();
            return Ok(Outcome::NotRetrying(release.version));
        }
        self.status.not_retrying = None;
        self.apply(Event::Target(release.version.clone()));

        // Downloading.
        let dir = self.config.releases_dir();
        download::prune(&dir, Some(&release.sha256));
        let started = Instant::now();
        let fetched = download::download(
            &release,
            &dir,
            &self.config.download,
            Arc::clone(&self.metrics.downloaded),
        )
        .await;
        let fetched = match fetched {
            Ok(d) => d,
            Err(e) => return Err(self.fail(e)),
        };
        tracing::info!(
            version = %release.version,
            file = %fetched.path.display(),
            size = fetched.size,
            fetched = fetched.fetched,
            resumed = fetched.resumed,
            url = fetched.url.as_deref().unwrap_or("(already downloaded)"),
            "release downloaded"
        );
        self.phase_done("downloading", started);
        self.apply(Event::Downloaded);

        // Verifying: nothing reaches the disk before this.
        let started = Instant::now();
        let file = match download::verify(&release, &fetched.path, &dir) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e)),
        };
        self.phase_done("verifying", started);
        self.apply(Event::HashOk);

        // Installing and committing (icos-slots keeps the order: invalidate,
        // write, sync, read back, then flip grubenv). The attempt is on
        // record before the spare slot is touched, so the next start can
        // tell a rollback from an interrupted install.
        let records = self.config.records();
        let mut attempt = match self.disk.open().and_then(|mut d| d.read_state()) {
            Ok((_, state)) => Attempt {
                version: release.version.clone(),
                sha256: release.sha256.clone(),
                slot: state.upgrade_target(),
                from_slot: state.alternative,
                from_version: self.config.running_version.clone(),
                committed: false,
                at: now(),
            },
            Err(e) => return Err(self.fail(e.into())),
        };
        if let Err(e) = records.record(&attempt) {
            return Err(self.fail(e));
        }
        let started = Instant::now();
        let mut written_at = None;
        let mut install = || -> Result<icos_slots::InstallReport, Error> {
            let input = std::fs::File::open(&file).map_err(|e| Error::io(&file, "opening", e))?;
            let mut disk = self.disk.open()?;
            let mut on_step = |step: &Step| {
                tracing::info!("{step}");
                if *step == Step::Verifying {
                    written_at = Some(Instant::now());
                    self.apply(Event::Written);
                }
            };
            Ok(disk.install(input, &file, &mut on_step)?)
        };
        // The install is minutes of blocking disk I/O: on a multi-threaded
        // runtime the other workers keep serving (metrics) meanwhile.
        let installed = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(install),
            _ => install(),
        };
        if let Some(at) = written_at {
            let s = (at - started).as_secs_f64();
            self.metrics.phase("installing", s);
            self.status.phase_seconds.retain(|(p, _)| p != "installing");
            self.status.phase_seconds.push(("installing".into(), s));
        }
        let report = match installed {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        if let Some(at) = written_at {
            self.phase_done("committing", at);
        }
        tracing::info!(
            slot = %report.slot,
            version = %report.version,
            state = %report.after,
            "upgrade committed"
        );
        if report.version != release.version {
            // The elected hash is what counts; a differing VERSION.TXT is
            // worth a look by whoever elected it.
            tracing::warn!(
                elected = %release.version,
                image = %report.version,
                "the package's VERSION.TXT is not the elected version id"
            );
        }
        attempt.committed = true;
        attempt.at = now();
        if let Err(e) = records.record(&attempt) {
            // The commit stands; the next start judges by grubenv alone.
            tracing::warn!(error = %e, "upgrade attempt not marked committed");
        }
        self.apply(Event::Committed);
        // The package is in the slot; the download is no longer needed.
        download::prune(&dir, None);
        self.request_reboot()?;
        Ok(Outcome::RebootRequested(release.version))
    }

    /// Fetches the registry and decides the GuestOS target.
    async fn check(&mut self) -> Result<Option<Release>, Error> {
        let store = self.config.registry_store();
        // Before the node id is known the rotation is by nothing; once
        // known, by the node id as the IC does.
        let seed = self
            .status
            .node_id
            .as_deref()
            .map(target::seed_of)
            .unwrap_or(0);
        let attempted = fetch_any(
            &self.config.registry_urls,
            seed,
            &self.config.trust_root,
            &store,
            &ClientOptions {
                timeout: self.config.registry_timeout,
            },
        )
        .await?;
        let verified = attempted.verified;
        self.metrics.registry(verified.registry.version);
        self.status.registry_version = Some(verified.registry.version);
        self.status.registry_stale = verified.stale;
        if verified.stale {
            let why = attempted
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(
                version = verified.registry.version,
                errors = %why,
                "no registry URL gave a verified registry; following the last verified one"
            );
            self.status.last_error = Some(format!(
                "registry: following the last verified version {}: {why}",
                verified.registry.version
            ));
        }
        let registry = &verified.registry;
        let node_id = target::find_node(registry, &self.config.node)?;
        self.status.node_id = Some(node_id.clone());
        let release = target::guestos_target(registry, &node_id, &self.config.running_version)?;
        self.status.target_version = Some(
            release
                .as_ref()
                .map(|r| r.version.clone())
                .unwrap_or_else(|| self.config.running_version.clone()),
        );
        // Keep the registry for the HostOS check of this pass.
        self.last_registry = Some((registry.clone(), node_id));
        Ok(release)
    }

    /// Compares the node's HostOS version in the registry with the running
    /// HostOS's and, when they differ, asks HostOS to upgrade (each URL in
    /// the rotated order until one is accepted). The outcome goes to the
    /// status and the log; it does not change the GuestOS state.
    fn check_hostos(&mut self) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let Some((registry, node_id)) = self.last_registry.as_ref() else {
            return;
        };
        let mut out = HostosStatus::default();
        let result = (|| -> Result<String, Error> {
            let running = host.hostos_version().map_err(Error::HostAgent)?;
            out.running = Some(running.clone());
            let Some(release) = target::hostos_target(registry, node_id, &running)? else {
                return Ok(format!("HostOS runs {running}, as the registry asks"));
            };
            out.target = Some(release.version.clone());
            let mut errors = Vec::new();
            for url in &release.urls {
                tracing::info!(%url, version = %release.version, "asking HostOS to upgrade");
                match host.upgrade(url.as_str(), &release.sha256) {
                    Ok(()) => {
                        return Ok(format!(
                            "HostOS accepted the upgrade to {} from {url}",
                            release.version
                        ));
                    }
                    Err(e) => errors.push(format!("{url}: {e}")),
                }
            }
            Err(Error::HostAgent(format!(
                "upgrade to {} refused from every URL: {}",
                release.version,
                errors.join("; ")
            )))
        })();
        match result {
            Ok(text) => {
                tracing::info!("{text}");
                out.last_result = Some(text);
            }
            Err(e) => {
                tracing::warn!(error = %e, "HostOS upgrade check failed");
                out.last_result = Some(e.to_string());
            }
        }
        self.status.hostos = out;
    }
}
