//! Why a request failed: the error causes, their status codes and bodies.
//!
//! Two levels, as in ic-boundary: an [`ErrorCause`] says precisely what went
//! wrong (it labels metrics and logs, e.g. `replica_error_connect`), and its
//! [`ClientError`] is what the client sees in the `x-ic-error-cause` header,
//! the status code and the plain-text body `error: <cause>\ndetails: <text>`
//! (e.g. `replica_error`, 503).

use http::StatusCode;

/// Which rate limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitCause {
    /// The per-IP or per-subnet limit on update calls.
    Normal,
}

/// What went wrong with a request, precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCause {
    /// The client sent the body too slowly.
    BodyTimedOut,
    /// Reading the body failed.
    UnableToReadBody(String),
    /// The body is larger than the limit (in bytes).
    PayloadTooLarge(usize),
    /// The CBOR envelope or its `content` could not be decoded.
    UnableToParseCbor(String),
    /// A malformed request: bad principal in the URL, bad `x-request-id`.
    MalformedRequest(String),
    /// No routing table has been loaded yet.
    NoRoutingTable,
    /// The subnet in the URL is not in the routing table.
    SubnetNotFound,
    /// The canister in the URL is in no range of the routing table.
    CanisterNotFound,
    /// The subnet has no healthy replica.
    NoHealthyNodes,
    /// Connecting to the replica failed.
    ReplicaErrorConnect,
    /// The replica did not answer in time.
    ReplicaTimeout,
    /// Any other error talking to the replica.
    ReplicaErrorOther(String),
    /// A rate limit refused the request.
    RateLimited(RateLimitCause),
    /// A bug or an unexpected state.
    Other(String),
}

impl ErrorCause {
    /// The precise name, used as the `error_cause` metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BodyTimedOut => "body_timed_out",
            Self::UnableToReadBody(_) => "unable_to_read_body",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnableToParseCbor(_) => "unable_to_parse_cbor",
            Self::MalformedRequest(_) => "malformed_request",
            Self::NoRoutingTable => "no_routing_table",
            Self::SubnetNotFound => "subnet_not_found",
            Self::CanisterNotFound => "canister_not_found",
            Self::NoHealthyNodes => "no_healthy_nodes",
            Self::ReplicaErrorConnect => "replica_error_connect",
            Self::ReplicaTimeout => "replica_timeout",
            Self::ReplicaErrorOther(_) => "replica_error_other",
            Self::RateLimited(RateLimitCause::Normal) => "rate_limited_normal",
            Self::Other(_) => "internal_server_error",
        }
    }

    /// Whether another replica may be tried after this error.
    pub fn retriable(&self) -> bool {
        !matches!(self, Self::PayloadTooLarge(_))
    }

    /// What the client is told.
    pub fn client_error(&self) -> ClientError {
        match self {
            Self::BodyTimedOut => ClientError::BodyTimedOut,
            Self::UnableToReadBody(_) | Self::Other(_) => ClientError::Other,
            Self::PayloadTooLarge(n) => ClientError::PayloadTooLarge(*n),
            Self::UnableToParseCbor(x) => ClientError::UnableToParseCbor(x.clone()),
            Self::MalformedRequest(x) => ClientError::MalformedRequest(x.clone()),
            Self::NoRoutingTable => ClientError::ServiceUnavailable,
            Self::SubnetNotFound => ClientError::SubnetNotFound,
            Self::CanisterNotFound => ClientError::CanisterNotFound,
            Self::NoHealthyNodes => ClientError::NoHealthyNodes,
            Self::ReplicaErrorConnect | Self::ReplicaTimeout | Self::ReplicaErrorOther(_) => {
                ClientError::ReplicaError
            }
            Self::RateLimited(_) => ClientError::RateLimited,
        }
    }
}

/// The error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// 408 `body_timed_out`.
    BodyTimedOut,
    /// 400 `canister_not_found`.
    CanisterNotFound,
    /// 400 `malformed_request`.
    MalformedRequest(String),
    /// 503 `no_healthy_nodes`.
    NoHealthyNodes,
    /// 500 `internal_server_error`.
    Other,
    /// 413 `payload_too_large`.
    PayloadTooLarge(usize),
    /// 429 `rate_limited`.
    RateLimited,
    /// 503 `replica_error`.
    ReplicaError,
    /// 503 `service_unavailable` (no routing table yet).
    ServiceUnavailable,
    /// 400 `subnet_not_found`.
    SubnetNotFound,
    /// 400 `unable_to_parse_cbor`.
    UnableToParseCbor(String),
}

