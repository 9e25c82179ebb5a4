//! Installing an upgrade image into the spare slot and committing it.

use std::fmt;
use std::io::{self, Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use icos_diskwrite::{DiskWriteError, HoleCheck, Medium, Record, Writer, ZeroMethod};
use icos_grubenv::{Event, Slot, transition};
use icos_sparse_tar::{EntryInfo, EntryKind};
use serde::Serialize;

use crate::disk::{Device, HEADER_BYTES, Part, SlotDisk};
use crate::error::SlotsError;

/// The member written into the spare slot's boot partition.
pub const BOOT_MEMBER: &str = "boot.img";
/// The member written into the spare slot's root partition.
pub const ROOT_MEMBER: &str = "root.img";
/// The version file of the upgrade image.
pub const VERSION_MEMBER: &str = "VERSION.TXT";
/// Bytes of the spare `var` partition that are zeroed, so the new system
/// formats it afresh (IC's `manageboot.sh` wipes the same 16 MiB).
pub const VAR_WIPE_BYTES: u64 = 16 << 20;
/// Longest VERSION.TXT accepted.
const MAX_VERSION_LEN: u64 = 4096;
/// How much of the zeroed ranges is read back: both ends of every range
/// and 4 KiB per GiB (a root.img is 10 GiB of mostly holes).
const HOLE_CHECK: HoleCheck = HoleCheck::Sample;

/// A step of [`SlotDisk::install`], reported as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The spare slot's boot and root headers were zeroed and its var
    /// header wiped: it cannot boot until the install completes.
    Invalidated {
        /// The spare slot.
        slot: Slot,
    },
    /// A member is being written.
    Writing {
        /// The member.
        member: &'static str,
        /// The partition.
        partition: String,
        /// Its size in bytes.
        size: u64,
    },
    /// Everything was written and synced; reading back.
    Verifying,
    /// The new state is in grubenv.
    Committed {
        /// The state written.
        state: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Invalidated { slot } => write!(
                f,
                "slot {slot} invalidated (boot and root headers zeroed, var header wiped)"
            ),
            Step::Writing {
                member,
                partition,
                size,
            } => write!(f, "writing {member} ({size} bytes) into {partition}"),
            Step::Verifying => write!(f, "synced; reading back and verifying"),
            Step::Committed { state } => write!(f, "committed: {state}"),
        }
    }
}

/// One member as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Installed {
    /// The member name.
    pub member: &'static str,
    /// The partition it went into.
    pub partition: String,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes written as data: the held-back header ([`HEADER_BYTES`], or
    /// the whole member when smaller) and the data extents after it.
    pub data_bytes: u64,
    /// Bytes made zero: the member's holes and all-zero 1 MiB chunks.
    pub zeroed_bytes: u64,
    /// SHA-256 of the data bytes in offset order, equal to that of the
    /// same ranges read back.
    pub data_sha256: String,
    /// How the holes were made zero (`punch-hole`, `zero-range`,
    /// `write-zeros`); `None` when the member has none.
    pub zero_method: Option<&'static str>,
    /// Bytes of the zeroed ranges read back and found zero (sampled).
    pub zero_checked: u64,
}

/// The result of [`SlotDisk::install`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallReport {
    /// The disk.
    pub disk: PathBuf,
    /// The upgrade image.
    pub update: PathBuf,
    /// The slot written.
    pub slot: String,
    /// VERSION.TXT of the upgrade image, trimmed.
    pub version: String,
    /// boot.img and root.img.
    pub members: Vec<Installed>,
    /// Bytes zeroed at the start of the spare var partition.
    pub var_wiped: u64,
    /// The state before.
    pub before: String,
    /// The state committed.
    pub after: String,
    /// Seconds spent writing (after the invalidation, up to the sync).
    pub write_s: f64,
    /// Seconds spent reading back and verifying.
    pub verify_s: f64,
}

/// A member written but for its held-back header.
struct Pending {
    member: &'static str,
    part: Part,
    record: Record,
    head: Vec<u8>,
    zero_checked: u64,
}

