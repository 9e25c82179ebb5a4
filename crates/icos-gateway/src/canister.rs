//! The canister side: the Candid types of the HTTP gateway protocol and the
//! `http_request` / `http_request_update` calls made through `ic-agent`.
//!
//! Streaming uses the callback strategy with the token type of the
//! certified-assets canister (`record { key; content_encoding; index;
//! sha256 }`). A canister whose token has another type decodes with no
//! streaming strategy; its first chunk alone then fails certification.

use std::sync::Arc;

use candid::{CandidType, Deserialize, Nat, Principal};
use ic_agent::{Agent, AgentError};
use serde_bytes::ByteBuf;
use tokio::sync::OnceCell;

/// `HttpRequest` as sent to `http_request` (query).
#[derive(Debug, Clone, CandidType, Deserialize)]
pub struct HttpRequest {
    /// The HTTP method.
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Request headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: ByteBuf,
    /// The highest certification version the gateway verifies (2).
    pub certificate_version: Option<u16>,
}

/// `HttpUpdateRequest` as sent to `http_request_update` (update).
#[derive(Debug, Clone, CandidType, Deserialize)]
pub struct HttpUpdateRequest {
    /// The HTTP method.
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: ByteBuf,
}

/// The streaming token of the certified-assets canister.
#[derive(Debug, Clone, CandidType, Deserialize)]
pub struct StreamingToken {
    /// The asset key.
    pub key: String,
    /// The encoding being streamed.
    pub content_encoding: String,
    /// The index of the next chunk.
    pub index: Nat,
    /// The hash of the whole asset, if known.
    pub sha256: Option<ByteBuf>,
}

/// What a streaming callback returns.
#[derive(Debug, Clone, CandidType, Deserialize)]
pub struct StreamingCallbackResponse {
    /// The chunk.
    pub body: ByteBuf,
    /// The token of the next chunk; none after the last.
    pub token: Option<StreamingToken>,
}

mod callback {
    #![allow(missing_docs)]
    use super::{StreamingCallbackResponse, StreamingToken};
    candid::define_function!(pub StreamingCallback : (StreamingToken) -> (StreamingCallbackResponse) query);
}
/// The streaming callback: `func (StreamingToken) -> (StreamingCallbackResponse) query`.
pub use callback::StreamingCallback;

/// How the rest of a body is fetched.
#[derive(Debug, Clone, CandidType, Deserialize)]
pub enum StreamingStrategy {
    /// Call `callback` with `token`, then with each returned token.
    Callback {
        /// The query method to call.
        callback: StreamingCallback,
        /// The token of the second chunk.
        token: StreamingToken,
    },
}

/// `HttpResponse` as returned by `http_request` and `http_request_update`.
#[derive(Debug, Clone, CandidType, Deserialize)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status_code: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body (the first chunk when streaming).
    pub body: ByteBuf,
    /// `Some(true)`: repeat the request as an update call.
    pub upgrade: Option<bool>,
    /// How to fetch the rest of the body.
    pub streaming_strategy: Option<StreamingStrategy>,
}

/// Where the IC root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKey {
    /// This DER-encoded key (133 bytes for BLS12-381).
    Der(Vec<u8>),
    /// Fetched from the upstream's `/api/v2/status` on first use; only for
    /// testnets, as whoever answers chooses the key.
    Fetch,
}

/// Why a canister call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The agent failed (transport, reject, certificate).
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The reply is not the expected Candid.
    #[error("the canister's reply does not decode: {0}")]
    Candid(#[from] candid::Error),
    /// The streamed body is longer than allowed.
    #[error("the streamed body exceeds {0} bytes")]
    TooLarge(usize),
    /// The streaming callback returned more chunks than allowed.
    #[error("the streamed body has more than {0} chunks")]
    TooManyChunks(usize),
    /// The streaming callback is not on the serving canister.
    #[error("the streaming callback is on canister {0}, not the serving one")]
    ForeignCallback(Principal),
}

/// Most chunks fetched for one body.
pub const MAX_CHUNKS: usize = 1000;

/// Calls canisters over the IC HTTP interface.
#[derive(Debug, Clone)]
pub struct CanisterClient {
    agent: Agent,
    root_key: RootKey,
    fetched: Arc<OnceCell<()>>,
}

impl CanisterClient {
    /// A client talking to `url` (a router or any API endpoint), anonymously.
    ///
    /// Query signatures are not checked: `http_request` replies are checked
    /// by their response certification instead, as ic-gateway does.
    pub fn new(url: &str, root_key: RootKey) -> Result<Self, AgentError> {
        let agent = Agent::builder()
            .with_url(url)
            .with_verify_query_signatures(false)
            .build()?;
        if let RootKey::Der(der) = &root_key {
            agent.set_root_key(der.clone());
        }
        Ok(CanisterClient {
            agent,
            root_key,
            fetched: Arc::new(OnceCell::new()),
        })
    }

