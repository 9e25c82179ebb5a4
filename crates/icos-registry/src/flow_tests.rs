//! End-to-end tests of the repository and the client: governance flow,
//! every attack a client must refuse, root rotation, URL fallback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use url::Url;

use crate::client::{self, ClientOptions, FetchError};
use crate::error::RepoError;
use crate::keys::SigningKey;
use crate::proposal::Proposal;
use crate::repo::{Lifetimes, Repo, attack};

struct Net {
    _tmp: tempfile::TempDir,
    repo: Repo,
    gov: Vec<SigningKey>,
    online: SigningKey,
    root: PathBuf,
    store: PathBuf,
    base: Url,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A repository with three governance keys, threshold 2.
fn net() -> Net {
    let tmp = ok(tempfile::tempdir());
    let keys = tmp.path().join("keys");
    ok(std::fs::create_dir_all(&keys));
    let gov: Vec<SigningKey> = (1..=3)
        .map(|i| ok(SigningKey::generate(&keys.join(format!("gov-{i}.pem")))))
        .collect();
    let online = ok(SigningKey::generate(&keys.join("online.pem")));
    let dir = tmp.path().join("repo");
    let repo = ok(Repo::init(&dir, &gov, 2, &online, &Lifetimes::default()));
    let root = repo.trust_root_path();
    let store = tmp.path().join("store");
    let base = ok(client::base_url(&dir.to_string_lossy()));
    Net {
        _tmp: tmp,
        repo,
        gov,
        online,
        root,
        store,
        base,
    }
}

async fn fetch(n: &Net) -> Result<client::Verified, FetchError> {
    client::fetch(&n.base, &n.root, &n.store, &ClientOptions::default()).await
}

fn elect(n: &Net, version: &str) -> PathBuf {
    let p = Proposal::ElectGuestosVersion {
        version: version.into(),
        urls: vec![ok(Url::parse("http://[2001:db8::1]/update-img.tar.zst"))],
        sha256: hex::encode([7u8; 32]),
        launch_measurements: None,
    };
    ok(n.repo.propose(p, "", &Lifetimes::default())).0
}

fn pass(n: &Net, path: &Path) {
    for k in &n.gov[..2] {
        ok(n.repo.vote(path, k));
    }
    ok(n.repo.execute(path, &n.online, &Lifetimes::default()));
}

#[tokio::test]
async fn quorum_executes_and_clients_follow() {
    let n = net();
    let v = ok(fetch(&n).await);
    assert_eq!(v.registry.version, 1);
    assert_eq!(v.targets_version, 1);

    let path = elect(&n, "v2");
    let tally = ok(n.repo.vote(&path, &n.gov[0]));
    assert_eq!((tally.have, tally.need, tally.of), (1, 2, 3));
    let err = n
        .repo
        .execute(&path, &n.online, &Lifetimes::default())
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::BelowThreshold {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("1 valid governance vote(s), 2 needed")
    );
    // Voting twice with the same key does not count twice.
    let tally = ok(n.repo.vote(&path, &n.gov[0]));
    assert_eq!(tally.have, 1);
    // Any other governance key completes the quorum.
    let tally = ok(n.repo.vote(&path, &n.gov[2]));
    assert_eq!(tally.have, 2);
    let (_, registry) = ok(n.repo.execute(&path, &n.online, &Lifetimes::default()));
    assert_eq!(registry.version, 2);

    let v = ok(fetch(&n).await);
    assert_eq!(v.registry.version, 2);
    assert!(v.registry.guestos_versions.contains_key("v2"));
    // Executing twice is refused.
    assert!(matches!(
        n.repo.execute(&path, &n.online, &Lifetimes::default()),
        Err(RepoError::AlreadyExecuted(_))
    ));
}

#[tokio::test]
async fn outsiders_and_stale_proposals_are_refused() {
    let n = net();
    let outsider = ok(SigningKey::generate(&n._tmp.path().join("outsider.pem")));
    let a = elect(&n, "v2");
    let b = elect(&n, "v3");
    assert!(matches!(
        n.repo.vote(&a, &outsider),
        Err(RepoError::NotGovernanceKey { .. })
    ));
    // The online key is no governance key either.
    assert!(matches!(
        n.repo.vote(&a, &n.online),
        Err(RepoError::NotGovernanceKey { .. })
    ));
    pass(&n, &a);
    let err = n.repo.vote(&b, &n.gov[0]).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::Stale {
                base: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    // A vote file edited by hand does not verify.
    let c = elect(&n, "v3");
    ok(n.repo.vote(&c, &n.gov[0]));
    let text = ok(std::fs::read_to_string(&c));
    let mut file: serde_json::Value = ok(serde_json::from_str(&text));
    file["summary"] = "edited".into();
    if let Some(sig) = file["votes"][0]["sig"].as_str() {
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        file["votes"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
    }
    ok(std::fs::write(&c, ok(serde_json::to_string(&file))));
    assert!(matches!(
        n.repo.execute(&c, &n.online, &Lifetimes::default()),
        Err(RepoError::BadVote { .. })
    ));
}

#[tokio::test]
async fn forged_timestamp_signature_is_refused() {
    let n = net();
    let ts = n.repo.metadata_dir().join("timestamp.json");
    let mut v: serde_json::Value = ok(serde_json::from_slice(&ok(std::fs::read(&ts))));
    let sig = v["signatures"][0]["sig"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    v["signatures"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
    ok(std::fs::write(&ts, ok(serde_json::to_vec(&v))));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::ForgedSignature { ref role, .. } if role == "timestamp"),
        "{err}"
    );
}

#[tokio::test]
async fn under_threshold_and_foreign_targets_are_refused() {
    let n = net();
    let mut r = ok(n.repo.published()).registry;
    r.version += 1;
    ok(attack::publish_signed_by(
        &n.repo,
        &r,
        &[&n.gov[0]],
        &n.online,
    ));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::BelowThreshold { valid: 1, threshold: 2, ref role, .. } if role == "targets"),
        "{err}"
    );
    let outsider = ok(SigningKey::generate(&n._tmp.path().join("outsider.pem")));
    r.version += 1;
    ok(attack::publish_signed_by(
        &n.repo,
        &r,
        &[&n.gov[0], &outsider],
        &n.online,
    ));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::BelowThreshold { valid: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn replayed_old_metadata_is_refused() {
    let n = net();
    let md = n.repo.metadata_dir();
    let old_ts = ok(std::fs::read(md.join("timestamp.json")));
    pass(&n, &elect(&n, "v2"));
    assert_eq!(ok(fetch(&n).await).registry.version, 2);
    ok(std::fs::write(md.join("timestamp.json"), old_ts));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, FetchError::Rollback { .. }), "{err}");
}

#[tokio::test]
async fn mixed_versions_are_refused() {
    let n = net();
    pass(&n, &elect(&n, "v2"));
    let md = n.repo.metadata_dir();
    ok(std::fs::copy(
        md.join("1.snapshot.json"),
        md.join("2.snapshot.json"),
    ));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, FetchError::MixedVersions { .. }), "{err}");
}

