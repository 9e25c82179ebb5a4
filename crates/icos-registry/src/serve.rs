//! Serving a repository as static files over HTTP.
//!
//! Only `GET /metadata/<file>` and `GET /targets/<file>` are served, from
//! the repository's `metadata/` and `targets/` directories; file names are
//! flat (letters, digits, `.`, `-`, `_`), so nothing else of the directory
//! (proposals, the online key) is reachable. Any static web server, CDN or
//! object store serving those two directories works the same.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

async fn file(dir: PathBuf, name: String) -> Response {
    if !safe_name(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(dir.join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(file = %dir.join(&name).display(), error = %e, "read failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The router serving the repository at `dir`.
pub fn router(dir: PathBuf) -> Router {
    let dir = Arc::new(dir);
    Router::new()
        .route(
            "/metadata/{name}",
            get(
                |State(d): State<Arc<PathBuf>>, UrlPath(n): UrlPath<String>| async move {
                    file(d.join("metadata"), n).await
                },
            ),
        )
        .route(
            "/targets/{name}",
            get(
                |State(d): State<Arc<PathBuf>>, UrlPath(n): UrlPath<String>| async move {
                    file(d.join("targets"), n).await
                },
            ),
        )
        .with_state(dir)
}

/// Binds `addr`; returns the listener and the address actually bound (port
/// 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves the repository at `dir` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(dir))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flat_names_are_served() {
        assert!(safe_name("1.root.json"));
        assert!(safe_name("ab12.registry.json"));
        for bad in ["", "..", ".hidden", "a/b", "a%2fb", "online.pem\0"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
