//! `icos-orchestrator join`, and the join `run` makes first when given a
//! node operator key.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use icos_orchestrator::register::{self, JoinConfig, RegisterError};
use url::Url;

/// A failure and whether the input is at fault (exit 2) or not (exit 1).
pub struct JoinFailure {
    /// Exit 2 rather than 1.
    pub bad_input: bool,
    /// What happened.
    pub error: anyhow::Error,
}

fn bad(error: anyhow::Error) -> JoinFailure {
    JoinFailure {
        bad_input: true,
        error,
    }
}

fn failed(error: anyhow::Error) -> JoinFailure {
    JoinFailure {
        bad_input: false,
        error,
    }
}

/// The node key flags of `run`.
#[derive(Debug, Args)]
pub struct NodeKeyArgs {
    /// The node's private key (PEM), generated with mode 0600 when
    /// missing; the node finds itself in the registry by the id derived
    /// from it. On GuestOS it lives on the store, which survives reboots
    /// and upgrades (/var/lib/ic/data/crypto/node_key.pem).
    #[arg(long, value_name = "FILE", conflicts_with = "node_id")]
    pub node_key: Option<PathBuf>,
    /// Join first: when the node is not in the registry, send a join
    /// request signed by this node operator key for the --ipv6 address.
    #[arg(long, value_name = "FILE", requires_all = ["node_key", "ipv6"])]
    pub operator_key: Option<PathBuf>,
}

/// Arguments of `icos-orchestrator join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    registry: crate::RegistryArgs,
    /// The node's private key (PEM), generated with mode 0600 when missing.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/ic/data/crypto/node_key.pem"
    )]
    node_key: PathBuf,
    /// The node operator's private key (PEM); without it an unregistered
    /// node cannot join.
    #[arg(long, value_name = "FILE")]
    operator_key: Option<PathBuf>,
    /// The node's IPv6 address.
    #[arg(long, value_name = "ADDR")]
    ipv6: Ipv6Addr,
    /// Timeout of each request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration)]
    timeout: Duration,
    /// First wait after a round where no registry URL answered (doubles).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::duration)]
    backoff: Duration,
    /// Longest wait between rounds.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::duration)]
    max_backoff: Duration,
    /// Give up after N rounds (0: retry until joined or refused).
    #[arg(long, value_name = "N", default_value_t = 0)]
    attempts: u32,
}

/// Parses the registry URLs.
pub fn urls(given: &[String]) -> Result<Vec<Url>, JoinFailure> {
    given
        .iter()
        .map(|u| icos_registry::client::base_url(u).with_context(|| format!("--registry-url {u}")))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(bad)
}

fn check_root(root: &Path) -> Result<(), JoinFailure> {
    if root.is_file() {
        Ok(())
    } else {
        Err(bad(anyhow!(
            "--root {}: no such file (the registry's trust root, root.json)",
            root.display()
        )))
    }
}

fn classify(e: RegisterError) -> JoinFailure {
    match e {
        RegisterError::Key(_) => bad(e.into()),
        _ => failed(e.into()),
    }
}

/// Registers the node; prints `Join request successful!` and the node id
/// when admitted now.
pub async fn join(cfg: &JoinConfig) -> Result<String, JoinFailure> {
    let joined = register::join(cfg).await.map_err(|e| {
        tracing::error!(error = %e, "registering the node failed");
        classify(e)
    })?;
    println!("{}", register::summary(&joined));
    Ok(joined.node_id().to_owned())
}

/// Runs `icos-orchestrator join`.
pub fn run(a: &JoinArgs) -> Result<(), JoinFailure> {
    let cfg = JoinConfig {
        registry_urls: urls(&a.registry.registry_urls)?,
        trust_root: a.registry.root.clone(),
        datastore: a.registry.datastore.clone(),
        node_key: a.node_key.clone(),
        operator_key: a.operator_key.clone(),
        ipv6: a.ipv6,
        timeout: a.timeout,
        backoff: a.backoff,
        max_backoff: a.max_backoff,
        attempts: (a.attempts > 0).then_some(a.attempts),
    };
    check_root(&cfg.trust_root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(failed)?;
    runtime.block_on(join(&cfg)).map(|_| ())
}

/// For `run --node-key`: the node id derived from the node key, which is
/// generated when missing. Needs no network.
pub fn node_id_for_run(keys: &NodeKeyArgs) -> Result<Option<String>, JoinFailure> {
    let Some(node_key) = &keys.node_key else {
        return Ok(None);
    };
    let (key, _) = register::load_or_generate(node_key).map_err(classify)?;
    Ok(Some(register::node_id(&key)))
}

/// For `run --operator-key`: joins unless the verified registry lists the
/// node already, retrying network failures until joined or refused.
pub fn join_for_run(
    keys: &NodeKeyArgs,
    registry_urls: &[Url],
    root: &Path,
    datastore: &Path,
    ipv6: Option<Ipv6Addr>,
) -> Result<(), JoinFailure> {
    let (Some(node_key), Some(operator_key), Some(ipv6)) =
        (&keys.node_key, &keys.operator_key, ipv6)
    else {
        return Ok(());
    };
    check_root(root)?;
    let cfg = JoinConfig {
        registry_urls: registry_urls.to_vec(),
        trust_root: root.to_owned(),
        datastore: datastore.to_owned(),
        node_key: node_key.clone(),
        operator_key: Some(operator_key.clone()),
        ipv6,
        timeout: Duration::from_secs(30),
        backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(300),
        attempts: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(failed)?;
    runtime.block_on(join(&cfg)).map(|_| ())
}
