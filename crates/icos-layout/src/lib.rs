//! IC-OS disk layouts as data, and GPT tables on image files.
//!
//! The three IC-OS images each have a fixed GPT layout, with fixed partition
//! UUIDs and disk label-id so that builds are reproducible:
//!
//! | image   | partitions | default image size |
//! |---------|------------|--------------------|
//! | GuestOS | `esp`, `grub`, `config`, `A_boot`, `A_root`, `A_var`, `B_boot`, `B_root`, `B_var` | 50 GiB (IC's `expanded_size = 50G`) |
//! | HostOS  | `esp`, `grub`, `hostlvm` (LVM PV of VG `hostlvm`: `config`, `A_*`, `B_*`, `guestos`) | 107 585 994 752 bytes (last partition end + 1 MiB) |
//! | SetupOS | `esp`, `grub`, `config` (type M), `data`, `boot`, `root` | 5 874 122 752 bytes (last partition end + 1 MiB) |
//!
//! This crate provides:
//!
//! - the layouts as values ([`OsKind::layout`], [`Layout`], [`Partition`],
//!   [`LvmLayout`]) with accessors by name, byte ranges and the A/B slot
//!   mapping ([`Slot`]);
//! - a parser for IC's `partitions.csv` / `volumes.csv` table format
//!   ([`parse_partitions_csv`], [`parse_volumes_csv`]);
//! - validation naming every broken rule ([`Layout::violations`]);
//! - a deterministic GPT writer and a reader working on any
//!   `Read + Write + Seek` device, plus path helpers for sparse image files
//!   ([`write_gpt`], [`read_gpt`], [`write_gpt_image`], [`read_gpt_image`]).
//!
//! # Example
//!
//! ```
//! use icos_layout::{Layout, OsKind, Slot, parse_partitions_csv, read_gpt, write_gpt};
//!
//! // Built-in layouts and their accessors.
//! let guestos = OsKind::GuestOs.layout();
//! let slot_b = guestos.slot_partitions(Slot::B).expect("GuestOS has slots");
//! assert_eq!(slot_b.root.start, 46_753_792);
//! assert_eq!(guestos.byte_range("esp"), Some((1 << 20, 100 << 20)));
//!
//! // A layout from IC's CSV format, written to and read back from memory.
//! let rows = "# name,start,size,type,uuid,comment\n\
//!             data , 2048, 2048,L,6788E4CF-F456-104E-9A34-A2C58CFB0EE6,Some data\n";
//! let layout = Layout::from_partitions("demo", parse_partitions_csv(rows)?);
//! let mut disk = std::io::Cursor::new(vec![0u8; layout.disk_size as usize]);
//! write_gpt(&mut disk, &layout)?;
//! let table = read_gpt(&mut disk)?;
//! assert!(table.differences_from(&layout).is_empty());
//! assert!(table.problems().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which GuestOS layout
//!
//! IC's current `ic-os/guestos/partitions.csv` adds `A_exe` and `B_exe`
//! (execution-data partitions) after each slot's `var`. The built-in GuestOS
//! layout is the nine-partition one (`esp`, `grub`, `config`, `A_boot`,
//! `A_root`, `A_var`, `B_boot`, `B_root`, `B_var`): the partition set icos
//! targets for GuestOS, and one that fits the 50 GiB image (the
//! eleven-partition layout ends at 62.3 GiB and would not).
//! Its rows are the newer file's rows minus the two `exe` rows, with the `B_*`
//! partitions moved down to follow `A_var` directly. The CSV parser reads the
//! newer file exactly, and [`Layout::from_partitions`] turns it into a
//! writable layout when that layout is wanted.
//!
//! # The GPT written
//!
//! [`write_gpt`] writes what `sfdisk` writes for IC's script (`label: gpt`,
//! `label-id`, then one `start=,size=,type=,uuid=` line per partition) on a
//! fresh image of the same size, plus the partition names: a protective MBR,
//! the primary header with first usable sector 2048 and 128 entries, and the
//! backup array and header in the last 33 sectors. The backup header is always
//! placed in the last sector of the image. (IC writes the GuestOS table on the
//! minimal image and only then extends the file to 50 GiB, which leaves its
//! backup header inside the disk; [`read_gpt`] reads such images and reports
//! it in [`GptTable::problems`].)
//!
//! The writer uses the `gpt` crate's header builder, entry writer and
//! protective MBR, which let every field be fixed: disk GUID, partition
//! GUIDs, names, exact first and last sectors, and the first usable sector.
//!
//! # LVM
//!
//! The HostOS volume group is described ([`LvmLayout`]: VG and PV UUIDs, 4 MiB
//! extents starting 1 MiB into the PV, and each LV's start extent, size and
//! UUID), validated and shown, but its on-disk metadata is not written here.

mod builtin;
mod csv;
mod image;
mod layout;
mod validate;

pub use builtin::{
    GUESTOS_DISK_SIZE, HOSTOS_DISK_SIZE, HOSTOS_EXTENT_SIZE, HOSTOS_PE_START, HOSTOS_PV_UUID,
    HOSTOS_VG_NAME, HOSTOS_VG_UUID, SETUPOS_DISK_SIZE,
};
pub use csv::{
    CsvError, CsvErrorKind, CsvFileError, format_partitions_csv, format_volumes_csv,
    parse_partitions_csv, parse_volumes_csv, read_partitions_csv, read_volumes_csv,
};
pub use image::{
    GptEntry, GptTable, HeaderStatus, ImageError, TableError, WriteFailure, WriteOptions,
    check_fits, read_gpt, read_gpt_image, write_gpt, write_gpt_image,
};
pub use layout::{
    InvalidLvmUuid, Layout, LogicalVolume, LvmLayout, LvmUuid, OsKind, Partition, PartitionType,
    Slot, SlotParts, UnknownName,
};
pub use validate::{InvalidLayout, Violation, last_usable_lba};

/// The UUID type used for disk GUIDs, partition UUIDs and type GUIDs.
pub use uuid::Uuid;

/// Bytes per sector; IC-OS layouts are in 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;
/// 1 MiB in sectors: partitions start and end on this boundary.
pub const ALIGNMENT_SECTORS: u64 = 2048;
/// The first sector a partition may use (`first-lba` in `sfdisk --dump`).
pub const FIRST_USABLE_LBA: u64 = 2048;
/// Entries in each GPT entry array.
pub const GPT_ENTRIES: u32 = 128;
/// Bytes per GPT entry.
pub const GPT_ENTRY_SIZE: u32 = 128;
/// Sectors taken by one GPT entry array (128 entries of 128 bytes).
pub const GPT_TABLE_SECTORS: u64 = GPT_ENTRIES as u64 * GPT_ENTRY_SIZE as u64 / SECTOR_SIZE;
/// UTF-16 code units a GPT partition name holds.
pub const GPT_NAME_UNITS: usize = 36;
/// The disk GUID (`label-id`) IC gives every IC-OS image.
pub const IC_LABEL_ID: uuid::Uuid = uuid::uuid!("2B110BB7-CDEC-7D41-B97E-893EDCBE5428");
/// 1 MiB in bytes.
pub const MIB: u64 = 1 << 20;
/// 1 GiB in bytes.
pub const GIB: u64 = 1 << 30;
