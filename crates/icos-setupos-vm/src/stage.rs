//! Where the machine is, read off its serial console.
//!
//! Two pure functions make the tracker: [`classify`] turns one console line
//! into a [`Signal`] (or nothing), and [`step`] moves the [`State`] on a
//! signal. [`on_timeout`] and [`on_machine_exit`] end a run that stopped
//! talking.
//!
//! ```text
//! SetupOsBooting → Checks → Installing → Rebooting → HostOsBooting → GuestOsBooting → Done(GuestOsUp)
//!                                      ↘ Done(Installed)      (reboot switched off)
//!                         ↘ Done(ChecksPassed)                 (installation switched off)
//! any running stage → Failed { during, failure }
//! ```
//!
//! Stages only move forward. A signal of a later stage moves there even if
//! the signals in between were not seen (a console line can be lost); a
//! signal of an earlier stage is ignored, except SetupOS booting again after
//! the installer started, which fails the run ([`Failure::InstallerBootedAgain`]).
//!
//! GuestOS console lines reach the HostOS console prefixed with
//! [`GUEST_PREFIX`] (HostOS `verbose=true`); only GuestOS's own markers and
//! its kernel's stall reports ([`Signal::GuestStall`]) are taken from them,
//! so a GuestOS kernel message never reads as HostOS's.

use std::fmt;

use icos_setupos::{
    CHECKS_ONLY_LINE, FAILURE_LINE, FAILURE_TITLE, SUCCESS_LINE, SUCCESS_TITLE, Step,
};

/// The prefix HostOS's GuestOS runner gives each GuestOS console line.
pub const GUEST_PREFIX: &str = "guestos_console: ";
/// SetupOS's GRUB, about to start the SetupOS kernel.
pub const SETUPOS_GRUB: &str = "GRUB: booting SetupOS";
/// HostOS's GRUB, before it picks a slot.
pub const HOSTOS_GRUB: &[&str] = &[
    "GRUB: grubenv before: boot_alternative=",
    "GRUB: booting slot",
];
/// HostOS is up (its marker service).
pub const HOSTOS_BOOT_SUCCESS: &str = "HOSTOS BOOT SUCCESS";
/// HostOS could not boot.
pub const HOSTOS_BOOT_FAILURE: &str = "HOSTOS BOOT FAILURE";
/// SetupOS could not boot.
pub const SETUPOS_BOOT_FAILURE: &str = "SETUPOS BOOT FAILURE";
/// HostOS's runner started the GuestOS VM.
pub const GUESTOS_LAUNCHED: &str = "GuestOS VM launched";
/// HostOS's runner gave up waiting for a GuestOS marker.
pub const GUESTOS_NO_MARKER: &str = "GuestOS printed no boot marker";
/// A CPU of the kernel stalled (seen under nested KVM in TCG).
pub const SOFT_LOCKUP: &str = "watchdog: BUG: soft lockup";
/// RCU saw a CPU stall (`rcu_preempt`/`rcu_sched detected stalls on
/// CPUs/tasks`): under nested KVM in TCG, a GuestOS or HostOS CPU whose
/// timer interrupts stopped coming.
pub const RCU_STALL: &str = "detected stalls on CPUs";
/// The hung-task watchdog: a task waited over 120 s (under nested KVM in
/// TCG, a GuestOS disk interrupt that never came).
pub const HUNG_TASK: &str = "blocked for more than 120 seconds";
/// The kernel gave up.
pub const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// The installer's first line (`SetupOS installer: N steps: ...`).
pub const INSTALLER_BANNER: &str = "SetupOS installer: ";
/// The installer steps of the checks stage; the others are the install.
const CHECK_STEPS: [Step; 3] = [Step::Config, Step::Capture, Step::Checks];
/// The installer steps that make up the install.
const INSTALL_STEPS: [Step; 5] = [
    Step::Preflight,
    Step::SetupDisk,
    Step::InstallHostOs,
    Step::InstallGuestOs,
    Step::SetupHostOsConfig,
];

/// The installer's line when a step starts: `[N/M] STEP: WHAT`.
fn step_started(line: &str, steps: &[Step]) -> bool {
    steps.iter().any(|step| {
        line.find(&format!("] {}: {}", step.as_str(), step.describe()))
            .is_some_and(|at| line[..at].contains('['))
    })
}

