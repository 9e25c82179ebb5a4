//! Reading and writing blocks on streams and files.
//!
//! # Durability
//!
//! [`GrubEnv::store`] writes a file with [`icos_fs::write_atomic`]: the new
//! block goes to a temporary file in the same directory, which is fsynced and
//! renamed over the old one, and then the directory is fsynced. A crash
//! leaves either the old block or the new one, never a mix:
//!
//! - on ext4 and other journaling file systems the rename is atomic;
//! - on the FAT grub partition of an IC-OS disk (which the HostOS VM runner
//!   mounts as vfat to refresh the guest's block), the switch is the update
//!   of one 32-byte directory entry, inside one sector; the old file's
//!   clusters stay untouched until then.
//!
//! Rewriting the 1024 bytes in place would be one write call, but it spans
//! two 512-byte sectors, and a device may persist one without the other: a
//! torn block with a new first half and an old second half. GRUB's own
//! `save_env` does write in place, because a boot loader cannot allocate; a
//! renamed file is still exactly 1024 bytes, so GRUB finds and rewrites it as
//! before. IC's own tools also replace the file by renaming.
//!
//! For a block inside a device or an image that is open already, use
//! [`GrubEnv::write_to`], which writes the 1024 bytes in one call; the caller
//! syncs the handle.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use icos_fs::FsError;

use crate::block::{BLOCK_SIZE, GrubEnv, OverflowError, ParseError, parse};

/// A failure to load or store a grubenv file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading grubenv {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The file is not a valid block.
    #[error("{path}: {cause}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        cause: ParseError,
    },
    /// The variables do not fit in the block, so nothing was written.
    #[error("{path}: {cause}")]
    Overflow {
        /// The file.
        path: PathBuf,
        /// How much space was needed.
        cause: OverflowError,
    },
    /// The durable write failed; the old file is unchanged.
    #[error("writing grubenv {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The failed step.
        cause: FsError,
    },
}

impl Error {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Read { path, .. }
            | Error::Parse { path, .. }
            | Error::Overflow { path, .. }
            | Error::Write { path, .. } => path,
        }
    }

    /// Whether the content is at fault (a corrupt block, too many variables)
    /// rather than the system (a missing file, a failed write).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Parse { .. } | Error::Overflow { .. })
    }

    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Read { cause, .. } if cause.kind() == io::ErrorKind::NotFound)
    }
}

/// A failure to read or write a block on a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading or writing failed.
    #[error("grubenv block i/o: {0}")]
    Io(io::Error),
    /// The bytes read are not a valid block.
    #[error("{0}")]
    Parse(ParseError),
    /// The variables do not fit in the block; nothing was written.
    #[error("{0}")]
    Overflow(OverflowError),
}

impl GrubEnv {
    /// Reads a block from the current position of `reader` to its end, which
    /// must be exactly [`BLOCK_SIZE`] bytes.
    pub fn read_from<R: Read>(reader: R) -> Result<GrubEnv, StreamError> {
        let mut bytes = Vec::with_capacity(BLOCK_SIZE);
        // One byte more than a block is enough to tell that it is too long.
        let limit = u64::try_from(BLOCK_SIZE + 1).unwrap_or(u64::MAX);
        reader
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(StreamError::Io)?;
        if bytes.len() > BLOCK_SIZE {
            return Err(StreamError::Parse(ParseError::WrongSize {
                actual: bytes.len(),
            }));
        }
        parse(&bytes).map_err(StreamError::Parse)
    }

    /// Writes the block at the start of `writer` (it seeks there first, so a
    /// handle that was just read can be rewritten) as one 1024-byte write,
    /// then flushes. Nothing is written if the variables do not fit.
    ///
    /// A longer stream keeps its bytes after the block; syncing a file to
    /// disk is the caller's choice.
    pub fn write_to<W: Write + Seek>(&self, mut writer: W) -> Result<(), StreamError> {
        let bytes = self.to_bytes().map_err(StreamError::Overflow)?;
        writer.seek(SeekFrom::Start(0)).map_err(StreamError::Io)?;
        writer.write_all(&bytes).map_err(StreamError::Io)?;
        writer.flush().map_err(StreamError::Io)
    }

