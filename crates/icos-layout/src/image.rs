//! Writing a layout's GPT into a disk image, and reading a GPT back.
//!
//! Everything works on a plain `Read + Write + Seek` device (a file, a
//! `Cursor<Vec<u8>>`); the disk size is the device's length. No loop device,
//! partition scanning or mount is involved.
//!
//! What [`write_gpt`] writes, and nothing else:
//!
//! - sector 0: a protective MBR with one `0xEE` record from sector 1 to the end
//!   of the disk (capped at `0xFFFFFFFF` sectors), no boot code, disk
//!   signature 0;
//! - sector 1: the primary header (first usable sector 2048, 128 entries of
//!   128 bytes), sectors 2..=33: the primary entry array;
//! - the last 33 sectors: the backup entry array and, in the very last
//!   sector, the backup header.
//!
//! Entries are written in layout order (entry 1 is the first partition), with
//! the layout's type GUID, partition UUID, first and last sector, attributes 0
//! and the layout name as the GPT name. These are the bytes `sfdisk` writes
//! for the same script on a fresh image, so the output is deterministic: the
//! same layout on the same size gives the same bytes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderBuilder};
use gpt::mbr::ProtectiveMBR;
use serde::Serialize;
use uuid::Uuid;

use crate::layout::{Layout, Partition, PartitionType, serialize_uuid_upper};
use crate::validate::{InvalidLayout, Violation};
use crate::{FIRST_USABLE_LBA, GPT_ENTRIES, GPT_ENTRY_SIZE, GPT_TABLE_SECTORS, SECTOR_SIZE};

const LB: LogicalBlockSize = LogicalBlockSize::Lb512;

/// Largest entry count [`read_gpt`] accepts (the GPT minimum array is 128).
const MAX_READ_ENTRIES: u32 = 1024;

/// A GPT could not be written to or read from a device.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The disk is too small for the layout.
    #[error(
        "a {disk_size}-byte disk is too small for layout {layout}: it needs at least {needed} bytes"
    )]
    TooSmall {
        /// The layout's name.
        layout: String,
        /// The disk size in bytes.
        disk_size: u64,
        /// The smallest disk size that fits, in bytes.
        needed: u64,
    },
    /// The layout breaks rules other than the disk size.
    #[error(transparent)]
    Invalid(#[from] InvalidLayout),
    /// The device holds no readable GPT.
    #[error("no valid GPT: {reason}")]
    NoGpt {
        /// Why neither header could be used.
        reason: String,
    },
    /// The GPT uses a shape this reader does not handle.
    #[error("unsupported GPT: {reason}")]
    Unsupported {
        /// What is unsupported.
        reason: String,
    },
    /// The GPT headers are valid but the table behind them is not.
    #[error("corrupt GPT while {action}")]
    Corrupt {
        /// What was being done.
        action: &'static str,
        /// The error from the GPT library.
        #[source]
        source: gpt::GptError,
    },
    /// An I/O step on the device failed.
    #[error("{action}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The GPT library rejected a header or MBR while writing.
    #[error("{action}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// The library's error.
        #[source]
        source: WriteFailure,
    },
}

/// The error the GPT library reported while writing.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// While writing the protective MBR.
    #[error("{0}")]
    Mbr(gpt::mbr::MBRError),
    /// While building or writing a header.
    #[error("{0}")]
    Header(gpt::header::HeaderError),
}

impl TableError {
    /// Whether the error comes from the input (layout, size, image contents)
    /// rather than from the system (I/O).
    pub fn is_bad_input(&self) -> bool {
        match self {
            TableError::TooSmall { .. }
            | TableError::Invalid(_)
            | TableError::NoGpt { .. }
            | TableError::Unsupported { .. }
            | TableError::Corrupt { .. } => true,
            TableError::Io { .. } | TableError::Write { .. } => false,
        }
    }
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> TableError {
    move |source| TableError::Io { action, source }
}

fn header_err(action: &'static str) -> impl FnOnce(gpt::header::HeaderError) -> TableError {
    move |e| TableError::Write {
        action,
        source: WriteFailure::Header(e),
    }
}

/// Gives a `Read + Write + Seek` device the `Debug` bound the GPT library wants.
struct Writer<'a, D: ?Sized>(&'a mut D);

