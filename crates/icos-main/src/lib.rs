//! Shared plumbing of the icos programs' thin mains.
//!
//! * [`init_logging`]: `tracing` to stderr without timestamps (journald adds
//!   its own), a verbosity from repeated `-v`, and `ICOS_LOG` (an
//!   `EnvFilter` directive) to override it.
//! * [`wait_for_shutdown_signal`] (feature `signals`): resolves on SIGINT or
//!   SIGTERM, which is how systemd stops the daemons.

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
