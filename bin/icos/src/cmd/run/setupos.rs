//! `icos run setupos`: a whole node machine in QEMU. SetupOS installs onto
//! blank disks, reboots into HostOS, and HostOS starts GuestOS; the command
//! prints each stage and ends with GuestOS's boot marker and the node's
//! addresses. The logic is in `icos-setupos-vm`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use icos_deterministic_ips::{NodeType, format_mac};
use icos_setupos::Switches;
use icos_setupos_vm::{
    DEFAULT_DISK_SIZE, DEFAULT_DISKS, DEFAULT_MEMORY_MIB, Event, HostOsVia, Inputs, MAX_DISKS,
    PrepareSpec, RebootMode, Report, RunSpec, Session, State, format_size, parse_size, prepare,
};

use super::{WorkDir, default_work_parent};
use crate::exit::{Classify, CmdResult, Failure};

/// The default image: what `icos build setupos` writes.
pub const DEFAULT_SETUPOS_IMAGE: &str = "out/setupos/disk-img.tar.zst";

/// Arguments of `icos run setupos`.
#[derive(Debug, Args)]
pub struct SetuposArgs {
    /// The SetupOS image: a disk-img.tar.zst as built, or a raw disk. It is
    /// never modified (the machine gets a copy as its stick).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_SETUPOS_IMAGE)]
    image: PathBuf,
    /// Where the run folder is made [default: $TMPDIR, else /var/tmp]. It
    /// must allow sparse files: the target disks are mostly holes.
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// The node's config.ini, put onto the stick [default: the stick's own].
    /// For a QEMU machine its ipv6_gateway must be inside ipv6_prefix's /64
    /// and IPv4, if any, 10.0.2.x/24 via 10.0.2.2.
    #[arg(long, value_name = "FILE")]
    config_ini: Option<PathBuf>,
    /// The deployment.json, put onto the stick [default: the stick's own];
    /// it must set deployment.mgmt_mac (the machine has no BMC). NNS URLs at
    /// http://10.0.2.2:PORT reach this machine's 127.0.0.1:PORT.
    #[arg(long, value_name = "FILE")]
    deployment_json: Option<PathBuf>,
    /// The node operator private key (PEM), put onto the stick.
    #[arg(long, value_name = "FILE")]
    node_operator_key: Option<PathBuf>,
    /// SSH keys: a folder with admin, backup and/or readonly, put onto the
    /// stick.
    #[arg(long, value_name = "DIR")]
    ssh_keys: Option<PathBuf>,
    /// The installer's hardware check (ic.setupos.check_hardware); a QEMU
    /// machine is far below IC's thresholds, so `false` to install.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    check_hardware: bool,
    /// Install after the checks (ic.setupos.perform_installation).
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    perform_installation: bool,
    /// Reboot into HostOS after the install
    /// (ic.setupos.reboot_after_installation); with `false` the run ends at
    /// the installer's success banner.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    reboot_after_installation: bool,
    /// Number of blank target disks.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DISKS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DISKS)))]
    disks: u32,
    /// Size of each target disk (binary units: 1100G, 1.5T); the installer
    /// uses only drives of at least 1 TiB [default: 1100G].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    disk_size: Option<u64>,
    /// Machine memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB,
          value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    memory: u64,
    /// Seconds for the whole chain, from the machine's start to GuestOS's
    /// marker.
    #[arg(long, value_name = "SECS", default_value_t = 2400,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Serve no NTP on this machine (then the installer's clock check needs
    /// another time source).
    #[arg(long)]
    no_ntp: bool,
    /// Run QEMU with -no-reboot and start it again without the stick after
    /// the install, instead of rebooting in place and letting the firmware
    /// follow the installer's IC-OS boot entry.
    #[arg(long)]
    pull_stick: bool,
    /// Keep the run folder (stick, target disks, serial logs) and print it.
    #[arg(long)]
    keep: bool,
    /// After GuestOS's marker, keep the machine running until QEMU exits or
    /// this command is stopped (then the machine is stopped with it).
    #[arg(long)]
    stay: bool,
}

