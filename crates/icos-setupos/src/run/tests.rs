#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use super::*;
use crate::banner::FAILURE_TITLE;
use crate::install::image::WriteProgress;
use crate::report::CheckResult;
use crate::runner::fake::FakeRunner;

fn all_switches() -> Vec<Switches> {
    let mut out = Vec::new();
    for check_hardware in [false, true] {
        for perform_installation in [false, true] {
            for reboot_after_installation in [false, true] {
                out.push(Switches {
                    check_hardware,
                    perform_installation,
                    reboot_after_installation,
                });
            }
        }
    }
    out
}

#[test]
fn steps_for_every_combination_of_switches() {
    use Step::*;
    let install = [
        Config,
        Capture,
        Checks,
        Preflight,
        SetupDisk,
        InstallHostOs,
        InstallGuestOs,
        SetupHostOsConfig,
        Success,
    ];
    for s in all_switches() {
        let got = steps(s);
        let mut want: Vec<Step> = if s.perform_installation {
            install.to_vec()
        } else {
            vec![Config, Capture, Checks]
        };
        if s.perform_installation && s.reboot_after_installation {
            want.push(Reboot);
        }
        assert_eq!(got, want, "{s:?}");
        // Nothing writes a drive before preflight has passed.
        if let Some(first) = got.iter().position(|st| st.writes_drives()) {
            assert!(got[..first].contains(&Preflight), "{s:?}");
        }
        let mut checks = vec![CheckName::Age, CheckName::Network, CheckName::Time];
        if s.check_hardware {
            checks.insert(1, CheckName::Hardware);
        }
        assert_eq!(checks_run(s), checks, "{s:?}");
    }
    // Every step has a successor rule, and the run always ends.
    for s in all_switches() {
        for step in install.iter().chain([&Reboot]) {
            let _ = next_step(Some(*step), s);
        }
        assert!(steps(s).len() <= 10);
    }
}

/// The captured Gen2 server, with `cmdline` as its kernel command line.
fn gen2_capture(cmdline: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gen2-7313");
    let dir = tempfile::tempdir().unwrap();
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    fs::write(dir.path().join("cmdline"), cmdline).unwrap();
    dir
}

#[test]
fn the_checks_that_run_follow_the_switches() {
    for s in all_switches() {
        let cmdline = format!(
            "quiet ic.setupos.check_hardware={} ic.setupos.perform_installation={} \
             ic.setupos.reboot_after_installation={}",
            s.check_hardware, s.perform_installation, s.reboot_after_installation
        );
        let dir = gen2_capture(&cmdline);
        let run = check_captured(dir.path(), 0).unwrap();
        assert_eq!(run.switches, s);
        let ran: Vec<CheckName> = run
            .report
            .checks
            .iter()
            .filter(|c| !c.skipped)
            .map(|c| c.check)
            .collect();
        assert_eq!(ran, checks_run(s), "{s:?}");
        assert_eq!(run.plan.is_some(), s.perform_installation, "{s:?}");
    }
}

#[test]
fn the_age_pause() {
    let old = Report {
        checks: vec![crate::time::check_age(
            0,
            10 * IC_AGE_PAUSE.as_secs() * 10_000,
        )],
    };
    let fresh = Report {
        checks: vec![crate::time::check_age(100, 100)],
    };
    let none = Report {
        checks: vec![CheckResult::new(CheckName::Time)],
    };
    let prod = Switches::default();
    let test = Switches {
        check_hardware: false,
        ..Switches::default()
    };
    assert_eq!(age_pause(&old, prod, None, None), IC_AGE_PAUSE);
    assert_eq!(age_pause(&old, test, None, None), Duration::ZERO);
    assert_eq!(age_pause(&old, prod, None, Some(3)), Duration::from_secs(3));
    assert_eq!(age_pause(&old, test, None, Some(3)), Duration::from_secs(3));
    assert_eq!(age_pause(&old, prod, Some(0), Some(3)), Duration::ZERO);
    assert_eq!(age_pause(&old, test, Some(7), None), Duration::from_secs(7));
    for s in [prod, test] {
        assert_eq!(age_pause(&fresh, s, Some(5), Some(5)), Duration::ZERO);
        assert_eq!(age_pause(&none, s, None, None), Duration::ZERO);
    }
    assert_eq!(cmdline_age_pause("quiet"), Ok(None));
    assert_eq!(
        cmdline_age_pause("ic.setupos.age_pause_secs=5 x ic.setupos.age_pause_secs=0"),
        Ok(Some(0))
    );
    assert!(
        cmdline_age_pause("ic.setupos.age_pause_secs=soon")
            .unwrap_err()
            .contains("'soon' is not a number")
    );
    assert_eq!(cmdline_age_pause("ic.setupos.age_pause_secs_x=5"), Ok(None));
}

