//! Tests on small GPT disk files with the A/B partition names and a real FAT
//! grub partition (made by `mkfs.vfat` and mtools).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_grubenv::{BootCycle, BootState, GrubEnv, Slot, TransitionError};
use icos_layout::{Layout, Partition, PartitionType, write_gpt};
use sha2::{Digest, Sha256};

use crate::{Content, Device, SlotDisk, SlotsError, Step};

const MIB: u64 = 1 << 20;
const MIBU: usize = 1 << 20;

/// name, size in MiB
const PARTS: [(&str, u64); 7] = [
    ("grub", 4),
    ("A_boot", 3),
    ("A_root", 6),
    ("A_var", 18),
    ("B_boot", 3),
    ("B_root", 6),
    ("B_var", 18),
];

struct Fixture {
    dir: tempfile::TempDir,
    disk: PathBuf,
    layout: Layout,
}

fn uuid(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([n; 16])
}

fn layout_with(parts: &[(&str, u64)]) -> Layout {
    let mut start = 2048u64;
    let partitions = parts
        .iter()
        .enumerate()
        .map(|(i, &(name, mib))| {
            let p = Partition {
                name: name.to_owned(),
                start,
                size: mib * 2048,
                kind: PartitionType::Linux,
                uuid: uuid(u8::try_from(i + 1).unwrap()),
                comment: String::new(),
            };
            start += mib * 2048;
            p
        })
        .collect();
    Layout::from_partitions("test", partitions)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; usize::try_from(len).unwrap()];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A partition image that looks like ext4 (magic at 1080) with varied data,
/// a run of zeros in the middle, and the given length.
fn fs_image(len: u64, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i * 7 + u64::from(seed)) % 251).unwrap())
        .collect();
    v[1080] = 0x53;
    v[1081] = 0xEF;
    let len = usize::try_from(len).unwrap();
    if len > 3 * 1024 * 1024 {
        v[len / 2 - 700_000..len / 2 + 1_200_000].fill(0);
    }
    v
}

fn grubenv_block(state: BootState) -> [u8; 1024] {
    let mut env = GrubEnv::new();
    state.write_to_env(&mut env).unwrap();
    env.to_bytes().unwrap()
}

impl Fixture {
    /// A disk with slot A holding file systems, B empty, B_var full of junk,
    /// and grubenv (A, stable) on a FAT grub partition of `grub_mib` MiB.
    fn new(grub_mib: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = PARTS;
        parts[0].1 = grub_mib;
        let layout = layout_with(&parts);
        let disk = dir.path().join("disk.img");
        let f = File::create(&disk).unwrap();
        f.set_len(layout.disk_size).unwrap();
        drop(f);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        write_gpt(&mut f, &layout).unwrap();
        drop(f);

        let tools = icos_imagefs::Tools::discover().unwrap();
        let env_file = dir.path().join("grubenv");
        fs::write(
            &env_file,
            grubenv_block(BootState::new(Slot::A, BootCycle::Stable)),
        )
        .unwrap();
        let cfg = dir.path().join("grub.cfg");
        fs::write(&cfg, "# grub.cfg\n".repeat(300)).unwrap();
        let grub_img = dir.path().join("grub.img");
        icos_imagefs::make_vfat(
            &tools,
            &icos_imagefs::VfatSpec {
                size_bytes: grub_mib * MIB,
                label: "GRUB".into(),
                volume_id: 0x1234_5678,
                epoch: 1_700_000_000,
            },
            &[("grub.cfg".into(), cfg), ("grubenv".into(), env_file)],
            &grub_img,
        )
        .unwrap();
        let fx = Fixture { dir, disk, layout };
        write_at(&fx.disk, fx.offset("grub"), &fs::read(&grub_img).unwrap());
        write_at(&fx.disk, fx.offset("A_boot"), &fs_image(2 * MIB, 1));
        write_at(&fx.disk, fx.offset("A_root"), &fs_image(5 * MIB, 2));
        write_at(&fx.disk, fx.offset("B_var"), &vec![0xAA; 17 * MIBU]);
        fx
    }

    fn offset(&self, name: &str) -> u64 {
        self.layout.partition(name).unwrap().offset_bytes()
    }

    fn open(&self) -> SlotDisk<File> {
        crate::open(&self.disk, true).unwrap()
    }

    fn grubenv(&self) -> Vec<u8> {
        let tools = icos_imagefs::Tools::discover().unwrap();
        icos_imagefs::read_file_from_vfat(&tools, &self.disk, self.offset("grub"), "grubenv")
            .unwrap()
    }

    fn state(&self) -> BootState {
        BootState::from_env(&icos_grubenv::parse(&self.grubenv()).unwrap()).unwrap()
    }

