//! HostOS runs GuestOS, nested: build HostOS and GuestOS (the normal icos
//! cache makes repeated builds cheap), put the GuestOS disk into a copy of
//! the HostOS disk's `hostlvm/guestos` volume and a HostOS config into its
//! `config` volume, as SetupOS would, and boot that HostOS under TCG with
//! `-cpu max`. Its `guestos.service` runs `icos-guestos-vm`, which starts
//! GuestOS as a nested VM under KVM (the CPU model exposes SVM/VMX to
//! HostOS) with real vhost-vsock.
//!
//! The config comes from `icos node derive` on `examples/`, with small dev
//! VM resources (2 GiB, 2 vCPUs, `kvm`) and `verbose=true`, so the runner
//! copies every GuestOS console line into its log as
//! `guestos_console: LINE`; the unit sends that log to the HostOS console,
//! the serial port this test reads. It checks:
//!
//! - HostOS boots (`HOSTOS BOOT SUCCESS`), the runner's KVM probe chose
//!   KVM, and the GuestOS VM was launched;
//! - GuestOS prints `GUESTOS BOOT SUCCESS` (seen through HostOS);
//! - GuestOS asked HostOS for its version over vsock and got the HostOS
//!   version (GuestOS prints the answer; the HostOS agent logs the request
//!   from CID 3).
//!
//! Prints `BENCH` lines: HostOS start to "GuestOS VM launched", GuestOS
//! start to its marker, and the resident memory of the HostOS agent and the
//! runner (from the HostOS marker line). Everything lives in
//! `$CARGO_TARGET_TMPDIR/hostos_nested/` (replaced at the start of each run).
//! Needs root and the host tools of `scripts/prereqs.sh`; a missing tool is
//! a failure, not a skip.
//!
//! Nested KVM inside a TCG guest now and then stalls HostOS's kernel (its
//! soft-lockup watchdog fires, nothing moves); when that message appears,
//! the test says so and boots the same disk once more. Any other failure,
//! or a second stall, fails the test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require, run_ok, source_root};
use icos_build::hostos::HOSTOS_CONFIG_FS_UUID;
use icos_imagefs::{Ext4Source, Ext4Spec, Tools};
use icos_layout::OsKind;
use icos_qemu::{Accel, Console, Disk, Firmware, Outcome, Ovmf, Runner, VmConfig, Watch};

/// The prefix the runner gives GuestOS console lines in its log.
const GUEST: &str = "guestos_console: ";
/// L1 (HostOS) memory: the 2 GiB guest, plus HostOS and its tmpfs /var.
const HOSTOS_MEMORY_MIB: u64 = 5120;
/// What HostOS's kernel prints when nested KVM under TCG stalls a CPU.
const SOFT_LOCKUP: &str = "watchdog: BUG: soft lockup";
/// The whole boot, HostOS and nested GuestOS, must be done by then.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

/// `icos build KIND` into `out`, then the disk extracted into `dest`.
fn build(kind: &str, extra: &[&str], out: &Path, dest: &Path) -> (PathBuf, String) {
    let started = Instant::now();
    let status = icos()
        .args(["build", kind])
        .args(extra)
        .arg("--source")
        .arg(source_root())
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "icos build {kind} failed: {status}");
    eprintln!("built {kind} in {:.1} s", started.elapsed().as_secs_f64());
    let art = out.join(kind);
    fs::create_dir_all(dest).unwrap();
    let entries = icos_sparse_tar::extract(
        File::open(art.join("disk-img.tar.zst")).unwrap(),
        dest,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(entries.len(), 1, "{kind}: one disk in disk-img.tar.zst");
    let version = fs::read_to_string(art.join("VERSION.TXT"))
        .unwrap()
        .trim()
        .to_owned();
    (dest.join(&entries[0].name), version)
}

/// The HostOS config SetupOS would write: `icos node derive` on the
/// examples, with dev VM resources small enough for a nested guest and
/// `verbose=true` (the GuestOS console on the HostOS console).
fn hostos_config(dir: &Path) -> PathBuf {
    let ex = source_root().join("examples");
    let ini = fs::read_to_string(ex.join("config.ini")).unwrap();
    assert!(
        ini.contains("\nverbose=false"),
        "examples/config.ini changed"
    );
    fs::write(
        dir.join("config.ini"),
        ini.replace("\nverbose=false", "\nverbose=true"),
    )
    .unwrap();
    let mut deployment: serde_json::Value =
        serde_json::from_slice(&fs::read(ex.join("deployment.json")).unwrap()).unwrap();
    deployment["dev_vm_resources"] = serde_json::json!({
        "memory": "2",
        "cpu": "kvm",
        "nr_of_vcpus": 2
    });
    fs::write(
        dir.join("deployment.json"),
        serde_json::to_vec_pretty(&deployment).unwrap(),
    )
    .unwrap();
    let out = dir.join("derived");
    run_ok(
        icos()
            .args(["node", "derive", "--config-ini"])
            .arg(dir.join("config.ini"))
            .arg("--deployment-json")
            .arg(dir.join("deployment.json"))
            .arg("--ssh-keys")
            .arg(ex.join("ssh_authorized_keys"))
            .arg("--node-operator-key")
            .arg(ex.join("node_operator_private_key.pem"))
            .arg("--out-dir")
            .arg(&out),
    );
    let path = out.join("hostos.json");
    let config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let settings = &config["hostos_settings"];
    assert_eq!(settings["verbose"], true, "{settings}");
    assert_eq!(
        settings["hostos_dev_settings"],
        serde_json::json!({"vm_memory": 2, "vm_cpu": "kvm", "vm_nr_of_vcpus": 2}),
        "{settings}"
    );
    run_ok(icos().args(["config", "check"]).arg(&path));
    path
}

