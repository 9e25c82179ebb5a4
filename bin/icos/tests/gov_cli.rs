//! `icos registry` and `icos gov`: the whole governance flow over a served
//! registry, and every attack a fetching node must refuse.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
const RANGE: &str = "rwlgt-iiaaa-aaaaa-aaaaa-cai,renrk-eyaaa-aaaaa-aaada-cai";

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

struct Net {
    tmp: tempfile::TempDir,
}

impl Net {
    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }
    fn key(&self, i: usize) -> PathBuf {
        self.tmp.path().join("gov").join(format!("gov-{i}.pem"))
    }
    fn root(&self) -> PathBuf {
        self.repo().join("metadata").join("1.root.json")
    }
    fn gov(&self, args: &[&str]) -> Command {
        let mut c = icos();
        c.arg("gov").arg(args[0]).arg("--repo").arg(self.repo());
        c.args(&args[1..]);
        c
    }
    /// Proposes; returns the proposal number.
    fn propose(&self, args: &[&str]) -> String {
        let out = self
            .gov(&["propose", "--json"])
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let v: Value = serde_json::from_slice(&out).unwrap();
        v["proposal"].as_u64().unwrap().to_string()
    }
    fn vote(&self, key: usize, id: &str) -> assert_cmd::assert::Assert {
        self.gov(&["vote", "--key"])
            .arg(self.key(key))
            .arg(id)
            .assert()
    }
    /// Proposes, gets two votes, executes.
    fn pass(&self, args: &[&str]) {
        let id = self.propose(args);
        self.vote(1, &id).success();
        self.vote(3, &id).success();
        self.gov(&["execute", &id])
            .assert()
            .success()
            .stdout(contains("published"));
    }
    fn show(&self) -> Value {
        let out = self
            .gov(&["show", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    }
    fn fetch(&self, url: &str, store: &str) -> Command {
        let mut c = icos();
        c.args(["registry", "fetch", "--url", url, "--root"])
            .arg(self.root())
            .arg("--datastore")
            .arg(self.tmp.path().join(store))
            .args(["--timeout", "5s"]);
        c
    }
    fn md(&self, name: &str) -> PathBuf {
        self.repo().join("metadata").join(name)
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Server, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("icos"))
        .args(["registry", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (Server(child), url)
}

fn setup() -> Net {
    let net = Net {
        tmp: tempfile::tempdir().unwrap(),
    };
    icos()
        .args(["registry", "init"])
        .arg(net.repo())
        .args(["--threshold", "2", "--generate", "3", "--keys-out"])
        .arg(net.tmp.path().join("gov"))
        .assert()
        .success()
        .stdout(contains("threshold 2 of 3 keys"));
    net
}

fn flip_first_signature(path: &Path) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let sig = v["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let first = if sig.starts_with('0') { "1" } else { "0" };
    v["signatures"][0]["sig"] = Value::from(format!("{first}{}", &sig[1..]));
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn governance_flow_and_attacks_over_http() {
    let net = setup();
    let t = net.tmp.path();

    // A release as `icos build` leaves it: update-img.tar.zst and SHA256SUMS.
    let img = t.join("update-img.tar.zst");
    std::fs::write(&img, b"release v2").unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"release v2"));
    std::fs::write(
        t.join("SHA256SUMS"),
        format!(
            "{sha}  update-img.tar.zst\n{}  disk-img.tar.zst\n",
            "0".repeat(64)
        ),
    )
    .unwrap();

    // Below the threshold execution is refused, naming have and need.
    let id = net.propose(&[
        "elect-guestos-version",
        "--version-id",
        "v2",
        "--url",
        "http://[2001:db8::1]/v2/update-img.tar.zst",
        "--sha256sums",
        t.join("SHA256SUMS").to_str().unwrap(),
    ]);
    net.vote(1, &id)
        .success()
        .stdout(contains("1 of 2 needed votes"));
    net.gov(&["execute", &id])
        .assert()
        .code(1)
        .stderr(contains("1 valid governance vote(s), 2 needed"));
    // A key that is not a governance key cannot vote.
    net.vote(0, &id).code(2).stderr(contains("No such file"));
    let outsider = t.join("outsider");
    icos()
        .args(["registry", "init"])
        .arg(&outsider)
        .args(["--threshold", "1", "--generate", "1", "--keys-out"])
        .arg(t.join("outsider-keys"))
        .assert()
        .success();
    net.gov(&["vote", "--key"])
        .arg(t.join("outsider-keys").join("gov-1.pem"))
        .arg(&id)
        .assert()
        .code(2)
        .stderr(contains("is not a governance key"));
    net.vote(2, &id)
        .success()
        .stdout(contains("ready to execute"));
    net.gov(&["execute", &id])
        .assert()
        .success()
        .stdout(contains("registry version 2 published"));
    net.gov(&["execute", &id])
        .assert()
        .code(1)
        .stderr(contains("already executed"));

    // Invalid proposals are refused before any vote.
    net.gov(&["propose"])
        .args([
            "deploy-guestos-to-subnet",
            "--subnet",
            SUBNET,
            "--version-id",
            "v2",
        ])
        .assert()
        .code(2)
        .stderr(contains("unknown subnet"));

    // Operators, nodes, a subnet, a routing table, HostOS.
    net.pass(&[
        "add-node-operator",
        "--public-key",
        &"11".repeat(32),
        "--allowance",
        "2",
    ]);
    let op = net.show()["registry"]["node_operators"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    for (key, ip) in [("22", "2001:db8::22"), ("33", "2001:db8::33")] {
        net.pass(&[
            "add-node",
            "--public-key",
            &key.repeat(32),
            "--operator",
            &op,
            "--ipv6",
            ip,
        ]);
    }
    net.gov(&["propose"])
        .args([
            "add-node",
            "--public-key",
            &"44".repeat(32),
            "--operator",
            &op,
        ])
        .args(["--ipv6", "2001:db8::44"])
        .assert()
        .code(2)
        .stderr(contains("no node allowance left"));
    net.pass(&[
        "set-node-operator-allowance",
        "--operator",
        &op,
        "--allowance",
        "5",
    ]);
    let shown = net.show();
    let nodes: Vec<String> = shown["registry"]["nodes"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(nodes.len(), 2);
    net.pass(&[
        "create-subnet",
        "--subnet",
        SUBNET,
        "--node",
        &nodes[0],
        "--version-id",
        "v2",
    ]);
    net.pass(&[
        "add-nodes-to-subnet",
        "--subnet",
        SUBNET,
        "--node",
        &nodes[1],
    ]);
    net.pass(&["set-routing-table", "--range", &format!("{RANGE},{SUBNET}")]);
    net.pass(&[
        "elect-hostos-version",
        "--version-id",
        "h1",
        "--url",
        "http://[2001:db8::1]/h1/update-img.tar.zst",
        "--update-img",
        img.to_str().unwrap(),
    ]);
    net.pass(&[
        "deploy-hostos-to-nodes",
        "--node",
        &nodes[0],
        "--version-id",
        "h1",
    ]);
    net.pass(&[
        "elect-guestos-version",
        "--version-id",
        "v3",
        "--url",
        "http://[2001:db8::1]/v3/update-img.tar.zst",
        "--sha256",
        &"ab".repeat(32),
    ]);
    net.pass(&[
        "deploy-guestos-to-subnet",
        "--subnet",
        SUBNET,
        "--version-id",
        "v3",
    ]);

    let shown = net.show();
    let reg = &shown["registry"];
    assert_eq!(reg["version"], 13);
    assert_eq!(reg["subnets"][SUBNET]["guestos_version"], "v3");
    assert_eq!(
        reg["subnets"][SUBNET]["members"].as_array().unwrap().len(),
        2
    );
    assert_eq!(reg["nodes"][&nodes[0]]["hostos_version"], "h1");
    let hostos_sha = reg["hostos_versions"]["h1"]["release_package_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hostos_sha.len(), 64);
    assert_eq!(reg["guestos_versions"]["v2"]["release_package_sha256"], sha);
    net.gov(&["show"])
        .assert()
        .success()
        .stdout(contains(format!("{SUBNET} GuestOS v3 (2 node(s))")));

    // Fetch over HTTP from `icos registry serve`.
    let (_server, url) = serve(&net.repo());
    let out = net
        .fetch(&url, "node")
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["registry"]["version"], 13);
    assert_eq!(v["registry"]["subnets"][SUBNET]["guestos_version"], "v3");
    assert_eq!(v["stale"], false);

    // A new version reaches the node.
    let old_timestamp = std::fs::read(net.md("timestamp.json")).unwrap();
    net.pass(&[
        "deploy-guestos-to-subnet",
        "--subnet",
        SUBNET,
        "--version-id",
        "v2",
    ]);
    net.fetch(&url, "node")
        .assert()
        .success()
        .stdout(contains("verified registry version 14"));

    // Forged signature.
    let ts = std::fs::read(net.md("timestamp.json")).unwrap();
    flip_first_signature(&net.md("timestamp.json"));
    net.fetch(&url, "node")
        .assert()
        .code(1)
        .stderr(contains("forged signature on timestamp metadata"))
        .stderr(contains("last verified registry (version 14) is kept"));
    std::fs::write(net.md("timestamp.json"), &ts).unwrap();

    // Old metadata replayed.
    std::fs::write(net.md("timestamp.json"), &old_timestamp).unwrap();
    net.fetch(&url, "node")
        .assert()
        .code(1)
        .stderr(contains("rollback refused"));
    std::fs::write(net.md("timestamp.json"), &ts).unwrap();

    // Expired metadata.
    icos()
        .args(["registry", "refresh"])
        .arg(net.repo())
        .args(["--timestamp-expires", "1s"])
        .assert()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    net.fetch(&url, "node")
        .assert()
        .code(1)
        .stderr(contains("timestamp metadata is expired"));
    icos()
        .args(["registry", "refresh"])
        .arg(net.repo())
        .assert()
        .success();
    net.fetch(&url, "node").assert().success();

    // Tampered registry target: a fresh node refuses it too.
    let targets = net.repo().join("targets");
    for entry in std::fs::read_dir(&targets).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"v2\"", "\"v9\"")).unwrap();
    }
    net.fetch(&url, "fresh-node")
        .assert()
        .code(1)
        .stderr(contains("registry.json does not match the hash"));

    // The node that had verified version 14 refuses it as well.
    net.fetch(&url, "node")
        .assert()
        .code(1)
        .stderr(contains("does not match the hash"));
}

#[test]
fn init_refuses_bad_input() {
    let t = tempfile::tempdir().unwrap();
    icos()
        .args(["registry", "init"])
        .arg(t.path().join("r"))
        .args(["--threshold", "3", "--generate", "2", "--keys-out"])
        .arg(t.path().join("k"))
        .assert()
        .code(2)
        .stderr(contains(
            "threshold 3 is impossible with 2 governance key(s)",
        ));
    icos()
        .args(["registry", "init"])
        .arg(t.path().join("r2"))
        .args(["--threshold", "1"])
        .assert()
        .code(2)
        .stderr(contains("--governance-key"));
    icos()
        .args(["registry", "serve"])
        .arg(t.path())
        .assert()
        .code(2)
        .stderr(contains("not a registry repository"));
}

#[test]
fn nodes_join_without_a_vote() {
    let net = setup();
    let t = net.tmp.path();
    // Spare Ed25519 keys: an operator, two nodes, a stranger.
    icos()
        .args(["registry", "init"])
        .arg(t.join("scratch"))
        .args(["--threshold", "1", "--generate", "4", "--keys-out"])
        .arg(t.join("spare"))
        .assert()
        .success();
    let spare = |i: usize| t.join("spare").join(format!("gov-{i}.pem"));
    net.pass(&[
        "add-node-operator",
        "--key",
        spare(1).to_str().unwrap(),
        "--allowance",
        "1",
    ]);

    // Node side: a request file; registry side: admitted without a vote.
    let req = t.join("join.json");
    icos()
        .args(["gov", "join-request", "--node-key"])
        .arg(spare(2))
        .arg("--operator-key")
        .arg(spare(1))
        .args(["--ipv6", "2001:db8::2", "--out"])
        .arg(&req)
        .assert()
        .success();
    net.gov(&["join", "--request"])
        .arg(&req)
        .assert()
        .success()
        .stdout(contains("Join request successful!"))
        .stdout(contains("0 node(s) of allowance left"));
    net.gov(&["join", "--request"])
        .arg(&req)
        .assert()
        .code(2)
        .stderr(contains("already exists"));
    net.gov(&["join", "--node-key"])
        .arg(spare(3))
        .arg("--operator-key")
        .arg(spare(1))
        .args(["--ipv6", "2001:db8::3"])
        .assert()
        .code(2)
        .stderr(contains("no node allowance left"));
    net.gov(&["join", "--node-key"])
        .arg(spare(3))
        .arg("--operator-key")
        .arg(spare(4))
        .args(["--ipv6", "2001:db8::3"])
        .assert()
        .code(2)
        .stderr(contains("is not in the registry"));

    let shown = net.show();
    let nodes = shown["registry"]["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        nodes.values().next().unwrap()["ipv6"],
        "2001:db8::2",
        "{shown}"
    );
    // A node fetching the registry sees the joined node.
    let out = net
        .fetch(net.repo().to_str().unwrap(), "node")
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["admitted_nodes"], 1);
    assert_eq!(v["registry"]["nodes"].as_object().unwrap().len(), 1);
}