impl<D: ?Sized> fmt::Debug for Writer<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("device")
    }
}

impl<D: Read + ?Sized> Read for Writer<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<D: Write + ?Sized> Write for Writer<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<D: Seek + ?Sized> Seek for Writer<'_, D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

/// A read-only view of a device that ends at `end` bytes, so that the GPT
/// library looks for a backup header at `end - 512`.
struct Reader<'a, D: ?Sized> {
    inner: &'a mut D,
    end: u64,
}

impl<D: ?Sized> fmt::Debug for Reader<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device (first {} bytes)", self.end)
    }
}

impl<D: Read + ?Sized> Read for Reader<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<D: ?Sized> Write for Reader<'_, D> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the device is open for reading only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: Seek + ?Sized> Seek for Reader<'_, D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::End(delta) => {
                let target = self.end.checked_add_signed(delta).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seek out of range")
                })?;
                self.inner.seek(SeekFrom::Start(target))
            }
            other => self.inner.seek(other),
        }
    }
}

/// Checks that `layout` can be written to a disk of `disk_size` bytes.
///
/// A disk that is merely too small gives [`TableError::TooSmall`] with the
/// size needed; any other broken rule gives [`TableError::Invalid`] listing
/// all of them.
pub fn check_fits(layout: &Layout, disk_size: u64) -> Result<(), TableError> {
    let violations = layout.violations(disk_size);
    if violations.is_empty() {
        return Ok(());
    }
    let size_only = violations.iter().all(|v| {
        matches!(
            v,
            Violation::BeyondDisk { .. } | Violation::DiskTooSmallForGpt { .. }
        )
    });
    let needed = layout.min_disk_size();
    if size_only && disk_size < needed {
        return Err(TableError::TooSmall {
            layout: layout.name.clone(),
            disk_size,
            needed,
        });
    }
    Err(TableError::Invalid(InvalidLayout {
        layout: layout.name.clone(),
        disk_size,
        violations,
    }))
}

fn gpt_entry(p: &Partition) -> gpt::partition::Partition {
    gpt::partition::Partition {
        part_type_guid: p.kind.type_guid().into(),
        part_guid: p.uuid,
        first_lba: p.start,
        last_lba: p.last_sector(),
        flags: 0,
        name: p.name.clone(),
    }
}

/// Writes the GPT of `layout` (protective MBR, primary and backup header and
/// entry arrays) onto `device`, whose current length is the disk size.
///
/// Only the GPT sectors are written (see the module docs); the rest of the
/// device is left as it is. The layout is checked against the device size
/// first, and nothing is written if it does not fit.
pub fn write_gpt<D: Read + Write + Seek + ?Sized>(
    device: &mut D,
    layout: &Layout,
) -> Result<(), TableError> {
    let disk_size = device
        .seek(SeekFrom::End(0))
        .map_err(io_err("finding the disk size"))?;
    check_fits(layout, disk_size)?;
    let total_sectors = disk_size / SECTOR_SIZE;
    let mut dev = Writer(device);

    let pmbr_sectors = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(pmbr_sectors)
        .overwrite_lba0(&mut dev)
        .map_err(|e| TableError::Write {
            action: "writing the protective MBR",
            source: WriteFailure::Mbr(e),
        })?;

    let mut primary = HeaderBuilder::new()
        .disk_guid(layout.disk_guid)
        .backup_lba(total_sectors - 1)
        .first_usable(FIRST_USABLE_LBA)
        .num_parts(GPT_ENTRIES)
        .part_size(GPT_ENTRY_SIZE)
        .build(LB)
        .map_err(header_err("building the primary GPT header"))?;
    let mut backup = HeaderBuilder::from_header(&primary)
        .primary(false)
        .build(LB)
        .map_err(header_err("building the backup GPT header"))?;

    let used = layout.partitions.len() as u64;
    for array_start in [primary.part_start, backup.part_start] {
        for (index, p) in (0u64..).zip(&layout.partitions) {
            gpt_entry(p)
                .write_to_device(&mut dev, index, array_start, LB, GPT_ENTRY_SIZE)
                .map_err(io_err("writing the GPT entries"))?;
        }
        gpt::partition::Partition::write_zero_entries_to_device(
            &mut dev,
            used,
            u64::from(GPT_ENTRIES) - used,
            array_start,
            LB,
            GPT_ENTRY_SIZE,
        )
        .map_err(io_err("clearing the unused GPT entries"))?;
    }
    backup
        .write_backup(&mut dev, LB)
        .map_err(header_err("writing the backup GPT header"))?;
    primary
        .write_primary(&mut dev, LB)
        .map_err(header_err("writing the primary GPT header"))?;
    dev.flush().map_err(io_err("flushing the device"))
}

