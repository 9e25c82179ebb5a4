//! The HTTP servers: the API listener and the metrics listener.
//!
//! Connections are served with HTTP/1.1 and HTTP/2 (prior knowledge);
//! request headers must arrive within the header timeout. On shutdown the
//! listener closes and open connections get a grace period to finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
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

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn_limited!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let mut app = app.clone();
                    async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => {}
    }
}

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