/// The running stages, in the order a node goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Firmware, GRUB, kernel and systemd of SetupOS.
    SetupOsBooting,
    /// The installer checks the image, config, hardware, network and clock.
    Checks,
    /// The installer writes HostOS and GuestOS to the drives.
    Installing,
    /// The install succeeded; the machine reboots.
    Rebooting,
    /// Firmware, GRUB, kernel and systemd of HostOS.
    HostOsBooting,
    /// HostOS launched the GuestOS VM; GuestOS boots.
    GuestOsBooting,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [
        Stage::SetupOsBooting,
        Stage::Checks,
        Stage::Installing,
        Stage::Rebooting,
        Stage::HostOsBooting,
        Stage::GuestOsBooting,
    ];

    /// A short name (`setupos-booting`, `checks`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::SetupOsBooting => "setupos-booting",
            Stage::Checks => "checks",
            Stage::Installing => "installing",
            Stage::Rebooting => "rebooting",
            Stage::HostOsBooting => "hostos-booting",
            Stage::GuestOsBooting => "guestos-booting",
        }
    }

    /// Whether SetupOS runs in this stage (as opposed to HostOS).
    pub fn in_setupos(self) -> bool {
        self <= Stage::Installing
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// GuestOS's boot marker arrived through HostOS: the whole chain ran.
    GuestOsUp,
    /// The installer succeeded and, as switched, did not reboot.
    Installed,
    /// The checks passed and, as switched, nothing was installed.
    ChecksPassed,
}

impl End {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            End::GuestOsUp => "guestos-up",
            End::Installed => "installed",
            End::ChecksPassed => "checks-passed",
        }
    }
}

/// Which system printed a boot failure marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// The installer.
    SetupOs,
    /// The host.
    HostOs,
    /// The guest VM.
    GuestOs,
}

impl System {
    /// `SetupOS`, `HostOS`, `GuestOS`.
    pub fn as_str(self) -> &'static str {
        match self {
            System::SetupOs => "SetupOS",
            System::HostOs => "HostOS",
            System::GuestOs => "GuestOS",
        }
    }
}

/// How a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The installer printed its failure banner.
    SetupFailed,
    /// A system printed its boot failure marker.
    BootFailure(System),
    /// HostOS's runner saw no GuestOS marker in time.
    GuestOsNoMarker,
    /// A kernel CPU stalled (soft lockup or RCU stall).
    SoftLockup,
    /// A kernel panicked.
    KernelPanic,
    /// GuestOS's kernel reported a stalled CPU.
    GuestStall,
    /// SetupOS booted again after the installer had started: the machine
    /// restarted during the install, or the firmware ignored the IC-OS
    /// boot entry after it.
    InstallerBootedAgain,
    /// No end within the time allowed.
    Timeout,
    /// The machine stopped (QEMU exited) when it should have run on.
    MachineStopped,
}

impl Failure {
    /// Whether this is how nested KVM under TCG fails now and then, rather
    /// than something the images did: a stalled or panicked kernel, or a
    /// GuestOS that froze without a word. `icos run setupos` power-cycles
    /// the machine on these (see [`crate::run`]).
    pub fn is_nested_stall(self) -> bool {
        match self {
            Failure::SoftLockup
            | Failure::KernelPanic
            | Failure::GuestStall
            | Failure::GuestOsNoMarker => true,
            Failure::SetupFailed
            | Failure::BootFailure(_)
            | Failure::InstallerBootedAgain
            | Failure::Timeout
            | Failure::MachineStopped => false,
        }
    }

    /// What happened, in words.
    pub fn describe(self) -> String {
        match self {
            Failure::SetupFailed => "the installer stopped with its failure banner".into(),
            Failure::BootFailure(s) => format!("{} reported a boot failure", s.as_str()),
            Failure::GuestOsNoMarker => {
                "HostOS saw no GuestOS boot marker within its wait".into()
            }
            Failure::SoftLockup => "a kernel CPU stalled (soft lockup or RCU stall)".into(),
            Failure::GuestStall => "GuestOS's kernel reported a stall \
                 (soft lockup, RCU stall or a task blocked for over 120 s)"
                .into(),
            Failure::KernelPanic => "a kernel panicked".into(),
            Failure::InstallerBootedAgain => "SetupOS booted again after the installer had started \
                 (a restart during the install, or the firmware did not follow the IC-OS boot entry)"
                .into(),
            Failure::Timeout => "no end within the time allowed (timeout)".into(),
            Failure::MachineStopped => "the machine stopped (QEMU exited)".into(),
        }
    }
}

/// The tracker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// In a stage.
    Running(Stage),
    /// Ended well.
    Done(End),
    /// Ended badly.
    Failed {
        /// The stage it was in.
        during: Stage,
        /// What went wrong.
        failure: Failure,
    },
}

impl State {
    /// The start: SetupOS booting.
    pub const START: State = State::Running(Stage::SetupOsBooting);

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Running(_))
    }

    /// The running stage, if any.
    pub fn stage(self) -> Option<Stage> {
        match self {
            State::Running(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Running(s) => f.write_str(s.as_str()),
            State::Done(e) => write!(f, "done ({})", e.as_str()),
            State::Failed { during, failure } => {
                write!(f, "failed during {during}: {}", failure.describe())
            }
        }
    }
}

