//! Why building or reading a CONFIG media failed.

use std::path::PathBuf;

/// Building or reading a CONFIG media failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The GuestOS config breaks a rule; nothing was written.
    #[error("the GuestOS config is invalid:\n{0}")]
    InvalidConfig(icos_config::Problems),
    /// The GuestOS config could not be serialized.
    #[error("serializing the GuestOS config: {0}")]
    Serialize(#[source] serde_json::Error),
    /// An input file (an extra) could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadInput {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An input file (an extra) breaks a rule.
    #[error("{}: {reason}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// The rule it breaks.
        reason: String,
    },
    /// A file or folder could not be created or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "creating", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A host tool could not be started.
    #[error("running {program}: {source}{hint}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
        /// Which Debian package provides it, when it is missing.
        hint: &'static str,
    },
    /// A host tool failed.
    #[error("{command} failed ({status}): {stderr}")]
    Tool {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// The media is not a CONFIG media: no `ic-bootstrap.tar`, a broken
    /// archive, a missing or unreadable `config.json`, an oversized member.
    #[error("{}: {reason}", media.display())]
    BadMedia {
        /// The media (or the archive) read.
        media: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl MediaError {
    /// Whether the error is about the caller's input (an invalid config, an
    /// unreadable or malformed extra, a media that is not a CONFIG media)
    /// rather than about the host (a missing tool, a full disk).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            MediaError::InvalidConfig(_)
                | MediaError::ReadInput { .. }
                | MediaError::BadInput { .. }
                | MediaError::BadMedia { .. }
        )
    }
}
