//! The runner daemon: drives the [`restart`](crate::restart) state machine
//! with real effects — preparing and launching QEMU, following the serial
//! log for the boot markers, backing off, shutting down on SIGTERM,
//! notifying systemd and keeping the metrics textfile current.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use icos_config::HostOSConfig;
use icos_config_media::Extras;
use icos_qemu::{GUESTOS_BOOT_FAILURE, GUESTOS_BOOT_SUCCESS, Runner, RunningVm, Shutdown};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::restart::{Action, BootResult, Event, Policy, State, transition};
use crate::vm::{GUEST_CID, Launch, VmSpec, VsockMode, prepare_launch};

/// How often the serial log, QEMU and the signals are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a vhost-device-vsock daemon gets to create its socket.
const VSOCK_DAEMON_START: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT, blocked and read from a signalfd so that the loop
/// sees them between polls. Create it first thing in `main`, before any
/// thread starts, so that every thread blocks them. Child processes start
/// with an empty mask (the standard library resets it).
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in this thread (and the threads it will
    /// start) and opens a non-blocking signalfd for them.
    pub fn install() -> Result<Signals, nix::Error> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// The pending termination signal, if one arrived.
    pub fn pending(&self) -> Option<Signal> {
        match self.fd.read_signal() {
            Ok(Some(info)) => i32::try_from(info.ssi_signo)
                .ok()
                .and_then(|n| Signal::try_from(n).ok()),
            _ => None,
        }
    }
}

/// A `vhost-device-vsock` daemon the runner starts for each VM (vsock
/// through vhost-user where the host kernel has no vhost-vsock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockDaemon {
    /// The `vhost-device-vsock` binary.
    pub program: PathBuf,
    /// Its vhost-user socket (QEMU connects here).
    pub socket: PathBuf,
    /// The host-side socket: guest connections to port P reach `UDS_P`.
    pub uds_path: PathBuf,
}

/// Settings of the daemon.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// The HostOS config (resources, network, the GuestOS config source).
    pub config: HostOSConfig,
    /// Extra files for the CONFIG media.
    pub extras: Extras,
    /// The VM apart from the disk's content.
    pub spec: VmSpec,
    /// Where the kernel, initrd and media are written.
    pub work_dir: PathBuf,
    /// Restart policy.
    pub policy: Policy,
    /// How long to wait for a boot marker.
    pub boot_timeout: Duration,
    /// How long the guest gets after the ACPI power button.
    pub shutdown_grace: Duration,
    /// The QEMU binary and its runner settings.
    pub runner: Runner,
    /// A vhost-user vsock daemon to start with each VM.
    pub vsock_daemon: Option<VsockDaemon>,
    /// Mirror every serial line into the log (HostOS `verbose`).
    pub mirror_console: bool,
}

