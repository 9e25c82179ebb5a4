//! Node registration without a vote: a join request signed by an
//! authorized node operator, admitted within the operator's allowance.
//!
//! A node generates its key at first boot and makes a request naming its
//! public key, its operator and its IPv6 address, signed by the node key
//! (possession) and by the operator key (authorization). The registry
//! service checks it against the governance-signed registry (the operator
//! exists, the signatures verify, the operator has allowance left, the node
//! and its address are new) and publishes it as a TUF target of the
//! `admissions` role, which governance delegates to the online key for
//! `admission-*` names only. Clients re-check every admission against the
//! operator keys and allowances in the governance-signed registry, so the
//! online key can withhold admissions but never add a node no operator
//! signed for, nor exceed an allowance.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::keys::{self, SigningKey};
use crate::model::{Registry, check_ed25519_hex, self_authenticating_id};
use crate::operator::{OperatorPublicKey, OperatorSigner};
use crate::proposal::{ProposalError, admit_node};

/// A join request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The node's Ed25519 public key, hex.
    pub node_public_key: String,
    /// The operator id.
    pub operator: String,
    /// The node's IPv6 address.
    pub ipv6: Ipv6Addr,
    /// The operator key's signature over [`JoinRequest::message`], hex.
    pub operator_signature: String,
    /// The node key's signature over the same message, hex.
    pub node_signature: String,
}

/// Why a join request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The node key is not an Ed25519 public key.
    #[error("node_public_key: {0}")]
    BadNodeKey(String),
    /// The operator is not in the registry.
    #[error("node operator {0} is not in the registry")]
    UnknownOperator(String),
    /// The operator signature does not verify with the operator's key.
    #[error("the operator signature does not verify with the key of node operator {0}")]
    BadOperatorSignature(String),
    /// The node signature does not verify with the node key.
    #[error("the node signature does not verify with the node key")]
    BadNodeSignature,
    /// The registry refuses the node (allowance, duplicate, address ...).
    #[error("{0}")]
    Refused(ProposalError),
}

impl JoinRequest {
    /// The signed message: a fixed prefix and the three fields, one a line.
    pub fn message(node_public_key: &str, operator: &str, ipv6: Ipv6Addr) -> Vec<u8> {
        format!("icos-join-request\n{node_public_key}\n{operator}\n{ipv6}\n").into_bytes()
    }

    /// Makes a request for `node` run by the holder of `operator` (an
    /// Ed25519 or secp256k1 operator key).
    pub fn sign(node: &SigningKey, operator: &dyn OperatorSigner, ipv6: Ipv6Addr) -> JoinRequest {
        let node_public_key = hex::encode(node.public_bytes());
        let operator_id = operator.operator_public().id();
        let msg = JoinRequest::message(&node_public_key, &operator_id, ipv6);
        JoinRequest {
            operator_signature: hex::encode(operator.operator_sign(&msg)),
            node_signature: hex::encode(node.sign(&msg)),
            node_public_key,
            operator: operator_id,
            ipv6,
        }
    }

    /// The node id the request registers.
    pub fn node_id(&self) -> Result<String, JoinError> {
        let key = check_ed25519_hex("node_public_key", &self.node_public_key)
            .map_err(|v| JoinError::BadNodeKey(v.rule))?;
        Ok(self_authenticating_id(&key))
    }

    /// Checks the request's key and both signatures against the operator
    /// keys of `registry` (not the allowance, nor whether the node is new);
    /// returns the node's public key.
    pub fn verify(&self, registry: &Registry) -> Result<[u8; 32], JoinError> {
        let node_key = check_ed25519_hex("node_public_key", &self.node_public_key)
            .map_err(|v| JoinError::BadNodeKey(v.rule))?;
        let op = registry
            .node_operators
            .get(&self.operator)
            .ok_or_else(|| JoinError::UnknownOperator(self.operator.clone()))?;
        let op_key = OperatorPublicKey::from_hex("public_key", &op.public_key)
            .map_err(|_| JoinError::UnknownOperator(self.operator.clone()))?;
        let msg = JoinRequest::message(&self.node_public_key, &self.operator, self.ipv6);
        let sig = |h: &str| hex::decode(h).unwrap_or_default();
        if !op_key.verify(&msg, &sig(&self.operator_signature)) {
            return Err(JoinError::BadOperatorSignature(self.operator.clone()));
        }
        if !keys::verify(&keys::tuf_key(&node_key), &msg, &sig(&self.node_signature)) {
            return Err(JoinError::BadNodeSignature);
        }
        Ok(node_key)
    }

    /// Checks the signatures against `registry` and admits the node: the
    /// next registry (same version: admissions do not bump it) and the node
    /// id.
    pub fn admit(&self, registry: &Registry) -> Result<(Registry, String), JoinError> {
        let node_key = self.verify(registry)?;
        let mut next = registry.clone();
        let id = admit_node(&mut next, &node_key, &self.operator, self.ipv6)
            .map_err(JoinError::Refused)?;
        next.validate()
            .map_err(|v| JoinError::Refused(ProposalError::Invalid(v)))?;
        Ok((next, id))
    }
}

