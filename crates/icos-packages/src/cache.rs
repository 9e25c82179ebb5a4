//! The content-addressed package cache, and fetching a lock's packages into it.
//!
//! # Layout
//!
//! `DIR/sha256/<64 hex digits>.deb`: a file is named by the SHA-256 of its
//! content, so two locks that pin the same package share one file, and a
//! file can be checked against its own name. The default `DIR` is
//! `$ICOS_CACHE`, else `$XDG_CACHE_HOME/icos`, else `~/.cache/icos`.
//!
//! # Trust
//!
//! Nothing enters the cache unverified: a download streams into a temporary
//! file in `DIR/sha256/` while it is hashed, and is renamed to its final
//! name only when its size and SHA-256 are the ones the lock pins; otherwise
//! the temporary file is deleted and the package is refused with an error
//! naming it, the URL and both digests.
//!
//! A cached file is re-hashed on every fetch rather than trusted by its
//! name: hashing the GuestOS closure (125 MiB) takes about 0.1 s in a
//! release build, and it catches a file damaged on disk or edited by hand. A
//! cached file that fails the check is deleted and downloaded again.
//!
//! # Network
//!
//! Downloads use `ureq`, a small blocking HTTP/1.1 client, on up to four
//! threads (a blocking client on a few threads fits a fixed list of files
//! better than an async runtime, which `reqwest` would bring along). TLS is
//! not compiled in: Debian's mirrors serve plain HTTP, and a package's
//! integrity comes from the digest in the lock, which came from the signed
//! archive index, not from the transport. When every package is already
//! cached, no connection is made at all.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256 as Hasher};
use tracing::{debug, info, warn};

use crate::digest::Sha256;
use crate::lock::{Lock, LockedPackage};

/// The default number of parallel downloads.
pub const DEFAULT_JOBS: usize = 4;

/// A content-addressed directory of package files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No cache directory could be chosen.
    #[error("no cache directory: set ICOS_CACHE, XDG_CACHE_HOME or HOME, or pass --cache")]
    NoCacheDir,
    /// A cache directory could not be created or written.
    #[error("{step} {}", path.display())]
    CacheIo {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP request failed (connection, protocol or status).
    #[error("{package}: downloading {url}: {source}")]
    Http {
        /// The package name.
        package: String,
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The connection failed while the body was being received.
    #[error("{package}: receiving {url}: {source}")]
    Receive {
        /// The package name.
        package: String,
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the temporary file failed.
    #[error("{package}: downloading {url} to {}: {source}", path.display())]
    Transfer {
        /// The package name.
        package: String,
        /// The URL.
        url: String,
        /// The temporary file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server sent a file of another size than the lock pins.
    #[error("{package}: {url}: refused: size {actual} bytes, the lock pins {expected} bytes")]
    SizeMismatch {
        /// The package name.
        package: String,
        /// The URL.
        url: String,
        /// The pinned size.
        expected: u64,
        /// The size received (a lower bound when the download was cut short
        /// for being too long).
        actual: u64,
    },
    /// The server sent a file with another SHA-256 than the lock pins.
    #[error("{package}: {url}: refused: SHA-256 {actual}, the lock pins {expected}")]
    HashMismatch {
        /// The package name.
        package: String,
        /// The URL.
        url: String,
        /// The pinned digest.
        expected: Sha256,
        /// The digest of what was received.
        actual: Sha256,
    },
    /// Offline, and the package is not in the cache.
    #[error("{package} {version}: not in the cache ({}) and fetching is offline", path.display())]
    NotCached {
        /// The package name.
        package: String,
        /// The pinned version.
        version: String,
        /// Where it would be.
        path: PathBuf,
    },
    /// Several packages failed; each is listed.
    #[error("{} packages failed:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<FetchError>),
}

impl FetchError {
    /// Whether trying again may help: a name lookup, connection or receive
    /// failure, a timeout, or an HTTP status that says "later" (408, 429,
    /// 5xx). A refusal (size, digest), a 404 or a local write error is final.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Http { source, .. } => match source.as_ref() {
                ureq::Error::StatusCode(code) => *code == 408 || *code == 429 || *code >= 500,
                ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
                | ureq::Error::Protocol(_)
                | ureq::Error::BodyStalled => true,
                _ => false,
            },
            FetchError::Receive { .. } => true,
            _ => false,
        }
    }
}

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A progress bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// One line on stderr per downloaded package.
    Lines,
    /// Nothing.
    Quiet,
}

