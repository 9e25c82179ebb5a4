//! The command line: exit codes for bad input, and `show` / `prepare` on a
//! small GuestOS disk built here (a trial boot of slot B pending).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use icos_grubenv::{BootCycle, BootState, GrubEnv, Slot};
use icos_imagefs::{Ext4Source, Ext4Spec, Tools, VfatSpec, make_ext4, make_vfat};
use icos_layout::OsKind;
use predicates::str::contains;

fn cmd() -> Command {
    Command::cargo_bin("icos-guestos-vm").unwrap()
}

fn hostos_config(dir: &Path) -> PathBuf {
    let path = dir.join("hostos.json");
    std::fs::write(&path, icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
    path
}

const ARGS: &str = "# both slots\n\
    BOOT_ARGS_A=\"root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 console=ttyS0 dfinity.system=A\"\n\
    BOOT_ARGS_B=\"root=PARTUUID=a78bc3a8-376c-054a-96e7-3904b915d0c5 console=ttyS0 dfinity.system=B\"\n";

/// A GuestOS disk whose grubenv says B/first_boot, with boot files in both
/// slots.
fn disk(dir: &Path) -> PathBuf {
    let tools = Tools::discover().expect("image tools (scripts/prereqs.sh installs them)");
    let mut env = GrubEnv::new();
    BootState::new(Slot::B, BootCycle::FirstBoot)
        .write_to_env(&mut env)
        .unwrap();
    let grubenv = dir.join("grubenv");
    std::fs::write(&grubenv, env.to_bytes().unwrap()).unwrap();
    let grub = dir.join("grub.img");
    make_vfat(
        &tools,
        &VfatSpec {
            size_bytes: 8 << 20,
            label: "GRUB".into(),
            volume_id: 1,
            epoch: 1_700_000_000,
        },
        &[("grubenv".into(), grubenv)],
        &grub,
    )
    .unwrap();
    let mut images = vec![("grub", grub)];
    for slot in Slot::ALL {
        let tree = dir.join(format!("tree-{slot}"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("vmlinuz"), format!("kernel {slot}")).unwrap();
        std::fs::write(tree.join("initrd.img"), format!("initrd {slot}")).unwrap();
        std::fs::write(tree.join("boot_args"), ARGS).unwrap();
        let img = dir.join(format!("boot-{slot}.img"));
        make_ext4(
            &tools,
            &Ext4Spec {
                size_bytes: 4 << 20,
                label: "boot".into(),
                uuid: uuid::Uuid::from_u128(1),
                hash_seed: uuid::Uuid::from_u128(2),
                epoch: 1_700_000_000,
            },
            Ext4Source::DirRootOwned(&tree),
            &img,
        )
        .unwrap();
        images.push((icos_guestos_vm_boot(slot), img));
    }
    let out = dir.join("disk.img");
    let refs: Vec<(&str, &Path)> = images.iter().map(|(n, p)| (*n, p.as_path())).collect();
    icos_imagefs::assemble_disk(&OsKind::GuestOs.layout(), &refs, &out).unwrap();
    out
}

fn icos_guestos_vm_boot(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "A_boot",
        Slot::B => "B_boot",
    }
}

fn grubenv_state(disk: &Path) -> BootState {
    let tools = Tools::discover().unwrap();
    let grub = OsKind::GuestOs.layout().byte_range("grub").unwrap().0;
    let bytes = icos_imagefs::read_file_from_vfat(&tools, disk, grub, "grubenv").unwrap();
    BootState::from_env(&GrubEnv::parse(&bytes).unwrap()).unwrap()
}

#[test]
fn help_and_usage() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("run"))
        .stdout(contains("prepare"))
        .stdout(contains("show"))
        .stdout(contains("Exit codes"));
    cmd().assert().code(2);
    cmd()
        .args(["show", "--net", "wifi"])
        .assert()
        .code(2)
        .stderr(contains("wifi"));
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let work = d.join("work");
    let missing = d.join("missing.json");
    cmd()
        .arg("show")
        .arg("--config")
        .arg(&missing)
        .arg("--work-dir")
        .arg(&work)
        .assert()
        .code(2)
        .stderr(contains("missing.json"));

    let guest = d.join("guestos.json");
    let guest_config = icos_config_media::dev_guestos_config().unwrap();
    std::fs::write(&guest, icos_config::to_json_pretty(&guest_config).unwrap()).unwrap();
    cmd()
        .arg("show")
        .arg("--config")
        .arg(&guest)
        .arg("--work-dir")
        .arg(&work)
        .assert()
        .code(2)
        .stderr(contains("not a HostOS config"));

    let config = hostos_config(d);
    let plain = d.join("plain.img");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    cmd()
        .arg("show")
        .arg("--config")
        .arg(&config)
        .args(["--accel", "tcg", "--disk"])
        .arg(&plain)
        .arg("--work-dir")
        .arg(&work)
        .assert()
        .code(2)
        .stderr(contains("plain.img"));
    cmd()
        .arg("show")
        .arg("--config")
        .arg(&config)
        .args(["--accel", "tcg", "--disk"])
        .arg(d.join("nodisk.img"))
        .arg("--work-dir")
        .arg(&work)
        .assert()
        .code(2)
        .stderr(contains("nodisk.img"));
}

