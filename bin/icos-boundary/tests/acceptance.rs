//! Acceptance with every part a real process on loopback: eight
//! `icos-testnet-replica serve` processes (two subnets of four), the
//! `icos-boundary` router in front of them with the routing-table file that
//! `icos-testnet-replica routing-table` prints, and clients no one here
//! wrote:
//!
//! 1. the unmodified `ic-agent` crate, root key fetched through the router,
//!    queries, makes update calls (certified replies) and reads `/time` on
//!    both subnets' counters as anonymous, Ed25519 and secp256k1 senders;
//! 2. `@dfinity/agent` (Node.js, `crates/icos-testnet-replica/tests/js`)
//!    does the same through the router;
//! 3. one replica of subnet A is SIGKILLed while a client loop queries its
//!    subnet: no query fails, the router marks it down (`check_status` in
//!    its metrics) and the other three answer;
//! 4. one replica of subnet B runs with `--height-lag 1000`: the router
//!    drops it, and the replica itself reports, when stopped, that it
//!    handled no request during the whole run.
//!
//! Where requests went is seen twice: from the router's `x-ic-node-id` and
//! `x-ic-subnet-id` response headers, recorded by an HTTP layer under the
//! agent that also refuses to retry (so a 5xx from the router is an agent
//! error, not hidden by the agent's own 429/503 retries), and from each
//! replica's `requests_handled` count logged when it stops on SIGTERM.
//!
//! The replica binary is built with `$CARGO build` into the target directory
//! of this test's `icos-boundary` binary. Every child is killed when the test
//! ends, failed or not. The Node.js part needs `npm ci` in the js directory
//! (`scripts/test.sh` runs it).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use candid::{Decode, Encode, Nat, Principal};
use ic_agent::agent::HttpService;
use ic_agent::agent_error::TransportError;
use ic_agent::hash_tree::{Label, LookupResult};
use ic_agent::identity::{AnonymousIdentity, BasicIdentity, Secp256k1Identity};
use ic_agent::{Agent, AgentError, Identity};

