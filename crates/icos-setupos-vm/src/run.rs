//! Running the machine: the NTP server, QEMU, the reboot into HostOS, and
//! the stage tracker over the console.
//!
//! How HostOS is reached after the install ([`RebootMode`]):
//!
//! - [`RebootMode::Firmware`] (the default, as on a real server): QEMU runs
//!   without `-no-reboot`; the installer's `systemctl reboot` restarts the
//!   machine with the stick still plugged in, and OVMF follows the "IC-OS"
//!   boot entry the installer put first. Should SetupOS boot again instead,
//!   the stick is pulled and the machine power-cycled (what a node
//!   provider does), and the report says so ([`HostOsVia::StickPulled`]).
//! - [`RebootMode::PullStick`]: QEMU runs with `-no-reboot`; the reboot
//!   ends it, and it is started again without the stick, with the same
//!   OVMF variable store.
//!
//! Nested KVM under TCG now and then stalls a CPU: HostOS's soft-lockup
//! watchdog or RCU reports it, or GuestOS's kernel does, and HostOS's
//! kernel may panic after it; or GuestOS freezes without a word, and
//! HostOS's runner reports that no boot marker came within its wait. Any
//! of these once HostOS is booting power-cycles the machine, up to
//! [`RunSpec::power_cycles`] times.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use icos_qemu::{Ovmf, Runner, RunningVm};

use crate::error::Error;
use crate::machine::{MachineSpec, StickBus, UserNic};
use crate::node::NetPlan;
use crate::ntp::{NTP_PORT, NtpServer};
use crate::prepare::Prepared;
use crate::stage::{
    BannerReasons, End, Failure, Goal, Signal, Stage, State, classify, on_machine_exit, on_timeout,
    step,
};
use icos_qemu::Reaper;
use icos_qemu::clean_line;

/// The default memory: room for HostOS, its tmpfs, and a 2 GiB GuestOS.
pub const DEFAULT_MEMORY_MIB: u64 = 5120;
/// The default vCPUs.
pub const DEFAULT_VCPUS: u32 = 2;
/// The default time for the whole chain.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2400);
/// How long the reasons of a failure banner are waited for.
const BANNER_GRACE: Duration = Duration::from_secs(15);
/// How often the console is read.
const POLL: Duration = Duration::from_millis(200);

/// How the machine gets from the installer to HostOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootMode {
    /// Reboot in place; the firmware follows the installer's boot entry.
    #[default]
    Firmware,
    /// `-no-reboot`; start again without the stick.
    PullStick,
}

/// How HostOS was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOsVia {
    /// The firmware followed the "IC-OS" boot entry with the stick plugged in.
    BootEntry,
    /// The machine was started again without the stick.
    StickPulled,
}

/// How to run the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Time for the whole run, from QEMU's first start.
    pub timeout: Duration,
    /// The chronyd to serve NTP with; no NTP server if `None`.
    pub chronyd: Option<PathBuf>,
    /// The port chronyd serves on (QEMU forwards the guest's 10.0.2.2:123
    /// to 127.0.0.1:123, so only 123 reaches the guest).
    pub ntp_port: u16,
    /// How HostOS is reached after the install.
    pub reboot: RebootMode,
    /// How the stick is attached.
    pub stick_bus: StickBus,
    /// Power cycles allowed after a stall under nested KVM (see the module docs).
    pub power_cycles: u32,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Remove the run folder if the caller dies without cleaning up.
    pub remove_on_death: bool,
    /// Console lines kept for the report.
    pub tail_lines: usize,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: DEFAULT_VCPUS,
            timeout: DEFAULT_TIMEOUT,
            chronyd: Some(PathBuf::from("chronyd")),
            ntp_port: NTP_PORT,
            reboot: RebootMode::default(),
            stick_bus: StickBus::default(),
            power_cycles: 2,
            qemu: PathBuf::from(icos_qemu::DEFAULT_QEMU),
            remove_on_death: false,
            tail_lines: 40,
        }
    }
}

