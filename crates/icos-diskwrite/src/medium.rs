//! What a [`crate::Writer`] writes into: positional reads, writes and
//! zeroing over a window of a target.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::Advice;

use crate::zero::{ZeroMethod, Zeroer};

/// A target of known size addressed by byte offsets (relative to the
/// window written: a partition, or the whole file).
pub trait Medium {
    /// The file or device, for errors.
    fn path(&self) -> &Path;
    /// The window's size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` zero; returns how.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod>;
    /// Drops cached pages of the window, so reads come from the device.
    /// Best effort; the default does nothing.
    fn drop_cache(&mut self) {}
}

/// `len` bytes of a file or block device from byte `base`: a partition of
/// a disk (or the whole of it, from 0). Holes are zeroed with a [`Zeroer`].
#[derive(Debug)]
pub struct Window<'f> {
    file: &'f File,
    path: PathBuf,
    base: u64,
    len: u64,
    zeroer: Zeroer,
}

impl<'f> Window<'f> {
    /// The window `[base, base + len)` of `file`, named `path` in errors.
    pub fn new(file: &'f File, path: impl Into<PathBuf>, base: u64, len: u64) -> Self {
        Window {
            file,
            path: path.into(),
            base,
            len,
            zeroer: Zeroer::default(),
        }
    }

    /// The whole of `file`, from byte 0 to its end as `lseek` finds it (for
    /// a block device its capacity).
    pub fn whole(file: &'f File, path: impl Into<PathBuf>) -> io::Result<Self> {
        let mut f = file;
        let len = io::Seek::seek(&mut f, io::SeekFrom::End(0))?;
        Ok(Window::new(file, path, 0, len))
    }

    /// Zeroes with `zeroer` instead of the default one.
    #[must_use]
    pub fn with_zeroer(mut self, zeroer: Zeroer) -> Self {
        self.zeroer = zeroer;
        self
    }

    /// The window's first byte in the file.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The zeroer, with the method it used last.
    pub fn zeroer(&self) -> &Zeroer {
        &self.zeroer
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at byte {offset} do not fit the {}-byte window at byte {} of the file",
                    self.len, self.base
                ),
            )),
        }
    }
}

impl Medium for Window<'_> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, at)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let at = self.check(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, at)
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        let at = self.check(offset, len)?;
        self.zeroer.zero(self.file, at, len)
    }

    fn drop_cache(&mut self) {
        drop_cached(self.file, self.base, self.len);
    }
}

/// Drops the cached pages of `len` bytes at `offset` of `file`
/// (`POSIX_FADV_DONTNEED`), so the next reads come from the device. Best
/// effort: a target that ignores the advice is read from the cache. Call it
/// after the writes are synced (dirty pages are not dropped).
pub fn drop_cached(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        Advice::DontNeed,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_window_stays_inside_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0xEEu8; 64 * 1024]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(Window::whole(&f, &path).unwrap().size(), 64 * 1024);
        let mut w = Window::new(&f, &path, 8192, 16384);
        w.write_at(0, b"abc").unwrap();
        w.zero(4096, 8192).unwrap();
        let err = w.write_at(16383, b"xy").unwrap_err();
        assert!(err.to_string().contains("16384-byte window"), "{err}");
        assert!(w.zero(16000, 1000).is_err());
        let mut back = [0u8; 3];
        w.read_at(0, &mut back).unwrap();
        assert_eq!(&back, b"abc");
        w.drop_cache();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[8192..8195], b"abc");
        assert!(bytes[8192 + 4096..8192 + 12288].iter().all(|&b| b == 0));
        assert!(bytes[..8192].iter().all(|&b| b == 0xEE));
        assert!(bytes[8192 + 12288..].iter().all(|&b| b == 0xEE));
    }
}
