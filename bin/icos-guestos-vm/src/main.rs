//! `icos-guestos-vm`: HostOS's GuestOS VM runner (IC's `guest_vm_runner`).
//!
//! A thin main: flags in, [`icos_guestos_vm`] does the work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use icos_config::HostOSConfig;
use icos_config_media::{ExtraPaths, Extras};
use icos_guestos_vm::daemon::default_work_dir;
use icos_guestos_vm::prepare::describe;
use icos_guestos_vm::vm::{DEFAULT_BRIDGE, GUEST_CID, cache_for, guestos_mac, resources};
use icos_guestos_vm::{
    Daemon, DaemonSettings, GuestDisk, Launch, Metrics, Network, Notifier, Policy, Signals, VmSpec,
    VsockDaemon, VsockMode, prepare_launch,
};
use icos_qemu::{Accel, DEFAULT_QEMU, ProbeOptions, Runner};

const AFTER_HELP: &str = "\
Exit codes:
  0  success (run: the VM was shut down on SIGTERM/SIGINT, or with
     --no-restart it booted and then stopped)
  1  failure: the VM could not be prepared or started, or did not boot
  2  usage error or bad input: a flag, the HostOS config, or the guest
     disk's GPT, grubenv or boot_args broke a rule";

/// Prepare, direct-boot and watch the GuestOS VM from a guest disk and the
/// HostOS config.
#[derive(Debug, Parser)]
#[command(name = "icos-guestos-vm", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the VM as a daemon: prepare, start, watch for the boot marker,
    /// restart when it stops, shut it down gracefully on SIGTERM.
    Run(RunArgs),
    /// Prepare one VM start: refresh grubenv, extract the slot's kernel,
    /// initrd and boot_args, build the CONFIG media, render the QEMU
    /// command line. Prints what it did.
    Prepare(PrepareArgs),
    /// Show what a VM start would do, without writing the guest disk
    /// (the same as `prepare --dry-run`).
    Show(ShowArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AccelArg {
    /// KVM if the config asks for it (vm_cpu "kvm") and it really works,
    /// else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG.
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VsockArg {
    /// vhost-vsock-pci through the host kernel's /dev/vhost-vsock.
    Kernel,
    /// vhost-user-vsock-pci with a vhost-device-vsock daemon the runner
    /// starts.
    VhostUser,
    /// No vsock device.
    None,
}

#[derive(Debug, Args)]
struct VmArgs {
    /// The HostOS config (JSON).
    #[arg(long, value_name = "FILE", default_value = "/boot/config/config.json")]
    config: PathBuf,

    /// The guest disk: a block device or a GuestOS disk image file.
    #[arg(long, value_name = "PATH", default_value = "/dev/hostlvm/guestos")]
    disk: PathBuf,

    /// Folder for the kernel, initrd, CONFIG media, sockets and serial log.
    #[arg(long, value_name = "DIR", default_value = default_work_dir().as_os_str())]
    work_dir: PathBuf,

    /// The serial console log [default: WORK_DIR/guestos-serial.log].
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,

    /// The guest NIC: `bridge:NAME` (a tap on a host bridge, through
    /// qemu-bridge-helper), `tap:NAME` (an existing tap), `user`
    /// (restricted user-mode networking) or `none`.
    #[arg(long, value_name = "KIND[:NAME]", default_value = "bridge:br6", value_parser = parse_network)]
    net: Network,

    /// The vsock device.
    #[arg(long, value_enum, default_value_t = VsockArg::Kernel)]
    vsock: VsockArg,

    /// The vhost-device-vsock binary (with --vsock vhost-user).
    #[arg(long, value_name = "PATH", default_value = "vhost-device-vsock")]
    vhost_device_vsock: PathBuf,

    /// The host-side socket of vhost-device-vsock: a guest connection to
    /// port P arrives at PATH_P [default: WORK_DIR/vsock.uds].
    #[arg(long, value_name = "PATH")]
    vsock_uds: Option<PathBuf>,

    /// The accelerator.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,

    /// The QEMU binary.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_QEMU)]
    qemu: PathBuf,

    /// With --accel auto: how long the KVM boot probe (the guest's own
    /// kernel, booted to its missing-root panic) may take. Nested KVM (a
    /// HostOS that is itself a VM) needs more than bare metal.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = icos_main::parse_duration)]
    probe_timeout: Duration,

    /// The node operator's private key (PEM) for the CONFIG media.
    #[arg(long, value_name = "FILE")]
    node_operator_key: Option<PathBuf>,

    /// A folder with `admin`, `backup`, `readonly` SSH authorized keys for
    /// the CONFIG media (dev).
    #[arg(long, value_name = "DIR")]
    ssh_keys_dir: Option<PathBuf>,

    /// An NNS public key override (PEM) for the CONFIG media (dev).
    #[arg(long, value_name = "FILE")]
    nns_public_key: Option<PathBuf>,

    /// The boundary router's routing table (JSON) for the CONFIG media
    /// (Boundary-GuestOS).
    #[arg(long, value_name = "FILE")]
    routing_table: Option<PathBuf>,

    /// A registry trust root (`root.json` of `icos registry init`) for the
    /// CONFIG media, replacing the image's (dev/testnet networks).
    #[arg(long, value_name = "FILE")]
    registry_root: Option<PathBuf>,

    /// Take the extras that exist in DIR, as SetupOS leaves them on HostOS's
    /// config volume: `node_operator_private_key.pem`,
    /// `ssh_authorized_keys/`, `nns_public_key_override.pem`,
    /// `routing_table.json` and `registry_root.json`. A flag naming one of them explicitly wins.
    #[arg(long, value_name = "DIR")]
    extras_from: Option<PathBuf>,
}

/// The extras' paths: the explicit flags, else what exists in
/// `--extras-from`.
fn extra_paths(args: &VmArgs) -> ExtraPaths {
    let found = |name: &str| {
        args.extras_from
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.exists())
    };
    ExtraPaths {
        node_operator_private_key: args
            .node_operator_key
            .clone()
            .or_else(|| found("node_operator_private_key.pem")),
        ssh_authorized_keys_dir: args
            .ssh_keys_dir
            .clone()
            .or_else(|| found("ssh_authorized_keys")),
        nns_public_key_override: args
            .nns_public_key
            .clone()
            .or_else(|| found("nns_public_key_override.pem")),
        routing_table: args
            .routing_table
            .clone()
            .or_else(|| found("routing_table.json")),
        registry_root: args
            .registry_root
            .clone()
            .or_else(|| found("registry_root.json")),
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,

    /// Prometheus textfile kept up to date (written atomically).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,

    /// How long to wait for GUESTOS BOOT SUCCESS / FAILURE.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = icos_main::parse_duration)]
    boot_timeout: Duration,

    /// How long the guest gets after the ACPI power button before QEMU is
    /// destroyed.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = icos_main::parse_duration)]
    shutdown_grace: Duration,

    /// Do not restart a stopped VM; exit instead (0 if it had booted).
    #[arg(long)]
    no_restart: bool,

    /// Delay before restarting a VM that had booted; doubled per
    /// consecutive failed run.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = icos_main::parse_duration)]
    restart_delay: Duration,

    /// The longest restart delay.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = icos_main::parse_duration)]
    max_restart_delay: Duration,
}

#[derive(Debug, Args)]
struct PrepareArgs {
    #[command(flatten)]
    vm: VmArgs,

    /// Do not write the refreshed grubenv to the guest disk.
    #[arg(long)]
    dry_run: bool,

    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    vm: VmArgs,

    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_network(s: &str) -> Result<Network, String> {
    let name = |n: &str| {
        if n.is_empty() || n.len() > 15 {
            Err(format!("interface name {n:?} must be 1 to 15 bytes"))
        } else {
            Ok(n.to_owned())
        }
    };
    match s.split_once(':') {
        Some(("bridge", n)) => Ok(Network::Bridge(name(n)?)),
        Some(("tap", n)) => Ok(Network::Tap(name(n)?)),
        None if s == "bridge" => Ok(Network::Bridge(DEFAULT_BRIDGE.to_owned())),
        None if s == "user" => Ok(Network::User),
        None if s == "none" => Ok(Network::None),
        _ => Err(format!(
            "{s:?}: expected bridge:NAME, tap:NAME, user or none"
        )),
    }
}

/// Why the command failed: bad input (exit 2) or a failure (exit 1).
enum Failure {
    BadInput(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "info");
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Prepare(args) => prepare(&args.vm, args.dry_run, args.json),
        Cmd::Show(args) => prepare(&args.vm, true, args.json),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The HostOS config, read and validated.
fn load_config(path: &Path) -> Result<HostOSConfig, Failure> {
    let any = icos_config::check_file(path).map_err(|e| Failure::BadInput(e.into()))?;
    match any {
        icos_config::AnyConfig::HostOS(c) => Ok(c),
        other => Err(Failure::BadInput(anyhow::anyhow!(
            "{}: a {} config, not a HostOS config",
            path.display(),
            other.kind().as_str()
        ))),
    }
}

/// Everything the VM needs besides the disk's content.
struct Setup {
    config: HostOSConfig,
    extras: Extras,
    spec: VmSpec,
    work_dir: PathBuf,
    vsock_daemon: Option<VsockDaemon>,
    mirror_console: bool,
}

fn setup(args: &VmArgs) -> Result<Setup, Failure> {
    let config = load_config(&args.config)?;
    let disk = std::fs::canonicalize(&args.disk)
        .with_context(|| format!("guest disk {}", args.disk.display()))
        .map_err(Failure::BadInput)?;
    let (extras, skipped) =
        Extras::load(&extra_paths(args)).map_err(|e| Failure::BadInput(e.into()))?;
    for path in skipped {
        tracing::warn!(file = %path.display(), "not an allowed SSH key file name; left out of the CONFIG media");
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = std::fs::canonicalize(&args.work_dir)
        .with_context(|| format!("resolving {}", args.work_dir.display()))?;
    let (memory_mib, vcpus, wants_kvm) = resources(&config);
    let accel = match args.accel {
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
        AccelArg::Auto if !wants_kvm => Accel::Tcg,
        AccelArg::Auto => {
            let mut opts = ProbeOptions::new(&args.qemu, work_dir.join("accel-probe"));
            opts.timeout = args.probe_timeout;
            opts.kernel = Some(probe_kernel(&disk, &opts.cache_dir)?);
            let probe = icos_qemu::probe_accel(&opts).context("probing the accelerator")?;
            if probe.accel == Accel::Tcg {
                tracing::warn!(reason = %probe.reason, "the config asks for KVM, which does not work here; using TCG");
            }
            probe.accel
        }
    };
    let vsock = match args.vsock {
        VsockArg::Kernel => VsockMode::Kernel {
            guest_cid: GUEST_CID,
        },
        VsockArg::VhostUser => VsockMode::VhostUser {
            socket: work_dir.join("vhost-vsock.sock"),
        },
        VsockArg::None => VsockMode::None,
    };
    let vsock_daemon = match &vsock {
        VsockMode::VhostUser { socket } => Some(VsockDaemon {
            program: args.vhost_device_vsock.clone(),
            socket: socket.clone(),
            uds_path: args
                .vsock_uds
                .clone()
                .unwrap_or_else(|| work_dir.join("vsock.uds")),
        }),
        _ => None,
    };
    let spec = VmSpec {
        accel,
        memory_mib,
        vcpus,
        disk_cache: cache_for(&disk),
        disk,
        mac: guestos_mac(&config),
        network: args.net.clone(),
        vsock,
        config_media: work_dir.join("config.img"),
        serial_log: args
            .serial_log
            .clone()
            .unwrap_or_else(|| work_dir.join("guestos-serial.log")),
        qmp_socket: work_dir.join("qmp.sock"),
    };
    Ok(Setup {
        mirror_console: config.hostos_settings.verbose,
        config,
        extras,
        spec,
        work_dir,
        vsock_daemon,
    })
}

/// The kernel the KVM boot probe starts: the guest's own, from the slot
/// the next boot would take (read only; grubenv is not written). HostOS
/// keeps no kernel in its root file system, and this is the kernel that
/// has to run under KVM anyway.
fn probe_kernel(disk: &Path, dir: &Path) -> Result<PathBuf, Failure> {
    let bad = |e: icos_guestos_vm::PrepareError| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    };
    let mut guest = GuestDisk::open(disk).map_err(bad)?;
    let plan = guest.plan_boot().map_err(bad)?;
    let out = dir.join("guest-kernel");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let files = guest.extract(plan.slot(), &out).map_err(bad)?;
    // Only the kernel is needed.
    let _ = std::fs::remove_file(&files.initrd);
    Ok(files.kernel)
}

fn prepare(args: &VmArgs, dry_run: bool, json: bool) -> Result<u8, Failure> {
    let s = setup(args)?;
    let launch = prepare_launch(&s.config, &s.extras, &s.spec, &s.work_dir).map_err(|e| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })?;
    let written = if dry_run {
        false
    } else {
        launch
            .grubenv
            .commit()
            .context("writing the refreshed grubenv")?
    };
    if json {
        let value = report_json(&args.qemu, &s.spec, &launch, dry_run, written);
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("encoding JSON")?
        );
    } else {
        print_report(&args.qemu, &s.spec, &launch, dry_run, written);
    }
    Ok(0)
}

fn grubenv_note(launch: &Launch, dry_run: bool, written: bool) -> &'static str {
    match (launch.grubenv.writes(), dry_run, written) {
        (false, _, _) => "unchanged: nothing to write",
        (true, true, _) => "dry run: would be written",
        (true, false, true) => "written",
        (true, false, false) => "not written",
    }
}

fn report_json(
    qemu: &Path,
    spec: &VmSpec,
    launch: &Launch,
    dry_run: bool,
    written: bool,
) -> serde_json::Value {
    let r = &launch.plan.refresh;
    serde_json::json!({
        "disk": spec.disk,
        "slot": r.slot.as_str(),
        "boot_kind": r.kind.as_str(),
        "grubenv": {
            "found": launch.plan.grubenv_found,
            "before": {"boot_alternative": r.before.alternative.as_str(), "boot_cycle": r.before.cycle.as_str()},
            "after": {"boot_alternative": r.after.alternative.as_str(), "boot_cycle": r.after.cycle.as_str()},
            "write": launch.grubenv.writes(),
            "written": written,
            "dry_run": dry_run,
        },
        "boot_args": launch.boot.boot_args,
        "cmdline": launch.boot.boot_args.cmdline,
        "kernel": launch.boot.kernel,
        "initrd": launch.boot.initrd,
        "version": launch.boot.version,
        "config_media": {
            "path": launch.media.path,
            "size": launch.media.size,
            "members": launch.media.members,
        },
        "accel": spec.accel.as_str(),
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
        "mac": mac_text(spec),
        "network": spec.network,
        "vsock": spec.vsock,
        "serial_log": spec.serial_log,
        "qemu": {"program": qemu, "args": launch.args},
    })
}

fn mac_text(spec: &VmSpec) -> String {
    spec.mac.to_string().to_lowercase()
}

fn print_report(qemu: &Path, spec: &VmSpec, launch: &Launch, dry_run: bool, written: bool) {
    let b = &launch.boot;
    println!("disk:         {}", spec.disk.display());
    println!("boot:         {}", describe(&launch.plan));
    println!("grubenv:      {}", grubenv_note(launch, dry_run, written));
    println!("slot:         {}", b.slot);
    println!(
        "boot_args:    {} (from {}:/boot_args)",
        b.boot_args.variable,
        icos_guestos_vm::boot_partition(b.slot)
    );
    println!("cmdline:      {}", b.boot_args.cmdline);
    if let Some(v) = &b.version {
        println!("version:      {v}");
    }
    println!("kernel:       {}", b.kernel.display());
    println!("initrd:       {}", b.initrd.display());
    println!(
        "config media: {} ({} bytes: {})",
        launch.media.path.display(),
        launch.media.size,
        launch.media.members.join(", ")
    );
    println!(
        "vm:           {} MiB, {} vCPUs, {}, MAC {}",
        spec.memory_mib,
        spec.vcpus,
        spec.accel,
        mac_text(spec)
    );
    println!("qemu:         {} \\", qemu.display());
    let n = launch.args.len();
    for (i, a) in launch.args.iter().enumerate() {
        let quoted = if a.contains(' ') {
            format!("'{a}'")
        } else {
            a.clone()
        };
        println!("    {quoted}{}", if i + 1 < n { " \\" } else { "" });
    }
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    // Before any thread starts, so that every thread blocks the signals.
    let signals = Signals::install().context("blocking SIGTERM/SIGINT for the signalfd")?;
    let s = setup(&args.vm)?;
    let mut runner = Runner::new(&args.vm.qemu);
    runner.poll_interval = Duration::from_millis(100);
    let settings = DaemonSettings {
        config: s.config,
        extras: s.extras,
        spec: s.spec,
        work_dir: s.work_dir,
        policy: Policy {
            restart: !args.no_restart,
            base_delay: args.restart_delay,
            max_delay: args.max_restart_delay.max(args.restart_delay),
        },
        boot_timeout: args.boot_timeout,
        shutdown_grace: args.shutdown_grace,
        runner,
        vsock_daemon: s.vsock_daemon,
        mirror_console: s.mirror_console,
    };
    tracing::info!(
        disk = %settings.spec.disk.display(),
        memory_mib = settings.spec.memory_mib,
        vcpus = settings.spec.vcpus,
        accel = %settings.spec.accel,
        "Launching GuestOS Virtual Machine"
    );
    let metrics = Metrics::new(args.metrics_file);
    let mut daemon = Daemon::new(settings, metrics, Notifier::from_env());
    Ok(daemon.run(&signals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("bridge:br6"),
            Ok(Network::Bridge("br6".into()))
        );
        assert_eq!(parse_network("bridge"), Ok(Network::Bridge("br6".into())));
        assert_eq!(parse_network("tap:vnet0"), Ok(Network::Tap("vnet0".into())));
        assert_eq!(parse_network("user"), Ok(Network::User));
        assert_eq!(parse_network("none"), Ok(Network::None));
        assert!(parse_network("tap:").is_err());
        assert!(parse_network("tap:sixteen-bytes-xx").is_err());
        assert!(parse_network("wifi").is_err());
    }
}
