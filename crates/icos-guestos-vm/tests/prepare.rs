//! Slot choice, the grubenv refresh and extraction on GuestOS disk files
//! built here with the GuestOS layout: FAT grub partitions (FAT16 and
//! FAT32) and ext4 boot partitions made by the image builder's tools.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use icos_grubenv::{BootCycle, BootKind, BootState, GrubEnv, Slot};
use icos_guestos_vm::prepare::{GuestDisk, PrepareError};
use icos_guestos_vm::vm::{cache_for, guestos_mac};
use icos_guestos_vm::{Network, VmSpec, VsockMode, prepare_launch};
use icos_imagefs::{Ext4Source, Ext4Spec, Tools, VfatSpec, make_ext4, make_vfat};
use icos_layout::OsKind;
use icos_qemu::Accel;

struct Fixture {
    dir: tempfile::TempDir,
    disk: PathBuf,
    tools: Tools,
}

/// What goes on a test disk.
struct DiskSpec<'a> {
    /// `grubenv` content; `None`: no grubenv file.
    grubenv: Option<Vec<u8>>,
    /// FAT size of the grub partition (≥ 64 MiB: FAT32).
    grub_size: u64,
    /// `boot_args` of A_boot and B_boot (`None`: no file); `None` for the
    /// slot: an empty partition.
    boot_args: [Option<Option<&'a str>>; 2],
}

fn env(state: Option<BootState>) -> Vec<u8> {
    let mut env = GrubEnv::new();
    if let Some(s) = state {
        s.write_to_env(&mut env).unwrap();
    }
    env.to_bytes().unwrap().to_vec()
}

fn build(spec: &DiskSpec<'_>) -> Fixture {
    let tools = Tools::discover().expect("image tools (scripts/prereqs.sh installs them)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut images: Vec<(&str, PathBuf)> = Vec::new();

    let mut grub_files = vec![("grub.cfg".to_owned(), write(d, "grub.cfg", b"# test\n"))];
    if let Some(g) = &spec.grubenv {
        grub_files.push(("grubenv".to_owned(), write(d, "grubenv", g)));
    }
    let grub = d.join("grub.img");
    make_vfat(
        &tools,
        &VfatSpec {
            size_bytes: spec.grub_size,
            label: "GRUB".into(),
            volume_id: 0x0b00_70e6,
            epoch: 1_700_000_000,
        },
        &grub_files,
        &grub,
    )
    .unwrap();
    images.push(("grub", grub));

    for (i, slot) in Slot::ALL.iter().enumerate() {
        let Some(args) = spec.boot_args[i] else {
            continue;
        };
        let tree = d.join(format!("tree-{slot}"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("vmlinuz"), kernel(*slot)).unwrap();
        std::fs::write(tree.join("initrd.img"), format!("initrd of {slot}")).unwrap();
        std::fs::write(tree.join("version.txt"), format!("version-{slot}\n")).unwrap();
        if let Some(a) = args {
            std::fs::write(tree.join("boot_args"), a).unwrap();
        }
        let img = d.join(format!("boot-{slot}.img"));
        make_ext4(
            &tools,
            &Ext4Spec {
                size_bytes: 8 << 20,
                label: "boot".into(),
                uuid: uuid::Uuid::from_u128(0x1234 + i as u128),
                hash_seed: uuid::Uuid::from_u128(0x5678),
                epoch: 1_700_000_000,
            },
            Ext4Source::DirRootOwned(&tree),
            &img,
        )
        .unwrap();
        images.push((icos_guestos_vm::boot_partition(*slot), img));
    }
    let disk = d.join("disk.img");
    let refs: Vec<(&str, &Path)> = images.iter().map(|(n, p)| (*n, p.as_path())).collect();
    icos_imagefs::assemble_disk(&OsKind::GuestOs.layout(), &refs, &disk).unwrap();
    Fixture { dir, disk, tools }
}

/// A "kernel" larger than one FAT cluster and one ext4 block, different
/// per slot.
fn kernel(slot: Slot) -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i % 251) as u8 ^ slot.as_str().as_bytes()[0])
        .collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(format!("src-{name}"));
    std::fs::write(&p, data).unwrap();
    p
}

const BOTH: &str = "BOOT_ARGS_A=\"root=PARTUUID=7c0a626e console=ttyS0 dfinity.system=A\"\n\
                    BOOT_ARGS_B=\"root=PARTUUID=a78bc3a8 console=ttyS0 dfinity.system=B\"\n";

fn both_slots(grubenv: Option<Vec<u8>>) -> DiskSpec<'static> {
    DiskSpec {
        grubenv,
        grub_size: 8 << 20,
        boot_args: [Some(Some(BOTH)), Some(Some(BOTH))],
    }
}

/// The grubenv as read back by mtools, independently of this crate.
fn grubenv_on_disk(f: &Fixture) -> GrubEnv {
    let grub = OsKind::GuestOs.layout().byte_range("grub").unwrap().0;
    let bytes = icos_imagefs::read_file_from_vfat(&f.tools, &f.disk, grub, "grubenv").unwrap();
    GrubEnv::parse(&bytes).unwrap()
}

