//! End to end on loopback: two testnet replicas (one per subnet), the
//! `icos-boundary` router in front of them, and gateways in front of the
//! router, called with a plain HTTP client.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use candid::Principal;
use http::Request;
use icos_gateway::{GatewayConfig, RootKey, RunningGateway, VERIFICATION_HEADER};
use icos_testnet_replica::canisters::assets::ASSETS;
use icos_testnet_replica::config::canister_id;
use icos_testnet_replica::{ReplicaSettings, RunningReplica, Testnet};

fn testnet() -> Arc<Testnet> {
    let a = Principal::self_authenticating(b"icos gateway test subnet a");
    let b = Principal::self_authenticating(b"icos gateway test subnet b");
    let json = serde_json::json!({
        "root_key_seed": "67617465776179207465737420736565",
        "subnets": [
            {"id": a.to_text(), "nodes": 1,
             "canister_ranges": [[canister_id(0).to_text(), canister_id(0xffff).to_text()]]},
            {"id": b.to_text(), "nodes": 1,
             "canister_ranges": [[canister_id(0x10000).to_text(), canister_id(0x1ffff).to_text()]]},
        ]
    });
    Arc::new(Testnet::parse(&json.to_string(), "test").unwrap())
}

async fn start_replicas(t: &Arc<Testnet>) -> Vec<RunningReplica> {
    let mut out = Vec::new();
    for s in &t.subnets {
        let settings = ReplicaSettings {
            testnet: t.clone(),
            subnet: s.id,
            node_index: 0,
            impl_version: "test-version".into(),
            height_lag: 0,
        };
        out.push(
            icos_testnet_replica::start(settings, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    out
}

/// The router in front of `replicas` (one per subnet), its routing table
/// written into `dir`.
async fn start_router(
    t: &Testnet,
    replicas: &[RunningReplica],
    dir: &Path,
) -> icos_boundary::RunningRouter {
    let table = dir.join("table.json");
    let json = t.routing_table(|s, _| Some(format!("http://{}", replicas[s].local_addr())));
    std::fs::write(&table, json.to_string()).unwrap();
    icos_boundary::start(icos_boundary::RouterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        table,
    ))
    .await
    .unwrap()
}

/// A man in the middle between a gateway and the router that changes the
/// hello.txt body inside every reply.
async fn tampering_proxy(upstream: SocketAddr) -> SocketAddr {
    async fn forward(State(upstream): State<SocketAddr>, req: Request<Body>) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 24).await.unwrap();
        let url = format!(
            "http://{upstream}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut out = reqwest::Client::new().request(parts.method, url);
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
            out = out.header(http::header::CONTENT_TYPE, ct);
        }
        let reply = out.body(body).send().await.unwrap();
        let status = reply.status();
        let headers = reply.headers().clone();
        let mut bytes = reply.bytes().await.unwrap().to_vec();
        let (from, to) = (b"Hello, world!", b"Hello, WORLD!");
        if let Some(i) = bytes.windows(from.len()).position(|w| w == from) {
            bytes[i..i + from.len()].copy_from_slice(to);
        }
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = status;
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        r
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(upstream);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn gateway(upstream: SocketAddr, root_key: RootKey, denylist: &Path) -> RunningGateway {
    let mut c = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{upstream}"),
        vec!["localhost".into(), "gw.test".into()],
        root_key,
    );
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.denylist = Some(denylist.to_owned());
    c.denylist_poll_interval = Duration::from_millis(100);
    c.request_timeout = Duration::from_secs(20);
    c.max_request_body = 32 * 1024;
    icos_gateway::start(c).await.unwrap()
}

struct Reply {
    status: u16,
    cause: String,
    verification: String,
    content_type: String,
    body: String,
}

async fn get(client: &reqwest::Client, gw: SocketAddr, host: &str, path: &str) -> Reply {
    let r = client
        .get(format!("http://{gw}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (cause, verification, content_type) = (
        h("x-ic-error-cause"),
        h(VERIFICATION_HEADER),
        h("content-type"),
    );
    Reply {
        status: r.status().as_u16(),
        cause,
        verification,
        content_type,
        body: r.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_verifies_and_refuses() {
    let t = testnet();
    let replicas = start_replicas(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let router = start_router(&t, &replicas, dir.path()).await;
    let denied = t.subnets[1].counter_id;
    let denylist = dir.path().join("denylist.json");
    std::fs::write(&denylist, format!("[\"{denied}\"]")).unwrap();

    let gw = gateway(
        router.local_addr(),
        RootKey::Der(t.root_key_der.clone()),
        &denylist,
    )
    .await;
    let proxy = tampering_proxy(router.local_addr()).await;
    let evil = gateway(proxy, RootKey::Fetch, &denylist).await;
    let addr = gw.local_addr();
    let client = reqwest::Client::new();
    let assets: Vec<Principal> = t.subnets.iter().map(|s| s.assets_id).collect();

    // Wait for the router's first health checks.
    let host = format!("{}.localhost", assets[0]);
    let mut ready = false;
    for _ in 0..100 {
        if get(&client, addr, &host, "/hello.txt").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the gateway never served through the router");

    // Certified assets on both subnets, with and without a port in Host.
    for id in &assets {
        for host in [format!("{id}.localhost"), format!("{id}.gw.test:80")] {
            for (path, content_type, body) in [("/", ASSETS[0].1, ASSETS[0].2)]
                .into_iter()
                .chain(ASSETS.iter().copied())
            {
                let r = get(&client, addr, &host, path).await;
                assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
                assert_eq!(r.body, body, "{host}{path}");
                assert_eq!(r.content_type, content_type, "{host}{path}");
                assert_eq!(r.verification, "v2", "{host}{path}");
            }
        }
    }
    // The certified 404.
    let r = get(&client, addr, &host, "/nope").await;
    assert_eq!(
        (r.status, r.verification.as_str()),
        (404, "v2"),
        "{}",
        r.body
    );

    // Request bodies over the limit.
    let r = client
        .post(format!("http://{addr}/hello.txt"))
        .header("host", &host)
        .body(vec![0u8; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Raw: served without verification.
    let raw = format!("{}.raw.localhost", assets[0]);
    let r = get(&client, addr, &raw, "/data.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, ASSETS[2].2);
    assert_eq!(r.verification, "skipped_raw");

    // A tampered body is refused on a verified domain, passed on raw.
    let r = get(&client, evil.local_addr(), &host, "/hello.txt").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.cause, "response_verification_failed");
    assert!(!r.body.contains("WORLD"), "{}", r.body);
    let r = get(&client, evil.local_addr(), &raw, "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, WORLD!\n"));
    // Untampered content still verifies through the proxy (root key fetched).
    let r = get(&client, evil.local_addr(), &host, "/data.json").await;
    assert_eq!(
        (r.status, r.verification.as_str()),
        (200, "v2"),
        "{}",
        r.body
    );

    // Unknown canisters: in a subnet's range but absent, and in no range.
    for id in [canister_id(7), canister_id(0x50000)] {
        let r = get(&client, addr, &format!("{id}.localhost"), "/").await;
        assert_eq!(r.status, 404, "{id}: {}", r.body);
        assert_eq!(r.cause, "canister_not_found", "{id}");
    }
    // A canister without http_request.
    let r = get(
        &client,
        addr,
        &format!("{}.localhost", t.subnets[0].counter_id),
        "/",
    )
    .await;
    assert_eq!(
        (r.status, r.cause.as_str()),
        (502, "canister_reject"),
        "{}",
        r.body
    );

    // Bad hosts.
    for host in ["example.com", "localhost", "foo.localhost", "raw.localhost"] {
        let r = get(&client, addr, host, "/").await;
        assert_eq!(r.status, 400, "{host}");
        assert!(r.body.contains("details: "), "{}", r.body);
    }
    let r = get(&client, addr, "example.com", "/").await;
    assert_eq!(r.cause, "unknown_domain");
    assert!(r.body.contains("localhost"), "{}", r.body);

    // Denylist, then its reload.
    let denied_host = format!("{denied}.localhost");
    let r = get(&client, addr, &denied_host, "/").await;
    assert_eq!((r.status, r.cause.as_str()), (451, "denylisted"));
    std::fs::write(&denylist, format!("[\"{}\"]", assets[1])).unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(&client, addr, &format!("{}.localhost", assets[1]), "/")
            .await
            .status
            == 451
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the denylist was not reloaded");
    let r = get(&client, addr, &denied_host, "/").await;
    assert_eq!(r.status, 502, "no longer denied: {}", r.body);

    // HTTP/2 with prior knowledge; the host travels as `:authority`.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(&host, addr)
        .build()
        .unwrap();
    let r = h2
        .get(format!("http://{host}:{}/hello.txt", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), ASSETS[1].2);

    // Metrics.
    let m = client
        .get(format!("http://{}/metrics", gw.metrics_addr().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("http_gateway_requests_total"), "{m}");
    assert!(m.contains("verification=\"v2\""), "{m}");
    assert!(m.contains("http_gateway_denylist_reloads_total"), "{m}");

    evil.shutdown().await;
    gw.shutdown().await;
    router.shutdown().await;
}

/// What the fake API endpoint saw.
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

fn cbor_reply(arg: Vec<u8>) -> Response {
    use ciborium::Value;
    let v = Value::Map(vec![
        (Value::Text("status".into()), Value::Text("replied".into())),
        (
            Value::Text("reply".into()),
            Value::Map(vec![(Value::Text("arg".into()), Value::Bytes(arg))]),
        ),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    let mut r = Response::new(Body::from(out));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/cbor"),
    );
    r
}

/// An API endpoint with one canister that streams `/stream` in four
/// chunks and asks for an upgrade on `/upgrade`; update calls are refused.
async fn fake_api(seen: Seen) -> SocketAddr {
    use icos_gateway::canister::{
        HttpRequest, HttpResponse, StreamingCallback, StreamingCallbackResponse, StreamingStrategy,
        StreamingToken,
    };
    async fn serve(State(seen): State<Seen>, req: Request<Body>) -> Response {
        let path: Vec<String> = req.uri().path().split('/').map(str::to_owned).collect();
        let canister = Principal::from_text(&path[4]).unwrap();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        let mut envelope: ciborium::Value = ciborium::from_reader(body.as_ref()).unwrap();
        // The self-describe tag, 55799.
        while let ciborium::Value::Tag(_, inner) = envelope {
            envelope = *inner;
        }
        let field = |m: &ciborium::Value, k: &str| {
            m.as_map()
                .unwrap()
                .iter()
                .find(|(key, _)| key.as_text() == Some(k))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let content = field(&envelope, "content");
        let method = field(&content, "method_name").into_text().unwrap();
        let arg = field(&content, "arg").into_bytes().unwrap();
        seen.lock().unwrap().push(method.clone());
        if path[5] == "call" {
            let mut r = Response::new(Body::from("refused by the fake"));
            *r.status_mut() = http::StatusCode::BAD_REQUEST;
            return r;
        }
        let token = |index: u8| StreamingToken {
            key: "/stream".into(),
            content_encoding: "identity".into(),
            index: candid::Nat::from(index),
            sha256: None,
        };
        let reply = match method.as_str() {
            "http_request" => {
                let req: HttpRequest = candid::decode_one(&arg).unwrap();
                let (body, upgrade, streaming_strategy) = match req.url.as_str() {
                    "/upgrade" => ("query", Some(true), None),
                    _ => (
                        "chunk0;",
                        None,
                        Some(StreamingStrategy::Callback {
                            callback: StreamingCallback::new(
                                canister,
                                "http_request_streaming_callback".into(),
                            ),
                            token: token(1),
                        }),
                    ),
                };
                candid::encode_one(HttpResponse {
                    status_code: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: serde_bytes::ByteBuf::from(body.as_bytes().to_vec()),
                    upgrade,
                    streaming_strategy,
                })
            }
            _ => {
                let t: StreamingToken = candid::decode_one(&arg).unwrap();
                let i: u8 = t.index.0.try_into().unwrap();
                candid::encode_one(StreamingCallbackResponse {
                    body: serde_bytes::ByteBuf::from(format!("chunk{i};").into_bytes()),
                    token: (i < 3).then(|| token(i + 1)),
                })
            }
        };
        cbor_reply(reply.unwrap())
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(serve).with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_and_upgrade() {
    let seen = Seen::default();
    let api = fake_api(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let denylist = dir.path().join("denylist.json");
    std::fs::write(&denylist, "[]").unwrap();
    let gw = gateway(api, RootKey::Der(testnet().root_key_der.clone()), &denylist).await;
    let client = reqwest::Client::new();
    let id = canister_id(1);

    // Chunks are fetched through the callback and joined.
    let raw = format!("{id}.raw.localhost");
    let r = get(&client, gw.local_addr(), &raw, "/stream").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "chunk0;chunk1;chunk2;chunk3;");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            "http_request",
            "http_request_streaming_callback",
            "http_request_streaming_callback",
            "http_request_streaming_callback"
        ]
    );
    // The joined body is what gets verified; this one is not certified.
    let r = get(
        &client,
        gw.local_addr(),
        &format!("{id}.localhost"),
        "/stream",
    )
    .await;
    assert_eq!(
        (r.status, r.cause.as_str()),
        (503, "response_verification_failed")
    );

    // upgrade = opt true: repeated as an update call of http_request_update.
    seen.lock().unwrap().clear();
    let r = get(&client, gw.local_addr(), &raw, "/upgrade").await;
    assert_eq!(
        (r.status, r.cause.as_str()),
        (502, "upstream_error"),
        "{}",
        r.body
    );
    assert!(r.body.contains("refused by the fake"), "{}", r.body);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["http_request", "http_request_update"]
    );
    gw.shutdown().await;
}

/// `/api/...` and `/health` go to the router unchanged: an unmodified
/// `ic-agent` pointed at the gateway queries, calls and reads state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_are_forwarded_to_the_router() {
    use candid::{Decode, Encode, Nat};
    let t = testnet();
    let replicas = start_replicas(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let router = start_router(&t, &replicas, dir.path()).await;
    let denylist = dir.path().join("denylist.json");
    std::fs::write(&denylist, "[]").unwrap();
    let gw = gateway(router.local_addr(), RootKey::Fetch, &denylist).await;
    let url = format!("http://{}", gw.local_addr());
    let client = reqwest::Client::new();

    let mut healthy = false;
    for _ in 0..100 {
        let r = client.get(format!("{url}/health")).send().await.unwrap();
        if r.status() == 204 || r.status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "/health never became healthy through the gateway");

    let agent = ic_agent::Agent::builder().with_url(&url).build().unwrap();
    agent.fetch_root_key().await.unwrap();
    assert_eq!(agent.read_root_key(), t.root_key_der);
    for s in &t.subnets {
        let reply = agent
            .query(&s.counter_id, "read")
            .with_arg(Encode!().unwrap())
            .call()
            .await
            .unwrap();
        let before = Decode!(&reply, Nat).unwrap();
        let reply = agent
            .update(&s.counter_id, "inc")
            .with_arg(Encode!().unwrap())
            .call_and_wait()
            .await
            .unwrap();
        assert!(Decode!(&reply, Nat).unwrap() > before);
        agent
            .read_state_raw(
                vec![vec![ic_agent::hash_tree::Label::from("time")]],
                s.counter_id,
            )
            .await
            .unwrap();
    }

    // The router's own errors come back as the router gave them.
    let r = client
        .post(format!("{url}/api/v2/canister/not-a-principal/query"))
        .header("content-type", "application/cbor")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A declared body over the gateway's limit is refused before forwarding.
    let r = client
        .post(format!(
            "{url}/api/v2/canister/{}/query",
            t.subnets[0].counter_id
        ))
        .header("content-type", "application/cbor")
        .body(vec![0u8; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["x-ic-error-cause"], "payload_too_large");

    // With the router gone, the gateway answers 502 upstream_error.
    router.shutdown().await;
    let r = client
        .get(format!("{url}/api/v2/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-ic-error-cause"], "upstream_error");
    gw.shutdown().await;
}

/// HTTPS with a certificate from PEM files: a TLS client that trusts only
/// that certificate gets the certified page; ALPN offers h2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_pages() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let t = testnet();
    let replicas = start_replicas(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2"])
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A test CA, and a server certificate for localhost signed by it.
    openssl(&[
        "-subj",
        "/CN=icos test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,DNS:*.localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
    ]);
    let router = start_router(&t, &replicas, dir.path()).await;
    let mut c = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{}", router.local_addr()),
        vec!["localhost".into()],
        RootKey::Der(t.root_key_der.clone()),
    );
    c.tls = Some(icos_gateway::tls::TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_chain: cert.clone(),
        key: key.clone(),
    });
    let gw = icos_gateway::start(c).await.unwrap();
    let tls_addr = gw.tls_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).unwrap())
        .unwrap();
    let client_config = |alpn: &[&[u8]]| {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    let name = ServerName::try_from("localhost").unwrap();

    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let h2 = client_config(&[b"h2", b"http/1.1"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let host = format!("{}.localhost", t.subnets[0].assets_id);
    let mut page = String::new();
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        let mut s = client_config(&[b"http/1.1"])
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        s.write_all(
            format!("GET /hello.txt HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        page.clear();
        let _ = s.read_to_string(&mut page).await;
        if page.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Hello, world!"), "{page}");
    assert!(page.contains("x-icos-verification: v2"), "{page}");

    // A certificate file without a certificate is refused at start.
    let mut bad = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{}", router.local_addr()),
        vec!["localhost".into()],
        RootKey::Fetch,
    );
    bad.tls = Some(icos_gateway::tls::TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_chain: key.clone(),
        key,
    });
    let err = icos_gateway::start(bad).await.unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    gw.shutdown().await;
    router.shutdown().await;
}