const NODES: usize = 4;
/// Subnet A's replica that is killed mid-run.
const VICTIM: usize = 1;
/// Subnet B's replica that reports a height far behind.
const LAGGING: usize = 2;
/// Its lag in blocks (the router drops replicas over 50 below the median).
const LAG: u64 = 1000;
/// Log filter of the children: the replicas' stop line must be there.
const CHILD_LOG: &str = "warn,icos_testnet_replica=info,icos_boundary=info";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Builds `icos-testnet-replica` with the profile and into the target
/// directory of this test's `icos-boundary` binary, once per process.
fn replica_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let router = Path::new(env!("CARGO_BIN_EXE_icos-boundary"));
        let profile_dir = router.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--locked", "--quiet"])
            .args([
                "-p",
                "icos-testnet-replica-bin",
                "--bin",
                "icos-testnet-replica",
            ])
            .arg("--target-dir")
            .arg(target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some(name) => {
                cmd.args(["--profile", name]);
            }
            None => panic!("no profile directory in {}", router.display()),
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building icos-testnet-replica: {status}");
        let bin = profile_dir.join("icos-testnet-replica");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// `n` consecutive loopback ports that are free right now.
fn free_ports(n: u16) -> u16 {
    // Below the usual ephemeral range; spread by process id so that two
    // runs at once start apart.
    let start = 20_000 + u16::try_from(std::process::id() % 1000).unwrap() * 10;
    for i in 0..1000u16 {
        let base = 20_000 + (start - 20_000 + i * n) % 11_000;
        let all_free = (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

/// A child process whose stderr goes to a file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .env("ICOS_LOG", CHILD_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log when it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }

    /// Sends SIGTERM and waits up to 10 s for the exit.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every child of the test; whatever still runs is killed on drop.
#[derive(Default)]
struct Fleet {
    procs: Vec<Proc>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// What `icos-testnet-replica describe` says about a subnet.
struct SubnetInfo {
    id: String,
    nodes: Vec<String>,
    counter: Principal,
}

fn describe(bin: &Path, config: &Path) -> (Vec<u8>, Vec<SubnetInfo>) {
    let out = Command::new(bin)
        .args(["describe", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root_key = hex_decode(v["root_key"].as_str().unwrap());
    let subnets = v["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| SubnetInfo {
            id: s["id"].as_str().unwrap().to_string(),
            nodes: s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect(),
            counter: Principal::from_text(s["canisters"]["counter"].as_str().unwrap()).unwrap(),
        })
        .collect();
    (root_key, subnets)
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The canister id with index `n`, as the IC forms them.
fn canister_id(n: u64) -> Principal {
    let mut bytes = n.to_be_bytes().to_vec();
    bytes.extend([1, 1]);
    Principal::from_slice(&bytes)
}

fn testnet_config() -> String {
    let subnet = |name: &[u8]| Principal::self_authenticating(name).to_text();
    serde_json::json!({
        "root_key_seed": "616363657074616e6365207465737473",
        "subnets": [
            {"id": subnet(b"acceptance subnet a"), "nodes": NODES,
             "canister_ranges": [[canister_id(0).to_text(), canister_id(0xfff).to_text()]]},
            {"id": subnet(b"acceptance subnet b"), "nodes": NODES, "type": "system",
             "canister_ranges": [[canister_id(0x1000).to_text(), canister_id(0x1fff).to_text()]]},
        ]
    })
    .to_string()
}

/// One HTTP exchange the agent made.
#[derive(Debug, Clone)]
struct Exchange {
    path: String,
    status: u16,
    node: Option<String>,
    subnet: Option<String>,
    retries: u32,
}

/// The agent's HTTP layer: sends each request once (no retries) and records
/// the router's diagnostic headers.
#[derive(Debug, Default)]
struct Recorder {
    client: reqwest::Client,
    seen: Mutex<Vec<Exchange>>,
}

impl Recorder {
    fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn transport(e: impl std::fmt::Display) -> AgentError {
    AgentError::TransportError(TransportError::Generic(e.to_string()))
}

#[async_trait]
impl HttpService for Recorder {
    async fn call<'a>(
        &'a self,
        req: &'a (dyn Fn() -> Result<http::Request<Bytes>, AgentError> + Send + Sync),
        _max_tcp_retries: usize,
        size_limit: Option<usize>,
    ) -> Result<http::Response<Bytes>, AgentError> {
        let req = reqwest::Request::try_from(req()?.map(reqwest::Body::from)).map_err(transport)?;
        let path = req.url().path().to_string();
        let resp = self
            .client
            .execute(req)
            .await
            .map_err(|e| AgentError::TransportError(TransportError::Reqwest(e)))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let exchange = Exchange {
            path,
            status: resp.status().as_u16(),
            node: header("x-ic-node-id"),
            subnet: header("x-ic-subnet-id"),
            retries: header("x-ic-retries").map_or(0, |r| r.parse().unwrap()),
        };
        let mut out = http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let body = resp.bytes().await.map_err(transport)?;
        if size_limit.is_some_and(|l| body.len() > l) {
            return Err(transport("response body over the size limit"));
        }
        self.seen.lock().unwrap().push(exchange);
        out.body(body).map_err(transport)
    }
}

async fn agent(url: &str, identity: Arc<dyn Identity>, recorder: Arc<Recorder>) -> Agent {
    let agent = Agent::builder()
        .with_url(url)
        .with_arc_identity(identity)
        .with_arc_http_middleware(recorder)
        .build()
        .unwrap();
    agent.fetch_root_key().await.unwrap();
    agent
}

fn identities() -> Vec<(&'static str, Arc<dyn Identity>)> {
    let secp = k256::SecretKey::from_slice(&[0x2a; 32]).unwrap();
    vec![
        ("anonymous", Arc::new(AnonymousIdentity)),
        (
            "ed25519",
            Arc::new(BasicIdentity::from_raw_key(&[0x11; 32])),
        ),
        (
            "secp256k1",
            Arc::new(Secp256k1Identity::from_private_key(secp)),
        ),
    ]
}

async fn read(agent: &Agent, counter: Principal) -> Result<Nat, AgentError> {
    let reply = agent
        .query(&counter, "read")
        .with_arg(Encode!().unwrap())
        .call()
        .await?;
    Ok(Decode!(&reply, Nat).unwrap())
}

/// Reads `/time` through a certificate the agent verified; nanoseconds.
async fn certified_time(agent: &Agent, canister: Principal) -> Result<u64, AgentError> {
    let cert = agent
        .read_state_raw(vec![vec![Label::from("time")]], canister)
        .await?;
    let LookupResult::Found(leb) = cert.tree.lookup_path([b"time".as_ref()]) else {
        panic!("/time is not in the certificate");
    };
    let mut t = 0u64;
    for (i, b) in leb.iter().enumerate() {
        t |= u64::from(b & 0x7f) << (7 * i);
    }
    Ok(t)
}

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, Vec<u8>)> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.bytes().await.ok()?.to_vec()))
}

/// `check_status` of `node` in the router's metrics.
fn check_status(metrics: &str, node: &str) -> Option<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("check_status{"))
        .find(|l| l.contains(&format!("node_id=\"{node}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The replica's `requests_handled` from its stop line.
fn requests_handled(p: &Proc) -> u64 {
    let log = p.log();
    let n = log
        .lines()
        .filter(|l| l.contains("stopping"))
        .find_map(|l| l.split("requests_handled=").nth(1))
        .unwrap_or_else(|| panic!("{} logged no request count:\n{log}", p.name));
    n.trim().parse().unwrap()
}

#[test]
fn clients_through_the_router_in_front_of_replica_processes() {
    let bin = replica_binary();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("testnet.json");
    std::fs::write(&config, testnet_config()).unwrap();
    let (root_key, subnets) = describe(bin, &config);
    assert_eq!(subnets.len(), 2);

    // Replicas at base..base+8 (as the routing table says), the router and
    // its metrics on the next two ports.
    let total = u16::try_from(2 * NODES).unwrap();
    let base = free_ports(total + 2);
    let table = dir.path().join("routing-table.json");
    let out = Command::new(bin)
        .args(["routing-table", "--config"])
        .arg(&config)
        .args(["--port-base", &base.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&table, &out.stdout).unwrap();

    let mut fleet = Fleet::default();
    for (si, s) in subnets.iter().enumerate() {
        for n in 0..NODES {
            let port = base + u16::try_from(si * NODES + n).unwrap();
            let lag = if si == 1 && n == LAGGING { LAG } else { 0 };
            let mut cmd = Command::new(bin);
            cmd.arg("serve")
                .arg("--config")
                .arg(&config)
                .args(["--subnet", &s.id])
                .args(["--node-index", &n.to_string()])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--impl-version", "acceptance"])
                .args(["--height-lag", &lag.to_string()]);
            fleet.procs.push(Proc::spawn(
                &format!("replica-{si}-{n}"),
                dir.path(),
                &mut cmd,
            ));
        }
    }
    let router_url = format!("http://127.0.0.1:{}", base + total);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", base + total + 1);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icos-boundary"));
    cmd.arg("--routing-table")
        .arg(&table)
        .args(["--listen", &format!("127.0.0.1:{}", base + total)])
        .args([
            "--obs-metrics-addr",
            &format!("127.0.0.1:{}", base + total + 1),
        ]);
    fleet
        .procs
        .push(Proc::spawn("router", dir.path(), &mut cmd));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(run(
        &mut fleet,
        base,
        &router_url,
        &metrics_url,
        &root_key,
        &subnets,
    ));

    // Stop everything with SIGTERM: each replica logs what it handled.
    let router_status = fleet.procs.last_mut().unwrap().terminate();
    assert!(router_status.success(), "router: {router_status}");
    let mut handled = BTreeMap::new();
    for (i, p) in fleet.procs.iter_mut().enumerate().take(2 * NODES) {
        if i == VICTIM {
            continue;
        }
        let status = p.terminate();
        assert!(status.success(), "{}: {status}\n{}", p.name, p.log());
        let (si, n) = (i / NODES, i % NODES);
        handled.insert(
            subnets[si].nodes[n].clone(),
            (p.name.clone(), requests_handled(p)),
        );
    }
    eprintln!("requests handled per replica: {handled:?}");

    let lagging = &subnets[1].nodes[LAGGING];
    assert_eq!(
        handled[lagging].1, 0,
        "the replica {LAG} blocks behind handled requests: {handled:?}"
    );
    // Every answer the router attributed to a replica, that replica counted.
    let mut attributed: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &seen {
        if let Some(node) = &e.node {
            *attributed.entry(node.as_str()).or_default() += 1;
        }
    }
    assert!(
        !attributed.contains_key(lagging.as_str()),
        "the router named the lagging replica: {attributed:?}"
    );
    for (node, n) in &attributed {
        if *node == subnets[0].nodes[VICTIM] {
            continue;
        }
        let (name, count) = &handled[*node];
        assert!(
            count >= n,
            "{name} counted {count} requests, the router attributed {n} to it"
        );
    }
    // Both subnets' healthy replicas shared the load.
    for (si, s) in subnets.iter().enumerate() {
        let busy = s
            .nodes
            .iter()
            .enumerate()
            .filter(|(n, _)| !(si == 0 && *n == VICTIM))
            .filter(|(_, id)| handled[*id].1 > 0)
            .count();
        assert!(
            busy >= 2,
            "subnet {si}: only {busy} replicas handled requests: {handled:?}"
        );
    }
}

/// The client part; returns every exchange recorded.
async fn run(
    fleet: &mut Fleet,
    base: u16,
    router_url: &str,
    metrics_url: &str,
    root_key: &[u8],
    subnets: &[SubnetInfo],
) -> Vec<Exchange> {
    let http = reqwest::Client::new();
    wait_until_routable(fleet, &http, base, router_url, metrics_url, subnets).await;

    let recorder = Arc::new(Recorder::default());
    let mut seen = Vec::new();

    // 1. ic-agent, three kinds of sender, both subnets.
    for (name, identity) in identities() {
        let agent = agent(router_url, identity, recorder.clone()).await;
        assert_eq!(agent.read_root_key(), root_key, "{name}: root key");
        let status = agent.status().await.unwrap();
        assert_eq!(
            status.replica_health_status.as_deref(),
            Some("healthy"),
            "{name}: router status"
        );
        for s in subnets {
            let before = read(&agent, s.counter)
                .await
                .unwrap_or_else(|e| panic!("{name}: query on {}: {e}", s.id));
            let reply = agent
                .update(&s.counter, "inc")
                .with_arg(Encode!().unwrap())
                .call_and_wait()
                .await
                .unwrap_or_else(|e| panic!("{name}: update on {}: {e}", s.id));
            let after = Decode!(&reply, Nat).unwrap();
            assert!(after >= 1u8, "{name}: inc returned {after} (read {before})");
            let t = certified_time(&agent, s.counter)
                .await
                .unwrap_or_else(|e| panic!("{name}: read_state on {}: {e}", s.id));
            assert!(
                t.abs_diff(now_ns()) < 60_000_000_000,
                "{name}: certified /time {t} is not now"
            );
        }
        let exchanges = recorder.take();
        check_exchanges(name, &exchanges, subnets);
        seen.extend(exchanges);
    }

    // The lagging replica is up and healthy: the router checks it and drops
    // it for its height alone.
    lagging_replica_is_only_behind(&http, base, metrics_url, &subnets[1]).await;

    // 2. The JavaScript agent.
    js_agent(router_url, root_key, subnets).await;

    // 3. Kill a replica of subnet A while queries go on.
    seen.extend(kill_mid_run(fleet, &http, router_url, metrics_url, subnets, recorder).await);

    // The router answered no canister request with a 5xx.
    let (_, metrics) = get(&http, metrics_url).await.unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_request_total{") && l.contains("status_code=\"5"))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:#?}");
    seen
}

/// Waits until every process serves, every replica passed a health check,
/// and the router routes to both subnets.
async fn wait_until_routable(
    fleet: &mut Fleet,
    http: &reqwest::Client,
    base: u16,
    router_url: &str,
    metrics_url: &str,
    subnets: &[SubnetInfo],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, p) in fleet.procs.iter_mut().enumerate() {
        let url = if i < 2 * NODES {
            let port = base + u16::try_from(i).unwrap();
            format!("http://127.0.0.1:{port}/api/v2/status")
        } else {
            format!("{router_url}/api/v2/status")
        };
        loop {
            p.assert_running();
            if let Some((200, _)) = get(http, &url).await {
                break;
            }
            assert!(Instant::now() < deadline, "{} never served {url}", p.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let all: Vec<&String> = subnets.iter().flat_map(|s| &s.nodes).collect();
    loop {
        let metrics = get(http, metrics_url)
            .await
            .map(|(_, b)| String::from_utf8(b).unwrap())
            .unwrap_or_default();
        if all.iter().all(|n| check_status(&metrics, n) == Some(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the router never saw every replica healthy:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the router recompute its routable set with every height known.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// The lagging replica reports a certified height `LAG` below its
/// neighbour's and passes the router's health check.
async fn lagging_replica_is_only_behind(
    http: &reqwest::Client,
    base: u16,
    metrics_url: &str,
    b: &SubnetInfo,
) {
    let height = |node: usize| async move {
        let port = base + u16::try_from(NODES + node).unwrap();
        let agent = Agent::builder()
            .with_url(format!("http://127.0.0.1:{port}"))
            .build()
            .unwrap();
        let status = agent.status().await.unwrap();
        match status.values.get("certified_height").map(AsRef::as_ref) {
            Some(ic_agent::agent::status::Value::Integer(h)) => *h,
            other => panic!("node {node}: certified_height is {other:?}"),
        }
    };
    let healthy = height(0).await;
    let behind = height(LAGGING).await;
    let lag = healthy - behind;
    assert!(
        (i64::try_from(LAG).unwrap() - 2..=i64::try_from(LAG).unwrap() + 2).contains(&lag),
        "heights {healthy} and {behind}"
    );
    let (_, metrics) = get(http, metrics_url).await.unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(
        check_status(&metrics, &b.nodes[LAGGING]),
        Some(1),
        "{metrics}"
    );
}

/// Every exchange was answered 200/202 by a replica of the subnet that hosts
/// the canister (or whose subnet was asked).
fn check_exchanges(name: &str, exchanges: &[Exchange], subnets: &[SubnetInfo]) {
    assert!(!exchanges.is_empty(), "{name}: the agent sent nothing");
    for e in exchanges {
        assert!(
            matches!(e.status, 200 | 202),
            "{name}: {} answered {}",
            e.path,
            e.status
        );
        if e.path == "/api/v2/status" {
            continue;
        }
        let owner = subnets
            .iter()
            .find(|s| e.path.contains(&s.counter.to_text()) || e.path.contains(&s.id))
            .unwrap_or_else(|| panic!("{name}: unexpected request {}", e.path));
        assert_eq!(
            e.subnet.as_deref(),
            Some(owner.id.as_str()),
            "{name}: {}",
            e.path
        );
        let node = e.node.as_ref().expect("x-ic-node-id");
        assert!(
            owner.nodes.contains(node),
            "{name}: {} answered by {node}, not a node of {}",
            e.path,
            owner.id
        );
    }
}

async fn js_agent(router_url: &str, root_key: &[u8], subnets: &[SubnetInfo]) {
    let js = workspace_root().join("crates/icos-testnet-replica/tests/js");
    assert!(
        js.join("node_modules/@dfinity/agent").is_dir(),
        "the JavaScript agent is not installed: run `npm ci --ignore-scripts` in {}",
        js.display()
    );
    let root_key: String = root_key.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&js)
        .arg("agent-check.mjs")
        .arg(router_url)
        .arg(&root_key)
        .args(subnets.iter().map(|s| s.counter.to_text()))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("agent-check.mjs finished within 90 s")
        .expect("node runs (install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agent-check.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // 3 identities × (root key + status + 2 subnets × 3 checks).
    let oks = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(oks, 24, "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Queries subnet A's counter in a loop; SIGKILLs one of its replicas after
/// a while and goes on until the router has marked it down and 40 more
/// queries were answered. Returns the loop's exchanges.
async fn kill_mid_run(
    fleet: &mut Fleet,
    http: &reqwest::Client,
    router_url: &str,
    metrics_url: &str,
    subnets: &[SubnetInfo],
    recorder: Arc<Recorder>,
) -> Vec<Exchange> {
    let a = &subnets[0];
    let victim = &a.nodes[VICTIM];
    let (_, identity) = identities().swap_remove(2);
    let agent = agent(router_url, identity, recorder.clone()).await;
    read(&agent, a.counter).await.unwrap();
    recorder.take();

    let mut before_kill = Vec::new();
    for i in 0..40 {
        read(&agent, a.counter)
            .await
            .unwrap_or_else(|e| panic!("query {i} before the kill: {e}"));
    }
    before_kill.extend(recorder.take());

    // Kill it, and keep querying until the router's metrics show it down.
    fleet.procs[VICTIM].child.kill().unwrap();
    fleet.procs[VICTIM].child.wait().unwrap();
    let killed = Instant::now();
    let mut queries = 0;
    let mut during = Vec::new();
    loop {
        read(&agent, a.counter)
            .await
            .unwrap_or_else(|e| panic!("query {queries} after the kill: {e}"));
        if queries % 10 == 0 {
            certified_time(&agent, a.counter)
                .await
                .unwrap_or_else(|e| panic!("read_state after the kill: {e}"));
        }
        queries += 1;
        let metrics = get(http, metrics_url)
            .await
            .map(|(_, b)| String::from_utf8(b).unwrap())
            .unwrap_or_default();
        if check_status(&metrics, victim) == Some(0) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the router did not mark the killed replica down:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    during.extend(recorder.take());
    for i in 0..40 {
        read(&agent, a.counter)
            .await
            .unwrap_or_else(|e| panic!("query {i} after the router noticed: {e}"));
    }
    let after = recorder.take();

    let by_node = |es: &[Exchange]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for e in es {
            *m.entry(e.node.clone().unwrap_or_default()).or_default() += 1;
        }
        m
    };
    eprintln!(
        "kill: before {:?}; until marked down ({queries} queries, {:?}, {} router retries) {:?}; after {:?}",
        by_node(&before_kill),
        killed.elapsed(),
        during.iter().map(|e| e.retries).sum::<u32>(),
        by_node(&during),
        by_node(&after)
    );
    check_exchanges("before the kill", &before_kill, subnets);
    check_exchanges("after the kill", &during, subnets);
    check_exchanges("after the router noticed", &after, subnets);
    assert!(
        before_kill.iter().any(|e| e.node.as_ref() == Some(victim)),
        "the victim answered none of 40 queries before the kill: {:?}",
        by_node(&before_kill)
    );
    let answering: BTreeSet<&String> = during
        .iter()
        .chain(&after)
        .filter_map(|e| e.node.as_ref())
        .collect();
    assert!(
        !answering.contains(victim),
        "a killed replica answered: {answering:?}"
    );
    let survivors = after
        .iter()
        .filter_map(|e| e.node.as_ref())
        .collect::<BTreeSet<_>>();
    assert!(
        survivors.len() >= 2,
        "the other replicas did not share the traffic: {:?}",
        by_node(&after)
    );
    before_kill.into_iter().chain(during).chain(after).collect()
}
