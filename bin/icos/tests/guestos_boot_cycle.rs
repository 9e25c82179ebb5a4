//! The A/B boot cycle of a built GuestOS, in QEMU (OVMF; TCG unless the KVM
//! probe passes), driven by GRUB's own `grub.cfg` and `grubenv` on the disk:
//!
//! - install the build's `update-img.tar.zst` into slot B with
//!   `icos slots install`; the next boot runs B on trial (`first_boot` →
//!   `failsafe_check`), with `dfinity.system=B` and B's root partition;
//! - booting again without a confirm rolls back to A (`stable`);
//! - install again, boot B, `icos slots confirm` between the boots, boot
//!   again: still B, `stable`;
//! - a `--env prod` build boots to the marker too.
//!
//! Each boot uses `icos run guestos --in-place`, so GRUB's grubenv updates
//! stay on the disk file between boots. Builds go to
//! `$CARGO_TARGET_TMPDIR/guestos_boot_cycle/` and reuse the icos stage cache,
//! so only changed stages are rebuilt. Builds and VMs run one at a time.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use icos_layout::OsKind;

/// One build, then one VM, at a time.
static BUILD: Mutex<()> = Mutex::new(());
static VM: Mutex<()> = Mutex::new(());

/// Seconds a boot may take on a busy machine under TCG.
const BOOT_TIMEOUT: &str = "300";

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("guestos_boot_cycle")
        .join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds GuestOS for `env` into `dir/out/guestos/` and returns that folder.
fn build(env: &str, dir: &Path) -> PathBuf {
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let out = dir.join("out");
    let status = icos()
        .args(["build", "guestos", "--env", env, "--source"])
        .arg(source_root())
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "icos build guestos --env {env}: {status}");
    eprintln!(
        "[timing] build --env {env}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out.join("guestos")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&run_ok(cmd)).unwrap()
}

fn show(disk: &Path) -> serde_json::Value {
    json(icos().args(["slots", "show", "--json", "--disk"]).arg(disk))
}

fn state(disk: &Path) -> (String, String) {
    let v = show(disk);
    (
        v["boot_alternative"].as_str().unwrap().to_owned(),
        v["boot_cycle"].as_str().unwrap().to_owned(),
    )
}

fn install(disk: &Path, update: &Path) -> serde_json::Value {
    let started = Instant::now();
    let v = json(
        icos()
            .args(["slots", "install", "--json", "--disk"])
            .arg(disk)
            .arg("--update")
            .arg(update),
    );
    eprintln!(
        "[timing] slots install: {:.1} s (write {} s, verify {} s)",
        started.elapsed().as_secs_f64(),
        v["write_s"],
        v["verify_s"]
    );
    v
}

/// A boot that reached the marker: its marker line and console.
struct Boot {
    marker: String,
    console: String,
}

/// Boots `image` (in place when it is a raw disk) to the boot marker.
fn boot(image: &Path, in_place: bool, what: &str) -> Boot {
    let _one = VM.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut cmd = icos();
    cmd.args([
        "run",
        "guestos",
        "--json",
        "--timeout",
        BOOT_TIMEOUT,
        "--image",
    ])
    .arg(image);
    if in_place {
        cmd.arg("--in-place");
    }
    let out = cmd.output().unwrap();
    let console = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON report ({e}):\n{console}"));
    assert!(
        out.status.success() && report["status"] == "success",
        "{what}: {report:#}\n{console}"
    );
    eprintln!(
        "[timing] boot {what}: {:.1} s ({} s to the marker, {})",
        started.elapsed().as_secs_f64(),
        report["elapsed_s"],
        report["accel"]
    );
    Boot {
        marker: report["marker_line"].as_str().unwrap().to_owned(),
        console,
    }
}

impl Boot {
    /// Checks that this boot ran `slot` from its root partition, and what
    /// GRUB found and left in grubenv.
    fn assert_slot(&self, slot: &str, grub_before: &str, grub_after: &str) {
        let layout = OsKind::GuestOs.layout();
        let root = layout.partition(&format!("{slot}_root")).unwrap();
        let number = layout.partition_number(&root.name).unwrap();
        let uuid = root.uuid.hyphenated().to_string();
        let c = &self.console;
        assert!(
            self.marker.contains(&format!("dfinity.system={slot} ")),
            "marker: {}",
            self.marker
        );
        for want in [
            format!("GRUB: grubenv before: {grub_before}"),
            format!("GRUB: grubenv after:  {grub_after}"),
            format!("GRUB: booting slot {slot} from"),
            format!("initramfs: system={slot} root=PARTUUID={uuid}"),
            format!("initramfs: root device /dev/vda{number}"),
        ] {
            assert!(c.contains(&want), "console lacks {want:?}:\n{c}");
        }
    }
}

