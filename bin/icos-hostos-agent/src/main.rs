//! `icos-hostos-agent`: the HostOS side of the vsock control channel.
//!
//! Parses the command line, binds the chosen transport and serves requests
//! with [`icos_vsock::server::Agent`]; the protocol and commands are
//! documented there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use icos_vsock::protocol::{GUEST_CID, PORT};
use icos_vsock::server::{Agent, AgentConfig};
use icos_vsock::transport::{Listener, UnixTransport, VsockTransport};

const AFTER_HELP: &str = "\
Commands served: GetVsockProtocol, GetHostOSVersion, set-node-id, notify,
upgrade (download + SHA-256 check only; the verified image and an
'upgrade-ready' marker are left in --upgrade-dir for the upgrade installer).
attach-hsm, detach-hsm and StartUpgradeGuestVM answer
Err(\"not supported on this host: ...\").

Exit codes:
  0  never in normal operation (the agent serves until killed)
  1  failure: the socket could not be bound or accepting failed
  2  usage error: a flag or value is invalid";

/// Answer GuestOS's allow-listed requests over vsock (IC protocol, port 19090).
#[derive(Debug, Parser)]
#[command(name = "icos-hostos-agent", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// AF_VSOCK port to listen on (all CIDs).
    #[arg(long, default_value_t = PORT)]
    port: u32,

    /// Listen on this Unix socket instead of AF_VSOCK (vhost-user-vsock's
    /// PATH_19090, or tests).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,

    /// The CID a Unix-socket peer is taken to have; requests must carry it.
    #[arg(long, default_value_t = GUEST_CID, value_name = "CID")]
    unix_peer_cid: u32,

    /// The only guest CID served (IC: 3, the first GuestOS VM).
    #[arg(long, default_value_t = GUEST_CID, value_name = "CID")]
    guest_cid: u32,

    /// Serve any guest CID (the sender_cid check still applies).
    #[arg(long)]
    any_guest_cid: bool,

    /// File whose content answers GetHostOSVersion.
    #[arg(long, default_value = "/opt/ic/share/version.txt", value_name = "FILE")]
    version_file: PathBuf,

    /// File that set-node-id writes.
    #[arg(long, default_value = "/boot/config/node-id", value_name = "FILE")]
    node_id_file: PathBuf,

    /// Where notify prints.
    #[arg(long, default_value = "/dev/tty1", value_name = "PATH")]
    tty: PathBuf,

    /// Pause between two notify prints, in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    notify_interval_ms: u64,

    /// Directory for the verified upgrade image and its marker.
    #[arg(
        long,
        default_value = "/var/lib/icos/hostos-upgrade",
        value_name = "DIR"
    )]
    upgrade_dir: PathBuf,

    /// Upgrade download timeout (connect, response, each read), in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    download_timeout_secs: u64,

    /// Per-connection read/write timeout, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    timeout_secs: u64,

    /// Prometheus textfile to keep up to date with request counters.
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,

    /// Log at most this many bad requests per second (the rest are counted).
    #[arg(long, default_value_t = 5, value_name = "N")]
    log_per_second: u32,

    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "info");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig {
        version_file: cli.version_file,
        node_id_file: cli.node_id_file,
        tty: cli.tty,
        notify_interval: Duration::from_millis(cli.notify_interval_ms),
        upgrade_dir: cli.upgrade_dir,
        download_timeout: Duration::from_secs(cli.download_timeout_secs),
        timeout: Duration::from_secs(cli.timeout_secs),
        metrics_file: cli.metrics_file,
        log_per_second: cli.log_per_second,
        guest_cid: (!cli.any_guest_cid).then_some(cli.guest_cid),
    };
    let listener: Box<dyn Listener> = match &cli.unix {
        Some(path) => Box::new(
            UnixTransport::bind(path, cli.unix_peer_cid)
                .with_context(|| format!("binding {}", path.display()))?,
        ),
        None => Box::new(
            VsockTransport::bind(u32::MAX, cli.port)
                .with_context(|| format!("binding vsock port {}", cli.port))?,
        ),
    };
    let agent = Arc::new(Agent::new(config));
    agent.serve(listener.as_ref())?;
    Ok(())
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
