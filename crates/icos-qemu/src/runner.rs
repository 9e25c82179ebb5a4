//! Running QEMU: spawn it in its own process group, follow the serial log,
//! watch for markers, shut it down, and always kill and reap it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::args::ConfigError;
use crate::config::VmConfig;
use crate::qmp::{Qmp, QmpError};
use crate::reaper::{Reaper, ReaperError};
use crate::serial::SerialTail;

/// The line IC-OS GuestOS prints on the serial console once it is up.
pub const GUESTOS_BOOT_SUCCESS: &str = "GUESTOS BOOT SUCCESS";

/// The line IC-OS GuestOS prints on the serial console when its boot failed.
pub const GUESTOS_BOOT_FAILURE: &str = "GUESTOS BOOT FAILURE";

/// How long IC-OS HostOS waits for a GuestOS boot marker.
pub const GUESTOS_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long IC-OS HostOS lets GuestOS shut down after the ACPI power
/// button before destroying it.
pub const GUESTOS_SHUTDOWN_GRACE: Duration = Duration::from_secs(120);

/// The default QEMU binary, looked up in `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// How much of QEMU's own stdout/stderr is kept (the end of it).
const OUTPUT_CAP: usize = 64 * 1024;

/// Running a VM failed (as opposed to the guest failing, which is an
/// [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The VM config could not be rendered.
    #[error("VM config: {0}")]
    Config(#[from] ConfigError),
    /// The config has no serial log to follow.
    #[error(
        "the VM has no serial log file to watch: set VmConfig::serial to a file console or one with log_file"
    )]
    NoSerialLog,
    /// The VM has no QMP socket.
    #[error("the VM has no QMP socket: set VmConfig::qmp_socket")]
    NoQmpSocket,
    /// Removing a stale serial log before the start failed.
    #[error("removing old serial log {}: {source}", path.display())]
    RemoveLog {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("starting {}: {source}{}", program.display(), spawn_hint(source))]
    Spawn {
        /// The QEMU binary.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the serial log failed.
    #[error("reading serial log {}: {source}", path.display())]
    ReadLog {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Waiting for QEMU failed.
    #[error("waiting for {} (pid {pid}): {message}", program.display())]
    Wait {
        /// The QEMU binary.
        program: PathBuf,
        /// Its pid.
        pid: u32,
        /// The cause.
        message: String,
    },
    /// A QMP operation failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The clean-up watcher could not be started.
    #[error(transparent)]
    Reaper(#[from] ReaperError),
    /// Signalling QEMU's process group failed.
    #[error("sending {signal} to process group {pgid} ({}): {source}", program.display())]
    Signal {
        /// The QEMU binary.
        program: PathBuf,
        /// The process group.
        pgid: u32,
        /// The signal.
        signal: Signal,
        /// The cause.
        source: Errno,
    },
}

fn spawn_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (install the Debian packages qemu-system-x86 and qemu-utils from bookworm-backports)"
    } else {
        ""
    }
}