/// Something the run reports while it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A remark (a restart, a retry).
    Note(&'a str),
    /// chronyd serves NTP.
    NtpStarted {
        /// Its pid.
        pid: u32,
        /// Its config.
        config: &'a Path,
    },
    /// QEMU started.
    MachineStarted {
        /// Which boot of the run (1 first).
        boot: u32,
        /// QEMU's pid.
        pid: u32,
        /// Whether the stick is plugged in.
        stick: bool,
        /// The serial log.
        serial_log: &'a Path,
        /// QEMU's arguments.
        args: &'a [String],
    },
    /// A console line (cleaned).
    Line {
        /// Time since the first start.
        at: Duration,
        /// The line.
        line: &'a str,
    },
    /// The state changed.
    State {
        /// Time since the first start.
        at: Duration,
        /// The state before.
        from: State,
        /// The new state.
        to: State,
        /// The line that moved it, if a line did.
        line: Option<&'a str>,
    },
}

/// When a stage began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// Time since the first start.
    pub began: Duration,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The final state.
    pub state: State,
    /// Each stage entered, in order.
    pub stages: Vec<StageTime>,
    /// When the final state was reached.
    pub ended: Duration,
    /// When HostOS's marker arrived.
    pub hostos_up: Option<Duration>,
    /// HostOS's marker line.
    pub hostos_line: Option<String>,
    /// The line that ended the run (a marker, a banner title).
    pub end_line: Option<String>,
    /// The failure banner's reasons.
    pub reasons: Vec<String>,
    /// The last console lines.
    pub tail: Vec<String>,
    /// QEMU's own output when it exited unexpectedly.
    pub qemu_output: Option<String>,
    /// How HostOS was reached, if it was.
    pub hostos_via: Option<HostOsVia>,
    /// How many times QEMU was started.
    pub boots: u32,
    /// Remarks made during the run.
    pub notes: Vec<String>,
}

impl Report {
    /// Whether the run ended well.
    pub fn succeeded(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// How long each stage lasted (the last one up to the end).
    pub fn stage_durations(&self) -> Vec<(Stage, Duration)> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let until = self.stages.get(i + 1).map_or(self.ended, |n| n.began);
                (s.stage, until.saturating_sub(s.began))
            })
            .collect()
    }
}

/// A prepared machine with its host services, ready to run; QEMU and
/// chronyd are killed when it is dropped.
#[derive(Debug)]
pub struct Session {
    prepared: Prepared,
    spec: RunSpec,
    machine: MachineSpec,
    goal: Goal,
    vm: Option<RunningVm>,
    ntp: Option<NtpServer>,
    reaper: Option<Reaper>,
    started: Option<Instant>,
    boots: u32,
}

