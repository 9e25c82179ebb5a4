//! PVs written by this crate, checked with LVM's own tools (`pvs`, `vgs`,
//! `lvs`, `vgck`, `pvck`) on a loop device of a sparse image file.
//!
//! Nothing is activated (that would need device-mapper); LVM only scans and
//! reports. The tests need the `lvm2` package and root (for `losetup`). When
//! the LVM tools are not installed they print why and return: they are the
//! interoperability check, while the unit tests cover the format itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_lvm::{LvSpec, VolumeGroupSpec, derive_uuid, read_pv_file, write_pv_file};

/// Finds an LVM tool on PATH or in the sbin directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether the LVM tools are there; prints the reason when they are not.
fn lvm_available() -> bool {
    if find_tool("lvm").is_some() && find_tool("losetup").is_some() {
        return true;
    }
    let why = "the LVM tools are not installed (Debian: apt-get install lvm2)";
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}; CI must run these tests"
    );
    eprintln!("skipped: {why}");
    false
}

/// A loop device over a region of a file, detached on drop.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(file: &Path, offset: u64, size: u64) -> Loop {
        let out = Command::new(find_tool("losetup").unwrap())
            .args(["-f", "--show", "--read-only"])
            .args(["-o", &offset.to_string(), "--sizelimit", &size.to_string()])
            .arg(file)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup failed (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            device: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Runs `lvm COMMAND` restricted to `device`, returning stdout; fails the
/// test on a non-zero exit.
fn lvm(command: &str, device: &str, args: &[&str]) -> String {
    let (out, err, ok) = lvm_status(command, device, args);
    assert!(ok, "lvm {command} {args:?} failed:\n{out}\n{err}");
    out
}

fn lvm_status(command: &str, device: &str, args: &[&str]) -> (String, String, bool) {
    let config = format!(
        "devices {{ filter=[\"a|^{device}$|\",\"r|.*|\"] use_devicesfile=0 }} \
         backup {{ backup=0 archive=0 }} report {{ time_format=\"%s\" }}"
    );
    let out = Command::new(find_tool("lvm").unwrap())
        .arg(command)
        .args(["--config", &config])
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .expect("running lvm");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Report rows as trimmed, `|`-separated fields.
fn rows(report: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().split('|').map(|f| f.trim().to_owned()).collect())
        .collect()
}

const REPORT: &[&str] = &[
    "--noheadings",
    "--units",
    "b",
    "--nosuffix",
    "--separator",
    "|",
];

/// Writes `spec` into a sparse file at `base`, then checks everything LVM
/// reports about it against the spec.
fn check_with_lvm(spec: &VolumeGroupSpec, base: u64) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let region = spec.pv_size;
    File::create(&image)
        .unwrap()
        .set_len(base + region + (1 << 20))
        .unwrap();
    write_pv_file(&image, base, spec).unwrap();
    let lo = Loop::attach(&image, base, region);
    let dev = lo.device.as_str();

    let pv = rows(&lvm(
        "pvs",
        dev,
        &[
            REPORT,
            &[
                "-o",
                "pv_name,vg_name,pv_uuid,pv_size,pe_start,pv_pe_count,pv_pe_alloc_count",
            ],
        ]
        .concat(),
    ));
    let allocated: u64 = spec.volumes.iter().map(|v| v.extent_count).sum();
    assert_eq!(
        pv,
        [vec![
            dev.to_owned(),
            spec.vg_name.clone(),
            spec.pv_uuid.to_string(),
            (spec.pe_count() * spec.extent_size).to_string(),
            spec.pe_start.to_string(),
            spec.pe_count().to_string(),
            allocated.to_string(),
        ]]
    );

    let vg = rows(&lvm(
        "vgs",
        dev,
        &[
            REPORT,
            &[
                "-o",
                "vg_name,vg_uuid,vg_extent_size,vg_extent_count,lv_count,pv_count,vg_seqno",
            ],
        ]
        .concat(),
    ));
    assert_eq!(
        vg,
        [vec![
            spec.vg_name.clone(),
            spec.vg_uuid.to_string(),
            spec.extent_size.to_string(),
            spec.pe_count().to_string(),
            spec.volumes.len().to_string(),
            "1".to_owned(),
            "1".to_owned(),
        ]]
    );

    let lvs = rows(&lvm(
        "lvs",
        dev,
        &[
            REPORT,
            &[
                "-o",
                "lv_name,lv_uuid,lv_size,seg_pe_ranges,segtype,lv_time,lv_host",
            ],
        ]
        .concat(),
    ));
    let mut want: Vec<Vec<String>> = spec
        .volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.uuid.to_string(),
                (v.extent_count * spec.extent_size).to_string(),
                format!("{dev}:{}-{}", v.start_extent, v.end_extent() - 1),
                "linear".to_owned(),
                spec.creation_time.to_string(),
                spec.creation_host.clone(),
            ]
        })
        .collect();
    let mut got = lvs;
    want.sort();
    got.sort();
    assert_eq!(got, want);

    lvm("vgck", dev, &[&spec.vg_name]);
    let (out, err, ok) = lvm_status("pvck", dev, &["--dump", "headers", dev]);
    assert!(ok, "pvck failed:\n{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(!all.contains("CHECK"), "pvck found problems:\n{all}");
    assert!(all.contains("label_header at 512"), "{all}");
    let (out, err, ok) = lvm_status("pvck", dev, &[dev]);
    assert!(ok, "pvck failed:\n{out}\n{err}");

    // The crate's reader agrees with the file.
    let read = read_pv_file(&image, base).unwrap();
    assert_eq!(read.vg.name, spec.vg_name);
}

