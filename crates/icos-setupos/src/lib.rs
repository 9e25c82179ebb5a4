//! The SetupOS installer's logic, as pure functions where it can be.
//!
//! SetupOS is the image a node provider boots to turn a server into an
//! Internet Computer node. Before it writes anything it checks the machine;
//! it then installs HostOS onto the first large drive and GuestOS into the
//! `guestos` volume spanning the others. This crate holds:
//!
//! * the checks, each a pure function over captured command output that
//!   lists every problem at once ([`CheckResult`]): the image age
//!   ([`check_age`]), the hardware ([`hardware`]: CPU generation and SEV,
//!   sockets, threads, memory, drives, with IC's thresholds), the network
//!   ([`network`]: the router-advertised address and route, the derived
//!   addresses, gateway pings, the NNS) and the clock ([`check_time`]);
//! * the kernel command-line switches ([`cmdline`]), and reading and
//!   writing them in a SetupOS image ([`switches`]);
//! * [`check_captured`], which runs them all over a directory of captured
//!   output, as the installer does on the live system;
//! * the install plan ([`plan_install`]): which drive gets HostOS and which
//!   become extra physical volumes;
//! * the failure and success banners ([`failure_banner`],
//!   [`success_banner`]);
//! * SetupOS disk images with IC's layout ([`build_setupos_disk`]) and the
//!   node provider's tool to write their inputs into one without mounting
//!   it ([`inject()`]);
//! * the installer that runs on a booted SetupOS (`icos-setupos-install`):
//!   capturing the live system ([`live`]), the install steps ([`install`]:
//!   wiping the drives, streaming the HostOS and GuestOS images onto them
//!   and verifying them, growing `hostlvm`, the EFI boot entry, the HostOS
//!   config volume), the sequence ([`run()`], [`run::next_step`]) and the
//!   one seam for external commands ([`runner`]).
//!
//! # Example
//!
//! ```
//! use icos_setupos::{Drive, PlanRules, plan_install};
//!
//! let drives = [
//!     Drive { name: "sda".into(), size: 32 << 30, kind: "disk".into() },
//!     Drive { name: "nvme0n1".into(), size: 7_681_501_126_656, kind: "disk".into() },
//!     Drive { name: "nvme1n1".into(), size: 7_681_501_126_656, kind: "disk".into() },
//! ];
//! let plan = plan_install(&drives, &PlanRules::default()).unwrap();
//! assert_eq!(plan.system_drive.name, "nvme0n1");
//! assert_eq!(plan.extra_pvs[0].name, "nvme1n1");
//! assert_eq!(plan.guestos_stripes(), 2);
//! ```

mod banner;
mod captured;
pub mod cmdline;
mod disk;
pub mod hardware;
pub mod inject;
pub mod install;
pub mod live;
pub mod network;
mod plan;
mod report;
pub mod run;
pub mod runner;
pub mod switches;
mod time;

pub use banner::{FAILURE_TITLE, SUCCESS_TITLE, failure_banner, success_banner};
pub use captured::{CaptureErrors, CaptureProblem, CapturedRun, check_captured};
pub use cmdline::{Switches, parse_cmdline};
pub use disk::{
    CONFIG_LABEL, CONFIG_VOLUME_ID, DATA_FS_HASH_SEED, DATA_FS_SIZE, DATA_FS_UUID,
    SetupOsDiskContents, blank_setupos_disk, build_setupos_disk,
};
pub use hardware::{Drive, Generation, HardwareFacts, check_hardware};
pub use inject::{InjectError, InjectInputs, Injected, Placement, Target, inject};
pub use install::{HoleCheck, ImageArchive, ImageError, WriteProgress, ZeroMethod, Zeroer};
pub use live::{LiveSources, capture};
pub use network::{NetworkFacts, check_network};
pub use plan::{InstallPlan, PlanError, PlanRules, plan_install};
pub use report::{CheckName, CheckResult, Report};
pub use run::{
    CHECKS_ONLY_LINE, Console, FAILURE_LINE, Outcome, PlainConsole, RunOptions, SUCCESS_LINE, Step,
    next_step, run, steps,
};
pub use runner::{Cmd, CmdOutput, CommandError, Runner, SystemRunner};
pub use switches::{SWITCHES_VAR, SwitchesError, read_switches, write_switches};
pub use time::{MAX_IMAGE_AGE_SECS, check_age, check_time};