/// What the run is expected to do after a successful install, from the
/// installer's switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Goal {
    /// `ic.setupos.perform_installation`.
    pub install: bool,
    /// `ic.setupos.reboot_after_installation`.
    pub reboot: bool,
}

impl Default for Goal {
    fn default() -> Self {
        Goal {
            install: true,
            reboot: true,
        }
    }
}

/// What a console line says, as far as the tracker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SetupOS's GRUB starts SetupOS.
    SetupOsGrub,
    /// The installer started.
    InstallerStarted,
    /// The installer started writing.
    InstallStarted,
    /// The checks passed and the installation is switched off.
    InstallationSkipped,
    /// The installer's success banner.
    SetupSucceeded,
    /// The installer's failure banner (or SetupOS's early failure line).
    SetupFailed,
    /// HostOS's GRUB.
    HostOsGrub,
    /// HostOS's boot marker.
    HostOsUp,
    /// HostOS launched the GuestOS VM.
    GuestOsLaunched,
    /// GuestOS's boot marker (through HostOS).
    GuestOsUp,
    /// A boot failure marker.
    BootFailure(System),
    /// HostOS's runner waited for GuestOS in vain.
    GuestOsNoMarker,
    /// A soft lockup or an RCU stall of the machine's kernel.
    SoftLockup,
    /// A kernel panic.
    KernelPanic,
    /// GuestOS's kernel reported a stalled CPU (soft lockup or RCU stall)
    /// or a task blocked for over 120 s.
    GuestStall,
}

/// What a console line (already [cleaned](crate::clean_line)) signals.
pub fn classify(line: &str) -> Option<Signal> {
    let has = |m: &str| line.contains(m);
    let any = |ms: &[&str]| ms.iter().any(|m| line.contains(m));
    if has(GUEST_PREFIX) {
        // GuestOS's own lines: only its markers count.
        return if has(icos_qemu::GUESTOS_BOOT_FAILURE) {
            Some(Signal::BootFailure(System::GuestOs))
        } else if has(icos_qemu::GUESTOS_BOOT_SUCCESS) {
            Some(Signal::GuestOsUp)
        } else if has(SOFT_LOCKUP) || has(RCU_STALL) || has(HUNG_TASK) {
            Some(Signal::GuestStall)
        } else {
            None
        };
    }
    Some(if has(SOFT_LOCKUP) || has(RCU_STALL) {
        Signal::SoftLockup
    } else if has(KERNEL_PANIC) {
        Signal::KernelPanic
    } else if has(FAILURE_TITLE) || has(FAILURE_LINE) {
        Signal::SetupFailed
    } else if has(SUCCESS_TITLE) || has(SUCCESS_LINE) {
        Signal::SetupSucceeded
    } else if has(SETUPOS_BOOT_FAILURE) {
        Signal::BootFailure(System::SetupOs)
    } else if has(HOSTOS_BOOT_FAILURE) {
        Signal::BootFailure(System::HostOs)
    } else if has(icos_qemu::GUESTOS_BOOT_FAILURE) {
        Signal::BootFailure(System::GuestOs)
    } else if has(icos_qemu::GUESTOS_BOOT_SUCCESS) {
        Signal::GuestOsUp
    } else if has(GUESTOS_NO_MARKER) {
        Signal::GuestOsNoMarker
    } else if has(HOSTOS_BOOT_SUCCESS) {
        Signal::HostOsUp
    } else if has(GUESTOS_LAUNCHED) {
        Signal::GuestOsLaunched
    } else if any(HOSTOS_GRUB) {
        Signal::HostOsGrub
    } else if has(SETUPOS_GRUB) {
        Signal::SetupOsGrub
    } else if has(CHECKS_ONLY_LINE) {
        Signal::InstallationSkipped
    } else if step_started(line, &INSTALL_STEPS) {
        Signal::InstallStarted
    } else if has(INSTALLER_BANNER) || step_started(line, &CHECK_STEPS) {
        Signal::InstallerStarted
    } else {
        return None;
    })
}

