//! The GuestOS orchestrator: the daemon that makes a node follow the
//! governance registry by itself.
//!
//! - At start it **confirms the current boot** on the disk's grubenv
//!   (`failsafe_check` → `stable`, through `icos_slots`), as IC's
//!   orchestrator does before anything else; a disk still in `first_boot`
//!   (committed, not rebooted) asks for the reboot again.
//! - Each **pass** fetches and verifies the registry over TUF from the
//!   `nns_urls` in rotated order (`icos_registry::client::fetch_any`; the
//!   last verified copy is used when none answers or all are refused),
//!   finds this node by id or IPv6 address, and takes its subnet's GuestOS
//!   version, or the unassigned-nodes version outside any subnet.
//! - When that differs from the running version it **downloads** the
//!   release package from the elected URLs (rotated by the node id;
//!   resumable with HTTP `Range` into a partial file), **verifies** its
//!   SHA-256 against the elected one before anything touches the disk
//!   (a mismatch deletes the file), **installs** it into the spare slot
//!   and **commits** (`icos_slots::SlotDisk::install`: invalidate, write,
//!   sync, wipe the spare var header, read back, then flip grubenv to
//!   `first_boot`), and asks for the **reboot** through [`Rebooter`].
//! - When the GuestOS version is current it compares the node's HostOS
//!   version with the running HostOS's ([`HostAgent`], vsock
//!   `GetHostOSVersion`) and asks HostOS to upgrade itself (`upgrade` with
//!   URL and hash).
//!
//! - Before following the registry by node id, [`register`] generates the
//!   node key at first boot and, when the node is not registered and a
//!   node operator key is given, sends a join request to the registry
//!   service (`POST <registry URL>/join`).
//!
//! Progress is the [`State`] machine (an enum and the pure [`transition`]
//! function), exported as Prometheus [`Metrics`] and written as a
//! [`Status`] JSON file after every transition.
//!
//! Side effects are seams: [`DiskSource`] (a path, or any
//! `icos_slots::Device`), [`Rebooter`] (`systemctl reboot`), [`HostAgent`]
//! (vsock); downloads and the registry take URLs.
//!
//! Beside the upgrades, after each registry check the daemon keeps the
//! node in line with the registry: [`replica`] supervises the payload
//! (its configuration from the GuestOS config and the registry; restarts
//! with backoff), and [`access`] writes the `readonly` and `backup` SSH
//! keys and loads the nftables ruleset with the registry's rules.

pub mod access;
pub mod attempt;
pub mod download;
pub mod error;
mod files;
pub mod metrics;
pub mod orchestrator;
pub mod register;
pub mod replica;
pub mod seams;
pub mod state;
pub mod target;

pub use error::Error;
pub use metrics::{HostosStatus, Metrics, Status};
pub use orchestrator::{Config, Orchestrator, Outcome};
pub use seams::{DiskPath, DiskSource, HostAgent, Rebooter, SystemctlReboot, VsockHostAgent};
pub use state::{Event, State, transition};
pub use target::{NodeSelector, Release};
