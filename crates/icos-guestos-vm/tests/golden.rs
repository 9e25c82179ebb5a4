//! Golden QEMU command lines of the GuestOS VM: each description renders to
//! exactly the arguments in `tests/golden/NAME.args` (one per line).
//!
//! After an intended change:
//! `ICOS_UPDATE_GOLDEN=1 cargo test -p icos-guestos-vm --test golden`, then
//! review the diff.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use icos_grubenv::Slot;
use icos_guestos_vm::vm::guestos_mac;
use icos_guestos_vm::{BootArgs, BootFiles, Network, VmSpec, VsockMode, vm_config};
use icos_qemu::{Accel, CacheMode};

const RUN: &str = "/run/icos-guestos-vm";

fn p(name: &str) -> PathBuf {
    Path::new(RUN).join(name)
}

fn check(name: &str, spec: &VmSpec, boot: &BootFiles) {
    let args = vm_config(spec, boot).to_args().expect("renders");
    let mut text = args.join("\n");
    text.push('\n');
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.args"));
    if std::env::var_os("ICOS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("writing golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with ICOS_UPDATE_GOLDEN=1 cargo test -p icos-guestos-vm --test golden",
            path.display()
        )
    });
    assert_eq!(
        want,
        text,
        "{} differs; if intended, run ICOS_UPDATE_GOLDEN=1 cargo test -p icos-guestos-vm --test golden",
        path.display()
    );
}

fn hostos_config() -> icos_config::HostOSConfig {
    icos_config::from_json_str(icos_config_media::DEV_HOSTOS_CONFIG).expect("dev config parses")
}

fn boot(slot: Slot) -> BootFiles {
    let s = slot.as_str();
    BootFiles {
        slot,
        kernel: p("vmlinuz"),
        initrd: p("initrd.img"),
        boot_args: BootArgs {
            variable: format!("BOOT_ARGS_{s}"),
            cmdline: format!(
                "root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 console=ttyS0 quiet panic=-1 ro dfinity.system={s} root_hash=5c26"
            ),
        },
        version: Some("0123abcd".into()),
    }
}

/// HostOS: KVM, the dev-settings resources, the guestos LV with cache=none,
/// a tap on br6 through the bridge helper, kernel vhost-vsock with CID 3.
fn hostos_spec() -> VmSpec {
    let config = hostos_config();
    let (memory_mib, vcpus, _) = icos_guestos_vm::vm::resources(&config);
    VmSpec {
        accel: Accel::Kvm,
        memory_mib,
        vcpus,
        disk: "/dev/hostlvm/guestos".into(),
        disk_cache: CacheMode::None,
        mac: guestos_mac(&config),
        network: Network::Bridge("br6".into()),
        vsock: VsockMode::Kernel { guest_cid: 3 },
        config_media: p("config.img"),
        serial_log: "/var/log/icos-guestos-vm/guestos-serial.log".into(),
        qmp_socket: p("qmp.sock"),
    }
}

#[test]
fn the_mac_is_the_deterministic_guestos_mac() {
    let spec = hostos_spec();
    // 3C:EC:EF:6B:37:99 on testnet, GuestOS type 01, slot 0.
    assert_eq!(spec.mac.as_bytes()[..2], [0x6a, 0x01]);
    let args = vm_config(&spec, &boot(Slot::A)).to_args().unwrap();
    assert!(
        args.iter()
            .any(|a| a.ends_with(&format!("mac={}", spec.mac.to_string().to_lowercase())))
    );
}

#[test]
fn hostos_kvm_bridge_kernel_vsock_slot_a() {
    check(
        "hostos_kvm_bridge_kernel_vsock_a",
        &hostos_spec(),
        &boot(Slot::A),
    );
}

#[test]
fn hostos_kvm_bridge_kernel_vsock_slot_b() {
    check(
        "hostos_kvm_bridge_kernel_vsock_b",
        &hostos_spec(),
        &boot(Slot::B),
    );
}

/// A host without /dev/vhost-vsock: TCG, vhost-user vsock (shared memfd
/// RAM), an existing tap, a disk image file with writeback caching.
#[test]
fn tcg_tap_vhost_user_vsock() {
    let spec = VmSpec {
        accel: Accel::Tcg,
        memory_mib: 2048,
        vcpus: 2,
        disk: "/var/lib/icos/guestos/disk.img".into(),
        disk_cache: CacheMode::Writeback,
        network: Network::Tap("vnet0".into()),
        vsock: VsockMode::VhostUser {
            socket: p("vhost-vsock.sock"),
        },
        ..hostos_spec()
    };
    check("tcg_tap_vhost_user_vsock", &spec, &boot(Slot::A));
}

/// A developer machine: TCG, user-mode networking, no vsock.
#[test]
fn tcg_user_net_no_vsock() {
    let spec = VmSpec {
        accel: Accel::Tcg,
        memory_mib: 4096,
        vcpus: 2,
        disk: "/home/dev/guestos/disk.img".into(),
        disk_cache: CacheMode::Writeback,
        network: Network::User,
        vsock: VsockMode::None,
        ..hostos_spec()
    };
    check("tcg_user_net_no_vsock", &spec, &boot(Slot::B));
}