/// What to wait for on the serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// A line containing any of these means success.
    pub success: Vec<String>,
    /// A line containing any of these means failure (checked before
    /// success).
    pub failure: Vec<String>,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Watch {
    /// Waits `timeout` for nothing in particular (add markers).
    pub fn new(timeout: Duration) -> Watch {
        Watch {
            success: Vec::new(),
            failure: Vec::new(),
            timeout,
        }
    }

    /// IC-OS GuestOS: [`GUESTOS_BOOT_SUCCESS`] / [`GUESTOS_BOOT_FAILURE`]
    /// within [`GUESTOS_BOOT_TIMEOUT`].
    pub fn guestos_boot() -> Watch {
        Watch::new(GUESTOS_BOOT_TIMEOUT)
            .success(GUESTOS_BOOT_SUCCESS)
            .failure(GUESTOS_BOOT_FAILURE)
    }

    /// Adds a success marker.
    pub fn success(mut self, marker: impl Into<String>) -> Watch {
        self.success.push(marker.into());
        self
    }

    /// Adds a failure marker.
    pub fn failure(mut self, marker: impl Into<String>) -> Watch {
        self.failure.push(marker.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Watch {
        self.timeout = timeout;
        self
    }
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A success marker appeared.
    Success {
        /// The line that held it.
        line: String,
        /// Time since the watch started.
        elapsed: Duration,
        /// Serial lines seen since the VM started, the marker line included.
        lines: usize,
    },
    /// A failure marker appeared.
    Failure {
        /// The line that held it.
        line: String,
        /// Time since the watch started.
        elapsed: Duration,
        /// The last serial lines, ending with the marker line.
        tail: Vec<String>,
    },
    /// No marker within the timeout.
    Timeout {
        /// Time since the watch started.
        elapsed: Duration,
        /// The last serial lines.
        tail: Vec<String>,
    },
    /// QEMU exited without a marker.
    Exited {
        /// QEMU's exit status.
        status: ExitStatus,
        /// Time since the watch started.
        elapsed: Duration,
        /// The last serial lines.
        tail: Vec<String>,
        /// The end of QEMU's own stdout and stderr (its error messages).
        qemu_output: String,
    },
}

impl Outcome {
    /// Whether a success marker appeared.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success { .. })
    }

    /// Time from the start of the watch to the outcome.
    pub fn elapsed(&self) -> Duration {
        match self {
            Outcome::Success { elapsed, .. }
            | Outcome::Failure { elapsed, .. }
            | Outcome::Timeout { elapsed, .. }
            | Outcome::Exited { elapsed, .. } => *elapsed,
        }
    }
}

/// How [`RunningVm::shutdown`] ended.
#[derive(Debug)]
pub enum Shutdown {
    /// QEMU had already exited before the power button was pressed.
    AlreadyExited {
        /// Its exit status.
        status: ExitStatus,
    },
    /// The guest powered off within the grace period.
    PoweredOff {
        /// QEMU's exit status.
        status: ExitStatus,
        /// Time from the power button to the exit.
        elapsed: Duration,
    },
    /// The guest did not power off in time (`qmp_error` is `None`), or the
    /// power button could not be pressed; QEMU was killed.
    Killed {
        /// Time from the start of the shutdown to the kill.
        elapsed: Duration,
        /// Why the power button could not be pressed.
        qmp_error: Option<QmpError>,
    },
}

/// Starts VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// The QEMU binary (a path, or a name looked up in `PATH`).
    pub qemu: PathBuf,
    /// How many serial lines outcomes keep.
    pub tail_lines: usize,
    /// How long QEMU gets to exit after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// How often the serial log and the process are polled.
    pub poll_interval: Duration,
    /// How long to wait for the QMP socket and each QMP answer.
    pub qmp_timeout: Duration,
    /// Whether a [`Reaper`] kills QEMU's process group if this process
    /// dies while QEMU runs (killed by a signal, so that no handle is
    /// dropped): for tests and other callers without a watcher of their own.
    pub reap: bool,
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new(DEFAULT_QEMU)
    }
}

impl Runner {
    /// A runner for the given QEMU binary: keeps 50 lines, 3 s kill grace,
    /// 50 ms polling, 10 s QMP timeout, no reaper.
    pub fn new(qemu: impl Into<PathBuf>) -> Runner {
        Runner {
            qemu: qemu.into(),
            tail_lines: 50,
            kill_grace: Duration::from_secs(3),
            poll_interval: Duration::from_millis(50),
            qmp_timeout: Duration::from_secs(10),
            reap: false,
        }
    }

    /// The same runner with a [`Reaper`] for every QEMU it starts.
    pub fn reaping(self) -> Runner {
        Runner { reap: true, ..self }
    }

