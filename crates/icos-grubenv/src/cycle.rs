//! The IC-OS A/B boot-cycle state machine, as pure functions.
//!
//! Two grubenv variables hold the state of an A/B system (GuestOS or HostOS):
//!
//! - `boot_alternative`: the slot the boot loader picks, `A` or `B`
//!   (missing or empty means `A`);
//! - `boot_cycle`: `install`, `first_boot`, `failsafe_check` or `stable`
//!   (missing or empty means `stable`).
//!
//! Empty counts as missing because GRUB's script tests `= ""`.
//!
//! # Diagram
//!
//! `X` is the slot in `boot_alternative`, `Y` the other one. `Boot` is what
//! the boot loader (GRUB, or the VM runner that direct-boots a guest) does
//! each time it starts the system; the rest are the `manageboot` actions of
//! the running system and the operator's manual swap.
//!
//! ```text
//!   (X, install)
//!        |  Boot
//!        v
//!   (X, stable) ----.  Boot: unchanged, boots X
//!        |    ^     |  UpgradeInstall: write the image into Y, unchanged
//!        |    '-----'  Confirm: nothing to do
//!        |
//!        |  UpgradeCommit (from stable only)
//!        v
//!   (Y, first_boot)       Confirm: refused (Y has not booted yet)
//!        |
//!        |  Boot: trial of Y
//!        v
//!   (Y, failsafe_check) ---- Boot (no Confirm came) ----> (X, stable)
//!        |                   rollback, boots X
//!        |  Confirm (the system running Y is healthy)
//!        v
//!   (Y, stable)
//!
//!   Swap(to), from any state  --->  (to, first_boot), then as above
//! ```
//!
//! A new slot is booted once on trial. If the system it runs confirms before
//! the next boot, the new slot becomes stable; otherwise the next boot returns
//! to the slot that ran before the upgrade and declares it stable again.
//!
//! # Decisions beyond IC's scripts
//!
//! - **Invalid values are errors.** A `boot_alternative` other than `A`/`B`
//!   or an unknown `boot_cycle` is reported as [`StateError::InvalidValue`],
//!   as IC's direct-boot runner does. GRUB's script would quietly treat an
//!   unknown cycle as stable and any alternative other than `A` as `B`; a
//!   guessed slot may boot the wrong system, so no guess is made here.
//! - **`UpgradeInstall` and `UpgradeCommit` need `stable`.** `manageboot.sh`
//!   refuses only `first_boot`; here `install` and `failsafe_check` are
//!   refused too, since an unconfirmed system must not overwrite the slot it
//!   would roll back to.
//! - **`Confirm`** turns `failsafe_check` (the normal case: the trial slot
//!   runs and is healthy) and `install` into `stable` on the same slot, and is
//!   a no-op on `stable`. On `first_boot` it is refused
//!   ([`TransitionError::ConfirmBeforeTrial`]): the running system is still
//!   the old slot, and marking the never-booted new slot stable would remove
//!   the rollback. (`manageboot.sh confirm` would write `stable` there.)
//! - **`Swap`** is the operator's override and is allowed from every state:
//!   it points `boot_alternative` at the chosen slot (the other one by
//!   default) with `first_boot`, so the swap itself gets a trial boot.

use std::fmt;
use std::str::FromStr;

use crate::block::{GrubEnv, VarError};

/// Name of the variable that holds the slot to boot.
pub const BOOT_ALTERNATIVE: &str = "boot_alternative";
/// Name of the variable that holds the boot cycle.
pub const BOOT_CYCLE: &str = "boot_cycle";

/// One of the two A/B slots (a boot, root and var partition each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The value stored in grubenv: `A` or `B`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = StateError;

    /// Parses exactly `A` or `B` (as GRUB and the scripts compare them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" => Ok(Slot::A),
            "B" => Ok(Slot::B),
            _ => Err(StateError::InvalidValue {
                name: BOOT_ALTERNATIVE,
                value: s.to_owned(),
                expected: "A or B",
            }),
        }
    }
}

/// Where a slot is in its life: the `boot_cycle` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootCycle {
    /// Freshly installed and not booted yet; the first boot makes it stable.
    Install,
    /// An upgrade (or swap) was committed to `boot_alternative`, which has
    /// not booted yet; the next boot tries it.
    FirstBoot,
    /// The slot in `boot_alternative` was booted on trial and has not been
    /// confirmed; the next boot rolls back to the other slot.
    FailsafeCheck,
    /// The slot in `boot_alternative` is known good and always booted.
    Stable,
}

