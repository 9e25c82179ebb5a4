//! When a request is tried again on another replica.
//!
//! As in ic-boundary: a request is retried after a 429, after a 5xx, and
//! after a replica error (connect, timeout, other) unless its cause forbids
//! it (`payload_too_large`); never after any other 4xx. Update calls are not
//! retried unless enabled, since a replica may have accepted them. Each try
//! goes to a different replica, up to `1 + count` tries.

use http::StatusCode;

use crate::errors::ErrorCause;
use crate::routes::RequestType;

/// Default number of retries.
pub const DEFAULT_RETRY_COUNT: usize = 2;

/// The retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (0 to 10).
    pub count: usize,
    /// Whether update calls are retried too.
    pub retry_update_calls: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            count: DEFAULT_RETRY_COUNT,
            retry_update_calls: false,
        }
    }
}

impl RetryPolicy {
    /// How many replicas to try at most for a request of this type.
    pub fn attempts(&self, request_type: RequestType) -> usize {
        if request_type.is_call() && !self.retry_update_calls {
            1
        } else {
            1 + self.count
        }
    }
}

/// Whether the outcome of one try calls for another.
pub fn needs_retry(outcome: &Result<StatusCode, ErrorCause>) -> bool {
    match outcome {
        Ok(status) if *status == StatusCode::TOO_MANY_REQUESTS => true,
        Ok(status) => status.is_server_error(),
        Err(cause) => cause.retriable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_rules() {
        assert!(needs_retry(&Ok(StatusCode::TOO_MANY_REQUESTS)));
        assert!(needs_retry(&Ok(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(needs_retry(&Ok(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!needs_retry(&Ok(StatusCode::OK)));
        assert!(!needs_retry(&Ok(StatusCode::ACCEPTED)));
        assert!(!needs_retry(&Ok(StatusCode::BAD_REQUEST)));
        assert!(!needs_retry(&Ok(StatusCode::FORBIDDEN)));
        assert!(!needs_retry(&Ok(StatusCode::NOT_FOUND)));
        assert!(needs_retry(&Err(ErrorCause::ReplicaErrorConnect)));
        assert!(needs_retry(&Err(ErrorCause::ReplicaTimeout)));
        assert!(needs_retry(&Err(ErrorCause::ReplicaErrorOther("x".into()))));
        assert!(!needs_retry(&Err(ErrorCause::PayloadTooLarge(1))));
    }

    #[test]
    fn calls_are_not_retried_by_default() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts(RequestType::QueryV3), 3);
        assert_eq!(p.attempts(RequestType::ReadStateV2), 3);
        assert_eq!(p.attempts(RequestType::ReadStateSubnetV3), 3);
        assert_eq!(p.attempts(RequestType::CallV2), 1);
        assert_eq!(p.attempts(RequestType::CallV4), 1);
        let p = RetryPolicy {
            count: 1,
            retry_update_calls: true,
        };
        assert_eq!(p.attempts(RequestType::CallV3), 2);
        let p = RetryPolicy {
            count: 0,
            retry_update_calls: false,
        };
        assert_eq!(p.attempts(RequestType::QueryV2), 1);
    }
}