#[test]
fn an_operator_with_a_dfx_secp256k1_key_adds_its_node() {
    let net = setup();
    let t = net.tmp.path();
    // The examples' operator key is secp256k1 (`EC PRIVATE KEY`), as
    // `dfx identity new` makes them; the node key is Ed25519.
    let operator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node_operator_private_key.pem");
    icos()
        .args(["registry", "init"])
        .arg(t.join("scratch"))
        .args(["--threshold", "1", "--generate", "1", "--keys-out"])
        .arg(t.join("spare"))
        .assert()
        .success();
    net.pass(&[
        "add-node-operator",
        "--key",
        operator.to_str().unwrap(),
        "--allowance",
        "2",
    ]);
    let shown = net.show();
    let ops = shown["registry"]["node_operators"].as_object().unwrap();
    assert_eq!(ops.len(), 1, "{shown}");
    let (op_id, op) = ops.iter().next().unwrap();
    let key = op["public_key"].as_str().unwrap();
    assert_eq!(key.len(), 66, "a compressed secp256k1 point: {key}");
    assert!(key.starts_with("02") || key.starts_with("03"), "{key}");
    net.gov(&["join", "--node-key"])
        .arg(t.join("spare").join("gov-1.pem"))
        .arg("--operator-key")
        .arg(&operator)
        .args(["--ipv6", "2001:db8::5"])
        .assert()
        .success()
        .stdout(contains("Join request successful!"));
    let shown = net.show();
    let nodes = shown["registry"]["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{shown}");
    assert_eq!(nodes.values().next().unwrap()["operator"], op_id.as_str());
}

