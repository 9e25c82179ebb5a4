//! The request pipeline of proxied routes, and the local status routes.
//!
//! For each `POST /api/vN/{canister,subnet}/<id>/<method>`:
//!
//! 1. check `x-request-id` (a hyphenated UUID when present; generated when
//!    absent) and parse the principal in the path (400 `malformed_request`);
//! 2. read the body within the size limit (413) and the read timeout (408);
//! 3. decode the envelope's `content` (400 `unable_to_parse_cbor`);
//! 4. find the subnet (503 without a table, 400 `canister_not_found` or
//!    `subnet_not_found`);
//! 5. apply the per-subnet and per-IP limits to update calls (429);
//! 6. answer cacheable queries from the cache;
//! 7. pick replicas and forward the unchanged body, retrying on another
//!    replica by the rules of [`crate::retry`];
//! 8. set the diagnostic headers and record metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::cache::{CacheKey, CacheStatus, CachedReply, QueryCache, bypass_reason};
use crate::envelope::{Content, decode_content};
use crate::errors::{ErrorCause, RateLimitCause};
use crate::headers::{
    X_IC_CACHE_BYPASS_REASON, X_IC_CACHE_STATUS, X_IC_CANISTER_ID, X_IC_CANISTER_ID_CBOR,
    X_IC_ERROR_CAUSE, X_IC_METHOD_NAME, X_IC_NODE_ID, X_IC_REQUEST_TYPE, X_IC_RETRIES, X_IC_SENDER,
    X_IC_SUBNET_ID, X_REQUEST_ID, is_hyphenated_uuid, new_request_id,
};
use crate::health::{HealthConfig, HealthView};
use crate::metrics::{HttpLabels, Metrics, StatusLabels, SubnetLabel, gauge_value};
use crate::principal::{Principal, parse_principal};
use crate::ratelimit::KeyedLimiter;
use crate::retry::{RetryPolicy, needs_retry};
use crate::routes::{RequestType, Target, path_id};
use crate::routing::TableHandle;
use crate::select::{fault_tolerance, pick_closest, pick_random};
use crate::status::{HealthStatus, encode_status};
use crate::upstream::{Upstream, UpstreamResponse};
use crate::warn_limited;

/// The client's address, put into each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Settings of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ProxyConfig {
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Time allowed to receive the body (408 after).
    pub body_timeout: Duration,
    /// Time allowed for one replica to answer.
    pub upstream_timeout: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Whether update calls go to the f+1 lowest-latency replicas.
    pub latency_routing: bool,
}

/// Everything the handlers share. Each serving thread has its own copy,
/// differing only in the replica client (its own connection pool); the
/// rest is shared.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The published routing table.
    pub table: Arc<TableHandle>,
    /// The published routable replicas.
    pub health: Arc<ArcSwap<HealthView>>,
    /// Health thresholds (for the aggregate health).
    pub health_cfg: HealthConfig,
    /// The replica client of this serving thread.
    pub upstream: Upstream,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Pipeline settings.
    pub cfg: ProxyConfig,
    /// Per-IP limit on update calls.
    pub ip_limiter: Option<Arc<KeyedLimiter<IpAddr>>>,
    /// Per-subnet limit on update calls.
    pub subnet_limiter: Option<Arc<KeyedLimiter<Principal>>>,
    /// The query cache.
    pub cache: Option<Arc<QueryCache>>,
}

/// What is known about a request as it moves through the pipeline.
#[derive(Debug)]
struct Ctx {
    request_type: RequestType,
    request_id: String,
    canister_id: Option<Principal>,
    subnet_id: Option<Principal>,
    node_id: Option<Principal>,
    content: Option<Content>,
    cache: CacheStatus,
    retries: usize,
    request_size: usize,
}

