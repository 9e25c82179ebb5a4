//! `icos-setupos-install`: the installer a booted SetupOS runs
//! (`setupos.service`). The logic is in `crates/icos-setupos`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use icos_setupos::hardware::parse_lsblk;
use icos_setupos::run::Console;
use icos_setupos::{
    HoleCheck, LiveSources, PlainConsole, PlanRules, RunOptions, SystemRunner, WriteProgress,
    plan_install,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const AFTER_HELP: &str = "Exit codes:
  0  success (installed; or, with installation switched off, the checks passed)
  1  failure: the failure banner says why (run), or the capture or plan failed
  2  usage error or bad input";

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Holes {
    /// The first and last 4 KiB of every zeroed range, and one 4 KiB block per GiB.
    Sample,
    /// Every byte of the zeroed ranges.
    Full,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(cli.verbose, "warn,icos_setupos=info");
    let result = match cli.command {
        Cmd::Run(args) => return ExitCode::from(run(&args)),
        Cmd::Capture(args) => capture(&args),
        Cmd::Plan(args) => plan(&args),
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
        hole_check: match args.verify_holes {
            Holes::Sample => HoleCheck::Sample,
            Holes::Full => HoleCheck::Full,
        },
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
