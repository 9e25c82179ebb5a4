//! The router on 127.0.0.1:0 in front of small in-test replica doubles.
//!
//! The doubles answer `/api/v2/status` with a status document carrying a
//! settable health and certified height, and every other path with a canned
//! CBOR reply, recording what they received. They exist only in this test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::Value;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use icos_boundary::cache::CacheConfig;
use icos_boundary::health::HealthConfig;
use icos_boundary::table_file::{SubnetSpec, table_file_json};
use icos_boundary::{Principal, RouterConfig, RunningRouter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const REPLY: &[u8] = b"\xd9\xd9\xf7\xa2fstatusgrepliedereply\xa1cargFDIDL\x00\x00";

// ---------------------------------------------------------------- doubles

struct ReplicaState {
    name: String,
    health: Mutex<String>,
    height: AtomicU64,
    /// Status of API replies (200 unless set).
    api_status: AtomicU16,
    api_hits: AtomicUsize,
    last_path: Mutex<String>,
    last_body: Mutex<Vec<u8>>,
    last_headers: Mutex<HeaderMap>,
}

struct Replica {
    addr: SocketAddr,
    state: Arc<ReplicaState>,
    server: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(name: &str, height: u64) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReplicaState {
            name: name.into(),
            health: Mutex::new("healthy".into()),
            height: AtomicU64::new(height),
            api_status: AtomicU16::new(200),
            api_hits: AtomicUsize::new(0),
            last_path: Mutex::default(),
            last_body: Mutex::default(),
            last_headers: Mutex::default(),
        });
        let s = state.clone();
        let server = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the server closes
            // every connection, as a dead replica would.
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let s = s.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Replica {
            addr,
            state,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&self) {
        self.server.abort();
    }

    fn hits(&self) -> usize {
        self.state.api_hits.load(Ordering::SeqCst)
    }
}

async fn serve(
    s: Arc<ReplicaState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/api/v2/status" {
        let fields = vec![
            (text("root_key"), Value::Bytes(vec![0x30; 133])),
            (text("impl_version"), text("0.9.0")),
            (
                text("replica_health_status"),
                text(&s.health.lock().unwrap()),
            ),
            (
                text("certified_height"),
                Value::Integer(s.height.load(Ordering::SeqCst).into()),
            ),
        ];
        return Ok(Response::new(Full::new(Bytes::from(cbor(&Value::Tag(
            55799,
            Box::new(Value::Map(fields)),
        ))))));
    }
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    s.api_hits.fetch_add(1, Ordering::SeqCst);
    *s.last_path.lock().unwrap() = path;
    *s.last_body.lock().unwrap() = body.to_vec();
    *s.last_headers.lock().unwrap() = headers;
    let status = StatusCode::from_u16(s.api_status.load(Ordering::SeqCst)).unwrap();
    let mut response = Response::new(Full::new(Bytes::from_static(REPLY)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-test-replica", s.name.parse().unwrap());
    response
        .headers_mut()
        .insert("content-type", "application/cbor".parse().unwrap());
    Ok(response)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------- ids

fn canister(n: u64) -> Principal {
    let mut b = n.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 1]);
    Principal::from_slice(&b).unwrap()
}

fn subnet_id(s: u8) -> Principal {
    Principal::from_slice(&[s; 29]).unwrap()
}

fn node_id(s: u8, i: u8) -> Principal {
    Principal::from_slice(&[s, i, 0xfe]).unwrap()
}

/// Subnet `s` with canisters `ranges` and `replicas`.
fn spec(s: u8, ranges: &[(u64, u64)], replicas: &[&Replica]) -> SubnetSpec {
    SubnetSpec {
        id: subnet_id(s),
        ranges: ranges
            .iter()
            .map(|&(a, b)| (canister(a), canister(b)))
            .collect(),
        nodes: replicas
            .iter()
            .enumerate()
            .map(|(i, r)| (node_id(s, u8::try_from(i).unwrap()), r.url()))
            .collect(),
    }
}

