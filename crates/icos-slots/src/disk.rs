//! A GuestOS disk seen through its GPT: the grub partition with grubenv and
//! the partitions of the two slots; reading and committing the boot state.

use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use icos_diskwrite::{ZeroMethod, Zeroer};
use icos_grubenv::{BLOCK_SIZE, BootState, Event, GrubEnv, Slot, transition};
use serde::Serialize;
use uuid::Uuid;

use crate::error::SlotsError;

/// The file name of the environment block on the grub partition.
pub const GRUBENV_FILE: &str = "grubenv";
/// The name of the partition holding `grub.cfg` and `grubenv`.
pub const GRUB_PARTITION: &str = "grub";
/// Bytes of a partition that count as its header: zeroed to invalidate a
/// slot, and what [`Content`] looks at.
pub const HEADER_BYTES: u64 = 1 << 20;

/// A disk (or disk image) that can be made durable: what the installer
/// writes through. Reads and writes go through `Read`, `Write` and `Seek`;
/// [`Device::sync`] must not return before every write is on stable storage.
pub trait Device: Read + Write + Seek {
    /// Flushes every write to stable storage (`fsync`).
    fn sync(&mut self) -> io::Result<()>;

    /// Makes `len` bytes at disk offset `offset` zero and says how. The
    /// default writes zeros; a file or block device asks the kernel first
    /// (see [`icos_diskwrite::Zeroer`]).
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        let zeros = vec![0u8; usize::try_from(len.min(ZERO_CHUNK)).unwrap_or(0)];
        self.seek(SeekFrom::Start(offset))?;
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(ZERO_CHUNK)).unwrap_or(zeros.len());
            self.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        Ok(ZeroMethod::WriteZeros)
    }

    /// Drops cached copies of `len` bytes at `offset`, so the next reads
    /// come from stable storage. Best effort; the default does nothing.
    fn drop_cache(&mut self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// The largest zero buffer [`Device::zero`] writes at once.
const ZERO_CHUNK: u64 = 1 << 20;

impl Device for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        Zeroer::default().zero(self, offset, len)
    }

    fn drop_cache(&mut self, offset: u64, len: u64) {
        icos_diskwrite::drop_cached(self, offset, len);
    }
}

impl Device for Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: Device + ?Sized> Device for &mut D {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        (**self).zero(offset, len)
    }

    fn drop_cache(&mut self, offset: u64, len: u64) {
        (**self).drop_cache(offset, len);
    }
}

/// One partition as found in the GPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// The GPT partition name, e.g. `B_root`.
    pub name: String,
    /// The 1-based partition number (0 for a HostOS volume).
    pub number: u32,
    /// Byte offset on the disk (for HostOS volumes: in the joint address
    /// space of [`crate::Volumes`]).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// The partition UUID (PARTUUID).
    pub uuid: Uuid,
}

/// The three partitions of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotParts {
    /// `X_boot`: kernel, initrd, `boot_args`.
    pub boot: Part,
    /// `X_root`: the verity-protected root.
    pub root: Part,
    /// `X_var`: the slot's `/var`, re-created when wiped.
    pub var: Part,
}

/// The partitions the A/B scheme uses, found by name in the GPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    /// The disk size in bytes.
    pub disk_size: u64,
    /// The FAT partition with `grubenv`.
    pub grub: Part,
    /// Slot A.
    pub a: SlotParts,
    /// Slot B.
    pub b: SlotParts,
}

impl DiskLayout {
    /// The partitions of `slot`.
    pub fn slot(&self, slot: Slot) -> &SlotParts {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// What the start of a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// An ext2/3/4 superblock.
    Ext4,
    /// A LUKS header.
    Luks,
    /// Only zeros in the first [`HEADER_BYTES`]: never written, or wiped.
    Empty,
    /// Something else.
    Other,
}

impl Content {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Ext4 => "ext4",
            Content::Luks => "luks",
            Content::Empty => "empty",
            Content::Other => "other",
        }
    }
}

/// One partition of a slot and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartStatus {
    /// The partition.
    #[serde(flatten)]
    pub part: Part,
    /// What its header holds.
    pub content: Content,
}

/// One slot as found on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// `A` or `B`.
    pub slot: String,
    /// Whether boot and root both hold a file system: a slot that was
    /// invalidated (or never written) does not.
    pub bootable: bool,
    /// The boot partition.
    pub boot: PartStatus,
    /// The root partition.
    pub root: PartStatus,
    /// The var partition.
    pub var: PartStatus,
}

