//! `icos packages`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos packages` subcommands.
#[derive(Debug, Subcommand)]
pub enum PackagesCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos packages` subcommand.
pub fn run(cmd: PackagesCmd) -> CmdResult {
    match cmd {
        PackagesCmd::Placeholder => Ok(()),
    }
}
