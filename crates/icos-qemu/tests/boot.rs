//! Real boots under TCG: a Debian kernel with a busybox initramfs built by
//! the test (see `support/`), direct-booted; plus OVMF with the GuestOS
//! device set. One QEMU at a time; every test checks that no QEMU it
//! started is left running.
//!
//! Prerequisites (the tests fail naming the package when one is missing):
//! `qemu-system-x86` + `ovmf` (bookworm-backports), `busybox-static`, and
//! an apt source with `linux-image-*-cloud-amd64` (downloaded once, cached
//! under `target/tmp/icos-qemu-fixture/`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use icos_qemu::*;
use support::{fixture, one_vm_at_a_time, process_exists, processes_mentioning};

/// Generous: a busybox boot takes about 5–10 s under TCG, slower when the
/// machine is busy.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The direct-boot test VM in `mode` (see `INIT` in `support/`).
fn test_vm(dir: &Path, mode: &str) -> VmConfig {
    let f = fixture();
    let mut vm = VmConfig::new(Accel::Tcg, 256, 2);
    vm.name = Some(format!("icos-qemu-test-{mode}"));
    vm.kernel = Some(DirectKernel {
        kernel: f.kernel.clone(),
        initrd: Some(f.initrd.clone()),
        cmdline: format!("console=ttyS0 panic=-1 quiet icos_test={mode}"),
    });
    vm.serial = Some(Console::file(dir.join("serial.log")));
    vm.rng = true;
    vm
}

fn runner() -> Runner {
    Runner::new(&fixture().qemu)
}

fn assert_no_qemu_left(dir: &Path) {
    let token = dir.to_str().unwrap();
    let left = processes_mentioning(token);
    assert!(left.is_empty(), "QEMU processes left running: {left:?}");
}

#[test]
fn boots_to_the_success_marker() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let outcome = runner()
        .run(
            &test_vm(dir.path(), "success"),
            &Watch::guestos_boot().timeout(BOOT_TIMEOUT),
            |l| {
                eprintln!("serial: {l}");
                seen.push(l.to_owned());
            },
        )
        .unwrap();
    let Outcome::Success {
        line,
        elapsed,
        lines,
    } = &outcome
    else {
        panic!("expected success, got {outcome:?}");
    };
    eprintln!("success after {elapsed:?}, {lines} lines");
    assert!(line.contains(GUESTOS_BOOT_SUCCESS));
    assert_eq!(*lines, seen.len());
    assert!(
        seen.iter()
            .any(|l| l.contains("ICOS-TEST init mode=success"))
    );
    assert_no_qemu_left(dir.path());
}

#[test]
fn detects_the_failure_marker_and_kills_qemu() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let outcome = runner()
        .run(
            &test_vm(dir.path(), "failure"),
            &Watch::guestos_boot().timeout(BOOT_TIMEOUT),
            |l| eprintln!("serial: {l}"),
        )
        .unwrap();
    let Outcome::Failure {
        line,
        tail,
        elapsed,
    } = &outcome
    else {
        panic!("expected failure, got {outcome:?}");
    };
    eprintln!("failure after {elapsed:?}");
    assert!(line.contains("GUESTOS BOOT FAILURE: icos test guest"));
    assert_eq!(tail.last(), Some(line));
    assert!(
        tail.iter()
            .any(|l| l.contains("ICOS-TEST init mode=failure"))
    );
    // The guest keeps running after the marker; the runner killed it.
    assert_no_qemu_left(dir.path());
}

#[test]
fn timeout_kills_qemu_and_its_group() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let runner = runner();
    let mut vm = runner.spawn(&test_vm(dir.path(), "hang")).unwrap();
    let pid = vm.pid();
    let start = Instant::now();
    let outcome = vm
        .wait_for_marker(
            &Watch::guestos_boot().timeout(Duration::from_secs(3)),
            |_| {},
        )
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Timeout { elapsed, .. } if elapsed >= Duration::from_secs(3)),
        "{outcome:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(process_exists(pid), "QEMU still runs after a timeout");
    let status = vm.kill().unwrap();
    eprintln!("QEMU after timeout: {status}");
    assert!(!process_exists(pid), "pid {pid} still exists after kill");
    assert_no_qemu_left(dir.path());

    // Runner::run kills on timeout too.
    let outcome = runner
        .run(
            &test_vm(dir.path(), "hang"),
            &Watch::guestos_boot().timeout(Duration::from_secs(2)),
            |_| {},
        )
        .unwrap();
    assert!(matches!(outcome, Outcome::Timeout { .. }), "{outcome:?}");
    assert_no_qemu_left(dir.path());
}