    /// An upgrade image as a zstd-compressed GNU tar made with the `tar`
    /// crate: VERSION.TXT, boot.img, root.img plus `extra` members.
    fn update(&self, boot: &[u8], root: &[u8], extra: &[(&str, &[u8])]) -> Vec<u8> {
        let mut members: Vec<(&str, &[u8])> = vec![
            ("VERSION.TXT", b"v2-test\n"),
            ("boot.img", boot),
            ("root.img", root),
        ];
        members.extend_from_slice(extra);
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
    }

    fn save(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

fn install(disk: &mut SlotDisk<impl Device>, update: &[u8]) -> Result<Vec<Step>, SlotsError> {
    let mut steps = Vec::new();
    disk.install(update, Path::new("update-img.tar.zst"), &mut |s| {
        steps.push(s.clone())
    })?;
    Ok(steps)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `bytes` without the range `cut`.
fn without(bytes: &[u8], cut: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = bytes[..cut.start].to_vec();
    v.extend_from_slice(&bytes[cut.end..]);
    v
}

#[test]
fn show_a_fresh_disk() {
    let fx = Fixture::new(4);
    let st = fx.open().status().unwrap();
    assert_eq!(st.boot_alternative, "A");
    assert_eq!(st.boot_cycle, "stable");
    assert_eq!(st.running_slot, "A");
    assert_eq!(st.next_boot_slot, "A");
    assert_eq!(st.upgrade_target.as_deref(), Some("B"));
    assert!(st.slots[0].bootable);
    assert_eq!(st.slots[0].boot.content, Content::Ext4);
    assert!(!st.slots[1].bootable);
    assert_eq!(st.slots[1].boot.content, Content::Empty);
    assert_eq!(st.slots[1].var.content, Content::Other);
    assert_eq!(st.slots[1].root.part.name, "B_root");
    assert_eq!(st.slots[1].root.part.number, 6);
    assert_eq!(st.slots[1].root.part.offset, fx.offset("B_root"));
}

#[test]
fn install_writes_verifies_and_commits() {
    let fx = Fixture::new(4);
    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let update = fx.update(&boot, &root, &[]);
    let mut disk = fx.open();
    let mut steps = Vec::new();
    let report = disk
        .install(&update[..], Path::new("u.tar.zst"), &mut |s| {
            steps.push(s.to_string())
        })
        .unwrap();
    assert_eq!(report.slot, "B");
    assert_eq!(report.version, "v2-test");
    assert_eq!(report.before, "boot_alternative=A boot_cycle=stable");
    assert_eq!(report.after, "boot_alternative=B boot_cycle=first_boot");
    assert_eq!(report.members.len(), 2);
    assert_eq!(report.members[0].member, "boot.img");
    assert_eq!(report.members[0].data_sha256, sha(&boot));
    assert_eq!(report.members[0].data_bytes, boot.len() as u64);
    assert_eq!(report.members[0].zeroed_bytes, 0);
    let r = &report.members[1];
    assert_eq!(r.partition, "B_root");
    // The all-zero 1 MiB chunk [3 MiB, 4 MiB) of the plain member is a
    // hole: zeroed, not written, and not part of the data hash.
    assert_eq!((r.data_bytes, r.zeroed_bytes), (5 * MIB, MIB), "{report:?}");
    assert_eq!(r.data_sha256, sha(&without(&root, 3 * MIBU..4 * MIBU)));
    assert_eq!(r.zero_method, Some("punch-hole"));
    assert!(r.zero_checked >= 8192, "{report:?}");
    assert_eq!(report.var_wiped, 16 * MIB);
    assert!(steps[0].contains("slot B invalidated"), "{steps:?}");
    assert!(steps.last().unwrap().contains("first_boot"), "{steps:?}");
    drop(disk);

    assert_eq!(
        read_at(&fx.disk, fx.offset("B_boot"), boot.len() as u64),
        boot
    );
    assert_eq!(
        read_at(&fx.disk, fx.offset("B_root"), root.len() as u64),
        root
    );
    // var: the first 16 MiB are zero, the rest untouched.
    let var = read_at(&fx.disk, fx.offset("B_var"), 17 * MIB);
    assert!(var[..16 * MIBU].iter().all(|&b| b == 0));
    assert!(var[16 * MIBU..].iter().all(|&b| b == 0xAA));
    // Slot A is untouched.
    assert_eq!(
        read_at(&fx.disk, fx.offset("A_boot"), 2 * MIB),
        fs_image(2 * MIB, 1)
    );
    // mtools (another FAT implementation) sees the new block, 1024 bytes.
    let env = fx.grubenv();
    assert_eq!(env.len(), 1024);
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));
    let st = fx.open().status().unwrap();
    assert!(st.slots[1].bootable);
    assert_eq!(st.upgrade_target, None);
}

#[test]
fn the_fat_stays_clean_and_only_one_sector_changes() {
    // 64 MiB: FAT32 with 512-byte clusters, so grubenv spans two clusters.
    let fx = Fixture::new(64);
    let grub = fx.offset("grub");
    let before = read_at(&fx.disk, grub, 64 * MIB);
    let update = fx.update(&fs_image(MIB, 5), &fs_image(2 * MIB, 6), &[]);
    install(&mut fx.open(), &update).unwrap();
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));
    let after = read_at(&fx.disk, grub, 64 * MIB);
    let changed: Vec<usize> = (0..before.len() / 512)
        .filter(|i| before[i * 512..(i + 1) * 512] != after[i * 512..(i + 1) * 512])
        .collect();
    assert_eq!(changed.len(), 1, "sectors changed: {changed:?}");
    let part = fx.dir.path().join("grub-after.img");
    fs::write(&part, &after).unwrap();
    let fsck = icos_imagefs::find_tool("fsck.vfat", "dosfstools").unwrap();
    let out = Command::new(fsck).arg("-n").arg(&part).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fixture {
    /// An upgrade image written by icos-sparse-tar (what `icos build`
    /// ships): root.img is sparse (a header, one data run at 5 MiB, holes
    /// elsewhere), so it becomes an old-GNU sparse member. Compressed with
    /// zstd or a plain tar. Returns the archive, boot.img and root.img.
    fn sparse_update(&self, zst: bool) -> (PathBuf, Vec<u8>, Vec<u8>) {
        let boot = fs_image(MIB + 512, 7);
        let boot_path = self.save("boot.img", &boot);
        let root_path = self.dir.path().join("root.img");
        let mut f = File::create(&root_path).unwrap();
        f.set_len(6 * MIB).unwrap();
        let head = fs_image(64 * 1024, 8);
        f.write_all(&head).unwrap();
        f.seek(SeekFrom::Start(5 * MIB)).unwrap();
        f.write_all(&[0x5A; 8192]).unwrap();
        drop(f);
        let version = self.save("version", b"v3\n");
        let mut b = icos_sparse_tar::TarBuilder::new();
        b.add_file("boot.img", &boot_path)
            .add_file("root.img", &root_path)
            .add_file("VERSION.TXT", &version);
        let out = if zst {
            let out = self.dir.path().join("update-img.tar.zst");
            b.write_tar_zst(&out, &icos_sparse_tar::ZstdOptions::default(), &mut |_| {})
                .unwrap();
            out
        } else {
            let out = self.dir.path().join("update-img.tar");
            b.write_to(File::create(&out).unwrap(), &mut |_| {})
                .unwrap();
            out
        };
        let listed = icos_sparse_tar::list_file(&out).unwrap();
        assert!(
            listed
                .iter()
                .any(|e| e.kind == icos_sparse_tar::EntryKind::SparseFile),
            "{listed:?}"
        );
        (out, boot, fs::read(&root_path).unwrap())
    }
}