#[test]
fn upgrade_trial_rollback_and_confirm() {
    let dir = work_dir("dev");
    let art = build("dev", &dir);
    let update = art.join("update-img.tar.zst");
    icos_sparse_tar::extract(
        File::open(art.join("disk-img.tar.zst")).unwrap(),
        &dir,
        &mut |_| {},
    )
    .unwrap();
    let disk = dir.join("disk.img");

    // boot_args on A_boot carries a line per slot, each with its own root.
    let layout = OsKind::GuestOs.layout();
    let tools = icos_imagefs::Tools::discover().unwrap();
    let (boot_off, _) = layout.byte_range("A_boot").unwrap();
    let args = String::from_utf8(
        icos_imagefs::read_file_from_ext4(&tools, &disk, boot_off, "/boot_args").unwrap(),
    )
    .unwrap();
    for slot in ["A", "B"] {
        let uuid = layout
            .partition(&format!("{slot}_root"))
            .unwrap()
            .uuid
            .hyphenated()
            .to_string();
        let line = args
            .lines()
            .find(|l| l.starts_with(&format!("BOOT_ARGS_{slot}=\"")))
            .unwrap_or_else(|| panic!("no BOOT_ARGS_{slot} in boot_args:\n{args}"));
        assert!(
            line.contains(&format!("root=PARTUUID={uuid} "))
                && line.contains(&format!(" dfinity.system={slot} "))
                && line.ends_with('"'),
            "{line}"
        );
    }
    assert!(!args.contains("\nBOOT_ARGS="), "{args}");

    // a. Install into B; GRUB tries B once.
    assert_eq!(state(&disk), ("A".into(), "stable".into()));
    let v = install(&disk, &update);
    assert_eq!(v["slot"], "B");
    assert_eq!(v["after"], "boot_alternative=B boot_cycle=first_boot");
    let b = boot(&disk, true, "a (trial of B)");
    b.assert_slot(
        "B",
        "boot_alternative=B boot_cycle=first_boot",
        "boot_alternative=B boot_cycle=failsafe_check",
    );
    assert_eq!(state(&disk), ("B".into(), "failsafe_check".into()));

    // b. No confirm: the next boot rolls back to A, stable.
    let b = boot(&disk, true, "b (rollback to A)");
    b.assert_slot(
        "A",
        "boot_alternative=B boot_cycle=failsafe_check",
        "boot_alternative=A boot_cycle=stable",
    );
    assert_eq!(state(&disk), ("A".into(), "stable".into()));

    // c. Install again, boot B, confirm between the boots, boot again: B.
    let v = install(&disk, &update);
    assert_eq!(v["slot"], "B");
    let b = boot(&disk, true, "c1 (trial of B)");
    b.assert_slot(
        "B",
        "boot_alternative=B boot_cycle=first_boot",
        "boot_alternative=B boot_cycle=failsafe_check",
    );
    let v = json(
        icos()
            .args(["slots", "confirm", "--json", "--disk"])
            .arg(&disk),
    );
    assert_eq!(v["after"], "boot_alternative=B boot_cycle=stable");
    let b = boot(&disk, true, "c2 (confirmed B)");
    b.assert_slot(
        "B",
        "boot_alternative=B boot_cycle=stable",
        "boot_alternative=B boot_cycle=stable",
    );
    let v = show(&disk);
    assert_eq!(v["boot_cycle"], "stable");
    assert_eq!(v["running_slot"], "B");
    assert_eq!(v["upgrade_target"], "A");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prod_image_boots_to_the_marker() {
    let dir = work_dir("prod");
    let art = build("prod", &dir);
    let b = boot(&art.join("disk-img.tar.zst"), false, "d (prod)");
    b.assert_slot(
        "A",
        "boot_alternative=A boot_cycle=stable",
        "boot_alternative=A boot_cycle=stable",
    );
    fs::remove_dir_all(&dir).unwrap();
}
