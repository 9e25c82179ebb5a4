//! `upgrade`: download a HostOS upgrade image and verify its SHA-256.
//!
//! The image streams into a temporary file in the upgrade directory while it
//! is hashed. Only when the digest equals `target-hash` is it renamed to
//! [`IMAGE_FILE`] and the [`READY_MARKER`] written next to it; otherwise the
//! temporary file is deleted and the request is refused. A new request first
//! removes the previous image and marker, so the marker always describes the
//! latest verified request. Installing the image is the HostOS upgrade
//! installer's job, which looks for the marker.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The verified image's file name in the upgrade directory.
pub const IMAGE_FILE: &str = "update-img.tar.zst";
/// The marker that tells the installer a verified image is ready.
pub const READY_MARKER: &str = "upgrade-ready";
/// IC's download timeout; here it bounds connecting, waiting for the
/// response and each read, so a large image on a live connection completes.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an upgrade download was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// `target-hash` is not 64 hex digits.
    #[error("target-hash {0:?} is not a SHA-256 (64 hex digits)")]
    BadHash(String),
    /// The URL is not http:// or https://.
    #[error("url {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// The upgrade directory could not be prepared or written.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP request failed.
    #[error("downloading {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading the body failed.
    #[error("downloading {url}: {source}")]
    Transfer {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The image's digest is not the requested one.
    #[error("refused: {url} has SHA-256 {actual}, expected {expected}; nothing was kept")]
    HashMismatch {
        /// The URL.
        url: String,
        /// The requested digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
}

/// Downloads `url` into `dir`, verifies it against `target_hash` and leaves
/// `dir/IMAGE_FILE` plus `dir/READY_MARKER`. Returns the image's path.
pub fn download_and_verify(
    dir: &Path,
    url: &str,
    target_hash: &str,
    timeout: Duration,
) -> Result<PathBuf, UpgradeError> {
    let expected = target_hash.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UpgradeError::BadHash(target_hash.to_string()));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(UpgradeError::BadUrl(url.to_string()));
    }
    let io_err = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| UpgradeError::Io { step, path, source }
    };
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let image = dir.join(IMAGE_FILE);
    let marker = dir.join(READY_MARKER);
    for old in [&marker, &image] {
        match fs::remove_file(old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", old)(e)),
        }
    }

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .user_agent(concat!("icos-hostos-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| UpgradeError::Http {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    // Dropped (and deleted) on every early return.
    let mut temp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    let mut body = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|source| UpgradeError::Transfer {
                url: url.to_string(),
                source,
            })?;
        let Some(chunk) = buf.get(..n) else { break };
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        temp.write_all(chunk)
            .map_err(io_err("writing", temp.path()))?;
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(UpgradeError::HashMismatch {
            url: url.to_string(),
            expected,
            actual,
        });
    }
    temp.as_file()
        .sync_all()
        .map_err(io_err("syncing", temp.path()))?;
    temp.persist(&image)
        .map_err(|e| io_err("renaming to", &image)(e.error))?;
    let text = format!("sha256={actual}\nurl={url}\nfile={IMAGE_FILE}\n");
    fs::write(&marker, text).map_err(io_err("writing", &marker))?;
    Ok(image)
}
