//! `icos build`: reproducible node images.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use icos_build::{
    BuildError, BuildReport, Env, GuestOsOptions, HostOsOptions, ProgressMode, Role,
    SetupOsOptions, StageStatus,
};

use crate::exit::{CmdResult, Failure};

/// `icos build` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuildCmd {
    /// Build GuestOS: DIR/guestos/{disk-img.tar.zst,update-img.tar.zst,SHA256SUMS,VERSION.TXT}.
    ///
    /// Stages (each prints its time, "cached" when reused): fetch packages,
    /// build icos, local apt repository, root file system (mmdebstrap),
    /// customise, initramfs, A_root (ext4 + dm-verity), A_boot, esp, grub,
    /// config, disk image, artifacts. Needs root (mmdebstrap --mode=root).
    #[command(disable_version_flag = true)]
    Guestos(GuestosArgs),
    /// Build Boundary-GuestOS: DIR/boundary-guestos/{disk-img.tar.zst,update-img.tar.zst,SHA256SUMS,VERSION.TXT}.
    ///
    /// The GuestOS base (same layout, packages, early boot and stages) with
    /// the IC API router (icos-boundary, on [::1]:8080) and the HTTP gateway
    /// (icos-gateway, on 80 and 443 with a self-signed certificate made at
    /// first boot) instead of the replica; nftables opens 22, 80 and 443.
    /// The router's routing table comes on the CONFIG media
    /// (routing_table.json; `icos run guestos --routing-table FILE`).
    #[command(name = "boundary-guestos", disable_version_flag = true)]
    BoundaryGuestos(BoundaryArgs),
    /// Build HostOS: DIR/hostos/{disk-img.tar.zst,update-img.tar.zst,SHA256SUMS,VERSION.TXT}.
    ///
    /// IC's HostOS GPT (esp, grub, hostlvm) with the hostlvm LVM volume
    /// group written deterministically: config, A_boot, A_root (ext4 +
    /// dm-verity) filled, B_* and A_var empty, guestos empty (SetupOS writes
    /// GuestOS there at install). Carries QEMU, OVMF, icos-hostos-agent and
    /// icos-guestos-vm. Needs root (mmdebstrap --mode=root).
    #[command(disable_version_flag = true)]
    Hostos(HostosArgs),
    /// Build SetupOS: DIR/setupos/{disk-img.tar.zst,SHA256SUMS,VERSION.TXT}.
    ///
    /// Builds HostOS and GuestOS of the same version first (DIR/hostos/,
    /// DIR/guestos/), then the installer image with IC's SetupOS GPT: esp
    /// and grub (UEFI boot), the FAT CONFIG partition with a template
    /// config.ini, the data partition with deployment.json and both disk
    /// images, and a boot/root pair (ext4 + dm-verity). Write it to a USB
    /// stick, put the node's inputs in with `icos setupos inject`, boot it.
    /// Needs root (mmdebstrap --mode=root).
    #[command(disable_version_flag = true)]
    Setupos(SetuposArgs),
}

