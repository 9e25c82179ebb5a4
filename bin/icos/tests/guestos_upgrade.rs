//! A GuestOS node upgrades itself when governance says so, in QEMU.
//!
//! Builds GuestOS `v1` and `v2` (into `$CARGO_TARGET_TMPDIR/guestos_upgrade/`,
//! with the icos stage cache, so the second build only redoes the version
//! stages), makes a registry with `icos registry init` (three governance
//! keys, threshold 2) in which one node, found by the guest's IPv6 address,
//! is in a subnet running the elected `v1`, and serves it with
//! `icos registry serve` and `v2`'s `update-img.tar.zst` with a small HTTP
//! file server of this test (with `Range` support, which the orchestrator
//! uses to resume). Both listen on this machine's loopback, which the guest
//! reaches as `10.0.2.2` through QEMU's user network.
//!
//! `v1`'s raw disk boots in place with the registry's trust root on the
//! CONFIG media. Once its orchestrator has looked at the registry, `v2` is
//! elected and deployed to the subnet (two votes each, then execute). With
//! no further step the node downloads, verifies and installs `v2` into slot
//! B, commits and reboots. `icos run` gives QEMU `-no-reboot`, so the
//! guest's reboot ends that QEMU; the test starts the VM again from the
//! same disk, as the hypervisor would, and waits for the marker with
//! `version=v2` and the orchestrator's boot confirmation. After the VM is
//! stopped, grubenv says `boot_alternative=B boot_cycle=stable`.
//!
//! The orchestrator's log lines are on the serial console; their arrival
//! times give the `BENCH` lines (detect, download, verify, install, reboot,
//! confirm). Needs root (mmdebstrap) and the host tools of
//! `scripts/prereqs.sh`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Children, fresh_dir, run_ok, source_root};

const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
/// The guest's address, by which the registry knows the node.
const NODE_IPV6: &str = "2001:db8:0:1::10";
/// How long a boot may take on a busy machine under TCG, in seconds.
const BOOT_TIMEOUT: &str = "600";
/// How long the whole upgrade may take, from `gov execute` to the reboot.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

/// Builds GuestOS `version` into `dir/<version>/guestos/`.
fn build(dir: &Path, version: &str) -> PathBuf {
    let started = Instant::now();
    let out = dir.join(version);
    let status = icos()
        .args(["build", "guestos", "--version", version, "--source"])
        .arg(source_root())
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "icos build guestos --version {version}");
    eprintln!(
        "BENCH build {version}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out.join("guestos")
}

/// The registry repository and its governance keys.
struct Gov {
    repo: PathBuf,
    keys: PathBuf,
}

impl Gov {
    fn cmd(&self, sub: &str) -> Command {
        let mut c = icos();
        c.args(["gov", sub, "--repo"]).arg(&self.repo);
        c
    }

    /// Proposes, votes with two of the three keys, executes.
    fn pass(&self, args: &[&str]) {
        let out = run_ok(self.cmd("propose").arg("--json").args(args));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = v["proposal"].as_u64().unwrap().to_string();
        for k in [1, 2] {
            run_ok(
                self.cmd("vote")
                    .arg("--key")
                    .arg(self.keys.join(format!("gov-{k}.pem")))
                    .arg(&id),
            );
        }
        let out = run_ok(self.cmd("execute").arg(&id));
        assert!(out.contains("published"), "{out}");
    }

    fn show(&self) -> serde_json::Value {
        serde_json::from_str(&run_ok(self.cmd("show").arg("--json"))).unwrap()
    }

    /// The only key of the map at `registry.<field>`.
    fn only_id(&self, field: &str) -> String {
        let shown = self.show();
        let map = shown["registry"][field].as_object().unwrap();
        assert_eq!(map.len(), 1, "{field}: {map:?}");
        map.keys().next().unwrap().clone()
    }
}

/// Serves `dir` with `icos registry serve` on loopback; returns the port.
fn serve_registry(children: &mut Children, dir: &Path) -> u16 {
    let mut child = icos()
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
    children.0.push(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A static file server for the release packages: `GET /<name>` of the
/// files in `dir`, honouring `Range: bytes=N-`. Logs each request.
fn serve_files(dir: PathBuf, log: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &dir, &log);
            });
        }
    });
    port
}

