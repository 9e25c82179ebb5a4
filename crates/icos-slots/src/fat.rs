//! Finding a file's bytes inside a FAT file system, without mounting it.
//!
//! The grub partition of a GuestOS disk is a FAT file system holding
//! `grub.cfg` and `grubenv`, a file of exactly 1024 bytes. GRUB's
//! `save_env` rewrites that file in place: it never allocates, it overwrites
//! the clusters the file already has. This module finds those clusters so
//! the installer can do the same through plain `Read + Seek` (and later
//! `Write`): it reads the boot sector, walks the root directory and the
//! file's cluster chain, and returns the byte ranges of the file's data.
//!
//! FAT12, FAT16 and FAT32 are understood. Only the root directory is
//! searched, and only by the 8.3 short name (`GRUBENV`, compared without
//! regard to case, as GRUB and the kernel do); long-name entries are skipped.

use std::io::{self, Read, Seek, SeekFrom};

/// What went wrong while looking for a file.
#[derive(Debug)]
pub(crate) enum FatProblem {
    /// Reading the device failed.
    Io(io::Error),
    /// The file system or the file is not what it must be.
    Bad(String),
}

impl From<io::Error> for FatProblem {
    fn from(e: io::Error) -> Self {
        FatProblem::Io(e)
    }
}

fn bad<T>(reason: impl Into<String>) -> Result<T, FatProblem> {
    Err(FatProblem::Bad(reason.into()))
}

/// A file found in the root directory: its size and where its bytes are,
/// as (byte offset from the start of the partition, length) in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileExtents {
    /// The size recorded in the directory entry.
    pub size: u64,
    /// The data ranges, relative to the partition start; their lengths add
    /// up to `size`.
    pub extents: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The geometry read from the boot sector.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kind: FatType,
    bytes_per_sector: u64,
    cluster_bytes: u64,
    fat_offset: u64,
    fat_bytes: u64,
    root_dir_offset: u64,
    root_dir_entries: u64,
    root_cluster: u32,
    data_offset: u64,
    clusters: u32,
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn read_at<D: Read + Seek + ?Sized>(dev: &mut D, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buf)
}

