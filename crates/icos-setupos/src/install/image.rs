//! Writing `disk.img` out of a (sparse, zstd-compressed) tar onto a drive
//! or volume, and checking what was written.
//!
//! The archive is read once, streaming, with `icos-sparse-tar`'s reader:
//! the data segments are written at their offsets and the holes between
//! them (and all-zero chunks of a member stored without holes) are made
//! zero with [`Zeroer`], which asks the kernel to zero the range
//! (`fallocate` `PUNCH_HOLE`, then `ZERO_RANGE`; on a block device both
//! become a WRITE ZEROES request, which a virtual disk can turn into a
//! hole) and writes zeros only when neither is supported. Whatever the
//! target held before (an old install, garbage) is gone afterwards: the
//! target's first `disk.img`-size bytes equal the image.
//!
//! **Verification** ([`verify_written`]): after `fsync` the target's pages
//! are dropped from the page cache (`POSIX_FADV_DONTNEED`), so reads come
//! from the device. The data extents are read back and their SHA-256 must
//! equal that of the bytes the archive carried (the archive's zstd
//! checksum was verified while reading it to its end). The zeroed ranges
//! are read back and must be zero: completely with [`HoleCheck::Full`], or
//! with [`HoleCheck::Sample`] the first and last 4 KiB of every range and
//! one 4 KiB block per GiB inside it. Sampling is the default on real
//! drives because a HostOS image is about 100 GiB of mostly holes: reading
//! them all back would take longer than writing the image; the kernel's
//! zeroing either zeroes the whole range or fails.
//!
//! The writing, zeroing and checking are `icos-diskwrite`'s ([`Zeroer`],
//! [`HoleCheck`] and [`Extent`] are re-exported from it); this module picks
//! `disk.img` out of the archive and keeps the installer's error type.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use icos_diskwrite::{DiskWriteError, Position, Window, Writer};
pub use icos_diskwrite::{Extent, HoleCheck, Verified, ZeroMethod, Zeroer};
use icos_sparse_tar::{EntryInfo, EntryKind};

/// The member of a disk image archive that holds the disk.
pub const DISK_IMG: &str = "disk.img";

/// Why an image could not be written or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The archive could not be read (missing, truncated, corrupt).
    #[error("{}: {source}", archive.display())]
    Archive {
        /// The archive.
        archive: PathBuf,
        /// What the reader found.
        #[source]
        source: icos_sparse_tar::Error,
    },
    /// The archive holds no `disk.img`.
    #[error("{}: holds no disk.img (members: {})", archive.display(), if members.is_empty() { "none".to_string() } else { members.join(", ") })]
    MissingMember {
        /// The archive.
        archive: PathBuf,
        /// What it holds.
        members: Vec<String>,
    },
    /// `disk.img` is not a usable member.
    #[error("{}: member disk.img: {reason}", archive.display())]
    BadMember {
        /// The archive.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The image does not fit the target.
    #[error(
        "{}: disk.img is {size} bytes, more than the {capacity} bytes of {}",
        archive.display(),
        target.display()
    )]
    TooLarge {
        /// The archive.
        archive: PathBuf,
        /// The image's size.
        size: u64,
        /// The drive or volume.
        target: PathBuf,
        /// Its size.
        capacity: u64,
    },
    /// Reading, writing or syncing the target failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The data read back differs from what was written.
    #[error(
        "{}: the data read back does not match the image (SHA-256 {actual}, expected {expected})",
        target.display()
    )]
    Verify {
        /// The target.
        target: PathBuf,
        /// SHA-256 of the image's data extents.
        expected: String,
        /// SHA-256 of what was read back.
        actual: String,
    },
    /// A range that was zeroed is not zero.
    #[error("{}: byte {offset} should be zero after writing the image, and is not", target.display())]
    NotZero {
        /// The target.
        target: PathBuf,
        /// The first non-zero byte found.
        offset: u64,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `disk.img` of an image archive, as listed before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The archive.
    pub path: PathBuf,
    /// The size of `disk.img`.
    pub size: u64,
    /// The bytes of it the archive stores (less than `size` when sparse).
    pub stored: u64,
    /// Every member's name.
    pub members: Vec<String>,
}

fn member_name(name: &str) -> &str {
    name.trim_start_matches("./")
}