fn write_table(path: &Path, subnets: &[SubnetSpec]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, table_file_json(Some(&[0xab; 4]), subnets)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------- router

fn config(table: PathBuf) -> RouterConfig {
    let mut c = RouterConfig::new("127.0.0.1:0".parse().unwrap(), table);
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.table_poll_interval = Duration::from_millis(100);
    c.health = HealthConfig {
        check_interval: Duration::from_millis(100),
        check_timeout: Duration::from_secs(1),
        update_interval: Duration::from_millis(100),
        ..HealthConfig::default()
    };
    c.read_timeout = Duration::from_secs(2);
    c.upstream_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c
}

struct Env {
    router: RunningRouter,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
    table: PathBuf,
}

async fn start(subnets: &[SubnetSpec], tweak: impl FnOnce(&mut RouterConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("routing.json");
    if !subnets.is_empty() {
        write_table(&table, subnets);
    }
    let mut cfg = config(table.clone());
    tweak(&mut cfg);
    let router = icos_boundary::start(cfg).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    Env {
        router,
        client,
        _dir: dir,
        table,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

impl Env {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.router.local_addr()))
            .header("content-type", "application/cbor");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send("POST", path, body, &[]).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Vec::new(), &[]).await
    }

    /// Waits until `/health` says 204.
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get("/health").await.status != StatusCode::NO_CONTENT {
            assert!(Instant::now() < deadline, "router never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An envelope as agents send it.
fn envelope(kind: &str, sender: &[u8], canister: Principal, nonce: Option<&[u8]>) -> Vec<u8> {
    let mut content = vec![
        (text("request_type"), text(kind)),
        (text("sender"), Value::Bytes(sender.to_vec())),
        (
            text("ingress_expiry"),
            Value::Integer(1_700_000_000_000_000_000u64.into()),
        ),
    ];
    if kind == "read_state" {
        content.push((
            text("paths"),
            Value::Array(vec![Value::Array(vec![Value::Bytes(b"time".to_vec())])]),
        ));
    } else {
        content.push((
            text("canister_id"),
            Value::Bytes(canister.as_slice().to_vec()),
        ));
        content.push((text("method_name"), text("greet")));
        content.push((text("arg"), Value::Bytes(b"DIDL\x00\x00".to_vec())));
    }
    if let Some(n) = nonce {
        content.push((text("nonce"), Value::Bytes(n.to_vec())));
    }
    let mut outer = vec![(text("content"), Value::Map(content))];
    if sender != [4] {
        outer.push((text("sender_pubkey"), Value::Bytes(vec![0x30; 44])));
        outer.push((text("sender_sig"), Value::Bytes(vec![0x55; 64])));
    }
    cbor(&Value::Tag(55799, Box::new(Value::Map(outer))))
}

fn query(canister: Principal) -> Vec<u8> {
    envelope("query", &[4], canister, None)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn forwards_byte_for_byte_with_ic_headers() {
    let a = Replica::start("a", 100).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a])], |_| {}).await;
    env.wait_healthy().await;

    let c = canister(7);
    let body = envelope("call", &[9; 29], c, Some(b"n1"));
    let path = format!("/api/v3/canister/{c}/call");
    let r = env.post(&path, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], REPLY);
    assert_eq!(*a.state.last_body.lock().unwrap(), body, "body unchanged");
    assert_eq!(*a.state.last_path.lock().unwrap(), path);
    assert_eq!(
        a.state.last_headers.lock().unwrap()["content-type"],
        "application/cbor"
    );
    assert_eq!(r.header("x-test-replica"), "a");
    assert_eq!(r.header("content-type"), "application/cbor");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("x-ic-error-cause"), "none");
    assert_eq!(r.header("x-ic-canister-id"), c.to_string());
    assert_eq!(r.header("x-ic-canister-id-cbor"), c.to_string());
    assert_eq!(r.header("x-ic-subnet-id"), subnet_id(1).to_string());
    assert_eq!(r.header("x-ic-node-id"), node_id(1, 0).to_string());
    assert_eq!(r.header("x-ic-method-name"), "greet");
    assert_eq!(
        r.header("x-ic-sender"),
        Principal::from_slice(&[9; 29]).unwrap().to_string()
    );
    assert_eq!(r.header("x-ic-request-type"), "call_v3");
    assert_eq!(r.header("x-ic-cache-status"), "DISABLED");
    assert_eq!(r.header("x-request-id").len(), 36);

    // Every canister route reaches the replica.
    for (v, method, kind) in [
        ("v2", "query", "query"),
        ("v3", "query", "query"),
        ("v2", "call", "call"),
        ("v4", "call", "call"),
        ("v2", "read_state", "read_state"),
        ("v3", "read_state", "read_state"),
    ] {
        let path = format!("/api/{v}/canister/{c}/{method}");
        let r = env.post(&path, envelope(kind, &[4], c, None)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(*a.state.last_path.lock().unwrap(), path);
    }
    // Subnet routes go to the subnet named in the path.
    for (v, method, kind) in [
        ("v2", "read_state", "read_state"),
        ("v3", "read_state", "read_state"),
        ("v3", "query", "query"),
        ("v4", "call", "call"),
    ] {
        let path = format!("/api/{v}/subnet/{}/{method}", subnet_id(1));
        let r = env
            .post(
                &path,
                envelope(kind, &[4], Principal::MANAGEMENT_CANISTER, None),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("x-ic-subnet-id"), subnet_id(1).to_string());
        assert_eq!(*a.state.last_path.lock().unwrap(), path);
    }
    // A client's request id is kept; a malformed one is refused.
    let id = "0191b4a2-7c3e-4d4e-9f5a-0123456789ab";
    let r = env
        .send(
            "POST",
            &format!("/api/v3/canister/{c}/query"),
            query(c),
            &[("x-request-id", id)],
        )
        .await;
    assert_eq!(r.header("x-request-id"), id);
    let r = env
        .send(
            "POST",
            &format!("/api/v3/canister/{c}/query"),
            query(c),
            &[("x-request-id", "nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-ic-error-cause"), "malformed_request");

    // Replica 4xx replies are passed through, not retried.
    a.state.api_status.store(403, Ordering::SeqCst);
    let hits = a.hits();
    let r = env
        .post(&format!("/api/v3/canister/{c}/query"), query(c))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(a.hits(), hits + 1);
    assert_eq!(r.header("x-ic-retries"), "");

    // Metrics carry ic-boundary's names.
    let metrics = env
        .client
        .get(
            format!("http://{}/metrics", env.router.metrics_addr().unwrap())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("http_request_total{request_type=\"call_v3\",status_code=\"200\""),
        "{text}"
    );
    assert!(text.contains("check_total{status=\"ok\""), "{text}");
    assert!(text.contains("check_status{"), "{text}");
    assert!(text.contains("persist_nodes 1"), "{text}");
    env.router.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_their_causes() {
    let a = Replica::start("a", 100).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a])], |c| {
        c.read_timeout = Duration::from_millis(300);
    })
    .await;
    env.wait_healthy().await;
    let c = canister(7);
    let cause = |r: &Reply| r.header("x-ic-error-cause").to_owned();

    // A textual principal with a bad checksum.
    let r = env
        .post(
            "/api/v3/canister/rwlgt-iiaaa-aaaaa-aaaaa-caa/query",
            query(c),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(cause(&r), "malformed_request");
    assert!(String::from_utf8_lossy(&r.body).starts_with("error: malformed_request\ndetails: "));
    let r = env
        .post("/api/v2/subnet/not-a-principal/read_state", query(c))
        .await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::BAD_REQUEST, "malformed_request")
    );

    // Not CBOR, and CBOR without a content map.
    let path = format!("/api/v3/canister/{c}/query");
    let r = env.post(&path, b"hello".to_vec()).await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::BAD_REQUEST, "unable_to_parse_cbor")
    );
    let r = env.post(&path, cbor(&Value::Map(vec![]))).await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::BAD_REQUEST, "unable_to_parse_cbor")
    );

    // Unknown canister and subnet.
    let far = canister(5000);
    let r = env
        .post(&format!("/api/v3/canister/{far}/query"), query(far))
        .await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::BAD_REQUEST, "canister_not_found")
    );
    assert_eq!(r.header("x-ic-canister-id"), far.to_string());
    let r = env
        .post(
            &format!("/api/v3/subnet/{}/read_state", subnet_id(9)),
            query(c),
        )
        .await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::BAD_REQUEST, "subnet_not_found")
    );

    // Over 4 MiB.
    let r = env.post(&path, vec![0u8; 4 * 1024 * 1024 + 1]).await;
    assert_eq!(
        (r.status, cause(&r).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(a.hits(), 0, "nothing reached the replica");

    // A client that stops sending its body.
    let mut stream = TcpStream::connect(env.router.local_addr()).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/cbor\r\ncontent-length: 100\r\n\r\n0123456789"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(14).any(|w| w == b"body_timed_out") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("x-ic-error-cause: body_timed_out"),
        "{response}"
    );
    env.router.shutdown().await;
}

