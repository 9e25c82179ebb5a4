//! `icos build hostos`, end to end: build the image once per test run and
//! check the disk: IC's HostOS GPT (`sfdisk --dump`), the `hostlvm` volume
//! group as LVM's own tools report it on a read-only loop device of the
//! partition (`pvs`, `vgs`, `lvs -o +seg_pe_ranges`, `vgck`), the volumes
//! found through the `icos-lvm` reader (`e2fsck -fn` of A_root, A_boot and
//! config; `veritysetup verify` of A_root; the boot arguments; the
//! programs in the root), the grub partition and the upgrade image. Then
//! boot it under QEMU (OVMF; TCG unless KVM works) to `HOSTOS BOOT SUCCESS`.
//!
//! The build goes to `$CARGO_TARGET_TMPDIR/build_hostos/` (replaced at the
//! start of each run) and uses the normal icos cache. Needs root (mmdebstrap,
//! losetup) and the host tools of `scripts/prereqs.sh`, `lvm2` included.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{assert_artifacts, fresh_dir, require, run_ok, source_root};
use icos_imagefs::Tools;
use icos_layout::OsKind;
use icos_lvm::{PhysicalVolume, VolumeGroupSpec};
use icos_qemu::{Console, Disk, Firmware, Outcome, Ovmf, ProbeOptions, Runner, VmConfig, Watch};

struct Built {
    dir: PathBuf,
    /// The disk extracted from disk-img.tar.zst.
    disk: PathBuf,
    /// Byte offset of the hostlvm partition.
    pv_offset: u64,
    /// The PV as the crate's reader sees it on the disk.
    pv: PhysicalVolume,
    root_hash: String,
    _lock: File,
}

static BUILT: OnceLock<Built> = OnceLock::new();

fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        for (tool, package) in [
            ("sfdisk", "fdisk"),
            ("e2fsck", "e2fsprogs"),
            ("veritysetup", "cryptsetup-bin"),
            ("mmdebstrap", "mmdebstrap"),
            ("mcopy", "mtools"),
            ("losetup", "mount"),
            ("lvm", "lvm2"),
            ("qemu-system-x86_64", "qemu-system-x86"),
        ] {
            require(tool, package);
        }
        let (dir, lock) = fresh_dir("build_hostos");
        let out = dir.join("out");
        let status = Command::new(env!("CARGO_BIN_EXE_icos"))
            .args(["build", "hostos", "--source"])
            .arg(source_root())
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "icos build hostos failed: {status}");
        let art = out.join("hostos");
        assert_artifacts(&art);
        let leftovers: Vec<_> = fs::read_dir(&out).unwrap().collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary folders left in {}",
            out.display()
        );

        let entries = icos_sparse_tar::extract(
            File::open(art.join("disk-img.tar.zst")).unwrap(),
            &dir,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        let disk = dir.join("disk.img");
        let layout = OsKind::HostOs.layout();
        assert_eq!(fs::metadata(&disk).unwrap().len(), layout.disk_size);
        let (pv_offset, _) = layout.byte_range("hostlvm").unwrap();
        let pv = icos_lvm::read_pv_file(&disk, pv_offset).unwrap();

        let tools = Tools::discover().unwrap();
        let (boot_off, _) = lv(&pv, pv_offset, "A_boot");
        let boot_args = String::from_utf8(
            icos_imagefs::read_file_from_ext4(&tools, &disk, boot_off, "/boot_args").unwrap(),
        )
        .unwrap();
        let root_hash = boot_args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root_hash="))
            .unwrap()
            .trim_end_matches('"')
            .to_owned();
        assert_eq!(root_hash.len(), 64, "{boot_args}");
        Built {
            dir,
            disk,
            pv_offset,
            pv,
            root_hash,
            _lock: lock,
        }
    })
}

/// Offset on the disk and length of LV `name`, from the PV's metadata.
fn lv(pv: &PhysicalVolume, pv_offset: u64, name: &str) -> (u64, u64) {
    let (offset, len) = pv.lv_byte_range(name).unwrap();
    (pv_offset + offset, len)
}

/// A read-only loop device over a byte range of a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, offset: u64, size: u64) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show", "--read-only", "-o"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(size.to_string())
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn disk_has_the_hostos_gpt() {
    let b = built();
    let dump = run_ok(Command::new("sfdisk").arg("--dump").arg(&b.disk));
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(
        dump.contains("label-id: 2B110BB7-CDEC-7D41-B97E-893EDCBE5428"),
        "{dump}"
    );
    let layout = OsKind::HostOs.layout();
    let lines: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
    assert_eq!(lines.len(), 3, "{dump}");
    for (line, p) in lines.iter().zip(&layout.partitions) {
        let uuid = p.uuid.hyphenated().to_string().to_uppercase();
        assert!(
            line.contains(&format!("start={:>12}", p.start))
                || line.contains(&format!("start={}", p.start)),
            "{line}"
        );
        assert!(
            line.contains(&format!("size={:>12}", p.size))
                || line.contains(&format!("size={}", p.size)),
            "{line}"
        );
        assert!(line.contains(&format!("uuid={uuid}")), "{line} vs {uuid}");
        assert!(line.contains(&format!("name=\"{}\"", p.name)), "{line}");
    }
}