#[test]
fn the_build_format_with_sparse_members_installs() {
    for zst in [true, false] {
        let fx = Fixture::new(4);
        let (out, boot, root) = fx.sparse_update(zst);
        // B_root held data before: the holes must come out as zeros.
        write_at(&fx.disk, fx.offset("B_root"), &vec![0x77; 6 * MIBU]);
        let mut disk = fx.open();
        let report = disk
            .install(File::open(&out).unwrap(), &out, &mut |_| {})
            .unwrap();
        assert_eq!(report.version, "v3");
        let r = &report.members[1];
        // The header (held back, written whole) and the 8 KiB run.
        assert_eq!(r.data_bytes, MIB + 8192, "{report:?}");
        assert_eq!(r.zeroed_bytes, 5 * MIB - 8192, "{report:?}");
        drop(disk);
        assert!(read_at(&fx.disk, fx.offset("B_root"), 6 * MIB) == root);
        assert_eq!(
            read_at(&fx.disk, fx.offset("B_boot"), boot.len() as u64),
            boot
        );
    }
}

#[test]
fn holes_over_old_data_end_up_zero_on_a_device_that_writes_zeros() {
    // A Cursor has no kernel zeroing: Device::zero's default writes zeros.
    let fx = Fixture::new(4);
    let (out, boot, root) = fx.sparse_update(true);
    write_at(&fx.disk, fx.offset("B_root"), &vec![0x77; 6 * MIBU]);
    let dev = io::Cursor::new(fs::read(&fx.disk).unwrap());
    let mut disk = SlotDisk::new(dev, &fx.disk).unwrap();
    let report = disk
        .install(File::open(&out).unwrap(), &out, &mut |_| {})
        .unwrap();
    assert_eq!(report.members[1].zero_method, Some("write-zeros"));
    let bytes = disk.into_inner().into_inner();
    let at = |name: &str, len: usize| {
        let o = usize::try_from(fx.offset(name)).unwrap();
        bytes[o..o + len].to_vec()
    };
    assert!(at("B_root", 6 * MIBU) == root);
    assert!(at("B_boot", boot.len()) == boot);
    assert!(at("B_var", 16 * MIBU).iter().all(|&b| b == 0));
}