    /// Starts a VM. Its config must have a serial log
    /// ([`VmConfig::serial_log`]); an old file there is removed first so
    /// only this run's output is read.
    ///
    /// QEMU runs in its own process group, with stdin closed and its own
    /// output captured. The returned handle kills the group and reaps QEMU
    /// when dropped, also during a panic.
    pub fn spawn(&self, vm: &VmConfig) -> Result<RunningVm, RunError> {
        let args = vm.to_args()?;
        let log = vm.serial_log().ok_or(RunError::NoSerialLog)?.to_owned();
        self.spawn_args(&args, &log, vm.qmp_socket.as_deref())
    }

    /// Starts QEMU with ready-made arguments; `serial_log` is the file the
    /// serial console writes, `qmp_socket` the QMP socket if there is one.
    pub fn spawn_args(
        &self,
        args: &[String],
        serial_log: &Path,
        qmp_socket: Option<&Path>,
    ) -> Result<RunningVm, RunError> {
        match std::fs::remove_file(serial_log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RunError::RemoveLog {
                    path: serial_log.to_owned(),
                    source,
                });
            }
        }
        tracing::debug!(qemu = %self.qemu.display(), ?args, "starting QEMU");
        let mut child = Command::new(&self.qemu)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                program: self.qemu.clone(),
                source,
            })?;
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, Arc::clone(&output));
        }
        if let Some(err) = child.stderr.take() {
            collect(err, Arc::clone(&output));
        }
        let pid = child.id();
        tracing::info!(pid, log = %serial_log.display(), "QEMU started");
        let reaper = if self.reap {
            // Dropping `child` here would leave QEMU running: kill it first.
            match Reaper::watching(pid, None) {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        Ok(RunningVm {
            child: Some(child),
            pid,
            program: self.qemu.clone(),
            started: Instant::now(),
            serial: SerialTail::new(serial_log.to_owned(), self.tail_lines),
            qmp_socket: qmp_socket.map(Path::to_owned),
            output,
            status: None,
            kill_grace: self.kill_grace,
            poll_interval: self.poll_interval,
            qmp_timeout: self.qmp_timeout,
            reaper,
        })
    }

    /// Starts a VM, streams its serial lines to `on_line`, waits for a
    /// marker of `watch`, then kills QEMU (whatever the outcome) and reaps
    /// it before returning.
    pub fn run(
        &self,
        vm: &VmConfig,
        watch: &Watch,
        on_line: impl FnMut(&str),
    ) -> Result<Outcome, RunError> {
        let mut running = self.spawn(vm)?;
        let outcome = running.wait_for_marker(watch, on_line);
        let killed = running.kill();
        let outcome = outcome?;
        killed?;
        Ok(outcome)
    }
}

/// Copies a pipe into a shared buffer that keeps the last [`OUTPUT_CAP`]
/// bytes. The thread ends when the pipe closes (QEMU's group is gone).
fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let Ok(mut out) = into.lock() else { break };
                    out.extend_from_slice(&buf[..n]);
                    if out.len() > OUTPUT_CAP {
                        let cut = out.len() - OUTPUT_CAP;
                        out.drain(..cut);
                    }
                }
            }
        }
    });
}

/// A running QEMU. Dropping it kills QEMU's process group and reaps QEMU.
#[derive(Debug)]
pub struct RunningVm {
    child: Option<Child>,
    pid: u32,
    program: PathBuf,
    started: Instant,
    serial: SerialTail,
    qmp_socket: Option<PathBuf>,
    output: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
    kill_grace: Duration,
    poll_interval: Duration,
    qmp_timeout: Duration,
    /// Stopped once QEMU is reaped: its group id may be reused then.
    reaper: Option<Reaper>,
}

impl RunningVm {
    /// QEMU's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Time since QEMU started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial log being followed.
    pub fn serial_log(&self) -> &Path {
        self.serial.path()
    }

    /// The last serial lines seen, oldest first.
    pub fn serial_tail(&self) -> Vec<String> {
        self.serial.tail()
    }

