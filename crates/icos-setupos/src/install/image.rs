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

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use icos_sparse_tar::{EntryInfo, EntryKind};
use rustix::fs::{Advice, FallocateFlags};
use sha2::{Digest, Sha256};

/// The member of a disk image archive that holds the disk.
pub const DISK_IMG: &str = "disk.img";
/// The unit of writing, reading back and comparing.
const CHUNK: usize = 1 << 20;
/// Zeroing requests are aligned to this (any logical sector size divides it).
const ALIGN: u64 = 4096;
/// The size of one sampled block of a zeroed range.
const SAMPLE: u64 = 4096;
/// Sampled blocks inside a zeroed range are this far apart.
const SAMPLE_EVERY: u64 = 1 << 30;
/// Zeroing is asked for in pieces of this size, progress reported between.
const ZERO_PIECE: u64 = 1 << 30;

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

/// A way of making a range of a file or device zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMethod {
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: a hole in a file; on a block
    /// device a WRITE ZEROES request that may unmap, never a plain discard.
    PunchHole,
    /// `fallocate(ZERO_RANGE | KEEP_SIZE)`: on a block device the kernel's
    /// zero-out (what `BLKZEROOUT` does), written as zeros if need be.
    ZeroRange,
    /// Writing zeros.
    WriteZeros,
}

impl ZeroMethod {
    /// Every method, in the order they are tried.
    pub const ALL: [ZeroMethod; 3] = [
        ZeroMethod::PunchHole,
        ZeroMethod::ZeroRange,
        ZeroMethod::WriteZeros,
    ];

    /// The name printed (`punch-hole`).
    pub fn as_str(self) -> &'static str {
        match self {
            ZeroMethod::PunchHole => "punch-hole",
            ZeroMethod::ZeroRange => "zero-range",
            ZeroMethod::WriteZeros => "write-zeros",
        }
    }
}

/// Makes ranges of a file or block device zero, with the first method of
/// its list that the target supports; a method that is not supported is
/// dropped for the following ranges. Writing zeros is always the last resort.
#[derive(Debug, Clone)]
pub struct Zeroer {
    methods: Vec<ZeroMethod>,
    used: Option<ZeroMethod>,
    zeros: Vec<u8>,
}

impl Default for Zeroer {
    fn default() -> Self {
        Zeroer::with_methods(&ZeroMethod::ALL)
    }
}

impl Zeroer {
    /// Tries `methods` in order (writing zeros is appended when missing).
    pub fn with_methods(methods: &[ZeroMethod]) -> Self {
        let mut methods = methods.to_vec();
        if !methods.contains(&ZeroMethod::WriteZeros) {
            methods.push(ZeroMethod::WriteZeros);
        }
        Zeroer {
            methods,
            used: None,
            zeros: vec![0u8; CHUNK],
        }
    }

    /// The method that zeroed the last range.
    pub fn used(&self) -> Option<ZeroMethod> {
        self.used
    }

