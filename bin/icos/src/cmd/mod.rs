//! The subcommands of `icos`, one module each.

use clap::Subcommand;

use crate::exit::CmdResult;

pub mod build;
pub mod config;
pub mod gov;
pub mod grubenv;
pub mod layout;
pub mod net;
pub mod node;
pub mod packages;
pub mod registry;
pub mod repro;
pub mod run;
pub mod setupos;
pub mod slots;

/// Every top-level subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, convert and check SetupOS, HostOS and GuestOS configuration.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Derive a node's deterministic MAC and IPv6 addresses.
    #[command(subcommand)]
    Net(net::NetCmd),
    /// Read and edit a GRUB environment block (grubenv).
    #[command(subcommand)]
    Grubenv(grubenv::GrubenvCmd),
    /// Show IC-OS partition layouts and write or read GPT tables on image files.
    #[command(subcommand)]
    Layout(layout::LayoutCmd),
    /// Derive a whole node from the operator's inputs: its three configs and addresses.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Pin, fetch and verify the Debian packages that images are built from.
    #[command(subcommand)]
    Packages(packages::PackagesCmd),
    /// Build node images (disk image, upgrade image, checksums), reproducibly.
    #[command(subcommand)]
    Build(build::BuildCmd),
    /// Boot a built image in QEMU and wait for its boot marker.
    #[command(subcommand)]
    Run(run::RunCmd),
    /// The A/B slots of a GuestOS disk: show, install an upgrade image, confirm.
    #[command(subcommand)]
    Slots(slots::SlotsCmd),
    /// SetupOS: inject a node provider's inputs into an image; run the installer's checks.
    #[command(subcommand)]
    Setupos(setupos::SetuposCmd),
    /// Rebuild and compare: prove a build is bit-for-bit reproducible.
    ReproCheck(repro::ReproCheckArgs),
    /// The governance registry as a TUF repository: create, serve, refresh, rotate, fetch.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
    /// Governance: propose registry changes, vote, execute, show.
    #[command(subcommand)]
    Gov(gov::GovCmd),
}

/// Runs one subcommand.
pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Config(c) => config::run(c),
        Command::Net(c) => net::run(c),
        Command::Grubenv(c) => grubenv::run(c),
        Command::Layout(c) => layout::run(c),
        Command::Node(c) => node::run(c),
        Command::Packages(c) => packages::run(c),
        Command::Build(c) => build::run(c),
        Command::Run(c) => run::run(c),
        Command::Slots(c) => slots::run(c),
        Command::Setupos(c) => setupos::run(c),
        Command::ReproCheck(a) => repro::run(a),
        Command::Registry(c) => registry::run(c),
        Command::Gov(c) => gov::run(c),
    }
}
