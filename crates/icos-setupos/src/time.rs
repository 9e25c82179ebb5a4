//! The clock check (chrony active, `timedatectl show` reporting
//! `NTPSynchronized=yes`) and the image age check (the build's commit time
//! more than six weeks ago is a warning).

use crate::hardware::ParseError;
use crate::report::{CheckName, CheckResult};

/// An image whose commit is older than this (six weeks, in seconds) draws
/// a warning.
pub const MAX_IMAGE_AGE_SECS: u64 = 6 * 7 * 24 * 60 * 60;

/// The value of `key` in `timedatectl show` output (`KEY=VALUE` lines).
pub fn timedatectl_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// Runs the clock check. `chrony_state` is the output of
/// `systemctl is-active chrony` (`active`, `inactive`, `failed`, ...);
/// `timedatectl` that of `timedatectl show`.
pub fn check_time(chrony_state: &str, timedatectl: &str) -> CheckResult {
    let mut r = CheckResult::new(CheckName::Time);
    let state = chrony_state.trim();
    r.fact(format!("chrony: {state}"));
    if state != "active" {
        r.error(format!(
            "the chrony service is '{state}', not active: the clock cannot be synchronised"
        ));
    }
    for key in ["TimeUSec", "Timezone", "LocalRTC"] {
        if let Some(v) = timedatectl_value(timedatectl, key) {
            r.fact(format!("{key}: {v}"));
        }
    }
    match timedatectl_value(timedatectl, "NTPSynchronized") {
        Some("yes") => r.fact("NTPSynchronized: yes"),
        Some(other) => r.error(format!(
            "the clock is not synchronised (NTPSynchronized={other}); the node needs NTP \
             (UDP port 123) to reach a time server"
        )),
        None => r.error("timedatectl shows no NTPSynchronized value"),
    }
    r
}

/// Parses the image's commit time: seconds since the epoch.
pub fn parse_epoch(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| ParseError(format!("'{t}' is not a time in seconds since 1970")))
}

/// Runs the age check: `commit_time` and `now` in seconds since the epoch.
pub fn check_age(commit_time: u64, now: u64) -> CheckResult {
    let mut r = CheckResult::new(CheckName::Age);
    let age = now.saturating_sub(commit_time);
    let days = age / 86_400;
    r.fact(format!(
        "image commit time: {commit_time} ({days} days ago)"
    ));
    if age > MAX_IMAGE_AGE_SECS {
        r.warn(format!(
            "this SetupOS image is {days} days old (more than six weeks); a newer image \
             installs a newer HostOS and GuestOS and needs fewer upgrades after the install"
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNCED: &str = "Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\nNTP=yes\n\
        NTPSynchronized=yes\nTimeUSec=Thu 2026-11-26 02:20:11 UTC\n\
        RTCTimeUSec=Thu 2026-11-26 02:20:11 UTC\n";

    #[test]
    fn synchronised_clock_passes() {
        let r = check_time("active\n", SYNCED);
        assert!(r.passed(), "{r}");
        assert!(r.facts.iter().any(|f| f == "Timezone: Etc/UTC"));
    }

    #[test]
    fn every_clock_problem_is_listed() {
        let r = check_time(
            "inactive\n",
            &SYNCED.replace("NTPSynchronized=yes", "NTPSynchronized=no"),
        );
        assert_eq!(r.errors.len(), 2, "{r}");
        assert!(r.errors[0].contains("'inactive'"));
        assert!(r.errors[1].contains("NTPSynchronized=no"));
        let r = check_time("active", "Timezone=UTC\n");
        assert_eq!(r.errors, ["timedatectl shows no NTPSynchronized value"]);
    }

    #[test]
    fn age_boundary_is_six_weeks() {
        let now = 1_800_000_000;
        assert!(check_age(now - MAX_IMAGE_AGE_SECS, now).warnings.is_empty());
        let old = check_age(now - MAX_IMAGE_AGE_SECS - 1, now);
        assert!(old.passed());
        assert_eq!(old.warnings.len(), 1);
        assert!(old.warnings[0].contains("42 days old"), "{old}");
        // A commit time in the future (clock not yet set) is no warning.
        assert!(check_age(now + 10, now).warnings.is_empty());
        assert_eq!(parse_epoch(" 1700000000\n"), Ok(1_700_000_000));
        assert!(parse_epoch("2026-01-01").is_err());
    }
}