#[tokio::test]
async fn expired_timestamp_is_refused() {
    let n = net();
    let short = Lifetimes {
        timestamp: SignedDuration::from_secs(1),
        ..Lifetimes::default()
    };
    ok(n.repo.refresh(&n.online, &short));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::Expired { ref role, .. } if role == "timestamp"),
        "{err}"
    );
    // A refresh with the normal lifetime heals it.
    ok(n.repo.refresh(&n.online, &Lifetimes::default()));
    assert_eq!(ok(fetch(&n).await).registry.version, 1);
}

#[tokio::test]
async fn tampered_registry_target_is_refused() {
    let n = net();
    let dir = n.repo.targets_dir();
    for entry in ok(std::fs::read_dir(&dir)) {
        let path = ok(entry).path();
        let text = ok(std::fs::read_to_string(&path));
        ok(std::fs::write(
            &path,
            text.replace("\"version\": 1", "\"version\": 9"),
        ));
    }
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::TargetHashMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn root_rotates_only_with_the_old_quorum() {
    let n = net();
    assert_eq!(ok(fetch(&n).await).targets_version, 1);
    let dir = n._tmp.path().join("new");
    ok(std::fs::create_dir_all(&dir));
    let new: Vec<SigningKey> = (1..=2)
        .map(|i| ok(SigningKey::generate(&dir.join(format!("{i}.pem")))))
        .collect();
    let new_pub: Vec<_> = new.iter().map(SigningKey::tuf_key).collect();

    // Without the old quorum the repository refuses to write it...
    let err = n
        .repo
        .rotate_governance(
            &new_pub,
            2,
            &n.gov[..1],
            &new,
            &n.online,
            &Lifetimes::default(),
        )
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("old governance quorum"), "{err}");
    // ...and a client refuses such a root if it is published anyway.
    let mut forged = ok(n.repo.published()).root.signed;
    forged.version = forged.version.saturating_add(1);
    forged.keys.clear();
    forged.roles.clear();
    let rotated = ok(crate::repo::make_root(
        2,
        &new_pub,
        2,
        &n.online.tuf_key(),
        forged.expires,
    ));
    let signers: Vec<&SigningKey> = new.iter().collect();
    ok(attack::write_root_signed_by(&n.repo, &rotated, &signers));
    let err = fetch(&n).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, FetchError::BelowThreshold { ref role, valid: 0, .. } if role == "root"),
        "{err}"
    );

    // Take the forged root down again.
    let md = n.repo.metadata_dir();
    ok(std::fs::remove_file(md.join("2.root.json")));
    ok(std::fs::copy(md.join("1.root.json"), md.join("root.json")));

    // With the old quorum it works, for a fresh client (baked root 1) and
    // for one that had trusted root 1 before.
    ok(n.repo.rotate_governance(
        &new_pub,
        2,
        &n.gov[..2],
        &new,
        &n.online,
        &Lifetimes::default(),
    ));
    let v = ok(fetch(&n).await);
    assert_eq!(v.targets_version, 2);
    let fresh = n._tmp.path().join("fresh-store");
    let v = ok(client::fetch(&n.base, &n.root, &fresh, &ClientOptions::default()).await);
    assert_eq!(v.registry.version, 2);
    // The old keys no longer count.
    let path = elect(&n, "v2");
    assert!(matches!(
        n.repo.vote(&path, &n.gov[0]),
        Err(RepoError::NotGovernanceKey { .. })
    ));
    for k in &new {
        ok(n.repo.vote(&path, k));
    }
    ok(n.repo.execute(&path, &n.online, &Lifetimes::default()));
    assert_eq!(ok(fetch(&n).await).registry.version, 3);
}

