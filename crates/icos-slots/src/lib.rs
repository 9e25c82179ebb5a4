//! The A/B slot installer of GuestOS and HostOS: put an upgrade image into
//! the spare slot, verify it, and commit it in grubenv; confirm a booted
//! slot; show the state.
//!
//! A GuestOS disk has two slots, A and B, each a boot, root and var
//! partition, and a FAT `grub` partition whose 1024-byte `grubenv` file
//! holds `boot_alternative` and `boot_cycle` (see `icos_grubenv` for the
//! state machine GRUB applies at each boot). An upgrade image
//! (`update-img.tar.zst`) holds `boot.img`, `root.img` and `VERSION.TXT`.
//!
//! [`SlotDisk`] works on anything `Read + Write + Seek` that can be synced
//! ([`Device`]): a disk image file, a block device, or a test double. A
//! device zeroes ranges with [`Device::zero`] (writing zeros by default; a
//! file or block device punches holes or asks for WRITE ZEROES). It
//! finds the partitions by their GPT names (`grub`, `A_boot`, `A_root`,
//! `A_var`, `B_boot`, `B_root`, `B_var`), so any disk with IC's partition
//! names works, not only the 50 GiB layout.
//!
//! - [`SlotDisk::status`]: the boot state, which slot runs, boots next and
//!   would be upgraded, and what each slot partition holds;
//! - [`SlotDisk::install`]: invalidate the spare slot, stream the image in
//!   (data written, holes zeroed through [`Device::zero`], see
//!   `icos_diskwrite`), sync, read the data back and compare its SHA-256,
//!   sample the holes, then flip grubenv to
//!   `boot_alternative=<spare>`, `boot_cycle=first_boot` (the method docs
//!   give the exact order and why a crash at any step is safe);
//! - [`SlotDisk::confirm`]: `failsafe_check` → `stable`, as the booted
//!   system does once it is healthy.
//!
//! # HostOS: slots on LVM volumes
//!
//! HostOS's slots are the logical volumes `hostlvm/{A,B}_{boot,root,var}`,
//! each its own device, and grubenv is in the `grub` partition of the system
//! disk. [`Volumes`] joins such devices into one [`Device`] address space and
//! [`SlotDisk::hostos`] / [`open_hostos`] lay the volumes out in it as the
//! slot "partitions": install, confirm and status run unchanged, with every
//! step's sync reaching all the volumes.
//!
//! # grubenv inside FAT, without mounting
//!
//! GRUB rewrites `grubenv` in place (`save_env` cannot allocate), and so
//! does this crate: it reads the FAT boot sector, finds `GRUBENV` in the
//! root directory, follows its cluster chain and overwrites the 1024 bytes
//! where they are. The file's size must be exactly 1024 bytes and stays so;
//! no FAT, directory entry or other file is touched. Only the 512-byte
//! sectors that change are written: a boot-state change lives in the first
//! sector, and a single-sector write is not torn by a crash.
//!
//! A FAT library would do more than that: open the volume read-write (and
//! mark it dirty), update the directory entry's times, possibly rewrite FAT
//! sectors, and it would need the partition wrapped as its own stream. The
//! in-place write changes exactly the bytes GRUB's `save_env` changes, so
//! GRUB, the HostOS runner and this crate all agree on where the block is;
//! the locator is a few hundred lines with its own checks (boot-sector
//! sanity, cluster ranges, chain loops, the 1024-byte size).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! let mut disk = icos_slots::open(Path::new("disk.img"), true)?;
//! let update = Path::new("update-img.tar.zst");
//! let report = disk.install(std::fs::File::open(update)?, update, &mut |step| {
//!     eprintln!("{step}");
//! })?;
//! println!("slot {} now holds {} ({})", report.slot, report.version, report.after);
//! # Ok(())
//! # }
//! ```

mod disk;
mod error;
mod install;
#[cfg(test)]
mod tests;
mod volumes;

pub use disk::{
    ConfirmReport, Content, Device, DiskLayout, GRUB_PARTITION, GRUBENV_FILE, HEADER_BYTES, Part,
    PartStatus, SlotDisk, SlotParts, SlotStatus, Status, open,
};
pub use error::SlotsError;
pub use icos_diskwrite::ZeroMethod;
pub use icos_grubenv::Slot;
pub use install::{
    BOOT_MEMBER, InstallReport, Installed, ROOT_MEMBER, Step, VAR_WIPE_BYTES, VERSION_MEMBER,
    read_version,
};
pub use volumes::{HOSTOS_GRUB_DEVICE, HOSTOS_VOLUME_DIR, HOSTOS_VOLUMES, Volumes, open_hostos};
