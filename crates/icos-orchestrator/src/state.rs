//! The upgrade state machine: an enum and a pure transition function.
//!
//! ```text
//!            Poll                 Target(v)              Downloaded
//!   Idle ───────────▶ Checking ────────────▶ Downloading ──────────▶ Verifying
//!    ▲  ◀──────────────  │ UpToDate                                     │ HashOk
//!    │                   │                                              ▼
//!    │             Poll  │ Failed(r)           Committed      Written
//! Backoff ◀──────────────┴──── (any active) ◀─ Committing ◀───────── Installing
//!                                                  │ Committed
//!                                                  ▼
//!                                            RebootPending (final until the reboot)
//! ```
//!
//! `Failed` from any active state (Checking, Downloading, Verifying,
//! Installing, Committing) leads to `Backoff` with the phase and the reason;
//! the next `Poll` leaves `Backoff` for `Checking`. `RebootPending` only
//! accepts `Failed` (the reboot request itself failed, so the node is
//! committed but still running the old version: the next poll finds the
//! disk in `first_boot` and asks again). `PendingCommit` is the event of a
//! start-up or a pass that finds an upgrade committed (`first_boot`) but
//! not booted yet: it leads to `RebootPending` without installing again.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an upgrade is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Nothing to do until the next poll.
    Idle,
    /// Fetching and verifying the registry, deciding the target.
    Checking,
    /// Downloading the release package of `version`.
    Downloading {
        /// The target version.
        version: String,
    },
    /// Checking the downloaded package's SHA-256 against the registry.
    Verifying {
        /// The target version.
        version: String,
    },
    /// Invalidating the spare slot and streaming the package into it.
    Installing {
        /// The target version.
        version: String,
    },
    /// Reading the spare slot back, then flipping grubenv to it.
    Committing {
        /// The target version.
        version: String,
    },
    /// Committed (`first_boot` on the spare slot); the reboot was asked for.
    RebootPending {
        /// The version the next boot tries.
        version: String,
    },
    /// The last attempt failed; waiting for the next poll.
    Backoff {
        /// The phase that failed (`checking`, `downloading`, ...).
        phase: String,
        /// Why.
        reason: String,
    },
}

