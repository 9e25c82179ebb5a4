//! `icos slots show|install|confirm` on small GPT disk files: a FAT grub
//! partition with grubenv (made with `mkfs.vfat` and mtools) and the six
//! slot partitions, and upgrade images made with GNU tar and zstd.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

/// The grub partition: sectors 2048.. (4 MiB).
const GRUB_OFFSET: u64 = 2048 * 512;

fn icos() -> Command {
    Command::cargo_bin("icos").unwrap_or_else(|e| panic!("icos binary: {e}"))
}

fn sh(cmd: &str) -> String {
    let out = Std::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A 60 MiB disk: grub (4 MiB FAT, grubenv A/stable), A_boot, A_root, A_var,
/// B_boot, B_root, B_var (2, 4, 18 MiB each); slot A holds ext4 file systems.
fn disk(dir: &Path) -> PathBuf {
    let d = dir.join("disk.img");
    let p = d.display();
    let table = "label: gpt\n\
        start=2048, size=8192, type=L, name=grub\n\
        start=10240, size=4096, type=L, name=A_boot\n\
        start=14336, size=8192, type=L, name=A_root\n\
        start=22528, size=36864, type=L, name=A_var\n\
        start=59392, size=4096, type=L, name=B_boot\n\
        start=63488, size=8192, type=L, name=B_root\n\
        start=71680, size=36864, type=L, name=B_var\n";
    fs::write(dir.join("table"), table).unwrap();
    sh(&format!(
        "truncate -s 60M {p} && sfdisk -q {p} < {}",
        dir.join("table").display()
    ));
    let env = dir.join("grubenv");
    icos()
        .args(["grubenv", "create", arg(&env)])
        .assert()
        .success();
    icos()
        .args([
            "grubenv",
            "set",
            arg(&env),
            "boot_alternative=A",
            "boot_cycle=stable",
        ])
        .assert()
        .success();
    sh(&format!(
        "mkfs.vfat --offset=2048 -n GRUB {p} 4096 >/dev/null 2>&1 && MTOOLS_SKIP_CHECK=1 mcopy -i {p}@@{GRUB_OFFSET} {} ::grubenv",
        env.display()
    ));
    for (name, start, size) in [("a_boot", 10240, 4096), ("a_root", 14336, 8192)] {
        let img = dir.join(name);
        sh(&format!(
            "truncate -s {}k {i} && mke2fs -q -t ext4 -F {i} && dd if={i} of={p} bs=512 seek={start} conv=notrunc,sparse status=none",
            size / 2,
            i = img.display()
        ));
    }
    d
}

/// An upgrade image: boot.img and root.img (ext4 file systems of the given
/// sizes in KiB) and VERSION.TXT, as GNU tar with zstd.
fn update(dir: &Path, name: &str, boot_kib: u64, root_kib: u64) -> PathBuf {
    let src = dir.join(format!("{name}.d"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("VERSION.TXT"), "v2-cli\n").unwrap();
    for (img, kib) in [("boot.img", boot_kib), ("root.img", root_kib)] {
        let i = src.join(img);
        sh(&format!(
            "truncate -s {kib}k {i} && mke2fs -q -t ext4 -F {i}",
            i = i.display()
        ));
    }
    let out = dir.join(name);
    sh(&format!(
        "tar -C {} --sparse --format=gnu -cf - VERSION.TXT boot.img root.img | zstd -q -o {}",
        src.display(),
        out.display()
    ));
    out
}

fn grubenv_of(dir: &Path, disk: &Path) -> String {
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i {}@@{GRUB_OFFSET} ::grubenv {}/env.out && cat {}/env.out",
        disk.display(),
        dir.display(),
        dir.display()
    ))
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = icos()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn help_lists_the_subcommands() {
    icos().args(["slots", "--help"]).assert().success().stdout(
        contains("show")
            .and(contains("install"))
            .and(contains("confirm")),
    );
}

#[test]
fn show_a_fresh_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(dir.path());
    icos()
        .args(["slots", "show", "--disk", arg(&d)])
        .assert()
        .success()
        .stdout(
            contains("boot_alternative=A boot_cycle=stable")
                .and(contains("upgrade target: B"))
                .and(contains("slot A: bootable"))
                .and(contains("slot B: not bootable; B_boot (#5) empty")),
        );
    let v = json(&["slots", "show", "--disk", arg(&d), "--json"]);
    assert_eq!(v["running_slot"], "A");
    assert_eq!(v["upgrade_target"], "B");
    assert_eq!(v["slots"][0]["root"]["content"], "ext4");
    assert_eq!(v["slots"][1]["root"]["name"], "B_root");
    assert_eq!(v["slots"][1]["bootable"], false);
}