#[test]
fn install_is_refused_unless_stable_and_nothing_is_written() {
    let fx = Fixture::new(4);
    let update = fx.update(&fs_image(MIB, 1), &fs_image(MIB, 2), &[]);
    install(&mut fx.open(), &update).unwrap();
    let before = fs::read(&fx.disk).unwrap();
    let err = install(&mut fx.open(), &update).unwrap_err();
    assert!(
        matches!(
            err,
            SlotsError::Refused {
                cause: TransitionError::NotStable { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains("disk.img") && msg.contains("first_boot"),
        "{msg}"
    );
    assert!(fs::read(&fx.disk).unwrap() == before, "the disk changed");
}

#[test]
fn an_oversized_member_is_refused_naming_member_and_partition() {
    let fx = Fixture::new(4);
    let update = fx.update(&fs_image(MIB, 1), &fs_image(6 * MIB + 512, 2), &[]);
    let err = install(&mut fx.open(), &update).unwrap_err();
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains("root.img")
            && msg.contains("B_root")
            && msg.contains(&(6 * MIB + 512).to_string())
            && msg.contains(&(6 * MIB).to_string()),
        "{msg}"
    );
    assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));
    assert!(!fx.open().status().unwrap().slots[1].bootable);
}

#[test]
fn bad_archives_are_refused_and_nothing_is_committed() {
    let fx = Fixture::new(4);
    let boot = fs_image(MIB, 1);
    let root = fs_image(MIB, 2);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (fx.update(&boot, &root, &[("extra.bin", b"x")]), "extra.bin"),
        (fx.update(&boot, &root, &[("boot.img", b"again")]), "twice"),
        (
            {
                let full = fx.update(&boot, &root, &[]);
                full[..full.len() / 2].to_vec()
            },
            "upgrade image",
        ),
        (b"not a tar at all, just text".repeat(40), "upgrade image"),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_size(boot.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, "boot.img", &boot[..]).unwrap();
                b.into_inner().unwrap()
            },
            "no member root.img",
        ),
    ];
    for (bytes, want) in cases {
        let err = install(&mut fx.open(), &bytes).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
        assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));
        assert!(!fx.open().status().unwrap().slots[1].bootable, "{err}");
    }
}

/// A device whose writes fail once `budget` bytes have been written, or
/// whose sync fails, or which silently corrupts one written byte.
struct Faulty<I = File> {
    inner: I,
    budget: u64,
    fail_sync_after_writes: Option<u64>,
    corrupt_at: Option<u64>,
    /// A disk offset that zeroing leaves non-zero (a broken zero-out).
    dirty_zero: Option<u64>,
    written: u64,
}

impl Faulty<File> {
    fn new(path: &Path) -> Faulty {
        Faulty::wrap(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
        )
    }
}

impl<I: Device> Faulty<I> {
    fn wrap(inner: I) -> Faulty<I> {
        Faulty {
            inner,
            budget: u64::MAX,
            fail_sync_after_writes: None,
            corrupt_at: None,
            dirty_zero: None,
            written: 0,
        }
    }
}

