//! The few fields of a request envelope the router looks at.
//!
//! A request body is a CBOR map `{content, sender_pubkey?, sender_sig?,
//! sender_delegation?}`, usually wrapped in the self-describe tag 55799. Only
//! `content` is decoded, and only its `request_type`, `sender`,
//! `canister_id`, `method_name`, `nonce`, `ingress_expiry` and `arg`: they
//! feed rate limits, the query cache, headers and logs. Signatures are not
//! checked (that is the replica's job) and the body is forwarded unchanged.
//!
//! [`decode_content`] never panics, whatever the input; nesting is bounded
//! by the CBOR decoder's recursion limit and the input by the body limit.

use ciborium::Value;

use crate::principal::Principal;

/// The CBOR self-describe tag.
pub const SELF_DESCRIBE_TAG: u64 = 55799;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The bytes are not one well-formed CBOR item.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The envelope is not a map.
    #[error("the envelope is not a CBOR map")]
    NotAMap,
    /// The envelope has no `content` map.
    #[error("the envelope has no content map")]
    NoContent,
    /// A field is missing.
    #[error("content field {0} is missing")]
    Missing(&'static str),
    /// A field has the wrong CBOR type or an out-of-range value.
    #[error("content field {field} is invalid: {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The decoded fields of `content`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// `call`, `query` or `read_state`, when present.
    pub request_type: Option<String>,
    /// The sender (required by the specification).
    pub sender: Option<Principal>,
    /// The canister called, for calls and queries.
    pub canister_id: Option<Principal>,
    /// The method called, for calls and queries.
    pub method_name: Option<String>,
    /// The nonce, at most 32 bytes by the specification (not enforced here).
    pub nonce: Option<Vec<u8>>,
    /// The expiry, in nanoseconds since the epoch.
    pub ingress_expiry: Option<u64>,
    /// The Candid-encoded argument.
    pub arg: Option<Vec<u8>>,
}

impl Content {
    /// Whether the sender is the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        self.sender.is_some_and(|s| s.is_anonymous())
    }
}

/// Decodes the `content` of a CBOR request envelope. Never panics.
pub fn decode_content(body: &[u8]) -> Result<Content, CborError> {
    let value: Value =
        ciborium::de::from_reader(body).map_err(|e| CborError::Malformed(e.to_string()))?;
    let value = untag(value);
    let Value::Map(envelope) = value else {
        return Err(CborError::NotAMap);
    };
    let content = envelope
        .into_iter()
        .find_map(|(k, v)| (k.as_text() == Some("content")).then_some(v))
        .ok_or(CborError::NoContent)?;
    let Value::Map(fields) = content else {
        return Err(CborError::NoContent);
    };

    let mut out = Content::default();
    for (key, value) in fields {
        let Some(key) = key.as_text() else { continue };
        match key {
            "request_type" => out.request_type = Some(text(value, "request_type")?),
            "sender" => out.sender = Some(principal(value, "sender")?),
            "canister_id" => out.canister_id = Some(principal(value, "canister_id")?),
            "method_name" => out.method_name = Some(text(value, "method_name")?),
            "nonce" => out.nonce = Some(bytes(value, "nonce")?),
            "ingress_expiry" => out.ingress_expiry = Some(nat64(value, "ingress_expiry")?),
            "arg" => out.arg = Some(bytes(value, "arg")?),
            _ => {}
        }
    }
    if out.sender.is_none() {
        return Err(CborError::Missing("sender"));
    }
    Ok(out)
}

/// Strips the self-describe tag, if present.
pub(crate) fn untag(value: Value) -> Value {
    match value {
        Value::Tag(SELF_DESCRIBE_TAG, inner) => *inner,
        other => other,
    }
}

fn text(value: Value, field: &'static str) -> Result<String, CborError> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(CborError::Invalid {
            field,
            reason: "not a text string",
        }),
    }
}

fn bytes(value: Value, field: &'static str) -> Result<Vec<u8>, CborError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(CborError::Invalid {
            field,
            reason: "not a byte string",
        }),
    }
}

fn principal(value: Value, field: &'static str) -> Result<Principal, CborError> {
    let blob = bytes(value, field)?;
    Principal::from_slice(&blob).map_err(|_| CborError::Invalid {
        field,
        reason: "longer than 29 bytes",
    })
}