/// A reply to send back: from a replica or from the cache.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl From<UpstreamResponse> for Reply {
    fn from(r: UpstreamResponse) -> Self {
        Reply {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// Handles one proxied request.
pub async fn proxy(
    State(state): State<Arc<AppState>>,
    request_type: RequestType,
    request: Request<Body>,
) -> Response {
    let started = Instant::now();
    let mut ctx = Ctx {
        request_type,
        request_id: new_request_id(&mut fastrand::Rng::new()),
        canister_id: None,
        subnet_id: None,
        node_id: None,
        content: None,
        cache: if state.cache.is_some() {
            CacheStatus::Miss
        } else {
            CacheStatus::Disabled
        },
        retries: 0,
        request_size: 0,
    };
    let result = process(&state, &mut ctx, request).await;
    let (response, cause) = finish(&ctx, result);
    record(
        &state.metrics,
        &ctx,
        &response,
        cause.as_ref(),
        started.elapsed(),
    );
    response
}

async fn process(
    state: &AppState,
    ctx: &mut Ctx,
    request: Request<Body>,
) -> Result<Reply, ErrorCause> {
    let (parts, body) = request.into_parts();
    if let Some(value) = parts.headers.get(X_REQUEST_ID) {
        match value.to_str() {
            Ok(id) if is_hyphenated_uuid(id) => ctx.request_id = id.to_owned(),
            _ => {
                return Err(ErrorCause::MalformedRequest(
                    "x-request-id must be a hyphenated UUID".into(),
                ));
            }
        }
    }
    let target = ctx.request_type.target();
    let what = match target {
        Target::Canister => "canister_id",
        Target::Subnet => "subnet_id",
    };
    let id = parse_principal(path_id(parts.uri.path()).unwrap_or_default()).map_err(|e| {
        ErrorCause::MalformedRequest(format!("unable to decode {what} from URL: {e}"))
    })?;
    match target {
        Target::Canister => ctx.canister_id = Some(id),
        Target::Subnet => ctx.subnet_id = Some(id),
    }

    let body = read_body(body, &parts.headers, &state.cfg).await?;
    ctx.request_size = body.len();
    let content =
        decode_content(&body).map_err(|e| ErrorCause::UnableToParseCbor(e.to_string()))?;
    ctx.content = Some(content);

    let table = state.table.load().ok_or(ErrorCause::NoRoutingTable)?;
    let subnet = match target {
        Target::Canister => table
            .lookup_canister(&id)
            .ok_or(ErrorCause::CanisterNotFound)?,
        Target::Subnet => table.subnet(&id).ok_or(ErrorCause::SubnetNotFound)?,
    };
    ctx.subnet_id = Some(subnet.id);

    if ctx.request_type.is_call() {
        let subnet_ok = state
            .subnet_limiter
            .as_ref()
            .is_none_or(|l| l.check(&subnet.id));
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .map(|p| p.0.ip().to_canonical());
        let ip_ok = match (&state.ip_limiter, peer) {
            (Some(l), Some(ip)) => l.check(&ip),
            _ => true,
        };
        if !(subnet_ok && ip_ok) {
            return Err(ErrorCause::RateLimited(RateLimitCause::Normal));
        }
    }

    let cache_key = match (&state.cache, ctx.content.as_ref()) {
        (Some(cache), Some(content)) => {
            match bypass_reason(
                ctx.request_type,
                content,
                cache.config().cache_non_anonymous,
            ) {
                Some(reason) => {
                    ctx.cache = CacheStatus::Bypass(reason);
                    None
                }
                None => {
                    let key = CacheKey::new(id, content);
                    if let Some(hit) = cache.get(&key, Instant::now()) {
                        ctx.cache = CacheStatus::Hit;
                        ctx.node_id = Some(hit.node_id);
                        return Ok(Reply {
                            status: hit.status,
                            headers: hit.headers,
                            body: hit.body,
                        });
                    }
                    Some(key)
                }
            }
        }
        _ => None,
    };

    let view = state.health.load();
    let healthy = view.healthy(&subnet.id);
    if healthy.is_empty() {
        return Err(ErrorCause::NoHealthyNodes);
    }
    let attempts = state.cfg.retry.attempts(ctx.request_type);
    let mut rng = fastrand::Rng::new();
    let nodes = if ctx.request_type.is_call() && state.cfg.latency_routing {
        pick_closest(
            healthy,
            attempts,
            fault_tolerance(healthy.len()) + 1,
            &mut rng,
        )
    } else {
        pick_random(healthy, attempts, &mut rng)
    };

    let path = match parts.uri.path_and_query() {
        Some(p) => p.clone(),
        None => PathAndQuery::try_from(parts.uri.path())
            .map_err(|e| ErrorCause::MalformedRequest(format!("bad path: {e}")))?,
    };
    let mut last = Err(ErrorCause::NoHealthyNodes);
    for (i, node) in nodes.iter().enumerate() {
        ctx.node_id = Some(node.id);
        ctx.retries = i;
        last = state
            .upstream
            .send(
                node,
                Method::POST,
                path.clone(),
                &parts.headers,
                body.clone(),
                state.cfg.upstream_timeout,
            )
            .await;
        let outcome = last.as_ref().map(|r| r.status).map_err(Clone::clone);
        if !needs_retry(&outcome) {
            break;
        }
        if let Err(cause) = &outcome {
            warn_limited!(node = %node.id, subnet = %subnet.id, cause = cause.name(), "replica request failed");
        }
    }
    let reply = last?;

    if let (Some(cache), Some(key), Some(node_id)) = (&state.cache, cache_key, ctx.node_id) {
        let stored = cache.insert(
            key,
            CachedReply {
                status: reply.status,
                headers: reply.headers.clone(),
                body: reply.body.clone(),
                node_id,
            },
            Instant::now(),
        );
        if stored {
            let (items, size) = cache.usage();
            state.metrics.cache_items.set(gauge_value(items));
            state.metrics.cache_size.set(gauge_value(size));
        }
    }
    Ok(reply.into())
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    cfg: &ProxyConfig,
) -> Result<Bytes, ErrorCause> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > cfg.max_body as u64) {
        // A client still sending would get its connection reset instead of
        // the answer if it were closed with the body unread: read and drop
        // bodies of up to twice the limit first.
        if n <= 2 * cfg.max_body as u64 {
            let _ = tokio::time::timeout(cfg.body_timeout, discard(body)).await;
        }
        return Err(ErrorCause::PayloadTooLarge(cfg.max_body));
    }
    let collect = Limited::new(body, cfg.max_body).collect();
    match tokio::time::timeout(cfg.body_timeout, collect).await {
        Err(_) => Err(ErrorCause::BodyTimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ErrorCause::PayloadTooLarge(cfg.max_body)),
        Ok(Err(e)) => Err(ErrorCause::UnableToReadBody(e.to_string())),
    }
}