/// Where a GPT header was looked for and whether it was usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderStatus {
    /// The sector the header was read from.
    pub lba: u64,
    /// Whether it has the signature and a matching CRC.
    pub valid: bool,
    /// Why it is not valid, or what else is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One used GPT entry as read from a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptEntry {
    /// 1-based entry number (the `N` of `/dev/sdaN`).
    pub number: u32,
    /// The GPT partition name.
    pub name: String,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub size: u64,
    /// The partition type GUID.
    #[serde(serialize_with = "serialize_uuid_upper")]
    pub type_guid: Uuid,
    /// The partition UUID.
    #[serde(serialize_with = "serialize_uuid_upper")]
    pub uuid: Uuid,
    /// The 64 attribute bits.
    pub attributes: u64,
}

impl GptEntry {
    /// The IC-OS type of this entry, if its type GUID is one of `U`, `L`, `M`.
    pub fn partition_type(&self) -> Option<PartitionType> {
        PartitionType::from_type_guid(self.type_guid)
    }

    /// The entry as a layout partition (empty comment); `None` for a type
    /// outside `U`, `L`, `M`.
    pub fn to_partition(&self) -> Option<Partition> {
        Some(Partition {
            name: self.name.clone(),
            start: self.start,
            size: self.size,
            kind: self.partition_type()?,
            uuid: self.uuid,
            comment: String::new(),
        })
    }
}

/// A GPT as read from a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptTable {
    /// The disk size in bytes.
    pub disk_size: u64,
    /// The disk GUID (label-id).
    #[serde(serialize_with = "serialize_uuid_upper")]
    pub disk_guid: Uuid,
    /// First sector partitions may use.
    pub first_usable_lba: u64,
    /// Last sector partitions may use.
    pub last_usable_lba: u64,
    /// Whether sector 0 holds a protective MBR (a `0xEE` record).
    pub protective_mbr: bool,
    /// The primary header (sector 1).
    pub primary: HeaderStatus,
    /// The backup header: where the primary header points, or the last sector
    /// when the primary header is unusable.
    pub backup: HeaderStatus,
    /// The used entries, by entry number.
    pub partitions: Vec<GptEntry>,
}

