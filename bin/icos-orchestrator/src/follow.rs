//! `run` flags and wiring for what follows the registry beside the
//! upgrades: the supervised replica, the SSH keys and the firewall. Each
//! part is off unless its flag is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use icos_config::GuestOSConfig;
use icos_orchestrator::access::{FirewallSync, Nft, SshSync};
use icos_orchestrator::replica::{ReplicaSync, Supervisor, SupervisorOptions};
use icos_orchestrator::{Metrics, NodeSelector};

/// Replica, SSH and firewall flags of `run`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Supervise this replica payload (start, restart with backoff, restart
    /// on a new configuration) [default: not supervised].
    #[arg(long, value_name = "FILE")]
    replica_bin: Option<PathBuf>,
    /// Where the replica's generated testnet configuration is written.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/run/ic-node/orchestrator/replica/testnet.json"
    )]
    replica_config: PathBuf,
    /// Where the replica serves HTTP.
    #[arg(long, value_name = "ADDR", default_value = "[::]:8080")]
    replica_listen: SocketAddr,
    /// Run the replica as this account of /etc/passwd (needs root).
    #[arg(long, value_name = "NAME")]
    replica_user: Option<String>,
    /// How long the replica may take to stop after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::duration)]
    replica_grace: Duration,
    /// The first wait before restarting a replica that exited; it doubles
    /// up to 60 s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::duration)]
    replica_backoff: Duration,
    /// Keep the readonly and backup accounts' SSH keys in line with the
    /// registry: DIR holds their homes (DIR/<account>/.ssh/authorized_keys)
    /// [default: off].
    #[arg(long, value_name = "DIR")]
    ssh_dir: Option<PathBuf>,
    /// The bootstrap's keys (DIR/<account>), kept ahead of the registry's.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/boot/config/accounts_ssh_authorized_keys"
    )]
    ssh_bootstrap_keys: PathBuf,
    /// Keep the nftables ruleset in line with the registry: write it to
    /// FILE and load it with `nft -f` [default: off].
    #[arg(long, value_name = "FILE")]
    firewall_file: Option<PathBuf>,
    /// The nft program.
    #[arg(long, value_name = "FILE", default_value = "/usr/sbin/nft")]
    nft: PathBuf,
    /// The GuestOS config (read when the replica or the firewall is on).
    #[arg(long, value_name = "FILE", default_value = "/run/config/config.json")]
    guestos_config: PathBuf,
}

/// The parts that are on, and where the verified registry is kept.
pub struct Follower {
    store: PathBuf,
    node: NodeSelector,
    metrics: Arc<Metrics>,
    replica: Option<ReplicaSync>,
    ssh: Option<SshSync>,
    firewall: Option<FirewallSync<Nft>>,
}

fn account(passwd: &Path, name: &str) -> anyhow::Result<(u32, u32)> {
    let text = std::fs::read_to_string(passwd)
        .with_context(|| format!("--replica-user {name}: reading {}", passwd.display()))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            anyhow!(
                "--replica-user {name}: no such account in {}",
                passwd.display()
            )
        })
}

impl Follower {
    /// Checks the flags and starts the replica supervisor (on the current
    /// runtime). An error is bad input.
    pub fn start(
        args: FollowArgs,
        datastore: &Path,
        node: NodeSelector,
        status_path: &Path,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Follower> {
        let guestos = if args.replica_bin.is_some() || args.firewall_file.is_some() {
            Some(
                icos_config::load::<GuestOSConfig>(&args.guestos_config).with_context(|| {
                    format!("--guestos-config {}", args.guestos_config.display())
                })?,
            )
        } else {
            None
        };
        let replica = match (args.replica_bin, &guestos) {
            (Some(program), Some(guestos)) => {
                if !program.is_file() {
                    return Err(anyhow!("--replica-bin {}: no such file", program.display()));
                }
                let user = args
                    .replica_user
                    .as_deref()
                    .map(|n| account(Path::new("/etc/passwd"), n))
                    .transpose()?;
                let mut options = SupervisorOptions {
                    grace: args.replica_grace,
                    status_path: Some(status_path.to_owned()),
                    ..SupervisorOptions::default()
                };
                options.backoff.initial = args.replica_backoff;
                options.backoff.max = options.backoff.max.max(args.replica_backoff);
                Some(ReplicaSync {
                    program,
                    config_path: args.replica_config,
                    listen: args.replica_listen,
                    user,
                    guestos: guestos.clone(),
                    supervisor: Supervisor::start(options, Arc::clone(&metrics)),
                })
            }
            _ => None,
        };
        let ssh = args.ssh_dir.map(|homes| SshSync {
            homes,
            bootstrap_keys: Some(args.ssh_bootstrap_keys),
        });
        let firewall = match (args.firewall_file, guestos) {
            (Some(file), Some(guestos)) => {
                Some(FirewallSync::new(file, Nft { program: args.nft }, guestos))
            }
            _ => None,
        };
        Ok(Follower {
            store: datastore.join("registry"),
            node,
            metrics,
            replica,
            ssh,
            firewall,
        })
    }

    /// Brings each part in line with the last verified registry (none yet:
    /// the replica runs on the GuestOS config alone). Failures are logged
    /// and tried again at the next call.
    pub fn sync(&mut self) {
        let verified = icos_registry::client::kept(&self.store);
        let registry = verified.as_ref().map(|v| &v.registry);
        let node_id = registry.and_then(|r| {
            icos_orchestrator::target::find_node(r, &self.node)
                .map_err(|e| tracing::debug!(error = %e, "this node is not in the registry"))
                .ok()
        });
        if let Some(replica) = &mut self.replica {
            let with = registry.zip(node_id.as_deref());
            if let Err(e) = replica.update(with) {
                tracing::warn!(error = %e, "replica configuration");
            }
        }
        let Some(registry) = registry else {
            return;
        };
        if let (Some(ssh), Some(id)) = (&self.ssh, &node_id)
            && let Err(e) = ssh.sync(registry, id, &self.metrics)
        {
            tracing::warn!(error = %e, "SSH keys not in line with the registry");
        }
        if let Some(fw) = &mut self.firewall
            && let Err(e) = fw.sync(registry, node_id.as_deref(), &self.metrics)
        {
            tracing::warn!(error = %e, "firewall not in line with the registry");
        }
    }

    /// Stops the replica (SIGTERM, then SIGKILL after the grace).
    pub async fn stop(self) {
        if let Some(r) = self.replica {
            r.supervisor.stop().await;
        }
    }
}
