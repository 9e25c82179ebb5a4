//! The typed description of a VM. [`VmConfig::to_args`] (in `args.rs`)
//! renders it to a QEMU argv.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use macaddr::MacAddr6;
use serde::{Deserialize, Serialize};

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// The TCG binary translator (`-accel tcg,thread=multi`): slow, works
    /// everywhere.
    Tcg,
    /// Hardware virtualization through `/dev/kvm` (`-accel kvm`). Use only
    /// after [`probe_accel`](crate::probe_accel) said so.
    Kvm,
}

impl Accel {
    /// `"tcg"` or `"kvm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The machine type (`-machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `q35`: PCIe, AHCI, the machine IC-OS guests run on.
    #[default]
    Q35,
    /// `pc`: the i440FX machine.
    Pc,
}

impl Machine {
    /// The QEMU machine name.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }
}

/// The vCPU model (`-cpu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cpu {
    /// `max`: every feature the accelerator can offer. The model for TCG.
    Max,
    /// `host` plus feature flags such as `-arch-capabilities`. Only valid
    /// with KVM. Plain `host` (no flags) aborts QEMU on some nested hosts
    /// (`failed to set MSR 0x10a`), so [`Cpu::default_for`] adds
    /// `-arch-capabilities`.
    Host {
        /// Flags appended after `host`, e.g. `-arch-capabilities`, `+topoext`.
        flags: Vec<String>,
    },
    /// A named model (`EPYC-v4`, `qemu64`, …) plus feature flags.
    Named {
        /// The QEMU CPU model name.
        model: String,
        /// Flags appended after the model.
        flags: Vec<String>,
    },
}

impl Cpu {
    /// The model to use with an accelerator: `max,la57=off` for TCG,
    /// `host,-arch-capabilities` for KVM.
    ///
    /// Under TCG the guest gets 4-level paging: the 5-level paging that
    /// `max` offers (`la57`) adds a level to every emulated page walk and
    /// nothing a node needs. It was turned off while HostOS running GuestOS
    /// under nested KVM crashed now and then; the crashes went on without
    /// it (see the nested tests' stall retry).
    pub fn default_for(accel: Accel) -> Cpu {
        match accel {
            Accel::Tcg => Cpu::Named {
                model: "max".to_owned(),
                flags: vec!["la57=off".to_owned()],
            },
            Accel::Kvm => Cpu::Host {
                flags: vec!["-arch-capabilities".to_owned()],
            },
        }
    }
}

/// The firmware the VM starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Firmware {
    /// QEMU's default BIOS (SeaBIOS). Enough for direct kernel boot.
    #[default]
    Bios,
    /// OVMF UEFI from two pflash drives.
    Uefi(Uefi),
}

/// OVMF as two pflash units: the code read-only, and a private, writable
/// copy of the variable store. [`Ovmf::prepare`](crate::Ovmf::prepare)
/// makes the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uefi {
    /// `OVMF_CODE_4M.fd` (pflash unit 0, `readonly=on`).
    pub code: PathBuf,
    /// The VM's own copy of `OVMF_VARS_4M.fd` (pflash unit 1). Never point
    /// this at the shared template in `/usr/share/OVMF`.
    pub vars: PathBuf,
}

/// Direct kernel boot: QEMU loads the kernel and initrd itself (`-kernel`,
/// `-initrd`, `-append`); works with either firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKernel {
    /// The kernel image (bzImage or PVH ELF).
    pub kernel: PathBuf,
    /// The initial ramdisk, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line, passed as one argument.
    pub cmdline: String,
}

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskFormat {
    /// Raw image or block device.
    #[default]
    Raw,
    /// qcow2 image.
    Qcow2,
}

impl DiskFormat {
    /// The QEMU format name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// `virtio-blk-pci`: `/dev/vdX` in the guest.
    #[default]
    Virtio,
    /// `usb-storage` on a `qemu-xhci` controller: `/dev/sdX` in the guest,
    /// the way IC-OS hands a VM its CONFIG media.
    Usb {
        /// Report the medium as removable (`removable=on`).
        removable: bool,
    },
}

/// The host page-cache mode of a disk (`cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// `none`: O_DIRECT. The backing file system must support O_DIRECT
    /// (tmpfs does not).
    None,
    /// `writeback`.
    Writeback,
    /// `writethrough`.
    Writethrough,
    /// `directsync`.
    Directsync,
    /// `unsafe`: ignore flushes. For throw-away test disks only.
    Unsafe,
}

impl CacheMode {
    /// The QEMU name.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Directsync => "directsync",
            CacheMode::Unsafe => "unsafe",
        }
    }
}

/// What to do with the guest's discard (TRIM) requests (`discard=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `unmap`: pass them to the backing file or device.
    Unmap,
    /// `ignore`.
    Ignore,
}

