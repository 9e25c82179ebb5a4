//! `icos-hostos-agent`: the HostOS side of the vsock control channel.
//!
//! Parses the command line, binds the chosen transport and serves requests
//! with [`icos_vsock::server::Agent`]; the protocol and commands are
//! documented there. `upgrade` installs into HostOS's spare slot, commits
//! and reboots ([`icos_vsock::hostos_upgrade::Upgrader`]) unless
//! `--download-only`; `confirm-boot` confirms a trial boot once GuestOS runs
//! ([`icos_vsock::hostos_upgrade::confirm_when_guest_runs`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use icos_vsock::hostos_upgrade::{
    CONFIRM_TIMEOUT, CommandReboot, ConfirmOutcome, GUEST_SEEN_FILE, GUEST_UNIT,
    HOSTOS_GRUB_DEVICE, HOSTOS_VOLUME_DIR, HostSlots, SystemdGuestProbe, Upgrader,
    confirm_when_guest_runs,
};
use icos_vsock::protocol::{GUEST_CID, PORT};
use icos_vsock::server::{Agent, AgentConfig};
use icos_vsock::transport::{Listener, UnixTransport, VsockTransport};

const AFTER_HELP: &str = "\
Commands served: GetVsockProtocol, GetHostOSVersion, set-node-id, notify,
upgrade (download + SHA-256 check, then install into HostOS's spare slot,
commit and reboot; with --download-only the verified image and an
'upgrade-ready' marker are only left in --upgrade-dir).
attach-hsm, detach-hsm and StartUpgradeGuestVM answer
Err(\"not supported on this host: ...\").

Exit codes:
  0  never in normal operation (the agent serves until killed);
     confirm-boot: the boot is confirmed or was stable
  1  failure: the socket could not be bound or accepting failed;
     confirm-boot: GuestOS did not run in time (the boot stays unconfirmed)
     or the slots could not be read or written
  2  usage error: a flag or value is invalid";

/// Answer GuestOS's allow-listed requests over vsock (IC protocol, port 19090).
#[derive(Debug, Parser)]
#[command(
    name = "icos-hostos-agent",
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,

    #[command(flatten)]
    serve: Serve,

    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// At boot: once GuestOS runs again (its unit is active and it has
    /// reached the agent), confirm a HostOS trial boot (failsafe_check or
    /// install -> stable). A stable boot is left alone. Without GuestOS
    /// within the timeout nothing is written, so GRUB rolls back at the next
    /// boot.
    ConfirmBoot(ConfirmArgs),
}

/// Where HostOS's slots are.
#[derive(Debug, Args)]
struct SlotArgs {
    /// HostOS's grub partition (or the system disk, whose GPT has one).
    #[arg(long, default_value = HOSTOS_GRUB_DEVICE, value_name = "PATH")]
    grub_device: PathBuf,

    /// Directory of HostOS's slot volumes A_boot ... B_var.
    #[arg(long, default_value = HOSTOS_VOLUME_DIR, value_name = "DIR")]
    hostos_volumes: PathBuf,
}

#[derive(Debug, Args)]
struct ConfirmArgs {
    #[command(flatten)]
    slots: SlotArgs,

    /// The GuestOS VM's systemd unit, which must be active.
    #[arg(long, default_value = GUEST_UNIT, value_name = "UNIT")]
    guest_unit: String,

    /// The file the agent writes when GuestOS first reaches it.
    #[arg(long, default_value = GUEST_SEEN_FILE, value_name = "FILE")]
    guest_seen_file: PathBuf,

    /// How long to wait for GuestOS, in seconds.
    #[arg(long, default_value_t = CONFIRM_TIMEOUT.as_secs(), value_name = "SECS")]
    timeout_secs: u64,

    /// How often to look, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    poll_secs: u64,
}

#[derive(Debug, Args)]
struct Serve {
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

    /// upgrade only downloads and verifies (no install, commit or reboot).
    #[arg(long)]
    download_only: bool,

    #[command(flatten)]
    slots: SlotArgs,

    /// Written when GuestOS's first request arrives (for confirm-boot).
    #[arg(long, default_value = GUEST_SEEN_FILE, value_name = "FILE")]
    guest_seen_file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "info");
    let result = match cli.command {
        Some(Sub::ConfirmBoot(args)) => confirm(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn host_slots(args: SlotArgs) -> HostSlots {
    HostSlots {
        grub: args.grub_device,
        volumes: args.hostos_volumes,
    }
}

fn confirm(args: ConfirmArgs) -> anyhow::Result<()> {
    let slots = host_slots(args.slots);
    let probe = SystemdGuestProbe {
        unit: args.guest_unit,
        seen_file: args.guest_seen_file,
    };
    let outcome = confirm_when_guest_runs(
        &slots,
        &probe,
        Duration::from_secs(args.timeout_secs),
        Duration::from_secs(args.poll_secs.max(1)),
    )
    .with_context(|| format!("confirming the HostOS boot ({})", slots.volumes.display()))?;
    match outcome {
        ConfirmOutcome::AlreadyStable { slot } => {
            tracing::info!("slot {slot} is stable; nothing to confirm");
        }
        ConfirmOutcome::Confirmed(r) => {
            tracing::info!("slot {} confirmed: {} -> {}", r.slot, r.before, r.after);
        }
    }
    Ok(())
}

fn serve(cli: Serve) -> anyhow::Result<()> {
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
    let mut agent = Agent::new(config.clone()).with_guest_seen_file(cli.guest_seen_file);
    if !cli.download_only {
        agent = agent.with_upgrader(Arc::new(Upgrader::new(
            host_slots(cli.slots),
            config.version_file,
            Box::new(CommandReboot::default()),
        )));
    }
    Arc::new(agent).serve(listener.as_ref())?;
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
