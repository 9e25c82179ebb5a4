//! `icos grubenv`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos grubenv` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrubenvCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos grubenv` subcommand.
pub fn run(cmd: GrubenvCmd) -> CmdResult {
    match cmd {
        GrubenvCmd::Placeholder => Ok(()),
    }
}