#[test]
fn governance_keys_rotate_only_with_the_old_quorum() {
    let net = setup();
    let t = net.tmp.path();
    let repo = net.repo();
    net.fetch(repo.to_str().unwrap(), "node").assert().success();
    icos()
        .args(["registry", "init"])
        .arg(t.join("scratch"))
        .args(["--threshold", "1", "--generate", "2", "--keys-out"])
        .arg(t.join("new"))
        .assert()
        .success();
    let new = |i: usize| t.join("new").join(format!("gov-{i}.pem"));
    let rotate = |old: &[usize]| {
        let mut c = icos();
        c.args(["registry", "rotate"]).arg(&repo);
        for i in old {
            c.arg("--old-key").arg(net.key(*i));
        }
        c.arg("--new-key").arg(new(1)).arg("--new-key").arg(new(2));
        c.args(["--threshold", "2"]);
        c
    };
    rotate(&[1])
        .assert()
        .code(2)
        .stderr(contains("old governance quorum must sign"));
    rotate(&[1, 3])
        .assert()
        .success()
        .stdout(contains("root version 2 published"));
    // Both a node that trusted root 1 and a fresh one follow the rotation.
    net.fetch(repo.to_str().unwrap(), "node")
        .assert()
        .success()
        .stdout(contains("verified registry version 2"));
    net.fetch(repo.to_str().unwrap(), "fresh")
        .assert()
        .success();
    // Old keys no longer vote; new ones do.
    let id = net.propose(&[
        "elect-guestos-version",
        "--version-id",
        "v2",
        "--url",
        "http://[2001:db8::1]/v2/update-img.tar.zst",
        "--sha256",
        &"ab".repeat(32),
    ]);
    net.vote(1, &id)
        .code(2)
        .stderr(contains("is not a governance key"));
    for i in [1, 2] {
        net.gov(&["vote", "--key"])
            .arg(new(i))
            .arg(&id)
            .assert()
            .success();
    }
    net.gov(&["execute", &id])
        .assert()
        .success()
        .stdout(contains("registry version 3 published"));
    net.fetch(repo.to_str().unwrap(), "node")
        .assert()
        .success()
        .stdout(contains("verified registry version 3"));
}
