//! `icos node`.

use clap::Subcommand;

use crate::exit::CmdResult;

/// `icos node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Placeholder.
    Placeholder,
}

/// Runs an `icos node` subcommand.
pub fn run(cmd: NodeCmd) -> CmdResult {
    match cmd {
        NodeCmd::Placeholder => Ok(()),
    }
}