impl BootCycle {
    /// Every cycle value.
    pub const ALL: [BootCycle; 4] = [
        BootCycle::Install,
        BootCycle::FirstBoot,
        BootCycle::FailsafeCheck,
        BootCycle::Stable,
    ];

    /// The value stored in grubenv.
    pub fn as_str(self) -> &'static str {
        match self {
            BootCycle::Install => "install",
            BootCycle::FirstBoot => "first_boot",
            BootCycle::FailsafeCheck => "failsafe_check",
            BootCycle::Stable => "stable",
        }
    }
}

impl fmt::Display for BootCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BootCycle {
    type Err = StateError;

    /// Parses one of the four stored names exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BootCycle::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| StateError::InvalidValue {
                name: BOOT_CYCLE,
                value: s.to_owned(),
                expected: "install, first_boot, failsafe_check or stable",
            })
    }
}

/// The boot state held in grubenv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootState {
    /// The slot the boot loader picks (`boot_alternative`).
    pub alternative: Slot,
    /// The boot cycle (`boot_cycle`).
    pub cycle: BootCycle,
}

impl Default for BootState {
    /// `A`, `stable`: what a block without the variables means.
    fn default() -> Self {
        BootState::new(Slot::A, BootCycle::Stable)
    }
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{BOOT_ALTERNATIVE}={} {BOOT_CYCLE}={}",
            self.alternative, self.cycle
        )
    }
}

impl BootState {
    /// A state from its two parts.
    pub fn new(alternative: Slot, cycle: BootCycle) -> Self {
        BootState { alternative, cycle }
    }

    /// Every state: each slot with each cycle.
    pub fn all() -> impl Iterator<Item = BootState> {
        Slot::ALL.into_iter().flat_map(|alternative| {
            BootCycle::ALL
                .into_iter()
                .map(move |cycle| BootState::new(alternative, cycle))
        })
    }

    /// Reads the state from a block: a missing or empty variable takes its
    /// default (`A`, `stable`); any other unknown value is an error.
    pub fn from_env(env: &GrubEnv) -> Result<Self, StateError> {
        let alternative = match env.get(BOOT_ALTERNATIVE) {
            None | Some("") => Slot::A,
            Some(value) => value.parse()?,
        };
        let cycle = match env.get(BOOT_CYCLE) {
            None | Some("") => BootCycle::Stable,
            Some(value) => value.parse()?,
        };
        Ok(BootState { alternative, cycle })
    }

    /// Stores the state in a block, keeping every other variable and the
    /// position of the two variables if they exist (new ones are appended).
    pub fn write_to_env(&self, env: &mut GrubEnv) -> Result<(), VarError> {
        env.set(BOOT_ALTERNATIVE, self.alternative.as_str())?;
        env.set(BOOT_CYCLE, self.cycle.as_str())
    }

    /// The slot the running system was booted from, as `manageboot.sh`
    /// works it out: in `first_boot` the committed slot has not booted yet,
    /// so the system still runs from the other one.
    pub fn running_slot(&self) -> Slot {
        match self.cycle {
            BootCycle::FirstBoot => self.alternative.other(),
            _ => self.alternative,
        }
    }

    /// The slot the next boot will start (see [`transition`] with
    /// [`Event::Boot`]): the other slot during `failsafe_check`.
    pub fn next_boot_slot(&self) -> Slot {
        match self.cycle {
            BootCycle::FailsafeCheck => self.alternative.other(),
            _ => self.alternative,
        }
    }

    /// The slot an upgrade is written to: the one not running.
    pub fn upgrade_target(&self) -> Slot {
        self.running_slot().other()
    }
}

/// Something that happens to an A/B system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The boot loader (or the VM runner) starts the system.
    Boot,
    /// `manageboot upgrade-install`: write a new image into the spare slot.
    UpgradeInstall,
    /// `manageboot upgrade-commit`: boot the freshly written slot next, on trial.
    UpgradeCommit,
    /// `manageboot confirm`: the running system declares itself healthy.
    Confirm,
    /// The operator's manual swap: try the given slot (by default the other
    /// one than `boot_alternative`) on the next boot.
    Swap(Option<Slot>),
}

impl Event {
    /// Every event, each swap target included.
    pub const ALL: [Event; 7] = [
        Event::Boot,
        Event::UpgradeInstall,
        Event::UpgradeCommit,
        Event::Confirm,
        Event::Swap(None),
        Event::Swap(Some(Slot::A)),
        Event::Swap(Some(Slot::B)),
    ];
}

