//! Deterministic LVM2 physical volumes: one PV holding one volume group of
//! linear logical volumes, written byte for byte from a description, and a
//! reader that parses such PVs (and those written by LVM itself) back.
//!
//! IC's HostOS disk carries the `hostlvm` volume group in its third GPT
//! partition, with fixed UUIDs, 4 MiB extents and the `config`, `A_*`, `B_*`
//! and `guestos` volumes ([`VolumeGroupSpec::ic_hostos`]). IC generates the
//! PV header and metadata text itself rather than running `pvcreate`, so that
//! the image is reproducible; this crate does the same.
//!
//! # On-disk format written
//!
//! All integers are little-endian; checksums are LVM's CRC-32 ([`crc`]).
//!
//! | PV offset | contents |
//! |-----------|----------|
//! | 512 (sector 1) | label: `LABELONE`, sector number 1, checksum of bytes 20-511, offset 32 of the PV header, type `LVM2 001` |
//! | 544 | PV header: PV UUID (32 characters, no hyphens), PV size in bytes, data area list (`pe_start`, 0 = to the end) and metadata area list (4096, `pe_start` − 4096), each ended by a zero entry; extension version 2, flags 1 (PV in use) |
//! | 4096 | metadata area header: checksum of bytes 4-511, magic `" LVM2 x[5A%r0N*>"`, version 1, start 4096, size, one raw location (offset 512, text size with its NUL, text checksum, flags 0) |
//! | 4608 | the VG metadata text, NUL terminated; zeros up to `pe_start` |
//! | `pe_start` | extent 0 |
//!
//! The metadata text has `seqno = 1`, one PV (`pv0`) and one `striped`
//! segment with a single stripe per LV; the creation time and host are part
//! of the [`VolumeGroupSpec`], so nothing depends on the clock or the
//! machine. Identical specs give identical bytes.
//!
//! # Example
//!
//! ```
//! use std::io::Cursor;
//! use icos_lvm::{VolumeGroupSpec, read_pv, write_pv};
//!
//! let spec = VolumeGroupSpec::ic_hostos();
//! let mut pv = Cursor::new(Vec::new());
//! write_pv(&mut pv, 0, &spec)?;
//! let read = read_pv(&mut pv, 0)?;
//! assert_eq!(read.vg.name, "hostlvm");
//! assert_eq!(
//!     read.lv_byte_range("guestos")?,
//!     ((1 << 20) + 10777 * (4 << 20), 12800 * (4 << 20))
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod crc;
mod file;
mod read;
mod spec;
pub mod text;
mod write;

pub use file::{FileError, FileErrorKind, read_pv_file, write_pv_file};
pub use read::{
    DiskArea, LinearRange, LvInfo, MAX_METADATA_SIZE, MapError, MdaHeader, PhysicalVolume, PvInfo,
    PvLabel, RawLocation, ReadError, Segment, Stripe, VolumeGroup, read_pv,
};
pub use spec::{
    IC_CREATION_HOST, IC_CREATION_TIME, IC_HOSTOS_DEVICE_HINT, InvalidSpec, LvSpec, MIN_MDA_SIZE,
    SpecViolation, VolumeGroupSpec, derive_uuid,
};
pub use write::{WriteError, header_region, write_pv, write_pv_in_region};

/// The LVM UUID type (from the layout crate).
pub use icos_layout::LvmUuid;

/// Bytes per sector in LVM's on-disk units.
pub const SECTOR_SIZE: u64 = 512;
/// The sector holding the label.
pub const LABEL_SECTOR: u64 = 1;
/// LVM looks for the label in this many sectors from the start of the PV.
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// The label's identifier.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The label type of an LVM2 PV.
pub const LVM2_TYPE: &[u8; 8] = b"LVM2 001";
/// Offset of the PV header from the start of the label sector.
pub const PV_HEADER_OFFSET: u64 = 32;
/// Version of the PV header extension written.
pub const PV_HEADER_EXTENSION_VERSION: u32 = 2;
/// PV header extension flag: the PV belongs to a VG.
pub const PV_EXT_USED: u32 = 1;
/// Offset of the metadata area from the start of the PV.
pub const MDA_OFFSET: u64 = 4096;
/// Size of the metadata area header.
pub const MDA_HEADER_SIZE: u64 = 512;
/// The metadata area header's magic.
pub const FMTT_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Raw location flag: the location is ignored.
pub const RAW_LOCN_IGNORED: u32 = 1;
/// The writer named in the metadata text's comment line.
pub const VERSION_TEXT: &str = "icos-lvm";
