//! Names of the diagnostic headers set on responses (as ic-boundary sets
//! them), and of the request id header.

use http::HeaderName;

/// The precise cause of a failure, or `none`.
pub const X_IC_ERROR_CAUSE: HeaderName = HeaderName::from_static("x-ic-error-cause");
/// `HIT`, `MISS`, `BYPASS` or `DISABLED`.
pub const X_IC_CACHE_STATUS: HeaderName = HeaderName::from_static("x-ic-cache-status");
/// Why the cache was bypassed.
pub const X_IC_CACHE_BYPASS_REASON: HeaderName =
    HeaderName::from_static("x-ic-cache-bypass-reason");
/// The subnet the request was routed to.
pub const X_IC_SUBNET_ID: HeaderName = HeaderName::from_static("x-ic-subnet-id");
/// The replica that answered.
pub const X_IC_NODE_ID: HeaderName = HeaderName::from_static("x-ic-node-id");
/// The canister id from the URL.
pub const X_IC_CANISTER_ID: HeaderName = HeaderName::from_static("x-ic-canister-id");
/// The canister id from the envelope's content.
pub const X_IC_CANISTER_ID_CBOR: HeaderName = HeaderName::from_static("x-ic-canister-id-cbor");
/// The request type (e.g. `query_v3`).
pub const X_IC_REQUEST_TYPE: HeaderName = HeaderName::from_static("x-ic-request-type");
/// The sender from the envelope's content.
pub const X_IC_SENDER: HeaderName = HeaderName::from_static("x-ic-sender");
/// The method name from the envelope's content.
pub const X_IC_METHOD_NAME: HeaderName = HeaderName::from_static("x-ic-method-name");
/// How many other replicas were tried.
pub const X_IC_RETRIES: HeaderName = HeaderName::from_static("x-ic-retries");
/// The request id: a client's (a hyphenated UUID) or a generated one.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether `s` is a hyphenated UUID (8-4-4-4-12 hex digits).
pub fn is_hyphenated_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A random version-4 UUID, hyphenated.
pub fn new_request_id(rng: &mut fastrand::Rng) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut v = rng.u128(..);
    v &= !(0xf << 76);
    v |= 0x4 << 76;
    v &= !(0x3 << 62);
    v |= 0x2 << 62;
    let mut out = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (v >> (124 - 4 * i)) & 0xf;
        out.push(char::from(HEX[nibble as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_hyphenated_uuid("0191b4a2-7c3e-7d4e-9f5a-0123456789ab"));
        assert!(!is_hyphenated_uuid("0191b4a27c3e7d4e9f5a0123456789ab"));
        assert!(!is_hyphenated_uuid("0191b4a2-7c3e-7d4e-9f5a-0123456789ag"));
        assert!(!is_hyphenated_uuid(""));
        let mut rng = fastrand::Rng::with_seed(3);
        let id = new_request_id(&mut rng);
        assert!(is_hyphenated_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        let mut rng = fastrand::Rng::with_seed(3);
        let v = {
            let mut v = rng.u128(..);
            v &= !(0xf << 76);
            v |= 0x4 << 76;
            v &= !(0x3 << 62);
            v |= 0x2 << 62;
            v
        };
        assert_eq!(id.replace('-', ""), format!("{v:032x}"));
    }
}
