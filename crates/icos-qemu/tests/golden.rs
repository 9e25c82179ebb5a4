//! Golden argv tests: each VM description renders to exactly the arguments
//! in `tests/golden/NAME.args` (one argument per line).
//!
//! To regenerate after an intended change, run
//! `ICOS_UPDATE_GOLDEN=1 cargo test -p icos-qemu --test golden` and review
//! the diff.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use icos_qemu::*;
use macaddr::MacAddr6;

fn check(name: &str, vm: &VmConfig) {
    let args = vm.to_args().expect("renders");
    assert_eq!(args, vm.to_args().expect("renders"), "deterministic");
    let mut text = args.join("\n");
    text.push('\n');
    assert!(
        args.iter().all(|a| !a.contains('\n')),
        "an argument contains a newline"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.args"));
    if std::env::var_os("ICOS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("writing golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with ICOS_UPDATE_GOLDEN=1 cargo test -p icos-qemu --test golden",
            path.display()
        )
    });
    if want != text {
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .map(|(i, (w, g))| format!("line {}: golden `{w}`, got `{g}`", i + 1))
            .collect();
        panic!(
            "{} differs ({} vs {} lines):\n{}\n--- got:\n{text}\nIf the change is intended, run \
             ICOS_UPDATE_GOLDEN=1 cargo test -p icos-qemu --test golden",
            path.display(),
            want.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

const RUN: &str = "/run/icos/vm";

fn p(name: &str) -> PathBuf {
    Path::new(RUN).join(name)
}

/// `icos run guestos`: a GuestOS disk under OVMF, the CONFIG media as a
/// removable USB disk, user-mode networking with forwards, a serial log,
/// QMP and virtio-rng.
fn guestos_uefi(accel: Accel) -> VmConfig {
    let mut vm = VmConfig::new(accel, 4096, 2);
    vm.name = Some("guestos".into());
    vm.firmware = Firmware::Uefi(Uefi {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: p("OVMF_VARS_4M.fd"),
    });
    vm.disks.push(
        Disk::virtio(p("guestos.img"))
            .with_serial("guestos")
            .with_cache(CacheMode::Writeback)
            .with_discard(Discard::Unmap)
            .with_boot_index(1),
    );
    vm.disks.push(
        Disk::usb_removable(p("config.img"))
            .read_only()
            .with_serial("config"),
    );
    vm.nics.push(Nic {
        mac: Some(MacAddr6::new(0x6a, 0x01, 0xe5, 0x96, 0x2d, 0x49)),
        backend: NetBackend::User(UserNet {
            restrict: true,
            host_forwards: vec![HostForward {
                protocol: Protocol::Tcp,
                host_addr: Some(Ipv4Addr::LOCALHOST),
                host_port: 18022,
                guest_addr: None,
                guest_port: 22,
            }],
            guest_forwards: vec![GuestForward {
                guest_addr: Ipv4Addr::new(10, 0, 2, 100),
                guest_port: 19090,
                host_addr: Ipv4Addr::LOCALHOST,
                host_port: 18080,
            }],
            ipv6: None,
        }),
    });
    vm.serial = Some(Console::file(p("serial.log")));
    vm.qmp_socket = Some(p("qmp.sock"));
    vm.rng = true;
    vm
}

/// HostOS's guest VM runner: OVMF plus direct kernel boot of the chosen
/// slot, the guest LV as a virtio disk (cache=none, discard=unmap), CONFIG
/// on USB, a NIC with the deterministic MAC on a tap, a pty serial console
/// logged to a file, a virtio console, vhost vsock, rng and a balloon.
fn hostos_guest(accel: Accel) -> VmConfig {
    let mut vm = VmConfig::new(accel, 16384, 16);
    vm.name = Some("guestos".into());
    vm.uuid = Some("fd897da5-8017-41c8-8575-a706dba30766".into());
    vm.firmware = Firmware::Uefi(Uefi {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: "/var/lib/libvirt/qemu/nvram/guestos_VARS.fd".into(),
    });
    vm.kernel = Some(DirectKernel {
        kernel: p("vmlinuz"),
        initrd: Some(p("initrd.img")),
        cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/vda5 console=ttyS0 dfinity.system=A quiet".into(),
    });
    vm.disks.push(
        Disk::virtio("/dev/hostlvm/guestos")
            .with_cache(CacheMode::None)
            .with_discard(Discard::Unmap),
    );
    vm.disks.push(
        Disk::usb_removable(p("config.img"))
            .read_only()
            .with_serial("config"),
    );
    vm.nics.push(Nic {
        mac: Some(MacAddr6::new(0x6a, 0x01, 0xe5, 0x96, 0x2d, 0x49)),
        backend: NetBackend::Tap {
            ifname: "vnet0".into(),
        },
    });
    vm.serial = Some(Console::logged(
        Chardev::Pty,
        "/var/log/libvirt/qemu/guestos-serial.log",
    ));
    vm.virtio_console = Some(Console {
        backend: Chardev::Pty,
        log_file: None,
    });
    vm.qmp_socket = Some(p("guestos-qmp.sock"));
    vm.vsock = Some(Vsock::Vhost { guest_cid: 3 });
    vm.rng = true;
    vm.balloon = true;
    vm
}

#[test]
fn guestos_uefi_tcg() {
    check("guestos_uefi_tcg", &guestos_uefi(Accel::Tcg));
}

#[test]
fn guestos_uefi_kvm() {
    check("guestos_uefi_kvm", &guestos_uefi(Accel::Kvm));
}

#[test]
fn hostos_guest_direct_kvm() {
    check("hostos_guest_direct_kvm", &hostos_guest(Accel::Kvm));
}

#[test]
fn hostos_guest_direct_tcg() {
    check("hostos_guest_direct_tcg", &hostos_guest(Accel::Tcg));
}

/// Where the host has no /dev/vhost-vsock: vsock through a
/// vhost-device-vsock daemon, which needs guest RAM in a shared memfd; a
/// bridge-helper NIC; a serial Unix socket.
#[test]
fn hostos_guest_vhost_user_vsock_tcg() {
    let mut vm = hostos_guest(Accel::Tcg);
    vm.memory_mib = 2048;
    vm.vcpus = 2;
    vm.firmware = Firmware::Bios;
    vm.vsock = Some(Vsock::VhostUser {
        socket: p("vhost-vsock.sock"),
    });
    vm.nics[0].backend = NetBackend::Bridge {
        bridge: "br6".into(),
    };
    vm.serial = Some(Console::logged(
        Chardev::Socket {
            path: p("serial.sock"),
        },
        p("serial.log"),
    ));
    vm.virtio_console = None;
    vm.balloon = false;
    check("hostos_guest_vhost_user_vsock_tcg", &vm);
}

/// The accelerator boot probe's VM.
#[test]
fn probe_vm_kvm() {
    check(
        "probe_vm_kvm",
        &probe_vm(
            Accel::Kvm,
            Path::new("/boot/vmlinuz"),
            &p("probe-serial.log"),
        ),
    );
}
