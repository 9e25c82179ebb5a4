//! `icos run`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos run` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos run` subcommand.
pub fn run(cmd: RunCmd) -> CmdResult {
    match cmd {
        RunCmd::Placeholder => Ok(()),
    }
}
