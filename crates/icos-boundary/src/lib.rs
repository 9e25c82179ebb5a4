//! The IC API router of the boundary node.
//!
//! It serves the canister and subnet routes of the IC HTTP interface
//! (`/api/v2`, `/api/v3`, `/api/v4`), plus `GET /api/v2/status` and
//! `GET /health`, and forwards each request, unchanged, to a healthy
//! replica of the subnet that hosts the canister, as DFINITY's ic-boundary
//! does. The routing table and the replicas come from a JSON file
//! ([`table_file`]), reloaded when it changes.
//!
//! One concern per module:
//!
//! | module | concern |
//! |--------|---------|
//! | [`principal`] | principals and their checksummed textual form |
//! | [`routing`] | the routing table and the canister → subnet lookup |
//! | [`table_file`] | the routing-table file and its reloading |
//! | [`envelope`] | decoding the envelope's `content` |
//! | [`status`] | the `/api/v2/status` document |
//! | [`health`] | replica health checks, the height-lag rule, aggregate health |
//! | [`select`] | choosing replicas |
//! | [`retry`] | when to try another replica |
//! | [`ratelimit`] | per-IP and per-subnet limits |
//! | [`cache`] | the query cache |
//! | [`errors`] | error causes, status codes and bodies |
//! | [`headers`] | diagnostic header names |
//! | [`metrics`] | Prometheus metrics |
//! | [`upstream`] | the replica HTTP client |
//! | [`proxy`] | the request pipeline |
//! | [`server`] | the HTTP listeners |
//! | [`log`] | rate-limited logging |
//!
//! [`start`] runs everything; [`RunningRouter::shutdown`] stops it.

pub mod cache;
pub mod envelope;
pub mod errors;
pub mod headers;
pub mod health;
pub mod log;
pub mod metrics;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod retry;
pub mod routes;
pub mod routing;
pub mod select;
pub mod server;
pub mod status;
pub mod table_file;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use envelope::decode_content;
pub use principal::{Principal, parse_principal};

use cache::{CacheConfig, QueryCache};
use health::{HealthConfig, HealthView};
use metrics::{Metrics, gauge_value};
use proxy::{AppState, ProxyConfig};
use ratelimit::{DEFAULT_MAX_KEYS, KeyedLimiter};
use retry::RetryPolicy;
use routing::TableHandle;
use upstream::Upstream;

/// The largest request body ic-boundary accepts: 4 MiB.
pub const MAX_REQUEST_BODY_SIZE: usize = 4 * 1024 * 1024;

/// Everything the router needs to run.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Where the API is served.
    pub listen: SocketAddr,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The routing-table file.
    pub routing_table: PathBuf,
    /// How often the file is checked for changes.
    pub table_poll_interval: Duration,
    /// Health-check settings.
    pub health: HealthConfig,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time allowed to receive a request's headers or body.
    pub read_timeout: Duration,
    /// Time allowed for one replica to answer.
    pub upstream_timeout: Duration,
    /// Time allowed to connect to a replica.
    pub connect_timeout: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Whether update calls go to the f+1 lowest-latency replicas.
    pub latency_routing: bool,
    /// Update calls per second per client IP.
    pub rate_limit_per_ip: Option<u32>,
    /// Update calls per second per subnet.
    pub rate_limit_per_subnet: Option<u32>,
    /// The query cache, if enabled.
    pub cache: Option<CacheConfig>,
    /// Threads serving the API listener (at least 1).
    pub workers: usize,
}

impl RouterConfig {
    /// Defaults as in ic-boundary, serving `listen` from `routing_table`.
    pub fn new(listen: SocketAddr, routing_table: PathBuf) -> Self {
        RouterConfig {
            listen,
            metrics_listen: None,
            routing_table,
            table_poll_interval: Duration::from_secs(1),
            health: HealthConfig::default(),
            max_body: MAX_REQUEST_BODY_SIZE,
            read_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(4),
            retry: RetryPolicy::default(),
            latency_routing: true,
            rate_limit_per_ip: None,
            rate_limit_per_subnet: None,
            cache: None,
            workers: default_workers(),
        }
    }
}

/// One serving thread per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A serving thread or its runtime could not be started.
    #[error("starting a serving thread: {0}")]
    Threads(std::io::Error),
}

/// A running router.
#[derive(Debug)]
pub struct RunningRouter {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningRouter {
    /// The address the API is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address metrics are served on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, lets open connections finish (a few seconds at
    /// most), and stops the background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// Binds the listeners and starts serving, loading the routing table and
/// checking replicas in the background. Must be called within a Tokio
/// runtime.
pub async fn start(cfg: RouterConfig) -> Result<RunningRouter, StartError> {
    let listener = server::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let metrics_listener = match cfg.metrics_listen {
        Some(m) => Some(
            server::bind(m)
                .await
                .map_err(|source| StartError::Bind { addr: m, source })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let metrics = Arc::new(Metrics::new());
    let table = Arc::new(TableHandle::default());
    let view = Arc::new(ArcSwap::from_pointee(HealthView::default()));
    let upstream = Upstream::new(cfg.connect_timeout);

    let mut background = Vec::new();
    {
        let table = table.clone();
        let metrics = metrics.clone();
        background.push(tokio::spawn(table_file::watch_table_file(
            cfg.routing_table.clone(),
            cfg.table_poll_interval,
            move |t| {
                metrics.persist_ranges.set(gauge_value(t.range_count()));
                metrics.persist_nodes.set(gauge_value(t.node_count()));
                table.store(t);
            },
        )));
    }
    background.push(tokio::spawn(health::run_health_checks(
        table.clone(),
        view.clone(),
        upstream.clone(),
        metrics.clone(),
        cfg.health,
    )));

    let state = AppState {
        table,
        health: view,
        health_cfg: cfg.health,
        upstream,
        metrics: metrics.clone(),
        cfg: ProxyConfig {
            max_body: cfg.max_body,
            body_timeout: cfg.read_timeout,
            upstream_timeout: cfg.upstream_timeout,
            retry: cfg.retry,
            latency_routing: cfg.latency_routing,
        },
        ip_limiter: cfg
            .rate_limit_per_ip
            .map(|n| Arc::new(KeyedLimiter::new(n, DEFAULT_MAX_KEYS))),
        subnet_limiter: cfg
            .rate_limit_per_subnet
            .map(|n| Arc::new(KeyedLimiter::new(n, DEFAULT_MAX_KEYS))),
        cache: cfg.cache.map(|c| Arc::new(QueryCache::new(c))),
    };
    // One app per serving thread, each with its own replica connections.
    let apps = (0..cfg.workers.max(1))
        .map(|_| {
            server::api_router(Arc::new(AppState {
                upstream: Upstream::new(cfg.connect_timeout),
                ..state.clone()
            }))
        })
        .collect();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let threads =
        server::ServingThreads::spawn(apps, cfg.read_timeout, &shutdown_rx).map_err(|e| {
            for task in &background {
                task.abort();
            }
            StartError::Threads(e)
        })?;
    let mut servers = vec![tokio::spawn(server::serve_threads(
        listener,
        threads,
        shutdown_rx.clone(),
    ))];
    if let Some(l) = metrics_listener {
        servers.push(tokio::spawn(server::serve(
            l,
            server::metrics_router(metrics),
            cfg.read_timeout,
            shutdown_rx,
        )));
    }
    tracing::info!(%addr, metrics = ?metrics_addr, "router listening");
    Ok(RunningRouter {
        addr,
        metrics_addr,
        shutdown,
        servers,
        background,
    })
}
