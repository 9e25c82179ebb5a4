//! `icos run`: boot a built image in QEMU and wait for its boot marker.
//!
//! `icos run guestos` never touches the artifact: a `disk-img.tar.zst` is
//! extracted (holes preserved) into a private work folder, and a raw disk
//! is booted through a qcow2 overlay that takes every write (or, with
//! `--in-place`, the raw disk itself, which then keeps them). The work
//! folder also holds the CONFIG media, OVMF's variable store and the
//! serial log; it is removed at the end unless `--keep` is given.
//!
//! QEMU runs in its own process group and is killed when the boot ends,
//! whatever the outcome. A small watchdog process (`icos_qemu::Reaper`: `sh`, in a process
//! group of its own) holds the read end of a pipe from `icos`: if `icos`
//! dies without cleaning up (Ctrl-C, SIGKILL), the pipe closes and the
//! watchdog kills QEMU's process group and removes the work folder.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use icos_config::{GuestOSConfig, GuestVmType};
use icos_config_media::{ExtraPaths, Extras, build_media, dev_guestos_config};
use icos_deterministic_ips::{NodeType, deterministic_mac};
use icos_qemu::{
    Accel, Console, DEFAULT_QEMU, Discard, Disk, DiskFormat, Firmware, HostForward, NetBackend,
    Nic, Outcome, Ovmf, ProbeOptions, Protocol, Reaper, Runner, UserNet, VmConfig, Watch,
    probe_accel,
};
use serde::Serialize;

use crate::exit::{Classify, CmdResult, Failure};

mod setupos;

/// The default image: what `icos build guestos` writes.
pub const DEFAULT_GUESTOS_IMAGE: &str = "out/guestos/disk-img.tar.zst";
/// The disk inside `disk-img.tar.zst`.
const DISK_MEMBER: &str = "disk.img";
/// How many console lines a failure shows.
const TAIL_LINES: usize = 30;
/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// `icos run` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Boot a GuestOS disk under OVMF UEFI with a CONFIG media, stream its
    /// serial console, and wait for GUESTOS BOOT SUCCESS (exit 0) or
    /// GUESTOS BOOT FAILURE, a timeout or a QEMU exit (exit 1, with the
    /// last console lines).
    Guestos(GuestosArgs),
    /// Run a whole node machine: SetupOS (from a copy of the image, as the
    /// machine's USB stick) checks the machine and installs HostOS and
    /// GuestOS onto blank sparse disks, the machine reboots into HostOS,
    /// and HostOS starts GuestOS. Prints each stage; exit 0 when GuestOS's
    /// boot marker arrives through HostOS (with the node's addresses), 1
    /// on the installer's failure banner (with its reasons), a boot
    /// failure or a timeout, 2 on bad input. Needs root (chronyd serves
    /// the machine's clock on port 123).
    Setupos(setupos::SetuposArgs),
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM only if a real KVM boot probe passes (cached), else TCG.
    Auto,
    /// Always TCG (software emulation).
    Tcg,
    /// Always KVM.
    Kvm,
}