fn answer(mut s: TcpStream, dir: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut from = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range:") {
            from = r
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    log.lock()
        .unwrap()
        .push(format!("{} range={from:?}", request.trim()));
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let file = (!name.contains('/') && !name.is_empty())
        .then(|| File::open(dir.join(name)).ok())
        .flatten();
    let Some(mut file) = file else {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = file.metadata()?.len();
    match from {
        Some(n) if n >= len => s.write_all(
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Some(n) => {
            file.seek(SeekFrom::Start(n))?;
            s.write_all(
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    len - 1,
                    len - n
                )
                .as_bytes(),
            )?;
            std::io::copy(&mut file.take(len - n), &mut s).map(|_| ())
        }
        None => {
            s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            std::io::copy(&mut file, &mut s).map(|_| ())
        }
    }
}

/// The console of one `icos run guestos --stay`, line by line with the
/// time each line arrived.
#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<(Instant, String)>>>);

impl Console {
    /// Waits for the first line at or after `since` containing `needle`.
    fn wait(&self, needle: &str, since: Instant, timeout: Duration, vm: &mut Child) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.find(needle, since) {
                return at.0;
            }
            let exited = vm.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no console line with {needle:?} ({}):\n{}",
                if exited.is_some() {
                    "the VM stopped"
                } else {
                    "timeout"
                },
                self.text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn find(&self, needle: &str, since: Instant) -> Option<(Instant, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, l)| *at >= since && l.contains(needle))
            .cloned()
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap();
        let skip = lines.len().saturating_sub(200);
        lines[skip..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Boots `disk` in place and keeps it running; its console goes to
/// `console` (and `log`).
fn boot(disk: &Path, config: &Path, root: &Path, log: &Path) -> (Child, Console) {
    let mut vm = icos()
        .args(["run", "guestos", "--image"])
        .arg(disk)
        .arg("--config")
        .arg(config)
        .arg("--registry-root")
        .arg(root)
        .args(["--in-place", "--allow-outbound", "--stay", "--timeout"])
        .arg(BOOT_TIMEOUT)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let console = Console::default();
    let lines = console.0.clone();
    let stderr = vm.stderr.take().unwrap();
    let mut file = File::create(log).unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            lines.lock().unwrap().push((Instant::now(), line));
        }
    });
    (vm, console)
}

/// Stops a `--stay` VM as its user would (SIGTERM stops QEMU with it).
fn stop(vm: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &vm.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = vm.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = vm.wait();
}

fn grubenv(disk: &Path) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        icos().args(["slots", "show", "--json", "--disk"]).arg(disk),
    ))
    .unwrap();
    (
        v["boot_alternative"].as_str().unwrap().to_owned(),
        v["boot_cycle"].as_str().unwrap().to_owned(),
    )
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