impl<I: Device> Read for Faulty<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<I: Device> Seek for Faulty<I> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<I: Device> Write for Faulty<I> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.budget.saturating_sub(self.written);
        if left == 0 {
            return Err(io::Error::other("injected write failure"));
        }
        // Like a disk, whole 512-byte sectors persist or do not; the
        // write stops at the last whole sector within the budget.
        let n = if left >= buf.len() as u64 {
            buf.len()
        } else {
            usize::try_from(left / 512 * 512).unwrap()
        };
        if n == 0 {
            self.written = self.budget;
            return Err(io::Error::other("injected write failure"));
        }
        let pos = self.inner.stream_position()?;
        let mut data = buf[..n].to_vec();
        if let Some(at) = self.corrupt_at
            && (pos..pos + n as u64).contains(&at)
        {
            data[usize::try_from(at - pos).unwrap()] ^= 0xFF;
        }
        // A short write: the caller's write_all comes back and fails.
        let n = self.inner.write(&data)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<I: Device> Device for Faulty<I> {
    fn sync(&mut self) -> io::Result<()> {
        if self
            .fail_sync_after_writes
            .is_some_and(|limit| self.written >= limit)
        {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync()
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<crate::ZeroMethod> {
        // Writes zeros through `write`, so the budget counts them.
        let zeros = vec![0u8; usize::try_from(len).unwrap()];
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(&zeros)?;
        if let Some(at) = self.dirty_zero
            && (offset..offset + len).contains(&at)
        {
            self.inner.seek(SeekFrom::Start(at))?;
            self.inner.write_all(&[0x55])?;
        }
        Ok(crate::ZeroMethod::WriteZeros)
    }
}

#[test]
fn a_failure_at_any_point_leaves_grubenv_and_never_a_half_valid_slot() {
    let fx = Fixture::new(4);
    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let update = fx.update(&boot, &root, &[]);
    let (sparse, sparse_boot, sparse_root) = fx.sparse_update(true);
    let pristine = fs::read(&fx.disk).unwrap();
    let grub_env_before = grubenv_block(BootState::new(Slot::A, BootCycle::Stable));

    for (update, boot, root) in [
        (update.clone(), boot.clone(), root.clone()),
        (fs::read(&sparse).unwrap(), sparse_boot, sparse_root),
    ] {
        // How many bytes a complete install writes.
        fs::write(&fx.disk, &pristine).unwrap();
        let mut dev = Faulty::new(&fx.disk);
        install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap();
        let total = dev.written;
        assert!(total > 16 * MIB, "{total}");

        let points: Vec<u64> = (1..=24)
            .map(|i| total * i / 25)
            .chain([1, 512, MIB, 18 * MIB + 1, total - 512, total - 1])
            .collect();
        for point in points {
            fs::write(&fx.disk, &pristine).unwrap();
            // Old data in the spare root, which holes must not let through.
            write_at(&fx.disk, fx.offset("B_root"), &vec![0x77; 6 * MIBU]);
            let mut dev = Faulty::new(&fx.disk);
            dev.budget = point;
            let err =
                install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap_err();
            assert!(
                err.to_string().contains("injected write failure"),
                "{point}: {err}"
            );
            let env = fx.grubenv();
            assert_eq!(env, grub_env_before, "grubenv changed at {point}");
            // Either B's boot partition has no header (GRUB cannot boot it),
            // or the whole slot is complete; never a bootable half.
            let st = fx.open().status().unwrap();
            let b_boot = read_at(&fx.disk, fx.offset("B_boot"), boot.len() as u64);
            let b_root = read_at(&fx.disk, fx.offset("B_root"), root.len() as u64);
            if st.slots[1].boot.content == Content::Ext4 {
                assert!(
                    b_boot == boot && b_root == root,
                    "slot B has a boot header but is incomplete (failure at byte {point} of {total})"
                );
            } else {
                assert_eq!(st.slots[1].boot.content, Content::Empty, "{point}");
                assert!(!st.slots[1].bootable);
            }
            // Slot A was never touched.
            assert_eq!(
                read_at(&fx.disk, fx.offset("A_root"), 5 * MIB),
                fs_image(5 * MIB, 2)
            );
        }
    }
    fs::write(&fx.disk, &pristine).unwrap();

    // A failing fsync after the data was written stops before the commit.
    fs::write(&fx.disk, &pristine).unwrap();
    let mut dev = Faulty::new(&fx.disk);
    dev.fail_sync_after_writes = Some(17 * MIB);
    let err = install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap_err();
    assert!(
        matches!(err, SlotsError::Sync { .. }) && err.to_string().contains("fsync"),
        "{err}"
    );
    assert_eq!(fx.grubenv(), grub_env_before);
    assert!(!fx.open().status().unwrap().slots[1].bootable);

    // After any failure, a new install succeeds.
    install(&mut fx.open(), &update).unwrap();
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));
}

#[test]
fn a_corrupted_write_fails_verification_and_reinvalidates() {
    let fx = Fixture::new(4);
    let boot = fs_image(2 * MIB, 3);
    let root = fs_image(6 * MIB, 4);
    let update = fx.update(&boot, &root, &[]);
    let mut dev = Faulty::new(&fx.disk);
    dev.corrupt_at = Some(fx.offset("B_root") + 5 * MIB + 17);
    let err = install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SlotsError::Verify { .. }), "{msg}");
    let want = sha(&without(&root, 3 * MIBU..4 * MIBU));
    assert!(msg.contains("B_root") && msg.contains(&want), "{msg}");
    assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));
    let st = fx.open().status().unwrap();
    assert_eq!(st.slots[1].boot.content, Content::Empty);
    assert_eq!(st.slots[1].root.content, Content::Empty);
}

#[test]
fn a_hole_left_non_zero_fails_verification_and_reinvalidates() {
    let fx = Fixture::new(4);
    let (sparse, _, _) = fx.sparse_update(true);
    write_at(&fx.disk, fx.offset("B_root"), &vec![0x77; 6 * MIBU]);
    let update = fs::read(&sparse).unwrap();
    let mut dev = Faulty::new(&fx.disk);
    // The first hole of root.img after its held-back header starts at 1 MiB:
    // its first 4 KiB are always sampled.
    dev.dirty_zero = Some(fx.offset("B_root") + MIB + 100);
    let err = install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SlotsError::NotZero { offset, member: "root.img", .. } if offset == MIB + 100),
        "{msg}"
    );
    assert!(
        msg.contains("B_root") && msg.contains("invalidated again"),
        "{msg}"
    );
    assert!(!err.is_bad_input());
    assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));
    let st = fx.open().status().unwrap();
    assert_eq!(st.slots[1].boot.content, Content::Empty);
    assert_eq!(st.slots[1].root.content, Content::Empty);
}

