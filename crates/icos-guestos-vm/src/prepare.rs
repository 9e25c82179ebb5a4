//! Preparing a direct boot from the guest disk, the way GRUB would boot it:
//! read `grubenv` from the `grub` partition, apply one boot of the A/B boot
//! cycle, and take the chosen slot's `vmlinuz`, `initrd.img` and
//! `boot_args` from its `A_boot`/`B_boot` partition. Everything goes through
//! `Read`/`Seek` on the disk file or block device; nothing is mounted.
//!
//! The new `grubenv` is not written here: [`GrubenvUpdate::commit`] does
//! that, and the runner calls it only after the whole preparation (files,
//! CONFIG media, QEMU command line) succeeded. A boot refresh is not
//! idempotent (a `first_boot` becomes `failsafe_check`, a `failsafe_check`
//! rolls back), so a failed preparation must leave the disk untouched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use icos_grubenv::{BootCycle, BootKind, BootRefresh, BootState, GrubEnv, Slot};
use icos_layout::{GptTable, SECTOR_SIZE};
use serde::Serialize;

use crate::bootargs::{BootArgs, BootArgsError, boot_args_for};
use crate::disk::{FileWindow, Window};
use crate::fat::{FatError, FatFile, find_root_file, overwrite_file, read_file};

/// The GuestOS partition holding `grub.cfg` and `grubenv` (FAT).
pub const GRUB_PARTITION: &str = "grub";
/// The GRUB environment block on the grub partition.
pub const GRUBENV_FILE: &str = "grubenv";
/// The kernel on a boot partition.
pub const KERNEL_FILE: &str = "/vmlinuz";
/// The initial ramdisk on a boot partition.
pub const INITRD_FILE: &str = "/initrd.img";
/// The kernel command line file on a boot partition.
pub const BOOT_ARGS_FILE: &str = "/boot_args";
/// The version file on a boot partition (optional).
pub const VERSION_FILE: &str = "/version.txt";

/// The boot partition of a slot: `A_boot` or `B_boot`.
pub fn boot_partition(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "A_boot",
        Slot::B => "B_boot",
    }
}

/// Preparing the boot failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The disk could not be opened.
    #[error("opening guest disk {}: {source}", disk.display())]
    Open {
        /// The disk.
        disk: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The disk has no usable GPT.
    #[error("guest disk {}: {source}", disk.display())]
    Gpt {
        /// The disk.
        disk: PathBuf,
        /// The cause.
        source: icos_layout::TableError,
    },
    /// A partition the GuestOS layout needs is missing.
    #[error("guest disk {}: no partition named {name:?} in the GPT (the GuestOS layout has it)", disk.display())]
    MissingPartition {
        /// The disk.
        disk: PathBuf,
        /// The partition name.
        name: &'static str,
    },
    /// The grub partition's FAT could not be read or written.
    #[error("guest disk {}, partition {GRUB_PARTITION}, file {GRUBENV_FILE}: {source}", disk.display())]
    Fat {
        /// The disk.
        disk: PathBuf,
        /// The cause.
        source: FatError,
    },
    /// `grubenv` is not a valid GRUB environment block or holds an invalid
    /// boot state.
    #[error("guest disk {}, partition {GRUB_PARTITION}, file {GRUBENV_FILE}: {reason}", disk.display())]
    Grubenv {
        /// The disk.
        disk: PathBuf,
        /// What rule it breaks.
        reason: String,
    },
    /// A boot partition could not be read as ext4, or a file on it is
    /// missing.
    #[error("guest disk {}, partition {partition}, file {file}: {reason}", disk.display())]
    BootFile {
        /// The disk.
        disk: PathBuf,
        /// The partition.
        partition: &'static str,
        /// The file.
        file: &'static str,
        /// What went wrong.
        reason: String,
        /// Whether the disk's content is at fault (not an I/O error).
        bad_input: bool,
    },
    /// `boot_args` is unusable.
    #[error("guest disk {}, partition {partition}, file {BOOT_ARGS_FILE}: {source}", disk.display())]
    BootArgs {
        /// The disk.
        disk: PathBuf,
        /// The partition.
        partition: &'static str,
        /// The cause.
        source: BootArgsError,
    },
    /// An extracted file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: icos_fs::FsError,
    },
}

impl PrepareError {
    /// Whether the disk's content (rather than the host) is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PrepareError::Open { .. } | PrepareError::Write { .. } => false,
            PrepareError::Gpt { source, .. } => {
                !matches!(source, icos_layout::TableError::Io { .. })
            }
            PrepareError::Fat { source, .. } => !matches!(source, FatError::Io { .. }),
            PrepareError::BootFile { bad_input, .. } => *bad_input,
            PrepareError::MissingPartition { .. }
            | PrepareError::Grubenv { .. }
            | PrepareError::BootArgs { .. } => true,
        }
    }
}

/// Where a partition is, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Byte offset on the disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

