//! HostOS upgrades itself when the registry says so, nested in QEMU.
//!
//! The machine is HostOS `h1` with GuestOS `g1` inside, as SetupOS leaves
//! it (see `common/hostos.rs`), booted once under TCG with `-cpu max,la57=off`
//! (GuestOS runs nested under KVM) on QEMU's user network, which carries the
//! node's /64 with QEMU at the gateway address; QEMU restarts the machine
//! when HostOS reboots. The registry (`icos registry init`, governance
//! votes) and the release server listen on this machine and are reached at
//! the gateway address: GuestOS's orchestrator takes the registry from its
//! NNS URL, HostOS's agent downloads from the release URL.
//!
//! The registry has the node operator of `examples/` (its secp256k1 key,
//! as `dfx` makes them) with an allowance of one node, unassigned nodes on
//! `g1`, and HostOS `h2` elected; the registry service admits joins. The
//! HostOS config carries the operator key. With nothing done on the
//! machine but one governance proposal:
//!
//! 1. HostOS `h1` boots from slot A, with its address on `br6`;
//! 2. GuestOS boots, generates its node key and joins: its orchestrator's
//!    request, signed by the operator key, is admitted without a vote
//!    ("Join request successful!"), for GuestOS's deterministic address;
//! 3. governance deploys `h2` to the new node; the orchestrator sees that
//!    HostOS runs `h1` where the registry says `h2`, and asks HostOS over
//!    vsock to upgrade (URL and SHA-256);
//! 4. HostOS's agent downloads and checks the package, answers, installs it
//!    into its B volumes, commits and reboots;
//! 5. HostOS `h2` boots from slot B (`failsafe_check`), starts GuestOS
//!    again, and confirms its boot once GuestOS has reached the agent;
//!    GuestOS's orchestrator then finds HostOS at the registry's version;
//! 6. offline, HostOS's grubenv says `B stable`.
//!
//! Prints `BENCH` lines for each phase. Needs root and the host tools of
//! `scripts/prereqs.sh`; `scripts/stress.sh` runs it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::fs;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hostos::{
    GATEWAY, GUEST, build_image, ends_on_stalls, hostos_config, hostos_vm,
    install_guest_and_config, node_ipv6, require_nested_tools,
};
use common::registry::{Gov, serve_files, serve_registry};
use common::{Children, build_release, fresh_dir, source_root};
use icos_deterministic_ips::NodeType;
use icos_layout::OsKind;
use icos_qemu::{Outcome, Runner, Watch};

/// Each step (a boot, the upgrade) must be done by then.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);