/// One partition of the device, as the shared writer sees it: offsets are
/// relative to the partition.
struct PartIo<'a, D> {
    dev: &'a mut D,
    disk: PathBuf,
    part: Part,
}

impl<D: Device> PartIo<'_, D> {
    fn at(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.part.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at byte {offset} do not fit partition {} ({} bytes)",
                    self.part.name, self.part.size
                ),
            ));
        }
        self.dev.seek(SeekFrom::Start(self.part.offset + offset))?;
        Ok(())
    }
}

impl<D: Device> Medium for PartIo<'_, D> {
    fn path(&self) -> &Path {
        &self.disk
    }

    fn size(&self) -> u64 {
        self.part.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.at(offset, buf.len() as u64)?;
        self.dev.read_exact(buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.at(offset, buf.len() as u64)?;
        self.dev.write_all(buf)
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<ZeroMethod> {
        self.at(offset, len)?;
        self.dev.zero(self.part.offset + offset, len)
    }

    fn drop_cache(&mut self) {
        self.dev.drop_cache(self.part.offset, self.part.size);
    }
}

/// An error of the shared writer, for `partition` of `disk`.
fn write_err(disk: &Path, partition: &str, member: &'static str, e: DiskWriteError) -> SlotsError {
    match e {
        DiskWriteError::Io {
            action,
            offset,
            cause,
            ..
        } => SlotsError::Io {
            disk: disk.to_path_buf(),
            partition: partition.to_owned(),
            action,
            offset,
            cause,
        },
        DiskWriteError::Order { offset, .. } => SlotsError::Io {
            disk: disk.to_path_buf(),
            partition: partition.to_owned(),
            action: "writing",
            offset,
            cause: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        },
        DiskWriteError::Verify {
            expected, actual, ..
        } => SlotsError::Verify {
            disk: disk.to_path_buf(),
            partition: partition.to_owned(),
            member,
            expected,
            actual,
        },
        DiskWriteError::NotZero { offset, .. } => SlotsError::NotZero {
            disk: disk.to_path_buf(),
            partition: partition.to_owned(),
            member,
            offset,
        },
    }
}

/// The member being streamed.
enum Current<'a, D> {
    None,
    Version(Vec<u8>),
    Image(&'static str, Box<Writer<'static, PartIo<'a, D>>>),
}

/// The visitor that streams the members into the spare slot.
struct SlotWriter<'a, 'p, D> {
    dev: Option<&'a mut D>,
    disk: PathBuf,
    update: PathBuf,
    boot: Part,
    root: Part,
    progress: &'p mut dyn FnMut(&Step),
    current: Current<'a, D>,
    version: Option<String>,
    done: Vec<Pending>,
    failed: Option<SlotsError>,
}

impl<D: Device> SlotWriter<'_, '_, D> {
    fn stop(&mut self, error: SlotsError) -> icos_sparse_tar::Error {
        self.failed = Some(error);
        icos_sparse_tar::Error::Io {
            action: "writing",
            path: self.disk.clone(),
            source: io::Error::other("stopped"),
        }
    }

    /// The partition `member` goes into.
    fn part_name(&self, member: &'static str) -> String {
        if member == BOOT_MEMBER {
            self.boot.name.clone()
        } else {
            self.root.name.clone()
        }
    }

    fn bad_member(&self, name: &str, reason: &'static str) -> SlotsError {
        SlotsError::BadMember {
            update: self.update.clone(),
            member: name.to_owned(),
            reason,
        }
    }

    fn begin_member(&mut self, info: &EntryInfo) -> Result<bool, SlotsError> {
        let name = info.name.trim_start_matches("./");
        if info.kind == EntryKind::Directory {
            if name.trim_end_matches('/').is_empty() {
                return Ok(false);
            }
            return Err(self.bad_member(name, "not a regular file"));
        }
        let (member, part) = match name {
            VERSION_MEMBER => {
                if self.version.is_some() {
                    return Err(self.bad_member(name, "appears twice"));
                }
                if info.size > MAX_VERSION_LEN {
                    return Err(self.bad_member(name, "longer than 4096 bytes"));
                }
                self.current = Current::Version(Vec::new());
                return Ok(true);
            }
            BOOT_MEMBER => (BOOT_MEMBER, self.boot.clone()),
            ROOT_MEMBER => (ROOT_MEMBER, self.root.clone()),
            _ => {
                return Err(self.bad_member(
                    name,
                    "unexpected (an upgrade image holds boot.img, root.img and VERSION.TXT)",
                ));
            }
        };
        if self.done.iter().any(|p| p.member == member) {
            return Err(self.bad_member(name, "appears twice"));
        }
        if info.size > part.size {
            return Err(SlotsError::TooLarge {
                update: self.update.clone(),
                member,
                size: info.size,
                disk: self.disk.clone(),
                partition: part.name,
                partition_size: part.size,
            });
        }
        (self.progress)(&Step::Writing {
            member,
            partition: part.name.clone(),
            size: info.size,
        });
        let Some(dev) = self.dev.take() else {
            return Err(self.bad_member(name, "starts inside another member"));
        };
        let io = PartIo {
            dev,
            disk: self.disk.clone(),
            part,
        };
        let writer = Writer::new(io, info.size)
            .map_err(|e| write_err(&self.disk, &self.part_name(member), member, e))?
            .hold_back(HEADER_BYTES);
        self.current = Current::Image(member, Box::new(writer));
        Ok(true)
    }

    fn end_member(&mut self) -> Result<(), SlotsError> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::None => Ok(()),
            Current::Version(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| self.bad_member(VERSION_MEMBER, "not UTF-8 text"))?;
                self.version = Some(text.trim().to_owned());
                Ok(())
            }
            Current::Image(member, writer) => {
                let (io, record, head) = writer
                    .finish()
                    .map_err(|e| write_err(&self.disk, &self.part_name(member), member, e))?;
                let part = io.part;
                self.dev = Some(io.dev);
                self.done.push(Pending {
                    member,
                    part,
                    record,
                    head,
                    zero_checked: 0,
                });
                Ok(())
            }
        }
    }
}