#[test]
fn hostlvm_is_what_lvm_reports() {
    let b = built();
    let spec = VolumeGroupSpec::ic_hostos();
    // The reader sees IC's volume group.
    assert_eq!(b.pv.vg.name, "hostlvm");
    assert_eq!(b.pv.vg.uuid, spec.vg_uuid.as_str());
    assert_eq!(b.pv.label.pv_uuid, spec.pv_uuid);
    for want in &spec.volumes {
        assert_eq!(
            b.pv.lv_byte_range(&want.name).unwrap(),
            spec.volume_byte_range(&want.name).unwrap(),
            "{}",
            want.name
        );
    }
    // LVM's tools agree, on a loop device of the partition.
    let layout = OsKind::HostOs.layout();
    let (_, pv_len) = layout.byte_range("hostlvm").unwrap();
    let lo = Loop::attach(&b.disk, b.pv_offset, pv_len);
    let dev = lo.0.as_str();
    let config = format!(
        "devices {{ filter=[\"a|^{dev}$|\",\"r|.*|\"] use_devicesfile=0 }} \
         backup {{ backup=0 archive=0 }}"
    );
    let lvm = |args: &[&str]| {
        run_ok(
            Command::new("lvm")
                .arg(args[0])
                .args(["--config", &config])
                .args(&args[1..])
                .env("LVM_SUPPRESS_FD_WARNINGS", "1"),
        )
    };
    let vgs = lvm(&[
        "vgs",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "vg_name,vg_uuid,lv_count,vg_extent_count",
    ]);
    assert_eq!(
        vgs.trim(),
        format!("hostlvm|{}|8|{}", spec.vg_uuid, spec.pe_count()),
        "{vgs}"
    );
    let lvs = lvm(&[
        "lvs",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "lv_name,seg_pe_ranges",
    ]);
    let mut got: Vec<String> = lvs.lines().map(|l| l.trim().to_owned()).collect();
    got.sort();
    let mut want: Vec<String> = spec
        .volumes
        .iter()
        .map(|v| format!("{}|{dev}:{}-{}", v.name, v.start_extent, v.end_extent() - 1))
        .collect();
    want.sort();
    assert_eq!(got, want, "{lvs}");
    lvm(&["vgck", "hostlvm"]);
}

#[test]
fn volumes_hold_clean_filesystems() {
    let b = built();
    for (name, fs_len) in [
        ("A_root", Some(3u64 << 30)),
        ("A_boot", None),
        ("config", None),
    ] {
        let (offset, len) = lv(&b.pv, b.pv_offset, name);
        let lo = Loop::attach(&b.disk, offset, fs_len.unwrap_or(len));
        run_ok(Command::new("e2fsck").arg("-fn").arg(&lo.0));
    }
    let tools = Tools::discover().unwrap();
    let (boot_off, _) = lv(&b.pv, b.pv_offset, "A_boot");
    for f in ["/vmlinuz", "/initrd.img", "/version.txt"] {
        assert!(
            icos_imagefs::ext4_file_exists(&tools, &b.disk, boot_off, f).unwrap(),
            "{f}"
        );
    }
    let boot_args = String::from_utf8(
        icos_imagefs::read_file_from_ext4(&tools, &b.disk, boot_off, "/boot_args").unwrap(),
    )
    .unwrap();
    // Each slot's line names its root volume where the metadata puts it.
    for (slot, root) in [("A", "A_root"), ("B", "B_root")] {
        let (offset, len) = b.pv.lv_byte_range(root).unwrap();
        let line = boot_args
            .lines()
            .find(|l| l.starts_with(&format!("set BOOT_ARGS_{slot}=")))
            .unwrap_or_else(|| panic!("no BOOT_ARGS_{slot}: {boot_args}"));
        assert!(
            line.contains(&format!(":{}:{} ", offset / 512, len / 512)),
            "{line}"
        );
        assert!(line.contains(&format!("dfinity.system={slot}")), "{line}");
    }
    let (root_off, _) = lv(&b.pv, b.pv_offset, "A_root");
    let src = source_root().to_string_lossy().into_owned();
    for bin in [
        "/opt/ic/bin/icos",
        "/opt/ic/bin/icos-hostos-agent",
        "/opt/ic/bin/icos-guestos-vm",
        "/opt/ic/bin/icos-hostos-network",
        "/usr/bin/qemu-system-x86_64",
    ] {
        let data = icos_imagefs::read_file_from_ext4(&tools, &b.disk, root_off, bin).unwrap();
        assert_eq!(&data[..4], b"\x7fELF", "{bin}");
        if bin.starts_with("/opt/ic/") {
            assert!(
                !data.windows(src.len()).any(|w| w == src.as_bytes()),
                "{bin} contains the build path {src}"
            );
        }
    }
    for f in [
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/etc/systemd/system/icos-hostos-agent.service",
        "/etc/systemd/system/guestos.service",
        "/etc/systemd/system/icos-hostos-network.service",
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/opt/ic/share/version.txt",
    ] {
        assert!(
            icos_imagefs::ext4_file_exists(&tools, &b.disk, root_off, f).unwrap(),
            "{f}"
        );
    }
    // The B slot and the guestos volume are empty in the published image.
    for name in ["B_boot", "B_root", "guestos"] {
        let (offset, _) = lv(&b.pv, b.pv_offset, name);
        let mut head = vec![0u8; 1 << 16];
        let f = File::open(&b.disk).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, offset).unwrap();
        assert!(head.iter().all(|&x| x == 0), "{name} is not empty");
    }
    // The grub partition holds an A/stable grubenv.
    let layout = OsKind::HostOs.layout();
    let (grub_off, _) = layout.byte_range("grub").unwrap();
    let env = icos_imagefs::read_file_from_vfat(&tools, &b.disk, grub_off, "grubenv").unwrap();
    let env = icos_grubenv::parse(&env).unwrap();
    assert_eq!(env.get("boot_alternative"), Some("A"));
    assert_eq!(env.get("boot_cycle"), Some("stable"));
}

