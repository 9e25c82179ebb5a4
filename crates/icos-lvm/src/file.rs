//! Path helpers: a PV region inside an image file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::read::{PhysicalVolume, ReadError, read_pv};
use crate::spec::VolumeGroupSpec;
use crate::write::{WriteError, write_pv};

/// A PV read or write on a file that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct FileError {
    /// The image file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub kind: FileErrorKind,
}

/// What failed in a [`FileError`].
#[derive(Debug, thiserror::Error)]
pub enum FileErrorKind {
    /// Opening the file.
    #[error("opening: {0}")]
    Open(#[source] std::io::Error),
    /// Writing the PV.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading the PV.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Writes the PV header region of `spec` at byte `base` of the file at
/// `path`, which must exist (its other bytes are kept).
pub fn write_pv_file(path: &Path, base: u64, spec: &VolumeGroupSpec) -> Result<(), FileError> {
    let err = |kind| FileError {
        path: path.to_owned(),
        kind,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| err(FileErrorKind::Open(e)))?;
    write_pv(&mut file, base, spec).map_err(|e| err(e.into()))
}

/// Reads the PV whose region starts at byte `base` of the file at `path`.
pub fn read_pv_file(path: &Path, base: u64) -> Result<PhysicalVolume, FileError> {
    let err = |kind| FileError {
        path: path.to_owned(),
        kind,
    };
    let mut file = std::fs::File::open(path).map_err(|e| err(FileErrorKind::Open(e)))?;
    read_pv(&mut file, base).map_err(|e| err(e.into()))
}
