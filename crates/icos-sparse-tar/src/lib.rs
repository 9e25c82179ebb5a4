//! Deterministic, sparse-aware GNU tar archives, plain or zstd-compressed.
//!
//! IC-OS ships its disk images (`disk-img.tar.zst`: one `disk.img` of tens
//! of GiB that is mostly holes) and upgrade images (`update-img.tar.zst`:
//! `boot.img`, `root.img`, `VERSION.TXT`) as tar archives with these
//! properties, and verifiers rebuild them bit for bit. This crate writes
//! exactly the bytes GNU tar 1.34 writes for
//!
//! ```text
//! TZ=UTC SOURCE_DATE_EPOCH=0 tar -cf OUT --sort=name --mtime='UTC 1970-01-01' \
//!     --owner=root:0 --group=root:0 --numeric-owner \
//!     --sparse --hole-detection=raw --format=gnu NAME...
//! ```
//!
//! (names given in sorted order), and reads such archives back.
//!
//! # The format written
//!
//! * Members are regular files only, sorted by name (byte order), each with
//!   mode 0644 unless given, uid/gid 0, mtime 0, no atime/ctime, GNU magic
//!   `"ustar  \0"`. The uname/gname fields stay empty, as with
//!   `--numeric-owner`; [`OwnerNames::Root`] stores `root`/`root` instead,
//!   which is what the same command without `--numeric-owner` writes.
//! * Names longer than 100 bytes are carried by a preceding
//!   `././@LongLink` (type `L`) member, as GNU tar does.
//! * A file that is sparse on disk (`st_blocks` below its size in 512-byte
//!   units) becomes an old-GNU sparse member (type `S`), with extension
//!   blocks when the map has more than 4 entries. Its map is what GNU tar's
//!   raw hole detection finds: runs of 512-byte chunks that are not all
//!   zero — so an *allocated* all-zero chunk inside a sparse file is a hole
//!   too. Holes are skipped with `SEEK_DATA`/`SEEK_HOLE` instead of read.
//!   A file that is not sparse on disk is a plain member even if it holds
//!   zeros, again like GNU tar. See the `scan` module source for the rules.
//! * The archive ends with at least two zero blocks, padded to a multiple
//!   of 10240 bytes (GNU tar's record size).
//!
//! Because the sparse/not-sparse decision reads `st_blocks`, the same bytes
//! stored on a filesystem with a different allocation (or copied without
//! preserving holes) can give a different archive; keep inputs on a
//! filesystem with 4096-byte blocks, as IC-OS builds do.
//!
//! # Compression
//!
//! [`Plan::write_tar_zst`] compresses with libzstd using the settings of the
//! `zstd` command on a file: checksum on, content size recorded. Output is a
//! pure function of the tar bytes, the level, whether workers are used at
//! all (`workers == 0` is single-threaded mode, which produces different
//! bytes than any `workers >= 1`) and the libzstd version; it does not depend
//! on the number of workers once there is at least one.
//!
//! # Reading
//!
//! [`list`] and [`extract`] read plain or zstd-compressed archives (detected
//! by the zstd magic), understand regular, directory, long-name and old-GNU
//! sparse members, recreate holes on extraction (the file is sized first,
//! then only data segments are written) and refuse absolute names, `..`,
//! and writing through symbolic links.
//!
//! # Example
//!
//! ```no_run
//! use icos_sparse_tar::{TarBuilder, ZstdOptions};
//! # fn main() -> Result<(), icos_sparse_tar::Error> {
//! let mut builder = TarBuilder::new();
//! builder.add_file("root.img", "/tmp/build/root.img");
//! builder.add_file("boot.img", "/tmp/build/boot.img");
//! builder.add_file("VERSION.TXT", "/tmp/build/version.txt");
//! let plan = builder.plan(&mut |_| {})?;
//! let summary = plan.write_tar_zst(
//!     "update-img.tar.zst".as_ref(),
//!     &ZstdOptions::default(),
//!     &mut |p| eprintln!("{:?} {}/{:?}", p.phase, p.done, p.total),
//! )?;
//! println!("{} bytes of tar, {} compressed", summary.tar_size, summary.compressed_size);
//! # Ok(())
//! # }
//! ```

mod error;
mod header;
mod read;
mod readahead;
mod scan;
mod write;

pub use error::Error;
pub use read::{Visitor, extract, extract_file, list, list_file, visit};
pub use write::{OwnerNames, Plan, TarBuilder, ZstSummary, ZstdOptions};

/// One data segment of a sparse file: `length` bytes at `offset` hold data;
/// everything outside the segments is a hole. A zero-length segment at the
/// file's size marks a file that ends in a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Byte offset in the expanded file.
    pub offset: u64,
    /// Number of data bytes.
    pub length: u64,
}

/// What kind of member an archive entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A plain file (type `0`): all bytes are stored.
    File,
    /// An old-GNU sparse file (type `S`): only the segments are stored.
    SparseFile,
    /// A directory (type `5`).
    Directory,
}

/// A member of an archive, as listed, extracted or planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Member name as stored.
    pub name: String,
    /// Member kind.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Size of the file once extracted.
    pub size: u64,
    /// Bytes of file data stored in the archive (the header's size field).
    pub stored_size: u64,
    /// The data map of a sparse member; `None` for other kinds.
    pub sparse_map: Option<Vec<Segment>>,
}

/// Which step a [`Progress`] report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the allocated parts of the sources to find zero chunks.
    Scan,
    /// Copying data into the archive.
    Write,
    /// Writing data out of an archive.
    Extract,
}

/// A progress report: `done` of `total` bytes in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The step being reported.
    pub phase: Phase,
    /// Bytes processed so far in this phase.
    pub done: u64,
    /// Bytes this phase will process, when known in advance.
    pub total: Option<u64>,
}