/// The grub partition's bytes.
fn grub_bytes(f: &Fixture) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let (offset, len) = OsKind::GuestOs.layout().byte_range("grub").unwrap();
    let mut file = std::fs::File::open(&f.disk).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; usize::try_from(len).unwrap()];
    file.read_exact(&mut buf).unwrap();
    buf
}

fn state(f: &Fixture) -> BootState {
    BootState::from_env(&grubenv_on_disk(f)).unwrap()
}

#[test]
fn every_boot_cycle_chooses_the_slot_grub_would() {
    use BootCycle::*;
    // (before, slot booted, kind, after, written)
    let table = [
        (
            Slot::A,
            Stable,
            Slot::A,
            BootKind::Stable,
            Slot::A,
            Stable,
            false,
        ),
        (
            Slot::B,
            Stable,
            Slot::B,
            BootKind::Stable,
            Slot::B,
            Stable,
            false,
        ),
        (
            Slot::B,
            Install,
            Slot::B,
            BootKind::AfterInstall,
            Slot::B,
            Stable,
            true,
        ),
        (
            Slot::B,
            FirstBoot,
            Slot::B,
            BootKind::Trial,
            Slot::B,
            FailsafeCheck,
            true,
        ),
        (
            Slot::A,
            FirstBoot,
            Slot::A,
            BootKind::Trial,
            Slot::A,
            FailsafeCheck,
            true,
        ),
        (
            Slot::B,
            FailsafeCheck,
            Slot::A,
            BootKind::Rollback,
            Slot::A,
            Stable,
            true,
        ),
        (
            Slot::A,
            FailsafeCheck,
            Slot::B,
            BootKind::Rollback,
            Slot::B,
            Stable,
            true,
        ),
    ];
    for (alt, cycle, slot, kind, after_alt, after_cycle, writes) in table {
        let f = build(&both_slots(Some(env(Some(BootState::new(alt, cycle))))));
        let mut disk = GuestDisk::open(&f.disk).unwrap();
        let plan = disk.plan_boot().unwrap();
        let what = format!("{alt}/{cycle}");
        assert_eq!(plan.slot(), slot, "{what}");
        assert_eq!(plan.refresh.kind, kind, "{what}");
        assert_eq!(
            plan.refresh.after,
            BootState::new(after_alt, after_cycle),
            "{what}"
        );
        assert_eq!(plan.write_back, writes, "{what}");

        let out = f.dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let files = disk.extract(plan.slot(), &out).unwrap();
        assert_eq!(
            std::fs::read(&files.kernel).unwrap(),
            kernel(slot),
            "{what}"
        );
        assert_eq!(
            std::fs::read_to_string(&files.initrd).unwrap(),
            format!("initrd of {slot}")
        );
        assert_eq!(files.boot_args.variable, format!("BOOT_ARGS_{slot}"));
        assert!(
            files
                .boot_args
                .cmdline
                .ends_with(&format!("dfinity.system={slot}"))
        );
        assert_eq!(
            files.version.as_deref(),
            Some(format!("version-{slot}").as_str())
        );

        // Nothing is written before the commit...
        assert_eq!(state(&f), BootState::new(alt, cycle), "{what}");
        let update = icos_guestos_vm::GrubenvUpdate::new(&f.disk, plan);
        assert_eq!(update.commit().unwrap(), writes);
        // ...and afterwards the disk holds what GRUB's save_env would.
        assert_eq!(state(&f), BootState::new(after_alt, after_cycle), "{what}");
    }
}

#[test]
fn fat32_grub_partition_and_missing_grubenv() {
    let mut spec = both_slots(Some(env(Some(BootState::new(
        Slot::B,
        BootCycle::FirstBoot,
    )))));
    spec.grub_size = 64 << 20;
    let f = build(&spec);
    let plan = GuestDisk::open(&f.disk).unwrap().plan_boot().unwrap();
    assert_eq!(plan.slot(), Slot::B);
    icos_guestos_vm::GrubenvUpdate::new(&f.disk, plan)
        .commit()
        .unwrap();
    assert_eq!(state(&f), BootState::new(Slot::B, BootCycle::FailsafeCheck));

    // No grubenv: A/stable, as GRUB's `-s` test gives, and nothing written.
    let f = build(&both_slots(None));
    let plan = GuestDisk::open(&f.disk).unwrap().plan_boot().unwrap();
    assert!(!plan.grubenv_found);
    assert_eq!(plan.slot(), Slot::A);
    assert!(!plan.write_back);
    // A block without the variables is A/stable too, and stays as it is.
    let f = build(&both_slots(Some(env(None))));
    let plan = GuestDisk::open(&f.disk).unwrap().plan_boot().unwrap();
    assert_eq!((plan.slot(), plan.write_back), (Slot::A, false));
}

