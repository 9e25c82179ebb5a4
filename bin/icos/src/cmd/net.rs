//! `icos net`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos net` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos net` subcommand.
pub fn run(cmd: NetCmd) -> CmdResult {
    match cmd {
        NetCmd::Placeholder => Ok(()),
    }
}