    fn write_zeros(&self, file: &File, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            let n = usize::try_from((end - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            file.write_all_at(&self.zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` of `file` zero.
    pub fn zero(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let start = offset.next_multiple_of(ALIGN).min(end);
        let stop = (end / ALIGN * ALIGN).max(start);
        // Unaligned edges are written.
        self.write_zeros(file, offset, start - offset)?;
        self.write_zeros(file, stop, end - stop)?;
        if stop == start {
            return Ok(());
        }
        loop {
            let Some(&method) = self.methods.first() else {
                return self.write_zeros(file, start, stop - start);
            };
            let flags = match method {
                ZeroMethod::PunchHole => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                ZeroMethod::ZeroRange => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                ZeroMethod::WriteZeros => {
                    self.used = Some(method);
                    return self.write_zeros(file, start, stop - start);
                }
            };
            match rustix::fs::fallocate(file, flags, start, stop - start) {
                Ok(()) => {
                    self.used = Some(method);
                    return Ok(());
                }
                Err(e)
                    if [
                        rustix::io::Errno::OPNOTSUPP,
                        rustix::io::Errno::INVAL,
                        rustix::io::Errno::NOSYS,
                        rustix::io::Errno::NODEV,
                        rustix::io::Errno::NOTTY,
                    ]
                    .contains(&e) =>
                {
                    tracing::debug!(method = method.as_str(), error = %e, "zeroing method not supported; trying the next");
                    self.methods.remove(0);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How much of the zeroed ranges [`verify_written`] reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleCheck {
    /// The first and last 4 KiB of every range and one 4 KiB block per GiB.
    Sample,
    /// Every byte.
    Full,
}

impl HoleCheck {
    /// The name printed (`sample`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            HoleCheck::Sample => "sample",
            HoleCheck::Full => "full",
        }
    }
}

/// A range of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Its first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

fn push_extent(list: &mut Vec<Extent>, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    match list.last_mut() {
        Some(last) if last.offset + last.len == offset => last.len += len,
        _ => list.push(Extent { offset, len }),
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

/// The visitor that writes `disk.img` into the target.
struct ImageWriter<'a> {
    target: &'a File,
    target_path: &'a Path,
    archive: &'a ImageArchive,
    zeroer: Zeroer,
    progress: &'a mut dyn FnMut(&WriteProgress),
    started: Instant,
    in_disk: bool,
    found: bool,
    cursor: u64,
    reported: u64,
    pending_zero: Option<Extent>,
    data: Vec<Extent>,
    zeroed: Vec<Extent>,
    hasher: Sha256,
    data_written: u64,
    zeros: Vec<u8>,
    failed: Option<ImageError>,
}

impl ImageWriter<'_> {
    fn stop(&mut self, error: ImageError) -> icos_sparse_tar::Error {
        self.failed = Some(error);
        icos_sparse_tar::Error::Io {
            action: "writing",
            path: self.target_path.to_path_buf(),
            source: io::Error::other("stopped"),
        }
    }

    /// Reports `done` bytes (never less than reported before).
    fn report_at(&mut self, done: u64) {
        self.reported = self.reported.max(done);
        (self.progress)(&WriteProgress {
            done: self.reported,
            total: self.archive.size,
            data_written: self.data_written,
            elapsed: self.started.elapsed(),
        });
    }

    fn report(&mut self) {
        self.report_at(self.cursor);
    }

    /// Zeroes the pending range, in pieces of [`ZERO_PIECE`] with a
    /// progress report after each (writing zeros can be slow).
    fn flush_zero(&mut self) -> Result<(), ImageError> {
        if let Some(z) = self.pending_zero.take() {
            let end = z.offset + z.len;
            let mut at = z.offset;
            while at < end {
                let n = (end - at).min(ZERO_PIECE);
                self.zeroer
                    .zero(self.target, at, n)
                    .map_err(io_err("zeroing", self.target_path))?;
                at += n;
                if at < end {
                    self.report_at(at);
                }
            }
            push_extent(&mut self.zeroed, z.offset, z.len);
        }
        Ok(())
    }

    fn hole(&mut self, offset: u64, len: u64) -> Result<(), ImageError> {
        if len == 0 {
            return Ok(());
        }
        match &mut self.pending_zero {
            Some(z) if z.offset + z.len == offset => z.len += len,
            _ => {
                self.flush_zero()?;
                self.pending_zero = Some(Extent { offset, len });
            }
        }
        self.cursor = offset + len;
        // Zero big holes as they come, so progress is real.
        if self
            .pending_zero
            .is_some_and(|z| z.len >= 64 * CHUNK as u64)
        {
            self.flush_zero()?;
        }
        Ok(())
    }

    fn write_data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ImageError> {
        if offset > self.cursor {
            self.hole(self.cursor, offset - self.cursor)?;
        }
        let len = bytes.len() as u64;
        let all_zero = match self.zeros.get(..bytes.len()) {
            Some(zeros) => bytes == zeros,
            None => bytes.iter().all(|&b| b == 0),
        };
        if all_zero {
            self.hole(offset, len)?;
        } else {
            self.flush_zero()?;
            self.target
                .write_all_at(bytes, offset)
                .map_err(io_err("writing", self.target_path))?;
            self.hasher.update(bytes);
            push_extent(&mut self.data, offset, len);
            self.data_written += len;
            self.cursor = offset + len;
        }
        self.report();
        Ok(())
    }
}

impl icos_sparse_tar::Visitor for ImageWriter<'_> {
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
        self.in_disk = true;
        self.started = Instant::now();
        Ok(true)
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), icos_sparse_tar::Error> {
        if !self.in_disk {
            return Ok(());
        }
        self.write_data(offset, bytes).map_err(|e| self.stop(e))
    }

    fn end(&mut self, info: &EntryInfo) -> Result<(), icos_sparse_tar::Error> {
        if !self.in_disk {
            return Ok(());
        }
        self.in_disk = false;
        let rest = info.size.saturating_sub(self.cursor);
        let tail = self
            .hole(self.cursor, rest)
            .and_then(|()| self.flush_zero());
        tail.map_err(|e| self.stop(e))?;
        self.report();
        Ok(())
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
    let mut writer = ImageWriter {
        target,
        target_path,
        archive,
        zeroer,
        progress,
        started: Instant::now(),
        in_disk: false,
        found: false,
        cursor: 0,
        reported: 0,
        pending_zero: None,
        data: Vec::new(),
        zeroed: Vec::new(),
        hasher: Sha256::new(),
        data_written: 0,
        zeros: vec![0u8; CHUNK],
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
    if !writer.found {
        return Err(ImageError::MissingMember {
            archive: archive.path.clone(),
            members: members.into_iter().map(|e| e.name).collect(),
        });
    }
    target.sync_all().map_err(io_err("syncing", target_path))?;
    Ok(Written {
        target: target_path.to_path_buf(),
        archive: archive.path.clone(),
        image_size: archive.size,
        zero_method: writer.zeroer.used(),
        write_secs: writer.started.elapsed().as_secs_f64(),
        data: writer.data,
        zeroed: writer.zeroed,
        data_sha256: writer.hasher.finalize().into(),
    })
}

/// What [`verify_written`] read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verified {
    /// Bytes of data read back and hashed.
    pub data_bytes: u64,
    /// Bytes of zeroed ranges read back and found zero.
    pub zero_bytes_checked: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// The blocks of a zeroed range that [`HoleCheck::Sample`] reads.
fn samples(extent: Extent) -> Vec<Extent> {
    let end = extent.offset + extent.len;
    let mut out = Vec::new();
    let mut at = extent.offset;
    while at < end {
        out.push(Extent {
            offset: at,
            len: SAMPLE.min(end - at),
        });
        at = at.saturating_add(SAMPLE_EVERY);
    }
    let last = end.saturating_sub(SAMPLE).max(extent.offset);
    if out.last().is_some_and(|e| e.offset != last) {
        out.push(Extent {
            offset: last,
            len: end - last,
        });
    }
    out
}

/// Reads back what [`write_image`] wrote (after dropping the target's
/// cached pages, so the device is read) and checks it; see the module docs.
pub fn verify_written(
    target: &File,
    written: &Written,
    holes: HoleCheck,
) -> Result<Verified, ImageError> {
    let started = Instant::now();
    let path = written.target.as_path();
    // Best effort: a target that ignores the advice is read from the cache.
    let _ = rustix::fs::fadvise(target, 0, None, Advice::DontNeed);
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let read = |buf: &mut [u8], at: u64| {
        target
            .read_exact_at(buf, at)
            .map_err(io_err("reading back", path))
    };
    for e in &written.data {
        let mut at = e.offset;
        while at < e.offset + e.len {
            let n = usize::try_from((e.offset + e.len - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            read(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != written.data_sha256 {
        return Err(ImageError::Verify {
            target: path.to_path_buf(),
            expected: hex::encode(written.data_sha256),
            actual: hex::encode(actual),
        });
    }
    let mut checked = 0u64;
    for &z in &written.zeroed {
        let parts = match holes {
            HoleCheck::Full => vec![z],
            HoleCheck::Sample => samples(z),
        };
        for p in parts {
            let mut at = p.offset;
            while at < p.offset + p.len {
                let n = usize::try_from((p.offset + p.len - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                read(&mut buf[..n], at)?;
                if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                    return Err(ImageError::NotZero {
                        target: path.to_path_buf(),
                        offset: at + i as u64,
                    });
                }
                at += n as u64;
                checked += n as u64;
            }
        }
    }
    Ok(Verified {
        data_bytes: written.data_bytes(),
        zero_bytes_checked: checked,
        secs: started.elapsed().as_secs_f64(),
    })
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
