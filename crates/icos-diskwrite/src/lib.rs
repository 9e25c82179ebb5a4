//! Writing a streamed image into a file, a block device, or a window of one
//! (a partition), and checking what was written.
//!
//! An image arrives as data at offsets with holes between (what
//! `icos_sparse_tar::visit` hands out for a sparse member; a plain member is
//! all data, and its all-zero chunks count as holes). [`Writer`] writes the
//! data where it belongs, hashing it on the way (SHA-256 of the data extents
//! in offset order), and makes every hole zero through the target's
//! [`Medium::zero`] — for a file or block device a [`Zeroer`], which asks
//! the kernel (`fallocate` `PUNCH_HOLE`, then `ZERO_RANGE`; on a block
//! device both become a WRITE ZEROES request) and writes zeros only when
//! neither is supported. Whatever the target held before is gone afterwards:
//! its first `size` bytes equal the image.
//!
//! A writer can hold back the first bytes of the image (a file system's
//! header) and hand them back at the end, so the caller writes them last,
//! after everything else is on stable storage.
//!
//! [`verify`] reads back what a [`Record`] says was written, after the
//! target's cached pages are dropped (`POSIX_FADV_DONTNEED`) so the device
//! is read: the data extents must hash to the recorded SHA-256, the zeroed
//! ranges must be zero — every byte with [`HoleCheck::Full`], or with
//! [`HoleCheck::Sample`] the first and last 4 KiB of every range and one
//! 4 KiB block per GiB inside it. Sampling suits images of mostly holes
//! (tens of GiB): the kernel's zeroing either zeroes a whole range or fails.
//!
//! [`Window`] is the [`Medium`] for a `std::fs::File`: a byte range of it
//! (`base`, `len`), so a partition of a disk image or of `/dev/vda` is
//! written with offsets relative to the partition.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use icos_diskwrite::{HoleCheck, Window, Writer, verify};
//! let disk = std::fs::OpenOptions::new().read(true).write(true).open("disk.img")?;
//! let part = Window::new(&disk, "disk.img", 1 << 20, 64 << 20);
//! let mut w = Writer::new(part, 8 << 20)?;
//! w.data(0, b"first bytes")?;
//! w.data(4 << 20, &[7u8; 4096])?; // the bytes between become a hole
//! let (mut part, record, _head) = w.finish()?;
//! disk.sync_all()?;
//! verify(&mut part, &record, HoleCheck::Sample)?;
//! # Ok(())
//! # }
//! ```

mod error;
mod extent;
mod medium;
mod verify;
mod writer;
mod zero;

pub use error::DiskWriteError;
pub use extent::{Extent, HoleCheck, SAMPLE, SAMPLE_EVERY, push_extent, samples};
pub use medium::{Medium, Window, drop_cached};
pub use verify::{Verified, verify};
pub use writer::{Position, Record, Writer};
pub use zero::{ZeroMethod, Zeroer};

/// The unit of writing, reading back and comparing.
pub const CHUNK: usize = 1 << 20;

#[cfg(test)]
mod tests;