/// Why a boot happens the way it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootKind {
    /// The known-good slot, as usual.
    Stable,
    /// The first boot after installation.
    AfterInstall,
    /// A new slot's trial boot, after an upgrade or a swap.
    Trial,
    /// The trial slot was not confirmed: back to the previous slot.
    Rollback,
}

impl BootKind {
    /// A short lower-case name: `stable`, `after_install`, `trial`, `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootKind::Stable => "stable",
            BootKind::AfterInstall => "after_install",
            BootKind::Trial => "trial",
            BootKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for BootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller must do after a transition (besides storing the new
/// state when it differs from the old one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Boot this slot now.
    Boot {
        /// The slot to boot.
        slot: Slot,
        /// Why.
        kind: BootKind,
    },
    /// Write the new image into this slot; the state does not change.
    InstallInto(Slot),
    /// The next boot tries this slot; reboot when ready.
    TryOnNextBoot(Slot),
    /// The running slot is now stable.
    Confirmed(Slot),
    /// Nothing to do: the running slot was stable already.
    AlreadyStable(Slot),
}

/// A value of `boot_alternative` or `boot_cycle` that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The variable holds an unknown value.
    #[error("invalid grubenv {name} value {value:?}: expected {expected}")]
    InvalidValue {
        /// The variable's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
}

/// An event that the state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Installing or committing an upgrade needs a stable system.
    #[error(
        "cannot {action} an upgrade while boot_cycle is {cycle}: the running slot must be confirmed stable first"
    )]
    NotStable {
        /// `install` or `commit`.
        action: &'static str,
        /// The current cycle.
        cycle: BootCycle,
    },
    /// Confirming before the committed slot ever booted.
    #[error(
        "cannot confirm while boot_cycle is first_boot: slot {committed} has not booted yet, and the running slot {running} needs no confirmation"
    )]
    ConfirmBeforeTrial {
        /// The committed slot, not booted yet.
        committed: Slot,
        /// The slot actually running.
        running: Slot,
    },
}

/// The infallible core of [`Event::Boot`]: the state after the boot, the
/// slot to boot and why.
pub fn boot(state: BootState) -> (BootState, Slot, BootKind) {
    let x = state.alternative;
    match state.cycle {
        BootCycle::Install => (
            BootState::new(x, BootCycle::Stable),
            x,
            BootKind::AfterInstall,
        ),
        BootCycle::FirstBoot => (
            BootState::new(x, BootCycle::FailsafeCheck),
            x,
            BootKind::Trial,
        ),
        BootCycle::FailsafeCheck => (
            BootState::new(x.other(), BootCycle::Stable),
            x.other(),
            BootKind::Rollback,
        ),
        BootCycle::Stable => (state, x, BootKind::Stable),
    }
}

/// Applies one event to a state: the new state and what to do.
///
/// Pure: it reads and writes nothing. The caller stores the new state if it
/// differs from the old one, and only after it has done what the action
/// needs (a boot refresh is not idempotent, so a runner that fails to start
/// the system must not store it).
pub fn transition(state: BootState, event: Event) -> Result<(BootState, Action), TransitionError> {
    let BootState { alternative, cycle } = state;
    let running = state.running_slot();
    let result = match event {
        Event::Boot => {
            let (after, slot, kind) = boot(state);
            (after, Action::Boot { slot, kind })
        }
        Event::UpgradeInstall | Event::UpgradeCommit if cycle != BootCycle::Stable => {
            let action = if event == Event::UpgradeInstall {
                "install"
            } else {
                "commit"
            };
            return Err(TransitionError::NotStable { action, cycle });
        }
        Event::UpgradeInstall => (state, Action::InstallInto(state.upgrade_target())),
        Event::UpgradeCommit => {
            let target = state.upgrade_target();
            (
                BootState::new(target, BootCycle::FirstBoot),
                Action::TryOnNextBoot(target),
            )
        }
        Event::Confirm => match cycle {
            BootCycle::Stable => (state, Action::AlreadyStable(running)),
            BootCycle::Install | BootCycle::FailsafeCheck => (
                BootState::new(alternative, BootCycle::Stable),
                Action::Confirmed(running),
            ),
            BootCycle::FirstBoot => {
                return Err(TransitionError::ConfirmBeforeTrial {
                    committed: alternative,
                    running,
                });
            }
        },
        Event::Swap(to) => {
            let target = to.unwrap_or(alternative.other());
            (
                BootState::new(target, BootCycle::FirstBoot),
                Action::TryOnNextBoot(target),
            )
        }
    };
    Ok(result)
}