/// How to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Download from this mirror root instead of the lock's.
    pub mirror: Option<String>,
    /// Parallel downloads (at least 1).
    pub jobs: usize,
    /// Never touch the network: a package that is not cached is an error.
    pub offline: bool,
    /// How to show progress.
    pub progress: Progress,
    /// Give up on a connection that stays silent this long.
    pub timeout: Duration,
    /// Tries per package when a failure is transient (at least 1).
    pub attempts: u32,
    /// The wait before the second try; it doubles for each further try.
    pub retry_delay: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirror: None,
            jobs: DEFAULT_JOBS,
            offline: false,
            progress: Progress::Auto,
            timeout: Duration::from_secs(60),
            attempts: 5,
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Packages in the lock.
    pub packages: usize,
    /// Their total size in bytes.
    pub total_bytes: u64,
    /// Packages found in the cache and verified.
    pub cached: usize,
    /// Packages downloaded and verified.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Cached files that failed verification and were replaced.
    pub repaired: usize,
}

impl Cache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The default cache: `$ICOS_CACHE`, else `$XDG_CACHE_HOME/icos`, else
    /// `$HOME/.cache/icos` (empty variables count as unset).
    pub fn default_location() -> Result<Self, FetchError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("ICOS_CACHE") {
            return Ok(Cache::new(PathBuf::from(dir)));
        }
        if let Some(dir) = var("XDG_CACHE_HOME") {
            return Ok(Cache::new(PathBuf::from(dir).join("icos")));
        }
        var("HOME")
            .map(|home| Cache::new(PathBuf::from(home).join(".cache").join("icos")))
            .ok_or(FetchError::NoCacheDir)
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file with digest `sha256` is kept.
    pub fn path_of(&self, sha256: &Sha256) -> PathBuf {
        self.objects().join(format!("{sha256}.deb"))
    }

    fn objects(&self) -> PathBuf {
        self.root.join("sha256")
    }

    /// Whether the cached file for `package` exists and has the pinned size
    /// and digest. A file that exists but fails the check is deleted.
    pub fn verify(&self, package: &LockedPackage) -> Result<bool, FetchError> {
        let path = self.path_of(&package.sha256);
        let (digest, size) = match Sha256::of_file(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(FetchError::CacheIo {
                    step: "reading",
                    path,
                    source,
                });
            }
        };
        if digest == package.sha256 && size == package.size {
            return Ok(true);
        }
        warn!(
            package = package.name,
            path = %path.display(),
            %digest,
            "cached file is damaged; deleting it"
        );
        fs::remove_file(&path).map_err(|source| FetchError::CacheIo {
            step: "deleting damaged",
            path,
            source,
        })?;
        Ok(false)
    }
}

