//! The error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing, listing or extracting an
/// archive. Every variant names the file, archive or member it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O step on a file or directory failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done, e.g. "reading", "creating".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A source given to the writer is not a regular file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The source path.
        path: PathBuf,
    },
    /// A member name is not acceptable (empty, absolute, contains `..`, NUL,
    /// or is not a plain relative path).
    #[error("{name:?}: unsafe or invalid member name: {reason}")]
    BadName {
        /// The name as given or as found in the archive.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Two sources were given the same member name.
    #[error("{name}: given twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A mode has bits outside 0o7777.
    #[error("{name}: mode {mode:#o} has bits outside 0o7777")]
    BadMode {
        /// The member name.
        name: String,
        /// The offending mode.
        mode: u32,
    },
    /// A source file changed size or content layout while it was archived.
    #[error("{path}: file changed while it was being archived")]
    FileChanged {
        /// The source path.
        path: PathBuf,
    },
    /// The archive is malformed.
    #[error("{archive}: at byte {offset}: {reason}")]
    Format {
        /// The archive (or `<stream>` for an anonymous reader).
        archive: PathBuf,
        /// Offset in the (uncompressed) tar stream of the offending block.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The archive holds a member type this crate does not handle
    /// (links, devices, FIFOs, pax headers, ...).
    #[error("{archive}: member {name:?}: unsupported type flag {typeflag:?}")]
    Unsupported {
        /// The archive.
        archive: PathBuf,
        /// The member name.
        name: String,
        /// The member's type flag as a character.
        typeflag: char,
    },
    /// Extraction would have gone through a symbolic link or replaced
    /// something that is not a regular file or directory.
    #[error("{path}: refusing to extract through or over a non-regular file")]
    UnsafeTarget {
        /// The path inside the destination directory.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