impl Session {
    /// Starts the host services (the reaper, chronyd) and makes the
    /// machine's description; QEMU starts in [`Session::run`].
    pub fn start(
        prepared: Prepared,
        net: &NetPlan,
        spec: RunSpec,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Session, Error> {
        let mut reaper = Reaper::start(spec.remove_on_death.then_some(prepared.dir.as_path()))?;
        let ntp = match &spec.chronyd {
            Some(chronyd) => {
                let ntp_dir = prepared.dir.join("ntp");
                std::fs::create_dir_all(&ntp_dir).map_err(Error::io("creating", &ntp_dir))?;
                let server = NtpServer::start(chronyd, &ntp_dir, spec.ntp_port)?;
                reaper.watch(server.pid())?;
                on_event(Event::NtpStarted {
                    pid: server.pid(),
                    config: server.config(),
                });
                Some(server)
            }
            None => None,
        };
        let uefi = Ovmf::find()?.prepare(prepared.dir.join("OVMF_VARS.fd"))?;
        let machine = MachineSpec {
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            uefi,
            stick: Some(prepared.stick.clone()),
            stick_bus: spec.stick_bus,
            targets: prepared.targets.clone(),
            nic: UserNic {
                ipv6_prefix: net.ipv6_prefix,
                ipv6_host: net.ipv6_host,
                mac: net.mac,
            },
            serial_log: prepared.dir.join("serial-1.log"),
            no_reboot: spec.reboot == RebootMode::PullStick,
        };
        let goal = Goal {
            install: prepared.switches.perform_installation,
            reboot: prepared.switches.reboot_after_installation,
        };
        Ok(Session {
            prepared,
            spec,
            machine,
            goal,
            vm: None,
            ntp,
            reaper: Some(reaper),
            started: None,
            boots: 0,
        })
    }

    /// The prepared run folder.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The machine as it runs now.
    pub fn machine(&self) -> &MachineSpec {
        &self.machine
    }

    /// Starts QEMU (again), with a serial log per boot.
    fn boot(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(mut old) = self.vm.take() {
            old.kill()?;
        }
        self.boots += 1;
        self.machine.serial_log = self.prepared.dir.join(format!("serial-{}.log", self.boots));
        let vm = self.machine.vm_config();
        let args = vm.to_args().map_err(icos_qemu::RunError::from)?;
        let runner = Runner {
            tail_lines: 0,
            ..Runner::new(&self.spec.qemu)
        };
        let running = runner.spawn(&vm)?;
        if let Some(reaper) = self.reaper.as_mut() {
            reaper.watch(running.pid())?;
        }
        self.started.get_or_insert_with(Instant::now);
        on_event(Event::MachineStarted {
            boot: self.boots,
            pid: running.pid(),
            stick: self.machine.stick.is_some(),
            serial_log: &self.machine.serial_log,
            args: &args,
        });
        self.vm = Some(running);
        Ok(())
    }

    /// Boots the machine and follows it until the run ends (see the module
    /// docs). QEMU keeps running afterwards: [`Session::stay`] follows it
    /// further, [`Session::stop`] or dropping the session ends it.
    pub fn run(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Report, Error> {
        self.boot(on_event)?;
        let started = self.started.unwrap_or_else(Instant::now);
        let deadline = started + self.spec.timeout;
        let mut state = State::START;
        let mut report = Report {
            state,
            stages: vec![StageTime {
                stage: Stage::SetupOsBooting,
                began: Duration::ZERO,
            }],
            ended: Duration::ZERO,
            hostos_up: None,
            hostos_line: None,
            end_line: None,
            reasons: Vec::new(),
            tail: Vec::new(),
            qemu_output: None,
            hostos_via: None,
            boots: 0,
            notes: Vec::new(),
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut banner = BannerReasons::new();
        let mut banner_deadline: Option<Instant> = None;
        let mut cycles_left = self.spec.power_cycles;
        let goal = self.goal;
        let tail_cap = self.spec.tail_lines;

        while let Some(vm) = self.vm.as_mut() {
            let mut lines = Vec::new();
            let exited = vm.pump(&mut |raw| lines.push(clean_line(raw)))?;
            for line in &lines {
                let at = started.elapsed();
                on_event(Event::Line { at, line });
                if tail_cap > 0 {
                    if tail.len() == tail_cap {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                }
                if !state.is_terminal() || banner.started() {
                    banner.push(line);
                }
                let Some(signal) = classify(line) else {
                    continue;
                };
                if signal == Signal::HostOsUp && report.hostos_up.is_none() && !state.is_terminal()
                {
                    report.hostos_up = Some(at);
                    report.hostos_line = Some(line.clone());
                }
                let next = step(state, signal, goal);
                if next != state {
                    self.record(&mut report, state, next, at, Some(line.as_str()), on_event);
                    state = next;
                }
            }
            let now = Instant::now();

            // The stick booted again after the install: pull it.
            if let State::Failed {
                during,
                failure: Failure::InstallerBootedAgain,
            } = state
                && during >= Stage::Rebooting
                && self.machine.stick.is_some()
            {
                self.note(
                    &mut report,
                    "the firmware booted the stick again after the install; \
                     pulling the stick and power-cycling the machine",
                    on_event,
                );
                self.machine.stick = None;
                self.boot(on_event)?;
                let back = State::Running(Stage::Rebooting);
                self.record(&mut report, state, back, started.elapsed(), None, on_event);
                state = back;
                continue;
            }
            if exited && !state.is_terminal() {
                let pull =
                    self.spec.reboot == RebootMode::PullStick && self.machine.stick.is_some();
                let next = on_machine_exit(state, pull);
                if next == state {
                    // The reboot after the install ended QEMU: start it again
                    // without the stick.
                    self.note(
                        &mut report,
                        "the machine rebooted after the install; starting it again without the stick",
                        on_event,
                    );
                    self.machine.stick = None;
                    self.boot(on_event)?;
                    continue;
                }
                report.qemu_output = self.vm.as_ref().map(RunningVm::qemu_output);
                self.record(&mut report, state, next, started.elapsed(), None, on_event);
                state = next;
            }
            if let State::Failed { during, failure } = state
                && failure.is_nested_stall()
                && during >= Stage::Rebooting
                && cycles_left > 0
            {
                cycles_left -= 1;
                self.note(
                    &mut report,
                    &format!(
                        "{} (a stall under nested KVM); power-cycling the machine",
                        failure.describe()
                    ),
                    on_event,
                );
                self.boot(on_event)?;
                let back = State::Running(Stage::Rebooting);
                self.record(&mut report, state, back, started.elapsed(), None, on_event);
                state = back;
                continue;
            }
            if !state.is_terminal() && now >= deadline {
                let next = on_timeout(state);
                self.record(&mut report, state, next, started.elapsed(), None, on_event);
                state = next;
            }
            if state.is_terminal() {
                let waiting_for_reasons = banner.started() && !banner.complete() && !exited;
                if !waiting_for_reasons {
                    break;
                }
                let until = *banner_deadline.get_or_insert(now + BANNER_GRACE);
                if now >= until {
                    break;
                }
            }
            std::thread::sleep(POLL);
        }
        report.state = state;
        report.reasons = banner.reasons().to_vec();
        report.tail = tail.into_iter().collect();
        report.boots = self.boots;
        if let State::Done(End::GuestOsUp) = state {
            report.hostos_via = Some(if self.machine.stick.is_some() {
                HostOsVia::BootEntry
            } else {
                HostOsVia::StickPulled
            });
        }
        Ok(report)
    }

    fn note(&self, report: &mut Report, text: &str, on_event: &mut dyn FnMut(Event<'_>)) {
        report.notes.push(text.to_owned());
        on_event(Event::Note(text));
    }

    fn record(
        &self,
        report: &mut Report,
        from: State,
        to: State,
        at: Duration,
        line: Option<&str>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        match to {
            State::Running(stage) => {
                if report.stages.last().map(|s| s.stage) != Some(stage) {
                    report.stages.push(StageTime { stage, began: at });
                }
            }
            State::Done(_) | State::Failed { .. } => {
                report.ended = at;
                report.end_line = line.map(str::to_owned);
            }
        }
        on_event(Event::State { at, from, to, line });
    }

    /// Follows the console until QEMU exits (or `keep_going` says stop),
    /// passing each cleaned line to `on_line`.
    pub fn stay(
        &mut self,
        on_line: &mut dyn FnMut(&str),
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(), Error> {
        let Some(vm) = self.vm.as_mut() else {
            return Ok(());
        };
        while keep_going() {
            if vm.pump(&mut |raw| on_line(&clean_line(raw)))? {
                break;
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Stops QEMU and chronyd.
    pub fn stop(&mut self) -> Result<(), Error> {
        if let Some(mut vm) = self.vm.take() {
            vm.kill()?;
        }
        self.ntp = None;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            let _ = vm.kill();
        }
        self.ntp = None;
        // Last: everything it would kill is gone.
        self.reaper = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_durations_run_to_the_next_stage_and_the_end() {
        let at = Duration::from_secs;
        let report = Report {
            state: State::Done(End::GuestOsUp),
            stages: vec![
                StageTime {
                    stage: Stage::SetupOsBooting,
                    began: at(0),
                },
                StageTime {
                    stage: Stage::Checks,
                    began: at(40),
                },
                StageTime {
                    stage: Stage::Installing,
                    began: at(70),
                },
            ],
            ended: at(200),
            hostos_up: None,
            hostos_line: None,
            end_line: None,
            reasons: Vec::new(),
            tail: Vec::new(),
            qemu_output: None,
            hostos_via: None,
            boots: 1,
            notes: Vec::new(),
        };
        assert_eq!(
            report.stage_durations(),
            [
                (Stage::SetupOsBooting, at(40)),
                (Stage::Checks, at(30)),
                (Stage::Installing, at(130)),
            ]
        );
        assert!(report.succeeded());
    }
}