fn extent(table: &GptTable, disk: &Path, name: &'static str) -> Result<Extent, PrepareError> {
    let p = table
        .partition(name)
        .ok_or_else(|| PrepareError::MissingPartition {
            disk: disk.to_owned(),
            name,
        })?;
    Ok(Extent {
        offset: p.start * SECTOR_SIZE,
        len: p.size * SECTOR_SIZE,
    })
}

/// What GRUB's script saves for a boot from `before`: it calls `save_env`
/// only when it changed the cycle (`install`, `first_boot`,
/// `failsafe_check`); a `stable` boot, defaults filled in or not, writes
/// nothing.
pub fn grub_saves(before: BootState) -> bool {
    before.cycle != BootCycle::Stable
}

/// The boot decided from `grubenv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// The refresh: state before and after, the slot, why, and the new
    /// block.
    pub refresh: BootRefresh,
    /// Whether `grubenv` exists on the grub partition (a missing one reads
    /// as `A`/`stable`, as GRUB's `-s` test does).
    pub grubenv_found: bool,
    /// Whether the new block must be written (GRUB would `save_env`).
    pub write_back: bool,
    grub: Extent,
    file: Option<FatFile>,
}

impl BootPlan {
    /// The slot to boot.
    pub fn slot(&self) -> Slot {
        self.refresh.slot
    }
}

/// An opened guest disk and its GPT.
#[derive(Debug)]
pub struct GuestDisk {
    path: PathBuf,
    file: File,
    table: GptTable,
}

impl GuestDisk {
    /// Opens a guest disk (image file or block device) read-only and reads
    /// its GPT.
    pub fn open(path: &Path) -> Result<GuestDisk, PrepareError> {
        let mut file = File::open(path).map_err(|source| PrepareError::Open {
            disk: path.to_owned(),
            source,
        })?;
        let table = icos_layout::read_gpt(&mut file).map_err(|source| PrepareError::Gpt {
            disk: path.to_owned(),
            source,
        })?;
        Ok(GuestDisk {
            path: path.to_owned(),
            file,
            table,
        })
    }

    /// The disk's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `grubenv` and applies one boot (pure: nothing is written).
    pub fn plan_boot(&mut self) -> Result<BootPlan, PrepareError> {
        let grub = extent(&self.table, &self.path, GRUB_PARTITION)?;
        plan_boot_on(&mut self.file, grub, &self.path)
    }

    /// Extracts the slot's kernel and initrd into `out_dir` (as `vmlinuz`
    /// and `initrd.img`) and reads its `boot_args`.
    pub fn extract(&self, slot: Slot, out_dir: &Path) -> Result<BootFiles, PrepareError> {
        let partition = boot_partition(slot);
        let part = extent(&self.table, &self.path, partition)?;
        let file = self.file.try_clone().map_err(|source| PrepareError::Open {
            disk: self.path.clone(),
            source,
        })?;
        extract_from(
            FileWindow {
                file,
                offset: part.offset,
                len: part.len,
            },
            &self.path,
            slot,
            out_dir,
        )
    }
}

fn plan_boot_on<D: Read + Seek>(
    disk: &mut D,
    grub: Extent,
    path: &Path,
) -> Result<BootPlan, PrepareError> {
    let fat_err = |source| PrepareError::Fat {
        disk: path.to_owned(),
        source,
    };
    let mut part = Window::new(&mut *disk, grub.offset, grub.len);
    let (env, file) = match find_root_file(&mut part, GRUBENV_FILE) {
        Ok(file) => {
            let bytes = read_file(&mut part, &file).map_err(fat_err)?;
            let env = GrubEnv::parse(&bytes).map_err(|e| PrepareError::Grubenv {
                disk: path.to_owned(),
                reason: e.to_string(),
            })?;
            (env, Some(file))
        }
        Err(FatError::NotFound(_)) => (GrubEnv::empty(), None),
        Err(e) => return Err(fat_err(e)),
    };
    let refresh = icos_grubenv::refresh_for_boot(&env).map_err(|e| PrepareError::Grubenv {
        disk: path.to_owned(),
        reason: e.to_string(),
    })?;
    let write_back = file.is_some() && grub_saves(refresh.before);
    Ok(BootPlan {
        refresh,
        grubenv_found: file.is_some(),
        write_back,
        grub,
        file,
    })
}

/// The direct-boot files of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootFiles {
    /// The slot.
    #[serde(serialize_with = "slot_str")]
    pub slot: Slot,
    /// The extracted kernel.
    pub kernel: PathBuf,
    /// The extracted initrd.
    pub initrd: PathBuf,
    /// The command line and where it came from.
    pub boot_args: BootArgs,
    /// The slot's `version.txt`, trimmed, if it has one.
    pub version: Option<String>,
}

