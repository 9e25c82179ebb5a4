//! `icos slots`: the A/B slots of a GuestOS disk: show the boot state,
//! install an upgrade image into the spare slot, confirm the booted slot.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use icos_slots::{SlotDisk, SlotsError, Status};

use crate::exit::{Classify, CmdResult, Failure};

/// `icos slots` subcommands.
#[derive(Debug, Subcommand)]
pub enum SlotsCmd {
    /// Show the boot state in grubenv (boot_alternative, boot_cycle), the
    /// running, next-boot and upgrade-target slots, and what each slot
    /// partition holds (ext4, luks, empty, other).
    Show(ShowArgs),
    /// Install an upgrade image (update-img.tar.zst: boot.img, root.img,
    /// VERSION.TXT) into the spare slot and commit it for a trial boot.
    ///
    /// The spare slot is invalidated first, the images are streamed in
    /// (a member larger than its partition is refused), the var header is
    /// wiped, everything is synced, read back and compared by SHA-256, and
    /// only then grubenv becomes boot_alternative=<spare>
    /// boot_cycle=first_boot. Refused unless boot_cycle is stable.
    Install(InstallArgs),
    /// Confirm the booted slot, as the running system does once it is
    /// healthy: failsafe_check becomes stable (stable stays as it is;
    /// first_boot is refused, the committed slot has not booted yet).
    Confirm(ConfirmArgs),
}

/// Arguments of `icos slots show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The GuestOS disk: a raw disk image or a block device.
    #[arg(long, value_name = "FILE")]
    disk: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos slots install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The GuestOS disk: a raw disk image or a block device.
    #[arg(long, value_name = "FILE")]
    disk: PathBuf,
    /// The upgrade image (tar, zstd-compressed or plain); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    update: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos slots confirm`.
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The GuestOS disk: a raw disk image or a block device.
    #[arg(long, value_name = "FILE")]
    disk: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs an `icos slots` subcommand.
pub fn run(cmd: SlotsCmd) -> CmdResult {
    match cmd {
        SlotsCmd::Show(args) => show(&args),
        SlotsCmd::Install(args) => install(&args),
        SlotsCmd::Confirm(args) => confirm(&args),
    }
}

/// Exit 2 for input at fault, 1 otherwise.
fn classify(e: SlotsError) -> Failure {
    if e.is_bad_input() {
        Failure::BadInput(e.into())
    } else {
        Failure::Failed(e.into())
    }
}

fn open(disk: &Path, write: bool) -> CmdResult<SlotDisk<std::fs::File>> {
    icos_slots::open(disk, write).map_err(classify)
}

fn print_json(value: &impl serde::Serialize) -> CmdResult {
    println!("{}", serde_json::to_string_pretty(value).failed()?);
    Ok(())
}

fn print_status(st: &Status) {
    println!("disk: {} ({} bytes)", st.disk.display(), st.disk_size);
    println!(
        "grubenv ({}): boot_alternative={} boot_cycle={}",
        st.grub_partition, st.boot_alternative, st.boot_cycle
    );
    println!(
        "running: {}  next boot: {}  upgrade target: {}",
        st.running_slot,
        st.next_boot_slot,
        st.upgrade_target
            .as_deref()
            .unwrap_or("none (boot_cycle is not stable)")
    );
    for s in &st.slots {
        println!(
            "slot {}: {}; {} (#{}) {}, {} (#{}) {}, {} (#{}) {}",
            s.slot,
            if s.bootable {
                "bootable"
            } else {
                "not bootable"
            },
            s.boot.part.name,
            s.boot.part.number,
            s.boot.content.as_str(),
            s.root.part.name,
            s.root.part.number,
            s.root.content.as_str(),
            s.var.part.name,
            s.var.part.number,
            s.var.content.as_str(),
        );
    }
}

fn show(args: &ShowArgs) -> CmdResult {
    let st = open(&args.disk, false)?.status().map_err(classify)?;
    if args.json {
        print_json(&st)
    } else {
        print_status(&st);
        Ok(())
    }
}

fn install(args: &InstallArgs) -> CmdResult {
    let stdin = args.update.as_os_str() == "-";
    let input: Box<dyn Read + Send> = if stdin {
        Box::new(std::io::stdin())
    } else {
        let file = std::fs::File::open(&args.update)
            .with_context(|| format!("opening upgrade image {}", args.update.display()));
        match file {
            Ok(f) => Box::new(f),
            Err(e) if !args.update.exists() => return Err(Failure::BadInput(e)),
            Err(e) => return Err(Failure::Failed(e)),
        }
    };
    let mut disk = open(&args.disk, true)?;
    let label = if stdin {
        PathBuf::from("<stdin>")
    } else {
        args.update.clone()
    };
    let report = disk
        .install(input, &label, &mut |step| eprintln!("icos slots: {step}"))
        .map_err(classify)?;
    if args.json {
        return print_json(&report);
    }
    for m in &report.members {
        println!(
            "{} -> {}: {} bytes ({} data, {} zeroed by {}), sha256 of the data {}",
            m.member,
            m.partition,
            m.size,
            m.data_bytes,
            m.zeroed_bytes,
            m.zero_method.unwrap_or("-"),
            m.data_sha256
        );
    }
    println!(
        "slot {} holds version {}; grubenv: {} -> {} (write {:.1} s, verify {:.1} s)",
        report.slot, report.version, report.before, report.after, report.write_s, report.verify_s
    );
    Ok(())
}

fn confirm(args: &ConfirmArgs) -> CmdResult {
    let report = open(&args.disk, true)?.confirm().map_err(classify)?;
    if args.json {
        return print_json(&report);
    }
    if report.changed {
        println!(
            "slot {} confirmed: {} -> {}",
            report.slot, report.before, report.after
        );
    } else {
        println!("slot {} was stable already: {}", report.slot, report.after);
    }
    Ok(())
}
