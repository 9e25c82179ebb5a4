//! Acceptance: the unmodified `ic-agent` crate, with the root key fetched
//! from `/api/v2/status`, queries, calls and reads state on testnet
//! replicas, directly and through the `icos-boundary` router in front of two
//! subnets, while a replica is killed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use candid::{Decode, Encode, Nat, Principal};
use ic_agent::hash_tree::{Label, LookupResult};
use ic_agent::identity::{AnonymousIdentity, BasicIdentity, Prime256v1Identity, Secp256k1Identity};
use ic_agent::{Agent, Identity};
use icos_testnet_replica::config::canister_id;
use icos_testnet_replica::{ReplicaSettings, RunningReplica, Testnet};

const NODES: u32 = 4;

fn testnet() -> Arc<Testnet> {
    let a = Principal::self_authenticating(b"icos test subnet a");
    let b = Principal::self_authenticating(b"icos test subnet b");
    let json = serde_json::json!({
        "root_key_seed": "6963 6f73 2074 6573 746e 6574 2073 6565".replace(' ', ""),
        "subnets": [
            {"id": a.to_text(), "nodes": NODES,
             "canister_ranges": [[canister_id(0).to_text(), canister_id(0xffff).to_text()]]},
            {"id": b.to_text(), "nodes": NODES, "type": "system",
             "canister_ranges": [[canister_id(0x10000).to_text(), canister_id(0x1ffff).to_text()]]},
        ]
    });
    Arc::new(Testnet::parse(&json.to_string(), "test").unwrap())
}

async fn start_all(t: &Arc<Testnet>) -> Vec<Vec<RunningReplica>> {
    start_all_lagging(t, |_, _| 0).await
}

/// Starts every replica; `lag(subnet, node)` is its certified-height lag.
async fn start_all_lagging(
    t: &Arc<Testnet>,
    lag: impl Fn(usize, u32) -> u64,
) -> Vec<Vec<RunningReplica>> {
    let mut all = Vec::new();
    for (si, s) in t.subnets.iter().enumerate() {
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let settings = ReplicaSettings {
                testnet: t.clone(),
                subnet: s.id,
                node_index: i,
                impl_version: "test-version".into(),
                height_lag: lag(si, i),
            };
            nodes.push(
                icos_testnet_replica::start(settings, "127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap(),
            );
        }
        all.push(nodes);
    }
    all
}

fn identities() -> Vec<(&'static str, Arc<dyn Identity>)> {
    let secp = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    vec![
        ("anonymous", Arc::new(AnonymousIdentity)),
        ("ed25519", Arc::new(BasicIdentity::from_raw_key(&[9u8; 32]))),
        (
            "secp256k1",
            Arc::new(Secp256k1Identity::from_private_key(secp)),
        ),
        (
            "p256",
            Arc::new(Prime256v1Identity::from_private_key(
                p256::SecretKey::from_slice(&[5u8; 32]).unwrap(),
            )),
        ),
    ]
}

async fn agent(url: &str, identity: Arc<dyn Identity>) -> Agent {
    let agent = Agent::builder()
        .with_url(url)
        .with_arc_identity(identity)
        .build()
        .unwrap();
    agent.fetch_root_key().await.unwrap();
    agent
}

async fn read_counter(agent: &Agent, counter: Principal, method: &str) -> Nat {
    let reply = agent
        .query(&counter, method)
        .with_arg(Encode!().unwrap())
        .call()
        .await
        .unwrap_or_else(|e| panic!("query {method}: {e}"));
    Decode!(&reply, Nat).unwrap()
}

