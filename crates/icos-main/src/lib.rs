//! Shared plumbing of the icos programs' thin mains.
//!
//! * [`init_logging`]: `tracing` to stderr without timestamps (journald adds
//!   its own) and without colour codes unless stderr is a terminal, a verbosity from repeated `-v`, and `ICOS_LOG` (an
//!   `EnvFilter` directive) to override it.
//! * [`wait_for_shutdown_signal`] (feature `signals`): resolves on SIGINT or
//!   SIGTERM, which is how systemd stops the daemons.
//! * [`parse_duration`]: the `500ms` / `1s` / `2m` form of duration flags.

use std::time::Duration;

/// Sets up logging to stderr.
///
/// `quiet` is the filter used without `-v` (for a daemon typically
/// `"warn,<its crate>=info"`); each `-v` then means info, debug, trace.
/// `ICOS_LOG`, when set, wins over both.
pub fn init_logging(verbose: u8, quiet: &str) {
    let default = match verbose {
        0 => quiet,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ICOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

/// Waits for SIGINT or SIGTERM.
///
/// Fails only when the signal handlers cannot be installed.
#[cfg(feature = "signals")]
pub async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// A duration flag that is not `<digits><unit>` with unit `ms`, `s` or `m`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No unit after the number.
    #[error("a unit is missing (ms, s or m)")]
    MissingUnit,
    /// The part before the unit is not a number.
    #[error("'{0}' is not a number")]
    NotANumber(String),
    /// The unit is not one of ms, s, m.
    #[error("unknown unit '{0}' (ms, s or m)")]
    UnknownUnit(String),
}

/// Parses a duration flag: `500ms`, `1s`, `2m` (for clap's `value_parser`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(DurationError::MissingUnit)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| DurationError::NotANumber(n.to_owned()))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(DurationError::UnknownUnit(unit.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::NotANumber(String::new()))
        );
        assert_eq!(
            parse_duration("5h"),
            Err(DurationError::UnknownUnit("h".into()))
        );
    }
}
