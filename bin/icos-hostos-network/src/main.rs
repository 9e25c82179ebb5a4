//! `icos-hostos-network`: HostOS's link setup at boot.
//!
//! Reads the HostOS config, picks the NIC that reaches the IPv6 gateway
//! and writes the systemd-networkd files that bridge it as `br6` with the
//! node's deterministic MAC and address ([`icos_hostos_network`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use icos_config::HostOSConfig;
use icos_hostos_network::{NETWORKD_DIR, SystemHost, choose, plan, render, write};

const AFTER_HELP: &str = "\
Exit codes:
  0  the files are written (also when no NIC reached the gateway: the
     fastest NIC with a carrier is used, and the output says so)
  1  failure: no Ethernet NIC with a carrier, a command or a write failed
  2  usage error, or a config that cannot be read or used";

/// Choose HostOS's NIC and write the br6 systemd-networkd files.
#[derive(Debug, Parser)]
#[command(name = "icos-hostos-network", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The HostOS config (config.json on the config volume).
    #[arg(long, default_value = "/boot/config/config.json", value_name = "FILE")]
    config: PathBuf,

    /// Where the interfaces are listed.
    #[arg(long, default_value = "/sys/class/net", value_name = "DIR")]
    class_net: PathBuf,

    /// Where the networkd files go.
    #[arg(long, default_value = NETWORKD_DIR, value_name = "DIR")]
    out: PathBuf,

    /// Gateway pings per NIC.
    #[arg(long, default_value_t = 10, value_name = "N")]
    ping_tries: u32,

    /// Seconds between pings.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    ping_interval: u64,

    /// Only print the plan (MAC and address) from the config; touch nothing.
    #[arg(long)]
    plan_only: bool,

    /// Seconds to wait for a candidate NIC to appear.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    wait_secs: u64,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,

    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

enum Failure {
    Input(anyhow::Error),
    Run(anyhow::Error),
}

fn load(path: &Path) -> Result<HostOSConfig, Failure> {
    icos_config::load::<HostOSConfig>(path)
        .with_context(|| format!("reading the HostOS config {}", path.display()))
        .map_err(Failure::Input)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let config = load(&cli.config)?;
    let plan = plan(&cli.config, &config).map_err(|e| Failure::Input(e.into()))?;
    if cli.plan_only {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Failure::Run(e.into()))?;
        println!("{text}");
        return Ok(());
    }
    let mut host = SystemHost::new(&cli.class_net)
        .with_pings(cli.ping_tries, Duration::from_secs(cli.ping_interval))
        .with_waits(Duration::from_secs(cli.wait_secs), Duration::from_secs(10));
    let choice = choose(&mut host, &plan).map_err(|e| Failure::Run(e.into()))?;
    let files = render(&plan, &choice.nic);
    let paths = write(&cli.out, &files).map_err(|e| Failure::Run(e.into()))?;
    if cli.json {
        let out = serde_json::json!({ "plan": plan, "choice": choice, "files": paths });
        let text = serde_json::to_string_pretty(&out).map_err(|e| Failure::Run(e.into()))?;
        println!("{text}");
    }
    if choice.reached_gateway {
        tracing::info!(nic = %choice.nic, "chosen: it reached the gateway");
    } else {
        tracing::warn!(nic = %choice.nic, tried = ?choice.tried, "chosen without a gateway answer");
    }
    for p in &paths {
        tracing::info!(file = %p.display(), "written");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "info");
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(e)) => {
            eprintln!("icos-hostos-network: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("icos-hostos-network: {e:#}");
            ExitCode::from(1)
        }
    }
}
