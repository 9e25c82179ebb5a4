//! Node registration over the network: `icos registry serve --online-key`
//! on 127.0.0.1 admits join requests from `icos-orchestrator join`; the
//! node then finds itself by the id of its key (`run --once --node-key`).
//! Refusals (allowance spent, unknown operator) end with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Killed as Server, icos_binary, sh};

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Std, Stdio};

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

struct Net {
    tmp: tempfile::TempDir,
    icos: PathBuf,
}

impl Net {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn repo(&self) -> PathBuf {
        self.path("repo")
    }
    fn root(&self) -> PathBuf {
        self.repo().join("metadata").join("1.root.json")
    }
    fn spare(&self, i: usize) -> PathBuf {
        self.path("spare").join(format!("gov-{i}.pem"))
    }
    fn icos(&self) -> Command {
        Command::new(&self.icos)
    }
    fn gov(&self, sub: &str) -> Command {
        let mut c = self.icos();
        c.args(["gov", sub, "--repo"]).arg(self.repo());
        c
    }
    /// Serves the repository, accepting joins when `online` is set.
    fn serve(&self, online: bool) -> (Server, String) {
        let mut cmd = Std::new(&self.icos);
        cmd.args(["registry", "serve"])
            .arg(self.repo())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped());
        if online {
            cmd.arg("--online-key")
                .arg(self.repo().join("keys").join("online.pem"));
        }
        let mut child = cmd.spawn().unwrap();
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
    /// `icos-orchestrator join` for node `name` (its own key and store).
    fn join(&self, url: &str, name: &str, operator: Option<&Path>, ipv6: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_icos-orchestrator"));
        c.args(["join", "--registry-url", url, "--root"])
            .arg(self.root())
            .arg("--datastore")
            .arg(self.path(name).join("store"))
            .arg("--node-key")
            .arg(self.node_key(name))
            .args(["--ipv6", ipv6, "--timeout", "5s", "--attempts", "3"])
            .args(["--backoff", "100ms", "--max-backoff", "200ms"]);
        if let Some(op) = operator {
            c.arg("--operator-key").arg(op);
        }
        c
    }
    fn node_key(&self, name: &str) -> PathBuf {
        self.path(name).join("crypto").join("node_key.pem")
    }
    fn nodes(&self) -> serde_json::Map<String, Value> {
        let out = self
            .gov("show")
            .arg("--json")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let v: Value = serde_json::from_slice(&out).unwrap();
        v["registry"]["nodes"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}

/// A registry with one governance key and a node operator (spare key 1)
/// allowed one node; spare key 2 is a stranger.
fn setup() -> Net {
    let net = Net {
        tmp: tempfile::tempdir().unwrap(),
        icos: icos_binary(),
    };
    net.icos()
        .args(["registry", "init"])
        .arg(net.repo())
        .args(["--threshold", "1", "--generate", "1", "--keys-out"])
        .arg(net.path("gov"))
        .assert()
        .success();
    net.icos()
        .args(["registry", "init"])
        .arg(net.path("scratch"))
        .args(["--threshold", "1", "--generate", "2", "--keys-out"])
        .arg(net.path("spare"))
        .assert()
        .success();
    let out = net
        .gov("propose")
        .args(["--json", "add-node-operator", "--key"])
        .arg(net.spare(1))
        .args(["--allowance", "1"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let id = v["proposal"].as_u64().unwrap().to_string();
    net.gov("vote")
        .arg("--key")
        .arg(net.path("gov").join("gov-1.pem"))
        .arg(&id)
        .assert()
        .success();
    net.gov("execute").arg(&id).assert().success();
    net
}

/// A small GuestOS-layout disk file: GPT, a FAT grub partition with
/// grubenv (A, stable), and the six slot partitions.
fn disk(net: &Net) -> PathBuf {
    let d = net.path("disk.img");
    let p = d.display();
    let table = "label: gpt\n\
        start=2048, size=8192, type=L, name=grub\n\
        start=10240, size=4096, type=L, name=A_boot\n\
        start=14336, size=8192, type=L, name=A_root\n\
        start=22528, size=4096, type=L, name=A_var\n\
        start=26624, size=4096, type=L, name=B_boot\n\
        start=30720, size=8192, type=L, name=B_root\n\
        start=38912, size=4096, type=L, name=B_var\n";
    std::fs::write(net.path("table"), table).unwrap();
    sh(&format!(
        "truncate -s 24M {p} && sfdisk -q {p} < {}",
        net.path("table").display()
    ));
    let env = net.path("grubenv");
    net.icos()
        .args(["grubenv", "create"])
        .arg(&env)
        .assert()
        .success();
    net.icos()
        .args(["grubenv", "set"])
        .arg(&env)
        .args(["boot_alternative=A", "boot_cycle=stable"])
        .assert()
        .success();
    sh(&format!(
        "mkfs.vfat --offset=2048 -n GRUB {p} 4096 >/dev/null 2>&1 && MTOOLS_SKIP_CHECK=1 mcopy -i {p}@@{} {} ::grubenv",
        2048 * 512,
        env.display()
    ));
    d
}

#[test]
fn a_node_joins_over_http_and_finds_itself_by_its_key() {
    let net = setup();
    let (_server, url) = net.serve(true);

    // First boot: the node key is generated and the join admitted.
    let out = net
        .join(&url, "n1", Some(&net.spare(1)), "2001:db8::11")
        .assert()
        .success()
        .stdout(contains("Join request successful!"))
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .unwrap_or_else(|| panic!("no node id in {text:?}"))
        .to_owned();
    let key = net.node_key("n1");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);

    // The registry lists it, admitted without a vote.
    let nodes = net.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[&id]["ipv6"], "2001:db8::11");

    // Joining again: the node is registered, nothing is sent.
    net.join(&url, "n1", Some(&net.spare(1)), "2001:db8::11")
        .assert()
        .success()
        .stdout(contains(format!("node {id} is already registered")));

    // The daemon finds itself by the id of its key (and joins first when
    // given the operator key: here it is registered already).
    let disk = disk(&net);
    let version = net.path("version.txt");
    std::fs::write(&version, "v1\n").unwrap();
    let status = net.path("status.json");
    Command::new(env!("CARGO_BIN_EXE_icos-orchestrator"))
        .args(["run", "--once", "--no-hostos", "--registry-url", &url])
        .arg("--root")
        .arg(net.root())
        .arg("--datastore")
        .arg(net.path("n1").join("store"))
        .arg("--node-key")
        .arg(&key)
        .arg("--operator-key")
        .arg(net.spare(1))
        .args(["--ipv6", "2001:db8::11"])
        .arg("--version-file")
        .arg(&version)
        .arg("--status-file")
        .arg(&status)
        .arg("--disk")
        .arg(&disk)
        .assert()
        .success()
        .stdout(contains("already registered"));
    let s: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(s["node_id"], id.as_str(), "{s}");
    Command::new(env!("CARGO_BIN_EXE_icos-orchestrator"))
        .args(["run", "--once", "--no-hostos", "--registry-url", &url])
        .arg("--root")
        .arg(net.root())
        .arg("--datastore")
        .arg(net.path("n1").join("store"))
        .arg("--node-key")
        .arg(&key)
        .arg("--version-file")
        .arg(&version)
        .arg("--status-file")
        .arg(&status)
        .arg("--disk")
        .arg(&disk)
        .assert()
        .success();
    let s: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(s["node_id"], id.as_str(), "{s}");

    // The operator's allowance is spent: refused with the reason, exit 1.
    net.join(&url, "n2", Some(&net.spare(1)), "2001:db8::12")
        .assert()
        .code(1)
        .stderr(contains("HTTP 403"))
        .stderr(contains("no node allowance left"));
    // Signed by a key that is no operator of the registry.
    net.join(&url, "n3", Some(&net.spare(2)), "2001:db8::13")
        .assert()
        .code(1)
        .stderr(contains("HTTP 403"))
        .stderr(contains("is not in the registry"));
    // Not registered and no operator key: nothing to join with.
    net.join(&url, "n4", None, "2001:db8::14")
        .assert()
        .code(1)
        .stderr(contains("no node operator key was given"));
    assert_eq!(net.nodes().len(), 1);
}

#[test]
fn a_read_only_registry_takes_no_joins() {
    let net = setup();
    // Joins are signed with the online key; any other key is refused.
    net.icos()
        .args(["registry", "serve"])
        .arg(net.repo())
        .args(["--listen", "127.0.0.1:0", "--online-key"])
        .arg(net.path("gov").join("gov-1.pem"))
        .assert()
        .code(2)
        .stderr(contains("is not the snapshot key of this registry"));
    let (_server, url) = net.serve(false);
    net.join(&url, "n1", Some(&net.spare(1)), "2001:db8::11")
        .assert()
        .code(1)
        .stderr(contains("no registry URL accepts join requests"))
        .stderr(contains("no join service"));
    assert!(net.nodes().is_empty());
    // Nobody listening: retried, then given up (--attempts 3).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    net.join(&dead_url, "n2", Some(&net.spare(1)), "2001:db8::12")
        .assert()
        .code(1)
        .stderr(contains("gave up after 3 attempt(s)"));
}
