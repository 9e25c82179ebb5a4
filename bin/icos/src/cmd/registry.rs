//! `icos registry`: create a governance registry (a TUF repository), serve
//! it over HTTP, re-sign its timestamp, and fetch and verify it as a node
//! does.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use icos_registry::client::{self, ClientOptions, FetchError};
use icos_registry::serve::JoinService;
use icos_registry::{Lifetimes, Repo, RepoError, SigningKey};
use url::Url;

use crate::exit::{Classify, CmdResult, Failure};

/// `icos registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Create a new registry repository in DIR: root 1 (the trust root
    /// images bake in, DIR/metadata/1.root.json), an empty registry at
    /// version 1, snapshot and timestamp.
    ///
    /// Governance keys (Ed25519) hold the root and targets roles with a
    /// threshold of k; the online key (DIR/keys/online.pem unless given)
    /// signs snapshot and timestamp.
    Init(InitArgs),
    /// Serve DIR/metadata and DIR/targets as static files over HTTP until
    /// SIGINT or SIGTERM. Nothing else of DIR is served.
    ///
    /// With --online-key, also admit nodes: `POST /join` with a JSON join
    /// request (as `icos gov join-request` writes) runs the admission of
    /// `icos gov join` and answers 200 with the node id, 400 for a
    /// malformed request, 403 for an unknown operator, a bad signature or
    /// no allowance left, 409 for a node or address registered otherwise.
    Serve(ServeArgs),
    /// Re-sign snapshot and timestamp with fresh expirations (run it more
    /// often than the timestamp lifetime).
    Refresh(RefreshArgs),
    /// Rotate the governance keys: root N+1 lists the new keys with a new
    /// threshold, signed by a quorum of the old keys and of the new ones;
    /// the registry is re-published signed by the new quorum.
    Rotate(RotateArgs),
    /// Fetch the registry from one of the URLs (tried in rotated order),
    /// verify it against the trust root, keep it in the datastore and
    /// print it. Exit 1 when every URL fails or is refused.
    Fetch(FetchArgs),
}

/// Metadata lifetimes.
#[derive(Debug, Args)]
pub struct LifetimeArgs {
    /// Lifetime of the timestamp metadata (`30s`, `12h`, `7d`).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_lifetime)]
    timestamp_expires: jiff::SignedDuration,
    /// Lifetime of the snapshot metadata.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_lifetime)]
    snapshot_expires: jiff::SignedDuration,
}

impl LifetimeArgs {
    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            timestamp: self.timestamp_expires,
            snapshot: self.snapshot_expires,
            ..Lifetimes::default()
        }
    }
}

/// Arguments of `icos registry init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The repository directory to create.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Signatures needed for root and targets (k of n).
    #[arg(long, value_name = "K")]
    threshold: u64,
    /// Existing governance private keys (PEM); repeat for each.
    #[arg(
        long = "governance-key",
        value_name = "FILE",
        conflicts_with = "generate"
    )]
    governance_keys: Vec<PathBuf>,
    /// Generate N governance keys into --keys-out.
    #[arg(long, value_name = "N", requires = "keys_out")]
    generate: Option<usize>,
    /// Where generated governance keys go (gov-1.pem ...); keep them
    /// offline, with their holders.
    #[arg(long, value_name = "DIR")]
    keys_out: Option<PathBuf>,
    /// An existing online key (PEM); default: generate DIR/keys/online.pem.
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
    #[command(flatten)]
    lifetimes: LifetimeArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos registry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The repository directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, value_name = "ADDR", default_value = "[::]:8080")]
    listen: SocketAddr,
    /// Accept join requests (`POST /join`), signing admissions with this
    /// online key (usually DIR/keys/online.pem). Without it the server is
    /// read-only.
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
}

/// Arguments of `icos registry refresh`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The repository directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The online key (default DIR/keys/online.pem).
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
    #[command(flatten)]
    lifetimes: LifetimeArgs,
}

/// Arguments of `icos registry rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The repository directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Old governance private keys that sign (at least the old threshold).
    #[arg(long = "old-key", value_name = "FILE", required = true)]
    old_keys: Vec<PathBuf>,
    /// The new governance private keys: all of them become the governance
    /// set and sign.
    #[arg(long = "new-key", value_name = "FILE", required = true)]
    new_keys: Vec<PathBuf>,
    /// The new threshold.
    #[arg(long, value_name = "K")]
    threshold: u64,
    /// The online key (default DIR/keys/online.pem).
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
}

