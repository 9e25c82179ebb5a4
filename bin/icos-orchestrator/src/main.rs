//! `icos-orchestrator`: the GuestOS orchestrator daemon and its status.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use icos_orchestrator::download::DownloadOptions;
use icos_orchestrator::{
    Config, DiskPath, Metrics, NodeSelector, Orchestrator, Status, SystemctlReboot, VsockHostAgent,
};

mod follow;
mod join;

const AFTER_HELP: &str = "Exit codes:
  0  success (run --once: the pass ended up to date or with the reboot requested)
  1  failure: the pass failed, the status file is missing, ...
  2  usage error or bad input: a flag, the trust root or the version file";

/// The GuestOS orchestrator: confirms the boot, follows the verified
/// registry, installs GuestOS upgrades into the spare slot, asks HostOS for
/// its own.
#[derive(Debug, Parser)]
#[command(name = "icos-orchestrator", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Confirm the boot, then poll the registry and upgrade (the daemon).
    Run(Box<RunArgs>),
    /// Register the node: generate its key if missing and, unless the
    /// verified registry lists it, send a join request signed by the node
    /// operator key to the registry (URL/join). Prints "Join request
    /// successful!" and the node id; a refusal exits 1 with the reason.
    Join(Box<join::JoinArgs>),
    /// Show the status the daemon writes.
    Status {
        /// The status file.
        #[arg(long, default_value = DEFAULT_STATUS, value_name = "FILE")]
        status_file: PathBuf,
        /// Print the JSON as written.
        #[arg(long)]
        json: bool,
    },
}

const DEFAULT_STATUS: &str = "/run/ic-node/orchestrator/status.json";

/// Where the registry comes from and where it is kept (`run` and `join`).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry base URL (the node's nns_urls); repeat for mirrors. Join
    /// requests go to URL/join.
    #[arg(long = "registry-url", value_name = "URL", required = true)]
    pub registry_urls: Vec<String>,
    /// The baked-in TUF trust root (root.json).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/opt/ic/share/registry-root.json"
    )]
    pub root: PathBuf,
    /// Where the verified registry and downloads are kept.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/ic/data/orchestrator"
    )]
    pub datastore: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The GuestOS disk.
    #[arg(long, value_name = "DEV", default_value = "/dev/vda")]
    disk: PathBuf,
    /// This node's id in the registry.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "ipv6",
        required_unless_present_any = ["ipv6", "node_key"]
    )]
    node_id: Option<String>,
    #[command(flatten)]
    node_keys: join::NodeKeyArgs,
    /// Find this node in the registry by its IPv6 address instead (with
    /// --node-key: the address its join request names).
    #[arg(long, value_name = "ADDR")]
    ipv6: Option<Ipv6Addr>,
    /// The running GuestOS version's file.
    #[arg(long, value_name = "FILE", default_value = "/opt/ic/share/version.txt")]
    version_file: PathBuf,
    /// Where the status JSON is written.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS)]
    status_file: PathBuf,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Time between passes (e.g. 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    poll: Duration,
    /// Longest wait after failed passes.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = duration)]
    max_backoff: Duration,
    /// Do not talk to HostOS (no HostOS version check or upgrade).
    #[arg(long)]
    no_hostos: bool,
    /// Reach the HostOS agent on this Unix socket instead of vsock.
    #[arg(long, value_name = "PATH")]
    vsock_unix: Option<PathBuf>,
    /// Confirm the boot, do one pass and exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    follow: follow::FollowArgs,
}

fn duration(s: &str) -> Result<Duration, String> {
    icos_main::parse_duration(s).map_err(|e| e.to_string())
}