impl Discard {
    /// The QEMU name.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::Unmap => "unmap",
            Discard::Ignore => "ignore",
        }
    }
}

/// A disk of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Image file or block device.
    pub path: PathBuf,
    /// Image format.
    pub format: DiskFormat,
    /// How it is attached.
    pub bus: DiskBus,
    /// Serial number the guest sees (`/dev/disk/by-id/virtio-SERIAL`); at
    /// most 20 printable ASCII characters.
    pub serial: Option<String>,
    /// Attach read-only.
    pub read_only: bool,
    /// Host cache mode; QEMU's default when `None`.
    pub cache: Option<CacheMode>,
    /// Discard mode; QEMU's default when `None`.
    pub discard: Option<Discard>,
    /// Firmware boot order (`bootindex=`).
    pub boot_index: Option<u32>,
}

impl Disk {
    /// A raw virtio-blk disk, read-write, QEMU's default cache.
    pub fn virtio(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            format: DiskFormat::Raw,
            bus: DiskBus::Virtio,
            serial: None,
            read_only: false,
            cache: None,
            discard: None,
            boot_index: None,
        }
    }

    /// A raw removable USB mass-storage disk, e.g. the CONFIG media.
    pub fn usb_removable(path: impl Into<PathBuf>) -> Disk {
        Disk {
            bus: DiskBus::Usb { removable: true },
            ..Disk::virtio(path)
        }
    }

    /// Sets the serial number.
    pub fn with_serial(mut self, serial: impl Into<String>) -> Disk {
        self.serial = Some(serial.into());
        self
    }

    /// Attaches read-only.
    pub fn read_only(mut self) -> Disk {
        self.read_only = true;
        self
    }

    /// Sets the cache mode.
    pub fn with_cache(mut self, cache: CacheMode) -> Disk {
        self.cache = Some(cache);
        self
    }

    /// Sets the discard mode.
    pub fn with_discard(mut self, discard: Discard) -> Disk {
        self.discard = Some(discard);
        self
    }

    /// Sets the image format.
    pub fn with_format(mut self, format: DiskFormat) -> Disk {
        self.format = format;
        self
    }

    /// Sets the firmware boot order.
    pub fn with_boot_index(mut self, index: u32) -> Disk {
        self.boot_index = Some(index);
        self
    }
}

/// A transport protocol for user-mode port forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A host port forwarded into the guest (`hostfwd=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostForward {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address to listen on; every address when `None`.
    pub host_addr: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Guest address; the first DHCP address (10.0.2.15) when `None`.
    pub guest_addr: Option<Ipv4Addr>,
    /// Guest port.
    pub guest_port: u16,
}

/// A guest TCP address forwarded to a host TCP address (`guestfwd=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestForward {
    /// The virtual address the guest connects to (inside 10.0.2.0/24).
    pub guest_addr: Ipv4Addr,
    /// The guest-side port.
    pub guest_port: u16,
    /// Host address QEMU connects to.
    pub host_addr: Ipv4Addr,
    /// Host port QEMU connects to.
    pub host_port: u16,
}

/// User-mode (slirp) networking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNet {
    /// `restrict=on`: the guest reaches nothing but the forwards.
    pub restrict: bool,
    /// Host → guest forwards.
    pub host_forwards: Vec<HostForward>,
    /// Guest → host forwards.
    pub guest_forwards: Vec<GuestForward>,
    /// The IPv6 network QEMU advertises, and its own address in it; QEMU's
    /// defaults (`fec0::/64`) when `None`.
    pub ipv6: Option<UserIpv6>,
}

/// The IPv6 side of a user-mode network: the prefix QEMU advertises and the
/// address where it answers (router, and this machine as seen from the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIpv6 {
    /// The network (`ipv6-net`).
    pub prefix: std::net::Ipv6Addr,
    /// Its length.
    pub prefix_len: u8,
    /// QEMU's own address (`ipv6-host`), e.g. the node's configured gateway.
    pub host: std::net::Ipv6Addr,
}

impl Default for UserNet {
    fn default() -> Self {
        UserNet {
            restrict: true,
            host_forwards: Vec::new(),
            guest_forwards: Vec::new(),
            ipv6: None,
        }
    }
}

/// Where a NIC's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// User-mode networking.
    User(UserNet),
    /// An existing tap device (`script=no,downscript=no`: QEMU configures
    /// nothing).
    Tap {
        /// The tap interface name (at most 15 bytes).
        ifname: String,
    },
    /// A tap device QEMU creates on a bridge through `qemu-bridge-helper`.
    Bridge {
        /// The bridge name (at most 15 bytes).
        bridge: String,
    },
}