/// Arguments of `icos registry fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Base URLs of the repository (`http://host:port/`, `file:///dir/`)
    /// or directories; tried in rotated order.
    #[arg(long = "url", value_name = "URL", required = true, num_args = 1..)]
    urls: Vec<String>,
    /// The trust root (root.json version 1, as baked into images).
    #[arg(long, value_name = "FILE")]
    root: PathBuf,
    /// The local store of trusted metadata and the last verified registry.
    #[arg(long, value_name = "DIR")]
    datastore: PathBuf,
    /// Rotation seed (a node uses the XOR of its id's bytes).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Timeout of each request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = icos_main::parse_duration)]
    timeout: std::time::Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses `<n>s|m|h|d`.
pub fn parse_lifetime(s: &str) -> Result<jiff::SignedDuration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: a unit is missing (s, m, h or d)"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("{s:?}: not a number"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    if secs <= 0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(jiff::SignedDuration::from_secs(secs))
}

/// Runs an `icos registry` subcommand.
pub fn run(cmd: RegistryCmd) -> CmdResult {
    match cmd {
        RegistryCmd::Init(a) => init(&a),
        RegistryCmd::Serve(a) => serve(&a),
        RegistryCmd::Refresh(a) => refresh(&a),
        RegistryCmd::Rotate(a) => rotate(&a),
        RegistryCmd::Fetch(a) => fetch(&a),
    }
}

/// Exit 2 for input at fault, 1 otherwise.
pub fn classify(e: RepoError) -> Failure {
    if e.is_bad_input() {
        Failure::BadInput(e.into())
    } else {
        Failure::Failed(e.into())
    }
}

/// A runtime for the async library calls.
pub fn runtime() -> CmdResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()
}

/// Loads the online key: the given file or DIR/keys/online.pem.
pub fn online_key(repo: &Repo, given: Option<&Path>) -> CmdResult<SigningKey> {
    let path = given.map_or_else(|| repo.online_key_path(), Path::to_path_buf);
    SigningKey::load(&path).map_err(classify)
}

fn init(a: &InitArgs) -> CmdResult {
    let gov: Vec<SigningKey> = match (a.generate, &a.keys_out) {
        (Some(n), Some(out)) => {
            if a.threshold == 0 || a.threshold > n as u64 {
                return Err(Failure::BadInput(anyhow!(
                    "threshold {} is impossible with {n} governance key(s): it must be 1..={n}",
                    a.threshold
                )));
            }
            std::fs::create_dir_all(out)
                .with_context(|| format!("creating {}", out.display()))
                .failed()?;
            (1..=n)
                .map(|i| SigningKey::generate(&out.join(format!("gov-{i}.pem"))))
                .collect::<Result<_, _>>()
                .map_err(classify)?
        }
        _ => {
            if a.governance_keys.is_empty() {
                return Err(Failure::BadInput(anyhow!(
                    "give governance keys (--governance-key FILE ...) or --generate N --keys-out DIR"
                )));
            }
            a.governance_keys
                .iter()
                .map(|p| SigningKey::load(p))
                .collect::<Result<_, _>>()
                .map_err(classify)?
        }
    };
    let online = match &a.online_key {
        Some(p) => SigningKey::load(p).map_err(classify)?,
        None => {
            let path = Repo::new(&a.dir).online_key_path();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))
                    .failed()?;
            }
            SigningKey::generate(&path).map_err(classify)?
        }
    };
    let repo = Repo::init(&a.dir, &gov, a.threshold, &online, &a.lifetimes.lifetimes())
        .map_err(classify)?;
    let keys: Vec<serde_json::Value> = gov
        .iter()
        .map(|k| {
            serde_json::json!({
                "file": k.path(),
                "key_id": hex::encode(k.key_id()),
                "public_key": hex::encode(k.public_bytes()),
            })
        })
        .collect();
    if a.json {
        let out = serde_json::json!({
            "repository": repo.dir(),
            "trust_root": repo.trust_root_path(),
            "threshold": a.threshold,
            "governance_keys": keys,
            "online_key": { "file": online.path(), "key_id": hex::encode(online.key_id()) },
            "registry_version": 1,
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
    } else {
        println!("registry repository created: {}", repo.dir().display());
        println!(
            "trust root (bake into images): {}",
            repo.trust_root_path().display()
        );
        println!(
            "governance: threshold {} of {} keys",
            a.threshold,
            gov.len()
        );
        for k in &gov {
            println!("  {} {}", hex::encode(k.key_id()), k.path().display());
        }
        println!(
            "online key (snapshot, timestamp): {} {}",
            hex::encode(online.key_id()),
            online.path().display()
        );
        println!("registry version: 1");
    }
    Ok(())
}

fn serve(a: &ServeArgs) -> CmdResult {
    for sub in ["metadata", "targets"] {
        let d = a.dir.join(sub);
        if !d.is_dir() {
            return Err(Failure::BadInput(anyhow!(
                "{}: not a registry repository (no {sub}/ directory)",
                a.dir.display()
            )));
        }
    }
    let joins = match &a.online_key {
        Some(path) => {
            let online = SigningKey::load(path).map_err(classify)?;
            let service =
                JoinService::new(a.dir.clone(), online, Lifetimes::default()).map_err(classify)?;
            Some(std::sync::Arc::new(service))
        }
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let (listener, addr) = icos_registry::serve::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))
            .failed()?;
        // One line: whoever reads it may close the pipe afterwards.
        if joins.is_some() {
            println!(
                "serving {} on http://{addr}/ (join requests: POST http://{addr}/join)",
                a.dir.display()
            );
        } else {
            println!("serving {} on http://{addr}/", a.dir.display());
        }
        std::io::stdout().flush().failed()?;
        icos_registry::serve::serve_with_join(listener, a.dir.clone(), joins, async {
            if let Err(e) = icos_main::wait_for_shutdown_signal().await {
                tracing::error!(error = %e, "installing signal handlers");
            }
        })
        .await
        .context("serving")
        .failed()
    })
}

