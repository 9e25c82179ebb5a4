//! Errors of the repository side (init, propose, vote, execute).

use std::path::{Path, PathBuf};

use crate::model::Violations;
use crate::proposal::ProposalError;

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A key file is unusable.
    #[error("key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file in the repository is not what it should be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The caller's input broke a rule (threshold, key count, ...).
    #[error("{0}")]
    Usage(String),
    /// The proposal cannot be applied to the current registry.
    #[error("proposal {path}: {error}")]
    Proposal {
        /// The proposal file, or the kind when not yet written.
        path: PathBuf,
        /// Why.
        error: ProposalError,
    },
    /// The proposal was made against an older registry.
    #[error(
        "proposal {path} was made against targets version {base}, but the repository is at version {current}; propose again"
    )]
    Stale {
        /// The proposal file.
        path: PathBuf,
        /// The version it was made against.
        base: u64,
        /// The version the repository is at.
        current: u64,
    },
    /// The proposal was already executed.
    #[error("proposal {0} was already executed")]
    AlreadyExecuted(PathBuf),
    /// A key that is not a governance key tried to vote.
    #[error("key {path} (key id {key_id}) is not a governance key of this registry")]
    NotGovernanceKey {
        /// The key file.
        path: PathBuf,
        /// Its key id.
        key_id: String,
    },
    /// Not enough valid votes.
    #[error(
        "proposal {path} has {have} valid governance vote(s), {need} needed (threshold {need} of {of}); execution refused"
    )]
    BelowThreshold {
        /// The proposal file.
        path: PathBuf,
        /// Valid votes.
        have: usize,
        /// Threshold.
        need: usize,
        /// Number of governance keys.
        of: usize,
    },
    /// A vote in the proposal file does not verify.
    #[error("proposal {path}: the vote of key id {key_id} does not verify; remove it")]
    BadVote {
        /// The proposal file.
        path: PathBuf,
        /// The key id it claims.
        key_id: String,
    },
    /// The registry document broke a rule.
    #[error("{path}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The violations.
        error: Violations,
    },
    /// A join request was refused.
    #[error("join request refused: {0}")]
    Join(crate::join::JoinError),
    /// The online (snapshot/timestamp) key does not match the root.
    #[error("key {path} is not the {role} key of this registry")]
    WrongOnlineKey {
        /// The key file.
        path: PathBuf,
        /// The role it was meant for.
        role: &'static str,
    },
}

impl RepoError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        RepoError::Io {
            path: path.to_owned(),
            error,
        }
    }

    pub(crate) fn key(path: &Path, reason: impl Into<String>) -> Self {
        RepoError::Key {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        RepoError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether the caller's input is at fault (exit 2), rather than the
    /// operation failing (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RepoError::Key { .. }
                | RepoError::Usage(_)
                | RepoError::Proposal { .. }
                | RepoError::NotGovernanceKey { .. }
                | RepoError::WrongOnlineKey { .. }
                | RepoError::Invalid { .. }
                | RepoError::Join(_)
        )
    }
}
