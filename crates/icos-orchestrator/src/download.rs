//! Downloading a release package: resumable, hash-checked, before anything
//! touches the disk.
//!
//! The package of a version with SHA-256 `H` goes to `<dir>/H.part` while it
//! is being downloaded and is renamed to `<dir>/H.tar.zst` once complete and
//! checked. A partial file left by a cut connection or a crash is resumed
//! with an HTTP `Range: bytes=N-` request; a server that answers `200`
//! instead of `206` sends the whole file again, which replaces the partial
//! one. A file whose SHA-256 is not `H` is deleted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::target::Release;

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed between two reads of the body.
    pub read_timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A checked package on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The complete file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes fetched over the network by this call.
    pub fetched: u64,
    /// Where from (`None` when the file was already complete).
    pub url: Option<String>,
    /// Whether the download continued a partial file.
    pub resumed: bool,
}

/// The complete file of a release in `dir`.
pub fn complete_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.tar.zst"))
}

/// The partial file of a release in `dir`.
pub fn partial_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.part"))
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Fetches the rest of `release` from one URL into `part`. Returns the
/// bytes fetched and whether a partial file was continued.
async fn fetch_one(
    client: &reqwest::Client,
    url: &url::Url,
    part: &Path,
    counter: &AtomicU64,
) -> Result<(u64, bool), String> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url.clone());
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| format!("{e:#}"))?;
    let status = resp.status();
    let (append, resumed) = match status {
        StatusCode::PARTIAL_CONTENT if have > 0 => {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                return Err(format!(
                    "asked for bytes from {have}, the server sent Content-Range {start:?}"
                ));
            }
            (true, true)
        }
        StatusCode::OK => (false, false),
        // The partial file is already as long as the package (or longer):
        // the hash check decides.
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => return Ok((0, true)),
        other => return Err(format!("HTTP status {other}")),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(|e| format!("{}: opening: {e}", part.display()))?;
    let mut fetched = 0u64;
    let result = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = file.write_all(&chunk).await {
                    break Err(format!("{}: writing: {e}", part.display()));
                }
                fetched += chunk.len() as u64;
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("cut after {fetched} bytes: {e:#}")),
        }
    };
    // What arrived is kept (and synced) even when the body was cut, so the
    // next attempt resumes after it.
    let synced = match file.flush().await {
        Ok(()) => file.sync_all().await,
        Err(e) => Err(e),
    };
    result?;
    synced.map_err(|e| format!("{}: syncing: {e}", part.display()))?;
    Ok((fetched, resumed))
}

/// Downloads `release` into `dir` from its URLs in order (already rotated),
/// resuming a partial file; `counter` counts the bytes fetched. The file
/// is not checked yet: [`verify`] does that. A complete file (checked by an
/// earlier pass) is returned without any request.
pub async fn download(
    release: &Release,
    dir: &Path,
    options: &DownloadOptions,
    counter: Arc<AtomicU64>,
) -> Result<Downloaded, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating", e))?;
    let done = complete_path(dir, &release.sha256);
    if let Ok(meta) = std::fs::metadata(&done) {
        return Ok(Downloaded {
            path: done,
            size: meta.len(),
            fetched: 0,
            url: None,
            resumed: false,
        });
    }
    let part = partial_path(dir, &release.sha256);
    let client = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .build()
        .map_err(|e| Error::Download {
            version: release.version.clone(),
            detail: format!("{e:#}"),
        })?;
    let mut errors = Vec::new();
    for url in &release.urls {
        match fetch_one(&client, url, &part, &counter).await {
            Ok((fetched, resumed)) => {
                let size = std::fs::metadata(&part)
                    .map_err(|e| Error::io(&part, "reading", e))?
                    .len();
                return Ok(Downloaded {
                    path: part,
                    size,
                    fetched,
                    url: Some(url.to_string()),
                    resumed,
                });
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "release download failed");
                errors.push(format!("{url}: {e}"));
            }
        }
    }
    Err(Error::Download {
        version: release.version.clone(),
        detail: if errors.is_empty() {
            "the registry lists no URL".to_owned()
        } else {
            errors.join("; ")
        },
    })
}

/// Checks the downloaded file against the elected SHA-256. A match is
/// renamed to the complete file and returned; a mismatch is deleted and is
/// an error, so that nothing of it reaches the disk.
pub fn verify(release: &Release, downloaded: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let actual = sha256_file(downloaded)?;
    if actual != release.sha256 {
        std::fs::remove_file(downloaded).map_err(|e| Error::io(downloaded, "deleting", e))?;
        return Err(Error::HashMismatch {
            file: downloaded.to_path_buf(),
            expected: release.sha256.clone(),
            actual,
        });
    }
    let done = complete_path(dir, &release.sha256);
    if downloaded != done {
        std::fs::rename(downloaded, &done).map_err(|e| Error::io(downloaded, "renaming", e))?;
    }
    Ok(done)
}

/// Deletes every file in `dir` but the complete or partial file of
/// `keep` (old releases, abandoned partial downloads).
pub fn prune(dir: &Path, keep: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = keep.is_some_and(|h| name.starts_with(h));
        if !kept && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(file = %entry.path().display(), error = %e, "could not delete");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn release(sha256: &str, urls: Vec<url::Url>) -> Release {
        Release {
            version: "v2".into(),
            urls,
            sha256: sha256.into(),
        }
    }

    #[test]
    fn verify_renames_a_match_and_deletes_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let good = hex::encode(Sha256::digest(b"package"));
        let part = partial_path(dir.path(), &good);
        std::fs::write(&part, b"package").unwrap();
        let done = verify(&release(&good, vec![]), &part, dir.path()).unwrap();
        assert_eq!(done, complete_path(dir.path(), &good));
        assert!(!part.exists() && done.exists());
        // Verifying the complete file again keeps it.
        assert_eq!(
            verify(&release(&good, vec![]), &done, dir.path()).unwrap(),
            done
        );

        let wanted = "ab".repeat(32);
        let part = partial_path(dir.path(), &wanted);
        std::fs::write(&part, b"something else").unwrap();
        let err = verify(&release(&wanted, vec![]), &part, dir.path()).unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wanted), "{err}");
        assert!(!part.exists(), "a mismatching file is deleted");
    }

    #[test]
    fn prune_keeps_only_the_current_release() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["aa.part", "aa.tar.zst", "bb.part", "cc.tar.zst"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        prune(dir.path(), Some("aa"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["aa.part", "aa.tar.zst"]);
        prune(dir.path(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A missing directory is no error.
        prune(&dir.path().join("none"), None);
    }

    #[tokio::test]
    async fn no_url_is_an_error_naming_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let err = download(
            &release(&"ab".repeat(32), vec![]),
            dir.path(),
            &DownloadOptions::default(),
            Arc::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "downloading v2: every URL failed: the registry lists no URL"
        );
    }
}