/// Bold on a terminal, plain otherwise.
fn emphasis(text: &str, tty: bool) -> String {
    if tty {
        format!("\u{1b}[1m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

fn say(text: &str) {
    eprintln!("icos run setupos: {text}");
}

fn print_report_times(report: &Report) {
    for (stage, took) in report.stage_durations() {
        say(&format!(
            "  {:<16} {:7.1} s",
            stage.as_str(),
            took.as_secs_f64()
        ));
    }
    say(&format!(
        "  {:<16} {:7.1} s",
        "total",
        report.ended.as_secs_f64()
    ));
}

/// Runs `icos run setupos`.
pub fn run_setupos(args: &SetuposArgs) -> CmdResult {
    let tools = icos_imagefs::Tools::discover().failed()?;
    let parent = args.work.clone().unwrap_or_else(default_work_parent);
    let work = WorkDir::create(&parent, "icos-setupos", args.keep).failed()?;
    let classify = |e: icos_setupos_vm::Error| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    };

    let spec = PrepareSpec {
        image: args.image.clone(),
        inputs: Inputs {
            config_ini: args.config_ini.clone(),
            deployment_json: args.deployment_json.clone(),
            node_operator_key: args.node_operator_key.clone(),
            ssh_keys: args.ssh_keys.clone(),
        },
        switches: Switches {
            check_hardware: args.check_hardware,
            perform_installation: args.perform_installation,
            reboot_after_installation: args.reboot_after_installation,
        },
        disks: args.disks,
        disk_size: args.disk_size.unwrap_or(DEFAULT_DISK_SIZE),
    };
    let prepared = prepare(&tools, &spec, work.path(), &mut |line| say(line)).map_err(classify)?;
    let net = prepared
        .node
        .net_plan(&prepared.deployment_source)
        .map_err(classify)?;
    for note in prepared.notes.iter().chain(&net.notes) {
        say(&format!("note: {note}"));
    }
    match (net.ipv6_prefix, net.ipv6_host) {
        (Some(prefix), Some(host)) => say(&format!(
            "network: router advertisements for {prefix}/64, gateway {host}; IPv4 10.0.2.0/24 via 10.0.2.2 (this machine)"
        )),
        _ => say("network: QEMU's default user network (the config gives no usable /64)"),
    }
    let interfaces = prepared.node.interfaces();

    let run_spec = RunSpec {
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        chronyd: (!args.no_ntp).then(|| PathBuf::from("chronyd")),
        reboot: if args.pull_stick {
            RebootMode::PullStick
        } else {
            RebootMode::Firmware
        },
        remove_on_death: !args.keep,
        ..RunSpec::default()
    };
    let tty = std::io::stderr().is_terminal();
    let stderr = std::io::stderr();
    let mut on_event = |event: Event<'_>| {
        let mut err = stderr.lock();
        match event {
            Event::Note(text) => {
                let _ = writeln!(err, "icos run setupos: {text}");
            }
            Event::NtpStarted { pid, config } => {
                let _ = writeln!(
                    err,
                    "icos run setupos: NTP: chronyd (pid {pid}, {}) serves this machine's clock at 10.0.2.2:123",
                    config.display()
                );
            }
            Event::MachineStarted {
                boot,
                pid,
                stick,
                serial_log,
                args,
            } => {
                tracing::debug!(?args, "QEMU arguments");
                let _ = writeln!(
                    err,
                    "icos run setupos: machine start {boot} (QEMU pid {pid}, TCG -cpu max,la57=off, {} MiB, {} target disk(s) of {}{}); console {}",
                    run_spec.memory_mib,
                    spec.disks,
                    format_size(spec.disk_size),
                    if stick {
                        ", stick plugged in"
                    } else {
                        ", no stick"
                    },
                    serial_log.display()
                );
            }
            Event::Line { line, .. } => {
                let _ = writeln!(err, "{line}");
            }
            Event::State { at, to, .. } => {
                let text = match to {
                    State::Running(stage) => format!("stage: {stage}"),
                    other => other.to_string(),
                };
                let _ = writeln!(
                    err,
                    "{}",
                    emphasis(&format!("==> [{:7.1} s] {text}", at.as_secs_f64()), tty)
                );
            }
        }
    };
    let mut session =
        Session::start(prepared, &net, run_spec.clone(), &mut on_event).map_err(classify)?;
    say(&format!(
        "booting {} (UEFI, {} vCPUs, {} MiB); up to {} s for the whole chain",
        args.image.display(),
        run_spec.vcpus,
        run_spec.memory_mib,
        args.timeout
    ));
    let report = session.run(&mut on_event).failed()?;

    say(&format!(
        "{} after {:.1} s",
        report.state,
        report.ended.as_secs_f64()
    ));
    print_report_times(&report);
    if report.succeeded() {
        if let Some(line) = &report.end_line {
            println!("{line}");
        }
        match report.hostos_via {
            Some(HostOsVia::BootEntry) => {
                println!(
                    "HostOS reached by the firmware's IC-OS boot entry (stick still plugged in)"
                );
            }
            Some(HostOsVia::StickPulled) => {
                println!("HostOS reached by starting the machine again without the stick");
            }
            None => {}
        }
        if let Some(all) = &interfaces {
            println!("{:<16} {:<18} IPv6", "system", "MAC");
            for i in all.iter().filter(|i| {
                matches!(
                    i.node_type,
                    NodeType::SetupOS | NodeType::HostOS | NodeType::GuestOS
                )
            }) {
                println!(
                    "{:<16} {:<18} {}",
                    i.node_type.as_str(),
                    format_mac(&i.mac),
                    i.ipv6
                );
            }
        }
        let _ = std::io::stdout().flush();
        if args.stay {
            say("running until QEMU exits or this command is stopped");
            session
                .stay(&mut |line| eprintln!("{line}"), &|| true)
                .failed()?;
        }
        session.stop().failed()?;
        if work.kept() {
            say(&format!("kept {}", work.path().display()));
        }
        return Ok(());
    }
    session.stop().failed()?;
    if !report.reasons.is_empty() {
        eprintln!("The installer stopped because:");
        for reason in &report.reasons {
            eprintln!("  - {reason}");
        }
    } else if !report.tail.is_empty() {
        say(&format!("last {} console lines:", report.tail.len()));
        for line in &report.tail {
            eprintln!("  | {line}");
        }
    }
    if let Some(out) = report
        .qemu_output
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        say(&format!("QEMU said:\n{out}"));
    }
    if work.kept() {
        say(&format!("kept {}", work.path().display()));
    }
    Err(Failure::Failed(anyhow!(
        "the node did not come up: {}",
        report.state
    )))
}