impl GptTable {
    /// The entry whose GPT name is `name`.
    pub fn partition(&self, name: &str) -> Option<&GptEntry> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// What a careful partitioning tool would complain about: a missing
    /// protective MBR, an unusable header, a backup header that is not in the
    /// last sector, or a backup entry array that differs from the primary.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.protective_mbr {
            out.push("sector 0 holds no protective MBR".to_owned());
        }
        for (which, h) in [("primary", &self.primary), ("backup", &self.backup)] {
            if let Some(problem) = &h.problem {
                out.push(format!("{which} header at sector {}: {problem}", h.lba));
            }
        }
        let last = (self.disk_size / SECTOR_SIZE).saturating_sub(1);
        if self.backup.lba != last {
            out.push(format!(
                "the backup header is at sector {}, not at the last sector {last}",
                self.backup.lba
            ));
        }
        out
    }

    /// How this table differs from `layout`: disk GUID, partition count, and
    /// per entry name, start, size, type and UUID. Empty when they agree.
    pub fn differences_from(&self, layout: &Layout) -> Vec<String> {
        let mut out = Vec::new();
        if self.disk_guid != layout.disk_guid {
            out.push(format!(
                "disk GUID is {}, layout has {}",
                self.disk_guid, layout.disk_guid
            ));
        }
        if self.partitions.len() != layout.partitions.len() {
            out.push(format!(
                "{} partitions, layout has {}",
                self.partitions.len(),
                layout.partitions.len()
            ));
        }
        for (number, want) in (1u32..).zip(&layout.partitions) {
            let Some(got) = self.partitions.iter().find(|e| e.number == number) else {
                out.push(format!("entry {number} ({}) is missing", want.name));
                continue;
            };
            let mut field = |what: &str, got: String, want_value: String| {
                if got != want_value {
                    out.push(format!(
                        "entry {number} ({}): {what} is {got}, layout has {want_value}",
                        want.name
                    ));
                }
            };
            field("name", got.name.clone(), want.name.clone());
            field("start", got.start.to_string(), want.start.to_string());
            field("size", got.size.to_string(), want.size.to_string());
            field(
                "type",
                got.type_guid.to_string(),
                want.kind.type_guid().to_string(),
            );
            field("uuid", got.uuid.to_string(), want.uuid.to_string());
        }
        out
    }
}

/// Header fields needed before handing the table to the GPT library.
struct RawHeader {
    backup_lba: u64,
    num_parts: u32,
    part_size: u32,
}

/// Reads a header at `lba` if the GPT library would accept it: the signature
/// and a CRC over the 92 bytes of the revision 1.0 header.
fn raw_header<D: Read + Seek + ?Sized>(device: &mut D, lba: u64) -> io::Result<Option<RawHeader>> {
    let mut header = [0u8; 92];
    device.seek(SeekFrom::Start(lba * SECTOR_SIZE))?;
    device.read_exact(&mut header)?;
    let u32_at =
        |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    if &header[..8] != b"EFI PART" {
        return Ok(None);
    }
    let stored_crc = u32_at(16);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..16]);
    hasher.update(&[0; 4]);
    hasher.update(&header[20..]);
    if hasher.finalize() != stored_crc {
        return Ok(None);
    }
    Ok(Some(RawHeader {
        backup_lba: u64_at(32),
        num_parts: u32_at(80),
        part_size: u32_at(84),
    }))
}

fn check_shape(raw: &RawHeader, which: &str) -> Result<(), TableError> {
    if raw.part_size != GPT_ENTRY_SIZE {
        return Err(TableError::Unsupported {
            reason: format!(
                "{which} header has {}-byte entries; only {GPT_ENTRY_SIZE} is supported",
                raw.part_size
            ),
        });
    }
    if raw.num_parts > MAX_READ_ENTRIES {
        return Err(TableError::Unsupported {
            reason: format!(
                "{which} header has {} entries; at most {MAX_READ_ENTRIES} are supported",
                raw.num_parts
            ),
        });
    }
    Ok(())
}

/// CRC32 of the entry array described by `header`.
fn array_crc<D: Read + Seek + ?Sized>(device: &mut D, header: &Header) -> io::Result<u32> {
    let len = u64::from(header.num_parts) * u64::from(header.part_size);
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    device.seek(SeekFrom::Start(header.part_start * SECTOR_SIZE))?;
    device.read_exact(&mut buf)?;
    Ok(crc32fast::hash(&buf))
}

fn status(lba: u64, header: Result<&Header, gpt::header::HeaderError>) -> HeaderStatus {
    match header {
        Ok(_) => HeaderStatus {
            lba,
            valid: true,
            problem: None,
        },
        Err(e) => HeaderStatus {
            lba,
            valid: false,
            problem: Some(e.to_string()),
        },
    }
}