/// `icos build setupos` flags.
#[derive(Debug, Args)]
pub struct SetuposArgs {
    /// dev (console login on the GuestOS it carries, NTP also from a QEMU
    /// host at 10.0.2.2) or prod.
    #[arg(long, value_enum, default_value = "dev")]
    env: EnvArg,
    /// Output folder; artifacts go to DIR/setupos/ (and DIR/hostos/, DIR/guestos/).
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// Replica binary of the GuestOS it carries [default: icos-testnet-replica].
    #[arg(long, value_name = "FILE")]
    replica: Option<PathBuf>,
    /// The registry's trust root (TUF root.json signed by its own
    /// governance quorum, e.g. `icos registry init`'s metadata/1.root.json),
    /// baked into the GuestOS it carries as /opt/ic/share/registry-root.json: the orchestrator
    /// follows only a registry it certifies.
    #[arg(long, value_name = "FILE")]
    registry_root: Option<PathBuf>,
    /// The source's commit time for /commit-time, seconds since 1970
    /// (the installer warns about old images) [default: git's time of HEAD
    /// in the source tree, else the build epoch].
    #[arg(long, value_name = "SECS")]
    commit_time: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `icos build hostos` flags.
#[derive(Debug, Args)]
pub struct HostosArgs {
    /// Output folder; artifacts go to DIR/hostos/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

/// Flags every image build takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Image version [default: `git rev-parse HEAD` of the source tree].
    #[arg(long = "version", id = "image_version", value_name = "VERSION")]
    version: Option<String>,
    /// The icos source tree [default: the nearest parent of the working directory with images/guestos/packages.lock].
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// Cache directory [default: $ICOS_CACHE, $XDG_CACHE_HOME/icos or ~/.cache/icos].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Never download: every package must be cached.
    #[arg(long)]
    offline: bool,
    /// Download packages from this mirror instead of the lock's.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Print the build report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Flavour of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvArg {
    /// Console login as root on tty1 (password `guestos-dev`).
    Dev,
    /// No console login: root locked, every getty masked.
    Prod,
}

/// `icos build guestos` flags.
#[derive(Debug, Args)]
pub struct GuestosArgs {
    /// dev allows console login, prod does not.
    #[arg(long, value_enum, default_value = "dev")]
    env: EnvArg,
    /// Output folder; artifacts go to DIR/guestos/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// Replica binary installed as /opt/ic/bin/replica [default: icos-testnet-replica, built from the source tree].
    #[arg(long, value_name = "FILE")]
    replica: Option<PathBuf>,
    /// The registry's trust root (TUF root.json signed by its own
    /// governance quorum, e.g. `icos registry init`'s metadata/1.root.json),
    /// baked in as /opt/ic/share/registry-root.json: the orchestrator
    /// follows only a registry it certifies.
    #[arg(long, value_name = "FILE")]
    registry_root: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `icos build boundary-guestos` flags.
#[derive(Debug, Args)]
pub struct BoundaryArgs {
    /// dev allows console login, prod does not.
    #[arg(long, value_enum, default_value = "dev")]
    env: EnvArg,
    /// Output folder; artifacts go to DIR/boundary-guestos/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs an `icos build` subcommand.
pub fn run(cmd: BuildCmd) -> CmdResult {
    match cmd {
        BuildCmd::Guestos(args) => guestos(args),
        BuildCmd::BoundaryGuestos(args) => boundary_guestos(args),
        BuildCmd::Hostos(args) => hostos(args),
        BuildCmd::Setupos(args) => setupos(args),
    }
}

fn find_source(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("images/guestos/packages.lock").is_file())
        .map(Path::to_path_buf)
}

fn source_or_cwd(source: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match source {
        Some(s) => Ok(s),
        None => {
            let cwd = std::env::current_dir().map_err(|e| {
                Failure::Failed(anyhow::anyhow!("reading the working directory: {e}"))
            })?;
            find_source(&cwd).ok_or_else(|| {
                Failure::BadInput(anyhow::anyhow!(
                    "{}: not inside the icos source tree (no images/guestos/packages.lock above it); pass --source",
                    cwd.display()
                ))
            })
        }
    }
}

fn hostos(args: HostosArgs) -> CmdResult {
    let c = args.common;
    let mut opts = HostOsOptions::new(source_or_cwd(c.source)?);
    opts.out = args.out;
    opts.version = c.version;
    opts.cache = c.cache;
    opts.offline = c.offline;
    opts.mirror = c.mirror;
    opts.progress = ProgressMode::Auto;
    let report = icos_build::build_hostos(&opts).map_err(classify)?;
    print_report("HostOS", "", &report, c.json)
}

fn setupos(args: SetuposArgs) -> CmdResult {
    let c = args.common;
    let mut opts = SetupOsOptions::new(source_or_cwd(c.source)?);
    opts.out = args.out;
    opts.env = match args.env {
        EnvArg::Dev => Env::Dev,
        EnvArg::Prod => Env::Prod,
    };
    opts.replica = args.replica;
    opts.registry_root = args.registry_root;
    opts.commit_time = args.commit_time;
    opts.version = c.version;
    opts.cache = c.cache;
    opts.offline = c.offline;
    opts.mirror = c.mirror;
    opts.progress = ProgressMode::Auto;
    let report = icos_build::build_setupos(&opts).map_err(classify)?;
    if c.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::Failed(anyhow::anyhow!("encoding the report: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let flavour = format!(" ({})", opts.env.as_str());
    print_report("HostOS", "", &report.hostos, false)?;
    print_report("GuestOS", &flavour, &report.guestos, false)?;
    print_report("SetupOS", &flavour, &report.setupos, false)
}

/// Prints a build report: JSON, or a summary line, the root hash and the
/// artifacts.
fn print_report(what: &str, flavour: &str, report: &BuildReport, json: bool) -> CmdResult {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Failure::Failed(anyhow::anyhow!("encoding the report: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let total: f64 = report.stages.iter().map(|s| s.seconds).sum();
    let cached = report
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Cached)
        .count();
    println!(
        "{what} {}{flavour} in {}: {total:.1} s, {cached}/{} stages cached",
        report.version,
        report.dir.display(),
        report.stages.len()
    );
    println!("root hash {}", report.root_hash);
    for a in &report.artifacts {
        println!("{:>14} bytes  {}  {}", a.size, a.sha256, a.name);
    }
    Ok(())
}

/// The options of a GuestOS-based build.
fn guestos_options(
    role: Role,
    env: EnvArg,
    out: PathBuf,
    c: &CommonArgs,
) -> Result<GuestOsOptions, Failure> {
    let mut opts = GuestOsOptions::new(source_or_cwd(c.source.clone())?);
    opts.role = role;
    opts.out = out;
    opts.env = match env {
        EnvArg::Dev => Env::Dev,
        EnvArg::Prod => Env::Prod,
    };
    opts.version.clone_from(&c.version);
    opts.cache.clone_from(&c.cache);
    opts.offline = c.offline;
    opts.mirror.clone_from(&c.mirror);
    opts.progress = ProgressMode::Auto;
    Ok(opts)
}

fn guestos(args: GuestosArgs) -> CmdResult {
    let mut opts = guestos_options(Role::Replica, args.env, args.out, &args.common)?;
    opts.replica = args.replica;
    opts.registry_root = args.registry_root;
    let report = icos_build::build_guestos(&opts).map_err(classify)?;
    let flavour = format!(" ({})", opts.env.as_str());
    print_report("GuestOS", &flavour, &report, args.common.json)
}

fn boundary_guestos(args: BoundaryArgs) -> CmdResult {
    let opts = guestos_options(Role::Boundary, args.env, args.out, &args.common)?;
    let report = icos_build::build_guestos(&opts).map_err(classify)?;
    let flavour = format!(" ({})", opts.env.as_str());
    print_report("Boundary-GuestOS", &flavour, &report, args.common.json)
}

fn classify(e: BuildError) -> Failure {
    if e.is_bad_input() {
        Failure::BadInput(e.into())
    } else {
        Failure::Failed(e.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_source_tree_above() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join("images/guestos/packages.lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(&lock, "").unwrap();
        let deep = d.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_source(&deep).as_deref(), Some(d.path()));
        let other = tempfile::tempdir().unwrap();
        assert_eq!(find_source(other.path()), None);
    }
}
