//! Deterministic filesystem and disk images, built without mounting.
//!
//! Everything here works on plain files with ordinary user-space tools, so it
//! runs on a host whose kernel has no device-mapper, no vfat driver and no
//! loop partition scanning:
//!
//! | what | how | function |
//! |------|-----|----------|
//! | ext4 | `mke2fs -d` from a tar stream (a directory is turned into a sorted tar first) | [`make_ext4`] |
//! | vfat | `mkfs.vfat --invariant` + `mmd`/`mcopy` in sorted order | [`make_vfat`] |
//! | dm-verity | `veritysetup format` in place (data and hash tree in one file, like IC) | [`verity_format`], [`verity_verify`] |
//! | initramfs | a newc cpio archive written here, like `cpio --reproducible` | [`write_cpio_newc`] |
//! | disk | GPT from [`icos_layout`], images copied at their offsets, holes kept | [`assemble_disk`] |
//! | checks | `e2fsck -fn`, `debugfs cat`, `mcopy` to stdout | [`e2fsck_check`], [`read_file_from_ext4`], [`read_file_from_vfat`] |
//!
//! # Determinism
//!
//! The same inputs give byte-identical outputs whatever the working
//! directory, umask, time zone, locale or time of day:
//!
//! - every external command runs through one helper with an explicit
//!   environment (`PATH`, `TZ=UTC`, `LC_ALL=C`, `SOURCE_DATE_EPOCH`,
//!   `E2FSPROGS_FAKE_TIME`, the mtools switches and a fixed `mke2fs.conf`);
//!   nothing is inherited from the caller;
//! - ext4: fixed UUID, `hash_seed`, label, size and `mke2fs.conf`. With tar
//!   input, e2fsprogs ≥ 1.47.2 takes each inode's mtime, atime and ctime from
//!   the archive (0 when the archive has none) and stamps crtime and the
//!   superblock times with `SOURCE_DATE_EPOCH`/`E2FSPROGS_FAKE_TIME`. A
//!   source directory is never handed to `mke2fs -d DIR` (1.47.2 sorts the
//!   names and clamps mtime and ctime there, but copies each file's atime,
//!   which reading the tree changes, mke2fs's own reads included). It is
//!   streamed to `mke2fs -d -` as a tar ([`write_dir_tar`]) with sorted
//!   names, mtimes clamped to the epoch and atime = ctime = epoch, so the
//!   read-only `noatime` bind mount that repeatable `mke2fs -d DIR` builds
//!   need is not needed: no mount and no root privileges (except to read a
//!   tree only root may read);
//! - vfat: `--invariant` fixes every mkfs-time field, the volume id is then
//!   written into the boot sector(s), and `SOURCE_DATE_EPOCH` dates the
//!   directories and files mtools creates;
//! - dm-verity: fixed salt and UUID;
//! - cpio: sorted names, owner 0:0, a fixed mtime, inodes numbered in archive
//!   order, device numbers zero;
//! - disk: fixed GUIDs from the layout, images written at fixed offsets.
//!
//! # Tools
//!
//! [`Tools::discover`] finds the commands and checks their versions; a missing
//! or too old tool is reported with the Debian package that provides it
//! (`e2fsprogs` ≥ 1.47.2 comes from bookworm-backports, and reading tars needs
//! `libarchive13`).
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use icos_imagefs::{Ext4Source, Ext4Spec, Tools, e2fsck_check, make_ext4};
//!
//! let tools = Tools::discover()?;
//! let spec = Ext4Spec {
//!     size_bytes: 64 << 20,
//!     label: "boot".into(),
//!     uuid: uuid::uuid!("6a5c1b1e-0000-4000-8000-000000000002"),
//!     hash_seed: uuid::uuid!("c61251eb-100b-48fe-b089-57dea7368612"),
//!     epoch: 1_700_000_000,
//! };
//! make_ext4(&tools, &spec, Ext4Source::Dir(Path::new("tree")), Path::new("boot.img"))?;
//! e2fsck_check(&tools, Path::new("boot.img"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cmd;
mod cpio;
mod dirtar;
mod disk;
mod error;
mod ext4;
mod tools;
mod verity;
mod vfat;

pub use cmd::CommandError;
pub use cpio::{
    CpioEntry, CpioOptions, read_cpio_newc, write_cpio_entries, write_cpio_newc,
    write_cpio_newc_with,
};
pub use dirtar::{TarOptions, write_dir_tar};
pub use disk::{assemble_disk, copy_sparse_at};
pub use error::ImageFsError;
pub use ext4::{
    Ext4Source, Ext4Spec, MKE2FS_CONF, e2fsck_check, ext4_file_exists, make_ext4,
    read_file_from_ext4,
};
pub use tools::{MIN_E2FSPROGS, MIN_MTOOLS, MIN_VERITYSETUP, ToolError, Tools, Version, find_tool};
pub use verity::{RootHash, VeritySpec, verity_format, verity_hash_size, verity_verify};
pub use vfat::{
    FAT_EPOCH_MIN, FAT32_MIN_SIZE, VfatSpec, list_vfat, make_vfat, read_file_from_vfat,
};

/// The block size of every ext4 filesystem and dm-verity tree made here.
pub const BLOCK_SIZE: u64 = 4096;
