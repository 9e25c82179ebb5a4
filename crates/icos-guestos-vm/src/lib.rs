//! HostOS's GuestOS VM runner: everything between a guest disk plus the
//! HostOS config and a running, watched GuestOS VM.
//!
//! On each VM start the runner
//!
//! 1. reads the guest disk's GPT and the `grubenv` on its `grub` partition
//!    (FAT, read in place through `Read`/`Seek`: nothing is mounted) and
//!    applies one boot of the A/B boot cycle exactly as GuestOS's
//!    `grub.cfg` does ([`prepare`]);
//! 2. takes the chosen slot's `vmlinuz`, `initrd.img` and `boot_args` from
//!    its `A_boot`/`B_boot` partition (ext4, read in user space);
//!    `boot_args` may hold one `BOOT_ARGS=` or IC's `BOOT_ARGS_A=` and
//!    `BOOT_ARGS_B=` ([`bootargs`]);
//! 3. derives the GuestOS config from the HostOS config and writes the
//!    CONFIG media ([`icos_config_media`]);
//! 4. renders the QEMU command line: direct kernel boot, the disk on
//!    virtio, the CONFIG media as a removable USB disk, the deterministic
//!    GuestOS MAC on a bridge or tap, the serial console into a log file,
//!    QMP, virtio-rng, a balloon and vsock (kernel vhost-vsock or a
//!    vhost-user `vhost-device-vsock` daemon) ([`vm`]);
//! 5. only then writes the new `grubenv` back (in place, as GRUB's
//!    `save_env`), and starts QEMU.
//!
//! The [`daemon`] then watches the serial log for `GUESTOS BOOT SUCCESS` /
//! `GUESTOS BOOT FAILURE` (5 minutes), restarts a stopped VM with backoff
//! ([`restart`]: an enum state machine with a pure transition function),
//! shuts the VM down on SIGTERM (ACPI power button, 2 minutes, then
//! destroy), tells systemd it is ready ([`notify`]) and keeps a Prometheus
//! textfile current ([`metrics`]).

pub mod bootargs;
pub mod daemon;
pub mod disk;
pub mod fat;
pub mod metrics;
pub mod notify;
pub mod prepare;
pub mod restart;
pub mod vm;

pub use bootargs::{BootArgs, BootArgsError, boot_args_for};
pub use daemon::{Daemon, DaemonSettings, Signals, StartError, VsockDaemon};
pub use metrics::Metrics;
pub use notify::Notifier;
pub use prepare::{BootFiles, BootPlan, GrubenvUpdate, GuestDisk, PrepareError, boot_partition};
pub use restart::{Action, BootResult, Event, Policy, State, transition};
pub use vm::{Launch, LaunchError, Network, VmSpec, VsockMode, prepare_launch, vm_config};