    /// Reads and parses the grubenv file at `path`.
    pub fn load(path: &Path) -> Result<GrubEnv, Error> {
        let bytes = fs::read(path).map_err(|cause| Error::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        parse(&bytes).map_err(|cause| Error::Parse {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// Like [`GrubEnv::load`], but a missing file gives [`GrubEnv::new`], as
    /// `grub-editenv FILE set` and `unset` treat it.
    pub fn load_or_new(path: &Path) -> Result<GrubEnv, Error> {
        match GrubEnv::load(path) {
            Err(e) if e.is_not_found() => Ok(GrubEnv::new()),
            other => other,
        }
    }

    /// Writes the block to `path` atomically and durably (see the module
    /// docs). If the variables do not fit, the file is left as it was.
    pub fn store(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.to_bytes().map_err(|cause| Error::Overflow {
            path: path.to_path_buf(),
            cause,
        })?;
        icos_fs::write_atomic(path, &bytes).map_err(|cause| Error::Write {
            path: path.to_path_buf(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample() -> GrubEnv {
        let mut env = GrubEnv::new();
        env.set("boot_alternative", "B").unwrap();
        env.set("note", "two\nlines").unwrap();
        env
    }

    #[test]
    fn stream_round_trip_rewrites_from_the_start() {
        let mut cursor = Cursor::new(Vec::new());
        sample().write_to(&mut cursor).unwrap();
        assert_eq!(cursor.get_ref().len(), BLOCK_SIZE);
        cursor.set_position(0);
        let mut env = GrubEnv::read_from(&mut cursor).unwrap();
        assert_eq!(env, sample());
        env.set("note", "x").unwrap();
        env.write_to(&mut cursor).unwrap();
        assert_eq!(cursor.get_ref().len(), BLOCK_SIZE);
        assert_eq!(
            GrubEnv::read_from(Cursor::new(cursor.into_inner())).unwrap(),
            env
        );
    }

    #[test]
    fn stream_of_wrong_length_is_rejected() {
        let err = GrubEnv::read_from(Cursor::new(vec![b'#'; 5000])).unwrap_err();
        assert!(matches!(
            err,
            StreamError::Parse(ParseError::WrongSize { actual: 1025 })
        ));
        let err = GrubEnv::read_from(Cursor::new(vec![b'#'; 10])).unwrap_err();
        assert!(matches!(
            err,
            StreamError::Parse(ParseError::WrongSize { actual: 10 })
        ));
    }

    #[test]
    fn overflow_writes_nothing_to_a_stream() {
        let mut env = GrubEnv::new();
        env.set("big", &"x".repeat(2000)).unwrap();
        let mut cursor = Cursor::new(b"old".to_vec());
        assert!(matches!(
            env.write_to(&mut cursor),
            Err(StreamError::Overflow(_))
        ));
        assert_eq!(cursor.into_inner(), b"old");
    }

    #[test]
    fn file_store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        sample().store(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1024);
        assert_eq!(GrubEnv::load(&path).unwrap(), sample());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_is_named_and_load_or_new_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let err = GrubEnv::load(&path).unwrap_err();
        assert!(err.is_not_found());
        assert!(!err.is_bad_input());
        assert!(err.to_string().contains("absent"), "{err}");
        assert_eq!(GrubEnv::load_or_new(&path).unwrap(), GrubEnv::new());
    }

    #[test]
    fn corrupt_file_is_bad_input_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        fs::write(&path, b"garbage").unwrap();
        let err = GrubEnv::load(&path).unwrap_err();
        assert!(err.is_bad_input());
        assert_eq!(err.path(), path);
        let msg = err.to_string();
        assert!(msg.contains("grubenv") && msg.contains("7 bytes"), "{msg}");
        // load_or_new does not paper over a corrupt file.
        assert!(GrubEnv::load_or_new(&path).is_err());
    }

    #[test]
    fn overflow_leaves_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        sample().store(&path).unwrap();
        let mut env = sample();
        env.set("big", &"x".repeat(1000)).unwrap();
        let err = env.store(&path).unwrap_err();
        assert!(err.is_bad_input());
        let msg = err.to_string();
        assert!(msg.contains("overflow") && msg.contains("grubenv"), "{msg}");
        assert_eq!(GrubEnv::load(&path).unwrap(), sample());
    }
}