fn geometry(sector: &[u8; 512], part_size: u64) -> Result<Geometry, FatProblem> {
    if sector[510..512] != [0x55, 0xAA] {
        return bad("no FAT boot sector (signature 55 AA missing at byte 510)");
    }
    let bytes_per_sector = u16_at(sector, 11);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return bad(format!(
            "boot sector: {bytes_per_sector} bytes per sector (must be 512, 1024, 2048 or 4096)"
        ));
    }
    let sectors_per_cluster = u64::from(sector[13]);
    if !sectors_per_cluster.is_power_of_two() {
        return bad(format!(
            "boot sector: {sectors_per_cluster} sectors per cluster (must be a power of two)"
        ));
    }
    let reserved = u16_at(sector, 14);
    let fats = u64::from(sector[16]);
    let root_entries = u16_at(sector, 17);
    let total16 = u16_at(sector, 19);
    let fat16_size = u16_at(sector, 22);
    let total32 = u32_at(sector, 32);
    let fat_sectors = if fat16_size != 0 {
        fat16_size
    } else {
        u32_at(sector, 36)
    };
    let total = if total16 != 0 { total16 } else { total32 };
    if reserved == 0 || fats == 0 || fat_sectors == 0 || total == 0 {
        return bad("boot sector: zero reserved sectors, FATs, FAT size or total sectors");
    }
    if total * bytes_per_sector > part_size {
        return bad(format!(
            "boot sector: the file system has {} bytes, more than its {part_size}-byte partition",
            total * bytes_per_sector
        ));
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let first_data = reserved + fats * fat_sectors + root_dir_sectors;
    if first_data >= total {
        return bad("boot sector: no room for data after the FATs and root directory");
    }
    let clusters = (total - first_data) / sectors_per_cluster;
    let kind = if clusters < 4085 {
        FatType::Fat12
    } else if clusters < 65525 {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if (kind == FatType::Fat32) != (root_entries == 0) {
        return bad(format!(
            "boot sector: {clusters} clusters need {} but the root directory has {root_entries} fixed entries",
            if kind == FatType::Fat32 {
                "FAT32 (no fixed root directory)"
            } else {
                "FAT12/16 (a fixed root directory)"
            }
        ));
    }
    Ok(Geometry {
        kind,
        bytes_per_sector,
        cluster_bytes: sectors_per_cluster * bytes_per_sector,
        fat_offset: reserved * bytes_per_sector,
        fat_bytes: fat_sectors * bytes_per_sector,
        root_dir_offset: (reserved + fats * fat_sectors) * bytes_per_sector,
        root_dir_entries: root_entries,
        root_cluster: u32::try_from(u32_at(sector, 44)).unwrap_or(0),
        data_offset: first_data * bytes_per_sector,
        clusters: u32::try_from(clusters).unwrap_or(u32::MAX),
    })
}

impl Geometry {
    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.clusters
    }

    /// The FAT entry of `cluster`: the next cluster, or `None` at the end.
    fn next<D: Read + Seek + ?Sized>(
        &self,
        dev: &mut D,
        base: u64,
        cluster: u32,
    ) -> Result<Option<u32>, FatProblem> {
        let c = u64::from(cluster);
        let (at, width) = match self.kind {
            FatType::Fat12 => (c + c / 2, 2),
            FatType::Fat16 => (c * 2, 2),
            FatType::Fat32 => (c * 4, 4),
        };
        if at + width > self.fat_bytes {
            return bad(format!("cluster {cluster} is beyond the FAT"));
        }
        let mut b = [0u8; 4];
        let width_bytes = usize::try_from(width).unwrap_or(4);
        read_at(dev, base + self.fat_offset + at, &mut b[..width_bytes])?;
        let raw = u32::from_le_bytes(b);
        let (value, end) = match self.kind {
            FatType::Fat12 => {
                let v = if cluster.is_multiple_of(2) {
                    raw & 0x0FFF
                } else {
                    (raw >> 4) & 0x0FFF
                };
                (v, 0x0FF8)
            }
            FatType::Fat16 => (raw & 0xFFFF, 0xFFF8),
            FatType::Fat32 => (raw & 0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        if value >= end {
            Ok(None)
        } else if self.valid_cluster(value) {
            Ok(Some(value))
        } else {
            bad(format!(
                "cluster {cluster} links to {value:#x}, which is free, bad or out of range"
            ))
        }
    }

    /// The clusters of the chain starting at `first`, at most `limit` of them.
    fn chain<D: Read + Seek + ?Sized>(
        &self,
        dev: &mut D,
        base: u64,
        first: u32,
        limit: u64,
    ) -> Result<Vec<u32>, FatProblem> {
        if !self.valid_cluster(first) {
            return bad(format!("first cluster {first} is out of range"));
        }
        let mut out = vec![first];
        let mut current = first;
        while let Some(next) = self.next(dev, base, current)? {
            if out.len() as u64 >= limit {
                return bad(format!(
                    "the cluster chain from {first} is longer than {limit} clusters (a loop?)"
                ));
            }
            out.push(next);
            current = next;
        }
        Ok(out)
    }
}

/// Converts a name like `grubenv` into its 8.3 directory form `GRUBENV    `.
fn short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || !name.is_ascii() {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.to_ascii_uppercase().as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.to_ascii_uppercase().as_bytes());
    Some(out)
}

/// Finds the regular file `name` (an 8.3 name) in the root directory of the
/// FAT file system that spans `part_size` bytes from `part_offset` of `dev`.
pub(crate) fn locate_root_file<D: Read + Seek + ?Sized>(
    dev: &mut D,
    part_offset: u64,
    part_size: u64,
    name: &str,
) -> Result<FileExtents, FatProblem> {
    let Some(wanted) = short_name(name) else {
        return bad(format!("{name:?} is not an 8.3 file name"));
    };
    let mut sector = [0u8; 512];
    read_at(dev, part_offset, &mut sector)?;
    let g = geometry(&sector, part_size)?;

    // The root directory: a fixed area (FAT12/16) or a cluster chain (FAT32).
    let areas: Vec<(u64, u64)> = if g.kind == FatType::Fat32 {
        let max = part_size / g.cluster_bytes + 1;
        g.chain(dev, part_offset, g.root_cluster, max)?
            .into_iter()
            .map(|c| (g.cluster_offset(c), g.cluster_bytes))
            .collect()
    } else {
        vec![(g.root_dir_offset, g.root_dir_entries * 32)]
    };
    let mut found = None;
    'areas: for (offset, len) in areas {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        read_at(dev, part_offset + offset, &mut buf)?;
        for entry in buf.chunks_exact(32) {
            match entry[0] {
                0x00 => break 'areas,
                0xE5 => continue,
                _ => {}
            }
            let attr = entry[11];
            // Long-name pieces, volume labels and directories are not files.
            if attr & 0x0F == 0x0F || attr & 0x18 != 0 {
                continue;
            }
            if entry[..11].eq_ignore_ascii_case(&wanted) {
                let cluster = (u16_at(entry, 20) << 16) | u16_at(entry, 26);
                found = Some((
                    u32::try_from(cluster).unwrap_or(u32::MAX),
                    u32_at(entry, 28),
                ));
                break 'areas;
            }
        }
    }
    let Some((first, size)) = found else {
        return bad(format!("no file {name} in the root directory"));
    };
    if size == 0 {
        return Ok(FileExtents {
            size,
            extents: Vec::new(),
        });
    }
    let needed = size.div_ceil(g.cluster_bytes);
    let chain = g.chain(dev, part_offset, first, needed)?;
    if (chain.len() as u64) < needed {
        return bad(format!(
            "{name} is {size} bytes but its cluster chain holds only {} of {} bytes",
            chain.len(),
            g.cluster_bytes
        ));
    }
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut left = size;
    for c in chain {
        let len = left.min(g.cluster_bytes);
        let at = g.cluster_offset(c);
        if at + len > part_size {
            return bad(format!("{name}: cluster {c} lies beyond the partition"));
        }
        match extents.last_mut() {
            Some((start, l)) if *start + *l == at => *l += len,
            _ => extents.push((at, len)),
        }
        left -= len;
    }
    debug_assert_eq!(g.bytes_per_sector % 512, 0);
    Ok(FileExtents { size, extents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("grubenv"), Some(*b"GRUBENV    "));
        assert_eq!(short_name("grub.cfg"), Some(*b"GRUB    CFG"));
        assert_eq!(short_name("toolongname"), None);
        assert_eq!(short_name(".x"), None);
    }

    #[test]
    fn rejects_a_sector_that_is_not_fat() {
        let mut dev = std::io::Cursor::new(vec![0u8; 4096]);
        let err = locate_root_file(&mut dev, 0, 4096, "grubenv").unwrap_err();
        assert!(matches!(err, FatProblem::Bad(r) if r.contains("55 AA")));
    }
}