    /// The end of QEMU's own stdout and stderr so far.
    pub fn qemu_output(&self) -> String {
        self.output
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// QEMU's exit status if it has exited (then it is reaped and the rest
    /// of its process group is killed), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, RunError> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let pid = self.pid_t()?;
        // Look without reaping, so the process group id cannot be reused
        // before the group is killed.
        let exited = match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            Err(Errno::EINTR) => false,
            Err(e) => return Err(self.wait_error(e.to_string())),
        };
        if !exited {
            return Ok(None);
        }
        self.signal_group(Signal::SIGKILL)?;
        self.reap().map(Some)
    }

    /// Reads new serial lines and passes each to `on_line`; returns whether
    /// QEMU has exited.
    pub fn pump(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<bool, RunError> {
        let exited = self.try_wait()?.is_some();
        self.fill(exited)?;
        while let Some(line) = self.serial.pop() {
            on_line(&line);
        }
        Ok(exited)
    }

    /// Follows the serial log, passing each line to `on_line`, until a
    /// marker of `watch` appears, QEMU exits, or `watch.timeout` (counted
    /// from this call) passes. QEMU keeps running: call [`RunningVm::kill`]
    /// or [`RunningVm::shutdown`], or drop the handle.
    ///
    /// Lines after a marker stay queued for the next call.
    pub fn wait_for_marker(
        &mut self,
        watch: &Watch,
        mut on_line: impl FnMut(&str),
    ) -> Result<Outcome, RunError> {
        let start = Instant::now();
        let deadline = start + watch.timeout;
        loop {
            // Look at the process first, so that output written just before
            // an exit is read below.
            let exited = self.try_wait()?;
            let now = Instant::now();
            let timed_out = now >= deadline;
            self.fill(exited.is_some() || timed_out)?;
            while let Some(line) = self.serial.pop() {
                on_line(&line);
                let matches =
                    |markers: &[String]| markers.iter().any(|m| line.contains(m.as_str()));
                if matches(&watch.failure) {
                    return Ok(Outcome::Failure {
                        line,
                        elapsed: start.elapsed(),
                        tail: self.serial.tail(),
                    });
                }
                if matches(&watch.success) {
                    return Ok(Outcome::Success {
                        line,
                        elapsed: start.elapsed(),
                        lines: self.serial.lines(),
                    });
                }
            }
            if let Some(status) = exited {
                return Ok(Outcome::Exited {
                    status,
                    elapsed: start.elapsed(),
                    tail: self.serial.tail(),
                    qemu_output: self.qemu_output(),
                });
            }
            if timed_out {
                return Ok(Outcome::Timeout {
                    elapsed: start.elapsed(),
                    tail: self.serial.tail(),
                });
            }
            std::thread::sleep(self.poll_interval.min(deadline - now));
        }
    }

    /// Waits up to `timeout` for QEMU to exit, passing serial lines to
    /// `on_line`. Returns the exit status, or `None` if it still runs.
    pub fn wait_exit(
        &mut self,
        timeout: Duration,
        mut on_line: impl FnMut(&str),
    ) -> Result<Option<ExitStatus>, RunError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pump(&mut on_line)? {
                return Ok(self.status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(self.poll_interval.min(deadline - now));
        }
    }

    /// Connects to the VM's QMP socket.
    pub fn qmp(&self) -> Result<Qmp, RunError> {
        let path = self.qmp_socket.as_deref().ok_or(RunError::NoQmpSocket)?;
        Ok(Qmp::connect(path, self.qmp_timeout)?)
    }

    /// Graceful shutdown: presses the ACPI power button over QMP
    /// (`system_powerdown`), waits up to `grace` for QEMU to exit (passing
    /// serial lines to `on_line`), and kills it otherwise. QEMU is gone
    /// when this returns `Ok`.
    pub fn shutdown(
        &mut self,
        grace: Duration,
        mut on_line: impl FnMut(&str),
    ) -> Result<Shutdown, RunError> {
        if self.pump(&mut on_line)?
            && let Some(status) = self.status
        {
            return Ok(Shutdown::AlreadyExited { status });
        }
        let start = Instant::now();
        let socket = self.qmp_socket.clone().ok_or(RunError::NoQmpSocket)?;
        let pressed =
            Qmp::connect(&socket, self.qmp_timeout).and_then(|mut q| q.system_powerdown());
        if let Err(e) = pressed {
            tracing::warn!(error = %e, "power button failed; killing QEMU");
            self.kill()?;
            return Ok(Shutdown::Killed {
                elapsed: start.elapsed(),
                qmp_error: Some(e),
            });
        }
        match self.wait_exit(grace, &mut on_line)? {
            Some(status) => Ok(Shutdown::PoweredOff {
                status,
                elapsed: start.elapsed(),
            }),
            None => {
                tracing::warn!(?grace, "guest did not power off in time; killing QEMU");
                self.kill()?;
                Ok(Shutdown::Killed {
                    elapsed: start.elapsed(),
                    qmp_error: None,
                })
            }
        }
    }

    /// Stops QEMU: SIGTERM to its process group, up to the kill grace for it
    /// to exit, then SIGKILL to the group, and reaps it. Returns the exit
    /// status. Calling it again returns the same status.
    pub fn kill(&mut self) -> Result<ExitStatus, RunError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal_group(Signal::SIGTERM)?;
        let deadline = Instant::now() + self.kill_grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(Signal::SIGKILL)?;
        self.reap()
    }

    fn fill(&mut self, last: bool) -> Result<(), RunError> {
        self.serial.fill().map_err(|source| RunError::ReadLog {
            path: self.serial.path().to_owned(),
            source,
        })?;
        if last {
            self.serial.flush_partial();
        }
        Ok(())
    }

    fn pid_t(&self) -> Result<Pid, RunError> {
        i32::try_from(self.pid)
            .map(Pid::from_raw)
            .map_err(|_| self.wait_error(format!("pid {} out of range", self.pid)))
    }

    fn wait_error(&self, message: String) -> RunError {
        RunError::Wait {
            program: self.program.clone(),
            pid: self.pid,
            message,
        }
    }

    /// Signals the whole process group. A group that is already gone is
    /// fine.
    fn signal_group(&self, signal: Signal) -> Result<(), RunError> {
        if self.status.is_some() {
            return Ok(());
        }
        match killpg(self.pid_t()?, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(RunError::Signal {
                program: self.program.clone(),
                pgid: self.pid,
                signal,
                source,
            }),
        }
    }

    fn reap(&mut self) -> Result<ExitStatus, RunError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let waited = match self.child.as_mut() {
            Some(child) => child.wait().map_err(|e| e.to_string()),
            None => Err("no child process".to_owned()),
        };
        let status = waited.map_err(|message| self.wait_error(message))?;
        tracing::info!(pid = self.pid, %status, "QEMU exited");
        self.status = Some(status);
        self.child = None;
        self.reaper = None;
        Ok(status)
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // No grace on drop (it may run during a panic): kill at once.
        if let Err(e) = self.signal_group(Signal::SIGKILL) {
            tracing::error!(error = %e, "killing QEMU on drop");
        }
        if let Err(e) = self.reap() {
            tracing::error!(error = %e, "reaping QEMU on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "QEMU" that only sleeps, started by a reaping runner.
    fn sleeper(dir: &Path) -> RunningVm {
        Runner::new("sleep")
            .reaping()
            .spawn_args(&["600".to_owned()], &dir.join("serial.log"), None)
            .expect("starting sleep")
    }

    #[test]
    fn a_reaping_runner_s_process_dies_with_its_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vm = sleeper(dir.path());
        let reaper = vm.reaper.take().expect("a reaper");
        // What the caller's death does: the reaper's pipe closes.
        assert!(reaper.act().success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = vm.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the reaper left the process running"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    #[test]
    fn the_reaper_stops_once_the_process_is_reaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vm = sleeper(dir.path());
        assert!(vm.reaper.is_some());
        vm.kill().expect("kill");
        // The group id may be reused now: nothing may kill it later.
        assert!(vm.reaper.is_none());
    }
}