impl ClientError {
    /// The `x-ic-error-cause` value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BodyTimedOut => "body_timed_out",
            Self::CanisterNotFound => "canister_not_found",
            Self::MalformedRequest(_) => "malformed_request",
            Self::NoHealthyNodes => "no_healthy_nodes",
            Self::Other => "internal_server_error",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::ReplicaError => "replica_error",
            Self::ServiceUnavailable => "service_unavailable",
            Self::SubnetNotFound => "subnet_not_found",
            Self::UnableToParseCbor(_) => "unable_to_parse_cbor",
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::CanisterNotFound
            | Self::MalformedRequest(_)
            | Self::SubnetNotFound
            | Self::UnableToParseCbor(_) => StatusCode::BAD_REQUEST,
            Self::NoHealthyNodes | Self::ReplicaError | Self::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Other => StatusCode::INTERNAL_SERVER_ERROR,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The human-readable details line.
    pub fn details(&self) -> String {
        match self {
            Self::BodyTimedOut => {
                "reading the request body timed out: data arrived too slowly".into()
            }
            Self::CanisterNotFound => "the canister is in no range of the routing table".into(),
            Self::MalformedRequest(x) => x.clone(),
            Self::NoHealthyNodes => {
                "no healthy replica of the subnet is available right now; try again later".into()
            }
            Self::Other => "internal server error".into(),
            Self::PayloadTooLarge(n) => format!("the body is too large: at most {n} bytes"),
            Self::RateLimited => "rate limit exceeded; slow down and try again later".into(),
            Self::ReplicaError => {
                "the replica could not be reached or failed to answer; try again later".into()
            }
            Self::ServiceUnavailable => {
                "the boundary node has no routing table yet; try again later".into()
            }
            Self::SubnetNotFound => "the subnet is not in the routing table".into(),
            Self::UnableToParseCbor(x) => format!("the CBOR request body could not be parsed: {x}"),
        }
    }

    /// The plain-text response body.
    pub fn body(&self) -> String {
        format!("error: {}\ndetails: {}", self.name(), self.details())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_ic_boundary_status_codes() {
        let cases = [
            (ErrorCause::BodyTimedOut, 408, "body_timed_out"),
            (ErrorCause::PayloadTooLarge(4), 413, "payload_too_large"),
            (
                ErrorCause::UnableToParseCbor("x".into()),
                400,
                "unable_to_parse_cbor",
            ),
            (
                ErrorCause::MalformedRequest("x".into()),
                400,
                "malformed_request",
            ),
            (ErrorCause::CanisterNotFound, 400, "canister_not_found"),
            (ErrorCause::SubnetNotFound, 400, "subnet_not_found"),
            (ErrorCause::NoRoutingTable, 503, "service_unavailable"),
            (ErrorCause::NoHealthyNodes, 503, "no_healthy_nodes"),
            (ErrorCause::ReplicaErrorConnect, 503, "replica_error"),
            (ErrorCause::ReplicaTimeout, 503, "replica_error"),
            (
                ErrorCause::RateLimited(RateLimitCause::Normal),
                429,
                "rate_limited",
            ),
            (ErrorCause::Other("x".into()), 500, "internal_server_error"),
        ];
        for (cause, status, name) in cases {
            let client = cause.client_error();
            assert_eq!(client.status().as_u16(), status, "{cause:?}");
            assert_eq!(client.name(), name, "{cause:?}");
            assert!(
                client
                    .body()
                    .starts_with(&format!("error: {name}\ndetails: "))
            );
        }
        assert!(!ErrorCause::PayloadTooLarge(1).retriable());
        assert!(ErrorCause::ReplicaErrorConnect.retriable());
        assert_eq!(
            ErrorCause::RateLimited(RateLimitCause::Normal).name(),
            "rate_limited_normal"
        );
    }
}