/// The state after `signal`. Terminal states never change; see the module
/// docs for the rules.
pub fn step(state: State, signal: Signal, goal: Goal) -> State {
    let State::Running(s) = state else {
        return state;
    };
    let fail = |failure| State::Failed { during: s, failure };
    let forward = |to: Stage| {
        if to > s { State::Running(to) } else { state }
    };
    match signal {
        Signal::SoftLockup => fail(Failure::SoftLockup),
        Signal::KernelPanic => fail(Failure::KernelPanic),
        Signal::SetupFailed => fail(Failure::SetupFailed),
        Signal::BootFailure(System::SetupOs) => fail(Failure::BootFailure(System::SetupOs)),
        // HostOS and GuestOS markers cannot come from SetupOS (the
        // installer may quote them while it checks the images).
        Signal::BootFailure(_) if s.in_setupos() => state,
        Signal::BootFailure(system) => fail(Failure::BootFailure(system)),
        Signal::SetupOsGrub => {
            if s == Stage::SetupOsBooting {
                state
            } else {
                fail(Failure::InstallerBootedAgain)
            }
        }
        Signal::InstallerStarted => forward(Stage::Checks),
        Signal::InstallStarted if s.in_setupos() => forward(Stage::Installing),
        Signal::InstallationSkipped if s.in_setupos() && !goal.install => {
            State::Done(End::ChecksPassed)
        }
        Signal::SetupSucceeded if s.in_setupos() => match (goal.install, goal.reboot) {
            (false, _) => State::Done(End::ChecksPassed),
            (true, false) => State::Done(End::Installed),
            (true, true) => State::Running(Stage::Rebooting),
        },
        Signal::InstallStarted | Signal::InstallationSkipped | Signal::SetupSucceeded => state,
        Signal::HostOsGrub | Signal::HostOsUp => forward(Stage::HostOsBooting),
        Signal::GuestOsLaunched if s >= Stage::Rebooting => forward(Stage::GuestOsBooting),
        Signal::GuestOsUp if s >= Stage::Rebooting => State::Done(End::GuestOsUp),
        Signal::GuestOsNoMarker if s >= Stage::Rebooting => fail(Failure::GuestOsNoMarker),
        Signal::GuestStall if s >= Stage::Rebooting => fail(Failure::GuestStall),
        Signal::GuestOsLaunched
        | Signal::GuestOsUp
        | Signal::GuestOsNoMarker
        | Signal::GuestStall => state,
    }
}

/// The state when the time allowed ran out.
pub fn on_timeout(state: State) -> State {
    match state {
        State::Running(during) => State::Failed {
            during,
            failure: Failure::Timeout,
        },
        other => other,
    }
}

/// The state when QEMU exited. `restart_expected`: the machine runs with
/// `-no-reboot`, so a reboot after the install ends QEMU and the caller
/// starts it again (without the stick); the run stays in
/// [`Stage::Rebooting`] then.
pub fn on_machine_exit(state: State, restart_expected: bool) -> State {
    match state {
        State::Running(Stage::Rebooting) if restart_expected => state,
        State::Running(during) => State::Failed {
            during,
            failure: Failure::MachineStopped,
        },
        other => other,
    }
}

/// A console line without the prefix systemd gives a service's output on
/// the console (`[   56.55] icos-setupos-install[409]: `), so the message
/// keeps its own indentation.
pub fn strip_service_prefix(line: &str) -> &str {
    let rest = match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((stamp, rest))
            if !stamp.trim().is_empty()
                && stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            rest
        }
        _ => return line,
    };
    match rest.split_once(": ") {
        Some((ident, message)) if !ident.is_empty() && !ident.contains(char::is_whitespace) => {
            message
        }
        _ => rest,
    }
}

/// Collects the reasons of the installer's failure banner from the lines
/// after its title: each `  - REASON` line, until the closing rule of `#`.
/// SetupOS's early failure line (`TITLE: REASON` on one line) is complete
/// at once. Lines may carry systemd's console prefix
/// ([`strip_service_prefix`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BannerReasons {
    started: bool,
    complete: bool,
    reasons: Vec<String>,
}

impl BannerReasons {
    /// An empty collector.
    pub fn new() -> BannerReasons {
        BannerReasons::default()
    }

    /// Feeds one cleaned console line; returns whether the banner is
    /// complete.
    pub fn push(&mut self, line: &str) -> bool {
        if self.complete {
            return true;
        }
        let text = strip_service_prefix(line).trim_end();
        if !self.started {
            if let Some(pos) = text.find(FAILURE_TITLE) {
                self.started = true;
                let rest = text[pos + FAILURE_TITLE.len()..]
                    .trim_start_matches(':')
                    .trim();
                if !rest.is_empty() {
                    self.reasons.push(rest.to_owned());
                    self.complete = true;
                }
            }
            return self.complete;
        }
        if let Some(reason) = text
            .strip_prefix("  - ")
            .or_else(|| text.strip_prefix("- "))
        {
            self.reasons.push(reason.trim().to_owned());
        } else if !self.reasons.is_empty() && !text.is_empty() && text.chars().all(|c| c == '#') {
            self.complete = true;
        }
        self.complete
    }

    /// Whether the title was seen.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the banner is complete.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The reasons so far.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

#[cfg(test)]
mod tests;