enum Failure {
    BadInput(anyhow::Error),
    Failed(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "warn,icos_orchestrator=info");
    let result = match cli.command {
        Cmd::Status { status_file, json } => status(&status_file, json),
        Cmd::Run(args) => run(*args),
        Cmd::Join(args) => join::run(&args).map_err(|f| {
            if f.bad_input {
                Failure::BadInput(f.error)
            } else {
                Failure::Failed(f.error)
            }
        }),
    };
    match result {
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

fn status(path: &std::path::Path, json: bool) -> Result<(), Failure> {
    let s = Status::read(path).map_err(|e| Failure::Failed(e.into()))?;
    if json {
        let text = serde_json::to_string_pretty(&s).map_err(|e| Failure::Failed(e.into()))?;
        println!("{text}");
        return Ok(());
    }
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!(
        "state:            {}",
        s.state.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
    );
    println!("since:            {} (unix)", s.since);
    println!("running version:  {}", s.running_version);
    println!("target version:   {}", or_none(s.target_version));
    println!("node:             {}", or_none(s.node_id));
    println!(
        "registry:         {}{}",
        or_none(s.registry_version.map(|v| v.to_string())),
        if s.registry_stale {
            " (last verified copy)"
        } else {
            ""
        }
    );
    println!("boot confirm:     {}", or_none(s.boot_confirm));
    println!("bytes downloaded: {}", s.bytes_downloaded);
    for (phase, secs) in &s.phase_seconds {
        println!("  {phase:<14} {secs:.3} s");
    }
    println!("hostos running:   {}", or_none(s.hostos.running));
    println!("hostos target:    {}", or_none(s.hostos.target));
    println!("hostos result:    {}", or_none(s.hostos.last_result));
    println!("last error:       {}", or_none(s.last_error));
    if let Some(r) = &s.replica {
        println!(
            "replica:          {} (restarts {})",
            r.pid
                .map(|p| format!("running, pid {p}"))
                .unwrap_or_else(|| "not running".into()),
            r.restarts
        );
        println!("replica config:   {}", or_none(r.config_source.clone()));
        println!("replica exit:     {}", or_none(r.last_exit.clone()));
    }
    println!("updated:          {} (unix)", s.updated);
    Ok(())
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let bad = Failure::BadInput;
    let urls = args
        .registry
        .registry_urls
        .iter()
        .map(|u| icos_registry::client::base_url(u).with_context(|| format!("--registry-url {u}")))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(bad)?;
    if !args.registry.root.is_file() {
        return Err(Failure::BadInput(anyhow!(
            "--root {}: no such file (the registry's trust root, root.json)",
            args.registry.root.display()
        )));
    }
    let running = std::fs::read_to_string(&args.version_file)
        .with_context(|| format!("--version-file {}", args.version_file.display()))
        .map_err(Failure::BadInput)?
        .trim()
        .to_owned();
    if running.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "--version-file {}: empty",
            args.version_file.display()
        )));
    }
    let join_failure = |f: join::JoinFailure| {
        if f.bad_input {
            Failure::BadInput(f.error)
        } else {
            Failure::Failed(f.error)
        }
    };
    let from_key = join::node_id_for_run(&args.node_keys).map_err(join_failure)?;
    let node = match (from_key.or(args.node_id), args.ipv6) {
        (Some(id), _) => NodeSelector::Id(id),
        (None, Some(ip)) => NodeSelector::Ipv6(ip),
        (None, None) => {
            return Err(Failure::BadInput(anyhow!(
                "one of --node-id or --ipv6 is needed"
            )));
        }
    };
    let datastore = args.registry.datastore.clone();
    let config = Config {
        registry_urls: urls.clone(),
        trust_root: args.registry.root.clone(),
        datastore: datastore.clone(),
        node: node.clone(),
        running_version: running,
        status_path: args.status_file.clone(),
        download: DownloadOptions::default(),
        registry_timeout: Duration::from_secs(30),
    };
    let host = (!args.no_hostos).then(|| {
        let mut agent = VsockHostAgent::standard();
        if let Some(path) = args.vsock_unix {
            agent.endpoint = icos_vsock::transport::Endpoint::Unix(path);
        }
        agent
    });
    let metrics = Arc::new(Metrics::new());
    let mut orch = Orchestrator::new(
        config,
        DiskPath(args.disk),
        SystemctlReboot,
        host,
        Arc::clone(&metrics),
    );
    // The boot is confirmed before anything that needs the network (the
    // join may wait long for a registry): a failure is logged and retried
    // at every pass, it does not stop the upgrades.
    let confirmed = match orch.start() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "confirming the boot failed");
            if args.once {
                return Err(Failure::Failed(anyhow!("confirming the boot: {e}")));
            }
            false
        }
    };
    join::join_for_run(
        &args.node_keys,
        &urls,
        &args.registry.root,
        &datastore,
        args.ipv6,
    )
    .map_err(join_failure)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Failure::Failed)?;
    runtime.block_on(daemon(
        Daemon {
            orch,
            confirmed,
            metrics,
            datastore,
            node,
            status_path: args.status_file,
        },
        args.metrics_addr,
        args.poll,
        args.max_backoff,
        args.once,
        args.follow,
    ))
}

/// The orchestrator as `run` started it, boot confirmation tried.
struct Daemon {
    orch: Orchestrator<DiskPath, SystemctlReboot, VsockHostAgent>,
    confirmed: bool,
    metrics: Arc<Metrics>,
    datastore: PathBuf,
    node: NodeSelector,
    status_path: PathBuf,
}

async fn daemon(
    d: Daemon,
    metrics_addr: Option<SocketAddr>,
    poll: Duration,
    max_backoff: Duration,
    once: bool,
    follow: follow::FollowArgs,
) -> Result<(), Failure> {
    let Daemon {
        mut orch,
        mut confirmed,
        metrics,
        datastore,
        node,
        status_path,
    } = d;
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-addr {addr}"))
            .map_err(Failure::Failed)?;
        let m = Arc::clone(&metrics);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = Arc::clone(&m);
                async move { m.render() }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!(%addr, "serving metrics");
    }
    let mut follower =
        follow::Follower::start(follow, &datastore, node, &status_path, Arc::clone(&metrics))
            .map_err(Failure::BadInput)?;
    // The replica starts at once, on the last verified registry if any.
    follower.sync();
    let mut backoff = icos_registry::client::Backoff::new(poll, max_backoff);
    loop {
        if !confirmed {
            confirmed = orch.start().is_ok();
        }
        let result = orch.pass().await;
        follower.sync();
        match &result {
            Ok(outcome) => tracing::info!(?outcome, "pass done"),
            Err(e) => tracing::warn!(error = %e, "pass failed"),
        }
        if once {
            follower.stop().await;
            return result.map(|_| ()).map_err(|e| Failure::Failed(anyhow!(e)));
        }
        let wait = backoff.next(result.is_ok());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            r = icos_main::wait_for_shutdown_signal() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "signal handlers");
                }
                tracing::info!("stopping");
                follower.stop().await;
                return Ok(());
            }
        }
    }
}
