//! `icos-guestos-init`: one GuestOS early-boot step per run, called by the
//! image's systemd oneshot units (see the `icos-guestos-init` crate).
//!
//! On success a step prints `GUESTOS STEP <step>: ok: <summary>` on the
//! serial console; on failure `GUESTOS BOOT FAILURE: <step>: <reason>`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | the step succeeded |
//! | 1 | the step failed |
//! | 2 | usage error, or the config breaks a rule the step needs |

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use icos_guestos_init::{
    InitError, Paths, accounts, bootstrap, boundary, console, firewall, marker, network,
    orchestrator, power_button, replica, storage, vsock,
};

const AFTER_HELP: &str = "\
Exit codes:
  0  the step succeeded
  1  the step failed
  2  usage error, or the config breaks a rule the step needs";

/// GuestOS early boot: run one step (in IC-OS's order: storage, bootstrap,
/// network, firewall, accounts, replica-config, orchestrator-config; then
/// vsock, ready and marker;
/// boundary-config instead of replica-config on Boundary-GuestOS).
#[derive(Debug, Parser)]
#[command(name = "icos-guestos-init", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The root every path is under.
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    /// Where the markers go.
    #[arg(long, default_value = console::SERIAL_CONSOLE, global = true)]
    console: PathBuf,
    /// Log more (repeat for more detail); logs go to stderr (the journal).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    step: Step,
}

#[derive(Debug, Subcommand)]
enum Step {
    /// Open the encrypted var of the booted slot and the encrypted store
    /// (creating the key, the store partition and the file systems on first
    /// boot), before /var is mounted.
    Storage {
        /// How long to wait for a partition device, in seconds.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Find and mount the CONFIG media read-only, take the allow-listed
    /// files of ic-bootstrap.tar, write the config (every boot) and the keys
    /// (first boot only).
    Bootstrap {
        /// How often to look for the media, 100 ms apart.
        #[arg(long, default_value_t = bootstrap::MEDIA_TRIES)]
        tries: u32,
        /// Read this folder as the (already mounted) media instead.
        #[arg(long, value_name = "DIR")]
        media_dir: Option<PathBuf>,
    },
    /// Write the systemd-networkd file from network_settings.
    Network,
    /// Write the nftables ruleset and load it.
    Firewall {
        /// Write only; do not run nft.
        #[arg(long)]
        no_load: bool,
        /// Which node's ports to open: replica or boundary.
        #[arg(long, default_value = "replica")]
        profile: firewall::Profile,
    },
    /// Set up the role accounts' homes, SSH keys and the SSH host key.
    Accounts,
    /// Write the payload's configuration.
    ReplicaConfig,
    /// Write the orchestrator's command line (registry URLs, trust root,
    /// the node's IPv6), or say why it does not run on this boot.
    OrchestratorConfig,
    /// Boundary-GuestOS instead of replica-config: the router's and the
    /// gateway's command lines, and the gateway's TLS certificate.
    BoundaryConfig,
    /// Ask HostOS for its version over vsock, when there is a vsock device.
    Vsock,
    /// Wait until the payload answers its status endpoint (on [::1]).
    Ready {
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
        /// The payload's port.
        #[arg(long, default_value_t = replica::HTTP_PORT)]
        port: u16,
        /// The path to ask; any 2xx answer is ready.
        #[arg(long, default_value = replica::STATUS_PATH)]
        path: String,
    },
    /// Print the success marker (GUESTOS BOOT SUCCESS with the boot's
    /// facts) on the console; run once every step succeeded and the payload
    /// answers. Waits first (up to 15 s) until systemd-logind watches the
    /// ACPI power button, which the host presses to stop the VM.
    Marker {
        /// Which node's payload to report: replica or boundary.
        #[arg(long, default_value = "replica")]
        profile: firewall::Profile,
    },
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Storage { .. } => "storage",
            Step::Bootstrap { .. } => "bootstrap",
            Step::Network => "network",
            Step::Firewall { .. } => "firewall",
            Step::Accounts => "accounts",
            Step::ReplicaConfig => "replica-config",
            Step::OrchestratorConfig => "orchestrator-config",
            Step::BoundaryConfig => "boundary-config",
            Step::Vsock => "vsock",
            Step::Ready { .. } => "ready",
            Step::Marker { .. } => "marker",
        }
    }
}