/// Lists the archive at `path` (reading it to its end, so a truncated or
/// corrupt archive or a bad zstd checksum is found now) and finds its
/// `disk.img`, which must be a regular or sparse file and appear once.
pub fn inspect_archive(path: &Path) -> Result<ImageArchive, ImageError> {
    let entries = icos_sparse_tar::list_file(path).map_err(|source| ImageError::Archive {
        archive: path.to_path_buf(),
        source,
    })?;
    let members: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    let disks: Vec<&EntryInfo> = entries
        .iter()
        .filter(|e| member_name(&e.name) == DISK_IMG)
        .collect();
    match disks.as_slice() {
        [] => Err(ImageError::MissingMember {
            archive: path.to_path_buf(),
            members,
        }),
        [one] if one.kind == EntryKind::Directory => Err(ImageError::BadMember {
            archive: path.to_path_buf(),
            reason: "is a folder".into(),
        }),
        [one] => Ok(ImageArchive {
            path: path.to_path_buf(),
            size: one.size,
            stored: one.stored_size,
            members,
        }),
        _ => Err(ImageError::BadMember {
            archive: path.to_path_buf(),
            reason: "appears more than once".into(),
        }),
    }
}

/// How far a write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteProgress {
    /// Bytes of the image done (written or zeroed).
    pub done: u64,
    /// The image's size.
    pub total: u64,
    /// Bytes of data written so far.
    pub data_written: u64,
    /// Time since the write started.
    pub elapsed: Duration,
}

impl WriteProgress {
    /// Whole per cent of the image done.
    pub fn percent(&self) -> u64 {
        if self.total == 0 {
            100
        } else {
            u64::try_from(u128::from(self.done) * 100 / u128::from(self.total)).unwrap_or(100)
        }
    }

    /// Data written per second, in MiB.
    pub fn mib_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let mib = self.data_written as f64 / f64::from(1u32 << 20);
        if secs > 0.0 { mib / secs } else { 0.0 }
    }
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The drive, volume or file.
    pub target: PathBuf,
    /// The archive.
    pub archive: PathBuf,
    /// The image's size.
    pub image_size: u64,
    /// The ranges written with data.
    pub data: Vec<Extent>,
    /// The ranges made zero.
    pub zeroed: Vec<Extent>,
    /// SHA-256 of the data written, in offset order.
    pub data_sha256: [u8; 32],
    /// How the zeroed ranges were made zero.
    pub zero_method: Option<ZeroMethod>,
    /// Seconds from the first write to the end of the `fsync`.
    pub write_secs: f64,
}

impl Written {
    /// Bytes written with data.
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|e| e.len).sum()
    }

    /// Bytes made zero.
    pub fn zeroed_bytes(&self) -> u64 {
        self.zeroed.iter().map(|e| e.len).sum()
    }
}

/// An error of the shared writer as this module's error.
fn image_err(e: DiskWriteError) -> ImageError {
    match e {
        DiskWriteError::Io {
            target,
            action,
            offset: _,
            cause,
        } => ImageError::Io {
            action,
            path: target,
            source: cause,
        },
        DiskWriteError::Order { ref target, .. } => ImageError::Io {
            action: "writing",
            path: target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        },
        DiskWriteError::Verify {
            target,
            expected,
            actual,
        } => ImageError::Verify {
            target,
            expected,
            actual,
        },
        DiskWriteError::NotZero { target, offset } => ImageError::NotZero { target, offset },
    }
}

/// The visitor that writes `disk.img` into the target.
struct ImageWriter<'a, 'p> {
    archive: &'a ImageArchive,
    window: Option<Window<'a>>,
    writer: Option<Writer<'p, Window<'a>>>,
    progress: Option<&'p mut dyn FnMut(Position)>,
    done: Option<(Window<'a>, icos_diskwrite::Record)>,
    started: Instant,
    found: bool,
    failed: Option<ImageError>,
}

impl ImageWriter<'_, '_> {
    fn stop(&mut self, error: ImageError) -> icos_sparse_tar::Error {
        let path = match &error {
            ImageError::Io { path, .. } => path.clone(),
            _ => self.archive.path.clone(),
        };
        self.failed = Some(error);
        icos_sparse_tar::Error::Io {
            action: "writing",
            path,
            source: io::Error::other("stopped"),
        }
    }
}

impl icos_sparse_tar::Visitor for ImageWriter<'_, '_> {
    fn begin(&mut self, info: &EntryInfo) -> Result<bool, icos_sparse_tar::Error> {
        if member_name(&info.name) != DISK_IMG {
            return Ok(false);
        }
        let archive = self.archive.path.clone();
        if self.found || info.kind == EntryKind::Directory {
            return Err(self.stop(ImageError::BadMember {
                archive,
                reason: "appears more than once, or is a folder".into(),
            }));
        }
        if info.size != self.archive.size {
            return Err(self.stop(ImageError::BadMember {
                archive,
                reason: format!(
                    "is {} bytes now, {} bytes when it was listed: the archive changed",
                    info.size, self.archive.size
                ),
            }));
        }
        self.found = true;
        self.started = Instant::now();
        let (Some(window), Some(progress)) = (self.window.take(), self.progress.take()) else {
            return Ok(false);
        };
        match Writer::new(window, info.size) {
            Ok(w) => self.writer = Some(w.on_progress(progress)),
            Err(e) => return Err(self.stop(image_err(e))),
        }
        Ok(true)
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), icos_sparse_tar::Error> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        w.data(offset, bytes).map_err(|e| self.stop(image_err(e)))
    }