fn refresh(a: &RefreshArgs) -> CmdResult {
    let repo = Repo::new(&a.dir);
    let online = online_key(&repo, a.online_key.as_deref())?;
    repo.refresh(&online, &a.lifetimes.lifetimes())
        .map_err(classify)?;
    println!(
        "snapshot and timestamp re-signed; timestamp valid for {}",
        a.lifetimes.timestamp_expires
    );
    Ok(())
}

fn rotate(a: &RotateArgs) -> CmdResult {
    let repo = Repo::new(&a.dir);
    let load = |paths: &[PathBuf]| -> CmdResult<Vec<SigningKey>> {
        paths
            .iter()
            .map(|p| SigningKey::load(p))
            .collect::<Result<_, _>>()
            .map_err(classify)
    };
    let old = load(&a.old_keys)?;
    let new = load(&a.new_keys)?;
    let online = online_key(&repo, a.online_key.as_deref())?;
    let public: Vec<_> = new.iter().map(SigningKey::tuf_key).collect();
    let root = repo
        .rotate_governance(
            &public,
            a.threshold,
            &old,
            &new,
            &online,
            &Lifetimes::default(),
        )
        .map_err(classify)?;
    println!(
        "root version {} published: threshold {} of {} new governance keys",
        root.version,
        a.threshold,
        new.len()
    );
    Ok(())
}

fn fetch(a: &FetchArgs) -> CmdResult {
    let urls: Vec<Url> = a
        .urls
        .iter()
        .map(|u| client::base_url(u))
        .collect::<Result<_, FetchError>>()
        .bad_input()?;
    let options = ClientOptions { timeout: a.timeout };
    let rt = runtime()?;
    let attempted = rt
        .block_on(client::fetch_any(
            &urls,
            a.seed,
            &a.root,
            &a.datastore,
            &options,
        ))
        .failed()?;
    let v = &attempted.verified;
    if v.stale {
        let reasons: Vec<String> = attempted.errors.iter().map(ToString::to_string).collect();
        return Err(Failure::Failed(anyhow!(
            "every URL failed or was refused ({}); the last verified registry (version {}) is kept in {}",
            reasons.join("; "),
            v.registry.version,
            a.datastore.display()
        )));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(v).failed()?);
    } else {
        println!(
            "verified registry version {} from {} (targets version {}, timestamp expires {})",
            v.registry.version,
            v.url.as_deref().unwrap_or("-"),
            v.targets_version,
            v.timestamp_expires
        );
        crate::cmd::gov::print_registry(&v.registry);
    }
    Ok(())
}
