//! `/api/...` and `/health` are not canister pages: like ic-gateway, the
//! gateway forwards them to its upstream IC API endpoint (the router)
//! unchanged, for any host, so one public address serves both browsers and
//! agents.
//!
//! The method, path, query, headers (less the hop-by-hop ones) and body go
//! upstream as they came; the answer comes back as the upstream gave it,
//! streamed in both directions. An unreachable upstream is 502
//! `upstream_error`, a slow one 504 `timeout`, a body over the request limit
//! 413 `payload_too_large`.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures_util::TryStreamExt;
use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Request, StatusCode};
use http_body_util::Limited;

/// Whether `path` is forwarded to the upstream rather than resolved to a
/// canister.
pub fn is_api_path(path: &str) -> bool {
    path == "/health"
        || ["/api/v2/", "/api/v3/", "/api/v4/"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// Why a forwarded request failed, as the gateway reports it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream could not be reached or broke off.
    #[error("upstream {url}: {source}")]
    Upstream {
        /// The upstream URL of the request.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The declared body is over the limit; nothing was sent upstream.
    #[error("the request body of {length} bytes exceeds {limit} bytes")]
    TooLarge {
        /// The declared `Content-Length`.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// No answer in time.
    #[error("upstream {url} did not answer within {timeout:?}")]
    Timeout {
        /// The upstream URL of the request.
        url: String,
        /// The limit.
        timeout: Duration,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-ic-error-cause` value.
    pub fn cause(&self) -> &'static str {
        match self {
            ProxyError::Upstream { .. } => "upstream_error",
            ProxyError::TooLarge { .. } => "payload_too_large",
            ProxyError::Timeout { .. } => "timeout",
        }
    }
}

const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, HOST] {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Forwards `req` to `upstream` (a base URL such as `http://127.0.0.1:8080`).
pub async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    req: Request<Body>,
    max_request_body: usize,
    timeout: Duration,
) -> Result<Response, ProxyError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > max_request_body as u64) {
        return Err(ProxyError::TooLarge {
            length,
            limit: max_request_body,
        });
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", upstream.trim_end_matches('/'));
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // A chunked body that grows over the limit ends the upload with an
    // error, which the upstream sees as a broken request.
    let body = Limited::new(body, max_request_body);
    let stream = http_body_util::BodyDataStream::new(body);
    let sent = client
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let upstream_response = match tokio::time::timeout(timeout, sent).await {
        Err(_) => return Err(ProxyError::Timeout { url, timeout }),
        Ok(Err(source)) => return Err(ProxyError::Upstream { url, source }),
        Ok(Ok(r)) => r,
    };
    let mut response = Response::builder().status(upstream_response.status());
    let mut headers = upstream_response.headers().clone();
    strip_hop_by_hop(&mut headers);
    if let Some(h) = response.headers_mut() {
        *h = headers;
    }
    let stream = upstream_response
        .bytes_stream()
        .map_err(std::io::Error::other);
    Ok(response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        for p in [
            "/api/v2/status",
            "/api/v2/canister/aaaaa-aa/query",
            "/api/v3/canister/x/call",
            "/api/v4/subnet/x/read_state",
            "/health",
        ] {
            assert!(is_api_path(p), "{p}");
        }
        for p in [
            "/",
            "/api",
            "/api/v1/status",
            "/apiv2/",
            "/index.html",
            "/health/x",
        ] {
            assert!(!is_api_path(p), "{p}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(HOST, "example.org".parse().unwrap());
        h.insert("content-type", "application/cbor".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }
}