/// A VM start failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The work folder or the serial log's folder could not be created.
    #[error("creating the folder {}: {source}", path.display())]
    WorkDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Preparing the start failed.
    #[error(transparent)]
    Prepare(#[from] crate::vm::LaunchError),
    /// The refreshed grubenv could not be written.
    #[error("writing the refreshed grubenv: {0}")]
    Grubenv(#[source] crate::prepare::PrepareError),
    /// The vhost-device-vsock daemon did not come up.
    #[error("vhost-device-vsock: {0}")]
    VsockDaemon(String),
    /// QEMU could not be started.
    #[error(transparent)]
    Qemu(#[from] icos_qemu::RunError),
}

/// A running VM and what was started with it.
struct Running {
    vm: RunningVm,
    vsock: Option<Child>,
    slot: &'static str,
    watching: bool,
    boot_deadline: Option<Instant>,
    /// The serial line that held the last marker.
    marker_line: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.vsock.as_mut() {
            stop_vsock_daemon(child);
        }
    }
}

/// The daemon.
pub struct Daemon {
    settings: DaemonSettings,
    metrics: Metrics,
    notifier: Notifier,
    ready_sent: bool,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("work_dir", &self.settings.work_dir)
            .field("notifier", &self.notifier)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon reporting to `metrics` and `notifier`.
    pub fn new(settings: DaemonSettings, metrics: Metrics, notifier: Notifier) -> Daemon {
        Daemon {
            settings,
            metrics,
            notifier,
            ready_sent: false,
        }
    }

    /// Runs until the state machine says to exit; returns the exit code.
    pub fn run(&mut self, signals: &Signals) -> u8 {
        let policy = self.settings.policy;
        let mut state = State::INITIAL;
        let mut running: Option<Running> = None;
        let mut backoff_until = Instant::now();
        self.report(state);
        loop {
            let event = match state {
                State::Starting { .. } => match self.launch() {
                    Ok(r) => {
                        running = Some(r);
                        Event::Launched
                    }
                    Err(e) => {
                        tracing::error!("VM start failed: {e}");
                        self.metrics.launch_failed();
                        Event::LaunchFailed
                    }
                },
                State::Booting { .. } | State::Up { .. } => match running.as_mut() {
                    Some(r) => self.watch(r, signals),
                    None => Event::VmExited,
                },
                State::Waiting { .. } => wait_until(backoff_until, signals),
                State::Stopping => {
                    if let Some(r) = running.as_mut() {
                        self.shutdown(r);
                    }
                    running = None;
                    Event::ShutdownFinished
                }
                State::Done { code } => return code,
            };
            if event == Event::VmExited {
                running = None;
            }
            let (next, action) = transition(state, event, &policy);
            tracing::debug!(?state, ?event, ?next, ?action, "transition");
            match action {
                Action::Booted(result) => {
                    let (elapsed, line) = running
                        .as_ref()
                        .map(|r| (r.vm.uptime(), r.marker_line.trim()))
                        .unwrap_or_default();
                    self.metrics.booted(result, elapsed);
                    let secs = elapsed.as_secs_f64();
                    match result {
                        BootResult::Success => {
                            tracing::info!(
                                seconds = secs,
                                "GuestOS booted {secs:.1} s after the VM start: {line}"
                            );
                        }
                        BootResult::Failure => {
                            tracing::error!(
                                seconds = secs,
                                "GuestOS boot failed {secs:.1} s after the VM start: {line}"
                            );
                        }
                        BootResult::Timeout => tracing::error!(
                            seconds = secs,
                            "GuestOS printed no boot marker within {:?}",
                            self.settings.boot_timeout
                        ),
                    }
                    if let Some(r) = running.as_mut() {
                        // Keep looking for a late success after a timeout.
                        r.watching = result == BootResult::Timeout;
                    }
                }
                Action::Backoff(delay) => {
                    tracing::info!(?delay, "restarting the VM after a delay");
                    backoff_until = Instant::now() + delay;
                }
                Action::Launch
                | Action::Watch
                | Action::Shutdown
                | Action::Exit(_)
                | Action::Ignore => {}
            }
            if next != state {
                self.report(next);
            }
            state = next;
        }
    }

    fn report(&mut self, state: State) {
        self.metrics.set_state(state);
        if let Err(e) = self.metrics.write() {
            tracing::warn!("{e}");
        }
        let status = format!("GuestOS VM {}", state.name());
        let sent = match state {
            State::Booting { .. } if !self.ready_sent => {
                self.ready_sent = true;
                self.notifier.ready(&status)
            }
            State::Stopping => self.notifier.stopping(&status),
            _ => self.notifier.status(&status),
        };
        if let Err(e) = sent {
            tracing::warn!("{e}");
        }
    }

    fn launch(&mut self) -> Result<Running, StartError> {
        let s = &self.settings;
        let log_dir = s.spec.serial_log.parent().unwrap_or(&s.work_dir);
        for dir in [s.work_dir.as_path(), log_dir] {
            std::fs::create_dir_all(dir).map_err(|source| StartError::WorkDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let launch: Launch = prepare_launch(&s.config, &s.extras, &s.spec, &s.work_dir)?;
        let wrote = launch.grubenv.commit().map_err(StartError::Grubenv)?;
        if wrote {
            tracing::info!(
                "grubenv updated to {}/{}",
                launch.plan.refresh.after.alternative,
                launch.plan.refresh.after.cycle
            );
        }
        let vsock = match (&s.spec.vsock, &s.vsock_daemon) {
            (VsockMode::VhostUser { .. }, Some(d)) => {
                Some(start_vsock_daemon(d).map_err(StartError::VsockDaemon)?)
            }
            _ => None,
        };
        let slot = match launch.boot.slot {
            icos_grubenv::Slot::A => "A",
            icos_grubenv::Slot::B => "B",
        };
        // The vsock daemon is stopped with the VM (Running's drop).
        let running = Running {
            vm: s.runner.spawn(&launch.vm)?,
            vsock,
            slot,
            watching: true,
            boot_deadline: Some(Instant::now() + s.boot_timeout),
            marker_line: String::new(),
        };
        tracing::info!(
            pid = running.vm.pid(),
            slot,
            cmdline = %launch.boot.boot_args.cmdline,
            "GuestOS VM launched"
        );
        self.metrics.launched(slot);
        Ok(running)
    }

    /// Follows the VM until something happens: a marker (while watching),
    /// the boot timeout, QEMU's exit, or a signal.
    fn watch(&self, r: &mut Running, signals: &Signals) -> Event {
        let mirror = self.settings.mirror_console;
        loop {
            if let Some(sig) = signals.pending() {
                tracing::info!(signal = %sig, "stopping the GuestOS VM");
                return Event::Terminate;
            }
            let mut marker = None;
            let watching = r.watching;
            let pumped = r.vm.pump(&mut |line: &str| {
                if mirror {
                    tracing::info!(target: "guestos_console", "{line}");
                }
                if watching && marker.is_none() {
                    if line.contains(GUESTOS_BOOT_FAILURE) {
                        marker = Some((BootResult::Failure, line.to_owned()));
                    } else if line.contains(GUESTOS_BOOT_SUCCESS) {
                        marker = Some((BootResult::Success, line.to_owned()));
                    }
                }
            });
            let exited = match pumped {
                Ok(exited) => exited,
                Err(e) => {
                    tracing::error!("following the VM: {e}");
                    if let Err(e) = r.vm.kill() {
                        tracing::error!("killing QEMU: {e}");
                    }
                    true
                }
            };
            if let Some((result, line)) = marker {
                r.marker_line = line;
                return Event::Boot(result);
            }
            if exited {
                let output = r.vm.qemu_output();
                tracing::warn!(
                    slot = r.slot,
                    "the GuestOS VM stopped{}{}",
                    if output.trim().is_empty() {
                        ""
                    } else {
                        "; QEMU said: "
                    },
                    output.trim()
                );
                return Event::VmExited;
            }
            if watching && r.boot_deadline.is_some_and(|d| d <= Instant::now()) {
                r.boot_deadline = None;
                return Event::Boot(BootResult::Timeout);
            }
            std::thread::sleep(POLL);
        }
    }

    fn shutdown(&self, r: &mut Running) {
        let grace = self.settings.shutdown_grace;
        tracing::info!(?grace, "pressing the ACPI power button");
        match r.vm.shutdown(grace, |_| {}) {
            Ok(Shutdown::PoweredOff { elapsed, .. }) => {
                tracing::info!(?elapsed, "GuestOS powered off");
            }
            Ok(Shutdown::AlreadyExited { status }) => {
                tracing::info!(%status, "the VM had already stopped");
            }
            Ok(Shutdown::Killed { elapsed, qmp_error }) => match qmp_error {
                Some(e) => tracing::warn!(?elapsed, "QMP failed ({e}); QEMU destroyed"),
                None => tracing::warn!(?elapsed, "no power-off within {grace:?}; QEMU destroyed"),
            },
            Err(e) => tracing::error!("shutting down QEMU: {e}"),
        }
    }
}

fn wait_until(deadline: Instant, signals: &Signals) -> Event {
    loop {
        if let Some(sig) = signals.pending() {
            tracing::info!(signal = %sig, "stopping");
            return Event::Terminate;
        }
        let now = Instant::now();
        if now >= deadline {
            return Event::BackoffElapsed;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Starts `vhost-device-vsock` in its own process group and waits for its
/// vhost-user socket.
fn start_vsock_daemon(d: &VsockDaemon) -> Result<Child, String> {
    for stale in [&d.socket] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", stale.display())),
        }
    }
    let mut child = Command::new(&d.program)
        .arg("--guest-cid")
        .arg(GUEST_CID.to_string())
        .arg("--socket")
        .arg(&d.socket)
        .arg("--uds-path")
        .arg(&d.uds_path)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", d.program.display()))?;
    let deadline = Instant::now() + VSOCK_DAEMON_START;
    while !d.socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before creating {}",
                d.program.display(),
                d.socket.display()
            ));
        }
        if Instant::now() >= deadline {
            stop_vsock_daemon(&mut child);
            return Err(format!(
                "{} created no socket {} within {VSOCK_DAEMON_START:?}",
                d.program.display(),
                d.socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(pid = child.id(), socket = %d.socket.display(), uds = %d.uds_path.display(), "vhost-device-vsock started");
    Ok(child)
}

/// vhost-device-vsock ignores SIGTERM: SIGKILL its process group and reap it.
fn stop_vsock_daemon(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.wait();
}

/// The default work folder of the daemon.
pub fn default_work_dir() -> &'static Path {
    Path::new("/run/icos-guestos-vm")
}