#[test]
fn show_writes_nothing_and_prepare_commits_the_trial_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = disk(d);
    let config = hostos_config(d);
    let work = d.join("work");
    let run = |sub: &str| {
        let out = cmd()
            .arg(sub)
            .arg("--config")
            .arg(&config)
            .arg("--disk")
            .arg(&disk)
            .arg("--work-dir")
            .arg(&work)
            .args(["--accel", "tcg", "--net", "tap:vnet0", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let shown = run("show");
    assert_eq!(shown["slot"], "B");
    assert_eq!(shown["boot_kind"], "trial");
    assert_eq!(shown["grubenv"]["after"]["boot_cycle"], "failsafe_check");
    assert_eq!(shown["grubenv"]["written"], false);
    assert_eq!(shown["boot_args"]["variable"], "BOOT_ARGS_B");
    assert!(
        shown["cmdline"]
            .as_str()
            .unwrap()
            .ends_with("dfinity.system=B")
    );
    assert_eq!(shown["mac"], "6a:01:38:3f:55:67");
    let args: Vec<String> = serde_json::from_value(shown["qemu"]["args"].clone()).unwrap();
    let after = |flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    assert_eq!(after("-m"), "16384", "dev settings memory");
    assert_eq!(after("-smp"), "16");
    assert!(after("-append").ends_with("dfinity.system=B"));
    assert_eq!(
        after("-netdev"),
        "tap,id=net0,ifname=vnet0,script=no,downscript=no"
    );
    assert_eq!(
        std::fs::read_to_string(after("-kernel")).unwrap(),
        "kernel B"
    );
    assert_eq!(
        grubenv_state(&disk),
        BootState::new(Slot::B, BootCycle::FirstBoot)
    );

    // The extras SetupOS leaves on the config volume go onto the media.
    let extras = d.join("boot-config");
    std::fs::create_dir_all(extras.join("ssh_authorized_keys")).unwrap();
    std::fs::write(
        extras.join("ssh_authorized_keys/admin"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2ahLNJ5kN0I9vlUHzGDY7F1SoTQWwuJPG3aRv1MElP admin\n",
    )
    .unwrap();
    let out = cmd()
        .arg("show")
        .arg("--config")
        .arg(&config)
        .arg("--disk")
        .arg(&disk)
        .arg("--work-dir")
        .arg(&work)
        .args([
            "--accel",
            "tcg",
            "--net",
            "tap:vnet0",
            "--json",
            "--extras-from",
        ])
        .arg(&extras)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let with_extras: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let members: Vec<String> =
        serde_json::from_value(with_extras["config_media"]["members"].clone()).unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.contains("accounts_ssh_authorized_keys/admin")),
        "{members:?}"
    );
    assert!(
        !members.iter().any(|m| m.contains("node_operator")),
        "{members:?}"
    );

    let prepared = run("prepare");
    assert_eq!(prepared["slot"], "B");
    assert_eq!(prepared["grubenv"]["written"], true);
    assert_eq!(
        grubenv_state(&disk),
        BootState::new(Slot::B, BootCycle::FailsafeCheck)
    );
    // The next start finds no confirmation: rollback to A.
    let again = run("show");
    assert_eq!(again["slot"], "A");
    assert_eq!(again["boot_kind"], "rollback");
}
