//! Round trips through the agent over Unix sockets (and AF_VSOCK where the
//! host kernel offers a loopback transport).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use icos_vsock::client;
use icos_vsock::protocol::{
    Command, HostOSVsockVersion, NodeIdData, NotifyData, Payload, UpgradeData,
};
use icos_vsock::server::{Agent, AgentConfig};
use icos_vsock::transport::{Endpoint, UnixTransport, VsockTransport};
use icos_vsock::upgrade::{IMAGE_FILE, READY_MARKER};
use sha2::{Digest, Sha256};

const CID: u32 = 3;
const T: Duration = Duration::from_secs(10);

struct Fixture {
    dir: tempfile::TempDir,
    agent: Arc<Agent>,
    endpoint: Endpoint,
}

impl Fixture {
    fn start(tweak: impl FnOnce(&mut AgentConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("version.txt"), "0.1.0-test\n").unwrap();
        std::fs::write(p("tty"), "").unwrap();
        let mut config = AgentConfig {
            version_file: p("version.txt"),
            node_id_file: p("node-id"),
            tty: p("tty"),
            notify_interval: Duration::from_millis(10),
            upgrade_dir: p("upgrade"),
            download_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            metrics_file: Some(p("vsock.prom")),
            log_per_second: 5,
            guest_cid: Some(CID),
        };
        tweak(&mut config);
        let agent = Arc::new(Agent::new(config));
        let socket = p("vsock.sock_19090");
        let listener = UnixTransport::bind(&socket, CID).unwrap();
        let server = Arc::clone(&agent);
        std::thread::spawn(move || server.serve(&listener));
        Fixture {
            dir,
            agent,
            endpoint: Endpoint::Unix(socket),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn send(&self, command: Command) -> Result<Payload, String> {
        client::send(&self.endpoint, CID, command, T).unwrap()
    }

    /// The console's content once every notification is printed.
    fn tty(&self) -> String {
        let start = std::time::Instant::now();
        while !self.agent.notify_idle() && start.elapsed() < T {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::read_to_string(self.path("tty")).unwrap()
    }

    fn raw(&self, bytes: &[u8]) -> String {
        String::from_utf8(client::send_raw(&self.endpoint, bytes, T).unwrap()).unwrap()
    }
}

#[test]
fn version_commands() {
    let f = Fixture::start(|_| {});
    assert_eq!(
        f.send(Command::GetVsockProtocol),
        Ok(Payload::HostOSVsockVersion(HostOSVsockVersion {
            major: 1,
            minor: 0,
            patch: 0
        }))
    );
    assert_eq!(
        f.send(Command::GetHostOSVersion),
        Ok(Payload::HostOSVersion("0.1.0-test".into()))
    );
    // The exact bytes on the wire.
    assert_eq!(
        f.raw(br#"{"sender_cid":3,"message":"GetHostOSVersion"}"#),
        r#"{"Ok":{"HostOSVersion":"0.1.0-test"}}"#
    );
    std::fs::remove_file(f.path("version.txt")).unwrap();
    let err = f.send(Command::GetHostOSVersion).unwrap_err();
    assert!(err.contains("version.txt"), "{err}");
}

#[test]
fn set_node_id_writes_the_file() {
    let f = Fixture::start(|_| {});
    let id = "abcde-fghij-klmno";
    assert_eq!(
        f.send(Command::SetNodeId(NodeIdData { node_id: id.into() })),
        Ok(Payload::NoPayload)
    );
    assert_eq!(
        std::fs::read_to_string(f.path("node-id")).unwrap(),
        format!("{id}\n")
    );
    assert!(
        f.send(Command::SetNodeId(NodeIdData {
            node_id: "bad\nid".into()
        }))
        .is_err()
    );
}

#[test]
fn notify_prints_at_most_ten_times() {
    let f = Fixture::start(|_| {});
    let notify = |count| {
        Command::Notify(NotifyData {
            count,
            message: "hello host".into(),
        })
    };
    assert_eq!(f.send(notify(3)), Ok(Payload::NoPayload));
    let printed = || f.tty().matches("hello host").count();
    assert_eq!(printed(), 3);
    assert_eq!(f.send(notify(1000)), Ok(Payload::NoPayload));
    assert_eq!(printed(), 13);
}

#[test]
fn unsupported_commands_are_explicit_errors() {
    let f = Fixture::start(|_| {});
    for c in [
        Command::AttachHsm,
        Command::DetachHsm,
        Command::StartUpgradeGuestVM,
    ] {
        let err = f.send(c).unwrap_err();
        assert!(err.starts_with("not supported on this host: "), "{err}");
    }
}

#[test]
fn legacy_request_is_served() {
    let f = Fixture::start(|_| {});
    assert_eq!(
        f.raw(br#"{"sender_cid":"3","message":"notify [2, legacy hi]"}"#),
        r#"{"Ok":"NoPayload"}"#
    );
    assert_eq!(f.tty().matches("legacy hi").count(), 2);
}

#[test]
fn wrong_sender_cid_is_refused() {
    let f = Fixture::start(|_| {});
    let reply = client::send(&f.endpoint, 42, Command::GetVsockProtocol, T).unwrap();
    let err = reply.unwrap_err();
    assert!(err.contains("sender_cid 42"), "{err}");
    assert_eq!(f.agent.requests("GetVsockProtocol", "refused"), 1);
    // A refused set-node-id changes nothing.
    let reply = client::send(
        &f.endpoint,
        4,
        Command::SetNodeId(NodeIdData {
            node_id: "x".into(),
        }),
        T,
    )
    .unwrap();
    assert!(reply.is_err());
    assert!(!f.path("node-id").exists());
}

#[test]
fn only_the_configured_guest_is_served() {
    let f = Fixture::start(|c| c.guest_cid = Some(5));
    // The peer (CID 3) tells the truth but is not the served guest.
    let err = f.send(Command::GetVsockProtocol).unwrap_err();
    assert!(
        err.contains("only serves the GuestOS VM with CID 5"),
        "{err}"
    );
}

#[test]
fn notify_without_console_is_an_error() {
    let f = Fixture::start(|_| {});
    std::fs::remove_file(f.path("tty")).unwrap();
    let err = f
        .send(Command::Notify(NotifyData {
            count: 1,
            message: "x".into(),
        }))
        .unwrap_err();
    assert!(err.contains("tty"), "{err}");
}

#[test]
fn malformed_requests_get_err_and_server_keeps_running() {
    let f = Fixture::start(|c| c.log_per_second = 2);
    for bad in [
        &b"not json at all"[..],
        br#"{"sender_cid":3,"message":"reboot"}"#,
        br#"{"sender_cid":3,"message":{"upgrade":{"url":"x"}}}"#,
        b"\xff\xff",
        b"",
    ] {
        let reply = f.raw(bad);
        assert!(reply.starts_with(r#"{"Err":"#), "{reply}");
    }
    assert!(f.send(Command::GetVsockProtocol).is_ok());
    assert_eq!(f.agent.requests("malformed", "err"), 5);
    // Five bad requests within a second, two logged: three counted as suppressed.
    assert_eq!(f.agent.log_suppressed(), 3);
    let metrics = std::fs::read_to_string(f.path("vsock.prom")).unwrap();
    assert!(
        metrics.contains(r#"hostos_vsock_requests_total{command="malformed",result="err"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostos_vsock_bad_request_logs_suppressed_total 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"hostos_vsock_requests_total{command="GetVsockProtocol",result="ok"} 1"#),
        "{metrics}"
    );
}

#[test]
fn oversize_request_is_refused() {
    let f = Fixture::start(|_| {});
    let mut big = br#"{"sender_cid":3,"message":{"notify":{"count":1,"message":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5000));
    big.extend(br#""}}}"#);
    let reply = f.raw(&big);
    assert!(reply.contains("too large"), "{reply}");
    assert_eq!(f.agent.requests("oversize", "err"), 1);
    assert_eq!(
        std::fs::read_to_string(f.path("tty")).unwrap(),
        "",
        "nothing printed"
    );
    assert!(f.send(Command::GetVsockProtocol).is_ok());
}

#[test]
fn silent_client_times_out_without_blocking_others() {
    let f = Fixture::start(|c| c.timeout = Duration::from_millis(300));
    let Endpoint::Unix(path) = &f.endpoint else {
        unreachable!()
    };
    let mut idle = UnixStream::connect(path).unwrap();
    assert!(f.send(Command::GetVsockProtocol).is_ok());
    idle.set_read_timeout(Some(T)).unwrap();
    let mut rest = String::new();
    // The server gives up on the idle connection, says why and closes it.
    idle.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with(r#"{"Err":"reading request"#), "{rest}");
    assert_eq!(f.agent.requests("unreadable", "err"), 1);
}

/// Serves `body` to every GET on 127.0.0.1; returns the base URL.
fn http_server(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let found = head.starts_with(b"GET /image ");
            let status = if found { "200 OK" } else { "404 Not Found" };
            let payload: &[u8] = if found { &body } else { b"" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = stream.write_all(payload);
        }
    });
    format!("http://{addr}")
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn upgrade_downloads_and_verifies() {
    let f = Fixture::start(|_| {});
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let hash = hex::encode(Sha256::digest(&image));
    let base = http_server(image.clone());
    let upgrade = |url: String, hash: &str| {
        f.send(Command::Upgrade(UpgradeData {
            url,
            target_hash: hash.into(),
        }))
    };
    let dir = f.path("upgrade");

    // Good hash: the image and the marker are left for the installer.
    assert_eq!(
        upgrade(format!("{base}/image"), &hash),
        Ok(Payload::NoPayload)
    );
    assert_eq!(listing(&dir), [IMAGE_FILE, READY_MARKER]);
    assert_eq!(std::fs::read(dir.join(IMAGE_FILE)).unwrap(), image);
    let marker = std::fs::read_to_string(dir.join(READY_MARKER)).unwrap();
    assert!(marker.contains(&format!("sha256={hash}")), "{marker}");

    // Bad hash: refused, nothing left behind (the previous image included).
    let wrong = "0".repeat(64);
    let err = upgrade(format!("{base}/image"), &wrong).unwrap_err();
    assert!(err.contains("refused") && err.contains(&hash), "{err}");
    assert_eq!(listing(&dir), Vec::<String>::new());

    // Not a digest, a missing file, not an HTTP URL.
    assert!(
        upgrade(format!("{base}/image"), "abc")
            .unwrap_err()
            .contains("64 hex")
    );
    assert!(
        upgrade(format!("{base}/missing"), &hash)
            .unwrap_err()
            .contains("404")
    );
    assert!(upgrade("file:///etc/passwd".into(), &hash).is_err());
    assert_eq!(listing(&dir), Vec::<String>::new());
    assert_eq!(f.agent.requests("upgrade", "ok"), 1);
    assert_eq!(f.agent.requests("upgrade", "err"), 4);
}

/// A real AF_VSOCK round trip over the loopback transport (`VMADDR_CID_LOCAL`).
/// It needs a kernel with `vsock_loopback` (or vhost-vsock); the machines
/// this project builds on have neither, so it only runs when asked for
/// (`cargo test -p icos-vsock -- --ignored`).
#[test]
#[ignore = "needs a kernel with AF_VSOCK loopback (vsock_loopback or vhost-vsock)"]
fn real_vsock_loopback() {
    let port = 19090 + 1000 + (std::process::id() % 1000);
    let listener = VsockTransport::bind(u32::MAX, port).expect("bind AF_VSOCK");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v"), "9.9.9").unwrap();
    let agent = Arc::new(Agent::new(AgentConfig {
        version_file: dir.path().join("v"),
        guest_cid: None,
        ..AgentConfig::default()
    }));
    std::thread::spawn(move || agent.serve(&listener));
    let endpoint = Endpoint::Vsock { cid: 1, port };
    let reply = client::send(&endpoint, 1, Command::GetHostOSVersion, T).expect("vsock round trip");
    assert_eq!(reply, Ok(Payload::HostOSVersion("9.9.9".into())));
}

#[test]
fn too_many_connections_get_busy() {
    let f = Fixture::start(|_| {});
    let Endpoint::Unix(path) = &f.endpoint else {
        unreachable!()
    };
    let idle: Vec<UnixStream> = (0..icos_vsock::server::MAX_CONCURRENT)
        .map(|_| UnixStream::connect(path).unwrap())
        .collect();
    // Wait until the server has taken all of them on.
    let start = std::time::Instant::now();
    let reply = loop {
        let reply = f.raw(br#"{"sender_cid":3,"message":"GetVsockProtocol"}"#);
        if reply.contains("busy") || start.elapsed() > T {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(reply, r#"{"Err":"busy: too many concurrent requests"}"#);
    drop(idle);
}
