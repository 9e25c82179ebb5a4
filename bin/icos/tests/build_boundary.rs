//! `icos build boundary-guestos`, end to end.
//!
//! Builds the image once (into `$CARGO_TARGET_TMPDIR/build_boundary/`, with
//! the normal icos cache), checks its root file system (the router and the
//! gateway in `/opt/ic/bin`, no replica, the boundary units), then boots it
//! with `icos run guestos --stay` next to four `icos-testnet-replica`
//! processes of one subnet on this machine. The routing table on the
//! CONFIG media lists them at `10.0.2.2` (this machine's loopback as QEMU's
//! user network shows it to the guest), so the boot marker, which waits for
//! the router's `/health`, proves the router inside the VM reached them.
//! Then requests to the gateway's port 80, forwarded from this machine, come
//! back from the replicas through the gateway and the router: the status
//! document with the testnet's root key, a query of the counter canister,
//! and a certified page of the asset canister at `<canister>.localhost`.
//!
//! Needs root (mmdebstrap) and the host tools of `scripts/prereqs.sh`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Children, assert_artifacts, fresh_dir, run_ok_bytes, source_root, testnet_replica_binary,
};

/// The testnet: one subnet of four replicas.
const TESTNET: &str = r#"{
  "root_key_seed": "626f756e64617279206775657374206f73",
  "subnets": [{
    "id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
    "nodes": 4,
    "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]]
  }]
}"#;
const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";

