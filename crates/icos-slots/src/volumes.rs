//! HostOS's slots: every slot volume is its own device (an LVM logical
//! volume, `/dev/hostlvm/B_root`), and grubenv lives in the FAT `grub`
//! partition of the system disk.
//!
//! [`Volumes`] puts several devices (or windows of them) one after another
//! into a single address space and is itself a [`Device`]; a [`SlotDisk`]
//! over it sees each volume as a "partition" at its place in that space. So
//! HostOS and GuestOS share every line of `install`, `confirm` and `status`:
//! the ordering, syncs, held-back headers, verification and re-invalidation
//! do not know whether the slots are partitions of one disk or separate
//! volumes. A sync syncs every member; a read or write never crosses from
//! one member into the next (each starts on a 1 MiB boundary of the address
//! space, and the installer's accesses stay inside one partition).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use icos_diskwrite::ZeroMethod;
use uuid::Uuid;

use crate::disk::{Device, DiskLayout, GRUB_PARTITION, Part, SlotDisk, SlotParts};
use crate::error::SlotsError;

/// The slot volumes of HostOS's `hostlvm` volume group, in order.
pub const HOSTOS_VOLUMES: [&str; 6] = ["A_boot", "A_root", "A_var", "B_boot", "B_root", "B_var"];
/// Where a running HostOS finds its slot volumes (`/dev/<vg>/<lv>`).
pub const HOSTOS_VOLUME_DIR: &str = "/dev/hostlvm";
/// The grub partition of a running HostOS's system disk.
pub const HOSTOS_GRUB_DEVICE: &str = "/dev/disk/by-partlabel/grub";

/// Members start on this boundary of the joint address space.
const ALIGN: u64 = 1 << 20;

/// One device (or window of one) in a [`Volumes`] set.
#[derive(Debug)]
struct Member<D> {
    dev: D,
    /// Offset of the window on `dev`.
    base: u64,
    /// Offset of the window in the joint address space.
    start: u64,
    /// Length of the window.
    len: u64,
}

/// Several devices as one [`Device`]: each added window gets its own range
/// of offsets. Offsets outside every window cannot be read or written.
#[derive(Debug)]
pub struct Volumes<D> {
    members: Vec<Member<D>>,
    pos: u64,
}

impl<D> Default for Volumes<D> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            pos: 0,
        }
    }
}

impl<D: Device> Volumes<D> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `len` bytes of `dev` from its offset `base`, and returns where
    /// they start in the joint address space.
    pub fn push(&mut self, dev: D, base: u64, len: u64) -> u64 {
        let start = self
            .members
            .last()
            .map_or(0, |m| (m.start + m.len).div_ceil(ALIGN) * ALIGN);
        self.members.push(Member {
            dev,
            base,
            start,
            len,
        });
        start
    }

    /// The end of the last window.
    pub fn len(&self) -> u64 {
        self.members.last().map_or(0, |m| m.start + m.len)
    }

    /// Whether no window was added.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Gives the devices back, in the order they were added.
    pub fn into_inner(self) -> Vec<D> {
        self.members.into_iter().map(|m| m.dev).collect()
    }

    /// The member holding `pos`, positioned there, and how many bytes of it
    /// are left from `pos`.
    fn seek_member(&mut self, pos: u64) -> io::Result<(&mut D, u64)> {
        let Some(m) = self
            .members
            .iter_mut()
            .find(|m| pos >= m.start && pos < m.start + m.len)
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("byte {pos} lies in none of the volumes"),
            ));
        };
        let within = pos - m.start;
        m.dev.seek(SeekFrom::Start(m.base + within))?;
        Ok((&mut m.dev, m.len - within))
    }
}

impl<D: Device> Read for Volumes<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.len() {
            return Ok(0);
        }
        let (dev, left) = self.seek_member(self.pos)?;
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let got = dev.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Device> Write for Volumes<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (dev, left) = self.seek_member(self.pos)?;
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let put = dev.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.members.iter_mut().try_for_each(|m| m.dev.flush())
    }
}

impl<D: Device> Seek for Volumes<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the volumes",
            ));
        };
        self.pos = target;
        Ok(target)
    }
}

impl<D: Device> Device for Volumes<D> {
    fn sync(&mut self) -> io::Result<()> {
        self.members.iter_mut().try_for_each(|m| {
            m.dev.flush()?;
            m.dev.sync()
        })
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        let mut method = ZeroMethod::WriteZeros;
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let Some(m) = self
                .members
                .iter_mut()
                .find(|m| at >= m.start && at < m.start + m.len)
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("byte {at} lies in none of the volumes"),
                ));
            };
            let n = (m.start + m.len - at).min(end - at);
            method = m.dev.zero(m.base + (at - m.start), n)?;
            at += n;
        }
        Ok(method)
    }

    fn drop_cache(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        for m in &mut self.members {
            let (from, to) = (offset.max(m.start), end.min(m.start + m.len));
            if from < to {
                m.dev.drop_cache(m.base + (from - m.start), to - from);
            }
        }
    }
}

/// The size of a device (file or block device): where its end is.
fn device_len(dev: &mut impl Seek) -> io::Result<u64> {
    let len = dev.seek(SeekFrom::End(0))?;
    dev.seek(SeekFrom::Start(0))?;
    Ok(len)
}

fn volume_part(name: &str, offset: u64, size: u64) -> Part {
    Part {
        name: name.to_owned(),
        number: 0,
        offset,
        size,
        uuid: Uuid::nil(),
    }
}