#[test]
fn verity_tree_verifies_and_update_image_matches() {
    let b = built();
    let (root_off, root_len) = lv(&b.pv, b.pv_offset, "A_root");
    let lo = Loop::attach(&b.disk, root_off, root_len);
    run_ok(
        Command::new("veritysetup")
            .arg("verify")
            .arg(&lo.0)
            .arg(&lo.0)
            .arg(&b.root_hash)
            .arg("--hash-offset=10603200512"),
    );
    let art = b.dir.join("out/hostos");
    let entries = icos_sparse_tar::list_file(&art.join("update-img.tar.zst")).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["VERSION.TXT", "boot.img", "root.img"]);
    let upd = b.dir.join("update");
    fs::create_dir_all(&upd).unwrap();
    icos_sparse_tar::extract(
        File::open(art.join("update-img.tar.zst")).unwrap(),
        &upd,
        &mut |_| {},
    )
    .unwrap();
    let same = Command::new("cmp")
        .arg(upd.join("root.img"))
        .arg(&lo.0)
        .status()
        .unwrap();
    assert!(same.success(), "update-img root.img differs from A_root");
    fs::remove_dir_all(&upd).unwrap();
    let sums = fs::read_to_string(art.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
}

#[test]
fn boots_to_the_success_marker() {
    let b = built();
    let probe = icos_qemu::probe_accel(&ProbeOptions::new(
        icos_qemu::DEFAULT_QEMU,
        b.dir.join("probe"),
    ))
    .unwrap();
    let mut vm = VmConfig::new(probe.accel, 2048, 2);
    vm.firmware = Firmware::Uefi(
        Ovmf::find()
            .unwrap()
            .prepare(b.dir.join("hostos.vars.fd"))
            .unwrap(),
    );
    vm.disks.push(Disk::virtio(&b.disk).with_boot_index(1));
    let log = b.dir.join("hostos.serial.log");
    vm.serial = Some(Console::file(&log));
    let watch = Watch::new(Duration::from_secs(600))
        .success("HOSTOS BOOT SUCCESS")
        .failure("HOSTOS BOOT FAILURE");
    let outcome = Runner::default()
        .reaping()
        .run(&vm, &watch, |_| {})
        .unwrap();
    let serial = fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "hostos boot: {:.1} s ({})",
        outcome.elapsed().as_secs_f64(),
        probe.reason
    );
    let Outcome::Success { line, .. } = &outcome else {
        panic!("no success marker: {outcome:?}\n{serial}");
    };
    assert!(line.contains("dfinity.system=A"), "{line}");
    assert!(line.contains("root=/dev/mapper/vroot"), "{line}");
    // LVM in the booted system activated the whole volume group (the root
    // volume the initramfs mapped included) and the config volume is mounted.
    assert!(line.contains("config=/dev/mapper/hostlvm-config"), "{line}");
    assert!(line.contains("hostlvm-guestos"), "{line}");
    assert!(line.contains("failed_units=[]"), "{line}");
    // Without a config on the config volume, the GuestOS VM stays off.
    assert!(line.contains("runner_rss_kib=none"), "{line}");
    assert!(
        serial.contains("initramfs: hostlvm PV /dev/vda3"),
        "{serial}"
    );
    assert!(
        serial.contains("GRUB: booting slot A from lvm/hostlvm-A_boot"),
        "{serial}"
    );
}
