//! The runner's life cycle as a pure state machine: start the VM, watch its
//! boot, restart it when it stops (with backoff after failed runs), and shut
//! it down on request.
//!
//! ```text
//!            Launch                      marker / timeout
//!  Starting ---------> Booting -----------------------------> Up(result)
//!    ^   | launch        |  QEMU exited                        | QEMU exited
//!    |   | failed        v                                     v
//!    |   '---------> Waiting(backoff) <--------------------------'
//!    |  backoff over     |
//!    '-------------------'
//!
//!  Terminate: Starting/Waiting -> Done(0); Booting/Up -> Stopping -> Done(0)
//! ```
//!
//! Without restarts (`Policy::restart == false`, like IC's upgrade VM) a
//! stopped VM or a failed launch ends the runner: exit 0 if the guest had
//! booted successfully, 1 otherwise.

use std::time::Duration;

/// How a boot watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootResult {
    /// `GUESTOS BOOT SUCCESS` appeared.
    Success,
    /// `GUESTOS BOOT FAILURE` appeared.
    Failure,
    /// Neither appeared within the boot timeout.
    Timeout,
}

impl BootResult {
    /// Every result.
    pub const ALL: [BootResult; 3] = [
        BootResult::Success,
        BootResult::Failure,
        BootResult::Timeout,
    ];

    /// `success`, `failure` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootResult::Success => "success",
            BootResult::Failure => "failure",
            BootResult::Timeout => "timeout",
        }
    }
}

/// The runner's state. `failures` counts consecutive runs that did not boot
/// successfully (including failed launches); it sets the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Preparing and starting QEMU.
    Starting {
        /// Consecutive unsuccessful runs.
        failures: u32,
    },
    /// QEMU runs; no boot marker yet.
    Booting {
        /// Consecutive unsuccessful runs before this one.
        failures: u32,
    },
    /// QEMU runs; the boot watch has ended.
    Up {
        /// Consecutive unsuccessful runs (0 after a success).
        failures: u32,
        /// How the watch ended.
        boot: BootResult,
    },
    /// The VM is stopped; waiting before the next start.
    Waiting {
        /// Consecutive unsuccessful runs.
        failures: u32,
    },
    /// Shutting the VM down (ACPI, then destroy).
    Stopping,
    /// Finished, with this exit code.
    Done {
        /// The process exit code.
        code: u8,
    },
}

impl State {
    /// The state the runner starts in.
    pub const INITIAL: State = State::Starting { failures: 0 };

    /// A short name for logs, metrics and `STATUS=`.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting { .. } => "starting",
            State::Booting { .. } => "booting",
            State::Up {
                boot: BootResult::Success,
                ..
            } => "running",
            State::Up { .. } => "running-unhealthy",
            State::Waiting { .. } => "waiting",
            State::Stopping => "stopping",
            State::Done { .. } => "done",
        }
    }

    /// Every state name, for metrics.
    pub const NAMES: [&'static str; 7] = [
        "starting",
        "booting",
        "running",
        "running-unhealthy",
        "waiting",
        "stopping",
        "done",
    ];

    /// Whether QEMU is (meant to be) running.
    pub fn vm_running(self) -> bool {
        matches!(
            self,
            State::Booting { .. } | State::Up { .. } | State::Stopping
        )
    }
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// QEMU was started.
    Launched,
    /// Preparing or starting QEMU failed.
    LaunchFailed,
    /// The boot watch ended.
    Boot(BootResult),
    /// QEMU exited on its own.
    VmExited,
    /// The backoff delay is over.
    BackoffElapsed,
    /// SIGTERM or SIGINT.
    Terminate,
    /// The graceful shutdown finished (QEMU is gone).
    ShutdownFinished,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 9] = [
        Event::Launched,
        Event::LaunchFailed,
        Event::Boot(BootResult::Success),
        Event::Boot(BootResult::Failure),
        Event::Boot(BootResult::Timeout),
        Event::VmExited,
        Event::BackoffElapsed,
        Event::Terminate,
        Event::ShutdownFinished,
    ];
}

/// What the runner must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Prepare and start the VM.
    Launch,
    /// Watch the running VM (for its marker, or its exit).
    Watch,
    /// Record the boot result and keep watching the VM.
    Booted(BootResult),
    /// Wait this long, then send [`Event::BackoffElapsed`].
    Backoff(Duration),
    /// Shut the VM down gracefully, then send [`Event::ShutdownFinished`].
    Shutdown,
    /// Exit the process with this code.
    Exit(u8),
    /// The event means nothing in this state; nothing changes.
    Ignore,
}

