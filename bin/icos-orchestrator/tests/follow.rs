//! The daemon keeps the node in line with a real registry served by
//! `icos registry serve`: it supervises a small script as the replica
//! (started with the registry's subnet, started again after being killed,
//! stopped with the daemon), writes the readonly and backup accounts' SSH
//! keys and writes and loads the firewall ruleset with the registry's rules.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Killed, icos_binary, sh};

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Std, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use icos_registry::model::self_authenticating_id;
use serde_json::Value;

const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A GuestOS-layout disk file with grubenv (A, stable).
fn disk(icos: &Path, dir: &Path) -> PathBuf {
    let d = dir.join("disk.img");
    let p = d.display();
    let table = "label: gpt\n\
        start=2048, size=8192, type=L, name=grub\n\
        start=10240, size=4096, type=L, name=A_boot\n\
        start=14336, size=8192, type=L, name=A_root\n\
        start=22528, size=4096, type=L, name=A_var\n\
        start=26624, size=4096, type=L, name=B_boot\n\
        start=30720, size=8192, type=L, name=B_root\n\
        start=38912, size=4096, type=L, name=B_var\n";
    std::fs::write(dir.join("table"), table).unwrap();
    sh(&format!(
        "truncate -s 24M {p} && sfdisk -q {p} < {}",
        dir.join("table").display()
    ));
    let env = dir.join("grubenv");
    Command::new(icos)
        .args(["grubenv", "create"])
        .arg(&env)
        .assert()
        .success();
    Command::new(icos)
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

/// Proposes, votes with the one governance key and executes.
fn enact(icos: &Path, repo: &Path, gov_key: &Path, args: &[&str]) {
    let out = Command::new(icos)
        .args(["gov", "propose", "--repo"])
        .arg(repo)
        .arg("--json")
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let id = v["proposal"].as_u64().unwrap().to_string();
    Command::new(icos)
        .args(["gov", "vote", "--repo"])
        .arg(repo)
        .arg("--key")
        .arg(gov_key)
        .arg(&id)
        .assert()
        .success();
    Command::new(icos)
        .args(["gov", "execute", "--repo"])
        .arg(repo)
        .arg(&id)
        .assert()
        .success();
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn the_daemon_supervises_the_replica_and_follows_the_registrys_access() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let icos = icos_binary();
    let repo = dir.join("repo");
    Command::new(&icos)
        .args(["registry", "init"])
        .arg(&repo)
        .args(["--threshold", "1", "--generate", "1", "--keys-out"])
        .arg(dir.join("gov"))
        .assert()
        .success();
    let gov = dir.join("gov").join("gov-1.pem");
    let op_key = [1u8; 32];
    let node_key = [10u8; 32];
    let operator = self_authenticating_id(&op_key);
    let node = self_authenticating_id(&node_key);
    let hex = |k: &[u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    enact(
        &icos,
        &repo,
        &gov,
        &[
            "add-node-operator",
            "--public-key",
            &hex(&op_key),
            "--allowance",
            "3",
        ],
    );
    enact(
        &icos,
        &repo,
        &gov,
        &[
            "add-node",
            "--public-key",
            &hex(&node_key),
            "--operator",
            &operator,
            "--ipv6",
            "2001:db8::10",
        ],
    );
    enact(
        &icos,
        &repo,
        &gov,
        &[
            "elect-guestos-version",
            "--version-id",
            "v1",
            "--url",
            "https://example.org/update-img.tar.zst",
            "--sha256",
            &"ab".repeat(32),
        ],
    );
    enact(
        &icos,
        &repo,
        &gov,
        &[
            "create-subnet",
            "--subnet",
            SUBNET,
            "--node",
            &node,
            "--version-id",
            "v1",
            "--ssh-readonly-key",
            "ssh-ed25519 AAAAreadonly ro@ops",
            "--ssh-backup-key",
            "ssh-ed25519 AAAAbackup bk@ops",
        ],
    );
    enact(
        &icos,
        &repo,
        &gov,
        &[
            "set-routing-table",
            "--range",
            &format!("rwlgt-iiaaa-aaaaa-aaaaa-cai,renrk-eyaaa-aaaaa-aaada-cai,{SUBNET}"),
        ],
    );
    let rules = dir.join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"prefixes": ["2001:db8:bad::/48"], "ports": [22], "action": "deny", "comment": "blocked"}]"#,
    )
    .unwrap();
    enact(
        &icos,
        &repo,
        &gov,
        &["set-firewall-rules", "--file", rules.to_str().unwrap()],
    );

    // Serve it.
    let mut server = Std::new(&icos)
        .args(["registry", "serve"])
        .arg(&repo)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(server);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();

    // The node's files.
    let config = dir.join("config.json");
    let guestos = icos_config_media::dev_guestos_config().unwrap();
    std::fs::write(&config, icos_config::to_json_pretty(&guestos).unwrap()).unwrap();
    let version = dir.join("version.txt");
    std::fs::write(&version, "v1\n").unwrap();
    let starts = dir.join("starts");
    let replica = dir.join("replica.sh");
    script(
        &replica,
        &format!("echo \"$$ $*\" >> {}\nexec sleep 300", starts.display()),
    );
    let loads = dir.join("loads");
    let nft = dir.join("nft.sh");
    script(&nft, &format!("echo \"$*\" >> {}", loads.display()));
    let boot_keys = dir.join("boot-keys");
    std::fs::create_dir_all(&boot_keys).unwrap();
    std::fs::write(boot_keys.join("readonly"), "ssh-ed25519 AAAAboot boot@op\n").unwrap();
    let homes = dir.join("homes");
    let firewall = dir.join("nftables-ruleset/nftables.conf");
    let status = dir.join("status.json");
    let disk = disk(&icos, dir);

    let daemon = Std::new(env!("CARGO_BIN_EXE_icos-orchestrator"))
        .args(["run", "--no-hostos", "--poll", "1s", "--registry-url", &url])
        .arg("--root")
        .arg(repo.join("metadata").join("1.root.json"))
        .arg("--datastore")
        .arg(dir.join("store"))
        .args(["--node-id", &node])
        .arg("--version-file")
        .arg(&version)
        .arg("--status-file")
        .arg(&status)
        .arg("--disk")
        .arg(&disk)
        .arg("--guestos-config")
        .arg(&config)
        .arg("--replica-bin")
        .arg(&replica)
        .arg("--replica-config")
        .arg(dir.join("replica/testnet.json"))
        .args(["--replica-listen", "127.0.0.1:18080"])
        .args(["--replica-backoff", "200ms", "--replica-grace", "3s"])
        .arg("--ssh-dir")
        .arg(&homes)
        .arg("--ssh-bootstrap-keys")
        .arg(&boot_keys)
        .arg("--firewall-file")
        .arg(&firewall)
        .arg("--nft")
        .arg(&nft)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Killed(daemon);
    let minute = Duration::from_secs(60);

    // The replica runs with the registry's subnet.
    wait_for("the replica with the registry's subnet", minute, || {
        read(&starts).contains(&format!("--subnet {SUBNET} --node-index 0"))
    });
    let testnet = read(&dir.join("replica/testnet.json"));
    assert!(testnet.contains("\"nodes\": 1"), "{testnet}");
    // Killed, it is started again.
    let last_pid = || {
        read(&starts)
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap()
    };
    let first = last_pid();
    let count = read(&starts).lines().count();
    sh(&format!("kill -9 {first}"));
    wait_for("the restart", minute, || {
        read(&starts).lines().count() > count
    });
    let second = last_pid();
    assert_ne!(first, second);
    wait_for("the status's replica section", minute, || {
        let v: Value = serde_json::from_str(&read(&status)).unwrap_or_default();
        v["replica"]["restarts"].as_u64().unwrap_or(0) >= 1
            && v["replica"]["pid"].as_u64().map(|p| p.to_string()) == Some(second.clone())
    });
    let v: Value = serde_json::from_str(&read(&status)).unwrap();
    assert_eq!(v["replica"]["last_exit"], "killed by signal SIGKILL", "{v}");

    // SSH keys and the firewall follow the registry.
    let ro = homes.join("readonly/.ssh/authorized_keys");
    let bk = homes.join("backup/.ssh/authorized_keys");
    wait_for("the SSH keys", minute, || {
        read(&ro).contains("AAAAreadonly") && read(&bk).contains("AAAAbackup")
    });
    assert!(read(&ro).contains("AAAAboot"), "{}", read(&ro));
    let mode = std::fs::metadata(&ro).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    wait_for("the firewall load", minute, || !read(&loads).is_empty());
    let rules = read(&firewall);
    assert!(
        rules.contains("ip6 saddr { 2001:db8:bad::/48 } tcp dport { 22 } counter drop"),
        "{rules}"
    );
    assert_eq!(read(&loads), format!("-f {}\n", firewall.display()));

    // SIGTERM: the daemon stops the replica and exits 0.
    sh(&format!("kill -TERM {}", daemon.0.id()));
    let start = Instant::now();
    let code = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < minute, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    let _ = std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut log);
    assert!(code.success(), "{code}\n{log}");
    assert!(
        !Path::new(&format!("/proc/{second}")).exists(),
        "the replica outlived the daemon\n{log}"
    );
    // Loaded once: nothing changed in the registry since.
    assert_eq!(read(&loads).lines().count(), 1);
}