#[test]
fn install_boot_confirm_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(dir.path());
    let u = update(dir.path(), "update-img.tar.zst", 1024, 3072);
    icos()
        .args(["slots", "install", "--disk", arg(&d), "--update", arg(&u)])
        .assert()
        .success()
        .stderr(contains("slot B invalidated").and(contains("committed")))
        .stdout(
            contains("boot.img -> B_boot: 1048576 bytes")
                .and(contains("root.img -> B_root: 3145728 bytes"))
                .and(contains("slot B holds version v2-cli"))
                .and(contains("boot_alternative=B boot_cycle=first_boot")),
        );
    let env = grubenv_of(dir.path(), &d);
    assert_eq!(env.len(), 1024);
    assert!(
        env.contains("boot_alternative=B\nboot_cycle=first_boot\n"),
        "{env}"
    );
    let out = sh(&format!(
        "dd if={} bs=512 skip=63488 count=6144 status=none | sha256sum",
        d.display()
    ));
    let want = sh(&format!(
        "sha256sum < {}",
        dir.path().join("update-img.tar.zst.d/root.img").display()
    ));
    assert_eq!(out, want);

    // Not yet booted: a second install and a confirm are refused (exit 1).
    icos()
        .args(["slots", "install", "--disk", arg(&d), "--update", arg(&u)])
        .assert()
        .code(1)
        .stderr(contains("disk.img").and(contains("first_boot")));
    icos()
        .args(["slots", "confirm", "--disk", arg(&d)])
        .assert()
        .code(1)
        .stderr(contains("has not booted yet"));

    // GRUB's boot: first_boot -> failsafe_check (done on a copy of the file).
    let env_file = dir.path().join("env.boot");
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i {p}@@{GRUB_OFFSET} ::grubenv {e}",
        p = d.display(),
        e = env_file.display()
    ));
    icos()
        .args(["grubenv", "boot", arg(&env_file)])
        .assert()
        .success();
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -o -i {p}@@{GRUB_OFFSET} {e} ::grubenv",
        p = d.display(),
        e = env_file.display()
    ));
    let v = json(&["slots", "confirm", "--disk", arg(&d), "--json"]);
    assert_eq!(v["changed"], true);
    assert_eq!(v["slot"], "B");
    assert_eq!(v["after"], "boot_alternative=B boot_cycle=stable");
    icos()
        .args(["slots", "confirm", "--disk", arg(&d)])
        .assert()
        .success()
        .stdout(contains("slot B was stable already"));

    // B is stable: the next upgrade goes to A, read from stdin, as JSON.
    let out = icos()
        .args([
            "slots",
            "install",
            "--disk",
            arg(&d),
            "--update",
            "-",
            "--json",
        ])
        .pipe_stdin(&u)
        .unwrap()
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["slot"], "A");
    assert_eq!(v["update"], "<stdin>");
    assert_eq!(v["members"][0]["partition"], "A_boot");
    // GNU tar stored the ext4 images sparse: most of root.img is holes,
    // zeroed rather than written; data and holes add up to the size.
    let root = &v["members"][1];
    assert_eq!(root["member"], "root.img");
    let (data, zeroed) = (
        root["data_bytes"].as_u64().unwrap(),
        root["zeroed_bytes"].as_u64().unwrap(),
    );
    assert_eq!(data + zeroed, 3 * 1024 * 1024, "{root}");
    assert!(zeroed > data, "{root}");
    assert_eq!(root["data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["after"], "boot_alternative=A boot_cycle=first_boot");
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(dir.path());
    // Larger than B_root (4 MiB).
    let big = update(dir.path(), "big.tar.zst", 1024, 5120);
    icos()
        .args(["slots", "install", "--disk", arg(&d), "--update", arg(&big)])
        .assert()
        .code(2)
        .stderr(
            contains("big.tar.zst")
                .and(contains("root.img is 5242880 bytes"))
                .and(contains("partition B_root"))
                .and(contains("4194304 bytes")),
        );
    assert!(grubenv_of(dir.path(), &d).contains("boot_alternative=A\nboot_cycle=stable\n"));

    let junk = dir.path().join("junk.tar.zst");
    fs::write(&junk, "not an archive\n".repeat(100)).unwrap();
    icos()
        .args([
            "slots",
            "install",
            "--disk",
            arg(&d),
            "--update",
            arg(&junk),
        ])
        .assert()
        .code(2)
        .stderr(contains("upgrade image").and(contains("junk.tar.zst")));
    icos()
        .args([
            "slots",
            "install",
            "--disk",
            arg(&d),
            "--update",
            arg(&dir.path().join("missing.tar.zst")),
        ])
        .assert()
        .code(2)
        .stderr(contains("missing.tar.zst"));
    icos()
        .args([
            "slots",
            "show",
            "--disk",
            arg(&dir.path().join("nodisk.img")),
        ])
        .assert()
        .code(2)
        .stderr(contains("nodisk.img"));
    let plain = dir.path().join("plain.img");
    fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    icos()
        .args(["slots", "show", "--disk", arg(&plain)])
        .assert()
        .code(2)
        .stderr(contains("plain.img").and(contains("GPT")));
    icos()
        .args(["slots", "install", "--disk", arg(&d)])
        .assert()
        .code(2)
        .stderr(contains("--update"));
}

#[test]
fn run_in_place_needs_a_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("disk-img.tar.zst");
    let mut bytes = vec![0x28, 0xb5, 0x2f, 0xfd];
    bytes.extend_from_slice(&[0u8; 600]);
    fs::write(&archive, bytes).unwrap();
    icos()
        .args(["run", "guestos", "--in-place", "--image", arg(&archive)])
        .assert()
        .code(2)
        .stderr(contains("disk-img.tar.zst").and(contains("--in-place needs a raw disk")));
}