/// The boot state and slots of a disk, as `icos slots show` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The disk (HostOS: the volume group's directory).
    pub disk: PathBuf,
    /// Its size in bytes (HostOS: the end of the volumes' joint address
    /// space, see [`crate::Volumes`]).
    pub disk_size: u64,
    /// The grub partition holding grubenv.
    pub grub_partition: String,
    /// `boot_alternative` (a missing value reads as `A`).
    pub boot_alternative: String,
    /// `boot_cycle` (a missing value reads as `stable`).
    pub boot_cycle: String,
    /// The slot a system running now was booted from.
    pub running_slot: String,
    /// The slot the next boot starts.
    pub next_boot_slot: String,
    /// The slot an upgrade would be written to; `None` when the state does
    /// not allow an install (it is not `stable`).
    pub upgrade_target: Option<String>,
    /// Every variable of the block, in order.
    pub grubenv: Vec<(String, String)>,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
}

/// The result of [`SlotDisk::confirm`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfirmReport {
    /// The state before.
    pub before: String,
    /// The state after.
    pub after: String,
    /// The confirmed slot.
    pub slot: String,
    /// Whether grubenv was rewritten (false when it was stable already).
    pub changed: bool,
}

/// A GuestOS disk opened for the A/B operations.
#[derive(Debug)]
pub struct SlotDisk<D> {
    pub(crate) dev: D,
    pub(crate) path: PathBuf,
    pub(crate) layout: DiskLayout,
    /// Where grubenv's 1024 bytes are, as (disk offset, length) ranges.
    pub(crate) grubenv: Vec<(u64, u64)>,
}

/// Opens the disk (or image) at `path` for reading and, with `write`, for
/// writing, and finds its layout.
pub fn open(path: &Path, write: bool) -> Result<SlotDisk<File>, SlotsError> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| SlotsError::Open {
            disk: path.to_path_buf(),
            cause: source,
        })?;
    SlotDisk::new(file, path)
}

