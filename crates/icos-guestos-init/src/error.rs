//! Why an early-boot step failed.

use std::path::{Path, PathBuf};

/// What the steps return.
pub type Result<T> = std::result::Result<T, InitError>;

/// An early-boot step failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file or folder could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No CONFIG media appeared.
    #[error(
        "no CONFIG media (a FAT file system labelled CONFIG on a removable disk) after {tries} tries; looked at: {looked}"
    )]
    NoMedia {
        /// How often the block devices were scanned.
        tries: u32,
        /// The devices seen on the last scan.
        looked: String,
    },
    /// The CONFIG media is not usable.
    #[error(transparent)]
    Media(#[from] icos_config_media::MediaError),
    /// The config asks for something this step cannot do.
    #[error("{field}: {reason}")]
    Config {
        /// The config field, e.g. `network_settings.ipv6_config`.
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// A program failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its status and the end of its error output.
        detail: String,
    },
    /// Nothing turns the ACPI power button into a clean power-off.
    #[error(
        "the ACPI power button is not watched after {secs} s: {detail}; the host's graceful shutdown (one button press) would be lost"
    )]
    PowerButton {
        /// How long the step waited.
        secs: u64,
        /// What was missing.
        detail: String,
    },
    /// The payload did not answer in time.
    #[error("the replica did not become ready at {url} within {secs} s: {last}")]
    NotReady {
        /// What was asked.
        url: String,
        /// How long it was given.
        secs: u64,
        /// The last answer or error.
        last: String,
    },
}

impl InitError {
    /// An [`InitError::Command`] for a program that ran and failed: its exit
    /// status and its error output, trimmed.
    pub fn failed(command: String, out: &std::process::Output) -> InitError {
        InitError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// An [`InitError::Io`] maker for `map_err`.
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
        let path = path.to_path_buf();
        move |source| InitError::Io {
            action,
            path,
            source,
        }
    }
}

impl From<icos_config::Ipv6ConfigError> for InitError {
    fn from(e: icos_config::Ipv6ConfigError) -> Self {
        InitError::Config {
            field: e.field,
            reason: e.reason,
        }
    }
}
