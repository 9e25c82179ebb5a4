//! `icos-boundary`: the IC API router of the boundary node.
//!
//! The main only parses the command line, sets up logging, runs the router
//! until SIGINT or SIGTERM, and maps the outcome to an exit code:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | stopped by a signal after serving |
//! | 1 | failure: the router could not start or run (e.g. a port is taken) |
//! | 2 | usage error: a flag or value broke a rule |

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    icos_main::init_logging(cli.verbose, "warn,icos_boundary=info");
    let config = match cli.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: icos_boundary::RouterConfig) -> anyhow::Result<()> {
    // Requests are served by the router's own threads; this runtime only
    // accepts connections and runs health checks, table reloads, metrics
    // and signal handling.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let router = icos_boundary::start(config).await?;
        icos_main::wait_for_shutdown_signal()
            .await
            .context("waiting for SIGINT or SIGTERM")?;
        tracing::info!("stopping");
        router.shutdown().await;
        Ok(())
    })
}
