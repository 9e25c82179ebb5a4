//! `icos-setupos-install`: the installer a booted SetupOS runs
//! (`setupos.service`). The logic is in `crates/icos-setupos`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use icos_setupos::hardware::parse_lsblk;
use icos_setupos::install::{Verified, Written, inspect_archive, install_image};
use icos_setupos::run::Console;
use icos_setupos::{
    HoleCheck, ImageArchive, ImageError, LiveSources, PlainConsole, PlanRules, RunOptions,
    SystemRunner, WriteProgress, Zeroer, plan_install,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const AFTER_HELP: &str = "Exit codes:
  0  success (installed; or, with installation switched off, the checks passed)
  1  failure: the failure banner says why (run), or the capture, plan or
     write failed (write: an I/O error, or what was read back differs)
  2  usage error or bad input (write: an unreadable archive, a missing
     target, a target smaller than the image)";

/// The SetupOS installer: checks the machine, then installs HostOS and
/// GuestOS onto its drives, seeds the HostOS config and reboots.
#[derive(Debug, Parser)]
#[command(name = "icos-setupos-install", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the whole installer: config, capture, checks, then (unless
    /// switched off on the kernel command line) preflight, setup-disk,
    /// install-hostos, install-guestos, setup-hostos-config, success banner
    /// and reboot. Any failure prints the failure banner and exits 1
    /// without rebooting; nothing is written to a drive before every check
    /// and the preflight have passed.
    Run(Box<RunArgs>),
    /// Only capture the live system's command output (what `run` checks)
    /// into a folder; no checks, no waits.
    Capture(CaptureArgs),
    /// Print the install plan for a captured lsblk.json.
    Plan(PlanArgs),
    /// Write the disk.img of an image archive onto a drive, volume or file
    /// exactly as install-hostos and install-guestos do (data written,
    /// holes zeroed, fsync, read back and compared), and print what was
    /// written and how long each part took. Everything the target held in
    /// the image's first bytes is overwritten; a target smaller than the
    /// image is refused (exit 2) before anything is written.
    Write(WriteArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Holes {
    /// The first and last 4 KiB of every zeroed range, and one 4 KiB block per GiB.
    Sample,
    /// Every byte of the zeroed ranges.
    Full,
}

impl Holes {
    fn check(self) -> HoleCheck {
        match self {
            Holes::Sample => HoleCheck::Sample,
            Holes::Full => HoleCheck::Full,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Colour {
    /// When stdout is a terminal and TERM is set and not `dumb`.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

#[derive(Debug, Args)]
struct Sources {
    /// The kernel command line (the ic.setupos.* switches).
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// The image's commit time (seconds since 1970).
    #[arg(long, value_name = "FILE", default_value = "/commit-time")]
    commit_time: PathBuf,
    /// The kernel's memory summary.
    #[arg(long, value_name = "FILE", default_value = "/proc/meminfo")]
    meminfo: PathBuf,
}

impl Sources {
    fn live(&self) -> LiveSources {
        LiveSources {
            cmdline: self.cmdline.clone(),
            commit_time: self.commit_time.clone(),
            meminfo: self.meminfo.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The CONFIG partition: config.ini, node_operator_private_key.pem,
    /// ssh_authorized_keys/.
    #[arg(long, value_name = "DIR", default_value = "/config")]
    config_dir: PathBuf,
    /// The data partition: deployment.json, host-os.img.tar.zst,
    /// guest-os.img.tar.zst.
    #[arg(long, value_name = "DIR", default_value = "/data")]
    data_dir: PathBuf,
    #[command(flatten)]
    sources: Sources,
    /// Where config.json, config-hostos.json and the capture go.
    #[arg(long, value_name = "DIR", default_value = "/run/setupos")]
    work: PathBuf,
    /// Where the drives' device nodes are.
    #[arg(long, value_name = "DIR", default_value = "/dev")]
    dev_dir: PathBuf,
    /// Exists when the machine booted through UEFI (else no boot entry is made).
    #[arg(long, value_name = "DIR", default_value = "/sys/firmware/efi")]
    efi_dir: PathBuf,
    /// Pause after the old-image warning, in seconds [default: 600, or 0
    /// with ic.setupos.check_hardware=false]; ic.setupos.age_pause_secs=N
    /// on the kernel command line wins.
    #[arg(long, value_name = "SECS")]
    age_pause_secs: Option<u64>,
    /// Longest wait for a router-advertised default route, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    route_wait_secs: u64,
    /// Longest wait for the clock to be synchronised, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    ntp_wait_secs: u64,
    /// Wait before rebooting, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    reboot_delay_secs: u64,
    /// How much of the zeroed ranges of each written image is read back.
    #[arg(long, value_enum, default_value_t = Holes::Sample)]
    verify_holes: Holes,
    /// Plain lines only (no progress bar), also on a terminal.
    #[arg(long)]
    plain: bool,
    /// Colour the banners.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    colour: Colour,
}

#[derive(Debug, Args)]
struct CaptureArgs {
    /// The folder to write (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The SetupOS config that `run` wrote (gateways and NNS URLs to probe).
    #[arg(long, value_name = "FILE", default_value = "/run/setupos/config.json")]
    config: PathBuf,
    #[command(flatten)]
    sources: Sources,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// A folder of captured output with lsblk.json.
    #[arg(long, value_name = "DIR")]
    captured: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// The image archive (disk-img.tar.zst, also host-os.img.tar.zst or
    /// guest-os.img.tar.zst of a SetupOS data partition).
    #[arg(long, value_name = "FILE")]
    archive: PathBuf,
    /// The drive, volume or file to write onto (it must exist; it is not
    /// created or truncated).
    #[arg(long, value_name = "FILE|DEVICE")]
    target: PathBuf,
    /// How much of the zeroed ranges is read back.
    #[arg(long, value_enum, default_value_t = Holes::Sample)]
    verify_holes: Holes,
    /// Print the result as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "warn,icos_setupos=info");
    let result = match cli.command {
        Cmd::Run(args) => return ExitCode::from(run(&args)),
        Cmd::Capture(args) => capture(&args),
        Cmd::Plan(args) => plan(&args),
        Cmd::Write(args) => write(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether stdout is a terminal worth drawing on.
fn fancy_terminal() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}

/// A progress bar per image write on a terminal; lines otherwise.
struct BarConsole {
    bar: Option<ProgressBar>,
}

impl Console for BarConsole {
    fn line(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    fn progress(&mut self, label: &str, p: &WriteProgress) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(Some(p.total), ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {elapsed}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        bar.set_position(p.done);
    }

    fn progress_end(&mut self, label: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            println!("{label}: done");
        }
    }
}

fn run(args: &RunArgs) -> u8 {
    let fancy = fancy_terminal();
    let opts = RunOptions {
        config_dir: args.config_dir.clone(),
        data_dir: args.data_dir.clone(),
        sources: args.sources.live(),
        work: args.work.clone(),
        dev_dir: args.dev_dir.clone(),
        efi_dir: args.efi_dir.clone(),
        age_pause_secs: args.age_pause_secs,
        route_wait: Duration::from_secs(args.route_wait_secs),
        ntp_wait: Duration::from_secs(args.ntp_wait_secs),
        reboot_delay: Duration::from_secs(args.reboot_delay_secs),
        hole_check: args.verify_holes.check(),
        colour: match args.colour {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => fancy,
        },
    };
    let mut runner = SystemRunner;
    let outcome = if fancy && !args.plain {
        icos_setupos::run(&opts, &mut runner, &mut BarConsole { bar: None })
    } else {
        icos_setupos::run(
            &opts,
            &mut runner,
            &mut PlainConsole::new(std::io::stdout()),
        )
    };
    outcome.exit_code()
}

fn capture(args: &CaptureArgs) -> anyhow::Result<u8> {
    let config: icos_config::SetupOSConfig = match icos_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --config: {e}");
            return Ok(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let done = icos_setupos::capture(
        &args.out,
        &config,
        &args.sources.live(),
        &mut SystemRunner,
        now,
    )
    .with_context(|| format!("capturing into {}", args.out.display()))?;
    for f in &done.files {
        println!("{}", args.out.join(f).display());
    }
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}

fn plan(args: &PlanArgs) -> anyhow::Result<u8> {
    let path = args.captured.join("lsblk.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return Ok(2);
        }
    };
    let drives = match parse_lsblk(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return Ok(2);
        }
    };
    match plan_install(&drives, &PlanRules::default()) {
        Ok(plan) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                println!("{plan}");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("no install plan: {e}");
            Ok(1)
        }
    }
}

/// Bytes in MiB.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// MiB per second (0 when no time passed).
fn rate(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { mib(bytes) / secs } else { 0.0 }
}

/// What `write` measured.
#[derive(Debug)]
struct WriteReport {
    archive: PathBuf,
    target: PathBuf,
    image_bytes: u64,
    stored_bytes: u64,
    data_bytes: u64,
    zeroed_bytes: u64,
    zero_method: Option<&'static str>,
    data_sha256: String,
    hole_check: &'static str,
    zero_bytes_checked: u64,
    /// Reading the archive to its end before writing (`inspect_archive`).
    inspect_secs: f64,
    /// From the first write to the last one (the image streamed out of the archive).
    write_secs: f64,
    /// The `fsync` after the last write.
    sync_secs: f64,
    /// Reading back and comparing.
    verify_secs: f64,
    data_mib: f64,
    image_mib: f64,
    /// Data MiB over write + sync.
    data_mib_per_sec: f64,
    /// Image MiB over write + sync.
    image_mib_per_sec: f64,
}

impl WriteReport {
    fn new(
        archive: &ImageArchive,
        written: &Written,
        verified: &Verified,
        holes: HoleCheck,
        inspect_secs: f64,
        write_secs: f64,
    ) -> Self {
        // `Written::write_secs` runs to the end of the fsync; the last
        // progress report came after the last write.
        let write_secs = write_secs.min(written.write_secs);
        let data = written.data_bytes();
        WriteReport {
            archive: archive.path.clone(),
            target: written.target.clone(),
            image_bytes: written.image_size,
            stored_bytes: archive.stored,
            data_bytes: data,
            zeroed_bytes: written.zeroed_bytes(),
            zero_method: written.zero_method.map(|m| m.as_str()),
            data_sha256: written
                .data_sha256
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            hole_check: holes.as_str(),
            zero_bytes_checked: verified.zero_bytes_checked,
            inspect_secs,
            write_secs,
            sync_secs: written.write_secs - write_secs,
            verify_secs: verified.secs,
            data_mib: mib(data),
            image_mib: mib(written.image_size),
            data_mib_per_sec: rate(data, written.write_secs),
            image_mib_per_sec: rate(written.image_size, written.write_secs),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "archive": self.archive.display().to_string(),
            "target": self.target.display().to_string(),
            "image_bytes": self.image_bytes,
            "stored_bytes": self.stored_bytes,
            "data_bytes": self.data_bytes,
            "zeroed_bytes": self.zeroed_bytes,
            "zero_method": self.zero_method,
            "data_sha256": self.data_sha256,
            "hole_check": self.hole_check,
            "zero_bytes_checked": self.zero_bytes_checked,
            "inspect_secs": self.inspect_secs,
            "write_secs": self.write_secs,
            "sync_secs": self.sync_secs,
            "verify_secs": self.verify_secs,
            "data_mib": self.data_mib,
            "image_mib": self.image_mib,
            "data_mib_per_sec": self.data_mib_per_sec,
            "image_mib_per_sec": self.image_mib_per_sec,
        })
    }

    fn print(&self) {
        println!(
            "wrote disk.img of {} onto {}",
            self.archive.display(),
            self.target.display()
        );
        println!(
            "image:  {:.1} MiB ({:.1} MiB stored in the archive)",
            self.image_mib,
            mib(self.stored_bytes)
        );
        println!(
            "data:   {:.1} MiB written, SHA-256 {}",
            self.data_mib, self.data_sha256
        );
        println!(
            "zeroed: {:.1} MiB ({})",
            mib(self.zeroed_bytes),
            self.zero_method.unwrap_or("nothing to zero")
        );
        println!(
            "inspect {:.2} s (archive read to its end)",
            self.inspect_secs
        );
        println!("write   {:.2} s", self.write_secs);
        println!("sync    {:.2} s", self.sync_secs);
        println!(
            "verify  {:.2} s ({:.1} MiB of data read back and matching; {:.1} MiB of zeroed \
             ranges read back as zero, {} check)",
            self.verify_secs,
            self.data_mib,
            mib(self.zero_bytes_checked),
            self.hole_check
        );
        println!(
            "rate    {:.1} MiB/s of data, {:.1} MiB/s of image (write + sync)",
            self.data_mib_per_sec, self.image_mib_per_sec
        );
    }
}

/// Whether a write error is the caller's input (exit 2) rather than a
/// failure of the write itself (exit 1).
fn bad_input(e: &ImageError) -> bool {
    match e {
        ImageError::Archive { .. }
        | ImageError::MissingMember { .. }
        | ImageError::BadMember { .. }
        | ImageError::TooLarge { .. } => true,
        ImageError::Io { action, .. } => *action == "opening",
        ImageError::Verify { .. } | ImageError::NotZero { .. } => false,
    }
}

fn write(args: &WriteArgs) -> anyhow::Result<u8> {
    let fail = |e: &ImageError| {
        eprintln!("error: {e}");
        Ok(if bad_input(e) { 2 } else { 1 })
    };
    if !args.target.exists() {
        eprintln!(
            "error: --target {}: no such file or device",
            args.target.display()
        );
        return Ok(2);
    }
    let started = Instant::now();
    let archive = match inspect_archive(&args.archive) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let inspect_secs = started.elapsed().as_secs_f64();
    let holes = args.verify_holes.check();
    let label = "write";
    let mut console = PlainConsole::new(std::io::stderr());
    let mut last_write = 0.0f64;
    let result = install_image(&archive, &args.target, Zeroer::default(), holes, &mut |p| {
        last_write = p.elapsed.as_secs_f64();
        console.progress(label, p);
    });
    console.progress_end(label);
    let (written, verified) = match result {
        Ok(done) => done,
        Err(e) => return fail(&e),
    };
    let report = WriteReport::new(
        &archive,
        &written,
        &verified,
        holes,
        inspect_secs,
        last_write,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use icos_setupos::run::progress_line;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn progress_lines_and_bars_agree_on_the_numbers() {
        let p = WriteProgress {
            done: 10 << 20,
            total: 20 << 20,
            data_written: 5 << 20,
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(
            progress_line("x", &p),
            "x: 50% (10.0 of 20.0 MiB; 5.0 MiB data written, 5.0 MiB/s)"
        );
    }
}
