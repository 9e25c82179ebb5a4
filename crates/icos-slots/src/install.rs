//! Installing an upgrade image into the spare slot and committing it.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use icos_grubenv::{Event, Slot, transition};
use serde::Serialize;
use sha2::{Digest, Sha256};

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
/// The unit of reading, hashing, comparing and writing.
const CHUNK: usize = 1 << 20;
/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

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
    /// Bytes actually written (zero chunks over zeros are skipped).
    pub written: u64,
    /// SHA-256 of the member, equal to that of the bytes read back.
    pub sha256: String,
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

/// A member being written: its hash, its held-back header and counters.
struct Pending {
    member: &'static str,
    part: Part,
    size: u64,
    written: u64,
    sha256: [u8; 32],
    head: Vec<u8>,
}

impl<D: Device> SlotDisk<D> {
    /// Installs the upgrade image read from `update` (named `update_path` in
    /// errors; a tar, plain or zstd-compressed, holding `boot.img`,
    /// `root.img` and `VERSION.TXT`) into the spare slot and commits it, so
    /// the next boot tries it (`boot_alternative=<spare>`,
    /// `boot_cycle=first_boot`).
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
    ///    partitions, except their first [`HEADER_BYTES`], which are held in
    ///    memory; each is hashed on the way (SHA-256); a member larger than
    ///    its partition is refused before any of it is written. Chunks of
    ///    zeros are written only where the partition is not zero already, so
    ///    a sparse image file stays sparse;
    /// 4. the rest of the archive is read (so zstd's checksum is checked),
    ///    the three members must all have been present; synced;
    /// 5. the held headers are written (root first, boot last) and synced:
    ///    only now do the partitions hold file systems again;
    /// 6. both partitions are read back and their SHA-256 compared with the
    ///    members'; on a mismatch the headers are zeroed again;
    /// 7. only then grubenv is rewritten in place and synced.
    pub fn install<R: Read>(
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
        let zeros = vec![0u8; CHUNK];
        for part in [&parts.boot, &parts.root] {
            let len = usize::try_from(HEADER_BYTES.min(part.size)).unwrap_or(0);
            self.write_part(part, 0, &zeros[..len])?;
        }
        let var_wiped = VAR_WIPE_BYTES.min(parts.var.size);
        let mut at = 0u64;
        while at < var_wiped {
            let n = usize::try_from((var_wiped - at).min(CHUNK as u64)).unwrap_or(0);
            self.write_part(&parts.var, at, &zeros[..n])?;
            at += n as u64;
        }
        self.sync("invalidating the spare slot")?;
        progress(&Step::Invalidated { slot: target });
        tracing::info!(disk = %self.path.display(), %target, "spare slot invalidated");

        // 3 + 4. Stream the members.
        let started = Instant::now();
        let archive_err = |source: io::Error| SlotsError::Archive {
            update: update_path.to_path_buf(),
            cause: source,
        };
        let mut input = BufReader::with_capacity(CHUNK, update);
        let compressed = input
            .fill_buf()
            .map_err(archive_err)?
            .starts_with(&ZSTD_MAGIC);
        let reader: Box<dyn Read + '_> = if compressed {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(archive_err)?)
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(reader);
        let mut version: Option<String> = None;
        let mut done: Vec<Pending> = Vec::new();
        for entry in archive.entries().map_err(archive_err)? {
            let mut entry = entry.map_err(archive_err)?;
            let raw = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw);
            let name = name.trim_start_matches("./").to_owned();
            let bad_member = |reason| SlotsError::BadMember {
                update: update_path.to_path_buf(),
                member: name.clone(),
                reason,
            };
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_gnu_sparse()) {
                if kind.is_dir() && name.trim_end_matches('/').is_empty() {
                    continue;
                }
                return Err(bad_member("not a regular file"));
            }
            let size = entry.size();
            let (member, part) = match name.as_str() {
                VERSION_MEMBER => {
                    if version.is_some() {
                        return Err(bad_member("appears twice"));
                    }
                    if size > MAX_VERSION_LEN {
                        return Err(bad_member("longer than 4096 bytes"));
                    }
                    let mut text = String::new();
                    entry
                        .read_to_string(&mut text)
                        .map_err(|_| bad_member("not UTF-8 text"))?;
                    version = Some(text.trim().to_owned());
                    continue;
                }
                BOOT_MEMBER => (BOOT_MEMBER, parts.boot.clone()),
                ROOT_MEMBER => (ROOT_MEMBER, parts.root.clone()),
                _ => {
                    return Err(bad_member(
                        "unexpected (an upgrade image holds boot.img, root.img and VERSION.TXT)",
                    ));
                }
            };
            if done.iter().any(|p| p.member == member) {
                return Err(bad_member("appears twice"));
            }
            if size > part.size {
                return Err(SlotsError::TooLarge {
                    update: update_path.to_path_buf(),
                    member,
                    size,
                    disk: self.path.clone(),
                    partition: part.name,
                    partition_size: part.size,
                });
            }
            progress(&Step::Writing {
                member,
                partition: part.name.clone(),
                size,
            });
            let pending = self.stream_member(&mut entry, member, part, size, update_path)?;
            done.push(pending);
        }
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(archive_err)?;
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
        for p in &done {
            let actual = self.hash_part(&p.part, p.size)?;
            if actual != p.sha256 {
                for q in &done {
                    let len = usize::try_from(HEADER_BYTES.min(q.part.size)).unwrap_or(0);
                    self.write_part(&q.part, 0, &zeros[..len])?;
                }
                self.sync("invalidating the spare slot again")?;
                return Err(SlotsError::Verify {
                    disk: self.path.clone(),
                    partition: p.part.name.clone(),
                    member: p.member,
                    expected: hex::encode(p.sha256),
                    actual: hex::encode(actual),
                });
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
                    size: p.size,
                    written: p.written,
                    sha256: hex::encode(p.sha256),
                })
                .collect(),
            var_wiped,
            before: before.to_string(),
            after: after.to_string(),
            write_s,
            verify_s,
        })
    }

    /// Streams `size` bytes of `input` into `part`, holding back the header.
    fn stream_member(
        &mut self,
        input: &mut dyn Read,
        member: &'static str,
        part: Part,
        size: u64,
        update_path: &Path,
    ) -> Result<Pending, SlotsError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut target = vec![0u8; CHUNK];
        let zeros = vec![0u8; CHUNK];
        let mut head = Vec::new();
        let mut written = 0u64;
        let mut pos = 0u64;
        while pos < size {
            let n = usize::try_from((size - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            input
                .read_exact(&mut buf[..n])
                .map_err(|source| SlotsError::Archive {
                    update: update_path.to_path_buf(),
                    cause: io::Error::new(
                        source.kind(),
                        format!("reading member {member} at byte {pos}: {source}"),
                    ),
                })?;
            let chunk = &buf[..n];
            hasher.update(chunk);
            if pos < HEADER_BYTES {
                // CHUNK == HEADER_BYTES: the first chunk is the header.
                head.extend_from_slice(chunk);
            } else if chunk == &zeros[..n] {
                // Slice equality is a memcmp: fast in every build profile.
                self.read_part(&part, pos, &mut target[..n])?;
                if target[..n] != zeros[..n] {
                    self.write_part(&part, pos, chunk)?;
                    written += n as u64;
                }
            } else {
                self.write_part(&part, pos, chunk)?;
                written += n as u64;
            }
            pos += n as u64;
        }
        written += head.len() as u64;
        Ok(Pending {
            member,
            part,
            size,
            written,
            sha256: hasher.finalize().into(),
            head,
        })
    }

    /// SHA-256 of the first `len` bytes of `part`.
    fn hash_part(&mut self, part: &Part, len: u64) -> Result<[u8; 32], SlotsError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        while pos < len {
            let n = usize::try_from((len - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            self.read_part(part, pos, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(hasher.finalize().into())
    }
}

const _: () = assert!(CHUNK as u64 == HEADER_BYTES);