#[tokio::test]
async fn no_table_means_503_and_status_starting() {
    let env = start(&[], |_| {}).await;
    let c = canister(1);
    let r = env
        .post(&format!("/api/v3/canister/{c}/query"), query(c))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("x-ic-error-cause"), "service_unavailable");
    assert_eq!(
        env.get("/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let status = env.get("/api/v2/status").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.header("content-type"), "application/cbor");
    let s = icos_boundary::status::decode_status(&status.body).unwrap();
    assert_eq!(s.health.unwrap().as_str(), "starting");
    assert_eq!(s.root_key, None);
    env.router.shutdown().await;
}

#[tokio::test]
async fn status_reports_root_key_and_health() {
    let a = Replica::start("a", 100).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a])], |_| {}).await;
    env.wait_healthy().await;
    let status = env.get("/api/v2/status").await;
    assert_eq!(&status.body[..3], &[0xd9, 0xd9, 0xf7]);
    let s = icos_boundary::status::decode_status(&status.body).unwrap();
    assert_eq!(s.health.unwrap().as_str(), "healthy");
    assert_eq!(s.root_key, Some(vec![0xab; 4]));

    // The only replica turns unhealthy: no healthy nodes, health 503.
    *a.state.health.lock().unwrap() = "certified_state_behind".into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.get("/health").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = canister(3);
    let r = env
        .post(&format!("/api/v3/canister/{c}/query"), query(c))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("x-ic-error-cause"), "no_healthy_nodes");
    env.router.shutdown().await;
}