/// Restart settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Restart a stopped VM (the default GuestOS VM); `false` ends the
    /// runner instead (IC's upgrade VM).
    pub restart: bool,
    /// Delay before restarting after a run that had booted successfully;
    /// each consecutive failure doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for Policy {
    /// Restart; 1 s after a good run (IC polls the domain every second),
    /// doubling per consecutive failure up to 60 s (the unit's
    /// `RestartSec`).
    fn default() -> Self {
        Policy {
            restart: true,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The delay before the next start after `failures` consecutive
    /// unsuccessful runs: `base · 2^failures`, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(16);
        self.base_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// Applies one event: the new state and the action to take. Pure.
pub fn transition(state: State, event: Event, policy: &Policy) -> (State, Action) {
    let stopped = |failures: u32, booted: bool| {
        if policy.restart {
            (
                State::Waiting { failures },
                Action::Backoff(policy.delay(failures)),
            )
        } else {
            let code = u8::from(!booted);
            (State::Done { code }, Action::Exit(code))
        }
    };
    match (state, event) {
        (State::Done { .. }, _) => (state, Action::Ignore),

        (State::Stopping, Event::ShutdownFinished | Event::VmExited) => {
            (State::Done { code: 0 }, Action::Exit(0))
        }
        (State::Stopping, _) => (state, Action::Ignore),

        (State::Starting { .. } | State::Waiting { .. }, Event::Terminate) => {
            (State::Done { code: 0 }, Action::Exit(0))
        }
        (State::Booting { .. } | State::Up { .. }, Event::Terminate) => {
            (State::Stopping, Action::Shutdown)
        }

        (State::Starting { failures }, Event::Launched) => {
            (State::Booting { failures }, Action::Watch)
        }
        (State::Starting { failures }, Event::LaunchFailed) => {
            stopped(failures.saturating_add(1), false)
        }
        (State::Starting { .. }, _) => (state, Action::Ignore),

        (State::Waiting { failures }, Event::BackoffElapsed) => {
            (State::Starting { failures }, Action::Launch)
        }
        (State::Waiting { .. }, _) => (state, Action::Ignore),

        (State::Booting { failures }, Event::Boot(boot)) => {
            let failures = if boot == BootResult::Success {
                0
            } else {
                failures
            };
            (State::Up { failures, boot }, Action::Booted(boot))
        }
        (State::Booting { failures }, Event::VmExited) => {
            stopped(failures.saturating_add(1), false)
        }
        (State::Booting { .. }, _) => (state, Action::Ignore),

        // A success marker after the watch timed out: the guest was slow,
        // not broken.
        (
            State::Up {
                boot: BootResult::Timeout,
                ..
            },
            Event::Boot(BootResult::Success),
        ) => (
            State::Up {
                failures: 0,
                boot: BootResult::Success,
            },
            Action::Booted(BootResult::Success),
        ),
        (State::Up { failures, boot }, Event::VmExited) => {
            if boot == BootResult::Success {
                stopped(0, true)
            } else {
                stopped(failures.saturating_add(1), false)
            }
        }
        (State::Up { .. }, _) => (state, Action::Ignore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> Vec<State> {
        let mut out = vec![
            State::Stopping,
            State::Done { code: 0 },
            State::Done { code: 1 },
        ];
        for failures in [0, 1, 5, 40] {
            out.push(State::Starting { failures });
            out.push(State::Booting { failures });
            out.push(State::Waiting { failures });
            for boot in BootResult::ALL {
                out.push(State::Up { failures, boot });
            }
        }
        out
    }

    fn policies() -> [Policy; 2] {
        [
            Policy::default(),
            Policy {
                restart: false,
                ..Policy::default()
            },
        ]
    }

    /// The whole table, written out independently of `transition`.
    fn expected(s: State, e: Event, p: &Policy) -> (State, Action) {
        use BootResult::*;
        let restart_or = |failures: u32, code: u8| {
            if p.restart {
                (
                    State::Waiting { failures },
                    Action::Backoff(p.delay(failures)),
                )
            } else {
                (State::Done { code }, Action::Exit(code))
            }
        };
        match s {
            State::Done { .. } => (s, Action::Ignore),
            State::Stopping => match e {
                Event::ShutdownFinished | Event::VmExited => {
                    (State::Done { code: 0 }, Action::Exit(0))
                }
                _ => (s, Action::Ignore),
            },
            State::Starting { failures } => match e {
                Event::Launched => (State::Booting { failures }, Action::Watch),
                Event::LaunchFailed => restart_or(failures + 1, 1),
                Event::Terminate => (State::Done { code: 0 }, Action::Exit(0)),
                _ => (s, Action::Ignore),
            },
            State::Waiting { failures } => match e {
                Event::BackoffElapsed => (State::Starting { failures }, Action::Launch),
                Event::Terminate => (State::Done { code: 0 }, Action::Exit(0)),
                _ => (s, Action::Ignore),
            },
            State::Booting { failures } => match e {
                Event::Boot(Success) => (
                    State::Up {
                        failures: 0,
                        boot: Success,
                    },
                    Action::Booted(Success),
                ),
                Event::Boot(r) => (State::Up { failures, boot: r }, Action::Booted(r)),
                Event::VmExited => restart_or(failures + 1, 1),
                Event::Terminate => (State::Stopping, Action::Shutdown),
                _ => (s, Action::Ignore),
            },
            State::Up { failures, boot } => match (boot, e) {
                (_, Event::Terminate) => (State::Stopping, Action::Shutdown),
                (Success, Event::VmExited) => restart_or(0, 0),
                (_, Event::VmExited) => restart_or(failures + 1, 1),
                (Timeout, Event::Boot(Success)) => (
                    State::Up {
                        failures: 0,
                        boot: Success,
                    },
                    Action::Booted(Success),
                ),
                _ => (s, Action::Ignore),
            },
        }
    }

    #[test]
    fn every_state_and_event() {
        let mut checked = 0;
        for p in policies() {
            for s in states() {
                for e in Event::ALL {
                    assert_eq!(
                        transition(s, e, &p),
                        expected(s, e, &p),
                        "{s:?} + {e:?} ({p:?})"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 27 * 9);
    }

    #[test]
    fn invariants() {
        for p in policies() {
            for s in states() {
                for e in Event::ALL {
                    let (next, action) = transition(s, e, &p);
                    // Ignored events change nothing.
                    if action == Action::Ignore {
                        assert_eq!(next, s);
                    }
                    // Exiting means Done, and Done means exiting (or was Done).
                    if let Action::Exit(code) = action {
                        assert_eq!(next, State::Done { code });
                    }
                    // A terminate never starts anything and always ends up
                    // stopping or done.
                    if e == Event::Terminate {
                        assert!(matches!(next, State::Stopping | State::Done { .. }));
                        assert!(!matches!(action, Action::Launch | Action::Backoff(_)));
                    }
                    // Without restarts the VM is never started again.
                    if !p.restart && !matches!(s, State::Waiting { .. }) {
                        assert!(!matches!(next, State::Waiting { .. }));
                    }
                    // Shutdown is asked for only while QEMU runs.
                    if action == Action::Shutdown {
                        assert!(s.vm_running());
                    }
                }
            }
        }
    }

    #[test]
    fn a_crash_loop_backs_off_and_a_good_boot_resets_it() {
        let p = Policy::default();
        let mut s = State::INITIAL;
        let mut delays = Vec::new();
        for _ in 0..8 {
            (s, _) = transition(s, Event::Launched, &p);
            let (next, action) = transition(s, Event::VmExited, &p);
            s = next;
            match action {
                Action::Backoff(d) => delays.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
            (s, _) = transition(s, Event::BackoffElapsed, &p);
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
        (s, _) = transition(s, Event::Launched, &p);
        (s, _) = transition(s, Event::Boot(BootResult::Success), &p);
        assert_eq!(
            s,
            State::Up {
                failures: 0,
                boot: BootResult::Success
            }
        );
        let (_, action) = transition(s, Event::VmExited, &p);
        assert_eq!(action, Action::Backoff(Duration::from_secs(1)));
    }

    #[test]
    fn delays_saturate() {
        let p = Policy::default();
        assert_eq!(p.delay(0), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
        let huge = Policy {
            base_delay: Duration::MAX,
            ..p
        };
        assert_eq!(huge.delay(3), p.max_delay);
    }

    #[test]
    fn names_cover_every_state() {
        for s in states() {
            assert!(State::NAMES.contains(&s.name()), "{s:?}");
        }
    }
}
