//! The disk work around the image writes, done with the system's tools
//! through a [`Runner`]: wiping the drives, growing the HostOS partition
//! and volume group, striping `guestos` over every drive, and the EFI
//! boot entry.
//!
//! The partition table is edited with `sfdisk` (moving the backup GPT to
//! the end of the drive, then growing partition 3 to the end) and the
//! kernel told with `partx -u`, which resizes a partition even while LVM
//! holds it; a GPT rewritten from here would still need `partx` to reach
//! the kernel, so one tool does both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::InstallPlan;
use crate::runner::{Cmd, CommandError, Runner};

/// The HostOS volume group.
pub const VG: &str = "hostlvm";
/// The HostOS partition holding the volume group.
pub const HOSTOS_LVM_PARTITION: u32 = 3;
/// The EFI boot entry's label.
pub const EFI_LABEL: &str = "IC-OS";
/// The EFI loader on the system drive's first partition.
pub const EFI_LOADER: &str = r"\EFI\BOOT\BOOTX64.EFI";

/// The path of partition `n` of `disk`: `/dev/sda` → `/dev/sda3`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p3` (a `p` when the name ends in a digit).
pub fn partition_path(disk: &Path, n: u32) -> PathBuf {
    let name = disk.as_os_str().to_string_lossy();
    let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("{name}{sep}{n}"))
}

