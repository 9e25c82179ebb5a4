//! `icos setupos`: the node provider's tool to put their inputs into a
//! SetupOS image, and the installer's checks over captured output.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use icos_setupos::inject::InjectInputs;
use icos_setupos::{InjectError, check_captured, failure_banner};
use serde_json::json;

use crate::exit::{Classify, CmdResult, Failure};

/// `icos setupos` subcommands.
#[derive(Debug, Subcommand)]
pub enum SetuposCmd {
    /// Write config.ini, the node operator key, SSH keys and deployment.json
    /// into a SetupOS disk image (or the USB stick it was written to),
    /// without mounting it.
    ///
    /// Every input is checked first and every problem is listed (exit 2,
    /// the image untouched). The files then go into the CONFIG partition
    /// (FAT: config.ini, node_operator_private_key.pem,
    /// ssh_authorized_keys/*) and the data partition (ext4: deployment.json),
    /// replacing files of the same name; the image is synced and every file
    /// is read back and compared.
    Inject(InjectArgs),
    /// Run the installer's checks (image age, hardware, network, clock) and
    /// the install plan over a directory of captured command output; print
    /// the result, and the failure banner when a check fails (exit 1).
    ///
    /// Files: cmdline, commit-time, now, config.json, lshw.json,
    /// lshw-memory.json or meminfo, nproc, lsblk.json, ip-addr.json,
    /// ip-route.json, ping6, ping4 (with IPv4), nns, chrony, timedatectl
    /// (see the icos-setupos crate docs for the command behind each).
    Check(CheckArgs),
    /// Show or set the installer's switches in a SetupOS image (or the USB
    /// stick it was written to), without mounting it: IC's kernel
    /// command-line switches for test machines.
    ///
    /// They live in the grubenv of the image's grub partition (variable
    /// setupos_switches), which GRUB appends to the kernel command line.
    /// Without a flag, prints the switches. With flags, changes those
    /// given, keeps the others, and reads the result back.
    Switches(SwitchesArgs),
}

/// Arguments of `icos setupos switches`.
#[derive(Debug, Args)]
pub struct SwitchesArgs {
    /// The SetupOS disk image or device.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// ic.setupos.check_hardware: false skips the hardware check.
    #[arg(long, value_name = "BOOL")]
    check_hardware: Option<bool>,
    /// ic.setupos.perform_installation: false runs the checks only.
    #[arg(long, value_name = "BOOL")]
    perform_installation: Option<bool>,
    /// ic.setupos.reboot_after_installation: false keeps the machine up
    /// after the install.
    #[arg(long, value_name = "BOOL")]
    reboot_after_installation: Option<bool>,
    /// Print the switches as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos setupos inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The SetupOS disk image or device to write into.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The node provider's config.ini.
    #[arg(long, value_name = "FILE")]
    config_ini: PathBuf,
    /// The node operator private key (PEM).
    #[arg(long, value_name = "FILE")]
    node_operator_key: Option<PathBuf>,
    /// SSH public keys: an authorized_keys file for the admin account, or a
    /// folder with files named admin, backup and readonly.
    #[arg(long, value_name = "FILE|DIR")]
    ssh_keys: Option<PathBuf>,
    /// The deployment.json (mainnet or testnet, NNS URLs, VM resources).
    #[arg(long, value_name = "FILE")]
    deployment_json: Option<PathBuf>,
}

/// Arguments of `icos setupos check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The directory of captured command output.
    #[arg(long, value_name = "DIR")]
    captured: PathBuf,
    /// Print the result as one JSON object on stdout (no banner).
    #[arg(long)]
    json: bool,
}

/// Runs an `icos setupos` subcommand.
pub fn run(cmd: SetuposCmd) -> CmdResult {
    match cmd {
        SetuposCmd::Inject(args) => inject(&args),
        SetuposCmd::Check(args) => check(&args),
        SetuposCmd::Switches(args) => switches(&args),
    }
}

