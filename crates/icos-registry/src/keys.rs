//! Ed25519 keys: generation, PEM files (PKCS#8), TUF key ids, signing and
//! verification.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key};

use crate::error::RepoError;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// An Ed25519 private key, loaded from a PEM (PKCS#8) file.
#[derive(Debug)]
pub struct SigningKey {
    pair: Ed25519KeyPair,
    path: PathBuf,
}

impl SigningKey {
    /// Generates a new key and writes it to `path` (mode 0600), refusing to
    /// overwrite an existing file.
    pub fn generate(path: &Path) -> Result<SigningKey, RepoError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| RepoError::key(path, "the system random generator failed"))?;
        let pem = to_pem(pkcs8.as_ref());
        write_private(path, pem.as_bytes())?;
        SigningKey::load(path)
    }

    /// Loads a key from a PEM file (`-----BEGIN PRIVATE KEY-----`).
    pub fn load(path: &Path) -> Result<SigningKey, RepoError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RepoError::key(path, e.to_string()))?;
        let body: String = text
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != PEM_BEGIN)
            .skip(1)
            .take_while(|l| *l != PEM_END)
            .collect();
        if body.is_empty() {
            return Err(RepoError::key(
                path,
                "not a PEM private key (no BEGIN PRIVATE KEY block)",
            ));
        }
        let der = STANDARD
            .decode(body)
            .map_err(|e| RepoError::key(path, format!("bad base64: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| RepoError::key(path, format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(SigningKey {
            pair,
            path: path.to_owned(),
        })
    }

    /// Where the key was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.pair.public_key().as_ref()[..32]);
        out
    }

    /// The public key as TUF metadata lists it.
    pub fn tuf_key(&self) -> Key {
        tuf_key(&self.public_bytes())
    }

    /// The TUF key id (SHA-256 of the key's canonical JSON).
    pub fn key_id(&self) -> Decoded<Hex> {
        key_id(&self.tuf_key())
    }

    /// Signs a message.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// The TUF form of an Ed25519 public key.
pub fn tuf_key(public: &[u8; 32]) -> Key {
    Key::Ed25519 {
        keyval: Ed25519Key {
            public: public.to_vec().into(),
            _extra: HashMap::new(),
        },
        scheme: Ed25519Scheme::Ed25519,
        _extra: HashMap::new(),
    }
}

/// The TUF key id of a key.
pub fn key_id(key: &Key) -> Decoded<Hex> {
    // Serializing a key into memory cannot fail.
    key.key_id().unwrap_or_else(|_| Vec::new().into())
}

/// Verifies an Ed25519 signature made by a TUF key.
pub fn verify(key: &Key, msg: &[u8], sig: &[u8]) -> bool {
    match key {
        Key::Ed25519 { keyval, .. } => UnparsedPublicKey::new(&ED25519, keyval.public.as_ref())
            .verify(msg, sig)
            .is_ok(),
        _ => false,
    }
}

fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from(PEM_BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| RepoError::io(path, e))?;
    f.write_all(bytes).map_err(|e| RepoError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_sign_verify() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("k.pem");
        let k = SigningKey::generate(&path).unwrap_or_else(|e| panic!("{e}"));
        let again = SigningKey::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.public_bytes(), again.public_bytes());
        assert_eq!(k.key_id(), again.key_id());
        let sig = k.sign(b"hello");
        assert!(verify(&k.tuf_key(), b"hello", &sig));
        assert!(!verify(&k.tuf_key(), b"hellp", &sig));
        // Never overwrite a key.
        assert!(SigningKey::generate(&path).is_err());
        std::fs::write(dir.path().join("bad.pem"), "hello").unwrap_or_default();
        let err = SigningKey::load(&dir.path().join("bad.pem"))
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