impl<D: Device> icos_sparse_tar::Visitor for SlotWriter<'_, '_, D> {
    fn begin(&mut self, info: &EntryInfo) -> Result<bool, icos_sparse_tar::Error> {
        self.begin_member(info).map_err(|e| self.stop(e))
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), icos_sparse_tar::Error> {
        let result = match &mut self.current {
            Current::None => Ok(()),
            Current::Version(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Current::Image(member, writer) => {
                let member = *member;
                writer
                    .data(offset, bytes)
                    .map_err(|e| write_err(&self.disk, &self.part_name(member), member, e))
            }
        };
        result.map_err(|e| self.stop(e))
    }

    fn end(&mut self, _: &EntryInfo) -> Result<(), icos_sparse_tar::Error> {
        self.end_member().map_err(|e| self.stop(e))
    }
}

/// Reads only `VERSION.TXT` of an upgrade image.
struct VersionReader {
    update: PathBuf,
    in_version: bool,
    bytes: Vec<u8>,
    found: bool,
}

impl icos_sparse_tar::Visitor for VersionReader {
    fn begin(&mut self, info: &EntryInfo) -> Result<bool, icos_sparse_tar::Error> {
        self.in_version = info.name.trim_start_matches("./") == VERSION_MEMBER
            && info.kind != EntryKind::Directory
            && info.size <= MAX_VERSION_LEN;
        Ok(self.in_version)
    }