/// The device of the plan's drive called `name`.
pub fn device_path(dev_dir: &Path, name: &str) -> PathBuf {
    dev_dir.join(name)
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Whether `vgs` lists the volume group `vg` (`vgs --noheadings -o vg_name`).
pub fn vgs_lists(vgs_output: &str, vg: &str) -> bool {
    vgs_output.lines().any(|l| l.trim() == vg)
}

/// The physical volumes of `pvs --noheadings -o pv_name` that are on one of
/// `drives` (the drive itself or one of its partitions).
pub fn pvs_on_drives(pvs_output: &str, drives: &[PathBuf]) -> Vec<String> {
    pvs_output
        .lines()
        .map(str::trim)
        .filter(|pv| !pv.is_empty())
        .filter(|pv| {
            drives.iter().any(|d| {
                let d = d.display().to_string();
                *pv == d
                    || pv
                        .strip_prefix(&d)
                        .is_some_and(|rest| rest.trim_start_matches('p').parse::<u32>().is_ok())
            })
        })
        .map(str::to_string)
        .collect()
}

/// setup-disk: deactivates and removes an old `hostlvm`, removes the old
/// LVM labels on the planned drives, wipes every planned drive's
/// signatures (`wipefs --all`), then makes each extra drive a physical
/// volume. Returns what it did, one line each.
pub fn setup_disks(
    runner: &mut dyn Runner,
    plan: &InstallPlan,
    dev_dir: &Path,
) -> Result<Vec<String>, CommandError> {
    let mut done = Vec::new();
    let drives: Vec<PathBuf> = plan
        .wiped()
        .map(|d| device_path(dev_dir, &d.name))
        .collect();
    let vgs = runner.run(&Cmd::new("vgs").args(["--noheadings", "-o", "vg_name"]))?;
    if vgs_lists(&vgs.stdout, VG) {
        runner.run(&Cmd::new("vgchange").args(["-an", VG]))?;
        runner.run(&Cmd::new("vgremove").args(["--force", "--yes", VG]))?;
        done.push(format!("removed the old volume group {VG}"));
    }
    let pvs = runner.run(&Cmd::new("pvs").args(["--noheadings", "-o", "pv_name"]))?;
    for pv in pvs_on_drives(&pvs.stdout, &drives) {
        runner.run(&Cmd::new("pvremove").args(["--force", "--force", "--yes", pv.as_str()]))?;
        done.push(format!("removed the old LVM label of {pv}"));
    }
    for d in &drives {
        runner.run(
            &Cmd::new("wipefs")
                .args(["--all", "--force"])
                .arg(path_arg(d)),
        )?;
        done.push(format!("wiped {}", d.display()));
    }
    for d in plan.extra_pvs.iter().map(|d| device_path(dev_dir, &d.name)) {
        runner.run(
            &Cmd::new("pvcreate")
                .args(["--force", "--yes"])
                .arg(path_arg(&d)),
        )?;
        done.push(format!("made {} a physical volume", d.display()));
    }
    Ok(done)
}

/// Waits up to `limit` for `path` to exist (udev creates device nodes
/// after the kernel learns of them).
pub fn wait_for_path(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After HostOS is written to `system`: moves the backup GPT to the end of
/// the drive, grows partition 3 to the end, tells the kernel, grows the
/// physical volume, adds the extra drives to `hostlvm`, extends `guestos`
/// over all free space striped once per physical volume (as IC does; if
/// LVM refuses the striped extension, a linear one is made and a warning
/// returned), and activates the volume group. Returns notes and warnings.
pub fn grow_hostos(
    runner: &mut dyn Runner,
    system: &Path,
    extra_pvs: &[PathBuf],
) -> Result<(Vec<String>, Vec<String>), CommandError> {
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let dev = path_arg(system);
    runner.run(
        &Cmd::new("sfdisk")
            .args(["--relocate", "gpt-bak-std"])
            .arg(&dev),
    )?;
    runner.run(
        &Cmd::new("sfdisk")
            .args([
                "--no-reread",
                "--wipe",
                "never",
                "--wipe-partitions",
                "never",
                "-N",
            ])
            .arg(HOSTOS_LVM_PARTITION.to_string())
            .arg(&dev)
            .stdin(", +\n"),
    )?;
    runner.run(&Cmd::new("partx").args(["-u", dev.as_str()]))?;
    // Best effort: the partition's node appears through udev.
    let _ = runner.output(&Cmd::new("udevadm").arg("settle"));
    let part = partition_path(system, HOSTOS_LVM_PARTITION);
    if !wait_for_path(&part, Duration::from_secs(10)) {
        warnings.push(format!(
            "{} did not appear within 10 s; trying anyway",
            part.display()
        ));
    }
    notes.push(format!(
        "partition {HOSTOS_LVM_PARTITION} of {dev} grown to the end of the drive"
    ));
    runner.run(&Cmd::new("pvresize").arg(path_arg(&part)))?;
    if !extra_pvs.is_empty() {
        runner.run(
            &Cmd::new("vgextend")
                .arg(VG)
                .args(extra_pvs.iter().map(|p| path_arg(p))),
        )?;
        notes.push(format!(
            "{VG} extended over {}",
            extra_pvs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let stripes = (1 + extra_pvs.len()).to_string();
    let lv = format!("{VG}/guestos");
    let striped = Cmd::new("lvextend")
        .args([
            "-i",
            stripes.as_str(),
            "--type",
            "striped",
            "-l",
            "+100%FREE",
        ])
        .arg(&lv);
    match runner.run(&striped) {
        Ok(_) => notes.push(format!(
            "{lv} extended over all free space, {stripes} stripe(s)"
        )),
        Err(e) => {
            warnings.push(format!(
                "the striped extension of {lv} failed ({e}); extending it linearly instead"
            ));
            runner.run(
                &Cmd::new("lvextend")
                    .args(["-i", "1", "-l", "+100%FREE"])
                    .arg(&lv),
            )?;
            notes.push(format!("{lv} extended over all free space, linear"));
        }
    }
    runner.run(&Cmd::new("vgchange").args(["-ay", VG]))?;
    Ok((notes, warnings))
}

/// An entry of `efibootmgr`'s listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The four hex digits (`0003`).
    pub num: String,
    /// The label.
    pub label: String,
}

/// The entries and `BootOrder` of `efibootmgr` output.
pub fn parse_efibootmgr(text: &str) -> (Vec<BootEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut order = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("BootOrder:") {
            order = rest
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            continue;
        }
        let Some(rest) = line.strip_prefix("Boot") else {
            continue;
        };
        let num: String = rest.chars().take(4).collect();
        if num.len() != 4 || !num.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let label = rest[4..].trim_start_matches('*').trim_start();
        // The label ends at a tab (before the device path) or at a device
        // path in the form `HD(`/`PciRoot(`... printed after spaces.
        let label = label.split('\t').next().unwrap_or(label).trim_end();
        entries.push(BootEntry {
            num,
            label: label.to_string(),
        });
    }
    (entries, order)
}

/// The boot order with `first` in front and the rest in their order.
pub fn boot_order_with_first(order: &[String], first: &str) -> Vec<String> {
    std::iter::once(first.to_string())
        .chain(order.iter().filter(|n| *n != first).cloned())
        .collect()
}

/// Replaces every `IC-OS` boot entry with one for [`EFI_LOADER`] on
/// partition 1 of `system` and puts it first in `BootOrder`. Skipped, with
/// a warning, when `efi_dir` (`/sys/firmware/efi`) does not exist (a
/// machine booted without UEFI).
pub fn set_boot_entry(
    runner: &mut dyn Runner,
    system: &Path,
    efi_dir: &Path,
) -> Result<Result<String, String>, CommandError> {
    if !efi_dir.exists() {
        return Ok(Err(format!(
            "{} does not exist (not booted through UEFI): no EFI boot entry was made",
            efi_dir.display()
        )));
    }
    let listing = runner.run(&Cmd::new("efibootmgr"))?;
    let (entries, _) = parse_efibootmgr(&listing.stdout);
    for e in entries.iter().filter(|e| e.label == EFI_LABEL) {
        runner.run(&Cmd::new("efibootmgr").args([
            "--quiet",
            "--delete-bootnum",
            "--bootnum",
            e.num.as_str(),
        ]))?;
    }
    let created = runner.run(
        &Cmd::new("efibootmgr")
            .args(["--create", "--disk"])
            .arg(path_arg(system))
            .args(["--part", "1", "--label", EFI_LABEL, "--loader", EFI_LOADER]),
    )?;
    let (after, order) = parse_efibootmgr(&created.stdout);
    let old: Vec<&str> = entries.iter().map(|e| e.num.as_str()).collect();
    let Some(new) = after
        .iter()
        .find(|e| e.label == EFI_LABEL && !old.contains(&e.num.as_str()))
        .or_else(|| after.iter().find(|e| e.label == EFI_LABEL))
    else {
        return Ok(Err(
            "efibootmgr --create listed no IC-OS entry afterwards".to_string()
        ));
    };
    let order = boot_order_with_first(&order, &new.num);
    runner.run(
        &Cmd::new("efibootmgr")
            .args(["--quiet", "--bootorder"])
            .arg(order.join(",")),
    )?;
    Ok(Ok(format!(
        "EFI boot entry Boot{} {EFI_LABEL} -> {EFI_LOADER} on {} partition 1, first in BootOrder",
        new.num,
        system.display()
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::hardware::Drive;
    use crate::runner::fake::FakeRunner;

    fn drive(name: &str) -> Drive {
        Drive {
            name: name.into(),
            size: 2 << 40,
            kind: "disk".into(),
        }
    }

    #[test]
    fn partition_paths() {
        assert_eq!(
            partition_path(Path::new("/dev/sda"), 3),
            Path::new("/dev/sda3")
        );
        assert_eq!(
            partition_path(Path::new("/dev/vdb"), 1),
            Path::new("/dev/vdb1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 3),
            Path::new("/dev/nvme0n1p3")
        );
    }

    #[test]
    fn old_volumes_are_found_on_the_planned_drives_only() {
        assert!(vgs_lists("  hostlvm\n  store\n", "hostlvm"));
        assert!(!vgs_lists("  hostlvm2\n", "hostlvm"));
        let drives = [PathBuf::from("/dev/vdb"), PathBuf::from("/dev/nvme0n1")];
        assert_eq!(
            pvs_on_drives(
                "  /dev/vdb3\n  /dev/vdc\n  /dev/nvme0n1p3\n  /dev/vdb\n  /dev/vdbx\n",
                &drives
            ),
            ["/dev/vdb3", "/dev/nvme0n1p3", "/dev/vdb"]
        );
    }

    #[test]
    fn setup_disk_wipes_the_planned_drives_and_makes_the_extra_pvs() {
        let plan = InstallPlan {
            system_drive: drive("vdb"),
            extra_pvs: vec![drive("vdc")],
            untouched: vec![drive("vda")],
        };
        let mut r = FakeRunner::default();
        r.answer("vgs", 0, "  hostlvm\n", "");
        r.answer("pvs", 0, "  /dev/vdb3\n  /dev/vda1\n", "");
        let done = setup_disks(&mut r, &plan, Path::new("/dev")).unwrap();
        assert_eq!(
            r.log,
            [
                "vgs --noheadings -o vg_name",
                "vgchange -an hostlvm",
                "vgremove --force --yes hostlvm",
                "pvs --noheadings -o pv_name",
                "pvremove --force --force --yes /dev/vdb3",
                "wipefs --all --force /dev/vdb",
                "wipefs --all --force /dev/vdc",
                "pvcreate --force --yes /dev/vdc",
            ]
        );
        assert_eq!(done.len(), 5);

        let mut r = FakeRunner::default();
        r.answer(
            "wipefs",
            1,
            "",
            "wipefs: error: /dev/vdb: probing initialization failed",
        );
        let err = setup_disks(&mut r, &plan, Path::new("/dev")).unwrap_err();
        assert!(
            err.to_string()
                .contains("`wipefs --all --force /dev/vdb` failed"),
            "{err}"
        );
        assert!(
            !r.log.iter().any(|l| l.starts_with("pvcreate")),
            "stops at the first failure"
        );
    }

    #[test]
    fn growing_hostos_stripes_guestos_and_falls_back_to_linear() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("vdb");
        std::fs::write(dir.path().join("vdb3"), "").unwrap();
        let extra = [dir.path().join("vdc")];
        let mut r = FakeRunner::default();
        let (notes, warnings) = grow_hostos(&mut r, &system, &extra).unwrap();
        let s = system.display();
        let lines: Vec<String> = vec![
            format!("sfdisk --relocate gpt-bak-std {s}"),
            format!("sfdisk --no-reread --wipe never --wipe-partitions never -N 3 {s} <<< ', +'"),
            format!("partx -u {s}"),
            "udevadm settle".into(),
            format!("pvresize {s}3"),
            format!("vgextend hostlvm {}", extra[0].display()),
            "lvextend -i 2 --type striped -l +100%FREE hostlvm/guestos".into(),
            "vgchange -ay hostlvm".into(),
        ];
        assert_eq!(r.log, lines);
        assert!(warnings.is_empty());
        assert!(notes.iter().any(|n| n.contains("2 stripe(s)")));

        let mut r = FakeRunner::default();
        r.answer(
            "lvextend -i 2",
            5,
            "",
            "Insufficient suitable allocatable extents",
        );
        let (notes, warnings) = grow_hostos(&mut r, &system, &extra).unwrap();
        assert!(
            r.log
                .contains(&"lvextend -i 1 -l +100%FREE hostlvm/guestos".to_string())
        );
        assert!(warnings[0].contains("Insufficient suitable allocatable extents"));
        assert!(notes.iter().any(|n| n.ends_with("linear")));
    }

    const LISTING: &str = "BootCurrent: 0001\nTimeout: 0 seconds\nBootOrder: 0003,0001,0000\n\
        Boot0000* UiApp\tFvVol(7cb8bdc9)/FvFile(462caa21)\n\
        Boot0001* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1,0x1)\n\
        Boot0003* IC-OS\tHD(1,GPT,f46600e3,0x800,0x32000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n";

    #[test]
    fn efibootmgr_output_is_read() {
        let (entries, order) = parse_efibootmgr(LISTING);
        assert_eq!(order, ["0003", "0001", "0000"]);
        let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["UiApp", "UEFI QEMU HARDDISK QM00001", "IC-OS"]);
        assert_eq!(
            boot_order_with_first(&order, "0004"),
            ["0004", "0003", "0001", "0000"]
        );
        assert_eq!(
            boot_order_with_first(&order, "0001"),
            ["0001", "0003", "0000"]
        );
    }

    #[test]
    fn the_boot_entry_is_replaced_and_put_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = FakeRunner::default();
        let skipped =
            set_boot_entry(&mut r, Path::new("/dev/vdb"), &dir.path().join("efi")).unwrap();
        assert!(skipped.unwrap_err().contains("not booted through UEFI"));
        assert!(r.log.is_empty());

        let mut r = FakeRunner::default();
        r.answer(
            "efibootmgr --create",
            0,
            &format!(
                "BootOrder: 0004,0001,0000\n{}Boot0004* IC-OS\tHD(1,GPT)\n",
                LISTING
                    .lines()
                    .filter(|l| l.starts_with("Boot0") && !l.contains("IC-OS"))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            ),
            "",
        );
        r.answer("efibootmgr --quiet", 0, "", "");
        r.answer("efibootmgr", 0, LISTING, "");
        let done = set_boot_entry(&mut r, Path::new("/dev/vdb"), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            r.log,
            [
                "efibootmgr",
                "efibootmgr --quiet --delete-bootnum --bootnum 0003",
                r"efibootmgr --create --disk /dev/vdb --part 1 --label IC-OS --loader '\EFI\BOOT\BOOTX64.EFI'",
                "efibootmgr --quiet --bootorder 0004,0001,0000",
            ]
        );
        assert!(done.contains("Boot0004"), "{done}");
    }
}
