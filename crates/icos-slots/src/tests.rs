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
    assert_eq!(report.members[0].sha256, sha(&boot));
    assert_eq!(report.members[1].partition, "B_root");
    assert_eq!(report.members[1].sha256, sha(&root));
    // The zero run over an empty partition was not written.
    assert!(report.members[1].written < root.len() as u64, "{report:?}");
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

#[test]
fn the_build_format_with_sparse_members_installs() {
    // An upgrade image written by icos-sparse-tar (what `icos build` ships):
    // root.img is sparse, so it becomes an old-GNU sparse member.
    let fx = Fixture::new(4);
    let boot = fs_image(MIB + 512, 7);
    let boot_path = fx.save("boot.img", &boot);
    let root_path = fx.dir.path().join("root.img");
    let mut f = File::create(&root_path).unwrap();
    f.set_len(6 * MIB).unwrap();
    let head = fs_image(64 * 1024, 8);
    f.write_all(&head).unwrap();
    f.seek(SeekFrom::Start(5 * MIB)).unwrap();
    f.write_all(&[0x5A; 8192]).unwrap();
    drop(f);
    let version = fx.save("version", b"v3\n");
    let out = fx.dir.path().join("update-img.tar.zst");
    let mut b = icos_sparse_tar::TarBuilder::new();
    b.add_file("boot.img", &boot_path)
        .add_file("root.img", &root_path)
        .add_file("VERSION.TXT", &version);
    b.write_tar_zst(&out, &icos_sparse_tar::ZstdOptions::default(), &mut |_| {})
        .unwrap();
    let listed = icos_sparse_tar::list_file(&out).unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.kind == icos_sparse_tar::EntryKind::SparseFile),
        "{listed:?}"
    );
    // B_root held data before: the holes must come out as zeros.
    write_at(&fx.disk, fx.offset("B_root"), &vec![0x77; 6 * MIBU]);
    let mut disk = fx.open();
    let report = disk
        .install(File::open(&out).unwrap(), &out, &mut |_| {})
        .unwrap();
    assert_eq!(report.version, "v3");
    drop(disk);
    assert_eq!(
        read_at(&fx.disk, fx.offset("B_root"), 6 * MIB),
        fs::read(&root_path).unwrap()
    );
    assert_eq!(
        read_at(&fx.disk, fx.offset("B_boot"), boot.len() as u64),
        boot
    );
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
struct Faulty {
    inner: File,
    budget: u64,
    fail_sync_after_writes: Option<u64>,
    corrupt_at: Option<u64>,
    written: u64,
}

impl Faulty {
    fn new(path: &Path) -> Faulty {
        Faulty {
            inner: OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
            budget: u64::MAX,
            fail_sync_after_writes: None,
            corrupt_at: None,
            written: 0,
        }
    }
}

impl Read for Faulty {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Seek for Faulty {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl Write for Faulty {
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

impl Device for Faulty {
    fn sync(&mut self) -> io::Result<()> {
        if self
            .fail_sync_after_writes
            .is_some_and(|limit| self.written >= limit)
        {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_all()
    }
}

#[test]
fn a_failure_at_any_point_leaves_grubenv_and_never_a_half_valid_slot() {
    let fx = Fixture::new(4);
    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let update = fx.update(&boot, &root, &[]);
    let pristine = fs::read(&fx.disk).unwrap();

    // How many bytes a complete install writes.
    let mut dev = Faulty::new(&fx.disk);
    install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap();
    let total = dev.written;
    assert!(total > 16 * MIB, "{total}");

    let grub_env_before = grubenv_block(BootState::new(Slot::A, BootCycle::Stable));
    let points: Vec<u64> = (1..=24)
        .map(|i| total * i / 25)
        .chain([1, 512, MIB, 18 * MIB + 1, total - 512, total - 1])
        .collect();
    for point in points {
        fs::write(&fx.disk, &pristine).unwrap();
        let mut dev = Faulty::new(&fx.disk);
        dev.budget = point;
        let err = install(&mut SlotDisk::new(&mut dev, &fx.disk).unwrap(), &update).unwrap_err();
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
    assert!(msg.contains("B_root") && msg.contains(&sha(&root)), "{msg}");
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
