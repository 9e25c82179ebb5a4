//! `icos`: build, configure and inspect IC-OS node images.
//!
//! The main only parses the command line, sets up logging, runs the chosen
//! subcommand and maps its outcome to an exit code (see [`exit`]).

mod cmd;
mod exit;

use std::process::ExitCode;

use clap::Parser;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  failure: the command was valid but could not be carried out
  2  usage error or bad input: a flag, a file or a value broke a rule";

/// Build, configure and inspect IC-OS node images (SetupOS, HostOS, GuestOS).
#[derive(Debug, Parser)]
#[command(name = "icos", version, about, after_help = AFTER_HELP, propagate_version = true)]
#[command(help_expected = true)]
struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "warn");
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
