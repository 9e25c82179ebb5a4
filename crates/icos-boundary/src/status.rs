//! The `/api/v2/status` CBOR document: reading replicas' and writing ours.
//!
//! A replica answers a self-describing CBOR map with `root_key` (DER),
//! `impl_version`, `impl_hash`, `replica_health_status` and
//! `certified_height`. The router answers its own, with the root key from
//! the routing table and an aggregate health, and no version or height.

use ciborium::Value;

use crate::envelope::{CborError, SELF_DESCRIBE_TAG, nat64, untag};

/// A replica's (or the router's) health, as the status document spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Starting up (the router: no routing table yet).
    Starting,
    /// Waiting for a certified state.
    WaitingForCertifiedState,
    /// Waiting for the root subnet's delegation.
    WaitingForRootDelegation,
    /// Ready to serve.
    Healthy,
    /// Behind (the router: too few healthy subnets).
    CertifiedStateBehind,
}

impl HealthStatus {
    /// The snake_case name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::WaitingForCertifiedState => "waiting_for_certified_state",
            Self::WaitingForRootDelegation => "waiting_for_root_delegation",
            Self::Healthy => "healthy",
            Self::CertifiedStateBehind => "certified_state_behind",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Self::Starting,
            "waiting_for_certified_state" => Self::WaitingForCertifiedState,
            "waiting_for_root_delegation" => Self::WaitingForRootDelegation,
            "healthy" => Self::Healthy,
            "certified_state_behind" => Self::CertifiedStateBehind,
            _ => return None,
        })
    }
}

/// What a replica's status document says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// `replica_health_status`, when present and known.
    pub health: Option<HealthStatus>,
    /// `impl_version`.
    pub impl_version: Option<String>,
    /// `certified_height`.
    pub certified_height: Option<u64>,
    /// `root_key` (DER).
    pub root_key: Option<Vec<u8>>,
}

impl ReplicaStatus {
    /// Healthy as ic-boundary judges it: `healthy` and an `impl_version`.
    pub fn is_healthy(&self) -> bool {
        self.health == Some(HealthStatus::Healthy) && self.impl_version.is_some()
    }
}

/// Decodes a replica's status document. Never panics.
pub fn decode_status(body: &[u8]) -> Result<ReplicaStatus, CborError> {
    let value: Value =
        ciborium::de::from_reader(body).map_err(|e| CborError::Malformed(e.to_string()))?;
    let Value::Map(fields) = untag(value) else {
        return Err(CborError::NotAMap);
    };
    let mut out = ReplicaStatus::default();
    for (key, value) in fields {
        match (key.as_text(), value) {
            (Some("replica_health_status"), Value::Text(s)) => out.health = HealthStatus::parse(&s),
            (Some("impl_version"), Value::Text(s)) => out.impl_version = Some(s),
            (Some("root_key"), Value::Bytes(b)) => out.root_key = Some(b),
            (Some("certified_height"), v @ Value::Integer(_)) => {
                out.certified_height = Some(nat64(v, "certified_height")?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Encodes the router's own status document (tagged CBOR map).
pub fn encode_status(root_key: Option<&[u8]>, health: HealthStatus) -> Vec<u8> {
    let mut fields = Vec::with_capacity(2);
    if let Some(key) = root_key {
        fields.push((Value::Text("root_key".into()), Value::Bytes(key.to_vec())));
    }
    fields.push((
        Value::Text("replica_health_status".into()),
        Value::Text(health.as_str().into()),
    ));
    let value = Value::Tag(SELF_DESCRIBE_TAG, Box::new(Value::Map(fields)));
    let mut out = Vec::new();
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&value, &mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A replica's status document, as replicas send it.
    pub(crate) fn replica_status(health: &str, version: Option<&str>, height: u64) -> Vec<u8> {
        let mut fields = vec![
            (
                Value::Text("ic_api_version".into()),
                Value::Text("0.18.0".into()),
            ),
            (
                Value::Text("root_key".into()),
                Value::Bytes(vec![0x30; 133]),
            ),
            (
                Value::Text("replica_health_status".into()),
                Value::Text(health.into()),
            ),
            (
                Value::Text("certified_height".into()),
                Value::Integer(height.into()),
            ),
        ];
        if let Some(v) = version {
            fields.push((Value::Text("impl_version".into()), Value::Text(v.into())));
        }
        let mut out = Vec::new();
        ciborium::ser::into_writer(
            &Value::Tag(SELF_DESCRIBE_TAG, Box::new(Value::Map(fields))),
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn replica_status_is_decoded() {
        let s = decode_status(&replica_status("healthy", Some("0.9.0"), 1234)).unwrap();
        assert!(s.is_healthy());
        assert_eq!(s.certified_height, Some(1234));
        assert_eq!(s.root_key.as_deref().map(<[u8]>::len), Some(133));
        let s = decode_status(&replica_status("healthy", None, 1)).unwrap();
        assert!(!s.is_healthy(), "no impl_version");
        let s = decode_status(&replica_status("starting", Some("x"), 1)).unwrap();
        assert!(!s.is_healthy());
        let s = decode_status(&replica_status("bogus", Some("x"), 1)).unwrap();
        assert_eq!(s.health, None);
        assert!(decode_status(b"\xa1").is_err());
    }

    #[test]
    fn own_status_round_trips() {
        let body = encode_status(Some(&[1, 2, 3]), HealthStatus::Healthy);
        assert_eq!(&body[..3], &[0xd9, 0xd9, 0xf7], "self-describe tag");
        let s = decode_status(&body).unwrap();
        assert_eq!(s.health, Some(HealthStatus::Healthy));
        assert_eq!(s.root_key, Some(vec![1, 2, 3]));
        let s = decode_status(&encode_status(None, HealthStatus::Starting)).unwrap();
        assert_eq!(s.health, Some(HealthStatus::Starting));
        assert_eq!(s.root_key, None);
    }
}