/// Arguments of `icos run guestos`.
#[derive(Debug, Args)]
pub struct GuestosArgs {
    /// The image: a disk-img.tar.zst as built, or a raw disk.img. It is
    /// never modified, unless --in-place is given.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_GUESTOS_IMAGE)]
    image: PathBuf,
    /// Boot a raw disk itself instead of a throwaway overlay over it: the
    /// guest's writes (GRUB's grubenv updates among them) stay on the disk,
    /// so successive runs follow the A/B boot cycle.
    #[arg(long)]
    in_place: bool,
    /// The GuestOS config (JSON) to put on the CONFIG media [default: a
    /// built-in testnet dev config, derived the way HostOS derives it].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SSH keys for the media: a folder with admin, backup and/or readonly.
    #[arg(long, value_name = "DIR")]
    ssh_keys: Option<PathBuf>,
    /// The node operator private key (PEM) for the media.
    #[arg(long, value_name = "FILE")]
    node_operator_key: Option<PathBuf>,
    /// An NNS public key override (PEM) for the media.
    #[arg(long, value_name = "FILE")]
    nns_key_override: Option<PathBuf>,
    /// The boundary router's routing table (JSON) for the media
    /// (Boundary-GuestOS).
    #[arg(long, value_name = "FILE")]
    routing_table: Option<PathBuf>,
    /// A registry trust root (`root.json` of `icos registry init`) for the
    /// media, used by an image built without one (dev/testnet networks).
    #[arg(long, value_name = "FILE")]
    registry_root: Option<PathBuf>,
    /// Forward 127.0.0.1:HOST_PORT on this machine to GUEST_PORT of the
    /// guest (TCP; repeatable), e.g. 8080:80.
    #[arg(long = "forward", value_name = "HOST_PORT:GUEST_PORT", value_parser = parse_forward)]
    forwards: Vec<HostForward>,
    /// Let the guest open connections out through QEMU's user network
    /// (otherwise it reaches nothing): 10.0.2.2 is this machine's loopback,
    /// 10.0.2.3 its DNS. Give the guest an IPv4 config in 10.0.2.0/24.
    #[arg(long)]
    allow_outbound: bool,
    /// After the success marker, keep the VM running until QEMU exits or
    /// this command is stopped (SIGINT, SIGTERM: QEMU is stopped with it).
    #[arg(long)]
    stay: bool,
    /// Seconds to wait for a boot marker.
    #[arg(long, value_name = "S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    vcpus: u32,
    /// The accelerator.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Where the work folder is made [default: $TMPDIR, else /var/tmp].
    /// It must allow sparse files: an extracted disk is mostly holes.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work folder (disk, CONFIG media, serial log) and print it.
    #[arg(long)]
    keep: bool,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `HOST_PORT:GUEST_PORT` (TCP), the host side on 127.0.0.1.
fn parse_forward(s: &str) -> Result<HostForward, String> {
    let (host, guest) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected HOST_PORT:GUEST_PORT"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{p}' in '{s}' is not a port (1-65535)"))
    };
    Ok(HostForward {
        protocol: Protocol::Tcp,
        host_addr: Some(std::net::Ipv4Addr::LOCALHOST),
        host_port: port(host)?,
        guest_addr: None,
        guest_port: port(guest)?,
    })
}

