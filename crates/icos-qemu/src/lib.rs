//! Running virtual machines under QEMU for icos: `icos run guestos` (a
//! GuestOS disk under OVMF UEFI, watched for `GUESTOS BOOT SUCCESS`) and
//! HostOS's guest VM runner (direct kernel boot, graceful ACPI shutdown).
//!
//! Four parts:
//!
//! - **Description → argv.** [`VmConfig`] describes a VM with types
//!   (machine, [`Accel`], [`Cpu`], memory, vCPUs, [`Firmware`],
//!   [`DirectKernel`], [`Disk`]s, [`Nic`]s, [`Console`]s, QMP, virtio-rng,
//!   [`Vsock`]); [`VmConfig::to_args`] renders it to QEMU arguments, purely
//!   and deterministically.
//! - **Accelerator probe.** [`probe_accel`] answers [`Accel::Kvm`] only when
//!   `/dev/kvm` exists, the CPU has `vmx`/`svm`, *and* a real kernel boots
//!   under KVM within 15 s; otherwise [`Accel::Tcg`]. The answer is cached.
//! - **Runner.** [`Runner::spawn`] starts QEMU in its own process group and
//!   returns a [`RunningVm`] that follows the serial log line by line,
//!   watches for markers ([`Watch`] → [`Outcome`]), shuts down gracefully
//!   over QMP ([`RunningVm::shutdown`]) and always kills and reaps QEMU:
//!   on [`RunningVm::kill`], and on drop (also during a panic).
//!   [`Runner::run`] does start–watch–kill in one call.
//! - **Reaper.** A caller killed by a signal drops nothing; a [`Reaper`]
//!   (a small `sh` reading process group ids from a pipe) kills the groups
//!   it was told about when that pipe closes. [`Runner::reaping`] gives
//!   every QEMU it starts one.
//! - **QMP.** [`Qmp`] is a small client with timeouts: capabilities
//!   negotiation, `query-status`, `system_powerdown`, `quit`, any command.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use icos_qemu::*;
//! use std::time::Duration;
//!
//! let dir = std::path::Path::new("/var/tmp/vm");
//! let probe = probe_accel(&ProbeOptions::new(DEFAULT_QEMU, dir.join("cache")))?;
//! let mut vm = VmConfig::new(probe.accel, 4096, 2);
//! vm.firmware = Firmware::Uefi(Ovmf::find()?.prepare(dir.join("OVMF_VARS.fd"))?);
//! vm.disks.push(Disk::virtio(dir.join("disk.img")).with_serial("guestos"));
//! vm.disks.push(Disk::usb_removable(dir.join("config.img")).read_only().with_serial("config"));
//! vm.serial = Some(Console::file(dir.join("serial.log")));
//! vm.rng = true;
//!
//! let outcome = Runner::default().run(&vm, &Watch::guestos_boot(), |line| println!("{line}"))?;
//! assert!(outcome.is_success());
//! # Ok(()) }
//! ```
//!
//! QEMU is killed when the handle is dropped, including during panic
//! unwinding, but not when the calling process itself is killed with
//! SIGKILL; run the caller under a supervisor that kills its whole process
//! tree (a systemd unit does).

mod args;
mod config;
mod firmware;
mod probe;
mod qmp;
mod reaper;
mod runner;
mod serial;
mod text;

pub use args::{ConfigError, MAX_DISK_SERIAL, MAX_IFNAME, MAX_SOCKET_PATH, escape_opt};
pub use config::{
    Accel, CacheMode, Chardev, Console, Cpu, DirectKernel, Discard, Disk, DiskBus, DiskFormat,
    Firmware, GuestForward, HostForward, Machine, NetBackend, Nic, Protocol, Uefi, UserIpv6,
    UserNet, VmConfig, Vsock,
};
pub use firmware::{FirmwareError, OVMF_DIR, Ovmf};
pub use probe::{
    AccelProbe, PROBE_CACHE_FILE, PROBE_CMDLINE, PROBE_MARKER, PROBE_TIMEOUT, ProbeError,
    ProbeOptions, boot_probe, has_virt_flags, probe_accel, probe_vm,
};
pub use qmp::{Qmp, QmpError, QmpEvent, VmStatus};
pub use reaper::{Reaper, ReaperError};
pub use runner::{
    DEFAULT_QEMU, GUESTOS_BOOT_FAILURE, GUESTOS_BOOT_SUCCESS, GUESTOS_BOOT_TIMEOUT,
    GUESTOS_SHUTDOWN_GRACE, Outcome, RunError, Runner, RunningVm, Shutdown, Watch,
};
pub use text::clean_line;
