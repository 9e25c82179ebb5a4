use super::*;
use crate::clean_line;

use Stage::*;

const ALL_SIGNALS: [Signal; 17] = [
    Signal::SetupOsGrub,
    Signal::InstallerStarted,
    Signal::InstallStarted,
    Signal::InstallationSkipped,
    Signal::SetupSucceeded,
    Signal::SetupFailed,
    Signal::HostOsGrub,
    Signal::HostOsUp,
    Signal::GuestOsLaunched,
    Signal::GuestOsUp,
    Signal::BootFailure(System::SetupOs),
    Signal::BootFailure(System::HostOs),
    Signal::BootFailure(System::GuestOs),
    Signal::GuestOsNoMarker,
    Signal::SoftLockup,
    Signal::KernelPanic,
    Signal::GuestStall,
];

fn all_states() -> Vec<State> {
    let mut states: Vec<State> = Stage::ALL.iter().map(|s| State::Running(*s)).collect();
    states.extend([End::GuestOsUp, End::Installed, End::ChecksPassed].map(State::Done));
    states.push(State::Failed {
        during: Checks,
        failure: Failure::SetupFailed,
    });
    states
}

fn goals() -> [Goal; 4] {
    [(true, true), (true, false), (false, true), (false, false)]
        .map(|(install, reboot)| Goal { install, reboot })
}

fn failed(during: Stage, failure: Failure) -> State {
    State::Failed { during, failure }
}

/// The expected state after `signal` in `stage` with the default goal
/// (install, then reboot), written out for every pair.
fn expected(stage: Stage, signal: Signal) -> State {
    let run = State::Running;
    let same = run(stage);
    match (stage, signal) {
        (_, Signal::SoftLockup) => failed(stage, Failure::SoftLockup),
        (_, Signal::KernelPanic) => failed(stage, Failure::KernelPanic),
        (_, Signal::SetupFailed) => failed(stage, Failure::SetupFailed),
        (_, Signal::BootFailure(System::SetupOs)) => {
            failed(stage, Failure::BootFailure(System::SetupOs))
        }

        (SetupOsBooting, Signal::SetupOsGrub) => same,
        (_, Signal::SetupOsGrub) => failed(stage, Failure::InstallerBootedAgain),

        (SetupOsBooting, Signal::InstallerStarted) => run(Checks),
        (_, Signal::InstallerStarted) => same,

        (SetupOsBooting | Checks, Signal::InstallStarted) => run(Installing),
        (_, Signal::InstallStarted) => same,

        // The goal installs: the "skipped" line means nothing.
        (_, Signal::InstallationSkipped) => same,

        (SetupOsBooting | Checks | Installing, Signal::SetupSucceeded) => run(Rebooting),
        (_, Signal::SetupSucceeded) => same,

        (
            SetupOsBooting | Checks | Installing | Rebooting,
            Signal::HostOsGrub | Signal::HostOsUp,
        ) => run(HostOsBooting),
        (_, Signal::HostOsGrub | Signal::HostOsUp) => same,

        (Rebooting | HostOsBooting, Signal::GuestOsLaunched) => run(GuestOsBooting),
        (_, Signal::GuestOsLaunched) => same,

        (Rebooting | HostOsBooting | GuestOsBooting, Signal::GuestOsUp) => {
            State::Done(End::GuestOsUp)
        }
        (_, Signal::GuestOsUp) => same,

        (
            Rebooting | HostOsBooting | GuestOsBooting,
            Signal::BootFailure(s @ (System::HostOs | System::GuestOs)),
        ) => failed(stage, Failure::BootFailure(s)),
        (_, Signal::BootFailure(_)) => same,

        (Rebooting | HostOsBooting | GuestOsBooting, Signal::GuestOsNoMarker) => {
            failed(stage, Failure::GuestOsNoMarker)
        }
        (_, Signal::GuestOsNoMarker) => same,

        (Rebooting | HostOsBooting | GuestOsBooting, Signal::GuestStall) => {
            failed(stage, Failure::GuestStall)
        }
        (_, Signal::GuestStall) => same,
    }
}

#[test]
fn every_stage_and_signal_with_the_default_goal() {
    for stage in Stage::ALL {
        for signal in ALL_SIGNALS {
            assert_eq!(
                step(State::Running(stage), signal, Goal::default()),
                expected(stage, signal),
                "{stage:?} + {signal:?}"
            );
        }
    }
}