/// A field `name=` of a marker line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
#[ignore = "stress VM test (three image builds; HostOS and nested GuestOS booted twice under TCG, about 20 minutes): scripts/stress.sh runs it"]
fn hostos_upgrades_itself_when_the_registry_says_so_and_confirms_once_guestos_runs() {
    require_nested_tools();
    let (dir, _lock) = fresh_dir("hostos_upgrade");
    let mut children = Children(Vec::new());

    // 1. The registry, whose trust root GuestOS carries; the images.
    let gov = Gov::init(&dir);
    let root = gov.root();
    let (guest_disk, guest_version) = build_image(
        "guestos",
        &[
            "--env",
            "dev",
            "--version",
            "g1",
            "--registry-root",
            root.to_str().unwrap(),
        ],
        &dir.join("out-g1"),
        &dir.join("guestos"),
    );
    assert_eq!(guest_version, "g1");
    let (host_disk, host_version) = build_image(
        "hostos",
        &["--version", "h1"],
        &dir.join("out-h1"),
        &dir.join("hostos"),
    );
    assert_eq!(host_version, "h1");
    let h2 = build_release("hostos", &["--version", "h2"], &dir.join("out-h2"));

    // 2. The release server and the registry, on this machine; the guest
    // and HostOS reach them at the gateway address.
    let releases = dir.join("releases");
    fs::create_dir_all(&releases).unwrap();
    fs::copy(
        h2.join("update-img.tar.zst"),
        releases.join("hostos-h2.tar.zst"),
    )
    .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let file_port = serve_files(
        releases.clone(),
        requests.clone(),
        Arc::new(AtomicU64::new(0)),
        "[::]:0",
    );
    let registry_port = serve_registry(&mut children, &gov.repo, "[::]:0", true);
    let base = |port: u16| format!("http://[{GATEWAY}]:{port}");

    // 3. The node operator of examples/ (its secp256k1 key, as dfx makes
    // them), allowed one node; unassigned nodes run g1; HostOS h2 elected.
    let operator_key = source_root().join("examples/node_operator_private_key.pem");
    gov.pass(&[
        "add-node-operator",
        "--key",
        operator_key.to_str().unwrap(),
        "--allowance",
        "1",
    ]);
    gov.pass(&[
        "elect-guestos-version",
        "--version-id",
        "g1",
        "--url",
        &format!("{}/guestos-g1.tar.zst", base(file_port)),
        "--sha256sums",
        dir.join("out-g1/guestos/SHA256SUMS").to_str().unwrap(),
    ]);
    gov.pass(&["deploy-guestos-to-unassigned-nodes", "--version-id", "g1"]);
    gov.pass(&[
        "elect-hostos-version",
        "--version-id",
        "h2",
        "--url",
        &format!("{}/hostos-h2.tar.zst", base(file_port)),
        "--sha256sums",
        h2.join("SHA256SUMS").to_str().unwrap(),
    ]);

    // 4. The machine, as SetupOS leaves it, with the registry as NNS and
    // the operator key: GuestOS makes its node key and joins.
    let config = hostos_config(&dir, &[format!("{}/", base(registry_port))], true);
    install_guest_and_config(
        &dir,
        &host_disk,
        &guest_disk,
        &config,
        &[("node_operator_private_key.pem", &operator_key)],
    );
    let log = dir.join("hostos.serial.log");
    let mut vm = hostos_vm(&dir, &host_disk, &log);
    // HostOS's reboot restarts the machine, as on real hardware.
    vm.no_reboot = false;

    let started = Instant::now();
    let mut running = Runner::default().reaping().spawn(&vm).unwrap();
    let lines: RefCell<Vec<(Duration, String)>> = RefCell::new(Vec::new());
    let step =
        |what: &str, watch: Watch, running: &mut icos_qemu::RunningVm| -> (Duration, String) {
            let outcome = running
                .wait_for_marker(&watch, |line| {
                    let t = started.elapsed();
                    let interesting = [
                        "HOSTOS BOOT",
                        "GUESTOS BOOT",
                        "upgrade",
                        "chosen",
                        "confirm",
                        "HostOS runs",
                        "GuestOS VM launched",
                        "Join request",
                    ];
                    if interesting.iter().any(|k| line.contains(k)) {
                        eprintln!("[{:6.1} s] {}", t.as_secs_f64(), line.trim());
                    }
                    lines.borrow_mut().push((t, line.to_owned()));
                })
                .unwrap();
            match outcome {
                Outcome::Success { line, .. } => (started.elapsed(), line),
                other => {
                    let serial = fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = serial.lines().rev().take(150).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!("{what}: {other:?}\n{}", tail.join("\n"));
                }
            }
        };
    let boot_watch = |needle: &str| {
        ends_on_stalls(
            Watch::new(STEP_TIMEOUT)
                .success(needle.to_owned())
                .failure("HOSTOS BOOT FAILURE")
                .failure(format!("{GUEST}GUESTOS BOOT FAILURE")),
        )
    };

    // h1 boots from A, GuestOS in it.
    let (t_h1, marker) = step("HostOS h1", boot_watch("HOSTOS BOOT SUCCESS"), &mut running);
    assert_eq!(field(&marker, "version="), "h1", "{marker}");
    assert_eq!(field(&marker, "dfinity.system="), "A", "{marker}");
    assert!(marker.contains("failed_units=[]"), "{marker}");
    let hostos_ipv6 = node_ipv6(NodeType::HostOS);
    assert_eq!(
        field(&marker, "br6="),
        format!("{hostos_ipv6}/64"),
        "{marker}"
    );
    assert!(marker.contains("other_ipv6=[]"), "{marker}");
    let (t_g1, _) = step(
        "GuestOS under h1",
        boot_watch(&format!("{GUEST}GUESTOS BOOT SUCCESS")),
        &mut running,
    );

    // The node joined on its own (operator-signed request, no vote),
    // before or after its marker; governance then deploys h2 to it.
    const JOINED: &str = "Join request successful!";
    let seen = lines
        .borrow()
        .iter()
        .find(|(_, l)| l.contains(JOINED))
        .map(|(t, _)| *t);
    let t_joined = match seen {
        Some(t) => t,
        None => step("the node's join", boot_watch(JOINED), &mut running).0,
    };
    let node = gov.only_id("nodes");
    let shown = gov.show();
    assert_eq!(
        shown["registry"]["nodes"][&node]["ipv6"],
        node_ipv6(NodeType::GuestOS).to_string(),
        "{shown}"
    );
    gov.pass(&[
        "deploy-hostos-to-nodes",
        "--node",
        &node,
        "--version-id",
        "h2",
    ]);

    // The guest asks; HostOS downloads, checks, installs, commits, reboots.
    let upgrade_watch = ends_on_stalls(
        Watch::new(STEP_TIMEOUT)
            .success("committed to slot B")
            .failure("upgrade refused: boot state")
            .failure("install failed")
            .failure("HOSTOS BOOT SUCCESS"),
    );
    let (t_committed, line) = step("the HostOS upgrade", upgrade_watch, &mut running);
    assert!(line.contains("HostOS h2 committed to slot B"), "{line}");

    // h2 boots from B, GuestOS again, then the boot is confirmed.
    let (t_h2, marker) = step("HostOS h2", boot_watch("HOSTOS BOOT SUCCESS"), &mut running);
    assert_eq!(field(&marker, "version="), "h2", "{marker}");
    assert_eq!(field(&marker, "dfinity.system="), "B", "{marker}");
    assert!(marker.contains("failed_units=[]"), "{marker}");
    assert_eq!(
        field(&marker, "br6="),
        format!("{hostos_ipv6}/64"),
        "{marker}"
    );
    assert!(marker.contains("other_ipv6=[]"), "{marker}");
    let (t_confirmed, line) = step(
        "the confirmation of h2",
        boot_watch("-> boot_alternative=B boot_cycle=stable (slot B)"),
        &mut running,
    );
    eprintln!("{}", line.trim());
    let (t_follows, _) = step(
        "GuestOS seeing HostOS at the registry's version",
        boot_watch("HostOS runs h2, as the registry asks"),
        &mut running,
    );
    let _ = running.kill();

    // What happened, in order, and the downloads the release server saw.
    let lines = lines.into_inner();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let at = |needle: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", text.join("\n")))
    };
    let asked = at("asking HostOS to upgrade");
    let answered = at("upgrade: installing HostOS h2; answering Ok");
    let served = requests.lock().unwrap().clone();
    assert!(
        served.iter().any(|r| r.contains("GET /hostos-h2.tar.zst")),
        "{served:?}"
    );

    // Offline: HostOS's grubenv says B, stable.
    let (grub_off, _) = OsKind::HostOs.layout().byte_range("grub").unwrap();
    let tools = icos_imagefs::Tools::discover().unwrap();
    let env = icos_imagefs::read_file_from_vfat(&tools, &host_disk, grub_off, "grubenv").unwrap();
    let env = icos_grubenv::parse(&env).unwrap();
    assert_eq!(env.get("boot_alternative"), Some("B"));
    assert_eq!(env.get("boot_cycle"), Some("stable"));

    let s = |d: Duration| d.as_secs_f64();
    eprintln!(
        "BENCH hostos_upgrade h1_marker_s={:.1} guestos_marker_s={:.1} joined_s={:.1} asked_s={:.1} \
         download_and_check_s={:.1} install_and_commit_s={:.1} reboot_to_h2_marker_s={:.1} \
         h2_marker_to_confirmed_s={:.1} confirmed_to_guest_follows_s={:.1} total_s={:.1}",
        s(t_h1),
        s(t_g1),
        s(t_joined),
        s(asked),
        s(answered.saturating_sub(asked)),
        s(t_committed.saturating_sub(answered)),
        s(t_h2.saturating_sub(t_committed)),
        s(t_confirmed.saturating_sub(t_h2)),
        s(t_follows.saturating_sub(t_confirmed)),
        s(t_follows)
    );
    drop(children);
    fs::remove_dir_all(&dir).unwrap();
}
