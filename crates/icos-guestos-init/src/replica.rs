//! Step 5: the payload (`/opt/ic/bin/replica`).
//!
//! The default payload is `icos-testnet-replica`. Its configuration is made
//! at boot from the GuestOS config, under `/run/ic-node/config/`:
//!
//! * `testnet.json`: a one-node testnet whose root key seed is the SHA-256
//!   of `icos guestos testnet v1` and the NNS URLs, so every GuestOS given
//!   the same NNS URLs serves the same root key;
//! * `replica.env`: `REPLICA_ARGS`, the payload's command line
//!   (`serve --config ... --subnet ... --listen [::]:8080`), which
//!   `replica.service` passes to the payload. A payload given with
//!   `icos build guestos --replica FILE` is started the same way.
//!
//! [`wait_ready`] asks the payload's `/api/v2/status` until it answers 200
//! (or another path until it answers 2xx);
//! the success marker is printed only after that.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use icos_config::GuestOSConfig;
use sha2::{Digest, Sha256};

use crate::{InitError, Paths, Result, write_file};

/// The replica's HTTP port, as IC.
pub const HTTP_PORT: u16 = 8080;
/// The subnet the node's replica serves.
pub const SUBNET_ID: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
/// The subnet's canister range.
pub const CANISTER_RANGE: [&str; 2] =
    ["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"];
/// The testnet file name under [`Paths::node_config_dir`].
pub const TESTNET_JSON: &str = "testnet.json";
/// The environment file name under [`Paths::node_config_dir`].
pub const REPLICA_ENV: &str = "replica.env";

/// The testnet's root key seed for `config` (hex): the SHA-256 of
/// `icos guestos testnet v1` and the NNS URLs, one a line.
pub fn root_key_seed(config: &GuestOSConfig) -> String {
    let mut h = Sha256::new();
    h.update(b"icos guestos testnet v1\n");
    for url in &config.icos_settings.nns_urls {
        h.update(url.as_str().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The testnet configuration for `config` (pretty JSON with a final newline).
pub fn testnet_json(config: &GuestOSConfig) -> String {
    let seed = root_key_seed(config);
    let value = serde_json::json!({
        "root_key_seed": seed,
        "subnets": [{
            "id": SUBNET_ID,
            "type": "application",
            "canister_ranges": [CANISTER_RANGE],
            "nodes": 1,
        }],
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// The payload's command line (after the program), with GuestOS paths.
pub fn replica_args() -> String {
    format!(
        "serve --config /run/ic-node/config/{TESTNET_JSON} --subnet {SUBNET_ID} --listen [::]:{HTTP_PORT}"
    )
}

/// Writes `testnet.json` and `replica.env`.
pub fn apply(paths: &Paths, config: &GuestOSConfig) -> Result<()> {
    let dir = paths.node_config_dir();
    write_file(
        &dir.join(TESTNET_JSON),
        testnet_json(config).as_bytes(),
        0o644,
    )?;
    write_file(
        &dir.join(REPLICA_ENV),
        format!("REPLICA_ARGS={}\n", replica_args()).as_bytes(),
        0o644,
    )
}

/// The path [`wait_ready`] asks by default: the replica's status document.
pub const STATUS_PATH: &str = "/api/v2/status";

/// One `GET path`: the status line of the answer.
fn status_line(addr: SocketAddr, path: &str) -> std::result::Result<String, String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .lines()
        .next()
        .unwrap_or("(no answer)")
        .trim()
        .to_owned())
}

/// Waits until the payload at `addr` answers `GET path` with a 2xx status
/// (the replica: [`STATUS_PATH`] with 200; the boundary router: `/health`
/// with 204 once its subnets are healthy); returns how long that took.
pub fn wait_ready(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let last = match status_line(addr, path) {
            Ok(line)
                if line
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|code| code.len() == 3 && code.starts_with('2')) =>
            {
                return Ok(start.elapsed());
            }
            Ok(line) => line,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(InitError::NotReady {
                url: format!("http://{addr}{path}"),
                secs: timeout.as_secs(),
                last,
            });
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn testnet_config_is_valid_and_deterministic() {
        let c = icos_config_media::dev_guestos_config().unwrap();
        let text = testnet_json(&c);
        assert_eq!(text, testnet_json(&c));
        icos_testnet_replica::Testnet::parse(&text, "testnet.json").unwrap();
        let mut other = c.clone();
        other.icos_settings.nns_urls = vec!["http://[2001:db8::1]:8080/".parse().unwrap()];
        assert_ne!(testnet_json(&other), text);
    }

    #[test]
    fn apply_writes_config_and_args() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        apply(&p, &icos_config_media::dev_guestos_config().unwrap()).unwrap();
        let env = std::fs::read_to_string(p.node_config_dir().join(REPLICA_ENV)).unwrap();
        assert_eq!(
            env,
            format!(
                "REPLICA_ARGS=serve --config /run/ic-node/config/testnet.json --subnet {SUBNET_ID} --listen [::]:8080\n"
            )
        );
        assert!(p.node_config_dir().join(TESTNET_JSON).is_file());
    }

    fn serve(answer: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn ready_on_200() {
        let addr = serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        wait_ready(
            addr,
            STATUS_PATH,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .unwrap();
    }

    #[test]
    fn ready_on_204_at_another_path() {
        let addr = serve("HTTP/1.1 204 No Content\r\n\r\n");
        wait_ready(
            addr,
            "/health",
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .unwrap();
    }

    #[test]
    fn not_ready_names_the_last_answer() {
        let addr = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = wait_ready(
            addr,
            STATUS_PATH,
            Duration::from_millis(50),
            Duration::from_millis(10),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HTTP/1.1 503 Service Unavailable"), "{err}");
        assert!(
            err.contains(&format!("http://{addr}/api/v2/status")),
            "{err}"
        );
    }
}
