//! `icos build guestos`, end to end: build the image once per test run, check
//! the disk (`sfdisk --dump`), every ext4 partition (`e2fsck -fn`) and the
//! dm-verity tree (`veritysetup verify`), boot it under QEMU (OVMF; TCG unless
//! the KVM probe passes) with a CONFIG media to `GUESTOS BOOT SUCCESS`, and
//! boot a copy with one flipped byte in a file of A_root, which must fail
//! closed with the initramfs' `GUESTOS BOOT FAILURE: dm-verity ...` marker.
//!
//! The good boot's CONFIG media is tampered with: it carries an extra file
//! next to `ic-bootstrap.tar`, which early boot must ignore and name on the
//! console while the boot still succeeds. Every early-boot step must report
//! on the console, and the payload (the default `icos-testnet-replica`)
//! must be running when the marker is printed.
//!
//! The build goes to `$CARGO_TARGET_TMPDIR/build_guestos/` (replaced at the
//! start of each run, guarded by a `OnceLock` within the process and a file
//! lock across processes) and uses the normal icos cache, so the root file
//! system and unchanged stages are reused between runs. VMs run one at a
//! time.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{assert_artifacts, fresh_dir, require, source_root};
use icos_imagefs::Tools;
use icos_layout::OsKind;
use icos_qemu::{
    Console, Disk, Firmware, Outcome, Ovmf, ProbeOptions, Runner, VmConfig, Watch, probe_accel,
};

const PROBE_FILE: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

struct Built {
    dir: PathBuf,
    /// A CONFIG media (dev config, the examples' SSH keys and node operator
    /// key) with an extra file `evil.sh` next to `ic-bootstrap.tar`.
    media: PathBuf,
    /// The disk extracted from disk-img.tar.zst.
    disk: PathBuf,
    /// A copy of it for the good boot (which formats var, adds the store
    /// partition and writes the config partition).
    booted: PathBuf,
    /// A copy with one byte of PROBE_FILE flipped inside A_root.
    tampered: PathBuf,
    /// A_root's ext4 part (first 3 GiB) and the whole partition.
    root_part: PathBuf,
    boot_part: PathBuf,
    config_part: PathBuf,
    root_hash: String,
    _lock: File,
}

static BUILT: OnceLock<Built> = OnceLock::new();
static GOOD_BOOT: OnceLock<(Outcome, String)> = OnceLock::new();
static VM: Mutex<()> = Mutex::new(());

/// Copies `len` bytes at `offset` of `src` into a new sparse file.
fn extract_range(src: &Path, offset: u64, len: u64, dst: &Path) {
    let mut input = File::open(src).unwrap();
    input.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = File::create(dst).unwrap();
    out.set_len(len).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(buf.len() as u64)).unwrap();
        input.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(done)).unwrap();
            out.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// The CONFIG media of the good boot, with `evil.sh` added to the FAT
/// file system after it was made.
fn tampered_media(dir: &Path) -> PathBuf {
    let examples = source_root().join("examples");
    let (extras, _) = icos_config_media::Extras::load(&icos_config_media::ExtraPaths {
        node_operator_private_key: Some(examples.join("node_operator_private_key.pem")),
        ssh_authorized_keys_dir: Some(examples.join("ssh_authorized_keys")),
        ..icos_config_media::ExtraPaths::default()
    })
    .unwrap();
    let media = dir.join("config-media.img");
    icos_config_media::build_media(
        &icos_config_media::dev_guestos_config().unwrap(),
        &extras,
        &media,
    )
    .unwrap();
    let evil = dir.join("evil.sh");
    fs::write(&evil, "#!/bin/sh\necho pwned\n").unwrap();
    let st = Command::new("mcopy")
        .arg("-i")
        .arg(&media)
        .arg(&evil)
        .arg("::evil.sh")
        .status()
        .unwrap();
    assert!(st.success(), "mcopy evil.sh onto the media");
    media
}

fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        for (tool, package) in [
            ("sfdisk", "fdisk"),
            ("e2fsck", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("veritysetup", "cryptsetup-bin"),
            ("mmdebstrap", "mmdebstrap"),
            ("mcopy", "mtools"),
            ("mkfs.vfat", "dosfstools"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("cp", "coreutils"),
        ] {
            require(tool, package);
        }
        let (dir, lock) = fresh_dir("build_guestos");
        let out = dir.join("out");
        let status = Command::new(env!("CARGO_BIN_EXE_icos"))
            .args(["build", "guestos", "--env", "dev", "--source"])
            .arg(source_root())
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "icos build guestos failed: {status}");
        let art = out.join("guestos");
        assert_artifacts(&art);
        // Nothing but the output folder is left next to it.
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
        assert_eq!(fs::metadata(&disk).unwrap().len(), 50 << 30);

        let layout = OsKind::GuestOs.layout();
        let range = |name: &str| layout.byte_range(name).unwrap();
        let (root_off, _) = range("A_root");
        let root_part = dir.join("A_root.ext4");
        extract_range(&disk, root_off, 3 << 30, &root_part);
        let (boot_off, boot_len) = range("A_boot");
        let boot_part = dir.join("A_boot.img");
        extract_range(&disk, boot_off, boot_len, &boot_part);
        let (cfg_off, cfg_len) = range("config");
        let config_part = dir.join("config.img");
        extract_range(&disk, cfg_off, cfg_len, &config_part);

        let tools = Tools::discover().unwrap();
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

        // The tampered copy: one byte in logical block 10 of PROBE_FILE.
        let tampered = dir.join("tampered.img");
        let booted = dir.join("booted.img");
        for copy in [&tampered, &booted] {
            let st = Command::new("cp")
                .arg("--sparse=always")
                .arg(&disk)
                .arg(copy)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("bmap {PROBE_FILE} 10"))
            .arg(&root_part)
            .output()
            .unwrap();
        let pblk: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("debugfs bmap: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(pblk > 0);
        let at = root_off + pblk * 4096 + 123;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tampered)
            .unwrap();
        let mut byte = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut byte).unwrap();
        byte[0] ^= 0x01;
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&byte).unwrap();
        f.sync_all().unwrap();

        let media = tampered_media(&dir);

        Built {
            dir,
            media,
            disk,
            booted,
            tampered,
            root_part,
            boot_part,
            config_part,
            root_hash,
            _lock: lock,
        }
    })
}

