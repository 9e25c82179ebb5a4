//! The boot markers on the serial console, which HostOS (and `icos run`)
//! watch: `GUESTOS BOOT SUCCESS ...` once everything is up, and
//! `GUESTOS BOOT FAILURE: <step>: <reason>` when a step fails.

use std::io::Write;
use std::path::Path;

use crate::{InitError, Result};

/// The serial console the markers go to.
pub const SERIAL_CONSOLE: &str = "/dev/ttyS0";

/// The failure marker line of `step` (one line: newlines in the reason
/// become `; `).
pub fn failure_line(step: &str, reason: &str) -> String {
    let reason = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    format!("GUESTOS BOOT FAILURE: {step}: {reason}")
}

/// Appends `line` and a newline to `console` (a tty or, in tests, a file).
pub fn print(console: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(false)
        .open(console)
        .map_err(InitError::io("opening", console))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(InitError::io("writing", console))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_line_is_one_line() {
        assert_eq!(
            failure_line("network", "a\n  b\n\n"),
            "GUESTOS BOOT FAILURE: network: a; b"
        );
    }

    #[test]
    fn prints_to_an_existing_console_only() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ttyS0");
        assert!(print(&c, "x").is_err());
        std::fs::write(&c, "").unwrap();
        print(&c, "one").unwrap();
        print(&c, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "one\ntwo\n");
    }
}
