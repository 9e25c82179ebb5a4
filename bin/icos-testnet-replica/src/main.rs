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
    /// Serve one replica of one subnet until SIGINT or SIGTERM; on stopping,
    /// log how many requests (envelopes) it handled.
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
    /// Write a request envelope (CBOR) to send with curl or a load
    /// generator: `POST /api/v3/canister/<ID>/query` (or `call`,
    /// `read_state`) with `Content-Type: application/cbor`.
    Envelope(EnvelopeArgs),
}

/// `envelope` flags.
#[derive(Debug, clap::Args)]
struct EnvelopeArgs {
    /// The kind of request.
    #[arg(long, value_enum, default_value_t = Kind::Query)]
    kind: Kind,
    /// The target canister (textual principal).
    #[arg(long)]
    canister: String,
    /// The method (query and call).
    #[arg(long, default_value = "read")]
    method: String,
    /// The Candid argument as hex [default: no arguments, `DIDL\0\0`].
    #[arg(long, default_value = "4449444c0000")]
    arg_hex: String,
    /// Sign as the Ed25519 identity with this 32-byte seed (hex);
    /// anonymous without it.
    #[arg(long)]
    identity_seed: Option<String>,
    /// A nonce (hex); requests with a nonce are never served from a
    /// boundary node's query cache.
    #[arg(long)]
    nonce: Option<String>,
    /// Seconds until the request expires (at most 360).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=360))]
    expires_in: u64,
    /// Where to write the envelope.
    #[arg(short, long)]
    out: PathBuf,
}

/// Kinds of request an envelope can carry.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    /// A query (`/query`).
    Query,
    /// An update call (`/call`).
    Call,
    /// A read_state of `/time` (`/read_state`).
    ReadState,
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
        Command::Envelope(args) => envelope(&args),
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

fn envelope(args: &EnvelopeArgs) -> Result<(), Failure> {
    use icos_testnet_replica::envelope::{NewRequest, RequestType, encode_request};
    let canister = &args.canister;
    let bad = |e: anyhow::Error| Failure::BadInput(e);
    let hex_arg =
        |flag: &str, v: &str| hex::decode(v).with_context(|| format!("{flag} '{v}' is not hex"));
    let canister_id = candid::Principal::from_text(canister)
        .with_context(|| format!("--canister '{canister}' is not a principal"))
        .map_err(bad)?;
    let arg = hex_arg("--arg-hex", &args.arg_hex).map_err(bad)?;
    let signer = match args.identity_seed.as_deref() {
        None => None,
        Some(s) => {
            let seed: [u8; 32] = hex_arg("--identity-seed", s)
                .map_err(bad)?
                .try_into()
                .map_err(|v: Vec<u8>| {
                    bad(anyhow::anyhow!(
                        "--identity-seed must be 32 bytes (64 hex digits), got {}",
                        v.len()
                    ))
                })?;
            Some(icos_testnet_replica::SigningKey::from(seed))
        }
    };
    let nonce = args
        .nonce
        .as_deref()
        .map(|n| hex_arg("--nonce", n))
        .transpose()
        .map_err(bad)?;
    let (request_type, paths) = match args.kind {
        Kind::Query => (RequestType::Query, Vec::new()),
        Kind::Call => (RequestType::Call, Vec::new()),
        Kind::ReadState => (RequestType::ReadState, vec![vec![b"time".to_vec()]]),
    };
    let now = icos_testnet_replica::now_ns();
    let req = NewRequest {
        request_type,
        canister_id,
        method_name: args.method.clone(),
        arg,
        paths,
        ingress_expiry: now + args.expires_in * 1_000_000_000,
        nonce,
    };
    let (body, id) = encode_request(&req, signer.as_ref());
    std::fs::write(&args.out, body)
        .with_context(|| format!("writing {}", args.out.display()))
        .map_err(Failure::Failed)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    println!("{id}");
    Ok(())
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
        // How many requests reached this replica: tests of routers check
        // where traffic went from it.
        let requests_handled = replica.replica().requests_handled();
        tracing::info!(requests_handled, "stopping");
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
