//! Why a pass of the orchestrator failed.

use std::path::PathBuf;

/// An orchestrator error, naming the file, URL or record involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No registry could be verified and none was kept.
    #[error("registry: {0}")]
    Registry(#[from] icos_registry::FetchError),
    /// This node is not in the registry.
    #[error("registry version {registry_version}: no node {selector}")]
    NodeNotFound {
        /// How the node was looked for.
        selector: String,
        /// The registry version searched.
        registry_version: u64,
    },
    /// The registry names a version it has no elected record for.
    #[error("registry version {registry_version}: {kind} version {version:?} is not elected")]
    NotElected {
        /// `GuestOS` or `HostOS`.
        kind: &'static str,
        /// The version.
        version: String,
        /// The registry version.
        registry_version: u64,
    },
    /// A download from every URL failed.
    #[error("downloading {version}: every URL failed: {detail}")]
    Download {
        /// The version.
        version: String,
        /// Each URL's error.
        detail: String,
    },
    /// The downloaded package is not the elected one.
    #[error(
        "{file}: SHA-256 {actual} is not the elected {expected}; deleted, nothing written to the disk"
    )]
    HashMismatch {
        /// The downloaded file (now deleted).
        file: PathBuf,
        /// The registry's hash.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk refused or failed.
    #[error(transparent)]
    Slots(#[from] icos_slots::SlotsError),
    /// The reboot request failed.
    #[error("requesting the reboot: {0}")]
    Reboot(String),
    /// HostOS did not answer or refused.
    #[error("HostOS agent: {0}")]
    HostAgent(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