#[test]
fn confirm_follows_the_boot_cycle() {
    let fx = Fixture::new(4);
    // stable: nothing to do.
    let r = fx.open().confirm().unwrap();
    assert!(!r.changed);
    assert_eq!(r.slot, "A");

    let update = fx.update(&fs_image(MIB, 1), &fs_image(MIB, 2), &[]);
    install(&mut fx.open(), &update).unwrap();
    // first_boot: B has not booted yet; refused, nothing written.
    let err = fx.open().confirm().unwrap_err();
    assert!(
        matches!(
            err,
            SlotsError::Refused {
                cause: TransitionError::ConfirmBeforeTrial { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));

    // GRUB boots B on trial (first_boot -> failsafe_check), then B confirms.
    let mut disk = fx.open();
    let old = disk.read_grubenv_bytes().unwrap();
    let refresh = icos_grubenv::refresh_for_boot(&disk.read_grubenv().unwrap()).unwrap();
    assert_eq!(refresh.slot, Slot::B);
    disk.write_grubenv(&old, &refresh.env.to_bytes().unwrap())
        .unwrap();
    drop(disk);
    assert_eq!(
        fx.state(),
        BootState::new(Slot::B, BootCycle::FailsafeCheck)
    );
    let r = fx.open().confirm().unwrap();
    assert!(r.changed);
    assert_eq!(r.slot, "B");
    assert_eq!(r.before, "boot_alternative=B boot_cycle=failsafe_check");
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::Stable));
    let st = fx.open().status().unwrap();
    assert_eq!(st.upgrade_target.as_deref(), Some("A"));
}

#[test]
fn a_disk_without_the_slots_or_grubenv_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_with(&[("grub", 4), ("A_boot", 1), ("A_root", 1)]);
    let disk = dir.path().join("small.img");
    let f = File::create(&disk).unwrap();
    f.set_len(layout.disk_size).unwrap();
    drop(f);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    write_gpt(&mut f, &layout).unwrap();
    drop(f);
    let err = crate::open(&disk, false).unwrap_err();
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains("small.img") && msg.contains("A_var") && msg.contains("A_boot"),
        "{msg}"
    );

    let err = crate::open(&dir.path().join("absent.img"), false).unwrap_err();
    assert!(err.is_bad_input() && err.to_string().contains("absent.img"));

    let plain = dir.path().join("plain.img");
    fs::write(&plain, vec![0u8; 4 * MIBU]).unwrap();
    let err = crate::open(&plain, false).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("GPT"),
        "{err}"
    );

    // A grub partition whose grubenv is not 1024 bytes.
    let fx = Fixture::new(4);
    let tools = icos_imagefs::Tools::discover().unwrap();
    let short = fx.save("short", &[b'#'; 100]);
    let img = fx.dir.path().join("grub2.img");
    icos_imagefs::make_vfat(
        &tools,
        &icos_imagefs::VfatSpec {
            size_bytes: 4 * MIB,
            label: "GRUB".into(),
            volume_id: 1,
            epoch: 1_700_000_000,
        },
        &[("grubenv".into(), short)],
        &img,
    )
    .unwrap();
    write_at(&fx.disk, fx.offset("grub"), &fs::read(&img).unwrap());
    let err = crate::open(&fx.disk, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("grub") && msg.contains("100 bytes") && msg.contains("1024"),
        "{msg}"
    );
    // No grubenv at all.
    write_at(&fx.disk, fx.offset("grub"), &vec![0u8; 4 * MIBU]);
    let err = crate::open(&fx.disk, false).unwrap_err();
    assert!(err.to_string().contains("55 AA"), "{err}");
}

// HostOS: the six slot volumes are files of their own, the grub partition a
// FAT image file (as on a running HostOS: /dev/hostlvm/* and the disk's
// grub partition).

struct HostFixture {
    dir: tempfile::TempDir,
    grub: PathBuf,
    volumes: PathBuf,
}