pub(crate) fn find_part(
    table: &icos_layout::GptTable,
    disk: &Path,
    name: &'static str,
) -> Result<Part, SlotsError> {
    let entry = table
        .partition(name)
        .ok_or_else(|| SlotsError::MissingPartition {
            disk: disk.to_path_buf(),
            name,
            found: table
                .partitions
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let offset = entry.start * icos_layout::SECTOR_SIZE;
    let size = entry.size * icos_layout::SECTOR_SIZE;
    if offset + size > table.disk_size {
        return Err(SlotsError::PartitionOutside {
            disk: disk.to_path_buf(),
            name: name.to_owned(),
            end: offset + size,
            disk_size: table.disk_size,
        });
    }
    Ok(Part {
        name: name.to_owned(),
        number: entry.number,
        offset,
        size,
        uuid: entry.uuid,
    })
}

impl<D: Read + Seek> SlotDisk<D> {
    /// Reads the GPT of `dev` (named `path` in errors), finds the grub
    /// partition and the six slot partitions by name, and locates grubenv.
    pub fn new(mut dev: D, path: impl Into<PathBuf>) -> Result<Self, SlotsError> {
        let path = path.into();
        let table = icos_layout::read_gpt(&mut dev).map_err(|source| SlotsError::Gpt {
            disk: path.clone(),
            cause: source,
        })?;
        let slot = |[boot, root, var]: [&'static str; 3]| -> Result<SlotParts, SlotsError> {
            Ok(SlotParts {
                boot: find_part(&table, &path, boot)?,
                root: find_part(&table, &path, root)?,
                var: find_part(&table, &path, var)?,
            })
        };
        let layout = DiskLayout {
            disk_size: table.disk_size,
            grub: find_part(&table, &path, GRUB_PARTITION)?,
            a: slot(["A_boot", "A_root", "A_var"])?,
            b: slot(["B_boot", "B_root", "B_var"])?,
        };
        Self::with_layout(dev, path, layout)
    }

    /// A device whose grub partition and slot partitions are already known
    /// (`layout`, offsets on `dev`): locates grubenv in the grub partition.
    /// [`SlotDisk::new`] finds the layout in a GPT; HostOS's volumes are
    /// laid out by [`crate::Volumes`].
    pub fn with_layout(
        mut dev: D,
        path: impl Into<PathBuf>,
        layout: DiskLayout,
    ) -> Result<Self, SlotsError> {
        let path = path.into();
        let grub = layout.grub.clone();
        let located = {
            let mut part = icos_fat::Window::new(&mut dev, grub.offset, grub.size);
            icos_fat::find_root_file(&mut part, GRUBENV_FILE).map_err(|e| match e {
                icos_fat::FatError::Io { source, .. } => SlotsError::Io {
                    disk: path.clone(),
                    partition: grub.name.clone(),
                    action: "reading the FAT file system of",
                    offset: 0,
                    cause: source,
                },
                other => SlotsError::GrubenvFile {
                    disk: path.clone(),
                    partition: grub.name.clone(),
                    reason: other.to_string(),
                },
            })?
        };
        if located.len != BLOCK_SIZE as u64 {
            return Err(SlotsError::GrubenvFile {
                disk: path,
                partition: grub.name,
                reason: format!(
                    "the file is {} bytes; a GRUB environment block is exactly {BLOCK_SIZE}",
                    located.len
                ),
            });
        }
        let grubenv = located
            .extents
            .iter()
            .map(|&(at, len)| (grub.offset + at, len))
            .collect();
        Ok(SlotDisk {
            dev,
            path,
            layout,
            grubenv,
        })
    }

    /// The partitions found.
    pub fn layout(&self) -> &DiskLayout {
        &self.layout
    }

    /// The disk's name in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.dev
    }

    pub(crate) fn io_err(
        &self,
        part: &Part,
        action: &'static str,
        offset: u64,
    ) -> impl FnOnce(io::Error) -> SlotsError + use<D> {
        let disk = self.path.clone();
        let partition = part.name.clone();
        move |source| SlotsError::Io {
            disk,
            partition,
            action,
            offset,
            cause: source,
        }
    }

    /// Reads `buf.len()` bytes at `offset` inside `part`.
    pub(crate) fn read_part(
        &mut self,
        part: &Part,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), SlotsError> {
        let err = self.io_err(part, "reading", offset);
        self.dev
            .seek(SeekFrom::Start(part.offset + offset))
            .and_then(|_| self.dev.read_exact(buf))
            .map_err(err)
    }

    /// The raw 1024 bytes of grubenv.
    pub fn read_grubenv_bytes(&mut self) -> Result<[u8; BLOCK_SIZE], SlotsError> {
        let grub = self.layout.grub.clone();
        let mut out = [0u8; BLOCK_SIZE];
        let mut filled = 0usize;
        for (at, len) in self.grubenv.clone() {
            let n = usize::try_from(len).unwrap_or(0);
            self.read_part(&grub, at - grub.offset, &mut out[filled..filled + n])?;
            filled += n;
        }
        Ok(out)
    }

    /// The parsed grubenv block.
    pub fn read_grubenv(&mut self) -> Result<GrubEnv, SlotsError> {
        let bytes = self.read_grubenv_bytes()?;
        icos_grubenv::parse(&bytes).map_err(|source| SlotsError::GrubenvBlock {
            disk: self.path.clone(),
            partition: self.layout.grub.name.clone(),
            cause: source,
        })
    }

    /// The boot state in grubenv.
    pub fn read_state(&mut self) -> Result<(GrubEnv, BootState), SlotsError> {
        let env = self.read_grubenv()?;
        let state = BootState::from_env(&env).map_err(|source| SlotsError::GrubenvState {
            disk: self.path.clone(),
            partition: self.layout.grub.name.clone(),
            cause: source,
        })?;
        Ok((env, state))
    }

    /// What the header of `part` holds.
    pub fn content(&mut self, part: &Part) -> Result<Content, SlotsError> {
        let len = HEADER_BYTES.min(part.size);
        let mut head = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.read_part(part, 0, &mut head)?;
        Ok(classify(&head))
    }

    /// The boot state, the slots and what they hold.
    pub fn status(&mut self) -> Result<Status, SlotsError> {
        let (env, state) = self.read_state()?;
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            let parts = self.layout.slot(slot).clone();
            let mut st = |p: Part| -> Result<PartStatus, SlotsError> {
                let content = self.content(&p)?;
                Ok(PartStatus { part: p, content })
            };
            let boot = st(parts.boot)?;
            let root = st(parts.root)?;
            let var = st(parts.var)?;
            slots.push(SlotStatus {
                slot: slot.to_string(),
                bootable: boot.content == Content::Ext4 && root.content == Content::Ext4,
                boot,
                root,
                var,
            });
        }
        let upgrade_target = transition(state, Event::UpgradeInstall)
            .ok()
            .map(|_| state.upgrade_target().to_string());
        Ok(Status {
            disk: self.path.clone(),
            disk_size: self.layout.disk_size,
            grub_partition: self.layout.grub.name.clone(),
            boot_alternative: state.alternative.to_string(),
            boot_cycle: state.cycle.to_string(),
            running_slot: state.running_slot().to_string(),
            next_boot_slot: state.next_boot_slot().to_string(),
            upgrade_target,
            grubenv: env
                .vars()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            slots,
        })
    }
}