/// The answer of the registry service to a join request (`POST /join`),
/// on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// `Join request successful!`, or that the node was already registered.
    pub message: String,
    /// The node id.
    pub node_id: String,
    /// The operator id.
    pub operator: String,
    /// Nodes the operator may still add.
    pub remaining_allowance: u64,
    /// Whether this request admitted the node (`false`: it was registered
    /// before, with the same key, operator and address).
    pub admitted: bool,
}

/// The message printed and answered when a join request is admitted.
pub const JOIN_SUCCESS: &str = "Join request successful!";

/// Whether `request` describes a node `registry` already has with the same
/// public key, operator and address (a repeated request).
pub fn already_registered(registry: &Registry, request: &JoinRequest) -> Option<String> {
    let id = request.node_id().ok()?;
    let node = registry.nodes.get(&id)?;
    (node.public_key.as_deref() == Some(request.node_public_key.as_str())
        && node.operator == request.operator
        && node.ipv6 == request.ipv6)
        .then_some(id)
}

/// Applies admissions in order to a governance-signed registry. Requests
/// whose node is already in the registry (folded in by a later proposal)
/// are skipped; refused ones are returned with the reason.
pub fn apply_admissions(
    registry: &Registry,
    requests: &[JoinRequest],
) -> (Registry, Vec<String>, Vec<(usize, JoinError)>) {
    let mut current = registry.clone();
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        if let Ok(id) = req.node_id()
            && current
                .nodes
                .get(&id)
                .is_some_and(|n| n.public_key.as_deref() == Some(req.node_public_key.as_str()))
        {
            continue;
        }
        match req.admit(&current) {
            Ok((next, id)) => {
                current = next;
                admitted.push(id);
            }
            Err(e) => refused.push((i, e)),
        }
    }
    (current, admitted, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeOperator;

    fn keys(dir: &std::path::Path, name: &str) -> SigningKey {
        SigningKey::generate(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_secp256k1_operator_as_dfx_makes_them_admits_its_node() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("op.pem");
        std::fs::write(
            &path,
            include_str!("../../../examples/node_operator_private_key.pem"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let op = crate::operator::OperatorKey::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let public = op.public();
        let r = crate::proposal::Proposal::AddNodeOperator {
            public_key: public.to_hex(),
            allowance: 1,
        }
        .apply(&Registry::genesis())
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.node_operators.contains_key(&public.id()));
        let n1 = keys(dir.path(), "n1.pem");
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let req = JoinRequest::sign(&n1, &op, ip);
        assert_eq!(req.operator, public.id());
        let (next, id) = req.admit(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, self_authenticating_id(&n1.public_bytes()));
        assert_eq!(next.node_operators[&public.id()].allowance, 0);
        // A flipped signature bit is refused.
        let mut bad = req.clone();
        let mut sig = hex::decode(&bad.operator_signature).unwrap_or_default();
        sig[0] ^= 1;
        bad.operator_signature = hex::encode(sig);
        assert!(matches!(
            bad.admit(&r),
            Err(JoinError::BadOperatorSignature(_))
        ));
    }

    #[test]
    fn operator_signed_requests_within_allowance_are_admitted() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let op = keys(dir.path(), "op.pem");
        let op_id = self_authenticating_id(&op.public_bytes());
        let mut r = Registry::genesis();
        r.node_operators.insert(
            op_id.clone(),
            NodeOperator {
                public_key: hex::encode(op.public_bytes()),
                allowance: 1,
            },
        );
        let n1 = keys(dir.path(), "n1.pem");
        let n2 = keys(dir.path(), "n2.pem");
        let ip = |x| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x);
        let req1 = JoinRequest::sign(&n1, &op, ip(1));
        let (next, id) = req1.admit(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, self_authenticating_id(&n1.public_bytes()));
        assert_eq!(next.node_operators[&op_id].allowance, 0);
        assert_eq!(next.version, r.version);

        let req2 = JoinRequest::sign(&n2, &op, ip(2));
        let err = req2.admit(&next).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("no node allowance left"), "{err}");

        // Signed by a key that is not the operator's.
        let stranger = keys(dir.path(), "s.pem");
        let mut forged = JoinRequest::sign(&n2, &stranger, ip(2));
        forged.operator = op_id.clone();
        assert_eq!(
            forged.admit(&r).map(|_| ()).unwrap_err(),
            JoinError::BadOperatorSignature(op_id.clone())
        );
        let unknown = JoinRequest::sign(&n2, &stranger, ip(2));
        assert!(matches!(
            unknown.admit(&r),
            Err(JoinError::UnknownOperator(_))
        ));
        // A changed address breaks both signatures.
        let mut moved = req1.clone();
        moved.ipv6 = ip(9);
        assert!(matches!(
            moved.admit(&r),
            Err(JoinError::BadOperatorSignature(_))
        ));

        // Applying a list: in order, duplicates skipped, refusals reported.
        let (after, admitted, refused) =
            apply_admissions(&r, &[req1.clone(), req1.clone(), req2.clone()]);
        assert_eq!(admitted, vec![id.clone()]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 2);
        assert!(after.nodes.contains_key(&id));
        // Once folded into the registry, the request is skipped silently.
        let (again, admitted, refused) = apply_admissions(&after, &[req1]);
        assert_eq!((admitted.len(), refused.len()), (0, 0));
        assert_eq!(again, after);
    }
}
