//! HostOS upgrades itself: after `upgrade` has downloaded and verified the
//! image ([`crate::upgrade`]), [`Upgrader`] installs it into HostOS's spare
//! slot (the `hostlvm` volumes, through `icos_slots`), commits it
//! (`boot_cycle=first_boot`) and asks for a reboot; after the reboot,
//! [`confirm_when_guest_runs`] confirms the trial boot once GuestOS runs
//! again, or leaves it unconfirmed so GRUB rolls back at the next boot.
//!
//! The request is answered once the install is under way (as IC does):
//! state check, download, hash and version checks happen while the guest
//! waits, and their failures are its `Err` answer; the install itself runs
//! on a background thread, logs every step and ends in a reboot.
//!
//! # Phases
//!
//! | phase | a new `upgrade` |
//! |---|---|
//! | [`Phase::Idle`], [`Phase::Failed`] | accepted if grubenv is `stable` |
//! | [`Phase::Preparing`] (download, checks) | refused: busy |
//! | [`Phase::Installing`] | refused: busy |
//! | [`Phase::Rebooting`] | refused: committed, rebooting |
//!
//! Whatever the phase, grubenv must say `stable`: `first_boot` means an
//! upgrade is committed and waits for the reboot, `failsafe_check` means the
//! running slot is on trial and not confirmed yet.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use icos_slots::{ConfirmReport, SlotDisk, SlotsError, Volumes};
pub use icos_slots::{HOSTOS_GRUB_DEVICE, HOSTOS_VOLUME_DIR};
use tracing::{error, info, warn};

use crate::upgrade::{self, READY_MARKER, UpgradeError};

/// Where the agent notes that GuestOS has reached it in this boot (`/run` is
/// emptied at every boot).
pub const GUEST_SEEN_FILE: &str = "/run/icos-hostos-agent/guest-seen";
/// The systemd unit that runs the GuestOS VM.
pub const GUEST_UNIT: &str = "guestos.service";
/// How long the boot confirmation waits for GuestOS by default.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where HostOS's slots are: the grub partition (or the system disk) and
/// the directory of the slot volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlots {
    /// The grub partition, or a disk whose GPT has one.
    pub grub: PathBuf,
    /// The directory holding `A_boot` … `B_var`.
    pub volumes: PathBuf,
}

impl Default for HostSlots {
    fn default() -> Self {
        Self {
            grub: PathBuf::from(icos_slots::HOSTOS_GRUB_DEVICE),
            volumes: PathBuf::from(icos_slots::HOSTOS_VOLUME_DIR),
        }
    }
}

impl HostSlots {
    /// Opens the slots, for writing with `write`.
    pub fn open(&self, write: bool) -> Result<SlotDisk<Volumes<File>>, SlotsError> {
        icos_slots::open_hostos(&self.grub, &self.volumes, write)
    }
}

/// Restarts the host (a seam: tests record the call).
pub trait Reboot: fmt::Debug + Send + Sync {
    /// Asks for a reboot; returns once it is under way.
    fn reboot(&self) -> Result<(), String>;
}

/// Reboots by running a command, `systemctl reboot` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReboot {
    /// The program and its arguments.
    pub argv: Vec<String>,
}

impl Default for CommandReboot {
    fn default() -> Self {
        Self {
            argv: vec!["systemctl".into(), "reboot".into()],
        }
    }
}

impl Reboot for CommandReboot {
    fn reboot(&self) -> Result<(), String> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err("no reboot command".into());
        };
        let shown = self.argv.join(" ");
        let status = Command::new(program)
            .args(args)
            .status()
            .map_err(|e| format!("running {shown}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{shown} failed: {status}"))
        }
    }
}

/// Where the upgrader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Nothing under way.
    Idle,
    /// Downloading and checking a request.
    Preparing,
    /// Writing the spare slot.
    Installing {
        /// The version being installed.
        version: String,
    },
    /// Committed; the reboot was asked for.
    Rebooting {
        /// The version installed.
        version: String,
        /// The slot it went into.
        slot: String,
    },
    /// The last install failed (a new request may try again), or the
    /// reboot after a commit could not be asked for.
    Failed {
        /// Why.
        error: String,
    },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Idle => f.write_str("idle"),
            Phase::Preparing => f.write_str("downloading and checking an upgrade"),
            Phase::Installing { version } => write!(f, "installing HostOS {version}"),
            Phase::Rebooting { version, slot } => {
                write!(f, "HostOS {version} committed to slot {slot}; rebooting")
            }
            Phase::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

