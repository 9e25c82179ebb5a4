//! Bad input gets its documented status and body, and never a panic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use candid::Principal;
use ciborium::Value;
use icos_testnet_replica::cbor::{encode_tagged, map, nat};
use icos_testnet_replica::config::canister_id;
use icos_testnet_replica::hash::hash_of_map;
use icos_testnet_replica::keys::ed25519_der;
use icos_testnet_replica::replica::now_ns;
use icos_testnet_replica::{ReplicaSettings, RunningReplica, Testnet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn testnet() -> Arc<Testnet> {
    let json = serde_json::json!({
        "root_key_seed": "00112233445566778899aabbccddeeff",
        "subnets": [{"id": Principal::self_authenticating(b"s").to_text(), "nodes": 1,
            "canister_ranges": [[canister_id(0).to_text(), canister_id(99).to_text()]]}]
    });
    Arc::new(Testnet::parse(&json.to_string(), "test").unwrap())
}

async fn replica() -> (Arc<Testnet>, RunningReplica) {
    let t = testnet();
    let r = icos_testnet_replica::start(
        ReplicaSettings {
            testnet: t.clone(),
            subnet: t.subnets[0].id,
            node_index: 0,
            impl_version: "t".into(),
            height_lag: 0,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    (t, r)
}

async fn post(addr: SocketAddr, path: &str, ct: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status: u16 = String::from_utf8_lossy(&out[9..12]).parse().unwrap();
    (status, out[split + 4..].to_vec())
}

struct Sender {
    key: Option<ed25519_consensus::SigningKey>,
}

impl Sender {
    fn principal(&self) -> Principal {
        match &self.key {
            None => Principal::anonymous(),
            Some(k) => Principal::self_authenticating(ed25519_der(k)),
        }
    }

    /// An envelope for `content` (without `sender`), signed unless
    /// `tamper`, in which case the signature covers other bytes.
    fn envelope(&self, mut content: Vec<(Value, Value)>, tamper: bool) -> Vec<u8> {
        content.push((
            Value::Text("sender".into()),
            Value::Bytes(self.principal().as_slice().to_vec()),
        ));
        let id = hash_of_map(&content).unwrap();
        let mut env = vec![(Value::Text("content".into()), Value::Map(content))];
        if let Some(k) = &self.key {
            let mut msg = b"\x0Aic-request".to_vec();
            msg.extend_from_slice(&id);
            if tamper {
                msg.push(0);
            }
            env.push((
                Value::Text("sender_pubkey".into()),
                Value::Bytes(ed25519_der(k)),
            ));
            env.push((
                Value::Text("sender_sig".into()),
                Value::Bytes(k.sign(&msg).to_bytes().to_vec()),
            ));
        }
        encode_tagged(&Value::Map(env))
    }
}

fn call_content(kind: &str, canister: Principal, method: &str, expiry: u64) -> Vec<(Value, Value)> {
    let Value::Map(m) = map(vec![
        ("request_type", Value::Text(kind.into())),
        ("canister_id", Value::Bytes(canister.as_slice().to_vec())),
        ("method_name", Value::Text(method.into())),
        ("arg", Value::Bytes(candid::encode_args(()).unwrap())),
        ("ingress_expiry", nat(expiry)),
    ]) else {
        unreachable!()
    };
    m
}

fn read_content(paths: Vec<Vec<Vec<u8>>>) -> Vec<(Value, Value)> {
    let paths = Value::Array(
        paths
            .into_iter()
            .map(|p| Value::Array(p.into_iter().map(Value::Bytes).collect()))
            .collect(),
    );
    let Value::Map(m) = map(vec![
        ("request_type", Value::Text("read_state".into())),
        ("paths", paths),
        ("ingress_expiry", nat(now_ns() + 60_000_000_000)),
    ]) else {
        unreachable!()
    };
    m
}

const CBOR: &str = "application/cbor";

#[tokio::test]
async fn bad_requests_get_their_status_codes() {
    let (t, r) = replica().await;
    let addr = r.local_addr();
    let counter = t.subnets[0].counter_id;
    let q = format!("/api/v3/canister/{counter}/query");
    let expiry = now_ns() + 120_000_000_000;
    let alice = Sender {
        key: Some(ed25519_consensus::SigningKey::from([1u8; 32])),
    };
    let bob = Sender {
        key: Some(ed25519_consensus::SigningKey::from([2u8; 32])),
    };
    let anon = Sender { key: None };

    // Malformed CBOR, and CBOR that is not an envelope.
    let (s, b) = post(addr, &q, CBOR, b"\xff\x00garbage").await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("Could not parse body"));
    let (s, _) = post(addr, &q, CBOR, &encode_tagged(&Value::Integer(1.into()))).await;
    assert_eq!(s, 400);
    // Wrong content type.
    let good = alice.envelope(call_content("query", counter, "read", expiry), false);
    let (s, _) = post(addr, &q, "text/plain", &good).await;
    assert_eq!(s, 400);
    // The good one works.
    let (s, b) = post(addr, &q, CBOR, &good).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    // A bad signature.
    let bad = alice.envelope(call_content("query", counter, "read", expiry), true);
    let (s, b) = post(addr, &q, CBOR, &bad).await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains("Invalid signature"));
    // Expired, and too far ahead.
    for e in [now_ns() - 1_000_000_000, now_ns() + 3_600_000_000_000] {
        let env = anon.envelope(call_content("query", counter, "read", e), false);
        let (s, b) = post(addr, &q, CBOR, &env).await;
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&b).contains("Invalid request expiry"));
    }
    // A canister outside the subnet's ranges.
    let other = canister_id(5000);
    let env = anon.envelope(call_content("query", other, "read", expiry), false);
    let (s, _) = post(addr, &format!("/api/v3/canister/{other}/query"), CBOR, &env).await;
    assert_eq!(s, 400);
    // A URL that names another canister than the body.
    let env = anon.envelope(
        call_content("query", t.subnets[0].assets_id, "read", expiry),
        false,
    );
    let (s, b) = post(addr, &q, CBOR, &env).await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains("does not match"));
    // A garbage principal in the URL.
    let (s, _) = post(addr, "/api/v3/canister/not-a-principal/query", CBOR, &good).await;
    assert_eq!(s, 400);
    // A query body on the call endpoint.
    let (s, _) = post(
        addr,
        &format!("/api/v4/canister/{counter}/call"),
        CBOR,
        &good,
    )
    .await;
    assert_eq!(s, 400);
    // An unknown subnet.
    let env = anon.envelope(read_content(vec![vec![b"time".to_vec()]]), false);
    let unknown = Principal::self_authenticating(b"nope");
    let (s, _) = post(
        addr,
        &format!("/api/v3/subnet/{unknown}/read_state"),
        CBOR,
        &env,
    )
    .await;
    assert_eq!(s, 404);
    // A path that is not allowed.
    let env = anon.envelope(read_content(vec![vec![b"secrets".to_vec()]]), false);
    let (s, _) = post(
        addr,
        &format!("/api/v3/canister/{counter}/read_state"),
        CBOR,
        &env,
    )
    .await;
    assert_eq!(s, 404);

    // A canister in range that does not exist: a reject, not an HTTP error.
    let missing = canister_id(50);
    let env = anon.envelope(call_content("query", missing, "read", expiry), false);
    let (s, b) = post(
        addr,
        &format!("/api/v3/canister/{missing}/query"),
        CBOR,
        &env,
    )
    .await;
    assert_eq!(s, 200);
    let v = icos_testnet_replica::cbor::decode(&b).unwrap();
    let Value::Map(m) = v else { panic!() };
    assert_eq!(
        icos_testnet_replica::cbor::field(&m, "reject_code"),
        Some(&Value::Integer(3.into()))
    );

    // An async call by alice; bob may not read its status.
    let call = alice.envelope(call_content("call", counter, "inc", expiry), false);
    let (s, _) = post(
        addr,
        &format!("/api/v2/canister/{counter}/call"),
        CBOR,
        &call,
    )
    .await;
    assert_eq!(s, 202);
    let Value::Map(content) = icos_testnet_replica::cbor::decode(&call).unwrap() else {
        panic!()
    };
    let Some(Value::Map(content)) = icos_testnet_replica::cbor::field(&content, "content") else {
        panic!()
    };
    let rid = hash_of_map(content).unwrap().to_vec();
    let path = vec![vec![b"request_status".to_vec(), rid.clone()]];
    let rs = format!("/api/v3/canister/{counter}/read_state");
    let (s, _) = post(
        addr,
        &rs,
        CBOR,
        &bob.envelope(read_content(path.clone()), false),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post(addr, &rs, CBOR, &alice.envelope(read_content(path), false)).await;
    assert_eq!(s, 200);

    // Unknown routes.
    let (s, _) = post(addr, "/api/v9/nothing", CBOR, b"").await;
    assert_eq!(s, 404);
    // Still serving after all of that.
    let (s, _) = post(addr, &q, CBOR, &good).await;
    assert_eq!(s, 200);
    r.shutdown().await.unwrap();
}
