//! The QEMU machine: a q35 server with UEFI (OVMF), TCG with `-cpu max,la57=off`
//! (its SVM lets HostOS run GuestOS under nested KVM), the stick, blank
//! target disks and one NIC on QEMU's user network shaped like the node's.
//!
//! No disk has a `bootindex`: OVMF reorders its boot options by QEMU's
//! boot order on every boot, which would put a disk first again after the
//! installer made its "IC-OS" entry the first. Without one, the first boot
//! finds the stick (the only bootable disk), and the reboot follows the
//! entry the installer wrote, as on a real server.

use std::net::Ipv6Addr;
use std::path::PathBuf;

use icos_qemu::{Accel, CacheMode, Console, Discard, Disk, Firmware, Uefi, VmConfig};
use macaddr::MacAddr6;

/// How the stick is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StickBus {
    /// USB mass storage on an xHCI controller, as a real stick.
    #[default]
    Usb,
    /// A virtio disk.
    Virtio,
}

/// The machine's NIC on QEMU's user network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserNic {
    /// The node's /64 (`2001:db8:1:2::`); QEMU's default network if `None`.
    pub ipv6_prefix: Option<Ipv6Addr>,
    /// Where QEMU's host answers in it (the node's gateway).
    pub ipv6_host: Option<Ipv6Addr>,
    /// The NIC's MAC; QEMU picks one if `None`.
    pub mac: Option<MacAddr6>,
}

/// Everything the machine is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// OVMF code and this machine's variable store (kept across restarts).
    pub uefi: Uefi,
    /// The stick, if plugged in.
    pub stick: Option<PathBuf>,
    /// How the stick is attached.
    pub stick_bus: StickBus,
    /// The target disks.
    pub targets: Vec<PathBuf>,
    /// The NIC.
    pub nic: UserNic,
    /// The serial console's log file.
    pub serial_log: PathBuf,
    /// A guest reboot ends QEMU (`-no-reboot`) instead of restarting the
    /// machine.
    pub no_reboot: bool,
}

/// The `-netdev`/`-device` pair of the NIC: IPv4 and IPv6 (neither
/// `ipv4=` nor `ipv6=` is given: naming one switches the other off).
/// Outbound traffic is allowed (the guest reaches this machine as
/// 10.0.2.2). The NIC has no option ROM (`romfile=`), so OVMF never tries
/// iPXE from it.
pub fn nic_args(nic: &UserNic) -> Vec<String> {
    let mut netdev = "user,id=net0".to_owned();
    if let Some(prefix) = nic.ipv6_prefix {
        netdev.push_str(&format!(",ipv6-net={prefix}/64"));
    }
    if let Some(host) = nic.ipv6_host {
        netdev.push_str(&format!(",ipv6-host={host}"));
    }
    let mut device = "virtio-net-pci,netdev=net0,romfile=".to_owned();
    if let Some(mac) = nic.mac {
        let b = mac.as_bytes();
        device.push_str(&format!(
            ",mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ));
    }
    vec!["-netdev".into(), netdev, "-device".into(), device]
}

impl MachineSpec {
    /// The QEMU description.
    pub fn vm_config(&self) -> VmConfig {
        let mut vm = VmConfig::new(Accel::Tcg, self.memory_mib, self.vcpus);
        vm.name = Some("setupos-node".to_owned());
        vm.firmware = Firmware::Uefi(self.uefi.clone());
        if let Some(stick) = &self.stick {
            let disk = match self.stick_bus {
                StickBus::Usb => Disk::usb_removable(stick),
                StickBus::Virtio => Disk::virtio(stick),
            };
            vm.disks.push(
                disk.with_serial("setupos-stick")
                    .with_cache(CacheMode::Unsafe),
            );
        }
        for (i, target) in self.targets.iter().enumerate() {
            vm.disks.push(
                Disk::virtio(target)
                    .with_serial(format!("target{i}"))
                    .with_cache(CacheMode::Unsafe)
                    .with_discard(Discard::Unmap),
            );
        }
        vm.extra_args = nic_args(&self.nic);
        vm.serial = Some(Console::file(&self.serial_log));
        vm.rng = true;
        vm.no_reboot = self.no_reboot;
        vm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MachineSpec {
        MachineSpec {
            memory_mib: 5120,
            vcpus: 2,
            uefi: Uefi {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                vars: "/run/n/OVMF_VARS.fd".into(),
            },
            stick: Some("/run/n/setupos.img".into()),
            stick_bus: StickBus::Usb,
            targets: vec!["/run/n/target-0.img".into(), "/run/n/target-1.img".into()],
            nic: UserNic {
                ipv6_prefix: Some("2001:db8:1234:56::".parse().unwrap()),
                ipv6_host: Some("2001:db8:1234:56::1".parse().unwrap()),
                mac: Some("6a:0f:01:02:03:04".parse().unwrap()),
            },
            serial_log: "/run/n/serial.log".into(),
            no_reboot: false,
        }
    }

    #[test]
    fn the_machine_is_a_uefi_tcg_server_with_the_nodes_network() {
        let args = spec().vm_config().to_args().unwrap();
        let line = args.join(" ");
        for want in [
            "-accel tcg,thread=multi",
            "-cpu max,la57=off",
            "-m 5120",
            "-smp 2",
            "OVMF_CODE_4M.fd",
            "usb-storage,bus=usb.0,drive=disk0,removable=on,serial=setupos-stick",
            "virtio-blk-pci,drive=disk1,serial=target0",
            "virtio-blk-pci,drive=disk2,serial=target1",
            "-netdev user,id=net0,ipv6-net=2001:db8:1234:56::/64,ipv6-host=2001:db8:1234:56::1",
            "-device virtio-net-pci,netdev=net0,romfile=,mac=6a:0f:01:02:03:04",
            "file,id=serial0,path=/run/n/serial.log",
        ] {
            assert!(line.contains(want), "{want} not in {line}");
        }
        // The firmware follows the installer's boot entry: no disk forces
        // itself first, and a reboot restarts the machine.
        assert!(!line.contains("bootindex"), "{line}");
        assert!(!line.contains("-no-reboot"), "{line}");
        assert!(!line.contains("restrict=on"), "{line}");
    }

    #[test]
    fn without_the_stick_and_with_no_reboot() {
        let mut s = spec();
        s.stick = None;
        s.no_reboot = true;
        s.nic = UserNic::default();
        let line = s.vm_config().to_args().unwrap().join(" ");
        assert!(!line.contains("setupos-stick"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
        assert!(
            line.contains("virtio-blk-pci,drive=disk0,serial=target0"),
            "{line}"
        );
        assert!(line.contains("-netdev user,id=net0 -device"), "{line}");
        assert!(!line.contains("ipv4=") && !line.contains("ipv6="), "{line}");
        s.stick = Some("/run/n/setupos.img".into());
        s.stick_bus = StickBus::Virtio;
        let line = s.vm_config().to_args().unwrap().join(" ");
        assert!(
            line.contains("virtio-blk-pci,drive=disk0,serial=setupos-stick"),
            "{line}"
        );
    }
}
