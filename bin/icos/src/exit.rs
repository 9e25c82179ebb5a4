//! Exit codes of the `icos` command, and the error type that carries them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | failure: the command was valid but could not be carried out |
//! | 2    | usage error or bad input: a flag, a file or a value broke a rule |

use std::fmt;
use std::process::ExitCode;

/// Why a subcommand failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The input (flags, files, values) broke a rule: exit 2.
    BadInput(anyhow::Error),
    /// The command could not be carried out: exit 1.
    Failed(anyhow::Error),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::BadInput(_) => ExitCode::from(2),
            Failure::Failed(_) => ExitCode::from(1),
        }
    }

    fn error(&self) -> &anyhow::Error {
        match self {
            Failure::BadInput(e) | Failure::Failed(e) => e,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` prints the whole context chain on one line: "reading X: cause".
        write!(f, "{:#}", self.error())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

/// What every subcommand returns.
pub type CmdResult<T = ()> = Result<T, Failure>;

/// Tags a result's error as bad input (exit 2) or as a failure (exit 1).
pub trait Classify<T> {
    /// The error means the user's input broke a rule: exit 2.
    fn bad_input(self) -> CmdResult<T>;
    /// The error means the command could not be carried out: exit 1.
    fn failed(self) -> CmdResult<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn bad_input(self) -> CmdResult<T> {
        self.map_err(|e| Failure::BadInput(e.into()))
    }
    fn failed(self) -> CmdResult<T> {
        self.map_err(|e| Failure::Failed(e.into()))
    }
}