#[test]
fn the_goal_only_changes_what_success_and_skipping_mean() {
    for goal in goals() {
        for stage in Stage::ALL {
            for signal in ALL_SIGNALS {
                let got = step(State::Running(stage), signal, goal);
                let want = match signal {
                    Signal::SetupSucceeded if stage.in_setupos() => {
                        match (goal.install, goal.reboot) {
                            (false, _) => State::Done(End::ChecksPassed),
                            (true, false) => State::Done(End::Installed),
                            (true, true) => State::Running(Rebooting),
                        }
                    }
                    Signal::InstallationSkipped if stage.in_setupos() && !goal.install => {
                        State::Done(End::ChecksPassed)
                    }
                    _ => expected(stage, signal),
                };
                assert_eq!(got, want, "{goal:?} {stage:?} + {signal:?}");
            }
        }
    }
}

#[test]
fn terminal_states_never_change() {
    for goal in goals() {
        for state in all_states().into_iter().filter(|s| s.is_terminal()) {
            for signal in ALL_SIGNALS {
                assert_eq!(step(state, signal, goal), state, "{state:?} + {signal:?}");
            }
            assert_eq!(on_timeout(state), state);
            assert_eq!(on_machine_exit(state, true), state);
            assert_eq!(on_machine_exit(state, false), state);
        }
    }
}

#[test]
fn stages_never_move_back() {
    for goal in goals() {
        for stage in Stage::ALL {
            for signal in ALL_SIGNALS {
                if let State::Running(next) = step(State::Running(stage), signal, goal) {
                    assert!(next >= stage, "{stage:?} + {signal:?} -> {next:?}");
                }
            }
        }
    }
}

#[test]
fn timeouts_and_exits_fail_running_stages() {
    for stage in Stage::ALL {
        assert_eq!(
            on_timeout(State::Running(stage)),
            failed(stage, Failure::Timeout)
        );
        assert_eq!(
            on_machine_exit(State::Running(stage), false),
            failed(stage, Failure::MachineStopped)
        );
        let restart = on_machine_exit(State::Running(stage), true);
        if stage == Rebooting {
            assert_eq!(restart, State::Running(Rebooting));
        } else {
            assert_eq!(restart, failed(stage, Failure::MachineStopped));
        }
    }
}

