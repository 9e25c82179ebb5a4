//! `icos build`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos build` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuildCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos build` subcommand.
pub fn run(cmd: BuildCmd) -> CmdResult {
    match cmd {
        BuildCmd::Placeholder => Ok(()),
    }
}
