//! CBOR helpers: encoding with the self-describe tag, and field access on
//! decoded maps.

use ciborium::Value;

/// The self-describe tag.
pub const SELF_DESCRIBE_TAG: u64 = 55799;

/// Encodes `value` wrapped in the self-describe tag.
pub fn encode_tagged(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a Value.
    let _ = ciborium::into_writer(
        &Value::Tag(SELF_DESCRIBE_TAG, Box::new(value.clone())),
        &mut out,
    );
    out
}

/// A text key.
pub fn key(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A map with text keys.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (key(k), v)).collect())
}

/// A natural number.
pub fn nat(n: u64) -> Value {
    Value::Integer(n.into())
}

/// Decodes `bytes` into a value, removing a leading self-describe tag.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let v: Value = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    Ok(match v {
        Value::Tag(SELF_DESCRIBE_TAG, inner) => *inner,
        other => other,
    })
}

/// The value of text key `k` in map entries.
pub fn field<'a>(entries: &'a [(Value, Value)], k: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(key, _)| matches!(key, Value::Text(t) if t == k))
        .map(|(_, v)| v)
}