/// Lines as the machine prints them: OVMF, GRUB, kernels, the installer,
/// HostOS's units and its GuestOS runner.
#[test]
fn console_lines_are_classified() {
    let cases: &[(&str, Option<Signal>)] = &[
        (
            "BdsDxe: loading Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x2,0x0)",
            None,
        ),
        (
            "GRUB: booting SetupOS from (hd0,gpt5) ic.setupos.check_hardware=false",
            Some(Signal::SetupOsGrub),
        ),
        ("[    0.000000] Linux version 6.1.0-41-amd64", None),
        (
            "initramfs: root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7",
            None,
        ),
        (
            "SETUPOS BOOT FAILURE: no BOOT_ARGS in (hd0,gpt5)/boot_args",
            Some(Signal::BootFailure(System::SetupOs)),
        ),
        (
            "INTERNET COMPUTER - SETUP - FAILED: SetupOS cannot start: dm-verity: veritysetup open failed",
            Some(Signal::SetupFailed),
        ),
        ("\u{1b}[1;31m##############", None),
        (
            "                    INTERNET COMPUTER - SETUP - FAILED",
            Some(Signal::SetupFailed),
        ),
        (
            "                  INTERNET COMPUTER - SETUP - SUCCESSFUL",
            Some(Signal::SetupSucceeded),
        ),
        (
            "GRUB: grubenv before: boot_alternative=A boot_cycle=install",
            Some(Signal::HostOsGrub),
        ),
        (
            "GRUB: booting slot A from (lvm/hostlvm-A_boot)",
            Some(Signal::HostOsGrub),
        ),
        (
            "HOSTOS BOOT SUCCESS uptime=41.2 dfinity.system=A root=/dev/mapper/vroot ro failed_units=[]",
            Some(Signal::HostOsUp),
        ),
        (
            "HOSTOS BOOT FAILURE: hostlvm partition PARTUUID=735a not found",
            Some(Signal::BootFailure(System::HostOs)),
        ),
        (
            "2026-11-26T09:30:00Z  INFO icos_guestos_vm::daemon: GuestOS VM launched pid=812 slot=\"A\"",
            Some(Signal::GuestOsLaunched),
        ),
        (
            "icos-guestos-vm[700]: guestos_console: [    1.2] Linux version 6.1.0",
            None,
        ),
        (
            "icos-guestos-vm[700]: guestos_console: GUESTOS BOOT SUCCESS version=abc role=replica",
            Some(Signal::GuestOsUp),
        ),
        (
            "icos-guestos-vm[700]: guestos_console: GUESTOS BOOT FAILURE: no config",
            Some(Signal::BootFailure(System::GuestOs)),
        ),
        // A guest's kernel troubles are the guest's, not HostOS's: its
        // stalls are told apart, its panic ends in its own marker.
        (
            "guestos_console: [  22.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
            Some(Signal::GuestStall),
        ),
        (
            "icos-guestos-vm[398]: INFO guestos_console: [   31.585478] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            Some(Signal::GuestStall),
        ),
        (
            "icos-guestos-vm[400]: INFO guestos_console: [  243.054740] INFO: task mount:127 blocked for more than 120 seconds.",
            Some(Signal::GuestStall),
        ),
        ("guestos_console: Kernel panic - not syncing: VFS", None),
        (
            "INFO icos_guestos_vm::daemon: GuestOS booted 88.1 s after the VM start: GUESTOS BOOT SUCCESS version=abc",
            Some(Signal::GuestOsUp),
        ),
        (
            "ERROR icos_guestos_vm::daemon: GuestOS printed no boot marker within 300s",
            Some(Signal::GuestOsNoMarker),
        ),
        (
            "[  101.5] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [qemu-system-x86:900]",
            Some(Signal::SoftLockup),
        ),
        (
            "[    3.1] Kernel panic - not syncing: Attempted to kill init!",
            Some(Signal::KernelPanic),
        ),
        (
            "[   63.2] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            Some(Signal::SoftLockup),
        ),
        ("", None),
    ];
    for (line, want) in cases {
        assert_eq!(classify(&clean_line(line)), *want, "{line}");
    }
    // The installer's own lines, from its step table and constants.
    let step_line = |n: usize, step: Step| format!("[{n}/10] {step}: {}", step.describe());
    let installer: Vec<(String, Option<Signal>)> = vec![
        (
            "SetupOS installer: 10 steps: config, capture, checks, preflight, setup-disk, \
             install-hostos, install-guestos, setup-hostos-config, success, reboot"
                .into(),
            Some(Signal::InstallerStarted),
        ),
        (step_line(1, Step::Config), Some(Signal::InstallerStarted)),
        (step_line(2, Step::Capture), Some(Signal::InstallerStarted)),
        (step_line(3, Step::Checks), Some(Signal::InstallerStarted)),
        (step_line(4, Step::Preflight), Some(Signal::InstallStarted)),
        (step_line(5, Step::SetupDisk), Some(Signal::InstallStarted)),
        (
            step_line(6, Step::InstallHostOs),
            Some(Signal::InstallStarted),
        ),
        (
            step_line(7, Step::InstallGuestOs),
            Some(Signal::InstallStarted),
        ),
        (
            step_line(8, Step::SetupHostOsConfig),
            Some(Signal::InstallStarted),
        ),
        (step_line(9, Step::Success), None),
        (step_line(10, Step::Reboot), None),
        ("install-hostos: 35% (35840 of 102400 MiB)".into(), None),
        (
            format!("{CHECKS_ONLY_LINE}: installation is switched off"),
            Some(Signal::InstallationSkipped),
        ),
        (SUCCESS_LINE.into(), Some(Signal::SetupSucceeded)),
        (
            format!("{FAILURE_LINE} at checks: config: ipv6_prefix"),
            Some(Signal::SetupFailed),
        ),
        // A step name alone is no step line.
        ("checks: checking the image age".into(), None),
    ];
    for (line, want) in &installer {
        assert_eq!(classify(line), *want, "{line}");
    }
}