fn extract_from(
    window: FileWindow,
    disk: &Path,
    slot: Slot,
    out_dir: &Path,
) -> Result<BootFiles, PrepareError> {
    let partition = boot_partition(slot);
    let boot_err = |file: &'static str, e: ext4_view::Ext4Error| {
        let bad_input = !matches!(e, ext4_view::Ext4Error::Io(_));
        PrepareError::BootFile {
            disk: disk.to_owned(),
            partition,
            file,
            reason: e.to_string(),
            bad_input,
        }
    };
    let fs = ext4_view::Ext4::load(Box::new(window)).map_err(|e| boot_err("(superblock)", e))?;
    let read = |file: &'static str| fs.read(file).map_err(|e| boot_err(file, e));
    let args = read(BOOT_ARGS_FILE)?;
    let boot_args = boot_args_for(&args, slot).map_err(|source| PrepareError::BootArgs {
        disk: disk.to_owned(),
        partition,
        source,
    })?;
    let version = match fs.read(VERSION_FILE) {
        Ok(v) => Some(String::from_utf8_lossy(&v).trim().to_owned()),
        Err(ext4_view::Ext4Error::NotFound) => None,
        Err(e) => return Err(boot_err(VERSION_FILE, e)),
    };
    // Streamed through a small buffer into a temporary file that is then
    // renamed into place: the kernel and initrd never sit in memory whole.
    let store = |file: &'static str, name: &str| {
        let path = out_dir.join(name);
        let write_err = |source: std::io::Error| PrepareError::Write {
            path: path.clone(),
            source: icos_fs::FsError::Io {
                step: "writing",
                path: path.clone(),
                source,
            },
        };
        let mut src = fs.open(file).map_err(|e| boot_err(file, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(out_dir).map_err(write_err)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut copied = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(PrepareError::BootFile {
                        disk: disk.to_owned(),
                        partition,
                        file,
                        reason: e.to_string(),
                        bad_input: false,
                    });
                }
            };
            tmp.write_all(&buf[..n]).map_err(write_err)?;
            copied += n as u64;
        }
        if copied == 0 {
            return Err(PrepareError::BootFile {
                disk: disk.to_owned(),
                partition,
                file,
                reason: "the file is empty".into(),
                bad_input: true,
            });
        }
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(path)
    };
    let kernel = store(KERNEL_FILE, "vmlinuz")?;
    let initrd = store(INITRD_FILE, "initrd.img")?;
    Ok(BootFiles {
        slot,
        kernel,
        initrd,
        boot_args,
        version,
    })
}

/// The pending `grubenv` write of a prepared boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubenvUpdate {
    disk: PathBuf,
    plan: BootPlan,
}

impl GrubenvUpdate {
    /// The write a plan needs.
    pub fn new(disk: &Path, plan: BootPlan) -> GrubenvUpdate {
        GrubenvUpdate {
            disk: disk.to_owned(),
            plan,
        }
    }

    /// Whether committing writes anything.
    pub fn writes(&self) -> bool {
        self.plan.write_back
    }

    /// Writes the new block over the old one in place (the same clusters,
    /// as GRUB's `save_env` does) and syncs the disk, if GRUB would have
    /// saved it. Returns whether it wrote.
    pub fn commit(&self) -> Result<bool, PrepareError> {
        if !self.plan.write_back {
            return Ok(false);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(|source| PrepareError::Open {
                disk: self.disk.clone(),
                source,
            })?;
        commit_on(&mut file, &self.plan, &self.disk)?;
        file.sync_all().map_err(|source| PrepareError::Fat {
            disk: self.disk.clone(),
            source: FatError::Io {
                action: "syncing the disk",
                source,
            },
        })?;
        Ok(true)
    }
}

fn commit_on<D: Read + Write + Seek>(
    disk: &mut D,
    plan: &BootPlan,
    path: &Path,
) -> Result<(), PrepareError> {
    let Some(file) = &plan.file else {
        return Ok(());
    };
    let bytes = plan
        .refresh
        .env
        .to_bytes()
        .map_err(|e| PrepareError::Grubenv {
            disk: path.to_owned(),
            reason: e.to_string(),
        })?;
    let mut part = Window::new(disk, plan.grub.offset, plan.grub.len);
    overwrite_file(&mut part, file, &bytes).map_err(|source| PrepareError::Fat {
        disk: path.to_owned(),
        source,
    })
}

/// A one-line account of a boot decision, for logs and `show`.
pub fn describe(plan: &BootPlan) -> String {
    let r = &plan.refresh;
    let why = match r.kind {
        BootKind::Stable => "stable boot",
        BootKind::AfterInstall => "first boot after install",
        BootKind::Trial => "trial boot of a new slot",
        BootKind::Rollback => "rollback: the trial slot never confirmed",
    };
    format!(
        "slot {} ({why}); grubenv {}/{} -> {}/{}{}",
        r.slot,
        r.before.alternative,
        r.before.cycle,
        r.after.alternative,
        r.after.cycle,
        if plan.write_back {
            ""
        } else {
            " (nothing to write)"
        }
    )
}

fn slot_str<S: serde::Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(slot.as_str())
}
