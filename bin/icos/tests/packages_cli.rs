//! `icos packages`: help, bad lock files, fetching from a local HTTP server
//! (including a tampered package), offline re-fetch, and the committed locks.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use icos_packages::{Lock, LockedPackage, Sha256};
use predicates::prelude::*;
use predicates::str::contains;

fn icos() -> Command {
    Command::cargo_bin("icos").unwrap_or_else(|e| panic!("icos binary: {e}"))
}

fn packages(args: &[&str]) -> assert_cmd::assert::Assert {
    icos().arg("packages").args(args).assert()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Serves fixed files on 127.0.0.1 and counts requests; stops with the
/// test process.
struct Server {
    url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files = Arc::new(Mutex::new(HashMap::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (f, r) = (files.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &f, &r));
            }
        });
        Server {
            url,
            files,
            requests,
        }
    }

    /// Serves `body` for the package's pool path.
    fn put(&self, package: &LockedPackage, body: &[u8]) {
        self.files
            .lock()
            .unwrap()
            .insert(format!("/{}", package.filename), body.to_vec());
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>, requests: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .replace("%2B", "+");
    let body = files.lock().unwrap().get(&path).cloned();
    let mut stream = stream;
    let _ = match body {
        Some(body) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}

fn package(name: &str, body: &[u8]) -> LockedPackage {
    LockedPackage {
        name: name.to_owned(),
        version: "1.0+b1".to_owned(),
        architecture: "amd64".to_owned(),
        filename: format!("pool/main/t/{name}/{name}_1.0+b1_amd64.deb"),
        size: body.len() as u64,
        sha256: Sha256::of(body),
    }
}

fn write_lock(dir: &Path, mirror: &str, packages: Vec<LockedPackage>) -> PathBuf {
    let lock = Lock {
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        components: vec!["main".into()],
        mirror: mirror.to_owned(),
        date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
        required: false,
        requested: packages.iter().map(|p| p.name.clone()).collect(),
        packages,
    };
    let path = dir.join("packages.lock");
    lock.store(&path).unwrap();
    path
}

fn cached_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.join("sha256"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn help_lists_the_subcommands_and_flags() {
    packages(&["--help"]).success().stdout(
        contains("lock")
            .and(contains("fetch"))
            .and(contains("repo"))
            .and(contains("check")),
    );
    packages(&["fetch", "--help"]).success().stdout(
        contains("--lock")
            .and(contains("--cache"))
            .and(contains("--offline"))
            .and(contains("--mirror")),
    );
    packages(&["lock", "--help"]).success().stdout(
        contains("--list")
            .and(contains("--mirror"))
            .and(contains("--no-required")),
    );
    packages(&["fetch"]).code(2).stderr(contains("--lock"));
}

#[test]
fn bad_lock_file_is_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_lock(dir.path(), "http://127.0.0.1:9", vec![package("aa", b"x")]);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("sha256 = \"", "sha256 = \"zz");
    fs::write(&path, text).unwrap();
    let expected = format!("{}:", path.display());
    for sub in ["fetch", "check"] {
        packages(&[sub, "--lock", arg(&path)])
            .code(2)
            .stderr(contains(expected.as_str()).and(contains("package #1 (aa): sha256")));
    }
    fs::write(&path, "format = 1\nsuite = [\n").unwrap();
    packages(&["fetch", "--lock", arg(&path)])
        .code(2)
        .stderr(contains(expected.as_str()));
    // A missing file is a failure to read (exit 1), also named.
    let absent = dir.path().join("absent.lock");
    packages(&["fetch", "--lock", arg(&absent)])
        .code(1)
        .stderr(contains("absent.lock"));
}

#[test]
fn fetch_downloads_verifies_and_then_stays_offline() {
    let server = Server::start();
    let (a, b) = (vec![1u8; 5000], vec![2u8; 70_000]);
    let (pa, pb) = (package("alpha", &a), package("libbeta2", &b));
    server.put(&pa, &a);
    server.put(&pb, &b);
    let dir = tempfile::tempdir().unwrap();
    let lock = write_lock(dir.path(), &server.url, vec![pa.clone(), pb.clone()]);
    let cache = dir.path().join("cache");

    packages(&[
        "fetch",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "--progress",
        "lines",
    ])
    .success()
    .stdout(contains("2 packages").and(contains("0 cached, 2 downloaded")))
    .stderr(contains("fetched alpha 1.0+b1").and(contains("fetched libbeta2 1.0+b1")));
    assert_eq!(server.requests(), 2);
    assert_eq!(cached_files(&cache), {
        let mut v = vec![format!("{}.deb", pa.sha256), format!("{}.deb", pb.sha256)];
        v.sort();
        v
    });

    // Everything is cached: no request, even offline or with a dead mirror.
    packages(&[
        "fetch",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "--offline",
    ])
    .success()
    .stdout(contains("2 cached, 0 downloaded"));
    packages(&[
        "fetch",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "--mirror",
        "http://127.0.0.1:9",
    ])
    .success();
    assert_eq!(server.requests(), 2);

    // ICOS_CACHE is the default cache directory.
    icos()
        .env("ICOS_CACHE", &cache)
        .args(["packages", "fetch", "--offline", "--lock", arg(&lock)])
        .assert()
        .success()
        .stdout(contains("2 cached"));
}

#[test]
fn tampered_package_is_refused_naming_it_and_not_cached() {
    let server = Server::start();
    let good = b"the real contents".to_vec();
    let pkg = package("libfoo1", &good);
    server.put(&pkg, b"the fake contents");
    let dir = tempfile::tempdir().unwrap();
    let lock = write_lock(dir.path(), &server.url, vec![pkg.clone()]);
    let cache = dir.path().join("cache");

    packages(&[
        "fetch",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "--progress",
        "none",
    ])
    .code(1)
    .stderr(
        contains("libfoo1")
            .and(contains(format!(
                "{}/pool/main/t/libfoo1/libfoo1_1.0%2Bb1_amd64.deb",
                server.url
            )))
            .and(contains(pkg.sha256.to_string()))
            .and(contains(Sha256::of(b"the fake contents").to_string()))
            .and(contains("refused")),
    );
    assert!(
        cached_files(&cache).is_empty(),
        "{:?}",
        cached_files(&cache)
    );

    // Offline, a package that is not cached is named too.
    packages(&[
        "fetch",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "--offline",
    ])
    .code(1)
    .stderr(contains("libfoo1 1.0+b1: not in the cache"));
    packages(&[
        "repo",
        "--lock",
        arg(&lock),
        "--cache",
        arg(&cache),
        "-o",
        arg(&dir.path().join("repo")),
    ])
    .code(1)
    .stderr(contains("libfoo1 1.0+b1: not in the cache"));
}

#[test]
fn lock_rejects_a_bad_list_before_any_network() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("bad.list");
    fs::write(&list, "systemd\nnot a name\n").unwrap();
    let out = dir.path().join("out.lock");
    packages(&["lock", "--list", arg(&list), "-o", arg(&out)])
        .code(2)
        .stderr(contains(format!("{}:2:", list.display())));
    assert!(!out.exists());
}

