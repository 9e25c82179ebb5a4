//! The error type: every variant names the disk (or the upgrade image) and,
//! where there is one, the partition. Causes are part of the message (fields
//! named `cause`, not `source`), so a chain printer shows each once.

use std::io;
use std::path::PathBuf;

use icos_grubenv::{ParseError, StateError, TransitionError};
use icos_layout::TableError;

/// Why reading, installing into or committing a slot failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    /// The disk could not be opened.
    #[error("opening disk {disk}: {cause}")]
    Open {
        /// The disk.
        disk: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The disk has no usable GPT.
    #[error("disk {disk}: {}", chain(cause))]
    Gpt {
        /// The disk.
        disk: PathBuf,
        /// What is wrong with the table.
        cause: TableError,
    },
    /// A partition the A/B scheme needs is not in the GPT.
    #[error("disk {disk}: no partition named {name} in the GPT (it has: {found})")]
    MissingPartition {
        /// The disk.
        disk: PathBuf,
        /// The missing partition name.
        name: &'static str,
        /// The names the GPT has.
        found: String,
    },
    /// A partition lies (partly) outside the disk.
    #[error(
        "disk {disk}: partition {name} ends at byte {end}, beyond the end of the {disk_size}-byte disk"
    )]
    PartitionOutside {
        /// The disk.
        disk: PathBuf,
        /// The partition.
        name: String,
        /// Its end in bytes.
        end: u64,
        /// The disk size in bytes.
        disk_size: u64,
    },
    /// The grubenv file could not be found or is not a 1024-byte file.
    #[error("disk {disk}: partition {partition}: grubenv: {reason}")]
    GrubenvFile {
        /// The disk.
        disk: PathBuf,
        /// The grub partition.
        partition: String,
        /// What is wrong.
        reason: String,
    },
    /// The grubenv block is corrupt.
    #[error("disk {disk}: partition {partition}: grubenv: {cause}")]
    GrubenvBlock {
        /// The disk.
        disk: PathBuf,
        /// The grub partition.
        partition: String,
        /// What is wrong with the block.
        cause: ParseError,
    },
    /// The grubenv block holds an invalid boot state.
    #[error("disk {disk}: partition {partition}: grubenv: {cause}")]
    GrubenvState {
        /// The disk.
        disk: PathBuf,
        /// The grub partition.
        partition: String,
        /// The invalid value.
        cause: StateError,
    },
    /// The new boot state does not fit in the 1024-byte block.
    #[error("disk {disk}: partition {partition}: grubenv: {reason}")]
    GrubenvFull {
        /// The disk.
        disk: PathBuf,
        /// The grub partition.
        partition: String,
        /// Why it does not fit.
        reason: String,
    },
    /// The boot state does not allow the operation (for example an install
    /// while the running slot is still on trial).
    #[error("disk {disk}: {cause}")]
    Refused {
        /// The disk.
        disk: PathBuf,
        /// The refused transition.
        cause: TransitionError,
    },
    /// Reading or writing the disk failed.
    #[error(
        "disk {disk}: {action} partition {partition} at byte {offset} of the partition: {cause}"
    )]
    Io {
        /// The disk.
        disk: PathBuf,
        /// The partition (or `-` for the whole disk).
        partition: String,
        /// What was being done.
        action: &'static str,
        /// Byte offset inside the partition.
        offset: u64,
        /// The I/O error.
        cause: io::Error,
    },
    /// Syncing the disk failed.
    #[error("disk {disk}: fsync after {after}: {cause}")]
    Sync {
        /// The disk.
        disk: PathBuf,
        /// The step whose writes were being synced.
        after: &'static str,
        /// The I/O error.
        cause: io::Error,
    },
    /// The upgrade image could not be read as a (zstd-compressed) tar.
    #[error("upgrade image {update}: {cause}")]
    Archive {
        /// The upgrade image.
        update: PathBuf,
        /// The read or format error.
        cause: icos_sparse_tar::Error,
    },
    /// The upgrade image holds a member other than boot.img, root.img and
    /// VERSION.TXT, or one of them twice or not as a regular file.
    #[error("upgrade image {update}: member {member}: {reason}")]
    BadMember {
        /// The upgrade image.
        update: PathBuf,
        /// The member name.
        member: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The upgrade image lacks a required member.
    #[error(
        "upgrade image {update}: no member {member} (an upgrade image holds boot.img, root.img and VERSION.TXT)"
    )]
    MissingMember {
        /// The upgrade image.
        update: PathBuf,
        /// The missing member.
        member: &'static str,
    },
    /// A member is larger than the partition it is meant for.
    #[error(
        "upgrade image {update}: member {member} is {size} bytes, larger than partition {partition} of disk {disk} ({partition_size} bytes)"
    )]
    TooLarge {
        /// The upgrade image.
        update: PathBuf,
        /// The member.
        member: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The disk.
        disk: PathBuf,
        /// The target partition.
        partition: String,
        /// The partition size in bytes.
        partition_size: u64,
    },
    /// What was read back from a partition differs from what was written.
    #[error(
        "disk {disk}: partition {partition}: the data read back has SHA-256 {actual}, but the data of {member} from the upgrade image has {expected}; the slot was invalidated again"
    )]
    Verify {
        /// The disk.
        disk: PathBuf,
        /// The partition.
        partition: String,
        /// The member written into it.
        member: &'static str,
        /// SHA-256 of the member's data extents (header included) as
        /// read from the upgrade image.
        expected: String,
        /// SHA-256 of the same ranges of the partition as read back.
        actual: String,
    },
    /// A range of a partition that was zeroed for a hole of a member is
    /// not zero when read back.
    #[error(
        "disk {disk}: partition {partition}: byte {offset} is a hole of {member} and was zeroed, but reads back non-zero; the slot was invalidated again"
    )]
    NotZero {
        /// The disk.
        disk: PathBuf,
        /// The partition.
        partition: String,
        /// The member written into it.
        member: &'static str,
        /// Byte offset inside the partition.
        offset: u64,
    },
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

impl SlotsError {
    /// Whether the input is at fault (a disk without the A/B layout, a
    /// corrupt grubenv, a bad or oversized upgrade image, a missing disk
    /// file) rather than the system (I/O, a failed verification) or the boot
    /// state (a refused transition).
    pub fn is_bad_input(&self) -> bool {
        match self {
            SlotsError::Open { cause, .. } => cause.kind() == io::ErrorKind::NotFound,
            SlotsError::Gpt { cause, .. } => cause.is_bad_input(),
            SlotsError::MissingPartition { .. }
            | SlotsError::PartitionOutside { .. }
            | SlotsError::GrubenvFile { .. }
            | SlotsError::GrubenvBlock { .. }
            | SlotsError::GrubenvState { .. }
            | SlotsError::GrubenvFull { .. }
            | SlotsError::Archive { .. }
            | SlotsError::BadMember { .. }
            | SlotsError::MissingMember { .. }
            | SlotsError::TooLarge { .. } => true,
            SlotsError::Refused { .. }
            | SlotsError::Io { .. }
            | SlotsError::Sync { .. }
            | SlotsError::Verify { .. }
            | SlotsError::NotZero { .. } => false,
        }
    }
}
