//! The representation-independent hash of the IC interface specification,
//! request ids, and LEB128.
//!
//! A value hashes as: blobs as they are, text as UTF-8, natural numbers as
//! shortest unsigned LEB128, negative integers as shortest signed LEB128,
//! arrays as the hash of the concatenated element hashes, and maps as the
//! hash of the sorted concatenation of `H(key) ‖ H(value)` per field.

use ciborium::Value;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a value has no representation-independent hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// A map key is not text.
    #[error("a map key is not text")]
    NonTextKey,
    /// Floats, booleans, null and unknown tags have no hash.
    #[error("a value of an unsupported CBOR type ({0})")]
    Unsupported(&'static str),
    /// Maps and arrays nest too deeply.
    #[error("values nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How deeply maps and arrays may nest.
pub const MAX_DEPTH: usize = 32;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// Shortest unsigned LEB128 of `n`.
pub fn leb128_u128(mut n: u128) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap_or_default();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Shortest signed LEB128 of `n`.
pub fn sleb128_i128(mut n: i128) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap_or_default();
        n >>= 7;
        let done = (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The hash of one CBOR value.
pub fn hash_value(value: &Value) -> Result<Hash, HashError> {
    hash_at(value, 0)
}

/// The hash of a map given as its entries (keys must be text).
pub fn hash_of_map(entries: &[(Value, Value)]) -> Result<Hash, HashError> {
    map_at(entries, 0)
}

fn hash_at(value: &Value, depth: usize) -> Result<Hash, HashError> {
    if depth > MAX_DEPTH {
        return Err(HashError::TooDeep);
    }
    match value {
        Value::Bytes(b) => Ok(sha256(b)),
        Value::Text(t) => Ok(sha256(t.as_bytes())),
        Value::Integer(i) => {
            let i = i128::from(*i);
            if i >= 0 {
                Ok(sha256(&leb128_u128(i.unsigned_abs())))
            } else {
                Ok(sha256(&sleb128_i128(i)))
            }
        }
        Value::Array(items) => {
            let mut h = Sha256::new();
            for item in items {
                h.update(hash_at(item, depth + 1)?);
            }
            Ok(h.finalize().into())
        }
        Value::Map(entries) => map_at(entries, depth + 1),
        // The self-describe tag carries no meaning of its own.
        Value::Tag(55799, inner) => hash_at(inner, depth + 1),
        Value::Tag(..) => Err(HashError::Unsupported("tag")),
        Value::Float(_) => Err(HashError::Unsupported("float")),
        Value::Bool(_) => Err(HashError::Unsupported("bool")),
        Value::Null => Err(HashError::Unsupported("null")),
        _ => Err(HashError::Unsupported("other")),
    }
}

fn map_at(entries: &[(Value, Value)], depth: usize) -> Result<Hash, HashError> {
    if depth > MAX_DEPTH {
        return Err(HashError::TooDeep);
    }
    let mut fields = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Value::Text(key) = k else {
            return Err(HashError::NonTextKey);
        };
        let mut field = Vec::with_capacity(64);
        field.extend_from_slice(&sha256(key.as_bytes()));
        field.extend_from_slice(&hash_at(v, depth)?);
        fields.push(field);
    }
    fields.sort();
    let mut h = Sha256::new();
    for f in &fields {
        h.update(f);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn spec_request_id_vector() {
        let content = vec![
            (text("request_type"), text("call")),
            (text("sender"), Value::Bytes(vec![0x04])),
            (
                text("ingress_expiry"),
                Value::Integer(1_685_570_400_000_000_000u64.into()),
            ),
            (
                text("canister_id"),
                Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0x04, 0xD2]),
            ),
            (text("method_name"), text("hello")),
            (text("arg"), Value::Bytes(b"DIDL\x00\xFD*".to_vec())),
        ];
        assert_eq!(
            hex::encode(hash_of_map(&content).unwrap()),
            "1d1091364d6bb8a6c16b203ee75467d59ead468f523eb058880ae8ec80e2b101"
        );
    }

    #[test]
    fn leb128_examples() {
        assert_eq!(leb128_u128(0), vec![0]);
        assert_eq!(leb128_u128(624_485), vec![0xe5, 0x8e, 0x26]);
        assert_eq!(sleb128_i128(-123_456), vec![0xc0, 0xbb, 0x78]);
        assert_eq!(sleb128_i128(-1), vec![0x7f]);
        assert_eq!(sleb128_i128(63), vec![0x3f]);
        assert_eq!(sleb128_i128(64), vec![0xc0, 0x00]);
    }

    #[test]
    fn floats_and_non_text_keys_are_rejected() {
        assert!(hash_value(&Value::Float(1.0)).is_err());
        assert_eq!(
            hash_of_map(&[(Value::Integer(1.into()), Value::Null)]),
            Err(HashError::NonTextKey)
        );
    }
}