/// Why an `upgrade` was refused or the boot not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum HostUpgradeError {
    /// Another upgrade is being prepared or installed.
    #[error("busy: a HostOS upgrade is already under way ({0})")]
    Busy(Phase),
    /// An upgrade was committed and the host is rebooting into it.
    #[error("refused: {0}; no further upgrade before the reboot")]
    Committed(Phase),
    /// grubenv does not allow an install.
    #[error(
        "refused: HostOS's boot state is {state}, not stable ({reason}); nothing was downloaded"
    )]
    NotStable {
        /// The state (`boot_alternative=… boot_cycle=…`).
        state: String,
        /// What it means.
        reason: &'static str,
    },
    /// The image holds the version already running.
    #[error(
        "refused: the image holds HostOS {version}, which is already running; nothing was installed"
    )]
    SameVersion {
        /// The version.
        version: String,
    },
    /// The running version could not be read.
    #[error("reading the running HostOS version from {}: {source}", path.display())]
    VersionFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The image could not be read.
    #[error("reading {}: {source}", path.display())]
    Image {
        /// The image.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The install thread could not be started.
    #[error("starting the install: {0}")]
    Spawn(#[source] io::Error),
    /// Downloading or verifying failed.
    #[error(transparent)]
    Download(#[from] UpgradeError),
    /// Reading or writing the slots failed.
    #[error(transparent)]
    Slots(#[from] SlotsError),
    /// GuestOS did not come up in time: the boot stays unconfirmed.
    #[error(
        "GuestOS was not running after {waited:?} ({last}); the boot of slot {slot} stays unconfirmed, so GRUB rolls back at the next boot"
    )]
    GuestNotRunning {
        /// How long it waited.
        waited: Duration,
        /// What the last look found.
        last: String,
        /// The slot on trial.
        slot: String,
    },
}

/// Installs verified HostOS images into the spare slot, one at a time.
#[derive(Debug)]
pub struct Upgrader {
    slots: HostSlots,
    version_file: PathBuf,
    reboot: Box<dyn Reboot>,
    phase: Mutex<Phase>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a new `upgrade` may start in `phase` (then it moves to
/// [`Phase::Preparing`]).
pub fn admit(phase: &Phase) -> Result<(), HostUpgradeError> {
    match phase {
        Phase::Idle | Phase::Failed { .. } => Ok(()),
        Phase::Preparing | Phase::Installing { .. } => Err(HostUpgradeError::Busy(phase.clone())),
        Phase::Rebooting { .. } => Err(HostUpgradeError::Committed(phase.clone())),
    }
}

/// Puts the phase back to idle when a request is refused before installing.
struct Reservation<'a> {
    upgrader: &'a Upgrader,
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.upgrader.set(Phase::Idle);
        }
    }
}

