//! `icos repro-check`.

use clap::Args;

use crate::exit::CmdResult;

/// Arguments of `icos repro-check`.
#[derive(Debug, Args)]
pub struct ReproCheckArgs {}

/// Runs `icos repro-check`.
pub fn run(_args: ReproCheckArgs) -> CmdResult {
    Ok(())
}
