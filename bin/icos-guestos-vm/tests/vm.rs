//! The runner against a real GuestOS disk: `icos build guestos` builds it
//! (the icos stage cache makes a repeated build quick), the runner boots it
//! under QEMU to `GUESTOS BOOT SUCCESS`, tells systemd it is ready, keeps
//! its metrics textfile, and on SIGTERM shuts the VM down (ACPI, then
//! destroy after the grace period) and exits 0 with nothing left running.
//!
//! vsock: when `vhost-device-vsock` is found (`$ICOS_VHOST_DEVICE_VSOCK` or
//! `PATH`), the VM gets vhost-user vsock and the HostOS agent
//! (`icos-hostos-agent`) listens on the daemon's Unix socket for port
//! 19090. Whether the guest asked the agent for its version is printed;
//! with `ICOS_EXPECT_GUEST_VSOCK=1` it is required (the GuestOS image must
//! then call `get-hostos-version` at boot).
//!
//! Measurements printed for benchmarks: time from VM start to the marker
//! (`guestos_vm_boot_duration_seconds`) and the runner's RSS while the VM
//! runs.
//!
//! Network: the runner runs inside a network namespace the test creates,
//! with the guest's NIC on a tap in a bridge that holds the node's IPv6
//! gateway address; once the guest is up, the test pings the guest's
//! deterministic IPv6 address from the namespace.
//!
//! `ICOS_GUESTOS_VM_TEST_IMAGE=PATH/disk-img.tar.zst` uses a ready image
//! instead of building one (for development).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is TARGET/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the `icos` and `icos-hostos-agent` binaries (release, as the
/// image tests use them) and returns their folder.
fn build_tools() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "icos",
            "-p",
            "icos-hostos-agent",
        ])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build of icos failed: {status}");
    target_dir().join("release")
}

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "host tool `{tool}` is missing: install the Debian package `{package}` (./scripts/prereqs.sh)"
    );
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The GuestOS disk image, extracted into `dir`.
fn guestos_disk(bin: &Path, dir: &Path) -> PathBuf {
    let image = match std::env::var_os("ICOS_GUESTOS_VM_TEST_IMAGE") {
        Some(p) => {
            eprintln!("using the ready image {}", Path::new(&p).display());
            PathBuf::from(p)
        }
        None => {
            let out = dir.join("build");
            let status = Command::new(bin.join("icos"))
                .args(["build", "guestos", "--env", "dev", "--source"])
                .arg(repo_root())
                .arg("--out")
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success(), "icos build guestos failed: {status}");
            out.join("guestos/disk-img.tar.zst")
        }
    };
    let entries = icos_sparse_tar::extract(File::open(&image).unwrap(), dir, &mut |_| {}).unwrap();
    assert_eq!(entries.len(), 1);
    let disk = dir.join("disk.img");
    assert!(disk.is_file(), "{} holds no disk.img", image.display());
    disk
}

