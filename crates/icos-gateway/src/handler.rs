//! The request pipeline: host → canister, denylist, body, `http_request`
//! (upgraded to `http_request_update` when asked), streaming, response
//! verification, answer.
//!
//! Errors are plain text, `error: <cause>\ndetails: <text>\n`, with the
//! cause also in `x-ic-error-cause`:
//!
//! | status | cause | when |
//! |--------|-------|------|
//! | 400 | `unknown_domain` | the host is not under a served domain |
//! | 400 | `canister_id_not_resolved` | no host, or no valid canister id before the domain |
//! | 404 | `canister_not_found` | the canister does not exist, or no subnet hosts it |
//! | 413 | `payload_too_large` | the request body is over the limit |
//! | 451 | `denylisted` | the canister is on the denylist |
//! | 502 | `canister_reject` | the canister rejected or trapped |
//! | 502 | `invalid_response` | the reply is not an `HttpResponse`, or too large |
//! | 502 | `upstream_error` | the API endpoint failed or cannot be reached |
//! | 503 | `response_verification_failed` | the certification does not hold |
//! | 504 | `timeout` | no answer within the request timeout |

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use candid::Principal;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ic_agent::AgentError;
use serde_bytes::ByteBuf;

use crate::canister::{CallError, CanisterClient, HttpRequest, HttpResponse, HttpUpdateRequest};
use crate::denylist::Denylist;
use crate::domain::{DomainResolver, ResolveError};
use crate::metrics::Metrics;
use crate::verify::{self, ResponseParts, VerifyError};

/// The header telling how the response was checked.
pub const VERIFICATION_HEADER: &str = "x-icos-verification";

/// Shared by all requests.
#[derive(Debug)]
pub(crate) struct AppState {
    pub resolver: DomainResolver,
    pub denylist: Arc<Denylist>,
    pub client: CanisterClient,
    pub metrics: Arc<Metrics>,
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub request_timeout: Duration,
    /// The IC API endpoint `/api/...` is forwarded to.
    pub upstream: String,
    pub api_client: reqwest::Client,
}

/// A refused or failed request.
#[derive(Debug)]
struct Fail {
    status: StatusCode,
    cause: &'static str,
    details: String,
}

impl Fail {
    fn new(status: StatusCode, cause: &'static str, details: impl Into<String>) -> Self {
        Fail {
            status,
            cause,
            details: details.into(),
        }
    }

    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(format!(
            "error: {}\ndetails: {}\n",
            self.cause, self.details
        )));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-ic-error-cause", HeaderValue::from_static(self.cause));
        r
    }
}

/// Serves one request.
pub(crate) async fn handle(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let start = Instant::now();
    let mut verification = "none";
    if crate::api_proxy::is_api_path(req.uri().path()) {
        let forwarded = crate::api_proxy::forward(
            &st.api_client,
            &st.upstream,
            req,
            st.max_request_body,
            st.request_timeout,
        )
        .await;
        let (response, cause) = match forwarded {
            Ok(r) => (r, "none"),
            Err(e) => {
                tracing::debug!(status = %e.status(), cause = e.cause(), "{e}");
                let f = Fail::new(e.status(), e.cause(), e.to_string());
                (f.into_response(), e.cause())
            }
        };
        st.metrics.request(
            response.status().as_u16(),
            cause,
            verification,
            start.elapsed().as_secs_f64(),
        );
        return response;
    }
    let (response, cause) = match serve(&st, req, &mut verification).await {
        Ok(r) => (r, "none"),
        Err(f) => {
            tracing::debug!(status = %f.status, cause = f.cause, "{}", f.details);
            let cause = f.cause;
            (f.into_response(), cause)
        }
    };
    st.metrics.request(
        response.status().as_u16(),
        cause,
        verification,
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn serve(
    st: &AppState,
    req: Request<Body>,
    verification: &mut &'static str,
) -> Result<Response, Fail> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let target = st.resolver.resolve(&authority).map_err(|e| {
        let cause = match e {
            ResolveError::UnknownDomain { .. } => "unknown_domain",
            _ => "canister_id_not_resolved",
        };
        Fail::new(StatusCode::BAD_REQUEST, cause, e.to_string())
    })?;
    let canister = target.canister_id;
    if st.denylist.contains(&canister) {
        return Err(Fail::new(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "denylisted",
            format!("canister {canister} is not served by this gateway"),
        ));
    }

    let (parts, body) = req.into_parts();
    let body = Limited::new(body, st.max_request_body)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Fail::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body exceeds {} bytes", st.max_request_body),
                )
            } else {
                Fail::new(StatusCode::BAD_REQUEST, "body_read_failed", e.to_string())
            }
        })?
        .to_bytes();
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    if !parts.headers.contains_key(HOST) {
        headers.push(("host".into(), authority));
    }
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        url: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        headers,
        body: ByteBuf::from(body.to_vec()),
        certificate_version: Some(u16::from(verify::REQUESTED_VERSION)),
    };

    let (response, body, upgraded) =
        tokio::time::timeout(st.request_timeout, fetch(st, canister, &request))
            .await
            .map_err(|_| {
                Fail::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("no answer within {:?}", st.request_timeout),
                )
            })?
            .map_err(call_fail)?;

    let mut status = response.status_code;
    let mut headers = response.headers;
    let mut body = body;
    if !target.verify {
        *verification = "skipped_raw";
    } else if upgraded {
        // The update reply is certified by the subnet; the agent checked it.
        *verification = "skipped_update";
    } else {
        let info = check(st, canister, &request, status, &headers, &body).await?;
        *verification = match (info.verification_version >= 2, &info.response) {
            // The canister certified that this response is not certified.
            (true, None) => "v2_skip",
            (true, Some(_)) => "v2",
            (false, _) => "v1",
        };
        // v2: only the certified headers (and IC-Certificate) are passed
        // on. v1 certifies the body alone; the headers stay as sent.
        if let Some(v) = info.response {
            if info.verification_version >= 2 {
                status = v.status_code.unwrap_or(status);
                headers = v.headers;
            }
            body = v.body;
        }
    }

    let status = StatusCode::from_u16(status).map_err(|_| {
        Fail::new(
            StatusCode::BAD_GATEWAY,
            "invalid_response",
            format!("the canister answered with status {status}"),
        )
    })?;
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    let h = out.headers_mut();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        if !is_hop_by_hop(&name) {
            h.append(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&canister.to_text()) {
        h.insert("x-ic-canister-id", v);
    }
    h.insert(VERIFICATION_HEADER, HeaderValue::from_static(verification));
    Ok(out)
}