#[tokio::test]
async fn queries_to_a_dead_replica_are_retried_elsewhere() {
    let a = Replica::start("a", 100).await;
    let b = Replica::start("b", 100).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a, &b])], |c| {
        // One check at start only, so the dead replica stays "healthy".
        c.health.check_interval = Duration::from_secs(3600);
        c.health.update_interval = Duration::from_secs(3600);
    })
    .await;
    env.wait_healthy().await;
    a.kill();
    let c = canister(1);
    let mut retried = 0;
    for _ in 0..20 {
        let r = env
            .post(&format!("/api/v3/canister/{c}/query"), query(c))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-test-replica"), "b");
        assert_eq!(r.header("x-ic-node-id"), node_id(1, 1).to_string());
        if r.header("x-ic-retries") == "1" {
            retried += 1;
        }
    }
    assert!(retried > 0, "the dead replica was never tried first");
    env.router.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_retried_for_queries_but_not_for_calls() {
    let a = Replica::start("a", 100).await;
    let b = Replica::start("b", 100).await;
    a.state.api_status.store(500, Ordering::SeqCst);
    let env = start(&[spec(1, &[(0, 99)], &[&a, &b])], |c| {
        c.latency_routing = false;
    })
    .await;
    env.wait_healthy().await;
    let c = canister(1);
    for _ in 0..10 {
        let r = env
            .post(
                &format!("/api/v2/canister/{c}/read_state"),
                envelope("read_state", &[4], c, None),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let mut failed = 0;
    for _ in 0..20 {
        let r = env
            .post(
                &format!("/api/v2/canister/{c}/call"),
                envelope("call", &[4], c, None),
            )
            .await;
        if r.status == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
            assert_eq!(r.header("x-ic-retries"), "");
            assert_eq!(r.header("x-test-replica"), "a");
        }
    }
    assert!(failed > 0, "calls are not retried");
    env.router.shutdown().await;
}

#[tokio::test]
async fn a_lagging_replica_gets_no_traffic() {
    let a = Replica::start("a", 1000).await;
    let b = Replica::start("b", 1001).await;
    let lagging = Replica::start("lagging", 900).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a, &b, &lagging])], |_| {}).await;
    env.wait_healthy().await;
    let c = canister(1);
    for _ in 0..30 {
        let r = env
            .post(&format!("/api/v3/canister/{c}/query"), query(c))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(lagging.hits(), 0);
    assert!(a.hits() > 0 && b.hits() > 0);
    // It catches up and is routed to again.
    lagging.state.height.store(1000, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lagging.hits() == 0 {
        assert!(Instant::now() < deadline, "caught-up replica never used");
        env.post(&format!("/api/v3/canister/{c}/query"), query(c))
            .await;
    }
    env.router.shutdown().await;
}

#[tokio::test]
async fn the_table_is_reloaded_and_a_bad_file_keeps_the_old_one() {
    let a = Replica::start("a", 10).await;
    let b = Replica::start("b", 10).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a])], |_| {}).await;
    env.wait_healthy().await;
    let new = canister(500);
    let path = format!("/api/v3/canister/{new}/query");
    let r = env.post(&path, query(new)).await;
    assert_eq!(r.header("x-ic-error-cause"), "canister_not_found");

    write_table(
        &env.table,
        &[spec(1, &[(0, 99)], &[&a]), spec(2, &[(100, 999)], &[&b])],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = env.post(&path, query(new)).await;
        if r.status == StatusCode::OK {
            assert_eq!(r.header("x-test-replica"), "b");
            assert_eq!(r.header("x-ic-subnet-id"), subnet_id(2).to_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new table never served: {}",
            r.header("x-ic-error-cause")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&env.table, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = env.post(&path, query(new)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the previous table stays in service"
    );
    env.router.shutdown().await;
}

#[tokio::test]
async fn anonymous_queries_are_cached_and_calls_rate_limited() {
    let a = Replica::start("a", 10).await;
    let env = start(&[spec(1, &[(0, 99)], &[&a])], |c| {
        c.cache = Some(CacheConfig {
            max_size: 1 << 20,
            max_item_size: 1 << 16,
            ttl: Duration::from_secs(60),
            cache_non_anonymous: false,
        });
        c.rate_limit_per_ip = Some(2);
    })
    .await;
    env.wait_healthy().await;
    let c = canister(1);
    let path = format!("/api/v3/canister/{c}/query");
    let first = env.post(&path, query(c)).await;
    assert_eq!(first.header("x-ic-cache-status"), "MISS");
    let second = env.post(&path, query(c)).await;
    assert_eq!(second.header("x-ic-cache-status"), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(a.hits(), 1);
    let r = env
        .post(&path, envelope("query", &[4], c, Some(b"x")))
        .await;
    assert_eq!(r.header("x-ic-cache-status"), "BYPASS");
    assert_eq!(r.header("x-ic-cache-bypass-reason"), "nonce");
    let r = env.post(&path, envelope("query", &[7; 29], c, None)).await;
    assert_eq!(r.header("x-ic-cache-bypass-reason"), "non_anonymous");

    let call = format!("/api/v2/canister/{c}/call");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = env.post(&call, envelope("call", &[4], c, None)).await;
        statuses.push((r.status.as_u16(), r.header("x-ic-error-cause").to_owned()));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2], (429, "rate_limited".to_owned()));
    // Queries are not limited.
    let r = env
        .post(&path, envelope("query", &[4], c, Some(b"y")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    env.router.shutdown().await;
}
