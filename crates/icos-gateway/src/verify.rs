//! Response certification (HTTP certification v2, and v1 for canisters that
//! do not support v2), with `ic-response-verification`.
//!
//! The gateway asks for version 2. A response certified with version 1 is
//! accepted only when the canister's `supported_certificate_versions`
//! metadata is provably absent from the state tree (a canister that
//! announces its versions, or an answer that cannot prove absence, means a
//! downgrade is refused).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use candid::Principal;
use ic_agent::AgentError;
use ic_response_verification::ResponseVerificationError;
use ic_response_verification::types::VerificationInfo;

use crate::canister::HttpRequest;

/// How old (or how far ahead) a certificate's `/time` may be.
pub const MAX_CERT_TIME_OFFSET: Duration = Duration::from_secs(300);

/// The version asked for.
pub const REQUESTED_VERSION: u8 = 2;

/// Why a response was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The certification does not hold.
    #[error("response verification failed: {0}")]
    Failed(#[from] ResponseVerificationError),
    /// A v1 certificate came back from a canister that may support v2.
    #[error("the response is certified with version 1 but the canister may support version 2: {0}")]
    Downgrade(String),
    /// The request or response cannot be expressed for verification.
    #[error("the response cannot be verified: {0}")]
    Malformed(String),
}

/// The response to verify, body complete.
#[derive(Debug, Clone, Copy)]
pub struct ResponseParts<'a> {
    /// The status.
    pub status: u16,
    /// The headers as the canister sent them.
    pub headers: &'a [(String, String)],
    /// The complete body.
    pub body: &'a [u8],
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Verifies with a minimum version of `min_version`.
pub fn verify_pair(
    request: &HttpRequest,
    response: ResponseParts<'_>,
    canister: Principal,
    root_key: &[u8],
    now_ns: u128,
    min_version: u8,
) -> Result<VerificationInfo, VerifyError> {
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| VerifyError::Malformed(format!("method: {e}")))?;
    let status = http::StatusCode::from_u16(response.status)
        .map_err(|e| VerifyError::Malformed(format!("status: {e}")))?;
    let req = ic_http_certification::HttpRequest::builder()
        .with_method(method)
        .with_url(request.url.clone())
        .with_headers(request.headers.clone())
        .with_body(request.body.as_slice())
        .with_certificate_version(u16::from(REQUESTED_VERSION))
        .build();
    let resp = ic_http_certification::HttpResponse::builder()
        .with_status_code(status)
        .with_headers(response.headers.to_vec())
        .with_body(response.body)
        .build();
    Ok(ic_response_verification::verify_request_response_pair(
        req,
        resp,
        canister.as_slice(),
        now_ns,
        MAX_CERT_TIME_OFFSET.as_nanos(),
        root_key,
        min_version,
    )?)
}

/// Whether the metadata read allows accepting a v1 certificate: only a
/// proof that `supported_certificate_versions` is absent does.
pub fn v1_allowed(metadata: &Result<Vec<u8>, AgentError>) -> Result<(), String> {
    match metadata {
        Err(AgentError::LookupPathAbsent(_)) => Ok(()),
        Ok(v) => Err(format!(
            "it announces supported_certificate_versions = {:?}",
            String::from_utf8_lossy(v)
        )),
        Err(e) => Err(format!(
            "its supported_certificate_versions metadata could not be proven absent: {e}"
        )),
    }
}

/// Whether the error says the certificate had a lower version than asked.
pub fn is_version_mismatch(e: &VerifyError) -> bool {
    matches!(
        e,
        VerifyError::Failed(ResponseVerificationError::RequestedVerificationVersionMismatch { .. })
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn downgrade_rule() {
        assert!(v1_allowed(&Err(AgentError::LookupPathAbsent(vec![]))).is_ok());
        assert!(v1_allowed(&Ok(b"1,2".to_vec())).is_err());
        assert!(v1_allowed(&Ok(b"1".to_vec())).is_err());
        assert!(v1_allowed(&Err(AgentError::LookupPathUnknown(vec![]))).is_err());
        assert!(v1_allowed(&Err(AgentError::TimeoutWaitingForResponse())).is_err());
    }

    #[test]
    fn uncertified_response_is_refused() {
        let req = HttpRequest {
            method: "GET".into(),
            url: "/".into(),
            headers: vec![],
            body: Default::default(),
            certificate_version: Some(2),
        };
        let e = verify_pair(
            &req,
            ResponseParts {
                status: 200,
                headers: &[],
                body: b"x",
            },
            Principal::anonymous(),
            &[0; 133],
            now_ns(),
            2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("verification failed"), "{e}");
    }
}