/// One boot's refresh of a block, as a VM runner or GRUB does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRefresh {
    /// The state before the boot.
    pub before: BootState,
    /// The state after the boot.
    pub after: BootState,
    /// The slot to boot.
    pub slot: Slot,
    /// Why that slot.
    pub kind: BootKind,
    /// The block with the new state; store it only if [`BootRefresh::changed`].
    pub env: GrubEnv,
    /// Whether the block's bytes must be rewritten: the state changed, or a
    /// variable was missing (GRUB's script saves the defaults it fills in).
    pub changed: bool,
}

/// Why [`refresh_for_boot`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The block holds an invalid state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state could not be stored (cannot happen for the two known names).
    #[error(transparent)]
    Var(#[from] VarError),
}

/// Applies [`Event::Boot`] to a block: which slot to boot, and the block to
/// store afterwards. Pure; the input is not modified.
pub fn refresh_for_boot(env: &GrubEnv) -> Result<BootRefresh, RefreshError> {
    let before = BootState::from_env(env)?;
    let (after, slot, kind) = boot(before);
    let mut new_env = env.clone();
    after.write_to_env(&mut new_env)?;
    let changed = new_env != *env;
    Ok(BootRefresh {
        before,
        after,
        slot,
        kind,
        env: new_env,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use BootCycle::*;
    use Slot::*;

    fn st(alternative: Slot, cycle: BootCycle) -> BootState {
        BootState::new(alternative, cycle)
    }

    /// The whole table, written out by hand: every (state, event) pair.
    fn expected(state: BootState, event: Event) -> Result<(BootState, Action), TransitionError> {
        let x = state.alternative;
        let y = x.other();
        let boot = |slot, kind| Action::Boot { slot, kind };
        let not_stable = |action| TransitionError::NotStable {
            action,
            cycle: state.cycle,
        };
        Ok(match (state.cycle, event) {
            (Install, Event::Boot) => (st(x, Stable), boot(x, BootKind::AfterInstall)),
            (FirstBoot, Event::Boot) => (st(x, FailsafeCheck), boot(x, BootKind::Trial)),
            (FailsafeCheck, Event::Boot) => (st(y, Stable), boot(y, BootKind::Rollback)),
            (Stable, Event::Boot) => (st(x, Stable), boot(x, BootKind::Stable)),

            (Stable, Event::UpgradeInstall) => (st(x, Stable), Action::InstallInto(y)),
            (Install | FirstBoot | FailsafeCheck, Event::UpgradeInstall) => {
                return Err(not_stable("install"));
            }

            (Stable, Event::UpgradeCommit) => (st(y, FirstBoot), Action::TryOnNextBoot(y)),
            (Install | FirstBoot | FailsafeCheck, Event::UpgradeCommit) => {
                return Err(not_stable("commit"));
            }

            (Stable, Event::Confirm) => (st(x, Stable), Action::AlreadyStable(x)),
            (Install | FailsafeCheck, Event::Confirm) => (st(x, Stable), Action::Confirmed(x)),
            (FirstBoot, Event::Confirm) => {
                return Err(TransitionError::ConfirmBeforeTrial {
                    committed: x,
                    running: y,
                });
            }

            (_, Event::Swap(None)) => (st(y, FirstBoot), Action::TryOnNextBoot(y)),
            (_, Event::Swap(Some(to))) => (st(to, FirstBoot), Action::TryOnNextBoot(to)),
        })
    }

    #[test]
    fn every_state_and_event_matches_the_table() {
        let mut pairs = 0;
        for state in BootState::all() {
            for event in Event::ALL {
                assert_eq!(
                    transition(state, event),
                    expected(state, event),
                    "{state} on {event:?}"
                );
                pairs += 1;
            }
        }
        assert_eq!(pairs, 8 * 7);
    }

    #[test]
    fn boot_follows_the_ic_table() {
        assert_eq!(
            transition(st(A, Install), Event::Boot).unwrap().0,
            st(A, Stable)
        );
        assert_eq!(
            transition(st(B, FirstBoot), Event::Boot).unwrap().0,
            st(B, FailsafeCheck)
        );
        assert_eq!(
            transition(st(A, FailsafeCheck), Event::Boot).unwrap().0,
            st(B, Stable)
        );
        assert_eq!(
            transition(st(B, FailsafeCheck), Event::Boot).unwrap().0,
            st(A, Stable)
        );
        assert_eq!(
            transition(st(B, Stable), Event::Boot).unwrap().0,
            st(B, Stable)
        );
    }

    #[test]
    fn boot_boots_the_new_alternative_and_next_boot_slot_predicts_it() {
        for state in BootState::all() {
            let (after, action) = transition(state, Event::Boot).unwrap();
            let Action::Boot { slot, .. } = action else {
                panic!("{state}: boot gave {action:?}");
            };
            assert_eq!(slot, after.alternative, "{state}");
            assert_eq!(slot, state.next_boot_slot(), "{state}");
            assert!(matches!(after.cycle, Stable | FailsafeCheck), "{state}");
        }
    }

    #[test]
    fn upgrade_never_targets_the_running_slot() {
        for state in BootState::all() {
            if let Ok((_, Action::InstallInto(slot))) = transition(state, Event::UpgradeInstall) {
                assert_ne!(slot, state.running_slot());
            }
        }
    }

    #[test]
    fn running_slot_follows_manageboot() {
        assert_eq!(st(A, FirstBoot).running_slot(), B);
        assert_eq!(st(A, FailsafeCheck).running_slot(), A);
        assert_eq!(st(B, Stable).running_slot(), B);
        assert_eq!(st(B, Install).running_slot(), B);
        assert_eq!(st(A, Stable).upgrade_target(), B);
    }

    #[test]
    fn parses_and_prints_values() {
        for slot in Slot::ALL {
            assert_eq!(slot.as_str().parse::<Slot>().unwrap(), slot);
        }
        for cycle in BootCycle::ALL {
            assert_eq!(cycle.as_str().parse::<BootCycle>().unwrap(), cycle);
        }
        assert!("a".parse::<Slot>().is_err());
        assert!("Stable".parse::<BootCycle>().is_err());
        assert_eq!(
            st(B, FirstBoot).to_string(),
            "boot_alternative=B boot_cycle=first_boot"
        );
    }

    #[test]
    fn state_from_env_defaults_and_errors() {
        let mut env = GrubEnv::new();
        assert_eq!(BootState::from_env(&env).unwrap(), st(A, Stable));
        env.set(BOOT_ALTERNATIVE, "").unwrap();
        env.set(BOOT_CYCLE, "").unwrap();
        assert_eq!(BootState::from_env(&env).unwrap(), st(A, Stable));
        env.set(BOOT_ALTERNATIVE, "B").unwrap();
        assert_eq!(BootState::from_env(&env).unwrap(), st(B, Stable));
        env.set(BOOT_CYCLE, "bogus").unwrap();
        let err = BootState::from_env(&env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid grubenv boot_cycle value \"bogus\": expected install, first_boot, failsafe_check or stable"
        );
        env.set(BOOT_CYCLE, "stable").unwrap();
        env.set(BOOT_ALTERNATIVE, "C").unwrap();
        let err = BootState::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("boot_alternative"), "{err}");
    }

    #[test]
    fn write_to_env_keeps_other_variables_and_positions() {
        let mut env = GrubEnv::new();
        env.set("before", "1").unwrap();
        env.set(BOOT_CYCLE, "first_boot").unwrap();
        env.set("after", "2").unwrap();
        st(B, FailsafeCheck).write_to_env(&mut env).unwrap();
        let vars: Vec<_> = env.vars().collect();
        assert_eq!(
            vars,
            [
                ("before", "1"),
                (BOOT_CYCLE, "failsafe_check"),
                ("after", "2"),
                (BOOT_ALTERNATIVE, "B")
            ]
        );
    }

    #[test]
    fn refresh_for_boot_reports_slot_and_change() {
        let mut env = GrubEnv::new();
        st(A, FirstBoot).write_to_env(&mut env).unwrap();
        let refresh = refresh_for_boot(&env).unwrap();
        assert_eq!(refresh.slot, A);
        assert_eq!(refresh.kind, BootKind::Trial);
        assert_eq!(refresh.after, st(A, FailsafeCheck));
        assert!(refresh.changed);
        let again = refresh_for_boot(&refresh.env).unwrap();
        assert_eq!((again.slot, again.kind), (B, BootKind::Rollback));
        let stable = refresh_for_boot(&again.env).unwrap();
        assert!(!stable.changed);
        assert_eq!(stable.env, again.env);

        // Missing variables: the defaults are stored, as GRUB's script does.
        let fresh = refresh_for_boot(&GrubEnv::new()).unwrap();
        assert_eq!((fresh.slot, fresh.kind), (A, BootKind::Stable));
        assert!(fresh.changed);
        assert_eq!(fresh.env.get(BOOT_CYCLE), Some("stable"));

        let mut bad = GrubEnv::new();
        bad.set(BOOT_CYCLE, "bogus").unwrap();
        assert!(matches!(
            refresh_for_boot(&bad),
            Err(RefreshError::State(StateError::InvalidValue { .. }))
        ));
    }

    /// A small deterministic generator for the random sequences.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let high = usize::from(self.0.to_be_bytes()[0]);
            high % n
        }
    }

    /// Random event sequences, with the invariants checked after each step:
    ///
    /// - an upgrade committed from stable slot X, booted twice without a
    ///   confirm in between, is back on X and stable (a failed first boot
    ///   returns to the previous slot);
    /// - a confirm after the trial boot keeps the new slot, stable;
    /// - a boot always boots the state's (new) alternative and never leaves
    ///   `install` or `first_boot` behind;
    /// - an install never targets the running slot and changes nothing;
    /// - refused events leave the state as it was.
    #[test]
    fn random_sequences_keep_the_invariants() {
        let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
        let mut steps = 0;
        let mut rollbacks = 0;
        let mut confirmed_upgrades = 0;
        for _ in 0..500 {
            let mut state = st(Slot::ALL[rng.below(2)], BootCycle::ALL[rng.below(4)]);
            // The slot a pending trial would return to, and the boots since
            // the commit.
            let mut pending: Option<(Slot, u8)> = None;
            for _ in 0..40 {
                // Bias towards the upgrade path so trials happen often.
                let event = match rng.below(10) {
                    0..=2 => Event::Boot,
                    3 => Event::UpgradeInstall,
                    4 | 5 => Event::UpgradeCommit,
                    6 | 7 => Event::Confirm,
                    _ => Event::ALL[rng.below(Event::ALL.len())],
                };
                steps += 1;
                let Ok((next, action)) = transition(state, event) else {
                    // Refused: nothing changes, pending trials stay pending.
                    continue;
                };
                match event {
                    Event::Boot => {
                        let Action::Boot { slot, kind } = action else {
                            panic!("boot gave {action:?}");
                        };
                        assert_eq!(slot, next.alternative);
                        assert!(matches!(next.cycle, Stable | FailsafeCheck));
                        if let Some((previous, boots)) = pending {
                            if boots == 0 {
                                assert_eq!(kind, BootKind::Trial);
                                assert_eq!(next.cycle, FailsafeCheck);
                                pending = Some((previous, 1));
                            } else {
                                assert_eq!(kind, BootKind::Rollback);
                                assert_eq!(next, st(previous, Stable));
                                rollbacks += 1;
                                pending = None;
                            }
                        }
                    }
                    Event::UpgradeInstall => {
                        assert_eq!(next, state);
                        assert_eq!(action, Action::InstallInto(state.running_slot().other()));
                    }
                    Event::UpgradeCommit => {
                        assert_eq!(state.cycle, Stable);
                        assert_eq!(next, st(state.alternative.other(), FirstBoot));
                        pending = Some((state.alternative, 0));
                    }
                    Event::Confirm => {
                        assert_eq!(next.cycle, Stable);
                        assert_eq!(next.alternative, state.alternative);
                        if let Some((previous, 1)) = pending {
                            assert_ne!(next.alternative, previous);
                            confirmed_upgrades += 1;
                        }
                        pending = None;
                    }
                    Event::Swap(_) => {
                        assert_eq!(next.cycle, FirstBoot);
                        // A swap is a trial of its own: an unconfirmed boot
                        // of the chosen slot returns to the other one.
                        pending = Some((next.alternative.other(), 0));
                        if event == Event::Swap(None) && state.cycle == Stable {
                            assert_eq!(next.alternative.other(), state.alternative);
                        }
                    }
                }
                state = next;
            }
        }
        assert!(steps >= 20_000);
        assert!(rollbacks > 50, "only {rollbacks} rollbacks exercised");
        assert!(
            confirmed_upgrades > 50,
            "only {confirmed_upgrades} confirmed upgrades"
        );
    }
}