#[test]
fn qmp_powerdown_powers_the_guest_off() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_vm(dir.path(), "powerdown");
    config.qmp_socket = Some(dir.path().join("qmp.sock"));
    let mut vm = runner().spawn(&config).unwrap();
    let ready = vm
        .wait_for_marker(
            &Watch::new(BOOT_TIMEOUT).success("ICOS-TEST waiting for the power button"),
            |l| eprintln!("serial: {l}"),
        )
        .unwrap();
    let Outcome::Success { line, .. } = &ready else {
        panic!("guest never got ready: {ready:?}");
    };
    assert!(
        !line.ends_with(" 0 devices"),
        "no power button device: {line}"
    );

    let mut qmp = vm.qmp().unwrap();
    let status = qmp.query_status().unwrap();
    assert!(status.running, "{status:?}");
    assert_eq!(status.status, "running");
    drop(qmp);

    let mut after = Vec::new();
    let shutdown = vm
        .shutdown(Duration::from_secs(30), |l| {
            eprintln!("serial: {l}");
            after.push(l.to_owned());
        })
        .unwrap();
    let Shutdown::PoweredOff { status, elapsed } = &shutdown else {
        panic!("expected a graceful power-off, got {shutdown:?}");
    };
    eprintln!("powered off after {elapsed:?}: {status}");
    assert!(status.success(), "{status}");
    assert!(
        after
            .iter()
            .any(|l| l.contains("ICOS-TEST power button pressed"))
    );
    assert_no_qemu_left(dir.path());
}

#[test]
fn powerdown_ignored_means_killed_after_grace() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_vm(dir.path(), "hang");
    config.qmp_socket = Some(dir.path().join("qmp.sock"));
    let mut vm = runner().spawn(&config).unwrap();
    let pid = vm.pid();
    // Pressed while the kernel is still early in its boot: nobody handles it.
    let shutdown = vm.shutdown(Duration::from_secs(2), |_| {}).unwrap();
    assert!(
        matches!(
            shutdown,
            Shutdown::Killed {
                qmp_error: None,
                ..
            }
        ),
        "{shutdown:?}"
    );
    assert!(!process_exists(pid));
    assert_no_qemu_left(dir.path());
}

#[test]
fn qemu_errors_are_reported_as_exited() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_vm(dir.path(), "success");
    config.extra_args = vec!["-device".into(), "icos-no-such-device".into()];
    let outcome = runner()
        .run(
            &config,
            &Watch::guestos_boot().timeout(BOOT_TIMEOUT),
            |_| {},
        )
        .unwrap();
    let Outcome::Exited {
        status,
        qemu_output,
        ..
    } = &outcome
    else {
        panic!("expected exited, got {outcome:?}");
    };
    assert!(!status.success());
    assert!(qemu_output.contains("icos-no-such-device"), "{qemu_output}");
    assert_no_qemu_left(dir.path());
}

#[test]
fn a_missing_qemu_binary_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let e = Runner::new("/nonexistent/qemu-system-x86_64")
        .spawn(&test_vm(dir.path(), "success"))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/qemu-system-x86_64"), "{msg}");
    assert!(msg.contains("qemu-system-x86"), "{msg}");
}

#[test]
fn dropping_during_a_panic_kills_qemu() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = test_vm(dir.path(), "hang");
    let mut pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let vm = runner().spawn(&config).unwrap();
        pid = vm.pid();
        std::thread::sleep(Duration::from_millis(300));
        panic!("test panic while QEMU runs");
    }));
    assert!(result.is_err());
    assert_ne!(pid, 0);
    assert!(!process_exists(pid), "QEMU {pid} survived the panic");
    assert_no_qemu_left(dir.path());
}

