//! In-place access to a file of a FAT (12, 16 or 32) file system through
//! plain `Read + Seek` (`+ Write`), without mounting: find a file of the
//! root directory by its 8.3 name, read it, and overwrite its bytes in
//! place, as GRUB's `save_env` does with `grubenv` (the same clusters, the
//! same length; no directory entry, FAT or dirty flag touched). A
//! [`Window`] makes one partition of a disk look like a device of its own.
//!
//! Used by the GuestOS VM runner (grubenv refresh before a VM start) and the
//! A/B slot installer (the grubenv flip after an install).

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

/// What is wrong with a FAT filesystem or with the file looked up in it.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Reading or writing the device failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The boot sector is not a FAT boot sector this reader understands.
    #[error("not a FAT filesystem: {0}")]
    NotFat(String),
    /// The file is not in the root directory.
    #[error("{0} is not in the root directory")]
    NotFound(String),
    /// The file's cluster chain is broken.
    #[error("broken cluster chain: {reason}")]
    BadChain {
        /// The file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The bytes to write do not have the file's length.
    #[error("{name} is {len} bytes; an in-place write of {given} bytes would change its length")]
    LengthMismatch {
        /// The file.
        name: String,
        /// Its length.
        len: u64,
        /// The length given.
        given: u64,
    },
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> FatError {
    move |source| FatError::Io { action, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// The geometry read from a FAT boot sector.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kind: Kind,
    cluster_size: u64,
    fat_offset: u64,
    /// FAT12/16: the fixed root directory.
    root_dir_offset: u64,
    root_dir_len: u64,
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
    data_offset: u64,
    clusters: u32,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Geometry {
    fn read<D: Read + Seek + ?Sized>(dev: &mut D) -> Result<Geometry, FatError> {
        let mut bs = [0u8; 512];
        dev.seek(SeekFrom::Start(0))
            .and_then(|_| dev.read_exact(&mut bs))
            .map_err(io_err("reading the FAT boot sector"))?;
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return Err(FatError::NotFat("no 55 AA boot signature".into()));
        }
        let bytes_per_sector = le16(&bs, 11);
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = le16(&bs, 14);
        let fats = u64::from(bs[16]);
        let root_entries = le16(&bs, 17);
        let total16 = le16(&bs, 19);
        let fat16_size = le16(&bs, 22);
        let total32 = u64::from(le32(&bs, 32));
        let fat32_size = u64::from(le32(&bs, 36));
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            return Err(FatError::NotFat(format!(
                "bytes per sector is {bytes_per_sector}"
            )));
        }
        if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
            return Err(FatError::NotFat(format!(
                "sectors per cluster is {sectors_per_cluster}"
            )));
        }
        if fats == 0 || reserved == 0 {
            return Err(FatError::NotFat("no FAT or no reserved sectors".into()));
        }
        let fat_size = if fat16_size != 0 {
            fat16_size
        } else {
            fat32_size
        };
        let total = if total16 != 0 { total16 } else { total32 };
        let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let data_start = reserved + fats * fat_size + root_dir_sectors;
        if fat_size == 0 || total <= data_start {
            return Err(FatError::NotFat(format!(
                "{total} sectors leave no data area after sector {data_start}"
            )));
        }
        let clusters = (total - data_start) / sectors_per_cluster;
        let kind = if clusters < 4085 {
            Kind::Fat12
        } else if clusters < 65525 {
            Kind::Fat16
        } else {
            Kind::Fat32
        };
        Ok(Geometry {
            kind,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            fat_offset: reserved * bytes_per_sector,
            root_dir_offset: (reserved + fats * fat_size) * bytes_per_sector,
            root_dir_len: root_dir_sectors * bytes_per_sector,
            root_cluster: if kind == Kind::Fat32 {
                le32(&bs, 44)
            } else {
                0
            },
            data_offset: data_start * bytes_per_sector,
            clusters: u32::try_from(clusters).unwrap_or(u32::MAX),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_size
    }

    /// The FAT entry of `cluster`; `None` at the end of a chain.
    fn next<D: Read + Seek + ?Sized>(
        &self,
        dev: &mut D,
        cluster: u32,
    ) -> Result<Option<u32>, FatError> {
        let c = u64::from(cluster);
        let (at, width) = match self.kind {
            Kind::Fat12 => (c + c / 2, 2),
            Kind::Fat16 => (c * 2, 2),
            Kind::Fat32 => (c * 4, 4),
        };
        let mut buf = [0u8; 4];
        dev.seek(SeekFrom::Start(self.fat_offset + at))
            .and_then(|_| dev.read_exact(&mut buf[..width]))
            .map_err(io_err("reading the FAT"))?;
        let raw = le32(&buf, 0);
        let (value, end) = match self.kind {
            Kind::Fat12 => {
                let v = if cluster.is_multiple_of(2) {
                    raw & 0x0FFF
                } else {
                    (raw >> 4) & 0x0FFF
                };
                (v, 0x0FF8)
            }
            Kind::Fat16 => (raw & 0xFFFF, 0xFFF8),
            Kind::Fat32 => (raw & 0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        Ok((value < end).then_some(value))
    }

    /// The clusters of a chain starting at `first`, at most `limit` of them.
    fn chain<D: Read + Seek + ?Sized>(
        &self,
        dev: &mut D,
        name: &str,
        first: u32,
        limit: u64,
    ) -> Result<Vec<u32>, FatError> {
        let bad = |reason: String| FatError::BadChain {
            name: name.to_owned(),
            reason,
        };
        let mut out = Vec::new();
        let mut cur = Some(first);
        while let Some(c) = cur {
            if c < 2 || c >= self.clusters.saturating_add(2) {
                return Err(bad(format!("cluster {c} is outside the data area")));
            }
            if out.len() as u64 >= limit {
                break;
            }
            out.push(c);
            cur = self.next(dev, c)?;
        }
        Ok(out)
    }
}

/// A file found in the root directory: where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// The name looked up.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The byte ranges (offset, length) inside the filesystem holding its
    /// data, in order.
    pub extents: Vec<(u64, u64)>,
}

/// Converts `grubenv` or `grub.cfg` to the padded, upper-case 8.3 form of a
/// directory entry.
fn short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || !name.is_ascii() {
        return None;
    }
    let mut out = [b' '; 11];
    for (i, b) in base.bytes().enumerate() {
        out[i] = b.to_ascii_uppercase();
    }
    for (i, b) in ext.bytes().enumerate() {
        out[8 + i] = b.to_ascii_uppercase();
    }
    Some(out)
}

/// Finds `name` (an 8.3 name, any case) in the root directory.
pub fn find_root_file<D: Read + Seek + ?Sized>(
    dev: &mut D,
    name: &str,
) -> Result<FatFile, FatError> {
    let want = short_name(name).ok_or_else(|| FatError::NotFound(name.to_owned()))?;
    let geo = Geometry::read(dev)?;
    let root: Vec<(u64, u64)> = if geo.kind == Kind::Fat32 {
        geo.chain(dev, "the root directory", geo.root_cluster, 65536)?
            .into_iter()
            .map(|c| (geo.cluster_offset(c), geo.cluster_size))
            .collect()
    } else {
        vec![(geo.root_dir_offset, geo.root_dir_len)]
    };
    for (offset, len) in root {
        let mut dir = vec![0u8; usize::try_from(len).unwrap_or(0)];
        dev.seek(SeekFrom::Start(offset))
            .and_then(|_| dev.read_exact(&mut dir))
            .map_err(io_err("reading the root directory"))?;
        for entry in dir.chunks_exact(32) {
            match entry[0] {
                0x00 => return Err(FatError::NotFound(name.to_owned())),
                0xE5 => continue,
                _ => {}
            }
            let attr = entry[11];
            // Long-name parts, volume labels and directories are not files.
            if attr & 0x0F == 0x0F || attr & 0x18 != 0 || entry[..11] != want {
                continue;
            }
            let first =
                u32::try_from((le16(entry, 20) << 16) | le16(entry, 26)).unwrap_or(u32::MAX);
            let len = u64::from(le32(entry, 28));
            let needed = len.div_ceil(geo.cluster_size);
            let clusters = if len == 0 {
                Vec::new()
            } else {
                geo.chain(dev, name, first, needed)?
            };
            if (clusters.len() as u64) < needed {
                return Err(FatError::BadChain {
                    name: name.to_owned(),
                    reason: format!(
                        "{len} bytes need {needed} clusters, the chain has {}",
                        clusters.len()
                    ),
                });
            }
            let mut left = len;
            let extents = clusters
                .into_iter()
                .map(|c| {
                    let take = left.min(geo.cluster_size);
                    left -= take;
                    (geo.cluster_offset(c), take)
                })
                .collect();
            return Ok(FatFile {
                name: name.to_owned(),
                len,
                extents,
            });
        }
    }
    Err(FatError::NotFound(name.to_owned()))
}

/// Reads a file found with [`find_root_file`].
pub fn read_file<D: Read + Seek + ?Sized>(
    dev: &mut D,
    file: &FatFile,
) -> Result<Vec<u8>, FatError> {
    let mut out = Vec::with_capacity(usize::try_from(file.len).unwrap_or(0));
    for &(offset, len) in &file.extents {
        let start = out.len();
        out.resize(start + usize::try_from(len).unwrap_or(0), 0);
        dev.seek(SeekFrom::Start(offset))
            .and_then(|_| dev.read_exact(&mut out[start..]))
            .map_err(io_err("reading file data"))?;
    }
    Ok(out)
}

/// Overwrites a file's bytes in place with `data` of the same length, then
/// flushes the device.
pub fn overwrite_file<D: Write + Seek + ?Sized>(
    dev: &mut D,
    file: &FatFile,
    data: &[u8],
) -> Result<(), FatError> {
    if data.len() as u64 != file.len {
        return Err(FatError::LengthMismatch {
            name: file.name.clone(),
            len: file.len,
            given: data.len() as u64,
        });
    }
    let mut rest = data;
    for &(offset, len) in &file.extents {
        let (now, later) = rest.split_at(usize::try_from(len).unwrap_or(0));
        dev.seek(SeekFrom::Start(offset))
            .and_then(|_| dev.write_all(now))
            .map_err(io_err("writing file data"))?;
        rest = later;
    }
    dev.flush().map_err(io_err("flushing the device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(&short_name("grubenv").unwrap(), b"GRUBENV    ");
        assert_eq!(&short_name("grub.cfg").unwrap(), b"GRUB    CFG");
        assert!(short_name("averylongname").is_none());
        assert!(short_name(".x").is_none());
    }

    #[test]
    fn window_reads_writes_and_stops_at_its_end() {
        let mut data = std::io::Cursor::new((0u8..100).collect::<Vec<u8>>());
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

    #[test]
    fn garbage_is_not_fat() {
        let mut dev = std::io::Cursor::new(vec![0u8; 4096]);
        assert!(matches!(
            find_root_file(&mut dev, "grubenv"),
            Err(FatError::NotFat(_))
        ));
    }
}
