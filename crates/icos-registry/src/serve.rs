//! Serving a repository as static files over HTTP.
//!
//! Only `GET /metadata/<file>` and `GET /targets/<file>` are served, from
//! the repository's `metadata/` and `targets/` directories; file names are
//! flat (letters, digits, `.`, `-`, `_`), so nothing else of the directory
//! (proposals, the online key) is reachable. Any static web server, CDN or
//! object store serving those two directories works the same.
//!
//! With a [`JoinService`] (the online key), the server also admits nodes:
//! `POST /join` with a JSON [`JoinRequest`] body (at most
//! [`MAX_JOIN_BODY`] bytes) runs [`Repo::admit`], the admission
//! `icos gov join` runs, one request at a time, and answers:
//!
//! | status | body | when |
//! |--------|------|------|
//! | 200 | [`JoinResponse`] (`admitted: true`, message `Join request successful!`) | admitted and published |
//! | 200 | [`JoinResponse`] (`admitted: false`) | the same node, operator and address are already registered |
//! | 400 | `{"error": ...}` | not a join request (bad JSON, unknown field, bad node key) |
//! | 403 | `{"error": ...}` | unknown operator, a signature that does not verify, no allowance left |
//! | 409 | `{"error": ...}` | the node id or its address is already registered otherwise |
//! | 413 | | body over [`MAX_JOIN_BODY`] |
//! | 500 | `{"error": ...}` | the repository could not be read or written |
//!
//! Without a join service, `POST /join` is not routed (404/405): the
//! server stays read-only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::error::RepoError;
use crate::join::{JoinError, JoinRequest, JoinResponse};
use crate::keys::SigningKey;
use crate::proposal::ProposalError;
use crate::repo::{Lifetimes, Repo};

/// The largest `POST /join` body accepted (a request is about 500 bytes).
pub const MAX_JOIN_BODY: usize = 16 * 1024;

/// Admits join requests into a repository with its online key, one at a
/// time.
#[derive(Debug)]
pub struct JoinService {
    repo: Repo,
    online: SigningKey,
    lifetimes: Lifetimes,
    publisher: std::sync::Mutex<()>,
}

/// A refused or failed join: the HTTP status and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRefusal {
    /// 400, 403, 409 or 500.
    pub status: u16,
    /// Why.
    pub reason: String,
}

impl JoinService {
    /// A service for the repository at `dir`; refuses an online key that
    /// is not the snapshot and timestamp key of the published root.
    pub fn new(dir: PathBuf, online: SigningKey, lifetimes: Lifetimes) -> Result<Self, RepoError> {
        let repo = Repo::new(dir);
        repo.check_online_key(&online)?;
        Ok(JoinService {
            repo,
            online,
            lifetimes,
            publisher: std::sync::Mutex::new(()),
        })
    }

    /// Admits `request` (blocking: reads and writes the repository).
    /// Concurrent callers are serialized, so admissions never race for the
    /// same sequence number or allowance.
    pub fn admit(&self, request: &JoinRequest) -> Result<JoinResponse, JoinRefusal> {
        let _one_publisher = self
            .publisher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.repo
            .admit(request, &self.online, &self.lifetimes)
            .map_err(|e| JoinRefusal {
                status: refusal_status(&e),
                reason: e.to_string(),
            })
    }

    /// Parses a `POST /join` body and admits it.
    pub fn admit_body(&self, body: &[u8]) -> Result<JoinResponse, JoinRefusal> {
        let request: JoinRequest = serde_json::from_slice(body).map_err(|e| JoinRefusal {
            status: 400,
            reason: format!("the body is not a join request: {e}"),
        })?;
        self.admit(&request)
    }
}

/// The HTTP status of a refused or failed join.
pub fn refusal_status(e: &RepoError) -> u16 {
    match e {
        RepoError::Join(JoinError::BadNodeKey(_)) => 400,
        RepoError::Join(
            JoinError::UnknownOperator(_)
            | JoinError::BadOperatorSignature(_)
            | JoinError::BadNodeSignature
            | JoinError::Refused(
                ProposalError::AllowanceExceeded { .. } | ProposalError::UnknownOperator(_),
            ),
        ) => 403,
        RepoError::Join(JoinError::Refused(_)) => 409,
        _ => 500,
    }
}

async fn join(service: Arc<JoinService>, body: Bytes) -> Response {
    let answer = tokio::task::spawn_blocking(move || service.admit_body(&body)).await;
    let json = |status: StatusCode, value: serde_json::Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    match answer {
        Ok(Ok(r)) => {
            tracing::info!(node = %r.node_id, operator = %r.operator, admitted = r.admitted, "{}", r.message);
            json(
                StatusCode::OK,
                serde_json::to_value(&r).unwrap_or(serde_json::Value::Null),
            )
        }
        Ok(Err(refusal)) => {
            tracing::warn!(status = refusal.status, reason = %refusal.reason, "join request refused");
            json(
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                serde_json::json!({ "error": refusal.reason }),
            )
        }
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": format!("the admission task failed: {e}") }),
        ),
    }
}

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

/// The router serving the repository at `dir`, and `POST /join` when a
/// join service is given.
pub fn router_with_join(dir: PathBuf, joins: Option<Arc<JoinService>>) -> Router {
    let files = router(dir);
    match joins {
        None => files,
        Some(service) => files.route(
            "/join",
            post(move |body: Bytes| join(Arc::clone(&service), body))
                .layer(DefaultBodyLimit::max(MAX_JOIN_BODY)),
        ),
    }
}

/// The router serving the repository at `dir` (read-only).
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
    serve_with_join(listener, dir, None, shutdown).await
}

/// [`serve`], also admitting join requests when `joins` is given.
pub async fn serve_with_join(
    listener: TcpListener,
    dir: PathBuf,
    joins: Option<Arc<JoinService>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router_with_join(dir, joins))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses() {
        use crate::model::{Violation, Violations};
        let join = |e| refusal_status(&RepoError::Join(e));
        assert_eq!(join(JoinError::BadNodeKey("not hex".into())), 400);
        assert_eq!(join(JoinError::UnknownOperator("op".into())), 403);
        assert_eq!(join(JoinError::BadOperatorSignature("op".into())), 403);
        assert_eq!(join(JoinError::BadNodeSignature), 403);
        assert_eq!(
            join(JoinError::Refused(ProposalError::AllowanceExceeded {
                operator: "op".into(),
                allowance: 0
            })),
            403
        );
        assert_eq!(
            join(JoinError::Refused(ProposalError::NodeExists("n".into()))),
            409
        );
        let taken = Violations(vec![Violation::new("nodes.n.ipv6", "address in use")]);
        assert_eq!(join(JoinError::Refused(ProposalError::Invalid(taken))), 409);
        assert_eq!(refusal_status(&RepoError::Usage("x".into())), 500);
    }

    #[test]
    fn only_flat_names_are_served() {
        assert!(safe_name("1.root.json"));
        assert!(safe_name("ab12.registry.json"));
        for bad in ["", "..", ".hidden", "a/b", "a%2fb", "online.pem\0"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
