//! Node operator keys: Ed25519 or secp256k1, as IC node operators hold them.
//!
//! An operator's key is what its node providers keep in
//! `node_operator_private_key.pem`. IC operators usually made theirs with
//! `dfx identity` (secp256k1, `-----BEGIN EC PRIVATE KEY-----`); Ed25519
//! PKCS#8 keys (`-----BEGIN PRIVATE KEY-----`) are accepted as well. The
//! registry records the public key in hex: 32 bytes for Ed25519, a 33-byte
//! compressed point for secp256k1. The operator id is the IC principal of
//! the key: SHA-224 of its DER `SubjectPublicKeyInfo`, then `0x02`, the
//! same principal `dfx` and `ic-agent` show for that identity.
//! Signatures are Ed25519, or ECDSA over SHA-256 (64 bytes, `r || s`).

use std::path::{Path, PathBuf};

use k256::ecdsa::signature::{Signer, Verifier};
use k256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha224};

use icos_boundary::Principal;

use crate::error::RepoError;
use crate::keys::{self, SigningKey};
use crate::model::Violation;

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo`; the key follows.
const ED25519_DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An operator's public key, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorPublicKey {
    /// Ed25519.
    Ed25519([u8; 32]),
    /// secp256k1 (ECDSA).
    Secp256k1(k256::PublicKey),
}

impl OperatorPublicKey {
    /// Parses the registry's hex form: 32 bytes (Ed25519), or a 33-byte
    /// compressed or 65-byte uncompressed secp256k1 point. `field` names
    /// the field in the error.
    pub fn from_hex(field: &str, text: &str) -> Result<OperatorPublicKey, Violation> {
        let bytes = hex::decode(text)
            .map_err(|e| Violation::new(field, format!("{text:?} is not hex: {e}")))?;
        match bytes.len() {
            32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(OperatorPublicKey::Ed25519(key))
            }
            33 | 65 => k256::PublicKey::from_sec1_bytes(&bytes)
                .map(OperatorPublicKey::Secp256k1)
                .map_err(|_| {
                    Violation::new(field, "not a point on the secp256k1 curve".to_owned())
                }),
            n => Err(Violation::new(
                field,
                format!(
                    "an operator key is an Ed25519 key (32 bytes) or a secp256k1 point \
                     (33 or 65 bytes), this one has {n}"
                ),
            )),
        }
    }

    /// The registry's hex form (secp256k1 compressed).
    pub fn to_hex(&self) -> String {
        match self {
            OperatorPublicKey::Ed25519(k) => hex::encode(k),
            OperatorPublicKey::Secp256k1(k) => hex::encode(k.to_sec1_bytes()),
        }
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn der(&self) -> Vec<u8> {
        match self {
            OperatorPublicKey::Ed25519(k) => [&ED25519_DER_PREFIX[..], &k[..]].concat(),
            OperatorPublicKey::Secp256k1(k) => k
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The operator id: the key's self-authenticating IC principal.
    pub fn id(&self) -> String {
        principal_of_der(&self.der())
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            OperatorPublicKey::Ed25519(k) => keys::verify(&keys::tuf_key(k), msg, sig),
            OperatorPublicKey::Secp256k1(k) => {
                let Ok(sig) = k256::ecdsa::Signature::from_slice(sig) else {
                    return false;
                };
                k256::ecdsa::VerifyingKey::from(k).verify(msg, &sig).is_ok()
            }
        }
    }
}

/// The self-authenticating principal of a DER public key: SHA-224 of the
/// DER, followed by the byte 0x02.
pub fn principal_of_der(der: &[u8]) -> String {
    let mut blob = Sha224::digest(der).to_vec();
    blob.push(0x02);
    // 29 bytes always fit a principal.
    Principal::from_slice(&blob)
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// A node operator's private key.
#[derive(Debug)]
pub enum OperatorKey {
    /// Ed25519, PKCS#8.
    Ed25519(SigningKey),
    /// secp256k1, SEC1 (`EC PRIVATE KEY`) or PKCS#8.
    Secp256k1 {
        /// The key.
        key: k256::ecdsa::SigningKey,
        /// Where it was loaded from.
        path: PathBuf,
    },
}

impl OperatorKey {
    /// Loads a PEM key file: secp256k1 (`EC PRIVATE KEY`, or PKCS#8) or
    /// Ed25519 (PKCS#8).
    pub fn load(path: &Path) -> Result<OperatorKey, RepoError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RepoError::key(path, e.to_string()))?;
        if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            let secret = k256::SecretKey::from_sec1_pem(text.trim()).map_err(|e| {
                RepoError::key(path, format!("not a secp256k1 EC private key: {e}"))
            })?;
            return Ok(OperatorKey::Secp256k1 {
                key: secret.into(),
                path: path.to_owned(),
            });
        }
        match SigningKey::load(path) {
            Ok(k) => Ok(OperatorKey::Ed25519(k)),
            Err(ed_err) => match k256::SecretKey::from_pkcs8_pem(text.trim()) {
                Ok(secret) => Ok(OperatorKey::Secp256k1 {
                    key: secret.into(),
                    path: path.to_owned(),
                }),
                Err(_) => Err(RepoError::key(
                    path,
                    format!(
                        "not an operator key: neither secp256k1 (EC PRIVATE KEY or PKCS#8) \
                         nor Ed25519 PKCS#8 ({ed_err})"
                    ),
                )),
            },
        }
    }

    /// Where the key was loaded from.
    pub fn path(&self) -> &Path {
        match self {
            OperatorKey::Ed25519(k) => k.path(),
            OperatorKey::Secp256k1 { path, .. } => path,
        }
    }

    /// The public key.
    pub fn public(&self) -> OperatorPublicKey {
        match self {
            OperatorKey::Ed25519(k) => OperatorPublicKey::Ed25519(k.public_bytes()),
            OperatorKey::Secp256k1 { key, .. } => {
                OperatorPublicKey::Secp256k1(k256::PublicKey::from(key.verifying_key()))
            }
        }
    }

    /// Signs `msg` (Ed25519, or ECDSA over SHA-256 as `r || s`).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            OperatorKey::Ed25519(k) => k.sign(msg),
            OperatorKey::Secp256k1 { key, .. } => {
                let sig: k256::ecdsa::Signature = key.sign(msg);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// What signs for an operator: an [`OperatorKey`], or an Ed25519
/// [`SigningKey`].
pub trait OperatorSigner {
    /// The public key.
    fn operator_public(&self) -> OperatorPublicKey;
    /// A signature of `msg`.
    fn operator_sign(&self, msg: &[u8]) -> Vec<u8>;
}

impl OperatorSigner for OperatorKey {
    fn operator_public(&self) -> OperatorPublicKey {
        self.public()
    }
    fn operator_sign(&self, msg: &[u8]) -> Vec<u8> {
        self.sign(msg)
    }
}

impl OperatorSigner for SigningKey {
    fn operator_public(&self) -> OperatorPublicKey {
        OperatorPublicKey::Ed25519(self.public_bytes())
    }
    fn operator_sign(&self, msg: &[u8]) -> Vec<u8> {
        self.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node operator key of `examples/` (made like `dfx identity new`).
    const EXAMPLE: &str = include_str!("../../../examples/node_operator_private_key.pem");

    fn example(dir: &Path) -> OperatorKey {
        let path = dir.join("op.pem");
        std::fs::write(&path, EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        OperatorKey::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_ec_key_signs_and_its_hex_form_round_trips() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = example(dir.path());
        assert!(matches!(key, OperatorKey::Secp256k1 { .. }));
        let public = key.public();
        let hex = public.to_hex();
        assert_eq!(hex.len(), 66, "{hex}");
        let back =
            OperatorPublicKey::from_hex("public_key", &hex).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(back, public);
        let sig = key.sign(b"icos");
        assert_eq!(sig.len(), 64);
        assert!(back.verify(b"icos", &sig));
        assert!(!back.verify(b"icoS", &sig));
        assert!(!back.verify(b"icos", &sig[..63]));
        // The DER form is the SubjectPublicKeyInfo of an uncompressed point.
        let der = public.der();
        assert_eq!(der.len(), 88);
        assert_eq!(&der[der.len() - 65..der.len() - 64], &[0x04]);
    }

    #[test]
    fn the_operator_id_is_the_principal_ic_agent_gives_the_same_identity() {
        use ic_agent::Identity;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ours = example(dir.path()).public().id();
        let secret =
            k256::SecretKey::from_sec1_pem(EXAMPLE.trim()).unwrap_or_else(|e| panic!("{e}"));
        let agent = ic_agent::identity::Secp256k1Identity::from_private_key(secret)
            .sender()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours, agent.to_text());
    }

    #[test]
    fn ed25519_keys_keep_their_ids_and_signatures() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ed = SigningKey::generate(&dir.path().join("ed.pem")).unwrap_or_else(|e| panic!("{e}"));
        let public = ed.public_bytes();
        let key = OperatorKey::load(&dir.path().join("ed.pem")).unwrap_or_else(|e| panic!("{e}"));
        let op = key.public();
        assert_eq!(op, OperatorPublicKey::Ed25519(public));
        assert_eq!(op.id(), crate::model::self_authenticating_id(&public));
        assert!(op.verify(b"m", &key.sign(b"m")));
    }

    #[test]
    fn bad_key_text_is_refused_with_the_rule() {
        for (text, rule) in [
            ("zz", "not hex"),
            (&"11".repeat(20)[..], "has 20"),
            (&format!("02{}", "ff".repeat(32))[..], "secp256k1 curve"),
        ] {
            let err = OperatorPublicKey::from_hex("public_key", text).unwrap_err();
            assert!(err.rule.contains(rule), "{text}: {err:?}");
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("junk.pem");
        std::fs::write(
            &path,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = OperatorKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("secp256k1"),
            "{err}"
        );
    }
}
