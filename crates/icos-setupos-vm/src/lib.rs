//! A whole node machine in QEMU: SetupOS installs onto blank disks,
//! reboots into HostOS, and HostOS starts GuestOS.
//!
//! This is what a node provider does with a server, on this machine:
//!
//! 1. **The stick** ([`prepare()`]): a private copy of the SetupOS image
//!    (extracted from `disk-img.tar.zst`, or copied from a raw disk) with
//!    the node provider's inputs written onto it
//!    ([`icos_setupos::inject()`]) and the installer's switches set
//!    ([`icos_setupos::write_switches`]); next to it, blank sparse target
//!    disks (by default two of 1100 GiB, above the installer's 1 TiB).
//! 2. **The network** ([`NodeFacts::net_plan`]): QEMU's user network
//!    advertises the node's /64 and answers at its gateway, the NIC has the
//!    node's SetupOS MAC; an IPv4 config must use QEMU's 10.0.2.0/24.
//! 3. **The host services**: [`NtpServer`] runs chronyd serving this
//!    machine's clock on 127.0.0.1:123, which the guest reaches as
//!    10.0.2.2:123, so the installer's clock check passes; a [`Reaper`]
//!    kills QEMU and chronyd if the caller dies.
//! 4. **The machine** ([`MachineSpec`]): q35, OVMF, TCG with `-cpu max,la57=off`,
//!    the stick on USB, the targets on virtio, no boot order forced.
//! 5. **The run** ([`Session::run`]): follows the serial console through
//!    the [stages](stage) — SetupOS booting, checks, installing,
//!    rebooting, HostOS booting, GuestOS booting — to GuestOS's boot
//!    marker seen through HostOS, or a failure (the installer's banner and
//!    its reasons, a boot failure marker, a kernel stall, a timeout).
//!
//! ```no_run
//! # fn main() -> Result<(), icos_setupos_vm::Error> {
//! use icos_setupos_vm::*;
//! let tools = icos_imagefs::Tools::discover()?;
//! let dir = std::path::Path::new("/var/tmp/node");
//! let spec = PrepareSpec {
//!     image: "out/setupos/disk-img.tar.zst".into(),
//!     inputs: Inputs {
//!         config_ini: Some("config.ini".into()),
//!         deployment_json: Some("deployment.json".into()),
//!         ..Inputs::default()
//!     },
//!     switches: icos_setupos::Switches { check_hardware: false, ..Default::default() },
//!     disks: DEFAULT_DISKS,
//!     disk_size: DEFAULT_DISK_SIZE,
//! };
//! let prepared = prepare(&tools, &spec, dir, &mut |line| eprintln!("{line}"))?;
//! let net = prepared.node.net_plan(&prepared.deployment_source)?;
//! let mut session = Session::start(prepared, &net, RunSpec::default(), &mut |_| {})?;
//! let report = session.run(&mut |event| {
//!     if let Event::State { at, to, .. } = event {
//!         eprintln!("[{:7.1} s] {to}", at.as_secs_f64());
//!     }
//! })?;
//! assert!(report.succeeded());
//! # Ok(()) }
//! ```

mod error;
mod fingerprint;
mod machine;
mod node;
mod ntp;
mod prepare;
mod run;
pub mod stage;

pub use error::Error;
pub use fingerprint::{Fingerprint, fingerprint};
pub use icos_qemu::Reaper;
pub use icos_qemu::clean_line;
pub use machine::{MachineSpec, StickBus, UserNic, nic_args};
pub use node::{
    Interface, NetPlan, NodeFacts, QEMU_DNS, QEMU_HOST, QEMU_IPV4_NET, QEMU_IPV4_PREFIX_LEN,
};
pub use ntp::{NTP_PORT, NtpServer, chrony_conf, is_synchronised_reply};
pub use prepare::{
    DEFAULT_DISK_SIZE, DEFAULT_DISKS, DISK_MEMBER, ImageKind, Inputs, LARGE_DRIVE, MAX_DISKS,
    PrepareSpec, Prepared, STICK_FILE, create_targets, format_size, image_kind, parse_size,
    prepare,
};
pub use run::{
    DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT, DEFAULT_VCPUS, Event, HostOsVia, RebootMode, Report,
    RunSpec, Session, StageTime,
};
pub use stage::{End, Failure, Goal, Signal, Stage, State, System};