/// Streams the console until QEMU exits (`--stay`).
fn stay(vm: &mut icos_qemu::RunningVm) -> Result<(), icos_qemu::RunError> {
    let stderr = std::io::stderr();
    let mut print = |line: &str| {
        let _ = writeln!(stderr.lock(), "{}", icos_qemu::clean_line(line));
    };
    while !vm.pump(&mut print)? {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Runs an `icos run` subcommand.
pub fn run(cmd: RunCmd) -> CmdResult {
    match cmd {
        RunCmd::Guestos(args) => run_guestos(&args),
        RunCmd::Setupos(args) => setupos::run_setupos(&args),
    }
}

/// A private folder removed on drop unless kept.
#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `<parent>/<prefix>-<pid>-<n>` (a new folder, mode 0700).
    pub(crate) fn create(parent: &Path, prefix: &str, keep: bool) -> anyhow::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        for attempt in 0..100u32 {
            let path = parent.join(format!(
                "{prefix}-{}-{:08x}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(anyhow!(
            "could not create a work folder in {}",
            parent.display()
        ))
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it stays after drop.
    pub(crate) fn kept(&self) -> bool {
        self.keep
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}

/// The default parent of work folders: `$TMPDIR`, else `/var/tmp` (disk
/// backed on most systems, unlike a tmpfs `/tmp`).
pub(crate) fn default_work_parent() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// What kind of file the image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    /// A tar (possibly zstd-compressed) holding `disk.img`.
    Archive,
    /// A raw disk.
    Raw,
}

fn image_kind(path: &Path) -> CmdResult<ImageKind> {
    let meta = std::fs::metadata(path)
        .with_context(|| {
            format!(
                "image {}: not found (build it with `icos build guestos`, or pass --image)",
                path.display()
            )
        })
        .bad_input()?;
    if !meta.is_file() {
        return Err(Failure::BadInput(anyhow!(
            "image {}: not a regular file",
            path.display()
        )));
    }
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening image {}", path.display()))
        .bad_input()?;
    let n = read_up_to(&mut file, &mut head)
        .with_context(|| format!("reading image {}", path.display()))
        .bad_input()?;
    let head = &head[..n];
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if head.starts_with(&ZSTD_MAGIC) || is_tar {
        Ok(ImageKind::Archive)
    } else {
        Ok(ImageKind::Raw)
    }
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Checks that a disk has a readable GPT (what OVMF boots from).
fn check_gpt(disk: &Path, shown: &Path) -> CmdResult {
    icos_layout::read_gpt_image(disk)
        .map_err(|e| anyhow!("image {}: no usable GPT: {e}", shown.display()))
        .bad_input()?;
    Ok(())
}

/// Makes the disk QEMU boots: extracted from an archive, or a qcow2
/// overlay over a raw disk.
fn prepare_disk(
    image: &Path,
    kind: ImageKind,
    in_place: bool,
    work: &Path,
) -> CmdResult<(PathBuf, DiskFormat)> {
    match kind {
        ImageKind::Archive => {
            let started = Instant::now();
            eprintln!("icos run: extracting {} ...", image.display());
            let dest = work.join("image");
            std::fs::create_dir(&dest)
                .with_context(|| format!("creating {}", dest.display()))
                .failed()?;
            let members =
                icos_sparse_tar::extract_file(image, &dest, &mut |_| {}).map_err(|e| match e {
                    icos_sparse_tar::Error::Io { .. } => Failure::Failed(e.into()),
                    other => Failure::BadInput(
                        anyhow::Error::from(other)
                            .context(format!("image {}: not a disk archive", image.display())),
                    ),
                })?;
            if !members.iter().any(|m| m.name == DISK_MEMBER) {
                return Err(Failure::BadInput(anyhow!(
                    "image {}: holds no {DISK_MEMBER} (members: {})",
                    image.display(),
                    members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let disk = dest.join(DISK_MEMBER);
            eprintln!(
                "icos run: extracted {DISK_MEMBER} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            check_gpt(&disk, image)?;
            Ok((disk, DiskFormat::Raw))
        }
        ImageKind::Raw => {
            check_gpt(image, image)?;
            let base = std::path::absolute(image)
                .with_context(|| format!("resolving {}", image.display()))
                .failed()?;
            if in_place {
                return Ok((base, DiskFormat::Raw));
            }
            let overlay = work.join("disk.qcow2");
            let output = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&base)
                .arg(&overlay)
                .stdin(Stdio::null())
                .output()
                .context("running qemu-img (install the Debian package qemu-utils)")
                .failed()?;
            if !output.status.success() {
                return Err(Failure::Failed(anyhow!(
                    "qemu-img create -f qcow2 -F raw -b {} {} failed ({}): {}",
                    base.display(),
                    overlay.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            Ok((overlay, DiskFormat::Qcow2))
        }
    }
}

/// The GuestOS config for the media: the given file (parsed and
/// validated), or the built-in dev config.
fn guestos_config(path: Option<&Path>) -> CmdResult<GuestOSConfig> {
    let Some(path) = path else {
        return dev_guestos_config().failed();
    };
    let config: GuestOSConfig = icos_config::load(path).map_err(|e| {
        if e.is_invalid_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::BadInput(anyhow::Error::from(e))
        }
    })?;
    let problems = icos_config::validate_guestos(&config);
    if !problems.is_empty() {
        return Err(Failure::BadInput(
            icos_config::Problems::new(problems).with_file(path).into(),
        ));
    }
    Ok(config)
}

/// The guest's deterministic MAC, as HostOS gives it.
fn guest_mac(config: &GuestOSConfig) -> Option<icos_config::MacAddr6> {
    let node_type = match config.guest_vm_type {
        GuestVmType::Upgrade => NodeType::UpgradeGuestOS,
        _ => NodeType::GuestOS,
    };
    let icos = &config.icos_settings;
    Some(deterministic_mac(
        &icos.mgmt_mac,
        icos.deployment_environment.as_str(),
        node_type,
        0,
    ))
}

/// The accelerator cache folder: `$ICOS_CACHE/qemu`, else
/// `$XDG_CACHE_HOME/icos/qemu`, else `~/.cache/icos/qemu`, else the work
/// folder.
fn probe_cache(work: &Path) -> PathBuf {
    icos_packages::Cache::default_location()
        .map(|c| c.root().join("qemu"))
        .unwrap_or_else(|_| work.join("probe"))
}

/// The outcome printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    status: &'static str,
    elapsed_s: f64,
    marker_line: Option<String>,
    accel: String,
    image: PathBuf,
    work_dir: Option<PathBuf>,
    tail: Vec<String>,
    qemu_output: Option<String>,
}

fn last(lines: &[String], n: usize) -> Vec<String> {
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| icos_qemu::clean_line(l))
        .collect()
}

fn run_guestos(args: &GuestosArgs) -> CmdResult {
    // Check every input before anything is made.
    let kind = image_kind(&args.image)?;
    if args.in_place && kind != ImageKind::Raw {
        return Err(Failure::BadInput(anyhow!(
            "image {}: --in-place needs a raw disk, not an archive (extract disk.img first)",
            args.image.display()
        )));
    }
    let config = guestos_config(args.config.as_deref())?;
    let (extras, skipped) = Extras::load(&ExtraPaths {
        node_operator_private_key: args.node_operator_key.clone(),
        ssh_authorized_keys_dir: args.ssh_keys.clone(),
        nns_public_key_override: args.nns_key_override.clone(),
        routing_table: args.routing_table.clone(),
        registry_root: args.registry_root.clone(),
    })
    .bad_input()?;
    for path in skipped {
        eprintln!(
            "icos run: {}: not taken (only admin, backup and readonly)",
            path.display()
        );
    }
    let ovmf = Ovmf::find().failed()?;

    let parent = args.work_dir.clone().unwrap_or_else(default_work_parent);
    let work = WorkDir::create(&parent, "icos-run", args.keep).failed()?;
    let (disk, format) = prepare_disk(&args.image, kind, args.in_place, work.path())?;

    let media = work.path().join("config.img");
    let summary = build_media(&config, &extras, &media).failed()?;
    eprintln!(
        "icos run: CONFIG media {} ({} bytes: {})",
        media.display(),
        summary.size,
        summary.members.join(", ")
    );

    let accel = match args.accel {
        AccelArg::Tcg => Accel::Tcg,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Auto => {
            let probe =
                probe_accel(&ProbeOptions::new(DEFAULT_QEMU, probe_cache(work.path()))).failed()?;
            eprintln!("icos run: accelerator {}: {}", probe.accel, probe.reason);
            probe.accel
        }
    };

    let mut vm = VmConfig::new(accel, args.memory, args.vcpus);
    vm.name = Some("guestos".to_owned());
    vm.firmware = Firmware::Uefi(ovmf.prepare(work.path().join("OVMF_VARS.fd")).failed()?);
    vm.disks.push(
        // The guest's discards and unmapping zero requests (an upgrade
        // zeroing the holes of its image) punch holes in the disk file
        // instead of filling it with zeros.
        Disk::virtio(&disk)
            .with_format(format)
            .with_serial("guestos")
            .with_discard(Discard::Unmap)
            .with_boot_index(1),
    );
    vm.disks.push(
        // Second in the boot order: OVMF then connects it (and names it on
        // the console when the disk does not boot), but never PXE-boots.
        Disk::usb_removable(&media)
            .read_only()
            .with_serial("config")
            .with_boot_index(2),
    );
    vm.nics.push(Nic {
        mac: guest_mac(&config),
        backend: NetBackend::User(UserNet {
            restrict: !args.allow_outbound,
            host_forwards: args.forwards.clone(),
            guest_forwards: Vec::new(),
            ipv6: None,
        }),
    });
    let serial_log = work.path().join("serial.log");
    vm.serial = Some(Console::file(&serial_log));
    vm.rng = true;

    let runner = Runner {
        tail_lines: TAIL_LINES,
        ..Runner::default()
    };
    let watch = Watch::guestos_boot().timeout(Duration::from_secs(args.timeout));
    eprintln!(
        "icos run: booting {} (q35, OVMF, {}, {} vCPUs, {} MiB); waiting up to {} s for '{}'",
        args.image.display(),
        accel,
        args.vcpus,
        args.memory,
        args.timeout,
        icos_qemu::GUESTOS_BOOT_SUCCESS
    );

    let mut vm_handle = runner.spawn(&vm).failed()?;
    let watchdog =
        Reaper::watching(vm_handle.pid(), (!work.kept()).then_some(work.path())).failed()?;
    let stderr = std::io::stderr();
    let mut outcome = vm_handle.wait_for_marker(&watch, |line| {
        let mut err = stderr.lock();
        let _ = writeln!(err, "{}", icos_qemu::clean_line(line));
    });
    if args.stay
        && let Ok(Outcome::Success { line, elapsed, .. }) = &outcome
    {
        println!(
            "GuestOS booted: '{}' after {:.1} s; running until stopped",
            icos_qemu::clean_line(line),
            elapsed.as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        if let Err(e) = stay(&mut vm_handle) {
            outcome = Err(e);
        }
    }
    let killed = vm_handle.kill();
    drop(vm_handle);
    drop(watchdog);
    let outcome = outcome.failed()?;
    killed.failed()?;

    let elapsed = outcome.elapsed().as_secs_f64();
    let (status, marker_line, tail, qemu_output) = match &outcome {
        Outcome::Success { line, .. } => (
            "success",
            Some(icos_qemu::clean_line(line)),
            Vec::new(),
            None,
        ),
        Outcome::Failure { line, tail, .. } => (
            "failure",
            Some(icos_qemu::clean_line(line)),
            last(tail, TAIL_LINES),
            None,
        ),
        Outcome::Timeout { tail, .. } => ("timeout", None, last(tail, TAIL_LINES), None),
        Outcome::Exited {
            tail, qemu_output, ..
        } => (
            "exited",
            None,
            last(tail, TAIL_LINES),
            Some(qemu_output.trim().to_owned()),
        ),
    };
    if work.kept() {
        eprintln!("icos run: kept {}", work.path().display());
    }
    if args.json {
        let report = Report {
            status,
            elapsed_s: (elapsed * 10.0).round() / 10.0,
            marker_line: marker_line.clone(),
            accel: accel.to_string(),
            image: args.image.clone(),
            work_dir: work.kept().then(|| work.path().to_owned()),
            tail: tail.clone(),
            qemu_output: qemu_output.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&report).failed()?);
    }
    if let Outcome::Success { .. } = outcome {
        if !args.json && !args.stay {
            println!(
                "GuestOS booted: '{}' after {elapsed:.1} s",
                marker_line.unwrap_or_default()
            );
        }
        return Ok(());
    }
    if !tail.is_empty() {
        eprintln!("icos run: last {} console lines:", tail.len());
        for line in &tail {
            eprintln!("  | {line}");
        }
    }
    if let Some(out) = qemu_output.as_deref().filter(|o| !o.is_empty()) {
        eprintln!("icos run: QEMU said:\n{out}");
    }
    let reason = match &outcome {
        Outcome::Failure { line, .. } => format!(
            "the guest reported failure: '{}'",
            icos_qemu::clean_line(line)
        ),
        Outcome::Timeout { .. } => format!("no boot marker within {} s (timeout)", args.timeout),
        Outcome::Exited { status, .. } => format!("QEMU exited ({status}) without a boot marker"),
        Outcome::Success { .. } => String::new(),
    };
    Err(Failure::Failed(anyhow!(
        "GuestOS did not boot after {elapsed:.1} s: {reason}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_and_bind_loopback() {
        let f = parse_forward("8080:80").unwrap();
        assert_eq!(f.host_port, 8080);
        assert_eq!(f.guest_port, 80);
        assert_eq!(f.host_addr, Some(std::net::Ipv4Addr::LOCALHOST));
        for bad in ["8080", "0:80", "8080:x", "70000:80", ":80"] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn work_dirs_are_removed_unless_kept() {
        let parent = std::env::temp_dir().join(format!("icos-run-test-{}", std::process::id()));
        let removed = WorkDir::create(&parent, "w", false).unwrap_or_else(|e| panic!("{e}"));
        let path = removed.path().to_owned();
        assert!(path.is_dir());
        drop(removed);
        assert!(!path.exists());
        let kept = WorkDir::create(&parent, "w", true).unwrap_or_else(|e| panic!("{e}"));
        let path = kept.path().to_owned();
        drop(kept);
        assert!(path.is_dir());
        std::fs::remove_dir_all(&parent).unwrap_or_else(|e| panic!("{e}"));
    }
}
