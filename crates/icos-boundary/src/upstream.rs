//! The HTTP client that talks to replicas.
//!
//! Requests go to `<node url><path>` over HTTP/1.1 with pooled keep-alive
//! connections. Responses are read whole, up to a size limit, so that the
//! retry decision, the cache and the metrics see the complete reply.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::errors::ErrorCause;
use crate::routing::Node;

/// The largest replica response read, in bytes.
pub const MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

/// A replica's complete response.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its headers, hop-by-hop ones removed.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// The pooled client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Headers that concern one connection only and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and `Content-Length` (recomputed on send).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
}

impl Upstream {
    /// A client whose connection attempts give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream { client }
    }

    /// Sends one request to `node` and reads the whole response within
    /// `timeout`.
    pub async fn send(
        &self,
        node: &Node,
        method: Method,
        path_and_query: PathAndQuery,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<UpstreamResponse, ErrorCause> {
        let uri = node_uri(&node.url, path_and_query)?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| ErrorCause::Other(format!("building the replica request: {e}")))?;
        let mut forwarded = headers.clone();
        strip_hop_by_hop(&mut forwarded);
        forwarded.remove(header::HOST);
        *request.headers_mut() = forwarded;

        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ErrorCause::ReplicaErrorConnect
                } else {
                    ErrorCause::ReplicaErrorOther(e.to_string())
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_SIZE)
                .collect()
                .await
                .map_err(|e| ErrorCause::ReplicaErrorOther(format!("reading the reply: {e}")))?
                .to_bytes();
            let mut headers = parts.headers;
            strip_hop_by_hop(&mut headers);
            Ok(UpstreamResponse {
                status: parts.status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ErrorCause::ReplicaTimeout)?
    }
}

fn node_uri(base: &Uri, path_and_query: PathAndQuery) -> Result<Uri, ErrorCause> {
    let authority = base
        .authority()
        .ok_or_else(|| ErrorCause::Other(format!("node URL {base} has no host")))?;
    Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ErrorCause::Other(format!("building the replica URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_uris_keep_host_and_port() {
        let base: Uri = "http://[::1]:8080".parse().unwrap();
        assert_eq!(
            node_uri(
                &base,
                PathAndQuery::from_static("/api/v3/canister/aaaaa-aa/query")
            )
            .unwrap()
            .to_string(),
            "http://[::1]:8080/api/v3/canister/aaaaa-aa/query"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/cbor".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