/// Reads the GPT from `device` (never writes to it).
///
/// The primary header is read from sector 1 and the backup header from the
/// sector the primary names (the last sector of the disk when the primary is
/// unusable, or for images whose primary says so). The table of the first
/// valid header is used; its entry-array CRC must match.
pub fn read_gpt<D: Read + Seek + ?Sized>(device: &mut D) -> Result<GptTable, TableError> {
    let disk_size = device
        .seek(SeekFrom::End(0))
        .map_err(io_err("finding the disk size"))?;
    let total_sectors = disk_size / SECTOR_SIZE;
    let min_sectors = 2 * (GPT_TABLE_SECTORS + 1) + 1;
    if total_sectors < min_sectors {
        return Err(TableError::NoGpt {
            reason: format!("the disk has {disk_size} bytes, too few for a GPT"),
        });
    }
    let last_lba = total_sectors - 1;

    let primary_raw = raw_header(device, 1).map_err(io_err("reading the primary GPT header"))?;
    // Where the backup header should be: where the primary says, if that is
    // on the disk, else the last sector.
    let backup_lba = primary_raw
        .as_ref()
        .map(|h| h.backup_lba)
        .filter(|&lba| lba > 1 && lba <= last_lba)
        .unwrap_or(last_lba);
    let backup_raw =
        raw_header(device, backup_lba).map_err(io_err("reading the backup GPT header"))?;
    for (raw, which) in [(&primary_raw, "primary"), (&backup_raw, "backup")] {
        if let Some(raw) = raw {
            check_shape(raw, which)?;
        }
    }

    let mut view = Reader {
        inner: device,
        end: (backup_lba + 1) * SECTOR_SIZE,
    };
    let pmbr = ProtectiveMBR::from_disk(&mut view, LB);
    let protective_mbr = pmbr
        .ok()
        .and_then(|m| m.partition(0))
        .is_some_and(|r| r.os_type == 0xEE);

    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(LB)
        .only_valid_headers(false)
        .open_from_device(&mut view)
        .map_err(|e| match e {
            gpt::GptError::Header(h) => TableError::NoGpt {
                reason: format!("no usable primary or backup header ({h})"),
            },
            other => TableError::Corrupt {
                action: "reading the partition entries",
                source: other,
            },
        })?;

    let mut primary = status(1, disk.primary_header());
    let mut backup = status(backup_lba, disk.backup_header());
    let header = disk.header().clone();
    let partitions = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(&number, p)| GptEntry {
            number,
            name: p.name.clone(),
            start: p.first_lba,
            size: (p.last_lba + 1).saturating_sub(p.first_lba),
            type_guid: p.part_type_guid.guid,
            uuid: p.part_guid,
            attributes: p.flags,
        })
        .collect();
    let (primary_header, backup_header) = (
        disk.primary_header().ok().cloned(),
        disk.backup_header().ok().cloned(),
    );
    drop(disk);

    // The library checks the array CRC of the header it uses; check the other
    // array too, and that both arrays agree.
    for (h, st) in [
        (&primary_header, &mut primary),
        (&backup_header, &mut backup),
    ] {
        if let Some(h) = h {
            let crc = array_crc(view.inner, h).map_err(io_err("reading a GPT entry array"))?;
            if crc != h.crc32_parts {
                st.problem = Some("its entry array does not match its CRC".to_owned());
            }
        }
    }
    if let (Some(p), Some(b)) = (&primary_header, &backup_header)
        && p.crc32_parts != b.crc32_parts
        && backup.problem.is_none()
    {
        backup.problem = Some("its entry array differs from the primary array".to_owned());
    }

    Ok(GptTable {
        disk_size,
        disk_guid: header.disk_guid,
        first_usable_lba: header.first_usable,
        last_usable_lba: header.last_usable,
        protective_mbr,
        primary,
        backup,
        partitions,
    })
}

/// An image file operation that failed, naming the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image exists, is not empty, and overwriting was not asked for.
    #[error("{path} exists and is not empty ({len} bytes); refusing to overwrite it without force")]
    NotEmpty {
        /// The image path.
        path: PathBuf,
        /// Its current length.
        len: u64,
    },
    /// The path exists but is not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The image path.
        path: PathBuf,
    },
    /// Opening, sizing or syncing the image failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing or reading the GPT failed.
    #[error("image {path}")]
    Table {
        /// The image path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: TableError,
    },
}

