//! The request envelope: decoding, request ids, expiry and sender
//! authentication.
//!
//! Senders are authenticated as the interface specification says: the
//! anonymous principal (`0x04`) sends no key and no signature; any other
//! sender is the self-authenticating principal of `sender_pubkey` (DER
//! Ed25519, ECDSA secp256k1 or ECDSA P-256, as `ic-agent`'s identities
//! create them), and `sender_sig` signs `"\x0Aic-request" ‖ request id`.

use candid::Principal;
use ciborium::Value;

use crate::cbor::{decode, field};
use crate::hash::{Hash, hash_of_map};
use crate::keys::ED25519_DER_PREFIX;

/// The domain separator of request signatures.
pub const REQUEST_DOMAIN: &[u8] = b"\x0Aic-request";

/// How far in the future `ingress_expiry` may lie: 5 minutes plus 60 s of drift.
pub const MAX_EXPIRY_AHEAD_NS: u64 = 360 * 1_000_000_000;

/// The kind of request named by `request_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// An update call.
    Call,
    /// A query.
    Query,
    /// A read of the state tree.
    ReadState,
}

impl RequestType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "call" => Some(RequestType::Call),
            "query" => Some(RequestType::Query),
            "read_state" => Some(RequestType::ReadState),
            _ => None,
        }
    }

    /// The name as in `request_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Call => "call",
            RequestType::Query => "query",
            RequestType::ReadState => "read_state",
        }
    }
}

/// A decoded and authenticated request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The kind.
    pub request_type: RequestType,
    /// The request id.
    pub id: Hash,
    /// The authenticated sender.
    pub sender: Principal,
    /// Expiry, nanoseconds since the epoch.
    pub ingress_expiry: u64,
    /// The target canister (calls and queries).
    pub canister_id: Option<Principal>,
    /// The method (calls and queries).
    pub method_name: Option<String>,
    /// The Candid argument (calls and queries).
    pub arg: Vec<u8>,
    /// The requested paths (read_state).
    pub paths: Vec<Vec<Vec<u8>>>,
}

/// Why a request was refused before reaching a canister; each maps to an
/// HTTP status (see [`EnvelopeError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not CBOR of the envelope's shape.
    #[error("Could not parse body as a request: {0}")]
    Malformed(String),
    /// `ingress_expiry` is outside the accepted window.
    #[error("Invalid request expiry: {0}")]
    Expiry(String),
    /// Authentication failed.
    #[error("Failed to authenticate request 0x{id}: {reason}")]
    Auth {
        /// The request id, hex.
        id: String,
        /// Why.
        reason: String,
    },
}

impl EnvelopeError {
    /// The HTTP status: always 400 Bad Request.
    pub fn status(&self) -> u16 {
        400
    }
}

fn malformed(s: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed(s.into())
}

fn bytes<'a>(entries: &'a [(Value, Value)], k: &str) -> Result<Option<&'a [u8]>, EnvelopeError> {
    match field(entries, k) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(malformed(format!("'{k}' must be a blob"))),
    }
}