/// Query, certified update, read_state of /time; checks everything the
/// agent verified on the way. `one_replica`: the agent talks to a single
/// replica, so the counter must grow; through a router, queries and calls
/// may reach replicas with different values (state is not replicated).
async fn exercise(agent: &Agent, t: &Testnet, counter: Principal, one_replica: bool) {
    let before = read_counter(agent, counter, "read").await;
    let reply = agent
        .update(&counter, "inc")
        .with_arg(Encode!().unwrap())
        .call_and_wait()
        .await
        .expect("update inc");
    let after = Decode!(&reply, Nat).unwrap();
    if one_replica {
        assert!(after > before, "{after} > {before}");
    } else {
        assert!(after > 0u8, "{after} > 0");
    }
    let cert = agent
        .read_state_raw(vec![vec![Label::from("time")]], counter)
        .await
        .expect("read_state /time");
    let LookupResult::Found(time) = cert.tree.lookup_path([b"time".as_ref()]) else {
        panic!("/time is not in the certificate");
    };
    assert!(!time.is_empty());
    assert_eq!(agent.read_root_key(), t.root_key_der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_against_replicas_directly() {
    let t = testnet();
    let all = start_all(&t).await;
    for (name, id) in identities() {
        for (s, nodes) in t.subnets.iter().zip(&all) {
            let url = format!("http://{}", nodes[0].local_addr());
            let agent = agent(&url, id.clone()).await;
            let status = agent.status().await.unwrap();
            assert_eq!(
                status.impl_version.as_deref(),
                Some("test-version"),
                "{name}"
            );
            assert_eq!(status.replica_health_status.as_deref(), Some("healthy"));
            exercise(&agent, &t, s.counter_id, true).await;
            assert!(read_counter(&agent, s.counter_id, "get").await > 0u8);
        }
    }
    // A canister of the other subnet is refused by this replica.
    let url = format!("http://{}", all[0][0].local_addr());
    let agent = agent(&url, identities()[1].1.clone()).await;
    let err = agent
        .query(&t.subnets[1].counter_id, "read")
        .with_arg(Encode!().unwrap())
        .call()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_canister_certifies_its_responses() {
    use ic_http_certification::{HttpRequest, HttpResponse};
    let t = testnet();
    let all = start_all(&t).await;
    let url = format!("http://{}", all[0][1].local_addr());
    let agent = agent(&url, Arc::new(AnonymousIdentity)).await;
    let assets = t.subnets[0].assets_id;
    for (path, status) in [("/hello.txt", 200u16), ("/", 200), ("/missing", 404)] {
        let req = HttpRequest::get(path).build();
        let reply = agent
            .query(&assets, "http_request")
            .with_arg(Encode!(&req).unwrap())
            .call()
            .await
            .unwrap();
        let resp = Decode!(&reply, HttpResponse).unwrap();
        assert_eq!(resp.status_code().as_u16(), status, "{path}");
        let header = resp
            .headers()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("ic-certificate"))
            .map(|(_, v)| v.clone())
            .expect("IC-Certificate header");
        assert!(header.contains("version=2"));
        let field = |name: &str| {
            let start = header.find(&format!("{name}=:")).unwrap() + name.len() + 2;
            let end = start + header[start..].find(':').unwrap();
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                &header[start..end],
            )
            .unwrap()
        };
        let cert: ic_agent::Certificate = serde_cbor::from_slice(&field("certificate")).unwrap();
        agent
            .verify(&cert, assets)
            .expect("the data certificate verifies");
        let witness: ic_agent::hash_tree::HashTree<Vec<u8>> =
            serde_cbor::from_slice(&field("tree")).unwrap();
        let LookupResult::Found(data) =
            cert.tree
                .lookup_path([b"canister".as_ref(), assets.as_slice(), b"certified_data"])
        else {
            panic!("certified_data missing");
        };
        assert_eq!(
            data,
            witness.digest(),
            "the witness is what the canister certified"
        );
    }
}

/// A router in front of every replica of `all`, once its first health
/// checks let a query reach each subnet.
async fn start_router(
    t: &Testnet,
    all: &[Vec<RunningReplica>],
    dir: &std::path::Path,
) -> (icos_boundary::RunningRouter, String) {
    let table = dir.join("table.json");
    let addrs: Vec<Vec<SocketAddr>> = all
        .iter()
        .map(|n| n.iter().map(|r| r.local_addr()).collect())
        .collect();
    let json = t.routing_table(|s, n| Some(format!("http://{}", addrs[s][n])));
    std::fs::write(&table, json.to_string()).unwrap();
    let router = icos_boundary::start(icos_boundary::RouterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        table,
    ))
    .await
    .unwrap();
    let url = format!("http://{}", router.local_addr());
    let probe = agent(&url, Arc::new(AnonymousIdentity)).await;
    for _ in 0..100 {
        let mut all_ok = true;
        for s in &t.subnets {
            all_ok &= probe
                .query(&s.counter_id, "read")
                .with_arg(Encode!().unwrap())
                .call()
                .await
                .is_ok();
        }
        if all_ok {
            return (router, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the router never routed to the replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_through_the_router_survives_a_killed_replica() {
    let t = testnet();
    let mut all = start_all(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let (router, url) = start_router(&t, &all, dir.path()).await;

    for (_, id) in identities() {
        let agent = agent(&url, id).await;
        for s in &t.subnets {
            exercise(&agent, &t, s.counter_id, false).await;
        }
    }

    // Kill one replica of subnet a mid-run; queries go on without errors.
    let agent = agent(&url, identities()[2].1.clone()).await;
    let counter = t.subnets[0].counter_id;
    let mut victim = Some(all[0].remove(1));
    for i in 0..40 {
        if let Some(v) = victim.take_if(|_| i == 10) {
            v.abort();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        read_counter(&agent, counter, "read").await;
        if i % 10 == 0 {
            // read_state through the router, too.
            agent
                .read_state_raw(vec![vec![Label::from("time")]], counter)
                .await
                .expect("read_state after the kill");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.shutdown().await;
}

/// A replica whose certified height is far behind its subnet's (more than
/// the router's 50-block rule) gets no traffic; the agent sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_sends_nothing_to_a_far_behind_replica() {
    const BEHIND: u32 = 2;
    let t = testnet();
    let all = start_all_lagging(&t, |s, n| if s == 0 && n == BEHIND { 120 } else { 0 }).await;
    let dir = tempfile::tempdir().unwrap();
    let (router, url) = start_router(&t, &all, dir.path()).await;
    let before: Vec<u64> = all[0]
        .iter()
        .map(|r| r.replica().requests_handled())
        .collect();

    let agent = agent(&url, identities()[1].1.clone()).await;
    let counter = t.subnets[0].counter_id;
    for i in 0..60 {
        read_counter(&agent, counter, "read").await;
        if i % 10 == 0 {
            agent
                .update(&counter, "inc")
                .with_arg(Encode!().unwrap())
                .call_and_wait()
                .await
                .expect("update through the router");
            agent
                .read_state_raw(vec![vec![Label::from("time")]], counter)
                .await
                .expect("read_state through the router");
        }
    }
    let served: Vec<u64> = all[0]
        .iter()
        .zip(&before)
        .map(|(r, b)| r.replica().requests_handled() - b)
        .collect();
    assert_eq!(
        served[BEHIND as usize], 0,
        "the lagging replica was sent requests: {served:?}"
    );
    let healthy: Vec<u64> = served
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != BEHIND as usize)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        healthy.iter().sum::<u64>() >= 60 && healthy.iter().filter(|n| **n > 0).count() >= 2,
        "queries are spread over the healthy replicas: {served:?}"
    );
    router.shutdown().await;
}

/// The JavaScript agent (`@dfinity/agent`, pinned in tests/js/package.json)
/// against the router in front of both subnets. `scripts/test.sh` installs
/// its packages with `npm ci`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_agent_through_the_router() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@dfinity/agent").is_dir(),
        "the JavaScript agent is not installed: run `npm ci --ignore-scripts` in {}",
        js.display()
    );
    let t = testnet();
    let all = start_all(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let (router, url) = start_router(&t, &all, dir.path()).await;
    let root_key: String = t.root_key_der.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&js)
        .arg("agent-check.mjs")
        .arg(&url)
        .arg(&root_key);
    for s in &t.subnets {
        cmd.arg(s.counter_id.to_text());
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("node finished within 2 minutes")
        .expect("node runs (install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agent-check.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // 3 identities x (2 subnets x 3 checks + root key + status)
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        24,
        "{stdout}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    router.shutdown().await;
}