#[test]
fn the_single_boot_args_form_is_read_too() {
    let single = "BOOT_ARGS=\"root=PARTUUID=a78bc3a8 dfinity.system=B\"\n";
    let f = build(&DiskSpec {
        grubenv: Some(env(Some(BootState::new(Slot::B, BootCycle::Stable)))),
        grub_size: 8 << 20,
        boot_args: [None, Some(Some(single))],
    });
    let disk = GuestDisk::open(&f.disk).unwrap();
    let files = disk.extract(Slot::B, f.dir.path()).unwrap();
    assert_eq!(files.boot_args.variable, "BOOT_ARGS");
    assert_eq!(
        files.boot_args.cmdline,
        "root=PARTUUID=a78bc3a8 dfinity.system=B"
    );
}

fn launch_spec(f: &Fixture) -> VmSpec {
    let config: icos_config::HostOSConfig =
        icos_config::from_json_str(icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
    let work = f.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    VmSpec {
        accel: Accel::Tcg,
        memory_mib: 2048,
        vcpus: 2,
        disk: f.disk.clone(),
        disk_cache: cache_for(&f.disk),
        mac: guestos_mac(&config),
        network: Network::User,
        vsock: VsockMode::None,
        config_media: work.join("config.img"),
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
    }
}

/// A preparation that fails after the boot was planned leaves grubenv as
/// it was: here the trial slot B has no boot_args.
#[test]
fn a_failed_preparation_writes_nothing() {
    let f = build(&DiskSpec {
        grubenv: Some(env(Some(BootState::new(Slot::B, BootCycle::FirstBoot)))),
        grub_size: 8 << 20,
        boot_args: [Some(Some(BOTH)), Some(None)],
    });
    let config: icos_config::HostOSConfig =
        icos_config::from_json_str(icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
    let spec = launch_spec(&f);
    let before = grub_bytes(&f);
    let err = prepare_launch(
        &config,
        &Default::default(),
        &spec,
        &f.dir.path().join("work"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(err.is_bad_input(), "{text}");
    assert!(
        text.contains("B_boot") && text.contains("/boot_args"),
        "{text}"
    );
    assert_eq!(state(&f), BootState::new(Slot::B, BootCycle::FirstBoot));
    assert!(grub_bytes(&f) == before, "the grub partition changed");
}

/// A full preparation: files, CONFIG media, argv; grubenv written only on
/// commit.
#[test]
fn a_full_preparation_then_commit() {
    let f = build(&both_slots(Some(env(Some(BootState::new(
        Slot::A,
        BootCycle::FailsafeCheck,
    ))))));
    let config: icos_config::HostOSConfig =
        icos_config::from_json_str(icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
    let spec = launch_spec(&f);
    let launch = prepare_launch(
        &config,
        &Default::default(),
        &spec,
        &f.dir.path().join("work"),
    )
    .unwrap();
    assert_eq!(
        launch.boot.slot,
        Slot::B,
        "failsafe_check on A rolls back to B"
    );
    let append = launch.args.iter().position(|a| a == "-append").unwrap();
    assert!(launch.args[append + 1].ends_with("dfinity.system=B"));
    let media = icos_config_media::read_bootstrap(&spec.config_media).unwrap();
    assert_eq!(
        media.config.icos_settings.mgmt_mac,
        config.icos_settings.mgmt_mac
    );
    assert_eq!(state(&f), BootState::new(Slot::A, BootCycle::FailsafeCheck));
    assert!(launch.grubenv.commit().unwrap());
    assert_eq!(state(&f), BootState::new(Slot::B, BootCycle::Stable));
}

#[test]
fn bad_disks_are_bad_input_naming_what_is_wrong() {
    // An invalid boot state.
    let mut bad = GrubEnv::new();
    bad.set("boot_cycle", "bogus").unwrap();
    let f = build(&both_slots(Some(bad.to_bytes().unwrap().to_vec())));
    let err = GuestDisk::open(&f.disk).unwrap().plan_boot().unwrap_err();
    assert!(err.is_bad_input());
    let text = err.to_string();
    assert!(text.contains("grubenv") && text.contains("bogus"), "{text}");

    // A corrupt block.
    let f = build(&both_slots(Some(vec![b'x'; 1024])));
    let err = GuestDisk::open(&f.disk).unwrap().plan_boot().unwrap_err();
    assert!(matches!(err, PrepareError::Grubenv { .. }), "{err}");

    // Not a GPT disk at all.
    let plain = f.dir.path().join("plain.img");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    let err = GuestDisk::open(&plain).unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("plain.img"), "{err}");

    // An empty boot partition (no ext4).
    let f = build(&DiskSpec {
        grubenv: Some(env(Some(BootState::new(Slot::B, BootCycle::Stable)))),
        grub_size: 8 << 20,
        boot_args: [Some(Some(BOTH)), None],
    });
    let err = GuestDisk::open(&f.disk)
        .unwrap()
        .extract(Slot::B, f.dir.path())
        .unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("B_boot"), "{err}");
}