enum Failure {
    BadInput(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<InitError> for Failure {
    fn from(e: InitError) -> Failure {
        let bad = match &e {
            InitError::Config { .. } => true,
            InitError::Media(m) => m.is_bad_input(),
            _ => false,
        };
        if bad {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "info");
    let name = cli.step.name();
    let paths = Paths::new(&cli.root);
    match run(&paths, &cli.console, &cli.step) {
        Ok(Some(summary)) => {
            say(&cli.console, &format!("GUESTOS STEP {name}: ok: {summary}"));
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            let (e, code) = match &f {
                Failure::BadInput(e) => (e, 2),
                Failure::Failed(e) => (e, 1),
            };
            let reason = format!("{e:#}");
            eprintln!("error: {reason}");
            say(&cli.console, &console::failure_line(name, &reason));
            ExitCode::from(code)
        }
    }
}

/// Prints a line on the console; a console that cannot be written is
/// logged, not fatal (the journal has the step's result too).
fn say(console: &Path, line: &str) {
    tracing::info!("{line}");
    if let Err(e) = console::print(console, line) {
        tracing::warn!("{e}");
    }
}

fn load_config(paths: &Paths) -> Result<icos_config::GuestOSConfig, Failure> {
    let path = paths.config_json();
    icos_config::load(&path)
        .map_err(|e| Failure::Failed(anyhow!("{e} (did the bootstrap step run?)")))
}

fn run(paths: &Paths, console: &Path, step: &Step) -> Result<Option<String>, Failure> {
    match step {
        Step::Storage { wait_secs } => {
            let r = storage::apply(paths, &storage::Commands, Duration::from_secs(*wait_secs))?;
            Ok(Some(format!(
                "slot {:?}; key {}; var {:?}; store {}{:?}",
                r.slot,
                if r.new_key { "made" } else { "kept" },
                r.var,
                if r.store_created {
                    "partition created, "
                } else {
                    ""
                },
                r.store
            )))
        }
        Step::Bootstrap { tries, media_dir } => {
            let b = match media_dir {
                Some(dir) => bootstrap::read_media_dir(dir)?,
                None => read_media(paths, *tries)?,
            };
            for item in &b.ignored {
                say(console, &format!("GUESTOS CONFIG {item}"));
            }
            let applied = bootstrap::apply(paths, &b)?;
            Ok(Some(format!(
                "{} ({} files written, {} ignored)",
                if applied.first_boot {
                    "applied (first boot)"
                } else {
                    "config refreshed (already configured)"
                },
                applied.written.len(),
                b.ignored.len()
            )))
        }
        Step::Network => {
            let c = load_config(paths)?;
            let path = network::apply(paths, &c)?;
            Ok(Some(path.display().to_string()))
        }
        Step::Firewall { no_load, profile } => {
            let c = load_config(paths)?;
            let path = firewall::apply(paths, &c, *profile)?;
            if !no_load {
                let out = Command::new("nft")
                    .arg("-f")
                    .arg(&path)
                    .output()
                    .context("running nft")?;
                if !out.status.success() {
                    return Err(Failure::Failed(anyhow!(
                        "nft -f {}: {}: {}",
                        path.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
            Ok(Some(format!(
                "{} {}",
                path.display(),
                if *no_load { "written" } else { "loaded" }
            )))
        }
        Step::Accounts => {
            let keys = accounts::apply(paths)?;
            let (host_key, done) =
                accounts::ensure_host_key(paths, Path::new("/usr/bin/ssh-keygen"))?;
            let list: Vec<String> = keys
                .iter()
                .map(|k| format!("{}={}", k.account, k.keys))
                .collect();
            Ok(Some(format!(
                "keys {}; host key {} ({})",
                list.join(" "),
                host_key.display(),
                done.as_str()
            )))
        }
        Step::ReplicaConfig => {
            let c = load_config(paths)?;
            replica::apply(paths, &c)?;
            Ok(Some(format!(
                "/opt/ic/bin/replica {}",
                replica::replica_args()
            )))
        }
        Step::OrchestratorConfig => {
            let c = load_config(paths)?;
            let hostos = vsock::has_vsock_device(paths);
            Ok(Some(match orchestrator::apply(paths, &c, hostos)? {
                Ok(s) => format!(
                    "/opt/ic/bin/icos-orchestrator following {} as {} (root {}{})",
                    s.registry_urls.join(" "),
                    s.ipv6,
                    s.root.display(),
                    if s.hostos { "" } else { ", no HostOS" }
                ),
                Err(off) => format!("orchestrator off: {off}"),
            }))
        }
        Step::BoundaryConfig => {
            let c = load_config(paths)?;
            let a = boundary::apply(paths, &c)?;
            let cert = if a.new_certificate { "new" } else { "kept" };
            let key = if a.fetch_root_key {
                "from the routing table"
            } else {
                "NNS public key"
            };
            Ok(Some(format!(
                "router on [::1]:{}, gateway for {} ({:?}) on 80 and 443, {cert} certificate, root key: {key}",
                boundary::ROUTER_PORT,
                a.domain,
                a.source
            )))
        }
        Step::Vsock => {
            if !vsock::has_vsock_device(paths) {
                tracing::info!("no vsock device");
                return Ok(None);
            }
            let out = Command::new(paths.at("/opt/ic/bin/icos-vsock-guest"))
                .args(["--timeout-secs", "10", "get-hostos-version"])
                .output();
            let line = match &out {
                Ok(o) if o.status.success() => {
                    vsock::result_line(Ok(&String::from_utf8_lossy(&o.stdout)))
                }
                Ok(o) => vsock::result_line(Err(&format!(
                    "{}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ))),
                Err(e) => vsock::result_line(Err(&e.to_string())),
            };
            say(console, &line);
            Ok(None)
        }
        Step::Ready {
            timeout_secs,
            port,
            path,
        } => {
            let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, *port));
            let took = replica::wait_ready(
                addr,
                path,
                Duration::from_secs(*timeout_secs),
                Duration::from_millis(100),
            )?;
            Ok(Some(format!(
                "payload answers http://{addr}{path} (after {:.1} s)",
                took.as_secs_f64()
            )))
        }
        Step::Marker { profile } => {
            let watched =
                power_button::wait_watched(paths, power_button::WAIT, Duration::from_millis(100))?;
            tracing::info!(
                "power button /dev/input/{} watched by {} (pid {})",
                watched.event,
                power_button::WATCHER,
                watched.pid
            );
            let units = marker::UnitStates::query(Path::new("systemctl"))?;
            let line = marker::success_line(paths, *profile, &units)?;
            tracing::info!("{line}");
            console::print(console, &line)?;
            Ok(None)
        }
    }
}

/// Finds the media, mounts it read-only, reads it, unmounts it.
fn read_media(paths: &Paths, tries: u32) -> Result<bootstrap::Bootstrap, Failure> {
    let dev = bootstrap::find_media_retrying(paths, tries, bootstrap::MEDIA_RETRY_DELAY)?;
    let mnt = paths.media_mount();
    std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let status = Command::new("mount")
        .args(["-t", "vfat", "-o", "ro,nodev,nosuid,noexec"])
        .arg(&dev)
        .arg(&mnt)
        .status()
        .context("running mount")?;
    if !status.success() {
        return Err(Failure::Failed(anyhow!(
            "mount -t vfat -o ro {} {}: {status}",
            dev.display(),
            mnt.display()
        )));
    }
    let read = bootstrap::read_media_dir(&mnt);
    let umount = Command::new("umount").arg(&mnt).status();
    if !matches!(umount, Ok(s) if s.success()) {
        tracing::warn!("umount {} failed: {umount:?}", mnt.display());
    }
    Ok(read?)
}