#[test]
#[ignore = "long VM test (two builds and an upgrade under TCG, about 10 minutes): scripts/test-long.sh runs it"]
fn a_node_follows_governance_from_v1_to_v2() {
    let (dir, _lock) = fresh_dir("guestos_upgrade");
    let mut children = Children(Vec::new());

    // 1. Two releases.
    let v1 = build(&dir, "v1");
    let v2 = build(&dir, "v2");
    icos_sparse_tar::extract(
        File::open(v1.join("disk-img.tar.zst")).unwrap(),
        &dir,
        &mut |_| {},
    )
    .unwrap();
    let disk = dir.join("disk.img");
    assert_eq!(grubenv(&disk), ("A".into(), "stable".into()));
    let releases = dir.join("releases");
    fs::create_dir_all(&releases).unwrap();
    fs::copy(
        v2.join("update-img.tar.zst"),
        releases.join("update-img.tar.zst"),
    )
    .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let file_port = serve_files(releases, requests.clone());

    // 2. The registry: one operator, one node, one subnet on v1.
    let gov = Gov {
        repo: dir.join("registry"),
        keys: dir.join("gov-keys"),
    };
    run_ok(
        icos()
            .args(["registry", "init"])
            .arg(&gov.repo)
            .args(["--threshold", "2", "--generate", "3", "--keys-out"])
            .arg(&gov.keys),
    );
    let root = gov.repo.join("metadata").join("1.root.json");
    gov.pass(&[
        "add-node-operator",
        "--public-key",
        &"11".repeat(32),
        "--allowance",
        "1",
    ]);
    let operator = gov.only_id("node_operators");
    gov.pass(&[
        "add-node",
        "--public-key",
        &"22".repeat(32),
        "--operator",
        &operator,
        "--ipv6",
        NODE_IPV6,
    ]);
    let node = gov.only_id("nodes");
    let elect = |version: &str, art: &Path| {
        gov.pass(&[
            "elect-guestos-version",
            "--version-id",
            version,
            "--url",
            &format!("http://10.0.2.2:{file_port}/update-img.tar.zst"),
            "--sha256sums",
            art.join("SHA256SUMS").to_str().unwrap(),
        ]);
    };
    elect("v1", &v1);
    gov.pass(&[
        "create-subnet",
        "--subnet",
        SUBNET,
        "--node",
        &node,
        "--version-id",
        "v1",
    ]);
    let registry_port = serve_registry(&mut children, &gov.repo);

    // 3. The guest's config: the dev config with a fixed IPv6 address (the
    // node's in the registry), IPv4 in QEMU's network, and the registry as
    // its NNS URL.
    let mut config: serde_json::Value = serde_json::from_str(
        &icos_config::to_json_pretty(&icos_config_media::dev_guestos_config().unwrap()).unwrap(),
    )
    .unwrap();
    config["network_settings"]["ipv6_config"] = serde_json::json!({
        "Fixed": {"address": format!("{NODE_IPV6}/64"), "gateway": "2001:db8:0:1::1"}
    });
    config["network_settings"]["ipv4_config"] = serde_json::json!({
        "address": "10.0.2.15",
        "gateway": "10.0.2.2",
        "prefix_length": 24
    });
    config["icos_settings"]["nns_urls"] =
        serde_json::json!([format!("http://10.0.2.2:{registry_port}/")]);
    let config_path = dir.join("guestos.json");
    fs::write(&config_path, config.to_string()).unwrap();

    // 4. v1 boots and its orchestrator finds itself current.
    let started = Instant::now();
    let (mut vm, console) = boot(&disk, &config_path, &root, &dir.join("vm-1.log"));
    let marker_at = console.wait(
        "GUESTOS BOOT SUCCESS uptime=",
        started,
        Duration::from_secs(900),
        &mut vm,
    );
    let (_, marker) = console
        .find("GUESTOS BOOT SUCCESS uptime=", started)
        .unwrap();
    eprintln!("{marker}");
    assert!(marker.contains("version=v1 "), "{marker}");
    assert!(marker.contains("failed_units=[]"), "{marker}");
    assert!(marker.contains("dfinity.system=A"), "{marker}");
    eprintln!("BENCH boot v1: {:.1} s", secs(started, marker_at));
    console.wait(
        "GUESTOS STEP orchestrator-config: ok: /opt/ic/bin/icos-orchestrator following",
        started,
        Duration::from_secs(5),
        &mut vm,
    );
    console.wait("boot confirmed", started, Duration::from_secs(300), &mut vm);
    console.wait("pass done", started, Duration::from_secs(600), &mut vm);

    // 5. Governance elects v2 and deploys it to the node's subnet.
    elect("v2", &v2);
    gov.pass(&[
        "deploy-guestos-to-subnet",
        "--subnet",
        SUBNET,
        "--version-id",
        "v2",
    ]);
    let executed = Instant::now();

    // 6. The node does the rest: download, verify, install, commit, reboot.
    let step = |needle: &str, vm: &mut Child| console.wait(needle, executed, UPGRADE_TIMEOUT, vm);
    let downloading = step("to=downloading", &mut vm);
    let verifying = step("to=verifying", &mut vm);
    let installing = step("to=installing", &mut vm);
    let committing = step("to=committing", &mut vm);
    let reboot_pending = step("to=reboot_pending", &mut vm);
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = vm.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not reboot:\n{}",
            console.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let rebooted = Instant::now();
    eprintln!("first VM ended with {status} (the guest's reboot; QEMU runs with -no-reboot)");
    assert_eq!(grubenv(&disk), ("B".into(), "first_boot".into()));
    let log = requests.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|r| r.starts_with("GET /update-img.tar.zst ")),
        "{log:?}"
    );

    // 7. The hypervisor starts the VM again: v2 runs from B and confirms.
    let (mut vm, console) = boot(&disk, &config_path, &root, &dir.join("vm-2.log"));
    let marker_at = console.wait(
        "GUESTOS BOOT SUCCESS uptime=",
        rebooted,
        Duration::from_secs(900),
        &mut vm,
    );
    let (_, marker) = console
        .find("GUESTOS BOOT SUCCESS uptime=", rebooted)
        .unwrap();
    eprintln!("{marker}");
    assert!(marker.contains("version=v2 "), "{marker}");
    assert!(marker.contains("dfinity.system=B"), "{marker}");
    assert!(marker.contains("failed_units=[]"), "{marker}");
    let confirmed = console.wait(
        "boot confirmed",
        rebooted,
        Duration::from_secs(300),
        &mut vm,
    );
    let text = console.text();
    assert!(
        text.contains("GRUB: grubenv before: boot_alternative=B boot_cycle=first_boot"),
        "{text}"
    );
    stop(&mut vm);
    assert_eq!(grubenv(&disk), ("B".into(), "stable".into()));

    eprintln!(
        "BENCH detect (execute -> downloading): {:.1} s",
        secs(executed, downloading)
    );
    eprintln!("BENCH download: {:.1} s", secs(downloading, verifying));
    eprintln!("BENCH verify: {:.1} s", secs(verifying, installing));
    eprintln!("BENCH install: {:.1} s", secs(installing, committing));
    eprintln!(
        "BENCH commit (read back, verify, flip grubenv): {:.1} s",
        secs(committing, reboot_pending)
    );
    eprintln!(
        "BENCH reboot (reboot asked -> VM ended): {:.1} s",
        secs(reboot_pending, rebooted)
    );
    eprintln!(
        "BENCH boot v2 to its confirmation: {:.1} s (marker after {:.1} s)",
        secs(rebooted, confirmed),
        secs(rebooted, marker_at)
    );
    eprintln!(
        "BENCH execute -> v2 confirmed: {:.1} s",
        secs(executed, confirmed)
    );
    drop(children);
}
