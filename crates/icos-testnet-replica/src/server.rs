//! The HTTP endpoints.
//!
//! | route | handler |
//! |-------|---------|
//! | `GET /api/v2/status` | [`Replica::status`] |
//! | `POST /api/v2\|v3/canister/<id>/query` | [`Replica::query`] |
//! | `POST /api/v2/canister/<id>/call` | [`Replica::call`], asynchronous (202) |
//! | `POST /api/v3\|v4/canister/<id>/call` | [`Replica::call`], synchronous (certified reply) |
//! | `POST /api/v2\|v3/canister/<id>/read_state` | [`Replica::read_state`] |
//! | `POST /api/v2\|v3/subnet/<id>/read_state` | [`Replica::read_subnet_state`] |
//! | `POST /api/v3/subnet/<id>/query`, `/api/v4/subnet/<id>/call` | management canister only: rejected |
//!
//! Errors have a plain-text body; see [`crate::replica::RequestError`].

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use candid::Principal;
use tokio::net::TcpListener;

use crate::replica::{CallReply, Replica, RequestError};

/// The largest request body accepted: 5 MiB (413 above).
pub const MAX_BODY: usize = 5 * 1024 * 1024;

fn text(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

fn cbor(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cbor"),
        )],
        body,
    )
        .into_response()
}

fn error(e: &RequestError) -> Response {
    tracing::debug!(status = e.status(), error = %e, "request refused");
    text(e.status(), e.to_string())
}

fn principal(s: &str) -> Result<Principal, String> {
    Principal::from_text(s).map_err(|e| format!("Invalid principal '{s}' in the URL: {e}"))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/cbor"))
        });
    if ok {
        Ok(())
    } else {
        Err("Unexpected content-type, expected application/cbor".into())
    }
}

type Shared = State<Arc<Replica>>;

async fn status(State(r): Shared) -> Response {
    cbor(StatusCode::OK, r.status())
}

async fn query(State(r): Shared, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    run(h, &id, move |p| {
        r.query(&p, &body).map(|b| cbor(StatusCode::OK, b))
    })
    .await
}

async fn call_async(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| r.call(&p, &body, false).map(call_reply)).await
}

async fn call_sync(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| r.call(&p, &body, true).map(call_reply)).await
}

async fn read_state(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| {
        r.read_state(&p, &body).map(|b| cbor(StatusCode::OK, b))
    })
    .await
}

async fn read_subnet_state(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| {
        r.read_subnet_state(&p, &body)
            .map(|b| cbor(StatusCode::OK, b))
    })
    .await
}

async fn subnet_query(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| {
        r.subnet_query(&p, &body).map(|b| cbor(StatusCode::OK, b))
    })
    .await
}

async fn subnet_call(
    State(r): Shared,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    run(h, &id, move |p| r.subnet_call(&p, &body).map(call_reply)).await
}

fn call_reply(c: CallReply) -> Response {
    match c {
        CallReply::Accepted => StatusCode::ACCEPTED.into_response(),
        CallReply::Cbor(b) => cbor(StatusCode::OK, b),
    }
}

/// Checks the content type and the principal, then runs `f` off the async
/// workers (signing and hashing are CPU work).
async fn run<F>(headers: HeaderMap, id: &str, f: F) -> Response
where
    F: FnOnce(Principal) -> Result<Response, RequestError> + Send + 'static,
{
    if let Err(e) = check_content_type(&headers) {
        return text(400, e);
    }
    let p = match principal(id) {
        Ok(p) => p,
        Err(e) => return text(400, e),
    };
    match tokio::task::spawn_blocking(move || f(p)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error(&e),
        Err(e) => text(500, format!("internal error: {e}")),
    }
}

async fn not_found() -> Response {
    text(404, "Not found".into())
}

/// The router of all endpoints.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/api/v2/status", get(status))
        .route("/api/v2/canister/{id}/query", post(query))
        .route("/api/v3/canister/{id}/query", post(query))
        .route("/api/v2/canister/{id}/call", post(call_async))
        .route("/api/v3/canister/{id}/call", post(call_sync))
        .route("/api/v4/canister/{id}/call", post(call_sync))
        .route("/api/v2/canister/{id}/read_state", post(read_state))
        .route("/api/v3/canister/{id}/read_state", post(read_state))
        .route("/api/v2/subnet/{id}/read_state", post(read_subnet_state))
        .route("/api/v3/subnet/{id}/read_state", post(read_subnet_state))
        .route("/api/v3/subnet/{id}/query", post(subnet_query))
        .route("/api/v4/subnet/{id}/call", post(subnet_call))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(replica)
}

/// Serves `replica` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    replica: Arc<Replica>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(replica))
        .with_graceful_shutdown(shutdown)
        .await
}