impl State {
    /// The state's name, as in metrics and the status file.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Checking => "checking",
            State::Downloading { .. } => "downloading",
            State::Verifying { .. } => "verifying",
            State::Installing { .. } => "installing",
            State::Committing { .. } => "committing",
            State::RebootPending { .. } => "reboot_pending",
            State::Backoff { .. } => "backoff",
        }
    }

    /// Every state name, in order.
    pub const NAMES: [&'static str; 8] = [
        "idle",
        "checking",
        "downloading",
        "verifying",
        "installing",
        "committing",
        "reboot_pending",
        "backoff",
    ];

    /// The target version, in the states that have one.
    pub fn version(&self) -> Option<&str> {
        match self {
            State::Downloading { version }
            | State::Verifying { version }
            | State::Installing { version }
            | State::Committing { version }
            | State::RebootPending { version } => Some(version),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Backoff { phase, reason } => write!(f, "backoff (after {phase}: {reason})"),
            other => match other.version() {
                Some(v) => write!(f, "{} {v}", other.name()),
                None => f.write_str(other.name()),
            },
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The poll timer fired.
    Poll,
    /// The registry asks for the running version (or for nothing).
    UpToDate,
    /// The registry asks for another version.
    Target(String),
    /// The whole package is in the download file.
    Downloaded,
    /// Its SHA-256 is the elected one.
    HashOk,
    /// The package is in the spare slot and synced.
    Written,
    /// Read back and verified, grubenv flipped.
    Committed,
    /// At start-up: an upgrade to this version is committed but not booted.
    PendingCommit(String),
    /// The current phase failed.
    Failed(String),
}

/// A transition that the machine does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {from} on {event}")]
pub struct InvalidTransition {
    /// The state.
    pub from: String,
    /// The event.
    pub event: String,
}

/// The next state, or an error for an event the state does not accept.
pub fn transition(state: &State, event: &Event) -> Result<State, InvalidTransition> {
    use Event as E;
    use State as S;
    let next = match (state, event) {
        (S::Idle | S::Backoff { .. }, E::Poll) => S::Checking,
        (S::Idle | S::Backoff { .. } | S::Checking, E::PendingCommit(v)) => {
            S::RebootPending { version: v.clone() }
        }
        (S::Checking, E::UpToDate) => S::Idle,
        (S::Checking, E::Target(v)) => S::Downloading { version: v.clone() },
        (S::Downloading { version }, E::Downloaded) => S::Verifying {
            version: version.clone(),
        },
        (S::Verifying { version }, E::HashOk) => S::Installing {
            version: version.clone(),
        },
        (S::Installing { version }, E::Written) => S::Committing {
            version: version.clone(),
        },
        (S::Committing { version }, E::Committed) => S::RebootPending {
            version: version.clone(),
        },
        (
            S::Checking
            | S::Downloading { .. }
            | S::Verifying { .. }
            | S::Installing { .. }
            | S::Committing { .. }
            | S::RebootPending { .. },
            E::Failed(reason),
        ) => S::Backoff {
            phase: state.name().to_owned(),
            reason: reason.clone(),
        },
        _ => {
            return Err(InvalidTransition {
                from: state.to_string(),
                event: format!("{event:?}"),
            });
        }
    };
    Ok(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn v() -> String {
        "v2".to_owned()
    }

    fn states() -> Vec<State> {
        vec![
            State::Idle,
            State::Checking,
            State::Downloading { version: v() },
            State::Verifying { version: v() },
            State::Installing { version: v() },
            State::Committing { version: v() },
            State::RebootPending { version: v() },
            State::Backoff {
                phase: "checking".into(),
                reason: "down".into(),
            },
        ]
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Poll,
            Event::UpToDate,
            Event::Target(v()),
            Event::Downloaded,
            Event::HashOk,
            Event::Written,
            Event::Committed,
            Event::PendingCommit(v()),
            Event::Failed("boom".into()),
        ]
    }

    /// The whole table: every state against every event.
    #[test]
    fn every_state_and_event() {
        let backoff = |phase: &str| State::Backoff {
            phase: phase.into(),
            reason: "boom".into(),
        };
        for s in states() {
            for e in events() {
                let expected = match (s.name(), &e) {
                    ("idle" | "backoff", Event::Poll) => Some(State::Checking),
                    ("idle" | "backoff" | "checking", Event::PendingCommit(_)) => {
                        Some(State::RebootPending { version: v() })
                    }
                    ("checking", Event::UpToDate) => Some(State::Idle),
                    ("checking", Event::Target(_)) => Some(State::Downloading { version: v() }),
                    ("downloading", Event::Downloaded) => Some(State::Verifying { version: v() }),
                    ("verifying", Event::HashOk) => Some(State::Installing { version: v() }),
                    ("installing", Event::Written) => Some(State::Committing { version: v() }),
                    ("committing", Event::Committed) => Some(State::RebootPending { version: v() }),
                    (
                        name @ ("checking" | "downloading" | "verifying" | "installing"
                        | "committing" | "reboot_pending"),
                        Event::Failed(_),
                    ) => Some(backoff(name)),
                    _ => None,
                };
                let got = transition(&s, &e);
                match expected {
                    Some(next) => assert_eq!(got, Ok(next), "{s} on {e:?}"),
                    None => {
                        let err = got.expect_err("no transition expected");
                        assert!(err.to_string().contains(s.name()), "{err}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_full_upgrade_and_a_failure() {
        let mut s = State::Idle;
        for e in [
            Event::Poll,
            Event::Target(v()),
            Event::Downloaded,
            Event::HashOk,
            Event::Written,
            Event::Committed,
        ] {
            s = transition(&s, &e).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(s, State::RebootPending { version: v() });
        assert_eq!(s.to_string(), "reboot_pending v2");
        // A poll does not restart an upgrade that waits for its reboot.
        assert!(transition(&s, &Event::Poll).is_err());

        let s = transition(
            &State::Downloading { version: v() },
            &Event::Failed("cut".into()),
        );
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.to_string(), "backoff (after downloading: cut)");
        assert_eq!(transition(&s, &Event::Poll), Ok(State::Checking));
    }

    #[test]
    fn names_are_listed_and_serialized() {
        let names: Vec<&str> = states().iter().map(State::name).collect();
        assert_eq!(names, State::NAMES);
        let json = serde_json::to_string(&State::Installing { version: v() })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, r#"{"state":"installing","version":"v2"}"#);
    }
}
