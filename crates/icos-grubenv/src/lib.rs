//! GRUB environment blocks (`grubenv`) and the IC-OS A/B boot-cycle state
//! machine.
//!
//! IC-OS keeps the A/B boot state of HostOS and GuestOS in a GRUB environment
//! block: a file of exactly 1024 bytes on the grub partition. GRUB reads and
//! updates it at boot; for GuestOS the HostOS VM runner does the same before
//! it direct-boots the guest kernel; `manageboot` in the running system marks
//! upgrades and confirms them.
//!
//! This crate has three parts:
//!
//! - [`block`]: parsing and writing the block byte for byte as
//!   `grub-editenv` does ([`parse`], [`GrubEnv`]), with GRUB's escaping of
//!   `\` and newlines, comment lines kept, variables kept in order;
//! - [`io`]: the block on streams and files, with durable, never-torn file
//!   writes ([`GrubEnv::load`], [`GrubEnv::store`]);
//! - [`cycle`]: the boot-cycle state machine as pure functions
//!   ([`transition`], [`refresh_for_boot`]); its docs hold the diagram.
//!
//! ```
//! use icos_grubenv::{BootCycle, BootState, Event, GrubEnv, Slot, transition};
//!
//! let mut env = GrubEnv::new();
//! BootState::new(Slot::A, BootCycle::Stable).write_to_env(&mut env)?;
//!
//! // The running system commits an upgrade into the other slot...
//! let state = BootState::from_env(&env)?;
//! let (state, _) = transition(state, Event::UpgradeCommit)?;
//! assert_eq!(state, BootState::new(Slot::B, BootCycle::FirstBoot));
//!
//! // ...the next boot tries B, and a boot without a confirm rolls back to A.
//! let (state, _) = transition(state, Event::Boot)?;
//! let (state, _) = transition(state, Event::Boot)?;
//! assert_eq!(state, BootState::new(Slot::A, BootCycle::Stable));
//!
//! state.write_to_env(&mut env)?;
//! let bytes = env.to_bytes()?;
//! assert_eq!(bytes.len(), 1024);
//! assert_eq!(icos_grubenv::parse(&bytes)?.get("boot_alternative"), Some("A"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod block;
pub mod cycle;
pub mod io;

pub use block::{
    BLOCK_SIZE, GrubEnv, HEADER, LineProblem, OverflowError, ParseError, VarError, WARNING_COMMENT,
    parse, validate_name,
};
pub use cycle::{
    Action, BOOT_ALTERNATIVE, BOOT_CYCLE, BootCycle, BootKind, BootRefresh, BootState, Event,
    RefreshError, Slot, StateError, TransitionError, boot, refresh_for_boot, transition,
};
pub use io::{Error, StreamError};