/// The URL of `package` under `mirror`, percent-encoding what is not a
/// plain path character (`+` becomes `%2B`, as apt sends it).
pub fn package_url(mirror: &str, package: &LockedPackage) -> String {
    let mut url = mirror.trim_end_matches('/').to_owned();
    url.push('/');
    for b in package.filename.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Makes sure every package of `lock` is in `cache`, verified: cached files
/// are re-hashed, missing ones downloaded (see the module docs). Every
/// package is tried; all failures are reported together.
pub fn fetch(
    lock: &Lock,
    cache: &Cache,
    options: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let objects = cache.objects();
    fs::create_dir_all(&objects).map_err(|source| FetchError::CacheIo {
        step: "creating cache directory",
        path: objects.clone(),
        source,
    })?;
    let mirror = options.mirror.as_deref().unwrap_or(&lock.mirror);
    let started = Instant::now();
    let total_bytes = lock.total_size();
    let bar = progress_bar(options.progress, total_bytes);
    let lines = match options.progress {
        Progress::Lines => true,
        Progress::Auto => bar.is_hidden(),
        Progress::Quiet => false,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(options.timeout))
        .timeout_per_read(Some(options.timeout))
        .timeout_recv_response(Some(options.timeout))
        .user_agent(concat!("icos-packages/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();

    // Largest first, so that one big file (the kernel) does not start last
    // and leave the other threads idle.
    let mut order: Vec<&LockedPackage> = lock.packages.iter().collect();
    order.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    let next = AtomicUsize::new(0);
    let state = Mutex::new((FetchReport::default(), Vec::<FetchError>::new()));
    let jobs = options.jobs.clamp(1, lock.packages.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&package) = order.get(i) else {
                        break;
                    };
                    let outcome = fetch_one(package, cache, mirror, options, &agent, &bar);
                    let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
                    let (report, errors) = &mut *guard;
                    match outcome {
                        Ok(Outcome::Cached) => report.cached += 1,
                        Ok(Outcome::Downloaded { repaired }) => {
                            report.downloaded += 1;
                            report.downloaded_bytes += package.size;
                            report.repaired += usize::from(repaired);
                            if lines {
                                eprintln!(
                                    "fetched {} {} ({})",
                                    package.name,
                                    package.version,
                                    human_bytes(package.size)
                                );
                            }
                        }
                        Err(e) => {
                            bar.suspend(|| warn!("{e}"));
                            errors.push(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let (mut report, mut errors) = state.into_inner().unwrap_or_else(|p| p.into_inner());
    report.packages = lock.packages.len();
    report.total_bytes = total_bytes;
    info!(
        cached = report.cached,
        downloaded = report.downloaded,
        seconds = started.elapsed().as_secs_f64(),
        "fetch done"
    );
    match errors.len() {
        0 => Ok(report),
        1 => Err(errors.remove(0)),
        _ => {
            errors.sort_by_key(|e| e.to_string());
            Err(FetchError::Several(errors))
        }
    }
}

enum Outcome {
    Cached,
    Downloaded { repaired: bool },
}

fn fetch_one(
    package: &LockedPackage,
    cache: &Cache,
    mirror: &str,
    options: &FetchOptions,
    agent: &ureq::Agent,
    bar: &ProgressBar,
) -> Result<Outcome, FetchError> {
    let path = cache.path_of(&package.sha256);
    let existed = path.exists();
    if cache.verify(package)? {
        debug!(package = package.name, "cached");
        bar.inc(package.size);
        return Ok(Outcome::Cached);
    }
    if options.offline {
        return Err(FetchError::NotCached {
            package: package.name.clone(),
            version: package.version.clone(),
            path,
        });
    }
    let attempts = options.attempts.max(1);
    let mut delay = options.retry_delay;
    for attempt in 1.. {
        match download(package, cache, mirror, agent, bar) {
            Ok(()) => break,
            Err(e) if attempt < attempts && e.is_transient() => {
                bar.suspend(|| {
                    warn!(
                        "{e}; trying again in {:.0} s (try {} of {attempts})",
                        delay.as_secs_f64(),
                        attempt + 1
                    );
                });
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Outcome::Downloaded { repaired: existed })
}

/// Downloads one package into the cache; see the module docs.
fn download(
    package: &LockedPackage,
    cache: &Cache,
    mirror: &str,
    agent: &ureq::Agent,
    bar: &ProgressBar,
) -> Result<(), FetchError> {
    let url = package_url(mirror, package);
    debug!(package = package.name, url, "downloading");
    let objects = cache.objects();
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .suffix(".deb")
        .tempfile_in(&objects)
        .map_err(|source| FetchError::CacheIo {
            step: "creating a temporary file in",
            path: objects.clone(),
            source,
        })?;
    let transfer = |source: io::Error, path: &Path| FetchError::Transfer {
        package: package.name.clone(),
        url: url.clone(),
        path: path.to_path_buf(),
        source,
    };

    let response = agent.get(&url).call().map_err(|e| FetchError::Http {
        package: package.name.clone(),
        url: url.clone(),
        source: Box::new(e),
    })?;
    // Read at most one byte more than pinned, to notice a longer file.
    let mut body = response.into_body().into_reader().take(package.size + 1);
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                bar.dec(received);
                return Err(FetchError::Receive {
                    package: package.name.clone(),
                    url,
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| transfer(e, tmp.path()))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    // Refusals drop `tmp`, which deletes the temporary file.
    if received != package.size {
        bar.dec(received);
        return Err(FetchError::SizeMismatch {
            package: package.name.clone(),
            url,
            expected: package.size,
            actual: received,
        });
    }
    let actual = Sha256(hasher.finalize().into());
    if actual != package.sha256 {
        bar.dec(received);
        return Err(FetchError::HashMismatch {
            package: package.name.clone(),
            url,
            expected: package.sha256,
            actual,
        });
    }

    let file: &File = tmp.as_file();
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| transfer(e, tmp.path()))?;
    }
    file.sync_all().map_err(|e| transfer(e, tmp.path()))?;
    let path = cache.path_of(&package.sha256);
    tmp.persist(&path).map_err(|e| FetchError::CacheIo {
        step: "renaming into",
        path: path.clone(),
        source: e.error,
    })?;
    icos_fs::sync_dir(&objects).map_err(|e| FetchError::CacheIo {
        step: "syncing",
        path: objects.clone(),
        source: io::Error::other(e),
    })?;
    Ok(())
}

fn progress_bar(progress: Progress, total: u64) -> ProgressBar {
    if progress != Progress::Auto || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `bytes` in the largest binary unit that keeps it at or above 1.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Server, lock, package};

    fn quiet() -> FetchOptions {
        FetchOptions {
            progress: Progress::Quiet,
            timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(1),
            ..FetchOptions::default()
        }
    }

    #[test]
    fn transient_failures_are_tried_again() {
        let server = Server::start();
        let body: &[u8] = b"a package that is briefly unavailable";
        let lock = lock(&server.url, vec![package("flaky", body)]);
        serve_all(&server, &lock, &[body]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        server.unavailable_for(2);
        let options = FetchOptions {
            attempts: 3,
            ..quiet()
        };
        let report = fetch(&lock, &cache, &options).unwrap();
        assert_eq!(report.downloaded, 1);
        assert_eq!(server.requests(), 3);

        // Unavailable for longer than the tries: the last error is reported.
        let cache = Cache::new(dir.path().join("other"));
        server.unavailable_for(5);
        let err = fetch(&lock, &cache, &options).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(server.requests(), 6);
        assert!(cache_files(&cache).is_empty());
    }

    #[test]
    fn final_failures_are_not_tried_again() {
        let server = Server::start();
        let lock = lock(&server.url, vec![package("missing", b"not served")]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let err = fetch(&lock, &cache, &quiet()).unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("404"), "{err}");
        assert_eq!(server.requests(), 1);
    }

    /// Every file name in the cache's object directory.
    fn cache_files(cache: &Cache) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(cache.objects())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn serve_all(server: &Server, lock: &Lock, bodies: &[&[u8]]) {
        for (p, body) in lock.packages.iter().zip(bodies) {
            server.put(&format!("/{}", p.filename), body.to_vec());
        }
    }

    #[test]
    fn downloads_verifies_then_works_offline() {
        let server = Server::start();
        let bodies: Vec<Vec<u8>> = (0..7u8)
            .map(|i| vec![i; 1000 + usize::from(i) * 4096])
            .collect();
        let packages = (0..7u8)
            .map(|i| package(&format!("pkg{i}"), &bodies[usize::from(i)]))
            .collect();
        let lock = lock(&server.url, packages);
        for p in &lock.packages {
            let i = usize::from(p.name.as_bytes()[3] - b'0');
            server.put(&format!("/{}", p.filename), bodies[i].clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));

        let report = fetch(&lock, &cache, &quiet()).unwrap();
        assert_eq!(report.packages, 7);
        assert_eq!(report.downloaded, 7);
        assert_eq!(report.cached, 0);
        assert_eq!(report.downloaded_bytes, lock.total_size());
        assert_eq!(server.requests(), 7);
        for p in &lock.packages {
            let path = cache.path_of(&p.sha256);
            assert_eq!(Sha256::of_file(&path).unwrap(), (p.sha256, p.size));
        }
        assert_eq!(cache_files(&cache).len(), 7);

        // Everything cached: no request, even with a mirror that is down.
        let offline_mirror = FetchOptions {
            mirror: Some("http://127.0.0.1:9".into()),
            ..quiet()
        };
        let report = fetch(&lock, &cache, &offline_mirror).unwrap();
        assert_eq!((report.cached, report.downloaded), (7, 0));
        let strict = FetchOptions {
            offline: true,
            ..quiet()
        };
        assert_eq!(fetch(&lock, &cache, &strict).unwrap().cached, 7);
        assert_eq!(server.requests(), 7);
    }

    #[test]
    fn tampered_download_is_refused_and_not_cached() {
        let server = Server::start();
        let good: &[u8] = b"the real package";
        let lock = lock(
            &server.url,
            vec![package("libfoo", good), package("bar", b"bar")],
        );
        // Same size, different content.
        serve_all(&server, &lock, &[b"bar", b"the fake package"]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());

        let err = fetch(&lock, &cache, &quiet()).unwrap_err();
        let FetchError::HashMismatch {
            package,
            url,
            expected,
            actual,
        } = &err
        else {
            panic!("unexpected {err}");
        };
        assert_eq!(package, "libfoo");
        assert_eq!(
            url,
            &format!(
                "{}/pool/main/l/libfoo/libfoo_1.0%2Bb1_amd64.deb",
                server.url
            )
        );
        assert_eq!(*expected, Sha256::of(good));
        assert_eq!(*actual, Sha256::of(b"the fake package"));
        let text = err.to_string();
        assert!(
            text.contains("libfoo") && text.contains(&expected.to_string()),
            "{text}"
        );
        assert!(
            text.contains(&actual.to_string()) && text.contains(url.as_str()),
            "{text}"
        );
        // Only the good package is cached; no partial file is left.
        assert_eq!(cache_files(&cache), [format!("{}.deb", Sha256::of(b"bar"))]);
    }

    #[test]
    fn wrong_size_and_missing_files_are_refused() {
        let server = Server::start();
        let lock = lock(
            &server.url,
            vec![
                package("longer", b"12345"),
                package("shorter", b"12345"),
                package("absent", b"x"),
            ],
        );
        server.put(
            &format!("/{}", lock.package("longer").unwrap().filename),
            b"123456789".to_vec(),
        );
        server.put(
            &format!("/{}", lock.package("shorter").unwrap().filename),
            b"123".to_vec(),
        );
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let FetchError::Several(errors) = fetch(&lock, &cache, &quiet()).unwrap_err() else {
            panic!("expected several errors");
        };
        assert_eq!(errors.len(), 3);
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("absent: downloading") && t.contains("404")),
            "{texts:?}"
        );
        assert!(errors.iter().any(|e| matches!(e, FetchError::SizeMismatch { package, actual: 6, .. } if package == "longer")), "{texts:?}");
        assert!(errors.iter().any(|e| matches!(e, FetchError::SizeMismatch { package, actual: 3, .. } if package == "shorter")), "{texts:?}");
        assert!(cache_files(&cache).is_empty());
    }

    #[test]
    fn damaged_cache_file_is_replaced_and_offline_reports_missing() {
        let server = Server::start();
        let lock = lock(
            &server.url,
            vec![package("a1", b"alpha"), package("b1", b"beta")],
        );
        serve_all(&server, &lock, &[b"alpha", b"beta"]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());

        let offline = FetchOptions {
            offline: true,
            ..quiet()
        };
        let err = fetch(&lock, &cache, &offline).unwrap_err().to_string();
        assert!(err.starts_with("2 packages failed:"), "{err}");
        assert!(err.contains("a1 1.0+b1: not in the cache"), "{err}");
        assert_eq!(server.requests(), 0);

        fetch(&lock, &cache, &quiet()).unwrap();
        let a1 = lock.package("a1").unwrap();
        fs::write(cache.path_of(&a1.sha256), b"alphX").unwrap();
        let report = fetch(&lock, &cache, &quiet()).unwrap();
        assert_eq!(
            (report.cached, report.downloaded, report.repaired),
            (1, 1, 1)
        );
        assert_eq!(fs::read(cache.path_of(&a1.sha256)).unwrap(), b"alpha");
    }

    #[test]
    fn urls_and_sizes() {
        let p = package("libstdc++6", b"x");
        assert_eq!(
            package_url("http://m/debian/", &p),
            "http://m/debian/pool/main/l/libstdc%2B%2B6/libstdc%2B%2B6_1.0%2Bb1_amd64.deb"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(125_699_036), "119.9 MiB");
    }
}
