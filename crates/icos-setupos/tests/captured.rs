//! `check_captured` over the sample captures in `tests/data/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use icos_setupos::{CheckName, check_captured};

fn data(machine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(machine)
}

/// Copies a capture so that a test can change it.
fn copy_of(machine: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data(machine)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn gen2_server_passes_every_check_and_plans_the_install() {
    let run = check_captured(&data("gen2-7313"), 0).unwrap();
    assert!(run.passed(), "{}", run.report);
    let order: Vec<CheckName> = run.report.checks.iter().map(|c| c.check).collect();
    assert_eq!(
        order,
        [
            CheckName::Age,
            CheckName::Hardware,
            CheckName::Network,
            CheckName::Time
        ]
    );
    assert!(run.reasons().is_empty());
    let plan = run.plan.unwrap().unwrap();
    assert_eq!(plan.system_drive.name, "nvme0n1");
    assert_eq!(plan.guestos_stripes(), 5);
    // The key is in config.json: no HSM warning.
    assert!(
        run.report
            .get(CheckName::Hardware)
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn gen1_server_fails_the_network_check_and_warns_about_age() {
    let run = check_captured(&data("gen1-7302"), 0).unwrap();
    assert!(!run.passed());
    let age = run.report.get(CheckName::Age).unwrap();
    assert!(age.warnings[0].contains("72 days old"), "{age}");
    assert!(run.report.get(CheckName::Hardware).unwrap().passed());
    let reasons = run.reasons();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("network: ")),
        "{reasons:?}"
    );
}

#[test]
fn qemu_vm_with_hardware_check_and_install_off() {
    let run = check_captured(&data("qemu-vm"), 0).unwrap();
    assert!(!run.switches.check_hardware);
    assert!(!run.switches.perform_installation);
    assert!(run.switches.reboot_after_installation);
    let hw = run.report.get(CheckName::Hardware).unwrap();
    assert!(hw.skipped && hw.passed());
    assert!(run.plan.is_none());
    let reasons = run.reasons();
    assert!(
        reasons.contains(
            &"time: the chrony service is 'inactive', not active: the clock cannot be synchronised"
                .to_string()
        ),
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.starts_with("network: "))
            .count(),
        3
    );
}

#[test]
fn hardware_check_on_for_the_vm_lists_its_shortfalls_and_no_plan() {
    let dir = copy_of("qemu-vm");
    std::fs::write(dir.path().join("cmdline"), "console=ttyS0\n").unwrap();
    let run = check_captured(dir.path(), 0).unwrap();
    let hw = run.report.get(CheckName::Hardware).unwrap();
    assert_eq!(hw.errors.len(), 6, "{hw}");
    // Memory came from /proc/meminfo: the capture has no lshw-memory.json.
    assert!(
        hw.facts
            .iter()
            .any(|f| f.ends_with("(from /proc/meminfo MemTotal)")),
        "{hw}"
    );
    let plan = run.plan.clone().unwrap();
    assert!(plan.unwrap_err().starts_with("no drive to install onto"));
    assert!(
        run.reasons()
            .last()
            .unwrap()
            .starts_with("install plan: no drive")
    );
}

#[test]
fn the_capture_time_decides_the_age_when_there_is_no_now_file() {
    let dir = copy_of("gen2-7313");
    std::fs::remove_file(dir.path().join("now")).unwrap();
    let commit = 1_761_091_200;
    let run = check_captured(dir.path(), commit + 50 * 86_400).unwrap();
    assert!(run.passed());
    assert_eq!(run.report.get(CheckName::Age).unwrap().warnings.len(), 1);
}

#[test]
fn every_unusable_file_is_listed() {
    let dir = copy_of("gen2-7313");
    for gone in ["lshw.json", "ping4", "chrony"] {
        std::fs::remove_file(dir.path().join(gone)).unwrap();
    }
    std::fs::write(dir.path().join("nproc"), "sixty-four\n").unwrap();
    std::fs::write(dir.path().join("lsblk.json"), "{\"blockdevices\": 3}").unwrap();
    std::fs::write(
        dir.path().join("cmdline"),
        "ic.setupos.check_hardware=perhaps",
    )
    .unwrap();
    let err = check_captured(dir.path(), 0).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 6, "{text}");
    for want in [
        "cmdline: ic.setupos.check_hardware: 'perhaps' is not a boolean",
        "lsblk.json: has no 'blockdevices' array",
        "lshw.json: missing (the CPU inventory)",
        "nproc: 'sixty-four' is not a thread count",
        "ping4: missing (IPv4 is configured: the IPv4 gateway ping)",
        "chrony: missing (the chrony service state)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(text.starts_with("6 captured files are unusable:"), "{text}");
}

#[test]
fn a_broken_config_json_is_named() {
    let dir = copy_of("gen2-7313");
    std::fs::write(dir.path().join("config.json"), "{\"config_version\": 1}").unwrap();
    let err = check_captured(dir.path(), 0).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].file.ends_with("config.json"), "{err}");
}
