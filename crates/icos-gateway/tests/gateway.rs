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
    let table = dir.path().join("table.json");
    let json = t.routing_table(|s, _| Some(format!("http://{}", replicas[s].local_addr())));
    std::fs::write(&table, json.to_string()).unwrap();
    let router = icos_boundary::start(icos_boundary::RouterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        table,
    ))
    .await
    .unwrap();
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
