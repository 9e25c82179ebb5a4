//! `icos layout`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos layout` subcommands.
#[derive(Debug, Subcommand)]
pub enum LayoutCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos layout` subcommand.
pub fn run(cmd: LayoutCmd) -> CmdResult {
    match cmd {
        LayoutCmd::Placeholder => Ok(()),
    }
}