impl HostFixture {
    /// Slot A holds file systems, B is empty with junk in B_var, grubenv
    /// says A, stable.
    fn new() -> HostFixture {
        let dir = tempfile::tempdir().unwrap();
        let tools = icos_imagefs::Tools::discover().unwrap();
        let env_file = dir.path().join("grubenv");
        fs::write(
            &env_file,
            grubenv_block(BootState::new(Slot::A, BootCycle::Stable)),
        )
        .unwrap();
        let cfg = dir.path().join("grub.cfg");
        fs::write(&cfg, "# grub.cfg\n").unwrap();
        let grub = dir.path().join("grub-partition");
        icos_imagefs::make_vfat(
            &tools,
            &icos_imagefs::VfatSpec {
                size_bytes: 4 * MIB,
                label: "GRUB".into(),
                volume_id: 0x1234_5678,
                epoch: 1_700_000_000,
            },
            &[("grub.cfg".into(), cfg), ("grubenv".into(), env_file)],
            &grub,
        )
        .unwrap();
        let volumes = dir.path().join("hostlvm");
        fs::create_dir(&volumes).unwrap();
        for (name, mib) in &PARTS[1..] {
            let f = File::create(volumes.join(name)).unwrap();
            f.set_len(mib * MIB).unwrap();
        }
        let fx = HostFixture { dir, grub, volumes };
        write_at(&fx.vol("A_boot"), 0, &fs_image(2 * MIB, 1));
        write_at(&fx.vol("A_root"), 0, &fs_image(5 * MIB, 2));
        write_at(&fx.vol("B_var"), 0, &vec![0xAA; 17 * MIBU]);
        fx
    }

    fn vol(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }

    fn open(&self) -> SlotDisk<crate::Volumes<File>> {
        crate::open_hostos(&self.grub, &self.volumes, true).unwrap()
    }

    /// The same volumes behind one failing device.
    fn faulty(&self) -> SlotDisk<Faulty<crate::Volumes<File>>> {
        let disk = self.open();
        let layout = disk.layout().clone();
        SlotDisk::with_layout(Faulty::wrap(disk.into_inner()), &self.volumes, layout).unwrap()
    }

    fn state(&self) -> BootState {
        let tools = icos_imagefs::Tools::discover().unwrap();
        let env = icos_imagefs::read_file_from_vfat(&tools, &self.grub, 0, "grubenv").unwrap();
        BootState::from_env(&icos_grubenv::parse(&env).unwrap()).unwrap()
    }

    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all = vec![(self.grub.clone(), fs::read(&self.grub).unwrap())];
        for (name, _) in &PARTS[1..] {
            all.push((self.vol(name), fs::read(self.vol(name)).unwrap()));
        }
        all
    }

    fn restore(snapshot: &[(PathBuf, Vec<u8>)]) {
        for (path, bytes) in snapshot {
            fs::write(path, bytes).unwrap();
        }
    }
}

fn update_image(boot: &[u8], root: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("VERSION.TXT", &b"v2-host\n"[..]),
        ("boot.img", boot),
        ("root.img", root),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn hostos_volumes_install_verify_commit_and_confirm() {
    let fx = HostFixture::new();
    let st = fx.open().status().unwrap();
    assert_eq!(st.disk, fx.volumes);
    assert_eq!(st.upgrade_target.as_deref(), Some("B"));
    assert!(st.slots[0].bootable && !st.slots[1].bootable);
    assert_eq!(st.slots[1].root.part.size, 6 * MIB);

    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let update = update_image(&boot, &root);
    assert_eq!(
        crate::read_version(&update[..], Path::new("u.tar.zst")).unwrap(),
        "v2-host"
    );
    let mut disk = fx.open();
    let mut steps = Vec::new();
    let report = disk
        .install(&update[..], Path::new("u.tar.zst"), &mut |s| {
            steps.push(s.clone());
        })
        .unwrap();
    drop(disk);
    assert_eq!(report.slot, "B");
    assert_eq!(report.version, "v2-host");
    assert_eq!(report.members[1].partition, "B_root");
    assert_eq!(
        report.members[1].data_sha256,
        sha(&without(&root, 3 * MIBU..4 * MIBU))
    );
    assert!(matches!(steps[0], Step::Invalidated { slot: Slot::B }));
    // Each member landed at the start of its own volume; var was wiped.
    assert_eq!(read_at(&fx.vol("B_boot"), 0, boot.len() as u64), boot);
    assert_eq!(fs::read(fx.vol("B_root")).unwrap(), root);
    assert!(
        read_at(&fx.vol("B_var"), 0, 16 * MIB)
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(read_at(&fx.vol("B_var"), 16 * MIB, 1), [0xAA]);
    // Slot A untouched.
    assert_eq!(read_at(&fx.vol("A_root"), 0, 5 * MIB), fs_image(5 * MIB, 2));
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));

    // Committed: a second install and a confirm are refused.
    let err = install(&mut fx.open(), &update).unwrap_err();
    assert!(matches!(err, SlotsError::Refused { .. }), "{err}");
    assert!(fx.open().confirm().is_err());

    // GRUB starts the trial; HostOS confirms it.
    let mut disk = fx.open();
    let old = disk.read_grubenv_bytes().unwrap();
    let refresh = icos_grubenv::refresh_for_boot(&disk.read_grubenv().unwrap()).unwrap();
    disk.write_grubenv(&old, &refresh.env.to_bytes().unwrap())
        .unwrap();
    drop(disk);
    let r = fx.open().confirm().unwrap();
    assert!(r.changed && r.slot == "B", "{r:?}");
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::Stable));
    assert_eq!(
        fx.open().status().unwrap().upgrade_target.as_deref(),
        Some("A")
    );
}