#[tokio::test]
async fn urls_rotate_and_the_last_verified_registry_is_kept() {
    let n = net();
    let (listener, addr) = ok(crate::serve::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::serve(
        listener,
        n.repo.dir().to_owned(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // A port nothing listens on.
    let dead_listener = ok(std::net::TcpListener::bind("127.0.0.1:0"));
    let dead_addr = ok(dead_listener.local_addr());
    drop(dead_listener);
    let dead = ok(Url::parse(&format!("http://{dead_addr}/")));
    let live = ok(Url::parse(&format!("http://{addr}/")));
    let urls = vec![dead.clone(), live.clone()];
    let opts = ClientOptions {
        timeout: std::time::Duration::from_secs(5),
    };

    assert_eq!(client::rotated(&urls, 0), urls);
    assert_eq!(client::rotated(&urls, 1), vec![live.clone(), dead.clone()]);

    // The dead URL first: it fails, the live one answers.
    let got = ok(client::fetch_any(&urls, 0, &n.root, &n.store, &opts).await);
    assert!(!got.verified.stale);
    assert_eq!(got.verified.url.as_deref(), Some(live.as_str()));
    assert_eq!(got.errors.len(), 1);
    assert!(!got.errors[0].is_refusal());

    // Proposals, keys and anything outside metadata/ and targets/ are not served.
    let resp = ok(reqwest::get(format!("http://{addr}/keys/online.pem")).await);
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);

    let _ = stop_tx.send(());
    ok(ok(server.await));
    let got = ok(client::fetch_any(&urls, 1, &n.root, &n.store, &opts).await);
    assert!(got.verified.stale);
    assert_eq!(got.verified.registry.version, 1);
    assert_eq!(got.errors.len(), 2);

    let empty = n._tmp.path().join("empty-store");
    let err = client::fetch_any(&urls, 0, &n.root, &empty, &opts)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, FetchError::NoneAvailable(_)), "{err}");
}

