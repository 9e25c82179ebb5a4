//! The error type: every variant names the target (file or device) and,
//! where there is one, the byte offset inside the window written.

use std::io;
use std::path::PathBuf;

/// Why writing or checking an image failed. Offsets are relative to the
/// window written (the partition, or the whole file).
#[derive(Debug, thiserror::Error)]
pub enum DiskWriteError {
    /// Reading, writing or zeroing the target failed.
    #[error("{}: {action} at byte {offset}: {cause}", target.display())]
    Io {
        /// The file or device.
        target: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Where.
        offset: u64,
        /// The I/O error.
        cause: io::Error,
    },
    /// Data came for bytes that are out of order or outside the image.
    #[error("{}: {len} bytes at byte {offset}: {reason}", target.display())]
    Order {
        /// The file or device.
        target: PathBuf,
        /// Where the data was meant to go.
        offset: u64,
        /// How much.
        len: u64,
        /// What is wrong.
        reason: String,
    },
    /// The data read back differs from what was written.
    #[error(
        "{}: the data read back does not match what was written (SHA-256 {actual}, expected {expected})",
        target.display()
    )]
    Verify {
        /// The file or device.
        target: PathBuf,
        /// SHA-256 of the data extents as written.
        expected: String,
        /// SHA-256 of what was read back.
        actual: String,
    },
    /// A range that was zeroed is not zero.
    #[error("{}: byte {offset} should be zero after writing the image, and is not", target.display())]
    NotZero {
        /// The file or device.
        target: PathBuf,
        /// The first non-zero byte found.
        offset: u64,
    },
}

pub(crate) fn io_err(
    target: &std::path::Path,
    action: &'static str,
    offset: u64,
) -> impl FnOnce(io::Error) -> DiskWriteError + use<> {
    let target = target.to_path_buf();
    move |cause| DiskWriteError::Io {
        target,
        action,
        offset,
        cause,
    }
}