impl ImageError {
    /// Whether the error comes from the input (layout, size, path, image
    /// contents) rather than from the system (I/O).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ImageError::NotEmpty { .. } | ImageError::NotAFile { .. } => true,
            ImageError::Io { .. } => false,
            ImageError::Table { source, .. } => source.is_bad_input(),
        }
    }

    /// The image path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ImageError::NotEmpty { path, .. }
            | ImageError::NotAFile { path }
            | ImageError::Io { path, .. }
            | ImageError::Table { path, .. } => path,
        }
    }
}

/// Options for [`write_gpt_image`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Image size in bytes; the layout's [`Layout::disk_size`] when `None`.
    pub size: Option<u64>,
    /// Write into an existing non-empty file (its length is set to the image
    /// size; data outside the GPT sectors is kept).
    pub force: bool,
}

/// Creates (or, with `force`, reuses) the image file at `path`, sets its
/// length to the image size (sparse: no data blocks are allocated), writes the
/// layout's GPT and syncs the file. Returns the image size.
///
/// The layout is checked against the size before the file is touched, so a
/// size that is too small leaves no file behind.
pub fn write_gpt_image(
    path: &Path,
    layout: &Layout,
    options: WriteOptions,
) -> Result<u64, ImageError> {
    let size = options.size.unwrap_or(layout.disk_size);
    let table_err = |source| ImageError::Table {
        path: path.to_path_buf(),
        source,
    };
    let io = |action: &'static str| {
        move |source| ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    check_fits(layout, size).map_err(table_err)?;
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(ImageError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(meta) if meta.len() > 0 && !options.force => {
            return Err(ImageError::NotEmpty {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting")(e)),
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("opening"))?;
    file.set_len(size).map_err(io("setting the length of"))?;
    write_gpt(&mut file, layout).map_err(table_err)?;
    file.sync_all().map_err(io("syncing"))?;
    Ok(size)
}

/// Reads the GPT of the image (or block device) at `path`, read-only.
pub fn read_gpt_image(path: &Path) -> Result<GptTable, ImageError> {
    let mut file = File::open(path).map_err(|source| ImageError::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    read_gpt(&mut file).map_err(|source| ImageError::Table {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::layout::OsKind;
    use crate::{GIB, MIB};
    use std::io::Cursor;

    fn small_layout() -> Layout {
        let mut l = OsKind::SetupOs.layout();
        l.partitions.truncate(3);
        l.disk_size = l.ic_image_size();
        l
    }

    fn image(layout: &Layout, size: u64) -> Cursor<Vec<u8>> {
        let mut c = Cursor::new(vec![0u8; usize::try_from(size).expect("fits")]);
        write_gpt(&mut c, layout).expect("writes");
        c
    }

    #[test]
    fn write_then_read_back() {
        let layout = small_layout();
        let mut c = image(&layout, layout.disk_size);
        let table = read_gpt(&mut c).expect("reads");
        assert_eq!(table.differences_from(&layout), Vec::<String>::new());
        assert_eq!(table.problems(), Vec::<String>::new());
        assert_eq!(table.first_usable_lba, 2048);
        assert_eq!(table.last_usable_lba, layout.disk_size / 512 - 34);
        assert!(table.protective_mbr);
        let parts: Vec<Partition> = table
            .partitions
            .iter()
            .filter_map(GptEntry::to_partition)
            .collect();
        let mut want = layout.partitions.clone();
        want.iter_mut().for_each(|p| p.comment.clear());
        assert_eq!(parts, want);
    }

    #[test]
    fn writes_only_gpt_sectors_and_is_deterministic() {
        let layout = small_layout();
        let size = layout.disk_size;
        let a = image(&layout, size).into_inner();
        let b = image(&layout, size).into_inner();
        assert_eq!(a, b);
        let n = a.len();
        let gpt_head = 34 * 512;
        let gpt_tail = n - 33 * 512;
        assert!(a[gpt_head..gpt_tail].iter().all(|&x| x == 0));
        assert_eq!(&a[512..520], b"EFI PART");
        assert_eq!(&a[n - 512..n - 504], b"EFI PART");
        assert_eq!(&a[510..512], &[0x55, 0xAA]);
        assert_eq!(a[446 + 4], 0xEE);
        // Existing data outside the GPT sectors survives a rewrite.
        let mut c = Cursor::new(a.clone());
        c.get_mut()[MIB as usize] = 7;
        write_gpt(&mut c, &layout).expect("rewrites");
        assert_eq!(c.get_ref()[MIB as usize], 7);
    }

    #[test]
    fn too_small_and_invalid() {
        let layout = small_layout();
        let mut c = Cursor::new(vec![0u8; 4 * MIB as usize]);
        let err = write_gpt(&mut c, &layout).expect_err("too small");
        assert!(
            matches!(err, TableError::TooSmall { needed, .. } if needed == layout.min_disk_size()),
            "{err}"
        );
        assert!(err.is_bad_input());
        assert!(c.get_ref().iter().all(|&x| x == 0), "nothing written");

        let mut bad = layout.clone();
        bad.partitions[1].start += 1;
        let err = check_fits(&bad, GIB).expect_err("unaligned");
        assert!(matches!(err, TableError::Invalid(_)));
        assert!(
            err.to_string()
                .contains("partition grub start 206849 is not aligned"),
            "{err}"
        );
    }

    #[test]
    fn reading_garbage() {
        let mut c = Cursor::new(vec![0u8; MIB as usize]);
        let err = read_gpt(&mut c).expect_err("no gpt");
        assert!(matches!(err, TableError::NoGpt { .. }), "{err}");
        let mut tiny = Cursor::new(vec![0u8; 1024]);
        assert!(matches!(read_gpt(&mut tiny), Err(TableError::NoGpt { .. })));
    }

    #[test]
    fn survives_a_broken_primary_and_reports_it() {
        let layout = small_layout();
        let mut c = image(&layout, layout.disk_size);
        c.get_mut()[512 + 60] ^= 0xFF; // corrupt the primary header's disk GUID
        let table = read_gpt(&mut c).expect("backup still readable");
        assert!(!table.primary.valid);
        assert!(table.backup.valid);
        assert_eq!(table.differences_from(&layout), Vec::<String>::new());
        assert_eq!(table.problems().len(), 1, "{:?}", table.problems());
    }

    #[test]
    fn backup_array_mismatch_is_reported() {
        let layout = small_layout();
        let mut c = image(&layout, layout.disk_size);
        let n = c.get_ref().len();
        c.get_mut()[n - 33 * 512 + 56] ^= 1; // a byte of the first backup entry
        let table = read_gpt(&mut c).expect("primary readable");
        assert!(table.backup.problem.is_some());
        assert_eq!(table.differences_from(&layout), Vec::<String>::new());
    }

    #[test]
    fn unsupported_entry_size_is_an_error_not_a_panic() {
        let layout = small_layout();
        let mut c = image(&layout, layout.disk_size);
        let buf = c.get_mut();
        // Entry size 256 with a recomputed header CRC, in both headers.
        let n = buf.len();
        for at in [512, n - 512] {
            buf[at + 84..at + 88].copy_from_slice(&256u32.to_le_bytes());
            buf[at + 16..at + 20].copy_from_slice(&[0; 4]);
            let crc = crc32fast::hash(&buf[at..at + 92]);
            buf[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
        let err = read_gpt(&mut c).expect_err("unsupported");
        assert!(matches!(err, TableError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn backup_header_where_the_primary_points() {
        // As IC builds GuestOS: the GPT is written for the minimal image, then
        // the file is extended, leaving the backup header inside the disk.
        let layout = small_layout();
        let mut c = image(&layout, layout.disk_size);
        let inner = c.get_mut();
        inner.resize(inner.len() + MIB as usize, 0);
        let table = read_gpt(&mut c).expect("reads");
        assert!(table.backup.valid);
        assert_eq!(table.backup.lba, layout.disk_size / 512 - 1);
        let problems = table.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("not at the last sector"),
            "{problems:?}"
        );
    }
}
