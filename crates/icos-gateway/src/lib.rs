//! The HTTP gateway of the boundary node.
//!
//! It turns ordinary HTTP requests for `<canister-id>.<domain>` into calls
//! of the canister's `http_request` method over the IC HTTP interface (via
//! `ic-agent`, through the `icos-boundary` router or any API endpoint),
//! checks the response certification, and answers with the canister's
//! response. `<canister-id>.raw.<domain>` is served without the check. See
//! the crate README for the whole behaviour.
//!
//! ```no_run
//! # async fn run() -> Result<(), icos_gateway::StartError> {
//! use icos_gateway::{GatewayConfig, RootKey};
//! let mut config = GatewayConfig::new(
//!     "127.0.0.1:8081".parse().unwrap_or_else(|_| unreachable!()),
//!     "http://127.0.0.1:8080",
//!     vec!["localhost".into()],
//!     RootKey::Fetch,
//! );
//! config.denylist = Some("denylist.json".into());
//! let gateway = icos_gateway::start(config).await?;
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod api_proxy;
pub mod canister;
pub mod denylist;
pub mod domain;
mod handler;
pub mod metrics;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use canister::RootKey;
pub use domain::{DomainResolver, Target};
pub use handler::VERIFICATION_HEADER;

/// Default largest request body: 10 MiB.
pub const MAX_REQUEST_BODY_SIZE: usize = 10 * 1024 * 1024;
/// Default largest response body, streamed chunks included: 10 MiB.
pub const MAX_RESPONSE_BODY_SIZE: usize = 10 * 1024 * 1024;

/// Everything the gateway needs to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where HTTP is served (HTTP/1.1 and HTTP/2 with prior knowledge).
    pub listen: SocketAddr,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The IC API endpoint (the router), e.g. `http://127.0.0.1:8080`.
    pub upstream: String,
    /// The base domains served.
    pub domains: Vec<String>,
    /// Where the IC root key comes from.
    pub root_key: RootKey,
    /// The denylist file, if any.
    pub denylist: Option<PathBuf>,
    /// How often the denylist file is checked for changes.
    pub denylist_poll_interval: Duration,
    /// Largest request body, in bytes (413 above).
    pub max_request_body: usize,
    /// Largest response body, in bytes (502 above).
    pub max_response_body: usize,
    /// Time allowed for the canister to answer, upgrade and streaming included.
    pub request_timeout: Duration,
    /// HTTPS, if served.
    pub tls: Option<tls::TlsConfig>,
}

impl GatewayConfig {
    /// Defaults, serving `domains` on `listen` from `upstream`.
    pub fn new(
        listen: SocketAddr,
        upstream: impl Into<String>,
        domains: Vec<String>,
        root_key: RootKey,
    ) -> Self {
        GatewayConfig {
            listen,
            metrics_listen: None,
            upstream: upstream.into(),
            domains,
            root_key,
            denylist: None,
            denylist_poll_interval: Duration::from_secs(1),
            max_request_body: MAX_REQUEST_BODY_SIZE,
            max_response_body: MAX_RESPONSE_BODY_SIZE,
            request_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Why the gateway could not start.
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
    /// The domain list is not usable.
    #[error(transparent)]
    Domain(#[from] domain::DomainError),
    /// The upstream URL is not usable.
    #[error("upstream {url}: {source}")]
    Upstream {
        /// The URL.
        url: String,
        /// The agent's error.
        source: ic_agent::AgentError,
    },
    /// The HTTP client for `/api/...` could not be set up.
    #[error("HTTP client for {url}: {source}")]
    ApiClient {
        /// The upstream URL.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The TLS certificate or key is not usable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The denylist could not be loaded.
    #[error(transparent)]
    Denylist(#[from] denylist::DenylistError),
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// The address HTTP is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address HTTPS is served on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The address metrics are served on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, lets open requests finish, stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        for t in self.background {
            t.abort();
        }
    }

    /// Waits until a server stops (they only stop on shutdown or failure).
    pub async fn wait(&mut self) {
        if let Some(s) = self.servers.first_mut() {
            let _ = s.await;
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = l
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((l, local))
}

fn spawn_server(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("server stopped: {e}");
        }
    })
}

/// Loads the denylist, binds the listeners and starts serving. Must be
/// called within a Tokio runtime.
pub async fn start(cfg: GatewayConfig) -> Result<RunningGateway, StartError> {
    let resolver = DomainResolver::new(&cfg.domains)?;
    let client =
        canister::CanisterClient::new(&cfg.upstream, cfg.root_key.clone()).map_err(|source| {
            StartError::Upstream {
                url: cfg.upstream.clone(),
                source,
            }
        })?;
    let metrics = Arc::new(metrics::Metrics::new());
    let denylist = Arc::new(denylist::Denylist::new());
    let mut background = Vec::new();
    if let Some(path) = &cfg.denylist {
        denylist.replace(denylist::load(path).await?);
        metrics.denylist_size(denylist.len());
        let (m, list) = (metrics.clone(), denylist.clone());
        let on_reload = move |ok| {
            m.denylist_reload(ok);
            m.denylist_size(list.len());
        };
        background.push(tokio::spawn(denylist::watch(
            path.clone(),
            denylist.clone(),
            cfg.denylist_poll_interval,
            on_reload,
        )));
    }
    let tls = match &cfg.tls {
        Some(t) => {
            let config = tls::server_config(&t.cert_chain, &t.key)?;
            Some((bind(t.listen).await?, config))
        }
        None => None,
    };
    let (listener, addr) = bind(cfg.listen).await?;
    let metrics_listener = match cfg.metrics_listen {
        Some(m) => Some(bind(m).await?),
        None => None,
    };
    let state = Arc::new(handler::AppState {
        resolver,
        denylist,
        client,
        metrics: metrics.clone(),
        max_request_body: cfg.max_request_body,
        max_response_body: cfg.max_response_body,
        request_timeout: cfg.request_timeout,
        upstream: cfg.upstream.clone(),
        api_client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| StartError::ApiClient {
                url: cfg.upstream.clone(),
                source,
            })?,
    });
    let (shutdown, stop) = watch::channel(false);
    let app = Router::new().fallback(handler::handle).with_state(state);
    let mut servers = vec![spawn_server(listener, app.clone(), stop.clone())];
    let mut tls_addr = None;
    if let Some(((l, a), config)) = tls {
        tls_addr = Some(a);
        servers.push(tls::spawn_server(l, config, app, stop.clone()));
    }
    let mut metrics_addr = None;
    if let Some((l, a)) = metrics_listener {
        metrics_addr = Some(a);
        let m = metrics.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        m.encode(),
                    )
                }
            }),
        );
        servers.push(spawn_server(l, app, stop));
    }
    tracing::info!(%addr, ?tls_addr, domains = ?cfg.domains, upstream = %cfg.upstream, "serving");
    Ok(RunningGateway {
        addr,
        tls_addr,
        metrics_addr,
        shutdown,
        servers,
        background,
    })
}