#[test]
fn disk_has_the_guestos_gpt() {
    let b = built();
    let out = Command::new("sfdisk")
        .arg("--dump")
        .arg(&b.disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(
        dump.contains("label-id: 2B110BB7-CDEC-7D41-B97E-893EDCBE5428"),
        "{dump}"
    );
    let layout = OsKind::GuestOs.layout();
    let lines: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
    assert_eq!(lines.len(), layout.partitions.len(), "{dump}");
    for (line, p) in lines.iter().zip(&layout.partitions) {
        let uuid = p.uuid.hyphenated().to_string().to_uppercase();
        assert!(
            line.contains(&format!("start={:>12}", p.start))
                || line.contains(&format!("start={}", p.start)),
            "{line}"
        );
        assert!(line.contains(&format!("uuid={uuid}")), "{line} vs {uuid}");
        assert!(line.contains(&format!("name=\"{}\"", p.name)), "{line}");
    }
}

#[test]
fn filesystems_are_clean() {
    let b = built();
    for img in [&b.root_part, &b.boot_part, &b.config_part] {
        let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
        assert!(
            out.status.success(),
            "e2fsck -fn {}: {}{}",
            img.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tools = Tools::discover().unwrap();
    let layout = OsKind::GuestOs.layout();
    let (boot_off, _) = layout.byte_range("A_boot").unwrap();
    for f in ["/vmlinuz", "/initrd.img", "/version.txt"] {
        assert!(
            icos_imagefs::ext4_file_exists(&tools, &b.disk, boot_off, f).unwrap(),
            "{f}"
        );
    }
    let (root_off, _) = layout.byte_range("A_root").unwrap();
    // Our binaries, and the default payload (icos-testnet-replica).
    let src = source_root().to_string_lossy().into_owned();
    for bin in [
        "/opt/ic/bin/icos",
        "/opt/ic/bin/icos-guestos-init",
        "/opt/ic/bin/icos-vsock-guest",
        "/opt/ic/bin/replica",
    ] {
        let data = icos_imagefs::read_file_from_ext4(&tools, &b.disk, root_off, bin).unwrap();
        assert_eq!(&data[..4], b"\x7fELF", "{bin}");
        // The build path must not leak into our binaries.
        assert!(
            !data.windows(src.len()).any(|w| w == src.as_bytes()),
            "{bin} contains the build path {src}"
        );
    }
    // The grub partition holds grub.cfg and an A/stable grubenv.
    let (grub_off, _) = layout.byte_range("grub").unwrap();
    let env = icos_imagefs::read_file_from_vfat(&tools, &b.disk, grub_off, "grubenv").unwrap();
    assert_eq!(env.len(), 1024);
    let env = icos_grubenv::parse(&env).unwrap();
    assert_eq!(env.get("boot_alternative"), Some("A"));
    assert_eq!(env.get("boot_cycle"), Some("stable"));
    let (esp_off, _) = layout.byte_range("esp").unwrap();
    let efi = icos_imagefs::read_file_from_vfat(&tools, &b.disk, esp_off, "EFI/BOOT/BOOTX64.EFI")
        .unwrap();
    assert_eq!(&efi[..2], b"MZ");
}

#[test]
fn verity_tree_verifies_and_update_image_matches() {
    let b = built();
    let layout = OsKind::GuestOs.layout();
    let (root_off, root_len) = layout.byte_range("A_root").unwrap();
    let root_full = b.dir.join("A_root.full.img");
    extract_range(&b.disk, root_off, root_len, &root_full);
    let out = Command::new("veritysetup")
        .arg("verify")
        .arg(&root_full)
        .arg(&root_full)
        .arg(&b.root_hash)
        .arg("--hash-offset=10603200512")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "veritysetup verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The upgrade image holds exactly boot.img, root.img and VERSION.TXT,
    // and its root.img is the disk's A_root.
    let art = b.dir.join("out/guestos");
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
        .arg(&root_full)
        .status()
        .unwrap();
    assert!(
        same.success(),
        "update-img root.img differs from the disk's A_root"
    );
    fs::remove_file(&root_full).unwrap();
    // SHA256SUMS covers the other artifacts.
    let sums = fs::read_to_string(art.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
    assert_eq!(
        fs::read_to_string(art.join("VERSION.TXT")).unwrap(),
        fs::read_to_string(upd.join("VERSION.TXT")).unwrap()
    );
}

fn boot(disk: &Path, media: &Path, name: &str) -> (Outcome, String) {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let b = built();
    let probe = probe_accel(&ProbeOptions::new(
        icos_qemu::DEFAULT_QEMU,
        b.dir.join("probe"),
    ))
    .unwrap();
    let mut vm = VmConfig::new(probe.accel, 1024, 2);
    vm.firmware = Firmware::Uefi(
        Ovmf::find()
            .unwrap()
            .prepare(b.dir.join(format!("{name}.vars.fd")))
            .unwrap(),
    );
    vm.disks.push(Disk::virtio(disk).with_boot_index(1));
    vm.disks.push(
        Disk::usb_removable(media)
            .read_only()
            .with_serial("config")
            .with_boot_index(2),
    );
    let log = b.dir.join(format!("{name}.serial.log"));
    vm.serial = Some(Console::file(&log));
    let watch = Watch::guestos_boot().timeout(Duration::from_secs(300));
    let outcome = Runner::default()
        .reaping()
        .run(&vm, &watch, |_| {})
        .unwrap();
    eprintln!(
        "{name}: {:?} after {:.1} s ({})",
        outcome_kind(&outcome),
        outcome.elapsed().as_secs_f64(),
        probe.reason
    );
    let serial = fs::read_to_string(&log).unwrap_or_default();
    (outcome, serial)
}

fn outcome_kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success { .. } => "success",
        Outcome::Failure { .. } => "failure",
        Outcome::Timeout { .. } => "timeout",
        Outcome::Exited { .. } => "exited",
    }
}

fn good_boot() -> &'static (Outcome, String) {
    GOOD_BOOT.get_or_init(|| {
        let b = built();
        boot(&b.booted, &b.media, "good")
    })
}

#[test]
fn boots_to_the_success_marker() {
    let (outcome, serial) = good_boot();
    let Outcome::Success { line, .. } = outcome else {
        panic!("no success marker: {outcome:?}\n{serial}");
    };
    assert!(line.contains("dfinity.system=A"), "{line}");
    assert!(line.contains("root=/dev/mapper/vroot"), "{line}");
    assert!(line.contains("payload=active"), "{line}");
    assert!(line.contains("var=ext4"), "{line}");
    assert!(line.contains("configured=yes"), "{line}");
    assert!(line.contains("failed_units=[]"), "{line}");
    // Every early-boot step reported success before the marker.
    let marker_at = serial.find("GUESTOS BOOT SUCCESS").unwrap();
    for step in [
        "storage: ok: slot A; key made; var FormatOpenMake; store partition created, FormatOpenMake",
        "bootstrap: ok: applied (first boot)",
        "network: ok",
        "firewall: ok",
        "accounts: ok: keys admin=",
        "replica-config: ok",
        "ready: ok: payload answers",
    ] {
        let at = serial
            .find(&format!("GUESTOS STEP {step}"))
            .unwrap_or_else(|| panic!("no 'GUESTOS STEP {step}' on the console:\n{serial}"));
        assert!(at < marker_at, "{step} after the marker");
    }
}

#[test]
fn first_boot_encrypted_var_and_made_the_store() {
    let (outcome, serial) = good_boot();
    assert!(
        matches!(outcome, Outcome::Success { .. }),
        "{outcome:?}\n{serial}"
    );
    let b = built();
    let out = Command::new("sfdisk")
        .arg("--dump")
        .arg(&b.booted)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    let store = dump
        .lines()
        .find(|l| l.contains("name=\"store\""))
        .unwrap_or_else(|| panic!("no store partition:\n{dump}"));
    assert!(
        store.contains("uuid=231213C6-EC9E-11F0-B45F-B7BBEA44AAF0"),
        "{store}"
    );
    let start: u64 = store
        .split("start=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let layout = OsKind::GuestOs.layout();
    let (var_off, _) = layout.byte_range("A_var").unwrap();
    let mut f = File::open(&b.booted).unwrap();
    for (what, off) in [("A_var", var_off), ("store", start * 512)] {
        let mut magic = [0u8; 6];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut magic).unwrap();
        assert_eq!(&magic, b"LUKS\xba\xbe", "{what} is not LUKS");
    }
}

#[test]
fn extra_file_on_the_config_media_is_ignored_and_logged() {
    let (outcome, serial) = good_boot();
    assert!(
        matches!(outcome, Outcome::Success { .. }),
        "{outcome:?}\n{serial}"
    );
    let lower = serial.to_lowercase();
    assert!(
        lower.contains("guestos config media:evil.sh: ignored: not on the allow-list"),
        "{serial}"
    );
    assert!(serial.contains("files written, 1 ignored)"), "{serial}");
}

#[test]
fn tampered_root_fails_closed() {
    let b = built();
    let (outcome, serial) = boot(&b.tampered, &b.media, "tampered");
    let Outcome::Failure { line, .. } = &outcome else {
        panic!("expected the failure marker: {outcome:?}\n{serial}");
    };
    assert!(line.contains("GUESTOS BOOT FAILURE: dm-verity"), "{line}");
    assert!(line.contains(PROBE_FILE), "{line}");
    assert!(!serial.contains("GUESTOS BOOT SUCCESS"), "{serial}");
}

#[test]
fn a_trust_root_its_quorum_did_not_sign_is_refused_before_any_stage() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("root.json");
    fs::write(&junk, "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_icos"))
        .args(["build", "guestos", "--source"])
        .arg(source_root())
        .arg("--out")
        .arg(d.path().join("out"))
        .arg("--registry-root")
        .arg(&junk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("root.json")
            && err.contains("--registry-root")
            && err.contains("not a TUF root"),
        "{err}"
    );
    assert!(!d.path().join("out").exists(), "nothing is built");
}