#[test]
fn progress_lines_every_five_percent_or_ten_seconds() {
    let mut t = Throttle::default();
    let total = 1000 << 20;
    let p = |done: u64, secs: u64| WriteProgress {
        done,
        total,
        data_written: done / 2,
        elapsed: Duration::from_secs(secs),
    };
    let mut printed = Vec::new();
    for i in 0..=1000u64 {
        let pr = p(i << 20, i / 50);
        if t.due(&pr) {
            printed.push(pr.percent());
        }
    }
    assert_eq!(printed, (0..=100).step_by(5).collect::<Vec<_>>());
    // A slow write still prints every 10 s.
    let mut t = Throttle::default();
    assert!(t.due(&p(0, 0)));
    assert!(!t.due(&p(1 << 20, 9)));
    assert!(t.due(&p(2 << 20, 10)));
    assert!(!t.due(&p(3 << 20, 11)));
    assert_eq!(
        progress_line("install-hostos", &p(350 << 20, 10)),
        "install-hostos: 35% (350.0 of 1000.0 MiB; 175.0 MiB data written, 17.5 MiB/s)"
    );

    assert_eq!(mib(0), "0.0");
    assert_eq!(mib(3 << 19), "1.5");
    assert_eq!(mib((100 << 20) + 12_288), "100.0");
    assert_eq!(mib(u64::MAX), "17592186044415.9");

    let mut c = PlainConsole::new(Vec::new());
    for i in 0..=20u64 {
        c.progress("w", &p((i * 50) << 20, i));
    }
    c.line("done");
    let text = String::from_utf8(c.into_inner()).unwrap();
    assert_eq!(text.lines().count(), 22, "{text}");
    assert!(
        text.ends_with(
            "w: 100% (1000.0 of 1000.0 MiB; 500.0 MiB data written, 25.0 MiB/s)\ndone\n"
        )
    );
}

/// A SetupOS as the installer sees it: CONFIG and data partitions, the
/// live files, the work folder.
struct Setup {
    root: tempfile::TempDir,
    opts: RunOptions,
}

impl Setup {
    fn new(cmdline: &str) -> Setup {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let config_dir = r.join("config");
        let data_dir = r.join("data");
        fs::create_dir_all(&config_dir).unwrap();
        fs::create_dir_all(&data_dir).unwrap();
        fs::copy(examples.join("config.ini"), config_dir.join("config.ini")).unwrap();
        fs::copy(
            examples.join("node_operator_private_key.pem"),
            config_dir.join("node_operator_private_key.pem"),
        )
        .unwrap();
        fs::copy(
            examples.join("deployment.json"),
            data_dir.join("deployment.json"),
        )
        .unwrap();
        fs::create_dir_all(r.join("proc")).unwrap();
        fs::write(r.join("proc/cmdline"), cmdline).unwrap();
        fs::write(r.join("commit-time"), "1700000000\n").unwrap();
        fs::write(r.join("proc/meminfo"), "MemTotal: 1000 kB\n").unwrap();
        fs::create_dir_all(r.join("dev")).unwrap();
        let opts = RunOptions {
            config_dir,
            data_dir,
            sources: LiveSources {
                cmdline: r.join("proc/cmdline"),
                commit_time: r.join("commit-time"),
                meminfo: r.join("proc/meminfo"),
            },
            work: r.join("run/setupos"),
            dev_dir: r.join("dev"),
            efi_dir: r.join("sys/firmware/efi"),
            age_pause_secs: None,
            route_wait: Duration::ZERO,
            ntp_wait: Duration::ZERO,
            reboot_delay: Duration::ZERO,
            hole_check: HoleCheck::Full,
            colour: false,
        };
        Setup { root, opts }
    }