/// Decodes the envelope in `body`, computes the request id, checks the
/// expiry against `now_ns` and authenticates the sender.
pub fn decode_request(body: &[u8], now_ns: u64) -> Result<Request, EnvelopeError> {
    let envelope = decode(body).map_err(|e| malformed(format!("invalid CBOR: {e}")))?;
    let Value::Map(envelope) = envelope else {
        return Err(malformed("the envelope is not a map"));
    };
    let Some(Value::Map(content)) = field(&envelope, "content") else {
        return Err(malformed("'content' is missing or not a map"));
    };
    let request_type = match field(content, "request_type") {
        Some(Value::Text(t)) => {
            RequestType::parse(t).ok_or_else(|| malformed(format!("unknown request_type '{t}'")))?
        }
        _ => return Err(malformed("'request_type' is missing or not text")),
    };
    let sender = bytes(content, "sender")?.ok_or_else(|| malformed("'sender' is missing"))?;
    let sender =
        Principal::try_from_slice(sender).map_err(|e| malformed(format!("'sender': {e}")))?;
    let ingress_expiry = match field(content, "ingress_expiry") {
        Some(Value::Integer(i)) => {
            u64::try_from(*i).map_err(|_| malformed("'ingress_expiry' is out of range"))?
        }
        _ => return Err(malformed("'ingress_expiry' is missing or not a number")),
    };
    if let Some(n) = bytes(content, "nonce")?
        && n.len() > 32
    {
        return Err(malformed("'nonce' is longer than 32 bytes"));
    }
    let mut req = Request {
        request_type,
        id: [0; 32],
        sender,
        ingress_expiry,
        canister_id: None,
        method_name: None,
        arg: Vec::new(),
        paths: Vec::new(),
    };
    match request_type {
        RequestType::Call | RequestType::Query => {
            let c = bytes(content, "canister_id")?
                .ok_or_else(|| malformed("'canister_id' is missing"))?;
            req.canister_id = Some(
                Principal::try_from_slice(c)
                    .map_err(|e| malformed(format!("'canister_id': {e}")))?,
            );
            req.method_name = match field(content, "method_name") {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => return Err(malformed("'method_name' is missing or not text")),
            };
            req.arg = bytes(content, "arg")?
                .ok_or_else(|| malformed("'arg' is missing"))?
                .to_vec();
        }
        RequestType::ReadState => {
            let Some(Value::Array(paths)) = field(content, "paths") else {
                return Err(malformed("'paths' is missing or not an array"));
            };
            if paths.len() > 1000 {
                return Err(malformed("more than 1000 paths"));
            }
            for p in paths {
                let Value::Array(labels) = p else {
                    return Err(malformed("a path is not an array"));
                };
                if labels.len() > 127 {
                    return Err(malformed("a path has more than 127 labels"));
                }
                let mut path = Vec::with_capacity(labels.len());
                for l in labels {
                    let Value::Bytes(l) = l else {
                        return Err(malformed("a path label is not a blob"));
                    };
                    path.push(l.clone());
                }
                req.paths.push(path);
            }
        }
    }
    req.id = hash_of_map(content).map_err(|e| malformed(format!("content: {e}")))?;

    if ingress_expiry < now_ns {
        return Err(EnvelopeError::Expiry(format!(
            "the request expired at {ingress_expiry} ns, the replica's time is {now_ns} ns"
        )));
    }
    if ingress_expiry > now_ns.saturating_add(MAX_EXPIRY_AHEAD_NS) {
        return Err(EnvelopeError::Expiry(format!(
            "the expiry {ingress_expiry} ns is more than 6 minutes after the replica's time {now_ns} ns"
        )));
    }

    let pubkey = bytes(&envelope, "sender_pubkey")?;
    let sig = bytes(&envelope, "sender_sig")?;
    let auth = |reason: String| EnvelopeError::Auth {
        id: hex::encode(req.id),
        reason,
    };
    if field(&envelope, "sender_delegation").is_some() {
        return Err(auth(
            "sender delegations are not supported by this testnet replica".into(),
        ));
    }
    if sender == Principal::anonymous() {
        if pubkey.is_some() || sig.is_some() {
            return Err(auth(
                "an anonymous request must carry no sender_pubkey and no sender_sig".into(),
            ));
        }
        return Ok(req);
    }
    let (Some(pubkey), Some(sig)) = (pubkey, sig) else {
        return Err(auth(format!(
            "sender {} is not anonymous, but sender_pubkey or sender_sig is missing",
            sender.to_text()
        )));
    };
    if Principal::self_authenticating(pubkey) != sender {
        return Err(auth(format!(
            "sender {} is not the principal of sender_pubkey",
            sender.to_text()
        )));
    }
    let mut msg = REQUEST_DOMAIN.to_vec();
    msg.extend_from_slice(&req.id);
    verify_signature(pubkey, &msg, sig).map_err(auth)?;
    Ok(req)
}

