//! SetupOS refuses, and writes nothing: two boots of a dev SetupOS in QEMU
//! (`icos run setupos`, reboot after installation switched off to be
//! safe), each ending with the installer's failure banner:
//!
//! - **a bad IPv6 prefix**: `config.ini` edited on the stick by hand, as a
//!   node provider would, bypassing `icos setupos inject` (which refuses
//!   bad input by design): the file goes into the CONFIG partition with
//!   mtools (`mcopy -o -i IMAGE@@OFFSET`). The banner must name
//!   `ipv6_prefix`.
//! - **a machine below the hardware thresholds**: a valid config, the
//!   hardware check left on; a 2-vCPU, 5 GiB TCG machine is far below
//!   IC's. The banner must name the hardware rule (memory).
//!
//! The target disks are sparse 1100 GiB files; "untouched" is checked by
//! fingerprinting only what is allocated (`SEEK_DATA`/`SEEK_HOLE`: the
//! length, every data extent's place and a SHA-256 of its bytes) after
//! the run, against a blank disk of the same size: any write, even of
//! zeros, would show.
//!
//! Needs root and the tools of `scripts/prereqs.sh`; a missing tool is a
//! failure. Everything lives in `$CARGO_TARGET_TMPDIR/setupos_refusal/`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod setupos_vm;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fresh_dir, run_ok};
use icos_setupos_vm::{DEFAULT_DISK_SIZE, fingerprint};
use setupos_vm::{
    Nns, build_setupos, config_ini_text, icos, require_tools, run_setupos, stage_lines, targets,
    write_inputs,
};

/// A raw copy of the built stick with the test's deployment.json (and,
/// for `config_ini`, that config.ini) injected the regular way.
fn stick(image: &Path, dir: &Path, name: &str, deployment: &Path, config_ini: &Path) -> PathBuf {
    let staging = dir.join(format!("{name}-extract"));
    fs::create_dir_all(&staging).unwrap();
    let members = icos_sparse_tar::extract_file(image, &staging, &mut |_| {}).unwrap();
    assert!(members.iter().any(|m| m.name == "disk.img"));
    let raw = dir.join(format!("{name}.img"));
    fs::rename(staging.join("disk.img"), &raw).unwrap();
    fs::remove_dir_all(&staging).unwrap();
    run_ok(
        icos()
            .args(["setupos", "inject", "--image"])
            .arg(&raw)
            .arg("--config-ini")
            .arg(config_ini)
            .arg("--deployment-json")
            .arg(deployment),
    );
    raw
}

/// The fingerprint of a blank disk of the default size.
fn blank() -> icos_setupos_vm::Fingerprint {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("blank.img");
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(DEFAULT_DISK_SIZE)
        .unwrap();
    fingerprint(&path).unwrap()
}

/// Runs the stick, expects the failure banner naming `reason`, and checks
/// the target disks are untouched.
fn refuses(dir: &Path, name: &str, image: &Path, extra: &[&str], reason: &str) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--image".as_ref(),
        image.as_os_str(),
        "--reboot-after-installation".as_ref(),
        "false".as_ref(),
        "--timeout".as_ref(),
        "900".as_ref(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    let run = run_setupos(dir, name, &args);
    for (at, text) in stage_lines(&run.stderr) {
        eprintln!("{name}: [{at:7.1} s] {text}");
    }
    assert_eq!(
        run.status.code(),
        Some(1),
        "{name}: expected a refusal (exit 1):\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("INTERNET COMPUTER - SETUP - FAILED"),
        "{name}: no failure banner:\n{}",
        run.stderr
    );
    let reasons: Vec<&str> = run
        .stderr
        .lines()
        .skip_while(|l| *l != "The installer stopped because:")
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .collect();
    eprintln!("{name}: reasons: {reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.contains(reason)),
        "{name}: no reason naming '{reason}': {reasons:?}\n{}",
        run.stderr
    );
    assert!(
        stage_lines(&run.stderr)
            .iter()
            .any(|(_, t)| t.starts_with("failed during checks")),
        "{name}: the run did not fail in the checks:\n{}",
        run.stderr
    );
    eprintln!(
        "BENCH setupos_refusal case={name} seconds={:.1}",
        run.took.as_secs_f64()
    );

    // Untouched: nothing allocated, same length, same hash as a blank disk.
    let want = blank();
    let disks = targets(&run.work);
    assert_eq!(disks.len(), 2, "{disks:?}");
    for disk in &disks {
        let got = fingerprint(disk).unwrap();
        eprintln!(
            "{name}: {}: {} bytes, {} data extents, sha256 {}",
            disk.display(),
            got.len,
            got.extents,
            got.sha256
        );
        assert_eq!(got, want, "{name}: {} was written to", disk.display());
    }
    fs::remove_dir_all(&run.work).unwrap();
}

#[test]
fn setupos_refuses_bad_config_and_small_hardware_without_writing() {
    require_tools();
    let (dir, _lock) = fresh_dir("setupos_refusal");
    let (image, built) = build_setupos(&dir.join("out"));
    eprintln!("BENCH setupos_refusal build_s={:.1}", built.as_secs_f64());
    let nns = Nns::start(&dir);
    let inputs = write_inputs(&dir, &nns.url());

    // 1. A bad IPv6 prefix, written onto the stick by hand.
    let bad_prefix = stick(
        &image,
        &dir,
        "bad-prefix",
        &inputs.deployment_json,
        &inputs.config_ini,
    );
    let bad_ini = dir.join("bad-config.ini");
    let text = config_ini_text().replace(
        &format!("ipv6_prefix={}\n", setupos_vm::IPV6_PREFIX),
        "ipv6_prefix=2602:fb2b:110:10:zz\n",
    );
    assert!(text.contains(":zz\n"));
    fs::write(&bad_ini, text).unwrap();
    // Refused the regular way, by design.
    let refused = icos()
        .args(["setupos", "inject", "--image"])
        .arg(&bad_prefix)
        .arg("--config-ini")
        .arg(&bad_ini)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let table = icos_layout::read_gpt_image(&bad_prefix).unwrap();
    let config = table.partition("config").unwrap();
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i"])
            .arg(format!(
                "{}@@{}",
                bad_prefix.display(),
                config.start * icos_layout::SECTOR_SIZE
            ))
            .arg(&bad_ini)
            .arg("::/config.ini"),
    );
    refuses(
        &dir,
        "bad-prefix",
        &bad_prefix,
        &["--check-hardware", "false"],
        "ipv6_prefix",
    );
    fs::remove_file(&bad_prefix).unwrap();

    // 2. A valid config on a machine below the thresholds.
    let small = stick(
        &image,
        &dir,
        "small-machine",
        &inputs.deployment_json,
        &inputs.config_ini,
    );
    refuses(&dir, "small-machine", &small, &[], "memory");
    fs::remove_file(&small).unwrap();

    drop(nns);
    fs::remove_dir_all(&dir).unwrap();
}