    fn run(&self, runner: &mut FakeRunner) -> (Outcome, String) {
        let mut console = PlainConsole::new(Vec::new());
        let outcome = run(&self.opts, runner, &mut console);
        (outcome, String::from_utf8(console.into_inner()).unwrap())
    }
}

/// Answers as the captured Gen2 server, whose config the examples match.
fn gen2_runner() -> FakeRunner {
    let d = |name: &str| {
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/gen2-7313")
                .join(name),
        )
        .unwrap()
    };
    let mut r = FakeRunner::default();
    r.answer("lshw -json -class cpu", 0, &d("lshw.json"), "");
    r.answer("lshw -json -class memory", 0, &d("lshw-memory.json"), "");
    r.answer("nproc", 0, &d("nproc"), "");
    r.answer("lsblk", 0, &d("lsblk.json"), "");
    r.answer("ip -j addr", 0, &d("ip-addr.json"), "");
    r.answer("ip -j -6 route", 0, &d("ip-route.json"), "");
    r.answer("ping -6", 0, &d("ping6"), "");
    r.answer("ping -4", 0, &d("ping4"), "");
    r.answer("systemctl is-active chrony", 0, &d("chrony"), "");
    r.answer("timedatectl show", 0, &d("timedatectl"), "");
    r.answer("curl", 0, "200", "");
    r
}

fn touched_a_drive(log: &[String]) -> bool {
    log.iter().any(|l| {
        [
            "wipefs",
            "pvcreate",
            "sfdisk",
            "vgremove",
            "lvextend",
            "mount",
            "efibootmgr",
        ]
        .iter()
        .any(|c| l.starts_with(c))
    })
}

#[test]
fn bad_config_stops_before_anything_runs() {
    let s = Setup::new("quiet");
    fs::write(
        s.opts.config_dir.join("config.ini"),
        "ipv6_prefix=2001:db8:zzzz:56\nverbose=maybe\n",
    )
    .unwrap();
    let mut r = gen2_runner();
    let (outcome, text) = s.run(&mut r);
    let Outcome::Failed { step, reasons } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(*step, Step::Config);
    assert!(reasons.len() >= 3, "every problem at once: {reasons:?}");
    assert!(text.contains(FAILURE_TITLE), "{text}");
    assert!(text.contains("ipv6_prefix"), "{text}");
    assert!(text.contains("ipv6_gateway"), "{text}");
    assert!(text.contains("verbose"), "{text}");
    assert!(
        text.contains("SETUPOS INSTALL FAILED at config: "),
        "{text}"
    );
    assert!(r.log.is_empty(), "{:?}", r.log);
    assert_eq!(outcome.exit_code(), 1);

    let s = Setup::new("ic.setupos.check_hardware=perhaps");
    let (outcome, text) = s.run(&mut gen2_runner());
    assert!(matches!(
        outcome,
        Outcome::Failed {
            step: Step::Config,
            ..
        }
    ));
    assert!(
        text.contains("ic.setupos.check_hardware: 'perhaps'"),
        "{text}"
    );
}