/// Copies `src` into `dst` at `offset` through Write + Seek.
fn write_at(dst: &Path, offset: u64, src: &Path) {
    let mut out = OpenOptions::new().write(true).open(dst).unwrap();
    out.seek(SeekFrom::Start(offset)).unwrap();
    std::io::copy(&mut File::open(src).unwrap(), &mut out).unwrap();
    out.flush().unwrap();
}

/// What the test saw on the HostOS console, with the time since QEMU start.
#[derive(Default)]
struct Seen {
    hostos_marker: Option<(Duration, String)>,
    probe: Option<String>,
    launched: Option<Duration>,
    guest_lines: usize,
    vsock_reply: Option<String>,
    agent_request: Option<String>,
}

#[test]
fn hostos_boots_guestos_nested_with_vsock() {
    for (tool, package) in [
        ("sfdisk", "fdisk"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("veritysetup", "cryptsetup-bin"),
        ("mmdebstrap", "mmdebstrap"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("zstd", "zstd"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        require(tool, package);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostos_nested");
    let lock = File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();

    // Both images; the HostOS disk extracted here is this test's own copy.
    let (host_disk, host_version) = build("hostos", &[], &dir.join("out"), &dir.join("hostos"));
    let (guest_disk, guest_version) = build(
        "guestos",
        &["--env", "dev"],
        &dir.join("out"),
        &dir.join("guestos"),
    );
    let layout = OsKind::HostOs.layout();
    let (pv_offset, _) = layout.byte_range("hostlvm").unwrap();
    let pv = icos_lvm::read_pv_file(&host_disk, pv_offset).unwrap();

    // GuestOS into hostlvm/guestos (empty in the published image), sparse.
    let (lv_off, lv_len) = pv.lv_byte_range("guestos").unwrap();
    let guest_len = fs::metadata(&guest_disk).unwrap().len();
    assert!(
        guest_len <= lv_len,
        "the GuestOS disk ({guest_len} bytes) does not fit the guestos volume ({lv_len} bytes)"
    );
    let host = OpenOptions::new().write(true).open(&host_disk).unwrap();
    let written =
        icos_imagefs::copy_sparse_at(&guest_disk, &host, &host_disk, pv_offset + lv_off).unwrap();
    drop(host);
    eprintln!(
        "GuestOS {guest_version}: {written} bytes of data written at {} (guestos volume)",
        pv_offset + lv_off
    );
    fs::remove_file(&guest_disk).unwrap();

    // The config volume: a fresh ext4 holding config.json, written over
    // the whole of the old (empty) file system.
    let config = hostos_config(&dir);
    let tree = dir.join("config-tree");
    fs::create_dir_all(&tree).unwrap();
    fs::copy(&config, tree.join("config.json")).unwrap();
    let (cfg_off, cfg_len) = pv.lv_byte_range("config").unwrap();
    let tools = Tools::discover().unwrap();
    let cfg_img = dir.join("config.ext4");
    icos_imagefs::make_ext4(
        &tools,
        &Ext4Spec {
            size_bytes: cfg_len,
            label: "config".to_owned(),
            uuid: HOSTOS_CONFIG_FS_UUID,
            hash_seed: HOSTOS_CONFIG_FS_UUID,
            epoch: 1_700_000_000,
        },
        Ext4Source::Dir(&tree),
        &cfg_img,
    )
    .unwrap();
    write_at(&host_disk, pv_offset + cfg_off, &cfg_img);
    let back =
        icos_imagefs::read_file_from_ext4(&tools, &host_disk, pv_offset + cfg_off, "/config.json")
            .unwrap();
    assert_eq!(back, fs::read(&config).unwrap());

    // HostOS under TCG, -cpu max (SVM/VMX for the nested KVM).
    let mut vm = VmConfig::new(Accel::Tcg, HOSTOS_MEMORY_MIB, 2);
    vm.firmware = Firmware::Uefi(
        Ovmf::find()
            .unwrap()
            .prepare(dir.join("hostos.vars.fd"))
            .unwrap(),
    );
    vm.disks.push(Disk::virtio(&host_disk).with_boot_index(1));
    let log = dir.join("hostos.serial.log");
    vm.serial = Some(Console::file(&log));
    let args = vm.to_args().unwrap().join(" ");
    assert!(args.contains("-cpu max"), "{args}");
    let watch = Watch::new(BOOT_TIMEOUT)
        .success(format!("{GUEST}GUESTOS BOOT SUCCESS"))
        .failure(format!("{GUEST}GUESTOS BOOT FAILURE"))
        .failure("HOSTOS BOOT FAILURE")
        .failure(SOFT_LOCKUP);
    // Nested KVM inside a TCG guest now and then stalls HostOS's kernel
    // (its soft-lockup watchdog fires and nothing moves any more). Such a
    // stall, and only that, gets one more boot of the same disk.
    let mut attempt = 1;
    let (mut running, outcome, started, mut seen) = loop {
        let started = Instant::now();
        let mut seen = Seen::default();
        let mut running = Runner::default().spawn(&vm).unwrap();
        let outcome = running
            .wait_for_marker(&watch, |line| observe(&mut seen, started, line))
            .unwrap();
        if let Outcome::Failure { line, .. } = &outcome
            && line.contains(SOFT_LOCKUP)
            && attempt == 1
        {
            eprintln!(
                "HostOS stalled under nested KVM ({}); booting it once more",
                line.trim()
            );
            let _ = running.kill();
            attempt += 1;
            continue;
        }
        break (running, outcome, started, seen);
    };
    let guest_marker = started.elapsed();
    // The agent's log line about the request may come a little later than
    // the guest's own reply line.
    if outcome.is_success() && seen.agent_request.is_none() {
        let settle = Watch::new(Duration::from_secs(30)).success("request from CID");
        let _ = running.wait_for_marker(&settle, |line| observe(&mut seen, started, line));
    }
    let _ = running.kill();
    let serial = fs::read_to_string(&log).unwrap_or_default();

    let Outcome::Success { line, .. } = &outcome else {
        panic!("no GuestOS success marker through HostOS: {outcome:?}\n{serial}");
    };
    eprintln!("{}", line.trim());
    let (hostos_up, hostos_line) = seen.hostos_marker.expect("no HOSTOS BOOT SUCCESS");
    let launched = seen
        .launched
        .unwrap_or_else(|| panic!("the runner never said `GuestOS VM launched`\n{serial}"));
    eprintln!(
        "BENCH hostos_nested hostos_marker_s={:.1} hostos_start_to_guest_launched_s={:.1} \
         guestos_start_to_marker_s={:.1} guest_console_lines={} total_s={:.1}",
        hostos_up.as_secs_f64(),
        launched.as_secs_f64(),
        (guest_marker - launched).as_secs_f64(),
        seen.guest_lines,
        guest_marker.as_secs_f64()
    );

    // Resident memory of the agent and the runner when HostOS was up (the
    // GuestOS VM launched by then).
    let field = |name: &str| -> u64 {
        hostos_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}<KiB> in {hostos_line}"))
    };
    eprintln!(
        "BENCH hostos_nested agent_rss_kib={} runner_rss_kib={}",
        field("agent_rss_kib="),
        field("runner_rss_kib=")
    );
    assert!(hostos_line.contains("failed_units=[]"), "{hostos_line}");

    let probe = seen.probe.unwrap_or_default();
    assert!(
        probe.contains("accel=kvm"),
        "the runner did not run GuestOS under KVM: {probe:?}\n{serial}"
    );
    assert!(line.contains(&format!("version={guest_version}")), "{line}");
    // The guest reached HostOS over vsock and got HostOS's version.
    let reply = seen
        .vsock_reply
        .unwrap_or_else(|| panic!("GuestOS printed no vsock get-hostos-version result\n{serial}"));
    eprintln!("{}", reply.trim());
    assert!(
        reply.contains(&format!("get-hostos-version: ok: {host_version}")),
        "{reply}"
    );
    let request = seen
        .agent_request
        .unwrap_or_else(|| panic!("the HostOS agent logged no request\n{serial}"));
    assert!(
        request.contains("request from CID 3: GetHostOSVersion"),
        "{request}"
    );

    fs::remove_dir_all(&dir).unwrap();
}

fn observe(seen: &mut Seen, started: Instant, line: &str) {
    let t = started.elapsed();
    if line.contains(GUEST) {
        seen.guest_lines += 1;
        if line.contains("GUESTOS VSOCK get-hostos-version") && seen.vsock_reply.is_none() {
            seen.vsock_reply = Some(line.to_owned());
        }
        return;
    }
    if line.contains("HOSTOS BOOT SUCCESS") && seen.hostos_marker.is_none() {
        seen.hostos_marker = Some((t, line.to_owned()));
        eprintln!("[{:6.1} s] {}", t.as_secs_f64(), line.trim());
    } else if line.contains("accelerator probe") {
        seen.probe = Some(line.to_owned());
        eprintln!("[{:6.1} s] {}", t.as_secs_f64(), line.trim());
    } else if line.contains("GuestOS VM launched") && seen.launched.is_none() {
        seen.launched = Some(t);
        eprintln!("[{:6.1} s] {}", t.as_secs_f64(), line.trim());
    } else if line.contains("request from CID") && seen.agent_request.is_none() {
        seen.agent_request = Some(line.to_owned());
        eprintln!("[{:6.1} s] {}", t.as_secs_f64(), line.trim());
    }
}
