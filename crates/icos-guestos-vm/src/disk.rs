//! A byte window onto one partition of a disk, so that filesystem code sees
//! the partition as a device of its own.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// `len` bytes of `inner` starting at `offset`, as a device of their own:
/// reads and writes past the end are cut short, seeks are relative to the
/// window.
#[derive(Debug)]
pub struct Window<D> {
    inner: D,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<D> Window<D> {
    /// A window of `len` bytes at `offset` of `inner`.
    pub fn new(inner: D, offset: u64, len: u64) -> Window<D> {
        Window {
            inner,
            offset,
            len,
            pos: 0,
        }
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |l| l.min(want))
    }
}

impl<D: Seek> Window<D> {
    fn place(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.offset + self.pos))?;
        Ok(())
    }
}

impl<D: Read + Seek> Read for Window<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.place()?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Write + Seek> Write for Window<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.place()?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D> Seek for Window<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the partition")
        })?;
        self.pos = target;
        Ok(target)
    }
}

/// Reads a partition window of a file for `ext4_view`.
#[derive(Debug)]
pub(crate) struct FileWindow {
    pub(crate) file: std::fs::File,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl ext4_view::Ext4Read for FileWindow {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(format!(
                "read of {} bytes at {start_byte} is past the end of the {}-byte partition",
                dst.len(),
                self.len
            )
            .into());
        }
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(dst, self.offset + start_byte)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn window_reads_writes_and_stops_at_its_end() {
        let mut data = Cursor::new((0u8..100).collect::<Vec<u8>>());
        let mut w = Window::new(&mut data, 10, 20);
        let mut buf = [0u8; 30];
        let n = w.read(&mut buf).unwrap();
        assert_eq!(n, 20);
        assert_eq!(buf[0], 10);
        assert_eq!(buf[19], 29);
        assert_eq!(w.read(&mut buf).unwrap(), 0);
        w.seek(SeekFrom::End(-2)).unwrap();
        w.write_all(&[0xAA, 0xBB]).unwrap();
        assert!(w.write_all(&[1]).is_err());
        assert!(w.seek(SeekFrom::Current(-100)).is_err());
        let inner = data.into_inner();
        assert_eq!(&inner[28..31], &[0xAA, 0xBB, 30]);
    }
}
