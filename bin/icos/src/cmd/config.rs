//! `icos config`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos config` subcommand.
pub fn run(cmd: ConfigCmd) -> CmdResult {
    match cmd {
        ConfigCmd::Placeholder => Ok(()),
    }
}
