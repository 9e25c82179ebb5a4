//! The registry and the release server of the upgrade VM tests: a TUF
//! registry made with `icos registry init` and changed by governance
//! (`icos gov propose`, two votes, `execute`), served by `icos registry
//! serve`, and a small static file server for release packages with `Range`
//! support (which the orchestrator and the HostOS agent use to resume) and a
//! switch that cuts the next download in the middle.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Children, run_ok};

fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

/// The registry repository and its governance keys.
pub struct Gov {
    /// The TUF repository `icos registry serve` serves.
    pub repo: PathBuf,
    /// `gov-1.pem` ... `gov-3.pem`.
    pub keys: PathBuf,
}

impl Gov {
    /// `icos registry init` in `dir/registry` with three governance keys
    /// (in `dir/gov-keys`) and a threshold of two.
    pub fn init(dir: &Path) -> Gov {
        let gov = Gov {
            repo: dir.join("registry"),
            keys: dir.join("gov-keys"),
        };
        run_ok(
            icos()
                .args(["registry", "init"])
                .arg(&gov.repo)
                .args(["--threshold", "2", "--generate", "3", "--keys-out"])
                .arg(&gov.keys),
        );
        gov
    }

    /// The trust root to bake into images.
    pub fn root(&self) -> PathBuf {
        self.repo.join("metadata").join("1.root.json")
    }

    /// `icos gov SUB --repo <repo>`.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = icos();
        c.args(["gov", sub, "--repo"]).arg(&self.repo);
        c
    }

    /// Proposes, votes with two of the three keys, executes.
    pub fn pass(&self, args: &[&str]) {
        let out = run_ok(self.cmd("propose").arg("--json").args(args));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = v["proposal"].as_u64().unwrap().to_string();
        for k in [1, 2] {
            run_ok(
                self.cmd("vote")
                    .arg("--key")
                    .arg(self.keys.join(format!("gov-{k}.pem")))
                    .arg(&id),
            );
        }
        let out = run_ok(self.cmd("execute").arg(&id));
        assert!(out.contains("published"), "{out}");
    }

    /// `icos gov show --json`.
    pub fn show(&self) -> serde_json::Value {
        serde_json::from_str(&run_ok(self.cmd("show").arg("--json"))).unwrap()
    }

    /// The only key of the map at `registry.<field>`.
    pub fn only_id(&self, field: &str) -> String {
        let shown = self.show();
        let map = shown["registry"][field].as_object().unwrap();
        assert_eq!(map.len(), 1, "{field}: {map:?}");
        map.keys().next().unwrap().clone()
    }
}

/// Serves `dir` with `icos registry serve` on `listen` (an address with
/// port 0), admitting nodes that join (`POST /join`) when `admit` is set
/// (with the repository's online key); returns the port.
pub fn serve_registry(children: &mut Children, dir: &Path, listen: &str, admit: bool) -> u16 {
    let mut cmd = icos();
    cmd.args(["registry", "serve"])
        .arg(dir)
        .args(["--listen", listen]);
    if admit {
        cmd.arg("--online-key")
            .arg(dir.join("keys").join("online.pem"));
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    children.0.push(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A static file server for the release packages: `GET /<name>` of the
/// files in `dir`, honouring `Range: bytes=N-`. Logs each request. When
/// `cut` is not zero, the next whole-file answer stops after that many
/// body bytes (the connection is closed) and `cut` goes back to zero.
///
/// `bind` is the listening address with port 0 (`127.0.0.1:0`, or `[::]:0`
/// for guests that come over IPv6); returns the port.
pub fn serve_files(
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicU64>,
    bind: &str,
) -> u16 {
    let listener = TcpListener::bind(bind).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            let log = log.clone();
            let cut = cut.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &dir, &log, &cut);
            });
        }
    });
    port
}

fn answer(
    mut s: TcpStream,
    dir: &Path,
    log: &Mutex<Vec<String>>,
    cut: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut from = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range:") {
            from = r
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    log.lock()
        .unwrap()
        .push(format!("{} range={from:?}", request.trim()));
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let file = (!name.contains('/') && !name.is_empty())
        .then(|| File::open(dir.join(name)).ok())
        .flatten();
    let Some(mut file) = file else {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = file.metadata()?.len();
    match from {
        Some(n) if n >= len => s.write_all(
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Some(n) => {
            file.seek(SeekFrom::Start(n))?;
            s.write_all(
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    len - 1,
                    len - n
                )
                .as_bytes(),
            )?;
            std::io::copy(&mut file.take(len - n), &mut s).map(|_| ())
        }
        None => {
            s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            match cut.swap(0, Ordering::SeqCst) {
                0 => std::io::copy(&mut file, &mut s).map(|_| ()),
                n => {
                    log.lock().unwrap().push(format!("cut after {n} bytes"));
                    std::io::copy(&mut file.take(n), &mut s)?;
                    s.shutdown(std::net::Shutdown::Both)
                }
            }
        }
    }
}