impl<D: Device> SlotDisk<Volumes<D>> {
    /// HostOS's slots: `grub` is the system disk with a GPT (its `grub`
    /// partition is used) or the grub partition itself (`grub_path` in
    /// errors); `volumes` are the six slot volumes in [`HOSTOS_VOLUMES`]
    /// order with their paths. `name` (the volume group's directory) names
    /// the set in errors and [`crate::Status::disk`]; each volume's
    /// [`Part`] has number 0 and a nil UUID.
    pub fn hostos(
        name: impl Into<PathBuf>,
        mut grub: D,
        grub_path: &Path,
        volumes: [(D, PathBuf); 6],
    ) -> Result<Self, SlotsError> {
        let name = name.into();
        let io_err = |path: &Path| {
            let disk = path.to_path_buf();
            move |cause| SlotsError::Open { disk, cause }
        };
        let (base, len) = match icos_layout::read_gpt(&mut grub) {
            Ok(table) => {
                let part = crate::disk::find_part(&table, grub_path, GRUB_PARTITION)?;
                (part.offset, part.size)
            }
            // No GPT: the device is the partition.
            Err(_) => (0, device_len(&mut grub).map_err(io_err(grub_path))?),
        };
        let mut set = Volumes::new();
        let grub_at = set.push(grub, base, len);
        let grub_part = volume_part(GRUB_PARTITION, grub_at, len);
        let mut parts = Vec::with_capacity(6);
        for ((mut dev, path), vol) in volumes.into_iter().zip(HOSTOS_VOLUMES) {
            let size = device_len(&mut dev).map_err(io_err(&path))?;
            if size == 0 {
                return Err(SlotsError::Open {
                    disk: path,
                    cause: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("slot volume {vol} is empty (0 bytes)"),
                    ),
                });
            }
            let at = set.push(dev, 0, size);
            parts.push(volume_part(vol, at, size));
        }
        let mut parts = parts.into_iter();
        let mut next = || parts.next().unwrap_or_else(|| volume_part("", 0, 0));
        let a = SlotParts {
            boot: next(),
            root: next(),
            var: next(),
        };
        let b = SlotParts {
            boot: next(),
            root: next(),
            var: next(),
        };
        let layout = DiskLayout {
            disk_size: set.len(),
            grub: grub_part,
            a,
            b,
        };
        SlotDisk::with_layout(set, name, layout)
    }
}

/// Opens HostOS's slots: the grub partition (or the system disk) at `grub`
/// and the six volumes `volume_dir/{A,B}_{boot,root,var}` (on a running
/// HostOS: [`HOSTOS_GRUB_DEVICE`] and [`HOSTOS_VOLUME_DIR`]), for reading
/// and, with `write`, writing.
///
/// A volume missing under `volume_dir` is looked for under its
/// device-mapper name, `/dev/mapper/<vg>-<lv>` with `<vg>` the folder's
/// name: the initramfs activates the running root volume with udev off,
/// so udev never makes its `/dev/<vg>/<lv>` link.
pub fn open_hostos(
    grub: &Path,
    volume_dir: &Path,
    write: bool,
) -> Result<SlotDisk<Volumes<File>>, SlotsError> {
    let open = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|cause| SlotsError::Open {
                disk: path.to_path_buf(),
                cause,
            })
    };
    let grub_dev = open(grub)?;
    let mut volumes = Vec::with_capacity(6);
    for vol in HOSTOS_VOLUMES {
        let mut path = volume_dir.join(vol);
        if !path.exists()
            && let Some(vg) = volume_dir.file_name()
        {
            let mapped = Path::new("/dev/mapper").join(format!("{}-{vol}", vg.to_string_lossy()));
            if mapped.exists() {
                path = mapped;
            }
        }
        volumes.push((open(&path)?, path));
    }
    let volumes: [(File, PathBuf); 6] = volumes.try_into().map_err(|_| SlotsError::Open {
        disk: volume_dir.to_path_buf(),
        cause: io::Error::other("six slot volumes expected"),
    })?;
    SlotDisk::hostos(volume_dir, grub_dev, grub, volumes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Cursor;

    use super::*;

    fn set() -> Volumes<Cursor<Vec<u8>>> {
        let mut v = Volumes::new();
        assert_eq!(v.push(Cursor::new(vec![1u8; 3000]), 1000, 1500), 0);
        assert_eq!(v.push(Cursor::new(vec![2u8; 10]), 0, 10), ALIGN);
        v
    }

    #[test]
    fn maps_windows_and_refuses_gaps() {
        let mut v = set();
        assert_eq!(v.len(), ALIGN + 10);
        v.seek(SeekFrom::Start(1490)).unwrap();
        v.write_all(&[9; 10]).unwrap();
        // Writing past the window's end is not possible.
        assert!(v.write_all(&[9]).is_err());
        v.seek(SeekFrom::Start(ALIGN + 2)).unwrap();
        let mut buf = [0u8; 8];
        v.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [2; 8]);
        v.seek(SeekFrom::Start(ALIGN + 8)).unwrap();
        assert!(v.read_exact(&mut buf).is_err());
        v.zero(ALIGN + 1, 3).unwrap();
        v.sync().unwrap();
        let devs = v.into_inner();
        assert_eq!(devs[0].get_ref()[2490..2500], [9; 10]);
        assert_eq!(devs[0].get_ref()[2500], 1);
        assert_eq!(devs[1].get_ref()[..], [2, 0, 0, 0, 2, 2, 2, 2, 2, 2]);
    }
}
