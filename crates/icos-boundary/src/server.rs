//! The HTTP servers: the API listener and the metrics listener.
//!
//! Connections are served with HTTP/1.1 and HTTP/2 (prior knowledge);
//! request headers must arrive within the header timeout. On shutdown the
//! listener closes and open connections get a grace period to finish.
//!
//! The API listener is served by a fixed set of threads, one per core by
//! default ([`serve_threads`]); the metrics listener by the calling runtime
//! ([`serve`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tower::Service;

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::proxy::{self, AppState, PeerAddr};
use crate::routes::{PATH_HEALTH, PATH_STATUS, RequestType};
use crate::warn_limited;

/// Time open connections get to finish after shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// The API router.
pub fn api_router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route(PATH_STATUS, get(proxy::status))
        .route(PATH_HEALTH, get(proxy::health));
    for (request_type, pattern) in RequestType::PROXIED {
        router = router.route(
            pattern,
            post(move |s, req| proxy::proxy(s, request_type, req)),
        );
    }
    router.with_state(state)
}

/// The metrics router: `GET /metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    )
}

fn connection_builder(header_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    builder
}

/// Serves one accepted connection on the current runtime, watched by
/// `graceful`; `on_close` runs when the connection ends.
fn serve_connection(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    app: &Router,
    stream: TcpStream,
    peer: SocketAddr,
    on_close: impl FnOnce() + Send + 'static,
) {
    let _ = stream.set_nodelay(true);
    let app = app.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        on_close();
    });
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                warn_limited!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if shutdown.changed().await.is_err() || *shutdown.borrow() {
            return;
        }
    }
}

async fn finish(graceful: GracefulShutdown) {
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => {}
    }
}

/// Serves `app` on `listener`, on the current runtime, until `shutdown`
/// turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = connection_builder(header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener) => {
                serve_connection(&builder, &graceful, &app, stream, peer, || {});
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    finish(graceful).await;
}

/// An accepted connection on its way to a serving thread.
type Handoff = (std::net::TcpStream, SocketAddr);

/// One serving thread, as the accepting task sees it.
struct Worker {
    connections: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
}

/// The threads serving the API listener, started by [`ServingThreads::spawn`]
/// and fed by [`serve_threads`].
///
/// Each thread runs its own single-threaded runtime, so a connection, its
/// request handlers and the replica connections they use (each app brings
/// its own [`crate::upstream::Upstream`] pool) all stay on one thread: no
/// wake-ups cross threads on the request path, as with one nginx worker
/// process per core.
pub struct ServingThreads {
    workers: Vec<Worker>,
    finished: Vec<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for ServingThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingThreads")
            .field("threads", &self.workers.len())
            .finish()
    }
}

impl ServingThreads {
    /// Starts one thread per app in `apps`; each stops when `shutdown`
    /// turns true (or its sender is dropped), after a grace period for its
    /// open connections.
    pub fn spawn(
        apps: Vec<Router>,
        header_timeout: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(apps.len());
        let mut finished = Vec::with_capacity(apps.len());
        for (i, app) in apps.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let (done_tx, done_rx) = oneshot::channel::<()>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread_open = open.clone();
            let thread_shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("icos-boundary-{i}"))
                .spawn(move || {
                    runtime.block_on(serve_handoffs(
                        rx,
                        app,
                        header_timeout,
                        thread_open,
                        thread_shutdown,
                    ));
                    drop(runtime);
                    let _ = done_tx.send(());
                })?;
            workers.push(Worker {
                connections: tx,
                open,
            });
            finished.push(done_rx);
        }
        Ok(ServingThreads { workers, finished })
    }
}

/// Accepts connections on `listener` and hands each to the serving thread
/// with the fewest open connections, until `shutdown` turns true; returns
/// when every thread has finished its connections.
pub async fn serve_threads(
    listener: TcpListener,
    threads: ServingThreads,
    mut shutdown: watch::Receiver<bool>,
) {
    let ServingThreads { workers, finished } = threads;
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener) => {
                let Some(worker) = workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
                    break;
                };
                match stream.into_std() {
                    Ok(stream) => {
                        worker.open.fetch_add(1, Ordering::Relaxed);
                        if worker.connections.send((stream, peer)).is_err() {
                            worker.open.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => warn_limited!(%peer, error = %e, "handing over a connection failed"),
                }
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    drop(workers);
    for done in finished {
        let _ = done.await;
    }
}

/// The loop of one serving thread: serves the connections handed to it.
async fn serve_handoffs(
    mut connections: mpsc::UnboundedReceiver<Handoff>,
    app: Router,
    header_timeout: Duration,
    open: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = connection_builder(header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            next = connections.recv() => {
                let Some((stream, peer)) = next else { break };
                let stream = match TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        warn_limited!(%peer, error = %e, "taking over a connection failed");
                        continue;
                    }
                };
                let open = open.clone();
                serve_connection(&builder, &graceful, &app, stream, peer, move || {
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    finish(graceful).await;
}

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