    fn data(&mut self, _: u64, bytes: &[u8]) -> Result<(), icos_sparse_tar::Error> {
        if self.in_version {
            self.bytes.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn end(&mut self, _: &EntryInfo) -> Result<(), icos_sparse_tar::Error> {
        if self.in_version {
            self.found = true;
            // Stop here: the rest of the archive is not needed.
            return Err(icos_sparse_tar::Error::Io {
                action: "reading",
                path: self.update.clone(),
                source: io::Error::other("version found"),
            });
        }
        Ok(())
    }
}

/// The trimmed `VERSION.TXT` of the upgrade image read from `update` (named
/// `update_path` in errors), reading the archive only up to that member: to
/// compare an image with the running version before installing it.
pub fn read_version<R: Read + Send>(update: R, update_path: &Path) -> Result<String, SlotsError> {
    let mut reader = VersionReader {
        update: update_path.to_path_buf(),
        in_version: false,
        bytes: Vec::new(),
        found: false,
    };
    let visited = icos_sparse_tar::visit(update, update_path, &mut reader);
    if !reader.found {
        visited.map_err(|source| SlotsError::Archive {
            update: update_path.to_path_buf(),
            cause: source,
        })?;
        return Err(SlotsError::MissingMember {
            update: update_path.to_path_buf(),
            member: VERSION_MEMBER,
        });
    }
    let text = String::from_utf8(reader.bytes).map_err(|_| SlotsError::BadMember {
        update: update_path.to_path_buf(),
        member: VERSION_MEMBER.to_owned(),
        reason: "not UTF-8 text",
    })?;
    Ok(text.trim().to_owned())
}

impl<D: Device> SlotDisk<D> {
    /// Installs the upgrade image read from `update` (named `update_path` in
    /// errors; a tar, plain or zstd-compressed, holding `boot.img`,
    /// `root.img` and `VERSION.TXT`, as plain or old-GNU sparse members)
    /// into the spare slot and commits it, so the next boot tries it
    /// (`boot_alternative=<spare>`, `boot_cycle=first_boot`).
    ///
    /// Order, so that a crash at any point leaves a disk that boots the
    /// running slot and never a half-written one:
    ///
    /// 1. the state must be `stable` (checked, with the new grubenv block
    ///    computed, before anything is written);
    /// 2. the spare slot is invalidated: the first [`HEADER_BYTES`] of its
    ///    boot and root partitions are zeroed (no file system, so GRUB and
    ///    the initramfs cannot use them) and the first [`VAR_WIPE_BYTES`] of
    ///    its var partition wiped; then synced;
    /// 3. `boot.img` and `root.img` are streamed into the boot and root
    ///    partitions with `icos_diskwrite`, except their first
    ///    [`HEADER_BYTES`], which are held in memory: data extents are
    ///    written and hashed (SHA-256), holes (and all-zero 1 MiB chunks of
    ///    a plain member) are made zero by [`Device::zero`] — on a file or
    ///    block device the kernel zeroes them, so nothing is read to compare
    ///    and a sparse image file stays sparse. A member larger than its
    ///    partition is refused before any of it is written;
    /// 4. the rest of the archive is read (so zstd's checksum is checked),
    ///    the three members must all have been present; synced;
    /// 5. the held headers are written (root first, boot last) and synced:
    ///    only now do the partitions hold file systems again;
    /// 6. both partitions are read back (after [`Device::drop_cache`]): the
    ///    data extents, headers included, must hash to the SHA-256 computed
    ///    while writing, and samples of the zeroed ranges (both ends of
    ///    each, 4 KiB per GiB) must be zero; on a mismatch the headers are
    ///    zeroed again;
    /// 7. only then grubenv is rewritten in place and synced.
    pub fn install<R: Read + Send>(
        &mut self,
        update: R,
        update_path: &Path,
        progress: &mut dyn FnMut(&Step),
    ) -> Result<InstallReport, SlotsError> {
        // 1. State and the new block, before any write.
        let old_block = self.read_grubenv_bytes()?;
        let (env, before) = self.read_state()?;
        let (after, _) =
            transition(before, Event::UpgradeCommit).map_err(|source| SlotsError::Refused {
                disk: self.path.clone(),
                cause: source,
            })?;
        let target = before.upgrade_target();
        let new_block = self.block_for(&env, after)?;
        let parts = self.layout.slot(target).clone();

        // 2. Invalidate.
        self.zero_headers([&parts.boot, &parts.root])?;
        let var_wiped = VAR_WIPE_BYTES.min(parts.var.size);
        self.dev
            .zero(parts.var.offset, var_wiped)
            .map_err(self.io_err(&parts.var, "wiping", 0))?;
        self.sync("invalidating the spare slot")?;
        progress(&Step::Invalidated { slot: target });
        tracing::info!(disk = %self.path.display(), %target, "spare slot invalidated");

        // 3 + 4. Stream the members.
        let started = Instant::now();
        let mut writer = SlotWriter {
            dev: Some(&mut self.dev),
            disk: self.path.clone(),
            update: update_path.to_path_buf(),
            boot: parts.boot.clone(),
            root: parts.root.clone(),
            progress,
            current: Current::None,
            version: None,
            done: Vec::new(),
            failed: None,
        };
        let visited = icos_sparse_tar::visit(update, update_path, &mut writer);
        let SlotWriter {
            failed,
            version,
            done,
            progress,
            ..
        } = writer;
        let mut done = done;
        if let Some(e) = failed {
            return Err(e);
        }
        visited.map_err(|source| SlotsError::Archive {
            update: update_path.to_path_buf(),
            cause: source,
        })?;
        for member in [BOOT_MEMBER, ROOT_MEMBER] {
            if !done.iter().any(|p| p.member == member) {
                return Err(SlotsError::MissingMember {
                    update: update_path.to_path_buf(),
                    member,
                });
            }
        }
        let Some(version) = version else {
            return Err(SlotsError::MissingMember {
                update: update_path.to_path_buf(),
                member: VERSION_MEMBER,
            });
        };
        self.sync("writing the spare slot")?;

        // 5. Headers: root first, boot (what GRUB looks at) last.
        done.sort_by_key(|p| p.member != ROOT_MEMBER);
        for p in &done {
            self.write_part(&p.part, 0, &p.head)?;
        }
        self.sync("writing the spare slot's headers")?;
        let write_s = started.elapsed().as_secs_f64();

        // 6. Verify.
        progress(&Step::Verifying);
        let verify_started = Instant::now();
        for i in 0..done.len() {
            let p = &done[i];
            let mut io = PartIo {
                dev: &mut self.dev,
                disk: self.path.clone(),
                part: p.part.clone(),
            };
            match icos_diskwrite::verify(&mut io, &p.record, HOLE_CHECK) {
                Ok(v) => done[i].zero_checked = v.zero_bytes_checked,
                Err(e) => {
                    let err = write_err(&self.path, &p.part.name, p.member, e);
                    let headers: Vec<Part> = done.iter().map(|q| q.part.clone()).collect();
                    if let Err(again) = self
                        .zero_headers(headers.iter())
                        .and_then(|()| self.sync("invalidating the spare slot again"))
                    {
                        tracing::error!(error = %again, "could not invalidate the spare slot again");
                    }
                    return Err(err);
                }
            }
        }
        let verify_s = verify_started.elapsed().as_secs_f64();

        // 7. Commit.
        self.write_grubenv(&old_block, &new_block)?;
        progress(&Step::Committed {
            state: after.to_string(),
        });
        tracing::info!(disk = %self.path.display(), state = %after, "upgrade committed");

        done.sort_by_key(|p| p.member != BOOT_MEMBER);
        Ok(InstallReport {
            disk: self.path.clone(),
            update: update_path.to_path_buf(),
            slot: target.to_string(),
            version,
            members: done
                .into_iter()
                .map(|p| Installed {
                    member: p.member,
                    partition: p.part.name,
                    size: p.record.size,
                    data_bytes: p.record.data_bytes(),
                    zeroed_bytes: p.record.zeroed_bytes(),
                    data_sha256: hex::encode(p.record.data_sha256),
                    zero_method: p.record.zero_method.map(ZeroMethod::as_str),
                    zero_checked: p.zero_checked,
                })
                .collect(),
            var_wiped,
            before: before.to_string(),
            after: after.to_string(),
            write_s,
            verify_s,
        })
    }

    /// Zeroes the first [`HEADER_BYTES`] of each partition (written, so the
    /// bytes are there even on a device that would only unmap).
    fn zero_headers<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a Part>,
    ) -> Result<(), SlotsError> {
        let zeros = vec![0u8; usize::try_from(HEADER_BYTES).unwrap_or(0)];
        for part in parts {
            let len = usize::try_from(HEADER_BYTES.min(part.size)).unwrap_or(0);
            self.write_part(part, 0, &zeros[..len])?;
        }
        Ok(())
    }
}
