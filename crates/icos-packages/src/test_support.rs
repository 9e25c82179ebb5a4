//! Helpers for this crate's tests: a small HTTP server on 127.0.0.1 and
//! made-up locks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::Sha256;
use crate::lock::{Lock, LockedPackage};

/// Serves fixed files over HTTP/1.1 on an ephemeral port of 127.0.0.1 and
/// counts the requests it gets. It stops with the test process.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files = Arc::new(Mutex::new(HashMap::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let (f, r, u) = (files.clone(), requests.clone(), unavailable.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (f, r, u) = (f.clone(), r.clone(), u.clone());
                std::thread::spawn(move || serve(stream, &f, &r, &u));
            }
        });
        Server {
            url,
            files,
            requests,
            unavailable,
        }
    }

    /// Answers the next `n` requests with 503 Service Unavailable.
    pub fn unavailable_for(&self, n: usize) {
        self.unavailable.store(n, Ordering::SeqCst);
    }

    /// Serves `body` at `path` (`/pool/...`, decoded).
    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_owned(), body);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    files: &Mutex<HashMap<String, Vec<u8>>>,
    requests: &AtomicUsize,
    unavailable: &AtomicUsize,
) {
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
    let mut stream = stream;
    if unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let _ = stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let path = crate::resolve::percent_decode(path);
    let body = files.lock().unwrap().get(&path).cloned();
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

/// A made-up package with content `body`, pinned by its real digest.
pub fn package(name: &str, body: &[u8]) -> LockedPackage {
    LockedPackage {
        name: name.to_owned(),
        version: "1.0+b1".to_owned(),
        architecture: "amd64".to_owned(),
        filename: format!("pool/main/{}/{name}/{name}_1.0+b1_amd64.deb", &name[..1]),
        size: body.len() as u64,
        sha256: Sha256::of(body),
    }
}

/// A lock of `packages` (sorted here) against `mirror`.
pub fn lock(mirror: &str, mut packages: Vec<LockedPackage>) -> Lock {
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Lock {
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        components: vec!["main".into()],
        mirror: mirror.to_owned(),
        date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
        required: false,
        requested: packages.iter().map(|p| p.name.clone()).collect(),
        packages,
    }
}