impl Upgrader {
    /// An upgrader for `slots`, comparing images with the running version in
    /// `version_file`, rebooting through `reboot`.
    pub fn new(slots: HostSlots, version_file: PathBuf, reboot: Box<dyn Reboot>) -> Self {
        Self {
            slots,
            version_file,
            reboot,
            phase: Mutex::new(Phase::Idle),
            changed: Condvar::new(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        lock(&self.phase).clone()
    }

    fn set(&self, phase: Phase) {
        *lock(&self.phase) = phase;
        self.changed.notify_all();
    }

    /// Waits until no upgrade is being prepared or installed (at most
    /// `timeout`) and returns the phase.
    pub fn wait_settled(&self, timeout: Duration) -> Phase {
        let guard = lock(&self.phase);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |p| {
                matches!(p, Phase::Preparing | Phase::Installing { .. })
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.clone()
    }

    fn reserve(&self) -> Result<Reservation<'_>, HostUpgradeError> {
        let mut phase = lock(&self.phase);
        admit(&phase)?;
        *phase = Phase::Preparing;
        Ok(Reservation {
            upgrader: self,
            armed: true,
        })
    }

    /// Handles an `upgrade` request: checks that grubenv is `stable`,
    /// downloads and verifies the image into `dir`, refuses the running
    /// version, then installs on a background thread (which commits and
    /// reboots) and returns the version being installed.
    pub fn start(
        self: &Arc<Self>,
        dir: &Path,
        url: &str,
        target_hash: &str,
        timeout: Duration,
    ) -> Result<String, HostUpgradeError> {
        let mut reservation = self.reserve()?;
        let status = self.slots.open(false)?.status()?;
        let state = format!(
            "boot_alternative={} boot_cycle={}",
            status.boot_alternative, status.boot_cycle
        );
        if status.upgrade_target.is_none() {
            let reason = match status.boot_cycle.as_str() {
                "first_boot" => "an upgrade is committed and waits for the reboot",
                "failsafe_check" => "the running slot is on trial and not confirmed yet",
                _ => "an install is not allowed in this state",
            };
            warn!("upgrade refused: boot state {state}: {reason}");
            return Err(HostUpgradeError::NotStable { state, reason });
        }
        info!("upgrade: boot state {state}; downloading {url}");
        let image = upgrade::download_and_verify(dir, url, target_hash, timeout)?;
        info!(
            "upgrade: {} verified (SHA-256 {target_hash})",
            image.display()
        );
        let version = match self.check_version(&image) {
            Ok(v) => v,
            Err(e) => {
                info!("upgrade: removing {} ({e})", image.display());
                remove_quietly(&image);
                remove_quietly(&dir.join(READY_MARKER));
                return Err(e);
            }
        };
        info!(
            "upgrade: installing HostOS {version} into slot {}",
            status.upgrade_target.as_deref().unwrap_or("?")
        );
        reservation.armed = false;
        self.set(Phase::Installing {
            version: version.clone(),
        });
        let me = Arc::clone(self);
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("hostos-upgrade".into())
            .spawn(move || me.install_and_reboot(&dir, &image));
        if let Err(e) = spawned {
            self.set(Phase::Failed {
                error: format!("starting the install: {e}"),
            });
            return Err(HostUpgradeError::Spawn(e));
        }
        Ok(version)
    }

    /// The image's version, refused when it is the one running.
    fn check_version(&self, image: &Path) -> Result<String, HostUpgradeError> {
        let running = fs::read_to_string(&self.version_file)
            .map_err(|source| HostUpgradeError::VersionFile {
                path: self.version_file.clone(),
                source,
            })?
            .trim()
            .to_owned();
        let file = File::open(image).map_err(|source| HostUpgradeError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        let version = icos_slots::read_version(io::BufReader::new(file), image)?;
        if version == running {
            return Err(HostUpgradeError::SameVersion { version });
        }
        info!("upgrade: the image holds HostOS {version}; running {running}");
        Ok(version)
    }

    /// Installs `image` into the spare slot, commits, removes the image and
    /// asks for the reboot; every step is logged, the outcome is the phase.
    fn install_and_reboot(&self, dir: &Path, image: &Path) {
        let result = self.install(image);
        remove_quietly(image);
        remove_quietly(&dir.join(READY_MARKER));
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                error!("upgrade: install failed, the running slot stays: {e}");
                self.set(Phase::Failed {
                    error: e.to_string(),
                });
                return;
            }
        };
        info!(
            "upgrade: HostOS {} committed to slot {} ({} -> {}); rebooting",
            report.version, report.slot, report.before, report.after
        );
        match self.reboot.reboot() {
            Ok(()) => self.set(Phase::Rebooting {
                version: report.version,
                slot: report.slot,
            }),
            Err(e) => {
                error!("upgrade: committed, but asking for the reboot failed: {e}");
                self.set(Phase::Failed {
                    error: format!(
                        "HostOS {} committed to slot {}, but the reboot failed: {e}",
                        report.version, report.slot
                    ),
                });
            }
        }
    }

    fn install(&self, image: &Path) -> Result<icos_slots::InstallReport, HostUpgradeError> {
        let file = File::open(image).map_err(|source| HostUpgradeError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        let mut disk = self.slots.open(true)?;
        let report = disk.install(io::BufReader::new(file), image, &mut |step| {
            info!("upgrade: {step}");
        })?;
        for m in &report.members {
            info!(
                "upgrade: {} -> {}: {} bytes, {} data, {} zeroed ({}), sha256 {}",
                m.member,
                m.partition,
                m.size,
                m.data_bytes,
                m.zeroed_bytes,
                m.zero_method.unwrap_or("none"),
                m.data_sha256
            );
        }
        Ok(report)
    }
}

fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!("removing {}: {e}", path.display()),
    }
}