#[tokio::test]
async fn nodes_join_without_a_vote_within_the_allowance() {
    use crate::join::JoinRequest;
    use std::net::Ipv6Addr;

    let n = net();
    let dir = n._tmp.path().join("nodes");
    ok(std::fs::create_dir_all(&dir));
    let op = ok(SigningKey::generate(&dir.join("op.pem")));
    let op_id = crate::model::self_authenticating_id(&op.public_bytes());
    let add_op = Proposal::AddNodeOperator {
        public_key: hex::encode(op.public_bytes()),
        allowance: 1,
    };
    pass(&n, &ok(n.repo.propose(add_op, "", &Lifetimes::default())).0);
    let stale = elect(&n, "v2");

    let node = ok(SigningKey::generate(&dir.join("node-1.pem")));
    let ip = |x| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x);
    let req = JoinRequest::sign(&node, &op, ip(1));
    let (id, registry) = ok(n.repo.join(&req, &n.online, &Lifetimes::default()));
    assert_eq!(registry.nodes[&id].operator, op_id);
    let v = ok(fetch(&n).await);
    assert_eq!(v.admitted_nodes, 1);
    assert!(v.registry.nodes.contains_key(&id));
    assert_eq!(v.registry.node_operators[&op_id].allowance, 0);

    // The allowance is spent; a stranger's signature is no authorization.
    let node2 = ok(SigningKey::generate(&dir.join("node-2.pem")));
    let err = n
        .repo
        .join(
            &JoinRequest::sign(&node2, &op, ip(2)),
            &n.online,
            &Lifetimes::default(),
        )
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("no node allowance left"), "{err}");
    let stranger = ok(SigningKey::generate(&dir.join("stranger.pem")));
    let mut forged = JoinRequest::sign(&node2, &stranger, ip(2));
    forged.operator = op_id.clone();
    let err = n
        .repo
        .join(&forged, &n.online, &Lifetimes::default())
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("operator signature does not verify"),
        "{err}"
    );

    // A proposal made before the join must be made again.
    let err = n.repo.vote(&stale, &n.gov[0]).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("joined since it was proposed"),
        "{err}"
    );

    // Governance builds on joined nodes; the admission is folded in.
    pass(&n, &elect(&n, "v2"));
    let create = Proposal::CreateSubnet {
        subnet: crate::model::tests::SUBNET.into(),
        nodes: vec![id.clone()],
        version: "v2".into(),
        ssh_readonly_keys: vec![],
        ssh_backup_keys: vec![],
    };
    pass(&n, &ok(n.repo.propose(create, "", &Lifetimes::default())).0);
    let v = ok(fetch(&n).await);
    assert_eq!(v.admitted_nodes, 0);
    assert_eq!(v.registry.subnet_of(&id), Some(crate::model::tests::SUBNET));
    assert_eq!(v.registry.node_operators[&op_id].allowance, 0);
}