#[test]
fn hostos_volumes_a_failure_at_any_point_leaves_grubenv_and_no_half_valid_slot() {
    let fx = HostFixture::new();
    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let update = update_image(&boot, &root);
    let pristine = fx.snapshot();

    let mut disk = fx.faulty();
    install(&mut disk, &update).unwrap();
    let total = disk.into_inner().written;
    assert!(total > 16 * MIB, "{total}");
    HostFixture::restore(&pristine);

    for point in (1..=12)
        .map(|i| total * i / 13)
        .chain([1, MIB, 17 * MIB, total - 512, total - 1])
    {
        HostFixture::restore(&pristine);
        write_at(&fx.vol("B_root"), 0, &vec![0x77; 6 * MIBU]);
        let mut disk = fx.faulty();
        disk.dev.budget = point;
        let err = install(&mut disk, &update).unwrap_err();
        assert!(
            err.to_string().contains("injected write failure"),
            "{point}: {err}"
        );
        assert_eq!(
            fx.state(),
            BootState::new(Slot::A, BootCycle::Stable),
            "{point}"
        );
        let st = fx.open().status().unwrap();
        if st.slots[1].boot.content == Content::Ext4 {
            assert!(
                read_at(&fx.vol("B_boot"), 0, boot.len() as u64) == boot
                    && fs::read(fx.vol("B_root")).unwrap() == root,
                "slot B has a boot header but is incomplete (failure at byte {point} of {total})"
            );
        } else {
            assert_eq!(st.slots[1].boot.content, Content::Empty, "{point}");
        }
        assert_eq!(read_at(&fx.vol("A_root"), 0, 5 * MIB), fs_image(5 * MIB, 2));
    }

    // A failing fsync stops before the commit.
    HostFixture::restore(&pristine);
    let mut disk = fx.faulty();
    disk.dev.fail_sync_after_writes = Some(17 * MIB);
    let err = install(&mut disk, &update).unwrap_err();
    assert!(matches!(err, SlotsError::Sync { .. }), "{err}");
    assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));

    // Afterwards a clean install succeeds.
    install(&mut fx.open(), &update).unwrap();
    assert_eq!(fx.state(), BootState::new(Slot::B, BootCycle::FirstBoot));
}

#[test]
fn hostos_volumes_a_corrupted_write_fails_verification_and_reinvalidates() {
    let fx = HostFixture::new();
    let root = fs_image(6 * MIB, 4);
    let update = update_image(&fs_image(2 * MIB, 3), &root);
    let mut disk = fx.faulty();
    let b_root = disk.layout().b.root.offset;
    disk.dev.corrupt_at = Some(b_root + 5 * MIB + 17);
    let err = install(&mut disk, &update).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SlotsError::Verify { .. }), "{msg}");
    assert!(
        msg.contains("B_root") && msg.contains(&fx.volumes.display().to_string()),
        "{msg}"
    );
    assert_eq!(fx.state(), BootState::new(Slot::A, BootCycle::Stable));
    let st = fx.open().status().unwrap();
    assert_eq!(st.slots[1].boot.content, Content::Empty);
    assert_eq!(st.slots[1].root.content, Content::Empty);
}

#[test]
fn hostos_volumes_missing_or_empty_are_named() {
    let fx = HostFixture::new();
    fs::remove_file(fx.vol("B_var")).unwrap();
    let err = crate::open_hostos(&fx.grub, &fx.volumes, false).unwrap_err();
    assert!(err.to_string().contains("B_var"), "{err}");
    File::create(fx.vol("B_var")).unwrap();
    let err = crate::open_hostos(&fx.grub, &fx.volumes, false).unwrap_err();
    assert!(err.to_string().contains("B_var is empty"), "{err}");

    // The system disk with a GPT works as the grub device too.
    let fx = HostFixture::new();
    let layout = layout_with(&[("esp", 1), ("grub", 4), ("hostlvm", 2)]);
    let disk = fx.dir.path().join("disk.img");
    File::create(&disk)
        .unwrap()
        .set_len(layout.disk_size)
        .unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    write_gpt(&mut f, &layout).unwrap();
    drop(f);
    let grub_at = layout.partition("grub").unwrap().offset_bytes();
    write_at(&disk, grub_at, &fs::read(&fx.grub).unwrap());
    let st = crate::open_hostos(&disk, &fx.volumes, false)
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(st.boot_cycle, "stable");
    // A GPT without a grub partition is named.
    write_gpt(
        &mut OpenOptions::new()
            .write(true)
            .read(true)
            .open(&disk)
            .unwrap(),
        &layout_with(&[("esp", 1), ("other", 4)]),
    )
    .unwrap();
    let err = crate::open_hostos(&disk, &fx.volumes, false).unwrap_err();
    assert!(err.to_string().contains("no partition named grub"), "{err}");
}