#[test]
fn committed_locks_match_their_lists() {
    let root = repo_root();
    for (image, required) in [
        ("guestos", "required = true"),
        ("build", "required = false"),
    ] {
        let lock = root.join(format!("images/{image}/packages.lock"));
        let list = root.join(format!("images/{image}/packages.list"));
        packages(&["check", "--lock", arg(&lock), "--list", arg(&list)])
            .success()
            .stdout(contains("http://deb.debian.org/debian bookworm amd64"));
        assert!(fs::read_to_string(&lock).unwrap().contains(required));
    }
    let lock = Lock::load(&root.join("images/guestos/packages.lock")).unwrap();
    for name in [
        "linux-image-amd64",
        "systemd",
        "cryptsetup-bin",
        "busybox-static",
        "libc6",
        "base-files",
    ] {
        assert!(lock.package(name).is_some(), "{name} is not locked");
    }
}

#[test]
fn check_reports_a_lock_out_of_date_with_its_list() {
    let dir = tempfile::tempdir().unwrap();
    let lock = write_lock(dir.path(), "http://127.0.0.1:9", vec![package("aa", b"x")]);
    let list = dir.path().join("p.list");
    fs::write(&list, "aa\nbb\n").unwrap();
    packages(&["check", "--lock", arg(&lock), "--list", arg(&list)])
        .code(2)
        .stderr(contains("out of date").and(contains("listed but not locked: [bb]")));
}