/// The query, the upgrade and the rest of a streamed body.
async fn fetch(
    st: &AppState,
    canister: Principal,
    request: &HttpRequest,
) -> Result<(HttpResponse, Vec<u8>, bool), CallError> {
    let mut response = st.client.http_request(canister, request).await?;
    let mut upgraded = false;
    if response.upgrade == Some(true) {
        let update = HttpUpdateRequest {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        };
        response = st.client.http_request_update(canister, &update).await?;
        upgraded = true;
    }
    let mut body = std::mem::take(&mut response.body).into_vec();
    if body.len() > st.max_response_body {
        return Err(CallError::TooLarge(st.max_response_body));
    }
    if let Some(strategy) = response.streaming_strategy.take() {
        st.client
            .stream_rest(canister, strategy, &mut body, st.max_response_body)
            .await?;
    }
    Ok((response, body, upgraded))
}

/// Verifies v2, or v1 when the canister provably does not announce its
/// certificate versions.
async fn check(
    st: &AppState,
    canister: Principal,
    request: &HttpRequest,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<ic_response_verification::types::VerificationInfo, Fail> {
    let root_key = st
        .client
        .root_key()
        .await
        .map_err(|e| call_fail(CallError::Agent(e)))?;
    let parts = ResponseParts {
        status,
        headers,
        body,
    };
    let now = verify::now_ns();
    let result = match verify::verify_pair(
        request,
        parts,
        canister,
        &root_key,
        now,
        verify::REQUESTED_VERSION,
    ) {
        Err(e) if verify::is_version_mismatch(&e) => {
            let metadata = st.client.certificate_versions_metadata(canister).await;
            match verify::v1_allowed(&metadata) {
                Ok(()) => verify::verify_pair(request, parts, canister, &root_key, now, 1),
                Err(why) => Err(VerifyError::Downgrade(why)),
            }
        }
        r => r,
    };
    result.map_err(|e| {
        tracing::warn!(%canister, url = %request.url, "{e}");
        Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "response_verification_failed",
            e.to_string(),
        )
    })
}

fn call_fail(e: CallError) -> Fail {
    let details = e.to_string();
    let (status, cause) = match &e {
        CallError::Agent(
            AgentError::CertifiedReject { reject, .. }
            | AgentError::UncertifiedReject { reject, .. },
        ) => {
            if reject.error_code.as_deref() == Some("IC0301") {
                (StatusCode::NOT_FOUND, "canister_not_found")
            } else {
                (StatusCode::BAD_GATEWAY, "canister_reject")
            }
        }
        CallError::Agent(AgentError::HttpError(p)) => {
            let text = String::from_utf8_lossy(&p.content);
            if p.status == 400 && text.contains("canister_not_found") {
                (StatusCode::NOT_FOUND, "canister_not_found")
            } else {
                (StatusCode::BAD_GATEWAY, "upstream_error")
            }
        }
        CallError::Agent(AgentError::TimeoutWaitingForResponse()) => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        }
        CallError::Agent(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
        CallError::Candid(_)
        | CallError::TooLarge(_)
        | CallError::TooManyChunks(_)
        | CallError::ForeignCallback(_) => (StatusCode::BAD_GATEWAY, "invalid_response"),
    };
    Fail::new(status, cause, details)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}