/// The first of `n` consecutive free loopback ports.
fn free_ports(n: u16) -> u16 {
    let start = 21_000 + (std::process::id() % 400) as u16 * 20;
    (start..start + 4000)
        .step_by(usize::from(n))
        .find(|&base| (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("no free ports")
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(port: u16, method: &str, host: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/cbor\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        s.write_all(b).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn boundary_guestos_routes_from_the_vm_to_replicas_on_the_host() {
    let (dir, _lock) = fresh_dir("build_boundary");
    let icos = env!("CARGO_BIN_EXE_icos");

    // 1. Build.
    let out = dir.join("out");
    run_ok_bytes(
        Command::new(icos)
            .args(["build", "boundary-guestos", "--source"])
            .arg(source_root())
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    );
    let art = out.join("boundary-guestos");
    assert_artifacts(&art);

    // 2. The root file system: the router and the gateway, no replica.
    let upd = dir.join("update");
    fs::create_dir_all(&upd).unwrap();
    run_ok_bytes(
        Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(art.join("update-img.tar.zst"))
            .arg("-C")
            .arg(&upd),
    );
    let debugfs = |request: &str| {
        String::from_utf8(run_ok_bytes(
            Command::new("debugfs")
                .arg("-R")
                .arg(request)
                .arg(upd.join("root.img")),
        ))
        .unwrap()
    };
    let bins = debugfs("ls /opt/ic/bin");
    for name in [
        "icos-boundary",
        "icos-gateway",
        "icos-guestos-init",
        "icos-vsock-guest",
        "icos",
    ] {
        assert!(bins.contains(name), "{name} missing: {bins}");
    }
    assert!(!bins.contains("replica"), "{bins}");
    let wants = debugfs("ls /etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("icos-boundary.service"), "{wants}");
    assert!(wants.contains("icos-gateway.service"), "{wants}");
    assert!(!wants.contains("replica.service"), "{wants}");
    let firewall = debugfs("cat /etc/systemd/system/icos-guestos-firewall.service");
    assert!(
        firewall.contains("firewall --profile boundary"),
        "{firewall}"
    );
    fs::remove_dir_all(&upd).unwrap();

    // 3. Four replicas of one subnet on this machine.
    let replica = testnet_replica_binary(env!("CARGO_BIN_EXE_icos"));
    let testnet = dir.join("testnet.json");
    fs::write(&testnet, TESTNET).unwrap();
    let described: serde_json::Value = serde_json::from_slice(&run_ok_bytes(
        Command::new(&replica)
            .args(["describe", "--config"])
            .arg(&testnet),
    ))
    .unwrap();
    let root_key = hex_decode(described["root_key"].as_str().unwrap());
    let counter = described["subnets"][0]["canisters"]["counter"]
        .as_str()
        .unwrap()
        .to_owned();
    let assets = described["subnets"][0]["canisters"]["assets"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = free_ports(5);
    let gateway_port = base + 4;
    let mut children = Children(Vec::new());
    for k in 0..4u16 {
        let log = File::create(dir.join(format!("replica-{k}.log"))).unwrap();
        children.0.push(
            Command::new(&replica)
                .arg("serve")
                .arg("--config")
                .arg(&testnet)
                .args(["--subnet", SUBNET, "--node-index", &k.to_string()])
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", base + k))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    for k in 0..4u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", base + k)).is_err() {
            assert!(Instant::now() < deadline, "replica {k} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let table = dir.join("routing_table.json");
    fs::write(
        &table,
        run_ok_bytes(
            Command::new(&replica)
                .args(["routing-table", "--config"])
                .arg(&testnet)
                .args(["--host", "10.0.2.2", "--port-base", &base.to_string()]),
        ),
    )
    .unwrap();

    // 4. The guest's config: the dev config plus IPv4 in QEMU's network.
    let mut config: serde_json::Value = serde_json::from_str(
        &icos_config::to_json_pretty(&icos_config_media::dev_guestos_config().unwrap()).unwrap(),
    )
    .unwrap();
    config["network_settings"]["ipv4_config"] = serde_json::json!({
        "address": "10.0.2.15",
        "gateway": "10.0.2.2",
        "prefix_length": 24
    });
    let config_path = dir.join("guestos.json");
    fs::write(&config_path, config.to_string()).unwrap();

    // 5. Boot and stay up.
    let mut vm = Command::new(icos)
        .args(["run", "guestos", "--image"])
        .arg(art.join("disk-img.tar.zst"))
        .arg("--config")
        .arg(&config_path)
        .arg("--routing-table")
        .arg(&table)
        .arg("--forward")
        .arg(format!("{gateway_port}:80"))
        .args(["--allow-outbound", "--stay", "--timeout", "600"])
        .arg("--work-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("vm.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = vm.stdout.take().unwrap();
    children.0.push(vm);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let console = fs::read_to_string(dir.join("vm.log")).unwrap_or_default();
    assert!(
        first.starts_with("GuestOS booted"),
        "no boot: '{first}'\n{console}"
    );
    eprintln!("{}", first.trim());
    assert!(first.contains("role=boundary"), "{first}");
    assert!(first.contains("router=active"), "{first}");
    assert!(first.contains("gateway=active"), "{first}");
    assert!(first.contains("failed_units=[]"), "{first}");

    // 6. Through the gateway (port 80 in the VM) and the router to the
    // replicas on this machine.
    let (status, body) = http(gateway_port, "GET", "localhost", "/api/v2/status", None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, &root_key), "status without the root key");

    let envelope = dir.join("query.cbor");
    run_ok_bytes(
        Command::new(&replica)
            .args(["envelope", "--kind", "query", "--canister", &counter])
            .args(["--method", "read", "-o"])
            .arg(&envelope),
    );
    let (status, body) = http(
        gateway_port,
        "POST",
        "localhost",
        &format!("/api/v2/canister/{counter}/query"),
        Some(&fs::read(&envelope).unwrap()),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, b"replied"), "query not replied: {body:?}");

    let (status, body) = http(
        gateway_port,
        "GET",
        &format!("{assets}.localhost"),
        "/hello.txt",
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"Hello, world!\n");
    // An unknown canister is the router's 400, passed on by the gateway.
    let (status, _) = http(
        gateway_port,
        "POST",
        "localhost",
        "/api/v2/canister/mxzaz-hqaaa-aaaar-qaada-cai/query",
        Some(&fs::read(&envelope).unwrap()),
    );
    assert!((400..500).contains(&status), "unknown canister: {status}");
}