fn inject(args: &InjectArgs) -> CmdResult {
    let inputs = InjectInputs {
        config_ini: args.config_ini.clone(),
        node_operator_key: args.node_operator_key.clone(),
        ssh_keys: args.ssh_keys.clone(),
        deployment_json: args.deployment_json.clone(),
    };
    // Check the inputs before looking for tools, so that a machine without
    // mtools still tells the node provider what is wrong with their files.
    let placements = icos_setupos::inject::plan_placements(&inputs).bad_input()?;
    let tools = icos_imagefs::Tools::discover()
        .context("finding the tools that write into the image")
        .failed()?;
    match icos_setupos::inject::write_placements(&tools, &args.image, placements) {
        Ok(done) => {
            for p in &done.files {
                println!(
                    "{} -> {} partition: {}",
                    p.source.display(),
                    p.target.partition_name(),
                    p.inside
                );
            }
            println!(
                "{} file(s) written to {} and verified",
                done.files.len(),
                args.image.display()
            );
            Ok(())
        }
        Err(e @ (InjectError::Inputs(_) | InjectError::NotSetupOs { .. })) => {
            Err(Failure::BadInput(e.into()))
        }
        Err(e) => Err(Failure::Failed(e.into())),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn check(args: &CheckArgs) -> CmdResult {
    if !args.captured.is_dir() {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "{}: not a directory of captured output",
            args.captured.display()
        )));
    }
    let run = check_captured(&args.captured, now()).bad_input()?;
    if args.json {
        let plan = match &run.plan {
            None => serde_json::Value::Null,
            Some(Ok(plan)) => json!({
                "system_drive": plan.system_drive,
                "extra_pvs": plan.extra_pvs,
                "guestos_stripes": plan.guestos_stripes(),
            }),
            Some(Err(e)) => json!({ "error": e }),
        };
        let out = json!({
            "passed": run.passed(),
            "switches": run.switches,
            "checks": run.report.checks,
            "plan": plan,
            "reasons": run.reasons(),
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
    } else {
        println!("{}", run.report);
        match &run.plan {
            None => println!("install plan: installation switched off"),
            Some(Ok(plan)) => println!("install plan: {plan}"),
            Some(Err(e)) => println!("install plan: FAILED: {e}"),
        }
        if !run.passed() {
            print!(
                "{}",
                failure_banner(&run.reasons(), std::io::stdout().is_terminal())
            );
        }
    }
    if run.passed() {
        Ok(())
    } else {
        Err(Failure::Failed(anyhow::anyhow!(
            "{} problem(s) stop the installation",
            run.reasons().len()
        )))
    }
}

fn switches(args: &SwitchesArgs) -> CmdResult {
    let classify = |e: icos_setupos::SwitchesError| match e {
        icos_setupos::SwitchesError::NotSetupOs { .. } => Failure::BadInput(e.into()),
        other => Failure::Failed(other.into()),
    };
    let mut s = icos_setupos::read_switches(&args.image).map_err(classify)?;
    let changes = [
        (args.check_hardware, &mut s.check_hardware),
        (args.perform_installation, &mut s.perform_installation),
        (
            args.reboot_after_installation,
            &mut s.reboot_after_installation,
        ),
    ];
    let mut changed = false;
    for (given, slot) in changes {
        if let Some(v) = given {
            changed |= *slot != v;
            *slot = v;
        }
    }
    if changed {
        icos_setupos::write_switches(&args.image, &s).map_err(classify)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).failed()?);
    } else {
        for (name, on) in [
            (icos_setupos::cmdline::CHECK_HARDWARE, s.check_hardware),
            (
                icos_setupos::cmdline::PERFORM_INSTALLATION,
                s.perform_installation,
            ),
            (
                icos_setupos::cmdline::REBOOT_AFTER_INSTALLATION,
                s.reboot_after_installation,
            ),
        ] {
            println!("{name}={on}");
        }
    }
    Ok(())
}