#[test]
fn boot_probe_under_tcg_reaches_the_kernel_marker() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let outcome = boot_probe(
        &runner(),
        &fixture().kernel,
        Accel::Tcg,
        Duration::from_secs(45),
        dir.path(),
    )
    .unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    eprintln!("TCG boot probe: {:?}", outcome.elapsed());
    assert_no_qemu_left(dir.path());
}

/// Forces the boot probe with KVM by pretending the CPU has `svm`. On a
/// host whose `/dev/kvm` is paravirtual (PVM) the stock kernel cannot boot,
/// so the answer must be TCG; on a host with hardware KVM it is KVM.
#[test]
fn probe_boots_a_real_kernel_before_choosing_kvm() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cpuinfo = dir.path().join("cpuinfo");
    std::fs::write(&cpuinfo, "flags\t\t: fpu svm\n").unwrap();
    let real_virt = has_virt_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap());
    let mut opts = ProbeOptions::new(&fixture().qemu, dir.path().join("cache"));
    opts.cpuinfo = cpuinfo;
    opts.kernel = Some(fixture().kernel.clone());
    opts.timeout = Duration::from_secs(8);
    let start = Instant::now();
    let probe = probe_accel(&opts).unwrap();
    eprintln!("forced probe: {probe:?} in {:?}", start.elapsed());
    if !Path::new("/dev/kvm").exists() {
        assert_eq!(probe.accel, Accel::Tcg);
        assert!(probe.reason.contains("does not exist"), "{}", probe.reason);
    } else if !real_virt {
        assert_eq!(probe.accel, Accel::Tcg, "{}", probe.reason);
        assert!(
            probe.reason.contains("did not boot under KVM"),
            "{}",
            probe.reason
        );
    }
    assert!(!probe.cached);
    assert!(probe_accel(&opts).unwrap().cached);
    assert_no_qemu_left(dir.path());
}

#[test]
fn probe_on_this_host() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ProbeOptions::new(&fixture().qemu, dir.path());
    opts.kernel = Some(fixture().kernel.clone());
    let probe = probe_accel(&opts).unwrap();
    eprintln!("this host: {probe:?}");
    let again = probe_accel(&opts).unwrap();
    assert!(again.cached);
    assert_eq!(again.accel, probe.accel);
    assert_no_qemu_left(dir.path());
}

/// The `icos run guestos` device set under OVMF: the firmware starts,
/// enumerates the removable CONFIG disk by its serial and tries to boot it.
#[test]
fn ovmf_sees_the_guestos_device_set() {
    let _one = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ovmf = Ovmf::find().unwrap();
    let mut vm = VmConfig::new(Accel::Tcg, 1024, 2);
    vm.firmware = Firmware::Uefi(ovmf.prepare(dir.path().join("vars.fd")).unwrap());
    for (name, size) in [("guestos.img", 1 << 20), ("config.img", 1 << 20)] {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.set_len(size).unwrap();
    }
    vm.disks.push(
        Disk::virtio(dir.path().join("guestos.img"))
            .with_serial("guestos")
            .with_cache(CacheMode::Unsafe)
            .with_discard(Discard::Unmap)
            .with_boot_index(2),
    );
    vm.disks.push(
        Disk::usb_removable(dir.path().join("config.img"))
            .read_only()
            .with_serial("config")
            .with_boot_index(1),
    );
    vm.nics.push(Nic {
        mac: None,
        backend: NetBackend::User(UserNet::default()),
    });
    vm.serial = Some(Console::file(dir.path().join("serial.log")));
    vm.qmp_socket = Some(dir.path().join("qmp.sock"));
    vm.rng = true;
    let outcome = runner()
        .run(
            &vm,
            &Watch::new(BOOT_TIMEOUT).success("USB HARDDRIVE config"),
            |l| eprintln!("serial: {l}"),
        )
        .unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    eprintln!("OVMF reached the CONFIG disk after {:?}", outcome.elapsed());
    assert_no_qemu_left(dir.path());
}