/// Classifies a partition header.
pub(crate) fn classify(head: &[u8]) -> Content {
    const EXT_MAGIC_AT: usize = 1024 + 56;
    if head.len() >= 6 && head[..6] == *b"LUKS\xba\xbe" {
        Content::Luks
    } else if head.len() > EXT_MAGIC_AT + 1 && head[EXT_MAGIC_AT..EXT_MAGIC_AT + 2] == [0x53, 0xEF]
    {
        Content::Ext4
    } else if head.iter().all(|&b| b == 0) {
        Content::Empty
    } else {
        Content::Other
    }
}

impl<D: Device> SlotDisk<D> {
    /// Writes `bytes` at `offset` inside `part`.
    pub(crate) fn write_part(
        &mut self,
        part: &Part,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), SlotsError> {
        let err = self.io_err(part, "writing", offset);
        self.dev
            .seek(SeekFrom::Start(part.offset + offset))
            .and_then(|_| self.dev.write_all(bytes))
            .map_err(err)
    }

    /// Syncs the device; `after` names the step in errors.
    pub(crate) fn sync(&mut self, after: &'static str) -> Result<(), SlotsError> {
        self.dev
            .flush()
            .and_then(|()| self.dev.sync())
            .map_err(|source| SlotsError::Sync {
                disk: self.path.clone(),
                after,
                cause: source,
            })
    }

    /// The block for `state`, keeping every other variable of `env`; fails
    /// before anything is written if it does not fit.
    pub(crate) fn block_for(
        &self,
        env: &GrubEnv,
        state: BootState,
    ) -> Result<[u8; BLOCK_SIZE], SlotsError> {
        let full = |reason: String| SlotsError::GrubenvFull {
            disk: self.path.clone(),
            partition: self.layout.grub.name.clone(),
            reason,
        };
        let mut env = env.clone();
        state
            .write_to_env(&mut env)
            .map_err(|e| full(e.to_string()))?;
        env.to_bytes().map_err(|e| full(e.to_string()))
    }

    /// Overwrites grubenv in place with `new` (as GRUB's `save_env` does),
    /// syncs, and reads it back. Only the 512-byte sectors that differ from
    /// `old` are written: a boot-state change touches only the first sector
    /// of the block, and a one-sector write is not torn.
    pub(crate) fn write_grubenv(
        &mut self,
        old: &[u8; BLOCK_SIZE],
        new: &[u8; BLOCK_SIZE],
    ) -> Result<(), SlotsError> {
        let grub = self.layout.grub.clone();
        let mut pos = 0usize;
        for (at, len) in self.grubenv.clone() {
            let len = usize::try_from(len).unwrap_or(0);
            for start in (pos..pos + len).step_by(512) {
                let end = (start + 512).min(pos + len);
                if old[start..end] != new[start..end] {
                    let within = at - grub.offset + (start - pos) as u64;
                    self.write_part(&grub, within, &new[start..end])?;
                }
            }
            pos += len;
        }
        self.sync("writing grubenv")?;
        let back = self.read_grubenv_bytes()?;
        if back != *new {
            return Err(SlotsError::Io {
                disk: self.path.clone(),
                partition: grub.name,
                action: "verifying grubenv in",
                offset: 0,
                cause: io::Error::other("the block read back differs from the block written"),
            });
        }
        Ok(())
    }

    /// Confirms the running slot, as the booted system does once it is
    /// healthy: `failsafe_check` (and `install`) become `stable` on the same
    /// slot; `stable` is left alone. `first_boot` is refused: the committed
    /// slot has not booted yet, and marking it stable would drop the
    /// rollback (see `icos_grubenv::cycle`).
    pub fn confirm(&mut self) -> Result<ConfirmReport, SlotsError> {
        let old = self.read_grubenv_bytes()?;
        let (env, before) = self.read_state()?;
        let (after, action) =
            transition(before, Event::Confirm).map_err(|source| SlotsError::Refused {
                disk: self.path.clone(),
                cause: source,
            })?;
        let new = self.block_for(&env, after)?;
        let changed = new != old;
        if changed {
            self.write_grubenv(&old, &new)?;
        }
        let slot = match action {
            icos_grubenv::Action::Confirmed(s) | icos_grubenv::Action::AlreadyStable(s) => s,
            _ => after.alternative,
        };
        Ok(ConfirmReport {
            before: before.to_string(),
            after: after.to_string(),
            slot: slot.to_string(),
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_headers() {
        let mut h = vec![0u8; 4096];
        assert_eq!(classify(&h), Content::Empty);
        h[1080] = 0x53;
        h[1081] = 0xEF;
        assert_eq!(classify(&h), Content::Ext4);
        h[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert_eq!(classify(&h), Content::Luks);
        let mut h = vec![0u8; 4096];
        h[7] = 1;
        assert_eq!(classify(&h), Content::Other);
    }
}
