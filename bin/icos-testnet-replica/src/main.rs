//! `icos-testnet-replica`: a replica for local testnets.
//!
//! The main only parses the command line, sets up logging, runs the chosen
//! subcommand and maps the outcome to an exit code:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; `serve` stopped by SIGINT or SIGTERM |
//! | 1 | failure: the replica could not start or run (e.g. the port is taken) |
//! | 2 | usage error or bad input: a flag, the config file or a value broke a rule |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use icos_testnet_replica::{ReplicaSettings, Testnet};

const AFTER_HELP: &str = "\
Exit codes:
  0  success; serve stopped by SIGINT or SIGTERM
  1  failure: the replica could not start or run (e.g. the port is taken)
  2  usage error or bad input: a flag, the config file or a value broke a rule";

/// Where the GuestOS records its version.
const GUESTOS_VERSION_FILE: &str = "/opt/ic/share/version.txt";

/// A replica for local testnets: serves the IC HTTP interface for built-in
/// canisters, with real request ids, signature checks and BLS certificates.
#[derive(Debug, Parser)]
#[command(name = "icos-testnet-replica", version, about, after_help = AFTER_HELP)]
#[command(help_expected = true)]
struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one replica of one subnet until SIGINT or SIGTERM.
    Serve {
        /// The testnet configuration file (JSON).
        #[arg(long)]
        config: PathBuf,
        /// The subnet this replica belongs to (textual principal).
        #[arg(long)]
        subnet: String,
        /// Which of the subnet's nodes this replica is (0-based).
        #[arg(long, default_value_t = 0)]
        node_index: u32,
        /// Where to serve HTTP.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// `impl_version` in the status [default: the contents of
        /// /opt/ic/share/version.txt, else "testnet"].
        #[arg(long)]
        impl_version: Option<String>,
        /// Report a certified height this many blocks behind the others.
        #[arg(long, default_value_t = 0)]
        height_lag: u64,
    },
    /// Print the testnet's root key, subnets, node ids and built-in
    /// canister ids as JSON.
    Describe {
        /// The testnet configuration file (JSON).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the icos-boundary routing-table file for the testnet, with node
    /// k of the whole testnet (subnet by subnet) at http://HOST:(PORT_BASE+k).
    RoutingTable {
        /// The testnet configuration file (JSON).
        #[arg(long)]
        config: PathBuf,
        /// The replicas' host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The port of the first node.
        #[arg(long)]
        port_base: u16,
    },
}

enum Failure {
    BadInput(anyhow::Error),
    Failed(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "warn,icos_testnet_replica=info");
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(config: &Path) -> Result<Arc<Testnet>, Failure> {
    Testnet::load(config)
        .map(Arc::new)
        .map_err(|e| Failure::BadInput(e.into()))
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Describe { config } => {
            let t = load(&config)?;
            println!("{:#}", t.describe());
            Ok(())
        }
        Command::RoutingTable {
            config,
            host,
            port_base,
        } => {
            let t = load(&config)?;
            let mut offsets = Vec::new();
            let mut k = 0usize;
            for s in &t.subnets {
                offsets.push(k);
                k += s.nodes.len();
            }
            let url = |s: usize, n: usize| {
                let port = usize::from(port_base) + offsets[s] + n;
                u16::try_from(port)
                    .ok()
                    .map(|p| format!("http://{}:{p}", bracket(&host)))
            };
            if u16::try_from(usize::from(port_base) + k.saturating_sub(1)).is_err() {
                return Err(Failure::BadInput(anyhow::anyhow!(
                    "--port-base {port_base}: {k} nodes do not fit below port 65536"
                )));
            }
            println!("{:#}", t.routing_table(url));
            Ok(())
        }
        Command::Serve {
            config,
            subnet,
            node_index,
            listen,
            impl_version,
            height_lag,
        } => {
            let testnet = load(&config)?;
            let subnet = candid::Principal::from_text(&subnet)
                .with_context(|| format!("--subnet '{subnet}' is not a principal"))
                .map_err(Failure::BadInput)?;
            let impl_version = impl_version.unwrap_or_else(default_impl_version);
            let settings = ReplicaSettings {
                testnet,
                subnet,
                node_index,
                impl_version,
                height_lag,
            };
            // Settings that do not fit the testnet are bad input.
            icos_testnet_replica::Replica::new(settings.clone())
                .map_err(|e| Failure::BadInput(e.into()))?;
            serve(settings, listen).map_err(Failure::Failed)
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn default_impl_version() -> String {
    std::fs::read_to_string(GUESTOS_VERSION_FILE)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "testnet".to_string())
}

fn serve(settings: ReplicaSettings, listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let replica = icos_testnet_replica::start(settings, listen).await?;
        eprintln!("listening on http://{}", replica.local_addr());
        icos_main::wait_for_shutdown_signal()
            .await
            .context("waiting for SIGINT or SIGTERM")?;
        tracing::info!("stopping");
        replica.shutdown().await.context("stopping the server")?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