    fn end(&mut self, _: &EntryInfo) -> Result<(), icos_sparse_tar::Error> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        match w.finish() {
            Ok((window, record, _)) => {
                self.done = Some((window, record));
                Ok(())
            }
            Err(e) => Err(self.stop(image_err(e))),
        }
    }
}

/// The size of a file or block device (its end, as `lseek` sees it).
pub fn capacity(target: &File, path: &Path) -> Result<u64, ImageError> {
    let mut f = target;
    f.seek(SeekFrom::End(0))
        .map_err(io_err("finding the size of", path))
}

/// Streams `disk.img` of `archive` onto `target` (named `target_path`):
/// data at its offsets, holes made zero with `zeroer`; then `fsync`s.
/// Refuses, before writing anything, an image larger than the target.
pub fn write_image(
    archive: &ImageArchive,
    target: &File,
    target_path: &Path,
    zeroer: Zeroer,
    progress: &mut dyn FnMut(&WriteProgress),
) -> Result<Written, ImageError> {
    let size = capacity(target, target_path)?;
    if archive.size > size {
        return Err(ImageError::TooLarge {
            archive: archive.path.clone(),
            size: archive.size,
            target: target_path.to_path_buf(),
            capacity: size,
        });
    }
    let input = File::open(&archive.path).map_err(|source| ImageError::Archive {
        archive: archive.path.clone(),
        source: icos_sparse_tar::Error::Io {
            action: "opening",
            path: archive.path.clone(),
            source,
        },
    })?;
    let started = Instant::now();
    let total = archive.size;
    let mut reported = 0u64;
    let mut report = |p: Position| {
        reported = reported.max(p.done);
        progress(&WriteProgress {
            done: reported,
            total,
            data_written: p.data_written,
            elapsed: started.elapsed(),
        });
    };
    let window = Window::new(target, target_path, 0, size).with_zeroer(zeroer);
    let mut writer = ImageWriter {
        archive,
        window: Some(window),
        writer: None,
        progress: Some(&mut report),
        done: None,
        started: Instant::now(),
        found: false,
        failed: None,
    };
    let visited = icos_sparse_tar::visit(input, &archive.path, &mut writer);
    if let Some(e) = writer.failed.take() {
        return Err(e);
    }
    let members = visited.map_err(|source| ImageError::Archive {
        archive: archive.path.clone(),
        source,
    })?;
    let Some((window, record)) = writer.done.take() else {
        return Err(ImageError::MissingMember {
            archive: archive.path.clone(),
            members: members.into_iter().map(|e| e.name).collect(),
        });
    };
    target.sync_all().map_err(io_err("syncing", target_path))?;
    Ok(Written {
        target: target_path.to_path_buf(),
        archive: archive.path.clone(),
        image_size: archive.size,
        zero_method: window.zeroer().used().or(record.zero_method),
        write_secs: writer.started.elapsed().as_secs_f64(),
        data: record.data,
        zeroed: record.zeroed,
        data_sha256: record.data_sha256,
    })
}

/// Reads back what [`write_image`] wrote (after dropping the target's
/// cached pages, so the device is read) and checks it; see the module docs.
pub fn verify_written(
    target: &File,
    written: &Written,
    holes: HoleCheck,
) -> Result<Verified, ImageError> {
    let path = written.target.as_path();
    let mut window = Window::whole(target, path).map_err(io_err("finding the size of", path))?;
    let record = icos_diskwrite::Record {
        size: written.image_size,
        data: written.data.clone(),
        zeroed: written.zeroed.clone(),
        data_sha256: written.data_sha256,
        zero_method: written.zero_method,
    };
    icos_diskwrite::verify(&mut window, &record, holes).map_err(image_err)
}

/// Opens `target` for writing (never creating it), writes the image, syncs
/// and verifies it.
pub fn install_image(
    archive: &ImageArchive,
    target_path: &Path,
    zeroer: Zeroer,
    holes: HoleCheck,
    progress: &mut dyn FnMut(&WriteProgress),
) -> Result<(Written, Verified), ImageError> {
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target_path)
        .map_err(io_err("opening", target_path))?;
    let written = write_image(archive, &target, target_path, zeroer, progress)?;
    let verified = verify_written(&target, &written, holes)?;
    Ok((written, verified))
}

#[cfg(test)]
mod tests;