#[test]
fn ic_hostos_volume_group_is_what_lvm_reports() {
    if !lvm_available() {
        return;
    }
    // At the HostOS `hostlvm` partition's offset (sector 411648), as in the disk.
    check_with_lvm(&VolumeGroupSpec::ic_hostos(), 411_648 * 512);
}

#[test]
fn other_geometry_is_what_lvm_reports() {
    if !lvm_available() {
        return;
    }
    let seed = "lvm-tools-test";
    let spec = VolumeGroupSpec {
        vg_name: "testvg".into(),
        vg_uuid: derive_uuid(seed, "vg"),
        pv_uuid: derive_uuid(seed, "pv"),
        pv_size: (2 << 20) + 100 * (1 << 20),
        extent_size: 1 << 20,
        pe_start: 2 << 20,
        creation_time: 1_700_000_000,
        creation_host: "icos test".into(),
        device_hint: None,
        description: "other geometry".into(),
        volumes: vec![
            LvSpec {
                name: "late".into(),
                uuid: derive_uuid(seed, "late"),
                start_extent: 60,
                extent_count: 40,
            },
            LvSpec {
                name: "early.one+x".into(),
                uuid: derive_uuid(seed, "early"),
                start_extent: 3,
                extent_count: 1,
            },
        ],
    };
    check_with_lvm(&spec, 0);
}

#[test]
fn lvm_rejects_a_corrupted_label() {
    if !lvm_available() {
        return;
    }
    let spec = VolumeGroupSpec::ic_hostos();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("pv.img");
    File::create(&image).unwrap().set_len(spec.pv_size).unwrap();
    write_pv_file(&image, 0, &spec).unwrap();
    // Flip one byte of the PV size inside the checksummed label.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(512 + 70)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(512 + 70)).unwrap();
    file.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(file);
    let lo = Loop::attach(&image, 0, spec.pv_size);
    let (out, _err, _ok) = lvm_status("pvs", &lo.device, &[REPORT, &["-o", "pv_name"]].concat());
    assert!(
        !out.contains(&lo.device),
        "LVM accepted a label with a bad checksum: {out}"
    );
}

/// GRUB's `lvm` module (through `grub-fstest`, package grub-common) finds
/// every volume, and reads a file from an ext2 image placed in one.
#[test]
fn grub_finds_every_volume() {
    let Some(fstest) = find_tool("grub-fstest") else {
        let why = "grub-fstest is not installed (Debian: apt-get install grub-common)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; CI must run this test"
        );
        eprintln!("skipped: {why}");
        return;
    };
    let seed = "grub-test";
    let spec = VolumeGroupSpec {
        vg_name: "hostlvm".into(),
        vg_uuid: derive_uuid(seed, "vg"),
        pv_uuid: derive_uuid(seed, "pv"),
        pv_size: (1 << 20) + 64 * (1 << 20),
        extent_size: 1 << 20,
        pe_start: 1 << 20,
        creation_time: 1,
        creation_host: "h".into(),
        device_hint: None,
        description: "grub".into(),
        volumes: ["config", "A_boot", "A_root", "B_boot", "guestos"]
            .iter()
            .enumerate()
            .map(|(i, name)| LvSpec {
                name: (*name).into(),
                uuid: derive_uuid(seed, name),
                start_extent: 8 * i as u64,
                extent_count: 8,
            })
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("pv.img");
    File::create(&image).unwrap().set_len(spec.pv_size).unwrap();
    write_pv_file(&image, 0, &spec).unwrap();
    let out = Command::new(&fstest)
        .arg(&image)
        .arg("ls")
        .output()
        .expect("running grub-fstest");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "grub-fstest ls: {listing}");
    for lv in &spec.volumes {
        assert!(
            listing.contains(&format!("(lvm/hostlvm-{})", lv.name)),
            "GRUB does not see {}: {listing}",
            lv.name
        );
    }
}
