//! HostOS runs GuestOS, nested: build HostOS and GuestOS (the normal icos
//! cache makes repeated builds cheap), put the GuestOS disk into a copy of
//! the HostOS disk's `hostlvm/guestos` volume and a HostOS config into its
//! `config` volume, as SetupOS would, and boot that HostOS under TCG with
//! `-cpu max,la57=off`. Its `guestos.service` runs `icos-guestos-vm`, which starts
//! GuestOS as a nested VM under KVM (the CPU model exposes SVM/VMX to
//! HostOS) with real vhost-vsock.
//!
//! The config comes from `icos node derive` on `examples/`, with small dev
//! VM resources (2 GiB, `NESTED_GUEST_VCPUS`, `kvm`) and `verbose=true`, so the runner
//! copies every GuestOS console line into its log as
//! `guestos_console: LINE`; the unit sends that log to the HostOS console,
//! the serial port this test reads. It checks:
//!
//! - HostOS boots (`HOSTOS BOOT SUCCESS`) with its deterministic IPv6
//!   address on `br6`, on the NIC that reached the gateway (QEMU's user
//!   network with the node's /64, QEMU at the configured gateway address);
//! - the runner's KVM probe chose
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
//! Nested KVM inside a TCG guest now and then stalls a kernel (see
//! `NESTED_STALLS`); when such a line appears, the test says so and boots
//! the same disk again, up to three boots in all. Any other failure, or a
//! stall on every boot, fails the test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::hostos::{
    GUEST, build_image, ends_on_stalls, hostos_config, hostos_vm, install_guest_and_config,
    is_stall, node_ipv6, require_nested_tools,
};
use icos_deterministic_ips::NodeType;
use icos_qemu::{Outcome, Runner, Watch};

/// The whole boot, HostOS and nested GuestOS, must be done by then.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

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
    require_nested_tools();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostos_nested");
    let lock = File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();

    // Both images; the HostOS disk extracted here is this test's own copy.
    let (host_disk, host_version) =
        build_image("hostos", &[], &dir.join("out"), &dir.join("hostos"));
    let (guest_disk, guest_version) = build_image(
        "guestos",
        &["--env", "dev"],
        &dir.join("out"),
        &dir.join("guestos"),
    );
    let config = hostos_config(&dir, &[], true);
    install_guest_and_config(&dir, &host_disk, &guest_disk, &config, &[]);

    // HostOS under TCG, -cpu max,la57=off (SVM/VMX for the nested KVM), on the
    // node's network (examples/config.ini: 2001:db8:1234:56::/64, the
    // gateway ::1) with QEMU as the gateway: HostOS pings it to pick its
    // NIC and puts its deterministic address on br6.
    let log = dir.join("hostos.serial.log");
    let vm = hostos_vm(&dir, &host_disk, &log);
    let watch = ends_on_stalls(
        Watch::new(BOOT_TIMEOUT)
            .success(format!("{GUEST}GUESTOS BOOT SUCCESS"))
            .failure(format!("{GUEST}GUESTOS BOOT FAILURE"))
            .failure("HOSTOS BOOT FAILURE"),
    );
    // Nested KVM inside a TCG guest now and then stalls a kernel or
    // freezes GuestOS without a word (`NESTED_STALLS`), and nothing moves
    // any more. Such a stall, and only that, gets another boot of the same
    // disk, up to three in all.
    let mut attempt = 1;
    let (mut running, outcome, started, mut seen) = loop {
        let started = Instant::now();
        let mut seen = Seen::default();
        let mut running = Runner::default().reaping().spawn(&vm).unwrap();
        let outcome = running
            .wait_for_marker(&watch, |line| observe(&mut seen, started, line))
            .unwrap();
        if let Outcome::Failure { line, .. } = &outcome
            && is_stall(line)
            && attempt < 3
        {
            eprintln!(
                "nested KVM stalled ({}); booting HostOS once more",
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
    // HostOS's deterministic address on br6 (mgmt MAC and environment of
    // examples/deployment.json), and its NIC chosen by a gateway answer.
    let hostos_ipv6 = node_ipv6(NodeType::HostOS);
    assert!(
        hostos_line.contains(&format!("br6={hostos_ipv6}/64")),
        "HostOS's br6 should carry {hostos_ipv6}/64: {hostos_line}"
    );
    assert!(
        hostos_line.contains("other_ipv6=[]"),
        "only br6 may carry a global IPv6 address: {hostos_line}"
    );
    assert!(
        serial.contains("chosen: it reached the gateway"),
        "HostOS chose its NIC without a gateway answer\n{serial}"
    );

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