/// Verifies `sig` over `msg` under a DER public key.
pub fn verify_signature(der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use k256::pkcs8::DecodePublicKey;
    if der.len() == 44 && der.starts_with(&ED25519_DER_PREFIX) {
        let key: [u8; 32] = der[12..]
            .try_into()
            .map_err(|_| "Ed25519 key of the wrong length".to_string())?;
        let key = ed25519_consensus::VerificationKey::try_from(key)
            .map_err(|e| format!("malformed Ed25519 public key: {e}"))?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| {
            format!(
                "Invalid signature: Ed25519 signature of {} bytes",
                sig.len()
            )
        })?;
        return key
            .verify(&ed25519_consensus::Signature::from(sig), msg)
            .map_err(|_| "Invalid signature: Ed25519 signature does not verify".to_string());
    }
    if let Ok(key) = k256::ecdsa::VerifyingKey::from_public_key_der(der) {
        use k256::ecdsa::signature::Verifier;
        let sig = k256::ecdsa::Signature::from_slice(sig)
            .map_err(|_| "Invalid signature: malformed secp256k1 signature".to_string())?;
        return key
            .verify(msg, &sig)
            .map_err(|_| "Invalid signature: secp256k1 signature does not verify".to_string());
    }
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        use p256::ecdsa::signature::Verifier;
        let sig = p256::ecdsa::Signature::from_slice(sig)
            .map_err(|_| "Invalid signature: malformed P-256 signature".to_string())?;
        return key
            .verify(msg, &sig)
            .map_err(|_| "Invalid signature: P-256 signature does not verify".to_string());
    }
    Err("unsupported sender_pubkey: expected DER Ed25519, secp256k1 or P-256".to_string())
}

/// What goes into the `content` of a request made by [`encode_request`].
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The kind.
    pub request_type: RequestType,
    /// The target canister.
    pub canister_id: Principal,
    /// The method (calls and queries).
    pub method_name: String,
    /// The Candid argument (calls and queries).
    pub arg: Vec<u8>,
    /// The requested paths (read_state).
    pub paths: Vec<Vec<Vec<u8>>>,
    /// Expiry, nanoseconds since the epoch.
    pub ingress_expiry: u64,
    /// An optional nonce (makes otherwise equal requests distinct).
    pub nonce: Option<Vec<u8>>,
}

