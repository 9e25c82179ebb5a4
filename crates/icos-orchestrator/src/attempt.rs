//! What became of the last upgrade, judged at start from a record kept in
//! the datastore and the disk's grubenv.
//!
//! Before the spare slot is touched the orchestrator writes an
//! [`Attempt`] (`upgrade-attempt.json`: version, package hash, slots,
//! `committed: false`) into the datastore, which lives on the `store`
//! partition that both slots share; once grubenv says `first_boot` the
//! record is rewritten with `committed: true`. At the next start, before
//! confirming, [`judge`] compares the record with grubenv (a pure
//! function):
//!
//! | record            | grubenv                                 | verdict       |
//! |-------------------|-----------------------------------------|---------------|
//! | none              | any                                     | `Nothing`     |
//! | any               | `first_boot`                            | `Pending`     |
//! | any               | attempted slot, `failsafe_check`        | `Booted`      |
//! | committed         | attempted slot, `stable`                | `Booted`      |
//! | committed         | other slot (GRUB went back)             | `RolledBack`  |
//! | not committed     | attempted slot, `stable` or `install`   | `Interrupted` |
//! | not committed     | other slot                              | `Interrupted` |
//!
//! A version that rolled back is remembered in `failed-upgrades.json`
//! with its package hash: the orchestrator does not install that package
//! again, and follows the registry as soon as it names another version
//! (or the same version id with another package).

use std::path::{Path, PathBuf};

use icos_grubenv::{BootCycle, BootState, Slot};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::files::write_if_changed;

/// The record's file name in the datastore.
pub const ATTEMPT_FILE: &str = "upgrade-attempt.json";
/// The failed upgrades' file name in the datastore.
pub const FAILED_FILE: &str = "failed-upgrades.json";
/// How many failed upgrades are remembered (the oldest are dropped).
const FAILED_KEPT: usize = 16;

/// An upgrade being installed, or committed and not judged yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// The version installed.
    pub version: String,
    /// The elected SHA-256 of its package.
    pub sha256: String,
    /// The slot it goes into.
    #[serde(with = "slot_name")]
    pub slot: Slot,
    /// The slot that was running.
    #[serde(with = "slot_name")]
    pub from_slot: Slot,
    /// The version that was running.
    pub from_version: String,
    /// Whether grubenv was flipped to it (`first_boot`).
    pub committed: bool,
    /// Unix time of the record.
    pub at: u64,
}

/// An upgrade whose version did not confirm its boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedUpgrade {
    /// The version.
    pub version: String,
    /// The SHA-256 of its package.
    pub sha256: String,
    /// The slot it was installed into.
    #[serde(with = "slot_name")]
    pub slot: Slot,
    /// Unix time it was found rolled back.
    pub at: u64,
    /// What happened.
    pub reason: String,
}

/// A slot as its name (`"A"`, `"B"`).
mod slot_name {
    use icos_grubenv::Slot;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(slot)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Slot, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What [`judge`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No upgrade was under way.
    Nothing,
    /// Committed and not booted yet: the reboot is still to happen.
    Pending,
    /// This boot runs the attempted slot: the upgrade took.
    Booted(Attempt),
    /// GRUB went back to the old slot: the attempted version never
    /// confirmed its boot.
    RolledBack(FailedUpgrade),
    /// The install stopped before its commit (a crash or power cut); the
    /// spare slot is invalid and the next pass starts over.
    Interrupted(Attempt),
}

/// Judges the last attempt against grubenv (`state`, as this boot sees it:
/// after GRUB's own step) at Unix time `now`.
pub fn judge(attempt: Option<Attempt>, state: BootState, now: u64) -> Verdict {
    let Some(a) = attempt else {
        return Verdict::Nothing;
    };
    if state.cycle == BootCycle::FirstBoot {
        return Verdict::Pending;
    }
    let on_attempted = state.alternative == a.slot;
    match (a.committed, on_attempted, state.cycle) {
        (_, true, BootCycle::FailsafeCheck) | (true, true, _) => Verdict::Booted(a),
        (true, false, _) => Verdict::RolledBack(FailedUpgrade {
            reason: format!(
                "{} was installed into slot {} and booted from it, but did not confirm its boot; \
                 GRUB went back to slot {} ({})",
                a.version, a.slot, state.alternative, a.from_version
            ),
            version: a.version,
            sha256: a.sha256,
            slot: a.slot,
            at: now,
        }),
        (false, _, _) => Verdict::Interrupted(a),
    }
}

/// The attempt record and the failed upgrades in a datastore directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

fn parse_err(path: &Path, e: serde_json::Error) -> Error {
    Error::io(
        path,
        "parsing",
        std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    )
}

impl Records {
    /// The records kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Records { dir: dir.into() }
    }

    fn attempt_path(&self) -> PathBuf {
        self.dir.join(ATTEMPT_FILE)
    }

    fn failed_path(&self) -> PathBuf {
        self.dir.join(FAILED_FILE)
    }