/// A whole console, as the installer and HostOS print it, walked through
/// the tracker: every stage in order, ending with GuestOS up.
#[test]
fn a_whole_chain_walks_every_stage() {
    let success = icos_setupos::success_banner(true, true);
    let mut console: Vec<String> = vec![
        "BdsDxe: loading Boot0002 \"UEFI QEMU QEMU USB HARDDRIVE\"".into(),
        "GRUB: booting SetupOS from (hd2,gpt5)".into(),
        "[    2.0] Run /init as init process".into(),
        "SetupOS installer: 10 steps: config, capture, checks".into(),
        format!("[1/10] config: {}", Step::Config.describe()),
        format!("[3/10] checks: {}", Step::Checks.describe()),
        format!("[4/10] preflight: {}", Step::Preflight.describe()),
        format!("[6/10] install-hostos: {}", Step::InstallHostOs.describe()),
    ];
    console.extend(success.lines().map(str::to_owned));
    console.push(SUCCESS_LINE.into());
    console.extend(
        [
            "[  300.0] reboot: Restarting system",
            "BdsDxe: loading Boot0004 \"IC-OS\"",
            "GRUB: grubenv before: boot_alternative=A boot_cycle=install",
            "INFO icos_guestos_vm::daemon: GuestOS VM launched pid=1",
            "HOSTOS BOOT SUCCESS uptime=50.0",
            "guestos_console: [ 0.1] Linux version",
            "guestos_console: GUESTOS BOOT SUCCESS version=v1",
        ]
        .map(str::to_owned),
    );
    let mut state = State::START;
    let mut seen = vec![state];
    for line in &console {
        if let Some(signal) = classify(&clean_line(line)) {
            state = step(state, signal, Goal::default());
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
    }
    let mut want: Vec<State> = Stage::ALL.iter().map(|s| State::Running(*s)).collect();
    want.push(State::Done(End::GuestOsUp));
    assert_eq!(seen, want);
}

#[test]
fn the_service_prefix_goes_and_nothing_else() {
    for (line, want) in [
        (
            "[   16.1] icos-setupos-install[408]:   - a reason",
            "  - a reason",
        ),
        ("[16.119053] setupos.sh: x: y", "x: y"),
        ("[    0.000000] Linux version 6.1", "Linux version 6.1"),
        (
            "[  OK  ] Started chrony.service",
            "[  OK  ] Started chrony.service",
        ),
        ("plain: line", "plain: line"),
        ("[1.0]no space", "[1.0]no space"),
        ("", ""),
    ] {
        assert_eq!(strip_service_prefix(line), want, "{line}");
    }
}

#[test]
fn the_failure_banner_gives_its_reasons() {
    let reasons = vec![
        "config: config.ini: ipv6_prefix: 'zz:1' is not an IPv6 prefix".to_owned(),
        "hardware: 2 CPU threads; at least 64 are needed".to_owned(),
    ];
    let banner = icos_setupos::failure_banner(&reasons, true);
    let mut collect = BannerReasons::new();
    let mut lines = banner.lines();
    for line in lines.by_ref() {
        if collect.push(&clean_line(line)) {
            break;
        }
    }
    assert!(collect.started());
    assert!(collect.complete());
    assert_eq!(collect.reasons(), reasons.as_slice());
    // The closing rule ends it: nothing was left but the colour reset.
    assert!(lines.all(|l| clean_line(l).is_empty()));

    let mut early = BannerReasons::new();
    assert!(!early.push("[ 1.0] kernel noise"));
    assert!(
        early.push("INTERNET COMPUTER - SETUP - FAILED: SetupOS cannot start: insmod virtio_blk")
    );
    assert_eq!(early.reasons(), ["SetupOS cannot start: insmod virtio_blk"]);

    // As SetupOS's console shows it: each line behind systemd's prefix.
    let recorded = [
        "[   56.549729] icos-setupos-install[409]: ##############################################################################",
        "[   56.555620] icos-setupos-install[409]:                       INTERNET COMPUTER - SETUP - FAILED",
        "[   56.556655] icos-setupos-install[409]: ##############################################################################",
        "[   56.557413] icos-setupos-install[409]: The installation stopped because:",
        "[   56.558011] icos-setupos-install[409]:   - `pvresize /dev/vda3` failed (exit status 5): Failed to store physical volume \"/dev/vda3\" in volume group \"hostlvm\"",
        "[   56.558772] icos-setupos-install[409]:   - the drives were being written when this happened (install-hostos); boot the installer again to start over",
        "[   56.559545] icos-setupos-install[409]: Nothing was written to the drives unless a reason above says so.",
        "[   56.563509] icos-setupos-install[409]: troubleshooting guide for node deployment errors.",
        "[   56.564634] icos-setupos-install[409]: ##############################################################################",
        "[   56.565271] icos-setupos-install[409]: SETUPOS INSTALL FAILED at install-hostos: ...",
    ];
    let mut prefixed = BannerReasons::new();
    let done: Vec<bool> = recorded.iter().map(|l| prefixed.push(l)).collect();
    assert_eq!(done.iter().position(|d| *d), Some(8));
    assert_eq!(
        prefixed.reasons(),
        [
            "`pvresize /dev/vda3` failed (exit status 5): Failed to store physical volume \"/dev/vda3\" in volume group \"hostlvm\"",
            "the drives were being written when this happened (install-hostos); boot the installer again to start over",
        ]
    );
    assert_eq!(classify(recorded[1]), Some(Signal::SetupFailed));

    let mut empty = BannerReasons::new();
    for line in icos_setupos::failure_banner(&[], false).lines() {
        empty.push(line);
    }
    assert_eq!(empty.reasons(), ["(no reason was given)"]);
    assert!(empty.complete());
}

#[test]
fn only_kernel_stalls_and_a_silent_guest_are_nested_stalls() {
    let stalls = [
        Failure::SoftLockup,
        Failure::KernelPanic,
        Failure::GuestStall,
        Failure::GuestOsNoMarker,
    ];
    let others = [
        Failure::SetupFailed,
        Failure::BootFailure(System::SetupOs),
        Failure::BootFailure(System::HostOs),
        Failure::BootFailure(System::GuestOs),
        Failure::InstallerBootedAgain,
        Failure::Timeout,
        Failure::MachineStopped,
    ];
    for f in stalls {
        assert!(f.is_nested_stall(), "{f:?}");
    }
    for f in others {
        assert!(!f.is_nested_stall(), "{f:?}");
    }
}