#[tokio::test]
async fn the_join_service_admits_over_http_one_at_a_time() {
    use crate::join::{JOIN_SUCCESS, JoinRequest, JoinResponse};
    use crate::serve::{JoinService, MAX_JOIN_BODY};
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    let n = net();
    let dir = n._tmp.path().join("nodes");
    ok(std::fs::create_dir_all(&dir));
    let op = ok(SigningKey::generate(&dir.join("op.pem")));
    let add_op = Proposal::AddNodeOperator {
        public_key: hex::encode(op.public_bytes()),
        allowance: 2,
    };
    pass(&n, &ok(n.repo.propose(add_op, "", &Lifetimes::default())).0);

    // A key that is not the online key is refused at start.
    let wrong = JoinService::new(
        n.repo.dir().to_owned(),
        ok(SigningKey::load(n.gov[0].path())),
        Lifetimes::default(),
    );
    assert!(matches!(wrong, Err(RepoError::WrongOnlineKey { .. })));
    let online = ok(SigningKey::load(n.online.path()));
    let service = Arc::new(ok(JoinService::new(
        n.repo.dir().to_owned(),
        online,
        Lifetimes::default(),
    )));

    let (listener, addr) = ok(crate::serve::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::serve_with_join(
        listener,
        n.repo.dir().to_owned(),
        Some(service),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/join");
    let post = |body: Vec<u8>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let resp = ok(http.post(url).body(body).send().await);
            let status = resp.status().as_u16();
            let v: serde_json::Value = ok(serde_json::from_slice(&ok(resp.bytes().await)));
            (status, v)
        }
    };
    let ip = |x| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x);
    let node = |i: u8| ok(SigningKey::generate(&dir.join(format!("node-{i}.pem"))));

    // Two nodes at once: both admitted, in turn, each with its own
    // admission (the allowance was 2).
    let (n1, n2) = (node(1), node(2));
    let r1 = ok(serde_json::to_vec(&JoinRequest::sign(&n1, &op, ip(1))));
    let r2 = ok(serde_json::to_vec(&JoinRequest::sign(&n2, &op, ip(2))));
    let ((s1, v1), (s2, v2)) = tokio::join!(post(r1.clone()), post(r2));
    assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
    let a1: JoinResponse = ok(serde_json::from_value(v1));
    let a2: JoinResponse = ok(serde_json::from_value(v2));
    assert_eq!(a1.message, JOIN_SUCCESS);
    assert!(a1.admitted && a2.admitted);
    assert_eq!(
        a1.node_id,
        crate::model::self_authenticating_id(&n1.public_bytes())
    );
    let mut left = [a1.remaining_allowance, a2.remaining_allowance];
    left.sort_unstable();
    assert_eq!(left, [0, 1]);
    let v = ok(fetch(&n).await);
    assert_eq!(v.admitted_nodes, 2);

    // The same request again: answered, not admitted twice.
    let (s, v) = post(r1).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["admitted"], false);
    assert_eq!(v["node_id"], a1.node_id.as_str());
    // The same node at another address: a conflict.
    let moved = ok(serde_json::to_vec(&JoinRequest::sign(&n1, &op, ip(9))));
    let (s, v) = post(moved).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already exists")
    );
    // The allowance is spent.
    let n3 = node(3);
    let (s, v) = post(ok(serde_json::to_vec(&JoinRequest::sign(&n3, &op, ip(3))))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no node allowance left"),
        "{v}"
    );
    // A stranger's signature.
    let stranger = node(4);
    let mut forged = JoinRequest::sign(&n3, &stranger, ip(3));
    forged.operator = a1.operator.clone();
    let (s, v) = post(ok(serde_json::to_vec(&forged))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("operator signature does not verify"),
        "{v}"
    );
    // Not a join request; too large.
    let (s, v) = post(b"{\"node_public_key\": 1}".to_vec()).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a join request"),
        "{v}"
    );
    let big = ok(http
        .post(&url)
        .body(vec![b' '; MAX_JOIN_BODY + 1])
        .send()
        .await);
    assert_eq!(big.status().as_u16(), 413);
    // Static files are served as before; GET /join is not a file.
    let root = ok(http
        .get(format!("http://{addr}/metadata/1.root.json"))
        .send()
        .await);
    assert_eq!(root.status().as_u16(), 200);
    let get = ok(http.get(&url).send().await);
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(ok(fetch(&n).await).admitted_nodes, 2);

    let _ = stop_tx.send(());
    ok(ok(server.await));

    // Without a join service the server is read-only.
    let (listener, addr) = ok(crate::serve::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::serve(
        listener,
        n.repo.dir().to_owned(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let resp = ok(http
        .post(format!("http://{addr}/join"))
        .body("{}")
        .send()
        .await);
    assert_eq!(resp.status().as_u16(), 404);
    let _ = stop_tx.send(());
    ok(ok(server.await));
}

#[test]
fn a_trust_root_must_be_signed_by_its_own_quorum() {
    let n = net();
    let root = ok(client::check_trust_root(&n.root));
    assert_eq!((root.version, root.threshold), (1, 2));
    assert_eq!(root.governance_keys.len(), 3);

    // One governance signature removed: below its own threshold.
    let mut doc: serde_json::Value = ok(serde_json::from_slice(&ok(std::fs::read(&n.root))));
    let sigs = doc["signatures"].as_array_mut().map(|s| {
        s.truncate(1);
        s.len()
    });
    assert_eq!(sigs, Some(1));
    let thin = n.root.with_file_name("thin.root.json");
    ok(std::fs::write(&thin, doc.to_string()));
    let err = client::check_trust_root(&thin).unwrap_err().to_string();
    assert!(
        err.contains("not signed by its own governance quorum"),
        "{err}"
    );

    let junk = n.root.with_file_name("junk.json");
    ok(std::fs::write(&junk, "{}"));
    let err = client::check_trust_root(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.json") && err.contains("not a TUF root"),
        "{err}"
    );
}
