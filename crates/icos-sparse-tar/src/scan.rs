//! Finding the data map of a file the way GNU tar 1.34 does with
//! `--sparse --hole-detection=raw`, but without reading the holes.
//!
//! GNU tar decides per file:
//!
//! 1. A file is archived as sparse only when it *is* sparse on disk:
//!    `st_blocks < ceil(st_size / 512)` (`ST_IS_SPARSE`). Otherwise it is a
//!    plain member, whatever zeros it holds.
//! 2. A sparse file with `st_blocks == 0` gets the map `[(st_size, 0)]`.
//! 3. Otherwise the file is read from the start in 512-byte chunks (the
//!    last one may be shorter); runs of chunks that are not all zero become
//!    the map's segments. If the file does not end inside a segment, a
//!    zero-length segment at `st_size` is appended.
//!
//! Here, `SEEK_DATA`/`SEEK_HOLE` find the allocated extents first and only
//! those are read: a hole reads as zeros, so skipping it cannot change the
//! outcome of step 3. Extents are widened to 512-byte chunk boundaries so
//! that every chunk is judged exactly as GNU tar judges it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;

use crate::header::BLOCK_U64;
use crate::{Error, Segment};

/// Size of the reads used to scan and copy data.
pub(crate) const IO_CHUNK: usize = 1 << 20;

/// How a file goes into the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A plain member holding all `st_size` bytes.
    Regular,
    /// An old-GNU sparse member with this map.
    Sparse(Vec<Segment>),
}

/// Whether GNU tar would treat a file of this size and block count as
/// sparse (`ST_IS_SPARSE`, with 512-byte `st_blocks` units).
pub(crate) fn is_sparse_on_disk(size: u64, blocks: u64) -> bool {
    blocks < size.div_ceil(BLOCK_U64)
}

/// The allocated extents of `file` as `(start, end)` pairs, in order.
/// Falls back to one extent covering the file when the filesystem does not
/// support `SEEK_DATA`.
pub(crate) fn data_extents(file: &File, path: &Path, size: u64) -> Result<Vec<(u64, u64)>, Error> {
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if pos == 0 => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(Error::io("seeking data in", path)(io::Error::from(e))),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))
            .map_err(|e| Error::io("seeking hole in", path)(io::Error::from(e)))?
            .min(size);
        if end <= start {
            return Err(Error::FileChanged { path: path.into() });
        }
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

/// Accumulates 512-byte chunk verdicts, in increasing offset order, into a
/// GNU sparse map. Offsets never reported count as zero chunks.
#[derive(Debug, Default)]
pub(crate) struct MapBuilder {
    map: Vec<Segment>,
    open: Option<Segment>,
}

impl MapBuilder {
    /// A chunk at `offset` of `length` bytes holds a non-zero byte.
    pub(crate) fn data(&mut self, offset: u64, length: u64) {
        match &mut self.open {
            Some(seg) if seg.offset + seg.length == offset => seg.length += length,
            _ => {
                self.close();
                self.open = Some(Segment { offset, length });
            }
        }
    }

    /// A chunk is all zeros.
    pub(crate) fn zero(&mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(seg) = self.open.take() {
            self.map.push(seg);
        }
    }

    /// The final map of a file of `size` bytes.
    pub(crate) fn finish(mut self, size: u64) -> Vec<Segment> {
        self.close();
        let ends_in_data = self.map.last().is_some_and(|s| s.offset + s.length == size);
        if !ends_in_data {
            self.map.push(Segment {
                offset: size,
                length: 0,
            });
        }
        self.map
    }
}

/// Scans the given extents of `file` in 512-byte chunks and returns the
/// map. `progress` receives the number of bytes read after each read.
pub(crate) fn raw_map(
    file: &File,
    path: &Path,
    size: u64,
    extents: &[(u64, u64)],
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Segment>, Error> {
    let mut builder = MapBuilder::default();
    let mut buf = vec![0u8; IO_CHUNK];
    let zeros = [0u8; crate::header::BLOCK];
    let mut scanned_to = 0u64;
    for &(start, end) in extents {
        let mut pos = (start - start % BLOCK_U64).max(scanned_to);
        let end = end.next_multiple_of(BLOCK_U64).min(size);
        while pos < end {
            let want = usize::try_from(end - pos).map_or(IO_CHUNK, |n| n.min(IO_CHUNK));
            let chunk = &mut buf[..want];
            file.read_exact_at(chunk, pos).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::FileChanged { path: path.into() }
                } else {
                    Error::io("reading", path)(e)
                }
            })?;
            let mut off = pos;
            for block in chunk.chunks(crate::header::BLOCK) {
                if block == &zeros[..block.len()] {
                    builder.zero();
                } else {
                    builder.data(off, block.len() as u64);
                }
                off += block.len() as u64;
            }
            pos += want as u64;
            progress(want as u64);
        }
        scanned_to = end;
    }
    Ok(builder.finish(size))
}

/// Decides how GNU tar (`--sparse --hole-detection=raw`) would store a file
/// of `size` bytes and `blocks` 512-byte blocks.
pub(crate) fn layout(
    file: &File,
    path: &Path,
    size: u64,
    blocks: u64,
    extents: &[(u64, u64)],
    progress: &mut dyn FnMut(u64),
) -> Result<Layout, Error> {
    if !is_sparse_on_disk(size, blocks) {
        return Ok(Layout::Regular);
    }
    if blocks == 0 {
        return Ok(Layout::Sparse(vec![Segment {
            offset: size,
            length: 0,
        }]));
    }
    raw_map(file, path, size, extents, progress).map(Layout::Sparse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn seg(offset: u64, length: u64) -> Segment {
        Segment { offset, length }
    }

    #[test]
    fn builder_merges_contiguous_data_and_terminates_holes() {
        let mut b = MapBuilder::default();
        b.data(0, 512);
        b.data(512, 512);
        b.zero();
        b.data(4096, 512);
        // A gap (skipped hole) closes the segment too.
        b.data(8192, 100);
        assert_eq!(
            b.finish(8292),
            vec![seg(0, 1024), seg(4096, 512), seg(8192, 100)]
        );
        let mut b = MapBuilder::default();
        b.data(512, 512);
        assert_eq!(b.finish(4096), vec![seg(512, 512), seg(4096, 0)]);
        assert_eq!(MapBuilder::default().finish(777), vec![seg(777, 0)]);
    }

    #[test]
    fn sparse_on_disk_rule() {
        assert!(!is_sparse_on_disk(0, 0));
        assert!(is_sparse_on_disk(1, 0));
        assert!(!is_sparse_on_disk(4096, 8));
        assert!(is_sparse_on_disk(1 << 20, 8));
    }

    #[test]
    fn scans_unaligned_data_at_512_byte_granularity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        f.seek(io::SeekFrom::Start(5000)).unwrap();
        f.write_all(&[b'x'; 100]).unwrap();
        f.seek(io::SeekFrom::Start(8192)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap(); // allocated zeros
        f.seek(io::SeekFrom::Start(12288)).unwrap();
        f.write_all(&[1u8; 600]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let extents = data_extents(&f, &path, 1 << 20).unwrap();
        let map = raw_map(&f, &path, 1 << 20, &extents, &mut |_| {}).unwrap();
        assert_eq!(map, vec![seg(4608, 512), seg(12288, 1024), seg(1 << 20, 0)]);
        // Scanning the whole file as one extent gives the same map.
        let full = raw_map(&f, &path, 1 << 20, &[(0, 1 << 20)], &mut |_| {}).unwrap();
        assert_eq!(map, full);
    }
}