/// Builds a request envelope as agents send it: the anonymous sender when
/// `signer` is `None`, otherwise the signer's self-authenticating principal
/// with its DER public key and an Ed25519 signature over
/// `"\x0Aic-request" ‖ request id`. Returns the CBOR body (with the
/// self-describe tag) and the request id.
pub fn encode_request(
    req: &NewRequest,
    signer: Option<&ed25519_consensus::SigningKey>,
) -> (Vec<u8>, Hash) {
    use crate::cbor::{encode_tagged, key, nat};
    let der = signer.map(crate::keys::ed25519_der);
    let sender = match &der {
        Some(der) => Principal::self_authenticating(der),
        None => Principal::anonymous(),
    };
    let mut content = vec![
        (key("request_type"), key(req.request_type.as_str())),
        (key("sender"), Value::Bytes(sender.as_slice().to_vec())),
        (key("ingress_expiry"), nat(req.ingress_expiry)),
    ];
    match req.request_type {
        RequestType::Call | RequestType::Query => {
            content.push((
                key("canister_id"),
                Value::Bytes(req.canister_id.as_slice().to_vec()),
            ));
            content.push((key("method_name"), key(&req.method_name)));
            content.push((key("arg"), Value::Bytes(req.arg.clone())));
        }
        RequestType::ReadState => {
            let paths = req
                .paths
                .iter()
                .map(|p| Value::Array(p.iter().map(|l| Value::Bytes(l.clone())).collect()))
                .collect();
            content.push((key("paths"), Value::Array(paths)));
        }
    }
    if let Some(nonce) = &req.nonce {
        content.push((key("nonce"), Value::Bytes(nonce.clone())));
    }
    // Every value above is a blob, text, natural or array of blobs, which
    // always hash.
    let id = hash_of_map(&content).unwrap_or([0; 32]);
    let mut envelope = vec![(key("content"), Value::Map(content))];
    if let (Some(signer), Some(der)) = (signer, der) {
        let mut msg = REQUEST_DOMAIN.to_vec();
        msg.extend_from_slice(&id);
        let sig = signer.sign(&msg);
        envelope.push((key("sender_pubkey"), Value::Bytes(der)));
        envelope.push((key("sender_sig"), Value::Bytes(sig.to_bytes().to_vec())));
    }
    (encode_tagged(&Value::Map(envelope)), id)
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    fn query(nonce: Option<Vec<u8>>) -> NewRequest {
        NewRequest {
            request_type: RequestType::Query,
            canister_id: Principal::from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
            method_name: "read".into(),
            arg: b"DIDL\x00\x00".to_vec(),
            paths: Vec::new(),
            ingress_expiry: 1_000_000_000_000,
            nonce,
        }
    }

    #[test]
    fn signed_requests_decode_and_authenticate() {
        let key = ed25519_consensus::SigningKey::from([3u8; 32]);
        let (body, id) = encode_request(&query(Some(vec![1, 2])), Some(&key));
        let req = decode_request(&body, 1_000_000_000_000 - 60_000_000_000).unwrap();
        assert_eq!(req.id, id);
        assert_eq!(req.request_type, RequestType::Query);
        assert_eq!(
            req.sender,
            Principal::self_authenticating(crate::keys::ed25519_der(&key))
        );
        assert_eq!(req.method_name.as_deref(), Some("read"));
    }

    #[test]
    fn anonymous_and_read_state_requests_decode() {
        let (body, _) = encode_request(&query(None), None);
        let req = decode_request(&body, 1_000_000_000_000).unwrap();
        assert_eq!(req.sender, Principal::anonymous());
        let mut rs = query(None);
        rs.request_type = RequestType::ReadState;
        rs.paths = vec![vec![b"time".to_vec()]];
        let (body, _) = encode_request(&rs, None);
        let req = decode_request(&body, 1_000_000_000_000).unwrap();
        assert_eq!(req.paths, vec![vec![b"time".to_vec()]]);
    }

    #[test]
    fn the_nonce_changes_the_request_id() {
        let (_, a) = encode_request(&query(None), None);
        let (_, b) = encode_request(&query(Some(vec![7])), None);
        assert_ne!(a, b);
    }

    #[test]
    fn a_tampered_signed_request_is_refused() {
        let key = ed25519_consensus::SigningKey::from([3u8; 32]);
        let (body, _) = encode_request(&query(None), Some(&key));
        let mut other = query(None);
        other.method_name = "get".into();
        let (forged, _) = encode_request(&other, None);
        // Graft the first signature onto a different content.
        let Value::Map(mut env) = crate::cbor::decode(&body).unwrap() else {
            panic!()
        };
        let Value::Map(fenv) = crate::cbor::decode(&forged).unwrap() else {
            panic!()
        };
        let sender = Principal::self_authenticating(crate::keys::ed25519_der(&key));
        let Value::Map(mut content) = fenv[0].1.clone() else {
            panic!()
        };
        content[1].1 = Value::Bytes(sender.as_slice().to_vec());
        env[0].1 = Value::Map(content);
        let bytes = crate::cbor::encode_tagged(&Value::Map(env));
        let err = decode_request(&bytes, 1_000_000_000_000).unwrap_err();
        assert!(matches!(err, EnvelopeError::Auth { .. }), "{err}");
    }
}