/// Whether GuestOS runs (a seam: the real one asks systemd and looks for
/// the agent's note).
pub trait GuestProbe {
    /// `Ok(())` when GuestOS runs, else what is missing.
    fn running(&self) -> Result<(), String>;
}

/// GuestOS runs when its VM unit is active (the runner reports ready once
/// QEMU has started) and the guest has sent the agent a request in this
/// boot (the agent's [`GUEST_SEEN_FILE`]): the VM started, the guest
/// booted its kernel and user space, and the vsock channel works both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdGuestProbe {
    /// The VM's unit.
    pub unit: String,
    /// The agent's note.
    pub seen_file: PathBuf,
}

impl Default for SystemdGuestProbe {
    fn default() -> Self {
        Self {
            unit: GUEST_UNIT.into(),
            seen_file: PathBuf::from(GUEST_SEEN_FILE),
        }
    }
}

impl GuestProbe for SystemdGuestProbe {
    fn running(&self) -> Result<(), String> {
        let status = Command::new("systemctl")
            .args(["is-active", "--quiet", &self.unit])
            .status()
            .map_err(|e| format!("running systemctl is-active {}: {e}", self.unit))?;
        if !status.success() {
            return Err(format!("{} is not active", self.unit));
        }
        if !self.seen_file.exists() {
            return Err(format!(
                "GuestOS has not reached the vsock agent yet (no {})",
                self.seen_file.display()
            ));
        }
        Ok(())
    }
}

/// What [`confirm_when_guest_runs`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The boot was `stable` already; nothing was waited for or written.
    AlreadyStable {
        /// The running slot.
        slot: String,
    },
    /// GuestOS ran; the trial boot is now `stable`.
    Confirmed(ConfirmReport),
}

/// At boot: when HostOS runs a slot on trial (`failsafe_check`, or
/// `install`), waits (up to `timeout`, looking every `poll`) until `probe`
/// says GuestOS runs, then confirms the slot (`stable`). A `stable` boot
/// returns at once; `first_boot` (GRUB has not started the trial) is
/// refused. When GuestOS does not come up in time nothing is written, so
/// GRUB boots the other slot next time.
pub fn confirm_when_guest_runs(
    slots: &HostSlots,
    probe: &dyn GuestProbe,
    timeout: Duration,
    poll: Duration,
) -> Result<ConfirmOutcome, HostUpgradeError> {
    let status = slots.open(false)?.status()?;
    info!(
        "boot state: boot_alternative={} boot_cycle={}",
        status.boot_alternative, status.boot_cycle
    );
    if status.boot_cycle == "stable" {
        return Ok(ConfirmOutcome::AlreadyStable {
            slot: status.running_slot,
        });
    }
    if status.boot_cycle == "first_boot" {
        // Let the slots crate refuse with its own words.
        slots.open(true)?.confirm()?;
    }
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match probe.running() {
            Ok(()) => break,
            Err(why) => {
                if why != last {
                    info!("waiting for GuestOS: {why}");
                    last = why;
                }
            }
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(HostUpgradeError::GuestNotRunning {
                waited,
                last,
                slot: status.running_slot,
            });
        }
        std::thread::sleep(poll.min(timeout - waited));
    }
    info!(
        "GuestOS runs after {:?}; confirming slot {}",
        started.elapsed(),
        status.running_slot
    );
    let report = slots.open(true)?.confirm()?;
    info!(
        "confirmed: {} -> {} (slot {})",
        report.before, report.after, report.slot
    );
    Ok(ConfirmOutcome::Confirmed(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_when_nothing_is_under_way_or_committed() {
        let v = || "v2".to_string();
        let cases = [
            (Phase::Idle, None),
            (Phase::Failed { error: "x".into() }, None),
            (Phase::Preparing, Some("busy: ")),
            (Phase::Installing { version: v() }, Some("busy: ")),
            (
                Phase::Rebooting {
                    version: v(),
                    slot: "B".into(),
                },
                Some("refused: HostOS v2 committed to slot B; rebooting"),
            ),
        ];
        for (phase, refusal) in cases {
            match (admit(&phase), refusal) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => {
                    assert!(e.to_string().starts_with(want), "{phase}: {e}");
                }
                (got, want) => panic!("{phase}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