/// A virtio-net NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The guest MAC; QEMU picks one when `None`.
    pub mac: Option<MacAddr6>,
    /// The backend.
    pub backend: NetBackend,
}

/// A character device backend (serial port, virtio console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chardev {
    /// Write guest output to a file (truncated when QEMU starts).
    File {
        /// The file.
        path: PathBuf,
    },
    /// A Unix socket QEMU listens on (`server=on,wait=off`).
    Socket {
        /// The socket path (at most 107 bytes).
        path: PathBuf,
    },
    /// A pseudo-terminal.
    Pty,
    /// Discard output.
    Null,
}

/// A serial port or console: a backend, optionally also logged to a file
/// (`logfile=`), like libvirt's pty console with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// The backend.
    pub backend: Chardev,
    /// A file that receives a copy of all output (truncated when QEMU
    /// starts).
    pub log_file: Option<PathBuf>,
}

impl Console {
    /// Output to a file only.
    pub fn file(path: impl Into<PathBuf>) -> Console {
        Console {
            backend: Chardev::File { path: path.into() },
            log_file: None,
        }
    }

    /// A backend plus a log file.
    pub fn logged(backend: Chardev, log_file: impl Into<PathBuf>) -> Console {
        Console {
            backend,
            log_file: Some(log_file.into()),
        }
    }

    /// The file that holds everything the guest wrote: the log file, or the
    /// backend's file.
    pub fn log_path(&self) -> Option<&Path> {
        match (&self.log_file, &self.backend) {
            (Some(log), _) => Some(log),
            (None, Chardev::File { path }) => Some(path),
            (None, _) => None,
        }
    }
}

/// A virtio vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vsock {
    /// `vhost-vsock-pci`: needs the host's `/dev/vhost-vsock`.
    Vhost {
        /// The guest's CID (≥ 3).
        guest_cid: u32,
    },
    /// `vhost-user-vsock-pci` backed by a `vhost-device-vsock` daemon
    /// listening on `socket` (the daemon sets the CID). Guest RAM is then
    /// a shared memfd (`memory-backend-memfd,share=on`).
    VhostUser {
        /// The daemon's vhost-user socket.
        socket: PathBuf,
    },
}

/// Everything QEMU needs to know to start a VM. Render it with
/// [`VmConfig::to_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// `-name guest=NAME`.
    pub name: Option<String>,
    /// `-uuid` (SMBIOS system UUID), `8-4-4-4-12` hex.
    pub uuid: Option<String>,
    /// Machine type.
    pub machine: Machine,
    /// Accelerator.
    pub accel: Accel,
    /// vCPU model.
    pub cpu: Cpu,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Firmware.
    pub firmware: Firmware,
    /// Direct kernel boot, if any.
    pub kernel: Option<DirectKernel>,
    /// Disks, in guest enumeration order.
    pub disks: Vec<Disk>,
    /// NICs.
    pub nics: Vec<Nic>,
    /// The first serial port (`ttyS0`).
    pub serial: Option<Console>,
    /// A virtio console (`hvc0`).
    pub virtio_console: Option<Console>,
    /// A QMP control socket (at most 107 bytes).
    pub qmp_socket: Option<PathBuf>,
    /// A virtio-rng fed from the host's `/dev/urandom`.
    pub rng: bool,
    /// A virtio vsock device.
    pub vsock: Option<Vsock>,
    /// A virtio memory balloon.
    pub balloon: bool,
    /// `-no-reboot`: a guest reboot makes QEMU exit.
    pub no_reboot: bool,
    /// Arguments appended verbatim, last.
    pub extra_args: Vec<String>,
}

impl VmConfig {
    /// A q35 VM with the accelerator's default CPU model, no devices, and
    /// `-no-reboot`.
    pub fn new(accel: Accel, memory_mib: u64, vcpus: u32) -> VmConfig {
        VmConfig {
            name: None,
            uuid: None,
            machine: Machine::Q35,
            accel,
            cpu: Cpu::default_for(accel),
            memory_mib,
            vcpus,
            firmware: Firmware::Bios,
            kernel: None,
            disks: Vec::new(),
            nics: Vec::new(),
            serial: None,
            virtio_console: None,
            qmp_socket: None,
            rng: false,
            vsock: None,
            balloon: false,
            no_reboot: true,
            extra_args: Vec::new(),
        }
    }

    /// The file that receives the first serial port's output, which the
    /// [runner](crate::Runner) tails.
    pub fn serial_log(&self) -> Option<&Path> {
        self.serial.as_ref().and_then(Console::log_path)
    }

    /// Whether guest RAM must be a shared memfd (vhost-user devices).
    pub fn needs_shared_memory(&self) -> bool {
        matches!(self.vsock, Some(Vsock::VhostUser { .. }))
    }
}