/// Reads `body` to its end, keeping nothing.
async fn discard(mut body: Body) {
    while let Some(Ok(_)) = body.frame().await {}
}

fn set(headers: &mut HeaderMap, name: http::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Like [`set`], for names and words of the router's own: no copy.
fn set_static(headers: &mut HeaderMap, name: http::HeaderName, value: &'static str) {
    headers.insert(name, HeaderValue::from_static(value));
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// How many headers [`finish`] may add to a reply.
const DIAGNOSTIC_HEADERS: usize = 15;

fn finish(ctx: &Ctx, result: Result<Reply, ErrorCause>) -> (Response, Option<ErrorCause>) {
    let (mut response, cause) = match result {
        Ok(reply) => {
            let mut response = Response::new(Body::from(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            // Room for the diagnostic headers below, in one allocation.
            response.headers_mut().reserve(DIAGNOSTIC_HEADERS);
            if reply.status.is_success() {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/cbor"),
                );
            }
            (response, None)
        }
        Err(cause) => {
            let client = cause.client_error();
            let mut response = (client.status(), client.body()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            set_static(response.headers_mut(), X_IC_ERROR_CAUSE, client.name());
            (response, Some(cause))
        }
    };
    let h = response.headers_mut();
    security_headers(h);
    if cause.is_none() {
        set_static(h, X_IC_ERROR_CAUSE, "none");
    }
    set(h, X_REQUEST_ID, &ctx.request_id);
    set_static(h, X_IC_REQUEST_TYPE, ctx.request_type.as_str());
    set_static(h, X_IC_CACHE_STATUS, ctx.cache.as_str());
    if let CacheStatus::Bypass(reason) = ctx.cache {
        set_static(h, X_IC_CACHE_BYPASS_REASON, reason.as_str());
    }
    if let Some(id) = ctx.canister_id {
        set(h, X_IC_CANISTER_ID, &id.to_text());
    }
    if let Some(id) = ctx.subnet_id {
        set(h, X_IC_SUBNET_ID, &id.to_text());
    }
    if let Some(id) = ctx.node_id {
        set(h, X_IC_NODE_ID, &id.to_text());
    }
    if ctx.retries > 0 {
        set(h, X_IC_RETRIES, &ctx.retries.to_string());
    }
    if let Some(content) = &ctx.content {
        if let Some(sender) = content.sender {
            set(h, X_IC_SENDER, &sender.to_text());
        }
        if let Some(id) = content.canister_id {
            set(h, X_IC_CANISTER_ID_CBOR, &id.to_text());
        }
        if let Some(method) = &content.method_name {
            set(h, X_IC_METHOD_NAME, method);
        }
    }
    (response, cause)
}

#[allow(clippy::cast_precision_loss)]
fn record(
    metrics: &Metrics,
    ctx: &Ctx,
    response: &Response,
    cause: Option<&ErrorCause>,
    elapsed: Duration,
) {
    let labels = HttpLabels {
        request_type: ctx.request_type.as_str(),
        status_code: response.status().as_u16(),
        subnet_id: SubnetLabel(ctx.subnet_id),
        error_cause: cause.map_or("none", ErrorCause::name),
        cache_status: ctx.cache.as_str(),
        cache_bypass: match ctx.cache {
            CacheStatus::Bypass(r) => r.as_str(),
            _ => "none",
        },
        retry: ctx.retries,
    };
    let response_size = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    metrics
        .http_request_size
        .get_or_create(&labels)
        .observe(ctx.request_size as f64);
    metrics
        .http_response_size
        .get_or_create(&labels)
        .observe(response_size as f64);
    match cause {
        Some(
            c @ (ErrorCause::Other(_)
            | ErrorCause::NoHealthyNodes
            | ErrorCause::ReplicaErrorConnect
            | ErrorCause::ReplicaTimeout
            | ErrorCause::ReplicaErrorOther(_)),
        ) => {
            warn_limited!(
                request_id = %ctx.request_id,
                request_type = ctx.request_type.as_str(),
                subnet = ?ctx.subnet_id.map(|s| s.to_string()),
                cause = c.name(),
                details = ?c,
                "request failed"
            );
        }
        _ => tracing::debug!(
            request_id = %ctx.request_id,
            request_type = ctx.request_type.as_str(),
            status = response.status().as_u16(),
            cause = cause.map_or("none", ErrorCause::name),
            node = ?ctx.node_id.map(|n| n.to_string()),
            retries = ctx.retries,
            duration_ms = elapsed.as_millis(),
            "request"
        ),
    }
}

/// `GET /api/v2/status`: the router's own status document.
pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let table = state.table.load();
    let health = state
        .health
        .load()
        .overall(table.is_some(), &state.health_cfg);
    state
        .metrics
        .status_requests
        .get_or_create(&StatusLabels {
            health: health.as_str().into(),
        })
        .inc();
    let body = encode_status(table.as_ref().and_then(|t| t.root_key()), health);
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/cbor"),
    );
    security_headers(h);
    set_static(h, X_IC_REQUEST_TYPE, RequestType::Status.as_str());
    set_static(h, X_IC_ERROR_CAUSE, "none");
    response
}

/// `GET /health`: 204 when healthy, 503 otherwise.
pub async fn health(State(state): State<Arc<AppState>>) -> StatusCode {
    let has_table = state.table.load().is_some();
    match state.health.load().overall(has_table, &state.health_cfg) {
        HealthStatus::Healthy => StatusCode::NO_CONTENT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