#[test]
fn checks_only_when_installation_is_off() {
    let s = Setup::new("ic.setupos.perform_installation=0 ic.setupos.age_pause_secs=0");
    let mut r = gen2_runner();
    let (outcome, text) = s.run(&mut r);
    assert_eq!(outcome, Outcome::ChecksOnly, "{text}");
    assert_eq!(outcome.exit_code(), 0);
    assert!(
        text.contains("SetupOS installer: 3 steps: config, capture, checks"),
        "{text}"
    );
    assert!(text.contains("[3/3] checks"), "{text}");
    assert!(text.contains("hardware check: passed"), "{text}");
    assert!(text.contains("network check: passed"), "{text}");
    assert!(text.contains("SETUPOS CHECKS PASSED"), "{text}");
    assert!(text.contains("management MAC 3c:ec:ef:6b:37:99"), "{text}");
    assert!(!touched_a_drive(&r.log), "{:?}", r.log);
    assert!(s.opts.work.join("config.json").exists());
    assert!(s.opts.work.join("captured/lsblk.json").exists());
    assert!(
        r.log
            .iter()
            .any(|l| l.starts_with("ip addr add 203.0.113.18/28 dev br6"))
    );
    let _ = &s.root;
}

#[test]
fn failing_checks_and_preflight_touch_no_drive() {
    // A check fails: the IPv6 gateway does not answer.
    let s = Setup::new("ic.setupos.age_pause_secs=0");
    let mut r = gen2_runner();
    r.answers.insert(
        0,
        (
            "ping -6".into(),
            crate::runner::CmdOutput {
                status: Some(1),
                stdout: "4 packets transmitted, 0 received, 100% packet loss\n".into(),
                stderr: String::new(),
            },
        ),
    );
    let (outcome, text) = s.run(&mut r);
    assert!(
        matches!(&outcome, Outcome::Failed { step: Step::Checks, reasons } if reasons.iter().any(|r| r.starts_with("network: "))),
        "{outcome:?}"
    );
    assert!(text.contains(FAILURE_TITLE));
    assert!(!touched_a_drive(&r.log), "{:?}", r.log);

    // The checks pass, the images are missing: preflight stops it.
    let mut r = gen2_runner();
    let (outcome, text) = s.run(&mut r);
    let Outcome::Failed { step, reasons } = &outcome else {
        panic!("{outcome:?}\n{text}");
    };
    assert_eq!(*step, Step::Preflight, "{text}");
    assert!(
        reasons.iter().any(|r| r.contains("host-os.img.tar.zst")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("guest-os.img.tar.zst")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("nvme0n1: no such device")),
        "{reasons:?}"
    );
    assert!(text.contains("install plan: HostOS onto nvme0n1"), "{text}");
    assert!(!touched_a_drive(&r.log), "{:?}", r.log);
    assert!(!text.contains("the drives were being written"), "{text}");
}

/// A sparse image of `size` bytes with `seed`-dependent data at a few
/// offsets, archived as `name` in `dir`; returns its bytes.
fn image_archive(dir: &Path, name: &str, size: u64, seed: u8) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let raw = dir.join(format!("{name}.raw"));
    let f = fs::File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    let mut bytes = vec![0u8; usize::try_from(size).unwrap()];
    for (i, offset) in [0u64, 3 << 20, size - 4096].into_iter().enumerate() {
        let data: Vec<u8> = (0..4096u32)
            .map(|j| {
                u8::try_from((j + u32::from(seed) * 7 + u32::try_from(i).unwrap()) % 251).unwrap()
                    | 1
            })
            .collect();
        f.write_all_at(&data, offset).unwrap();
        let o = usize::try_from(offset).unwrap();
        bytes[o..o + 4096].copy_from_slice(&data);
    }
    f.sync_all().unwrap();
    let mut b = icos_sparse_tar::TarBuilder::new();
    b.add_file("disk.img", &raw);
    b.write_tar_zst(
        &dir.join(name),
        &icos_sparse_tar::ZstdOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    fs::remove_file(&raw).unwrap();
    bytes
}

fn garbage_file(path: &Path, size: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, vec![0xEEu8; usize::try_from(size).unwrap()]).unwrap();
}