    /// The root key, fetching it first if so configured.
    pub async fn root_key(&self) -> Result<Vec<u8>, AgentError> {
        if self.root_key == RootKey::Fetch {
            self.fetched
                .get_or_try_init(|| self.agent.fetch_root_key())
                .await?;
        }
        Ok(self.agent.read_root_key())
    }

    /// `http_request` as a query.
    pub async fn http_request(
        &self,
        canister: Principal,
        request: &HttpRequest,
    ) -> Result<HttpResponse, CallError> {
        self.root_key().await?;
        let reply = self
            .agent
            .query(&canister, "http_request")
            .with_arg(candid::encode_one(request)?)
            .call()
            .await?;
        Ok(candid::decode_one(&reply)?)
    }

    /// `http_request_update` as an update call; the reply is certified by
    /// the subnet and checked by the agent.
    pub async fn http_request_update(
        &self,
        canister: Principal,
        request: &HttpUpdateRequest,
    ) -> Result<HttpResponse, CallError> {
        self.root_key().await?;
        let reply = self
            .agent
            .update(&canister, "http_request_update")
            .with_arg(candid::encode_one(request)?)
            .call_and_wait()
            .await?;
        Ok(candid::decode_one(&reply)?)
    }

    /// Appends the remaining chunks of a streamed body to `body`.
    pub async fn stream_rest(
        &self,
        canister: Principal,
        strategy: StreamingStrategy,
        body: &mut Vec<u8>,
        max_size: usize,
    ) -> Result<(), CallError> {
        let StreamingStrategy::Callback { callback, token } = strategy;
        let callback = callback.0;
        if callback.principal != canister {
            return Err(CallError::ForeignCallback(callback.principal));
        }
        let mut next = Some(token);
        let mut chunks = 1;
        while let Some(token) = next.take() {
            if chunks >= MAX_CHUNKS {
                return Err(CallError::TooManyChunks(MAX_CHUNKS));
            }
            let reply = self
                .agent
                .query(&canister, &callback.method)
                .with_arg(candid::encode_one(&token)?)
                .call()
                .await?;
            let chunk: StreamingCallbackResponse = candid::decode_one(&reply)?;
            if body.len().saturating_add(chunk.body.len()) > max_size {
                return Err(CallError::TooLarge(max_size));
            }
            body.extend_from_slice(&chunk.body);
            chunks += 1;
            next = chunk.token;
        }
        Ok(())
    }

    /// The canister's `supported_certificate_versions` metadata.
    pub async fn certificate_versions_metadata(
        &self,
        canister: Principal,
    ) -> Result<Vec<u8>, AgentError> {
        self.agent
            .read_state_canister_metadata(canister, "supported_certificate_versions")
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn response_without_streaming_decodes() {
        // What ic-http-certification's HttpResponse encodes (no streaming field).
        let r = ic_http_certification::HttpResponse::ok(
            b"hi".as_slice(),
            vec![("content-type".into(), "text/plain".into())],
        )
        .with_upgrade(true)
        .build();
        let bytes = candid::encode_one(&r).unwrap();
        let d: HttpResponse = candid::decode_one(&bytes).unwrap();
        assert_eq!(d.status_code, 200);
        assert_eq!(d.body.as_slice(), b"hi");
        assert_eq!(d.upgrade, Some(true));
        assert!(d.streaming_strategy.is_none());
    }

    #[test]
    fn streaming_response_round_trips() {
        let canister = Principal::from_text("rwlgt-iiaaa-aaaaa-aaaaa-cai").unwrap();
        let r = HttpResponse {
            status_code: 200,
            headers: vec![],
            body: ByteBuf::from(b"a".to_vec()),
            upgrade: None,
            streaming_strategy: Some(StreamingStrategy::Callback {
                callback: StreamingCallback::new(
                    canister,
                    "http_request_streaming_callback".into(),
                ),
                token: StreamingToken {
                    key: "/big".into(),
                    content_encoding: "identity".into(),
                    index: Nat::from(1u8),
                    sha256: None,
                },
            }),
        };
        let d: HttpResponse = candid::decode_one(&candid::encode_one(&r).unwrap()).unwrap();
        let Some(StreamingStrategy::Callback { callback, token }) = d.streaming_strategy else {
            panic!("no strategy");
        };
        assert_eq!(callback.0.principal, canister);
        assert_eq!(token.index, Nat::from(1u8));
    }
}
