//! Key derivation and public-key encodings.
//!
//! Every key of a testnet is derived from its root seed, so that every
//! replica of a testnet, started from the same configuration, has the same
//! root key, subnet keys and node keys: the root (NNS) key signs the
//! delegations, each subnet's key signs its certificates, each node's
//! Ed25519 key signs query responses.

use candid::Principal;
use ed25519_consensus::SigningKey;
use ic_verify_bls_signature::PrivateKey;
use sha2::{Digest, Sha256};

/// The DER prefix of a BLS12-381 (G2) public key, 37 bytes.
pub const BLS_DER_PREFIX: [u8; 37] = [
    0x30, 0x81, 0x82, 0x30, 0x1d, 0x06, 0x0d, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05,
    0x03, 0x01, 0x02, 0x01, 0x06, 0x0c, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05, 0x03,
    0x02, 0x01, 0x03, 0x61, 0x00,
];

/// The DER prefix of an Ed25519 public key, 12 bytes.
pub const ED25519_DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn derive(domain: &str, parts: &[&[u8]], counter: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update(u64::try_from(p.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(p);
    }
    h.update([counter]);
    h.finalize().into()
}

fn bls_key(domain: &str, parts: &[&[u8]]) -> PrivateKey {
    let mut counter = 0u8;
    loop {
        let mut b = derive(domain, parts, counter);
        // Below 2^254, so always below the group order.
        b[0] &= 0x3f;
        if let Ok(k) = PrivateKey::deserialize(&b)
            && b.iter().any(|x| *x != 0)
        {
            return k;
        }
        counter = counter.wrapping_add(1);
    }
}

/// The root (NNS) key of a testnet.
pub fn root_key(seed: &[u8]) -> PrivateKey {
    bls_key("icos-testnet-root-key", &[seed])
}

/// The threshold key of one subnet.
pub fn subnet_key(seed: &[u8], subnet: &Principal) -> PrivateKey {
    bls_key("icos-testnet-subnet-key", &[seed, subnet.as_slice()])
}

/// The Ed25519 key of node `index` of a subnet.
pub fn node_key(seed: &[u8], subnet: &Principal, index: u32) -> SigningKey {
    SigningKey::from(derive(
        "icos-testnet-node-key",
        &[seed, subnet.as_slice(), &index.to_be_bytes()],
        0,
    ))
}

/// The DER encoding of a BLS public key.
pub fn bls_der(key: &PrivateKey) -> Vec<u8> {
    let mut der = BLS_DER_PREFIX.to_vec();
    der.extend_from_slice(&key.public_key().serialize());
    der
}

/// The DER encoding of an Ed25519 public key.
pub fn ed25519_der(key: &SigningKey) -> Vec<u8> {
    let mut der = ED25519_DER_PREFIX.to_vec();
    der.extend_from_slice(key.verification_key().as_bytes());
    der
}

/// The node id: the self-authenticating principal of the node's DER key.
pub fn node_id(key: &SigningKey) -> Principal {
    Principal::self_authenticating(ed25519_der(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_well_formed() {
        let a = root_key(b"seed");
        let b = root_key(b"seed");
        assert_eq!(a.serialize(), b.serialize());
        assert_ne!(a.serialize(), root_key(b"other").serialize());
        let der = bls_der(&a);
        assert_eq!(der.len(), 133);
        let sig = a.sign(b"m").serialize();
        assert!(ic_verify_bls_signature::verify_bls_signature(&sig, b"m", &der[37..]).is_ok());
        let n = node_key(b"seed", &Principal::anonymous(), 0);
        assert_eq!(ed25519_der(&n).len(), 44);
    }
}