pub(crate) fn nat64(value: Value, field: &'static str) -> Result<u64, CborError> {
    match value {
        Value::Integer(i) => u64::try_from(i).map_err(|_| CborError::Invalid {
            field,
            reason: "not a 64-bit natural number",
        }),
        _ => Err(CborError::Invalid {
            field,
            reason: "not an integer",
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a request envelope shaped as agents send it.
    pub(crate) fn envelope(fields: Vec<(&str, Value)>, tagged: bool, signed: bool) -> Vec<u8> {
        let content = Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        );
        let mut outer = vec![(Value::Text("content".into()), content)];
        if signed {
            outer.push((
                Value::Text("sender_pubkey".into()),
                Value::Bytes(vec![0x30; 44]),
            ));
            outer.push((Value::Text("sender_sig".into()), Value::Bytes(vec![1; 64])));
        }
        let mut value = Value::Map(outer);
        if tagged {
            value = Value::Tag(SELF_DESCRIBE_TAG, Box::new(value));
        }
        let mut out = Vec::new();
        ciborium::ser::into_writer(&value, &mut out).unwrap();
        out
    }

    fn query_fields() -> Vec<(&'static str, Value)> {
        vec![
            ("request_type", Value::Text("query".into())),
            ("sender", Value::Bytes(vec![4])),
            (
                "canister_id",
                Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
            ),
            ("method_name", Value::Text("greet".into())),
            ("arg", Value::Bytes(b"DIDL\x00\x00".to_vec())),
            (
                "ingress_expiry",
                Value::Integer(1_685_570_400_000_000_000u64.into()),
            ),
        ]
    }

    #[test]
    fn decodes_tagged_and_untagged_envelopes() {
        for tagged in [true, false] {
            let body = envelope(query_fields(), tagged, false);
            let c = decode_content(&body).unwrap();
            assert_eq!(c.request_type.as_deref(), Some("query"));
            assert!(c.is_anonymous());
            assert_eq!(
                c.canister_id.unwrap().to_string(),
                "rrkah-fqaaa-aaaaa-aaaaq-cai"
            );
            assert_eq!(c.method_name.as_deref(), Some("greet"));
            assert_eq!(c.ingress_expiry, Some(1_685_570_400_000_000_000));
            assert_eq!(c.arg.as_deref(), Some(&b"DIDL\x00\x00"[..]));
            assert_eq!(c.nonce, None);
        }
    }

    #[test]
    fn decodes_signed_calls_with_nonce_and_read_state() {
        let mut fields = query_fields();
        fields[0].1 = Value::Text("call".into());
        fields[1].1 = Value::Bytes(vec![9; 29]);
        fields.push(("nonce", Value::Bytes(vec![7; 8])));
        let c = decode_content(&envelope(fields, true, true)).unwrap();
        assert_eq!(c.request_type.as_deref(), Some("call"));
        assert!(!c.is_anonymous());
        assert_eq!(c.nonce, Some(vec![7; 8]));

        let read_state = vec![
            ("request_type", Value::Text("read_state".into())),
            ("sender", Value::Bytes(vec![4])),
            (
                "paths",
                Value::Array(vec![Value::Array(vec![Value::Bytes(b"time".to_vec())])]),
            ),
            ("ingress_expiry", Value::Integer(1u64.into())),
        ];
        let c = decode_content(&envelope(read_state, true, false)).unwrap();
        assert_eq!(c.method_name, None);
        assert_eq!(c.canister_id, None);
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert!(matches!(decode_content(b""), Err(CborError::Malformed(_))));
        assert!(matches!(
            decode_content(b"\xff\x00"),
            Err(CborError::Malformed(_))
        ));
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Integer(5.into()), &mut out).unwrap();
        assert_eq!(decode_content(&out), Err(CborError::NotAMap));
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Map(vec![]), &mut out).unwrap();
        assert_eq!(decode_content(&out), Err(CborError::NoContent));

        let mut fields = query_fields();
        fields.remove(1);
        assert_eq!(
            decode_content(&envelope(fields, true, false)),
            Err(CborError::Missing("sender"))
        );
        let mut fields = query_fields();
        fields[1].1 = Value::Bytes(vec![1; 30]);
        assert!(matches!(
            decode_content(&envelope(fields, true, false)),
            Err(CborError::Invalid {
                field: "sender",
                ..
            })
        ));
        let mut fields = query_fields();
        fields[5].1 = Value::Integer((-1).into());
        assert!(matches!(
            decode_content(&envelope(fields, true, false)),
            Err(CborError::Invalid {
                field: "ingress_expiry",
                ..
            })
        ));
        let mut fields = query_fields();
        fields[3].1 = Value::Bytes(b"greet".to_vec());
        assert!(matches!(
            decode_content(&envelope(fields, true, false)),
            Err(CborError::Invalid {
                field: "method_name",
                ..
            })
        ));
    }

    #[test]
    fn deep_nesting_and_truncation_do_not_panic() {
        let deep = vec![0x81u8; 100_000];
        assert!(decode_content(&deep).is_err());
        let body = envelope(query_fields(), true, true);
        for cut in 0..body.len() {
            let _ = decode_content(&body[..cut]);
        }
        // A huge declared length with no data behind it.
        assert!(decode_content(b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(decode_content(b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    }
}
