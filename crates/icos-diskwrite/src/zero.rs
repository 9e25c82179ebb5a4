//! Making ranges of a file or block device zero, cheaply when the kernel can.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::FallocateFlags;

use crate::CHUNK;

/// Zeroing requests are aligned to this (any logical sector size divides it).
const ALIGN: u64 = 4096;

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
            zeros: Vec::new(),
        }
    }

    /// The method that zeroed the last range.
    pub fn used(&self) -> Option<ZeroMethod> {
        self.used
    }

    fn write_zeros(&mut self, file: &File, mut offset: u64, len: u64) -> io::Result<()> {
        if len > 0 && self.zeros.is_empty() {
            self.zeros = vec![0u8; CHUNK];
        }
        let end = offset + len;
        while offset < end {
            let n = usize::try_from((end - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            file.write_all_at(&self.zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` of `file` zero; returns how the aligned
    /// middle of the range was zeroed (unaligned edges are written).
    pub fn zero(&mut self, file: &File, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        let end = offset + len;
        let start = offset.next_multiple_of(ALIGN).min(end);
        let stop = (end / ALIGN * ALIGN).max(start);
        self.write_zeros(file, offset, start - offset)?;
        self.write_zeros(file, stop, end - stop)?;
        if stop == start {
            return Ok(ZeroMethod::WriteZeros);
        }
        loop {
            let method = self
                .methods
                .first()
                .copied()
                .unwrap_or(ZeroMethod::WriteZeros);
            let flags = match method {
                ZeroMethod::PunchHole => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                ZeroMethod::ZeroRange => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                ZeroMethod::WriteZeros => {
                    self.write_zeros(file, start, stop - start)?;
                    self.used = Some(method);
                    return Ok(method);
                }
            };
            match rustix::fs::fallocate(file, flags, start, stop - start) {
                Ok(()) => {
                    self.used = Some(method);
                    return Ok(method);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn zeroing_handles_unaligned_edges_with_every_method() {
        let dir = tempfile::tempdir().unwrap();
        for methods in [
            &ZeroMethod::ALL[..],
            &[ZeroMethod::ZeroRange][..],
            &[ZeroMethod::WriteZeros][..],
        ] {
            let path = dir.path().join("t");
            std::fs::write(&path, vec![0xFFu8; 64 * 1024]).unwrap();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut z = Zeroer::with_methods(methods);
            z.zero(&f, 100, 20_000).unwrap();
            assert_eq!(z.zero(&f, 30_000, 10).unwrap(), ZeroMethod::WriteZeros);
            let used = z.zero(&f, 40_960, 8192).unwrap();
            if methods == [ZeroMethod::WriteZeros] {
                assert_eq!(used, ZeroMethod::WriteZeros);
            }
            assert_eq!(z.used(), Some(used));
            z.zero(&f, 50_000, 0).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), 64 * 1024, "the size is kept");
            for (i, &b) in bytes.iter().enumerate() {
                let zero = (100..20_100).contains(&i)
                    || (30_000..30_010).contains(&i)
                    || (40_960..49_152).contains(&i);
                assert_eq!(b == 0, zero, "byte {i} with {methods:?}");
            }
        }
    }
}