    /// The attempt on record. A record that cannot be parsed is reported
    /// as an error: the caller logs it and goes on without one.
    pub fn attempt(&self) -> Result<Option<Attempt>, Error> {
        let path = self.attempt_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| parse_err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, "reading", e)),
        }
    }

    /// Records `attempt`, durably.
    pub fn record(&self, attempt: &Attempt) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(attempt).unwrap_or_default();
        json.push(b'\n');
        write_if_changed(&self.attempt_path(), &json, 0o644).map(|_| ())
    }

    /// Removes the attempt record.
    pub fn clear(&self) -> Result<(), Error> {
        let path = self.attempt_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, "removing", e)),
        }
    }

    /// The failed upgrades remembered, oldest first.
    pub fn failed(&self) -> Result<Vec<FailedUpgrade>, Error> {
        let path = self.failed_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| parse_err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(&path, "reading", e)),
        }
    }

    /// Remembers `failed` (replacing an entry of the same package).
    pub fn add_failed(&self, failed: FailedUpgrade) -> Result<Vec<FailedUpgrade>, Error> {
        let mut all = self.failed().unwrap_or_default();
        all.retain(|f| !(f.version == failed.version && f.sha256 == failed.sha256));
        all.push(failed);
        let skip = all.len().saturating_sub(FAILED_KEPT);
        all.drain(..skip);
        let mut json = serde_json::to_vec_pretty(&all).unwrap_or_default();
        json.push(b'\n');
        write_if_changed(&self.failed_path(), &json, 0o644)?;
        Ok(all)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn attempt(committed: bool) -> Attempt {
        Attempt {
            version: "v3".into(),
            sha256: "ab".repeat(32),
            slot: Slot::A,
            from_slot: Slot::B,
            from_version: "v2".into(),
            committed,
            at: 1,
        }
    }

    fn state(alternative: Slot, cycle: BootCycle) -> BootState {
        BootState { alternative, cycle }
    }

    const CYCLES: [BootCycle; 4] = [
        BootCycle::Stable,
        BootCycle::FirstBoot,
        BootCycle::FailsafeCheck,
        BootCycle::Install,
    ];

    /// Every record (none, uncommitted, committed) against every grubenv
    /// state, as the module's table says.
    #[test]
    fn every_record_against_every_state() {
        for slot in [Slot::A, Slot::B] {
            for cycle in CYCLES {
                let s = state(slot, cycle);
                assert_eq!(judge(None, s, 9), Verdict::Nothing);
                for committed in [false, true] {
                    let a = attempt(committed);
                    let got = judge(Some(a.clone()), s, 9);
                    let on = slot == Slot::A;
                    let want = match (cycle, committed, on) {
                        (BootCycle::FirstBoot, _, _) => "pending",
                        (BootCycle::FailsafeCheck, _, true) | (_, true, true) => "booted",
                        (_, true, false) => "rolled_back",
                        (_, false, _) => "interrupted",
                    };
                    let name = match &got {
                        Verdict::Nothing => "nothing",
                        Verdict::Pending => "pending",
                        Verdict::Booted(x) => {
                            assert_eq!(*x, a);
                            "booted"
                        }
                        Verdict::RolledBack(f) => {
                            assert_eq!((f.version.as_str(), f.slot, f.at), ("v3", Slot::A, 9));
                            assert_eq!(f.sha256, a.sha256);
                            assert!(
                                f.reason.contains("did not confirm its boot")
                                    && f.reason.contains("back to slot B"),
                                "{}",
                                f.reason
                            );
                            "rolled_back"
                        }
                        Verdict::Interrupted(x) => {
                            assert_eq!(*x, a);
                            "interrupted"
                        }
                    };
                    assert_eq!(name, want, "{s:?} committed={committed}");
                }
            }
        }
    }

    #[test]
    fn records_round_trip_and_failed_upgrades_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::new(dir.path().join("store"));
        assert_eq!(r.attempt().unwrap(), None);
        assert!(r.failed().unwrap().is_empty());
        r.record(&attempt(false)).unwrap();
        assert_eq!(r.attempt().unwrap(), Some(attempt(false)));
        r.record(&attempt(true)).unwrap();
        assert_eq!(r.attempt().unwrap(), Some(attempt(true)));
        r.clear().unwrap();
        r.clear().unwrap();
        assert_eq!(r.attempt().unwrap(), None);

        for i in 0..20u64 {
            let f = FailedUpgrade {
                version: format!("v{i}"),
                sha256: "00".repeat(32),
                slot: Slot::B,
                at: i,
                reason: "x".into(),
            };
            r.add_failed(f.clone()).unwrap();
            // The same package again replaces its entry.
            r.add_failed(f).unwrap();
        }
        let all = r.failed().unwrap();
        assert_eq!(all.len(), FAILED_KEPT);
        assert_eq!(all[0].version, "v4");
        assert_eq!(all[FAILED_KEPT - 1].version, "v19");

        std::fs::write(dir.path().join("store").join(ATTEMPT_FILE), "{").unwrap();
        let err = r.attempt().unwrap_err();
        assert!(
            err.to_string().contains("upgrade-attempt.json: parsing"),
            "{err}"
        );
    }
}