#[test]
fn a_whole_install_onto_files() {
    let s = Setup::new("ic.setupos.check_hardware=0 ic.setupos.age_pause_secs=0 console=ttyS0");
    let data = &s.opts.data_dir;
    let hostos = image_archive(data, HOSTOS_ARCHIVE, 8 << 20, 1);
    let guestos = image_archive(data, GUESTOS_ARCHIVE, 6 << 20, 2);
    let dev = &s.opts.dev_dir;
    garbage_file(&dev.join("vdb"), 10 << 20);
    garbage_file(&dev.join("vdb3"), 0);
    garbage_file(&dev.join("vdc"), 1 << 20);
    garbage_file(&dev.join("mapper/hostlvm-guestos"), 7 << 20);
    garbage_file(&dev.join("mapper/hostlvm-config"), 0);
    let tib = 1u64 << 40;
    let lsblk = format!(
        r#"{{"blockdevices":[{{"name":"vda","size":5874122752,"type":"disk"}},
            {{"name":"vdb","size":{},"type":"disk"}},{{"name":"vdc","size":{},"type":"disk"}}]}}"#,
        2 * tib,
        2 * tib
    );
    let mut r = gen2_runner();
    r.answers.insert(
        0,
        (
            "lsblk".into(),
            crate::runner::CmdOutput {
                status: Some(0),
                stdout: lsblk,
                stderr: String::new(),
            },
        ),
    );
    let (outcome, text) = s.run(&mut r);
    assert_eq!(outcome, Outcome::Installed { rebooting: true }, "{text}");
    assert!(
        text.contains("INTERNET COMPUTER - SETUP - SUCCESSFUL"),
        "{text}"
    );
    assert!(text.contains("\nSETUPOS INSTALL SUCCESS\n"), "{text}");
    assert!(text.contains("[10/10] reboot"), "{text}");
    assert!(text.contains("hardware check: skipped"), "{text}");
    assert!(text.contains("install-hostos: 100%"), "{text}");
    assert!(text.contains("not booted through UEFI"), "{text}");

    let vdb = fs::read(dev.join("vdb")).unwrap();
    assert!(
        vdb[..hostos.len()] == hostos[..],
        "HostOS written byte for byte"
    );
    assert!(vdb[hostos.len()..].iter().all(|&b| b == 0xEE));
    let lv = fs::read(dev.join("mapper/hostlvm-guestos")).unwrap();
    assert!(
        lv[..guestos.len()] == guestos[..],
        "GuestOS written byte for byte"
    );

    let mnt = s.opts.work.join("hostos-config");
    let config: icos_config::HostOSConfig =
        serde_json::from_slice(&fs::read(mnt.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config.icos_settings.mgmt_mac,
        icos_deterministic_ips::parse_mac("3c:ec:ef:6b:37:99").unwrap()
    );
    assert!(mnt.join("node_operator_private_key.pem").exists());
    assert!(s.opts.work.join("config-hostos.json").exists());

    let d = dev.display();
    let disk_cmds: Vec<&String> = r
        .log
        .iter()
        .filter(|l| {
            [
                "vg",
                "pv",
                "lv",
                "wipefs",
                "sfdisk",
                "partx",
                "mount",
                "umount",
                "systemctl reboot",
            ]
            .iter()
            .any(|c| l.starts_with(c))
        })
        .collect();
    let want = [
        "vgs --noheadings -o vg_name".to_string(),
        "pvs --noheadings -o pv_name".to_string(),
        format!("wipefs --all --force {d}/vdb"),
        format!("wipefs --all --force {d}/vdc"),
        format!("pvcreate --force --yes {d}/vdc"),
        format!("sfdisk --relocate gpt-bak-std {d}/vdb"),
        format!("sfdisk --no-reread --wipe never --wipe-partitions never -N 3 {d}/vdb <<< ', +'"),
        format!("partx -u {d}/vdb"),
        format!("pvresize {d}/vdb3"),
        format!("vgextend hostlvm {d}/vdc"),
        "lvextend -i 2 --type striped -l +100%FREE hostlvm/guestos".to_string(),
        "vgchange -ay hostlvm".to_string(),
        format!("mount -t ext4 {d}/mapper/hostlvm-config {}", mnt.display()),
        format!("umount {}", mnt.display()),
        "systemctl reboot".to_string(),
    ];
    assert_eq!(disk_cmds, want.iter().collect::<Vec<_>>());
}