/// The dev HostOS config with resources that fit a CI machine under TCG.
fn hostos_config(path: &Path) {
    let mut config: serde_json::Value =
        serde_json::from_str(icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
    config["hostos_settings"]["hostos_dev_settings"] =
        serde_json::json!({"vm_memory": 2, "vm_cpu": "qemu", "vm_nr_of_vcpus": 2});
    fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// A network namespace with a bridge `br0` holding `gateway/64` and a tap
/// `tap0` on it; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(gateway: &str) -> Netns {
        let name = format!("icos-gvm-{}", std::process::id());
        let ns = Netns(name.clone());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec![
                "addr",
                "add",
                &format!("{gateway}/64"),
                "dev",
                "br0",
                "nodad",
            ],
            vec!["link", "set", "br0", "up"],
            vec!["tuntap", "add", "dev", "tap0", "mode", "tap"],
            vec!["link", "set", "tap0", "master", "br0"],
            vec!["link", "set", "tap0", "up"],
        ] {
            let mut full = vec!["-n", name.as_str()];
            full.extend(args);
            ip(&full);
        }
        ns
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// The guest's deterministic IPv6 address for `config` (`icos net ipv6`).
fn guest_ipv6(bin: &Path, config: &Path) -> String {
    let c: serde_json::Value = serde_json::from_str(&fs::read_to_string(config).unwrap()).unwrap();
    let icos = &c["icos_settings"];
    let out = Command::new(bin.join("icos"))
        .args(["net", "ipv6", "--node-type", "guestos", "--mgmt-mac"])
        .arg(icos["mgmt_mac"].as_str().unwrap())
        .arg("--deployment-environment")
        .arg(icos["deployment_environment"].as_str().unwrap())
        .arg("--prefix")
        .arg(
            c["network_settings"]["ipv6_config"]["Deterministic"]["prefix"]
                .as_str()
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Kills a child on drop (test cleanup on panic too).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Processes (pid, command line) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

#[test]
fn runner_boots_a_built_guestos_disk_and_stops_it_on_sigterm() {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ] {
        require(tool, package);
    }
    let bin = build_tools();
    let tmp = tempfile::Builder::new()
        .prefix("icos-guestos-vm-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path();
    let disk = guestos_disk(&bin, dir);
    let config = dir.join("hostos.json");
    hostos_config(&config);
    let ns = {
        let c: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
        Netns::new(
            c["network_settings"]["ipv6_config"]["Deterministic"]["gateway"]
                .as_str()
                .unwrap(),
        )
    };
    let guest_addr = guest_ipv6(&bin, &config);
    let work = dir.join("run");
    fs::create_dir_all(&work).unwrap();
    let metrics = dir.join("guestos_vm.prom");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();

    // vsock through vhost-device-vsock, with the HostOS agent behind it.
    let vhost = std::env::var_os("ICOS_VHOST_DEVICE_VSOCK")
        .map(PathBuf::from)
        .or_else(|| find_in_path("vhost-device-vsock"));
    let mut agent = None;
    let agent_metrics = dir.join("agent.prom");
    let mut vsock_args: Vec<String> = vec!["--vsock".into(), "none".into()];
    match &vhost {
        Some(v) => {
            let uds = work.join("vsock.uds");
            fs::write(dir.join("hostos-version.txt"), "hostos-vm-test\n").unwrap();
            let child = Command::new(bin.join("icos-hostos-agent"))
                .arg("--unix")
                .arg(format!("{}_19090", uds.display()))
                .arg("--version-file")
                .arg(dir.join("hostos-version.txt"))
                .arg("--node-id-file")
                .arg(dir.join("node-id"))
                .arg("--tty")
                .arg(dir.join("tty"))
                .arg("--upgrade-dir")
                .arg(dir.join("upgrade"))
                .arg("--metrics-file")
                .arg(&agent_metrics)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            agent = Some(Guard(child));
            vsock_args = vec![
                "--vsock".into(),
                "vhost-user".into(),
                "--vhost-device-vsock".into(),
                v.display().to_string(),
                "--vsock-uds".into(),
                uds.display().to_string(),
            ];
        }
        None => eprintln!(
            "vsock part skipped: vhost-device-vsock not found (set ICOS_VHOST_DEVICE_VSOCK or \
             `cargo install vhost-device-vsock --locked`); the host kernel has no vhost-vsock"
        ),
    }

    // `ip netns exec` execs the runner in place: the child's pid is the
    // runner's.
    let runner = ns
        .command(env!("CARGO_BIN_EXE_icos-guestos-vm"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--disk")
        .arg(&disk)
        .arg("--work-dir")
        .arg(&work)
        .args(["--net", "tap:tap0", "--accel", "tcg"])
        .args(&vsock_args)
        .arg("--metrics-file")
        .arg(&metrics)
        .args(["--shutdown-grace", "90s"])
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let mut runner = Guard(runner);
    let pid = runner.0.id();

    // Wait for the boot marker through the metrics textfile.
    let start = Instant::now();
    let mut messages = String::new();
    let mut max_rss = 0;
    let booted = loop {
        let mut buf = [0u8; 512];
        while let Ok(n) = notify.recv(&mut buf) {
            messages.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if let Some(status) = runner.0.try_wait().unwrap() {
            panic!("the runner exited early: {status}");
        }
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        if metric(&text, "guestos_vm_state{state=\"booting\"}") == Some(1.0) {
            max_rss = max_rss.max(rss_kib(pid));
        }
        if metric(&text, "guestos_vm_last_boot{result=\"success\"}") == Some(1.0) {
            break text;
        }
        for bad in ["failure", "timeout"] {
            assert_ne!(
                metric(&text, &format!("guestos_vm_last_boot{{result=\"{bad}\"}}")),
                Some(1.0),
                "boot {bad}; serial log:\n{}",
                fs::read_to_string(work.join("guestos-serial.log")).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(420),
            "no boot marker after 7 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let serial = fs::read_to_string(work.join("guestos-serial.log")).unwrap();
    assert!(serial.contains("GUESTOS BOOT SUCCESS"), "{serial}");
    assert_eq!(metric(&booted, "guestos_vm_starts_total"), Some(1.0));
    assert_eq!(metric(&booted, "guestos_vm_slot{slot=\"A\"}"), Some(1.0));
    let boot_secs = metric(&booted, "guestos_vm_boot_duration_seconds").unwrap();
    assert!(boot_secs > 0.0);
    // The VM runs: measure the runner once more.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid);
    max_rss = max_rss.max(rss);
    eprintln!(
        "BENCH guestos_vm_start_to_marker_seconds {boot_secs:.1}\n\
         BENCH guestos_vm_runner_rss_kib {rss} (max while booting: {max_rss})"
    );
    let mut buf = [0u8; 512];
    while let Ok(n) = notify.recv(&mut buf) {
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(messages.contains("READY=1\n"), "no READY=1 in {messages:?}");
    assert!(
        messages.contains("STATUS=GuestOS VM running\n"),
        "{messages:?}"
    );

    // The guest answers on its deterministic IPv6 address across the bridge.
    let pinged = Instant::now();
    loop {
        let out = ns
            .command("ping")
            .args(["-6", "-c", "2", "-W", "2", &guest_addr])
            .output()
            .unwrap();
        if out.status.success() {
            eprintln!("ping {guest_addr}: ok");
            break;
        }
        assert!(
            pinged.elapsed() < Duration::from_secs(60),
            "the guest does not answer ping on {guest_addr}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // vsock: did the guest reach the agent?
    if vhost.is_some() {
        let text = fs::read_to_string(&agent_metrics).unwrap_or_default();
        let asked = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("hostos_vsock_requests"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        eprintln!("vsock: the guest sent {asked} request(s) to the HostOS agent");
        if std::env::var_os("ICOS_EXPECT_GUEST_VSOCK").is_some_and(|v| v == "1") {
            assert!(
                asked >= 1,
                "the guest never reached the HostOS agent:\n{text}"
            );
        } else if asked == 0 {
            eprintln!(
                "vsock round trip not required: set ICOS_EXPECT_GUEST_VSOCK=1 once the GuestOS \
                 image calls get-hostos-version at boot"
            );
        }
    }

    // A VM that stops is restarted, and boots again.
    let qemu: Vec<i32> = processes_mentioning(&work.display().to_string())
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("qemu-system"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(qemu.len(), 1, "one QEMU runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = Instant::now();
    let again = loop {
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        if metric(&text, "guestos_vm_boots_total{result=\"success\"}") == Some(2.0) {
            break text;
        }
        if let Some(status) = runner.0.try_wait().unwrap() {
            panic!("the runner exited after the VM was killed: {status}");
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(420),
            "the killed VM was not restarted and booted within 7 minutes:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(metric(&again, "guestos_vm_starts_total"), Some(2.0));
    assert_eq!(metric(&again, "guestos_vm_restarts_total"), Some(1.0));
    eprintln!(
        "BENCH guestos_vm_restart_to_marker_seconds {:.1}",
        metric(&again, "guestos_vm_boot_duration_seconds").unwrap()
    );

    // SIGTERM: ACPI shutdown, exit 0, nothing left. The grace is 90 s, so
    // stopping well within it means the guest powered itself off (logind
    // handles the power button) rather than being destroyed.
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = runner.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(80),
            "the guest did not power off within 80 s of SIGTERM (ACPI power button ignored?)"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0), "runner exit status {status}");
    let text = fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "guestos_vm_state{state=\"done\"}"),
        Some(1.0),
        "{text}"
    );
    // The agent is the test's own; everything the runner started is gone.
    drop(agent);
    let left = processes_mentioning(&work.display().to_string());
    assert!(left.is_empty(), "left running: {left:?}");
}
