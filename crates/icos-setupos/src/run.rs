//! The installer's run, in IC's order:
//!
//! ```text
//! config -> capture -> checks -+-> preflight -> setup-disk -> install-hostos
//!                              |   -> install-guestos -> setup-hostos-config
//!                              |   -> success -+-> reboot
//!                              |               +-> (reboot switched off: stop)
//!                              +-> (installation switched off: stop)
//! any step failing -> failure banner, exit 1, no reboot
//! ```
//!
//! [`next_step`] is the pure transition over the kernel command-line
//! switches; [`run`] carries the steps out through a [`Runner`] and prints
//! to a [`Console`]. Nothing is written to a drive before `setup-disk`,
//! and `preflight` (both image archives listed and read to their end,
//! `disk.img` of each found and fitting its target, every planned drive
//! present) runs before it, so every refusal it can find leaves the drives
//! untouched.
//!
//! **Image age.** An image older than six weeks draws IC's warning and a
//! pause before going on ([`age_pause`]): 600 s as in IC, except on a test
//! machine (`ic.setupos.check_hardware=false`), where it is 0. The pause
//! can be set on the kernel command line (`ic.setupos.age_pause_secs=N`,
//! not an IC switch) or with the `--age-pause-secs` flag; the command line
//! wins.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use icos_config::SetupOSConfig;
use icos_setupos_config::{
    InputPaths, IpmitoolError, SetupOsInputs, create_setupos_config, parse_ipmitool_mac,
};

use crate::banner::{failure_banner, success_banner};
use crate::captured::check_captured;
use crate::cmdline::{Switches, parse_cmdline};
use crate::install::disk::{
    self, device_path, grow_hostos, set_boot_entry, setup_disks, wait_for_path,
};
use crate::install::hostos_config::{hostos_config_files, write_config_files};
use crate::install::image::{
    HoleCheck, ImageArchive, WriteProgress, Zeroer, inspect_archive, install_image,
};
use crate::live::{LiveSources, capture, prepare_network, wait_for_ntp};
use crate::plan::InstallPlan;
use crate::report::{CheckName, Report};
use crate::runner::{Cmd, Runner};

/// The line printed after a successful install.
pub const SUCCESS_LINE: &str = "SETUPOS INSTALL SUCCESS";
/// The start of the line printed after the failure banner.
pub const FAILURE_LINE: &str = "SETUPOS INSTALL FAILED";
/// The line printed when the checks passed and installation is off.
pub const CHECKS_ONLY_LINE: &str = "SETUPOS CHECKS PASSED";
/// The kernel command-line parameter that sets the age pause (seconds).
pub const AGE_PAUSE_PARAM: &str = "ic.setupos.age_pause_secs";
/// IC's pause after the age warning.
pub const IC_AGE_PAUSE: Duration = Duration::from_secs(600);
/// The HostOS image on the data partition.
pub const HOSTOS_ARCHIVE: &str = "host-os.img.tar.zst";
/// The GuestOS image on the data partition.
pub const GUESTOS_ARCHIVE: &str = "guest-os.img.tar.zst";

/// A step of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Build the SetupOS config from the node provider's inputs.
    Config,
    /// Wait for the network and the clock, then capture the live system.
    Capture,
    /// Run the checks over the capture, and the install plan.
    Checks,
    /// Read both image archives and check they fit, before any write.
    Preflight,
    /// Wipe the planned drives and make the extra physical volumes.
    SetupDisk,
    /// Write HostOS, grow its partition and volume group, EFI boot entry.
    InstallHostOs,
    /// Write GuestOS into `hostlvm/guestos`.
    InstallGuestOs,
    /// Put the HostOS config on `hostlvm/config`.
    SetupHostOsConfig,
    /// Print the success banner.
    Success,
    /// Reboot into HostOS.
    Reboot,
}

impl Step {
    /// The name printed (`install-hostos`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Config => "config",
            Step::Capture => "capture",
            Step::Checks => "checks",
            Step::Preflight => "preflight",
            Step::SetupDisk => "setup-disk",
            Step::InstallHostOs => "install-hostos",
            Step::InstallGuestOs => "install-guestos",
            Step::SetupHostOsConfig => "setup-hostos-config",
            Step::Success => "success",
            Step::Reboot => "reboot",
        }
    }

    /// What the step does, as printed when it starts.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Config => "building the SetupOS config from the node provider's inputs",
            Step::Capture => "waiting for the network and the clock, capturing the system",
            Step::Checks => "checking the image age, the hardware, the network and the clock",
            Step::Preflight => "reading the HostOS and GuestOS images before writing anything",
            Step::SetupDisk => "setting up the drives",
            Step::InstallHostOs => "installing HostOS",
            Step::InstallGuestOs => "installing GuestOS",
            Step::SetupHostOsConfig => "writing the HostOS config",
            Step::Success => "installation complete",
            Step::Reboot => "rebooting",
        }
    }

    /// Whether the step writes to the drives (a failure from here on may
    /// leave a partial install).
    pub fn writes_drives(self) -> bool {
        matches!(
            self,
            Step::SetupDisk | Step::InstallHostOs | Step::InstallGuestOs | Step::SetupHostOsConfig
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step after `done` (`None`: the first), or `None` when the run ends.
pub fn next_step(done: Option<Step>, switches: Switches) -> Option<Step> {
    match done {
        None => Some(Step::Config),
        Some(Step::Config) => Some(Step::Capture),
        Some(Step::Capture) => Some(Step::Checks),
        Some(Step::Checks) => switches.perform_installation.then_some(Step::Preflight),
        Some(Step::Preflight) => Some(Step::SetupDisk),
        Some(Step::SetupDisk) => Some(Step::InstallHostOs),
        Some(Step::InstallHostOs) => Some(Step::InstallGuestOs),
        Some(Step::InstallGuestOs) => Some(Step::SetupHostOsConfig),
        Some(Step::SetupHostOsConfig) => Some(Step::Success),
        Some(Step::Success) => switches.reboot_after_installation.then_some(Step::Reboot),
        Some(Step::Reboot) => None,
    }
}

/// Every step a run with `switches` takes when nothing fails.
pub fn steps(switches: Switches) -> Vec<Step> {
    std::iter::successors(next_step(None, switches), |s| next_step(Some(*s), switches)).collect()
}

/// The checks the `checks` step runs (the others are reported skipped).
pub fn checks_run(switches: Switches) -> Vec<CheckName> {
    let mut out = vec![CheckName::Age];
    if switches.check_hardware {
        out.push(CheckName::Hardware);
    }
    out.extend([CheckName::Network, CheckName::Time]);
    out
}

/// The age pause set on a kernel command line (`ic.setupos.age_pause_secs=N`).
pub fn cmdline_age_pause(cmdline: &str) -> Result<Option<u64>, String> {
    let mut found = None;
    for word in cmdline.split_whitespace() {
        if let Some(v) = word
            .strip_prefix(AGE_PAUSE_PARAM)
            .and_then(|r| r.strip_prefix('='))
        {
            found = Some(
                v.parse::<u64>()
                    .map_err(|_| format!("{AGE_PAUSE_PARAM}: '{v}' is not a number of seconds"))?,
            );
        }
    }
    Ok(found)
}

/// How long to pause after the checks: nothing unless the age check
/// warned; then the command line's value, else the flag's, else IC's
/// 600 s (0 on a test machine, `ic.setupos.check_hardware=false`).
pub fn age_pause(
    report: &Report,
    switches: Switches,
    from_cmdline: Option<u64>,
    from_flag: Option<u64>,
) -> Duration {
    let warned = report
        .get(CheckName::Age)
        .is_some_and(|a| !a.warnings.is_empty());
    if !warned {
        return Duration::ZERO;
    }
    match from_cmdline.or(from_flag) {
        Some(secs) => Duration::from_secs(secs),
        None if switches.check_hardware => IC_AGE_PAUSE,
        None => Duration::ZERO,
    }
}

/// Decides when a write's progress is worth a line: the first report,
/// every 5 % and every 10 s, and the end.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    last: Option<(u64, Duration)>,
}

impl Throttle {
    /// Whether `p` should be printed.
    pub fn due(&mut self, p: &WriteProgress) -> bool {
        let pct = p.percent();
        let due = match self.last {
            None => true,
            Some((last_pct, last_at)) => {
                pct / 5 > last_pct / 5
                    || p.elapsed.saturating_sub(last_at) >= Duration::from_secs(10)
                    || (p.done == p.total && last_pct < 100)
            }
        };
        if due {
            self.last = Some((pct, p.elapsed));
        }
        due
    }
}

/// Bytes as MiB with one decimal (`1234.5`).
pub fn mib(bytes: u64) -> String {
    format!("{}.{}", bytes >> 20, ((bytes & ((1 << 20) - 1)) * 10) >> 20)
}

/// One progress line: `install-hostos: 35% (35840.0 of 102400.0 MiB;
/// 1234.0 MiB data written, 55.2 MiB/s)`.
pub fn progress_line(label: &str, p: &WriteProgress) -> String {
    format!(
        "{label}: {}% ({} of {} MiB; {} MiB data written, {:.1} MiB/s)",
        p.percent(),
        mib(p.done),
        mib(p.total),
        mib(p.data_written),
        p.mib_per_sec()
    )
}

/// Where the run prints.
pub trait Console {
    /// One line of what the installer does.
    fn line(&mut self, text: &str);
    /// A write's progress (called often; the console decides what to show).
    fn progress(&mut self, label: &str, p: &WriteProgress);
    /// The write is over.
    fn progress_end(&mut self, label: &str) {
        let _ = label;
    }
}

/// Plain lines on a writer: progress as [`progress_line`]s when
/// [`Throttle`] says so.
#[derive(Debug)]
pub struct PlainConsole<W: Write> {
    out: W,
    throttle: Throttle,
}

impl<W: Write> PlainConsole<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        PlainConsole {
            out,
            throttle: Throttle::default(),
        }
    }

    /// The writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Console for PlainConsole<W> {
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn progress(&mut self, label: &str, p: &WriteProgress) {
        if self.throttle.due(p) {
            self.line(&progress_line(label, p));
        }
    }

    fn progress_end(&mut self, _label: &str) {
        self.throttle = Throttle::default();
    }
}

/// Where everything is, and how long to wait.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The CONFIG partition: `config.ini`, the node operator key, SSH keys.
    pub config_dir: PathBuf,
    /// The data partition: `deployment.json` and the two image archives.
    pub data_dir: PathBuf,
    /// Files read on the live system (`/proc/cmdline`, `/commit-time`, ...).
    pub sources: LiveSources,
    /// Where the capture, `config.json` and `config-hostos.json` go.
    pub work: PathBuf,
    /// Where the drives' device nodes are (`/dev`).
    pub dev_dir: PathBuf,
    /// Present when booted through UEFI (`/sys/firmware/efi`).
    pub efi_dir: PathBuf,
    /// The age pause from `--age-pause-secs`.
    pub age_pause_secs: Option<u64>,
    /// Longest wait for the router-advertised default route.
    pub route_wait: Duration,
    /// Longest wait for the clock to be synchronised.
    pub ntp_wait: Duration,
    /// The wait before rebooting.
    pub reboot_delay: Duration,
    /// How much of the zeroed ranges is read back.
    pub hole_check: HoleCheck,
    /// Colour the banners.
    pub colour: bool,
}

impl Default for RunOptions {
    /// The paths of a booted SetupOS, IC's waits.
    fn default() -> Self {
        RunOptions {
            config_dir: "/config".into(),
            data_dir: "/data".into(),
            sources: LiveSources::default(),
            work: "/run/setupos".into(),
            dev_dir: "/dev".into(),
            efi_dir: "/sys/firmware/efi".into(),
            age_pause_secs: None,
            route_wait: Duration::from_secs(60),
            ntp_wait: Duration::from_secs(120),
            reboot_delay: Duration::from_secs(15),
            hole_check: HoleCheck::Sample,
            colour: false,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Installed; `rebooting` when the reboot was asked for.
    Installed {
        /// The reboot was asked for.
        rebooting: bool,
    },
    /// The checks passed and installation is switched off.
    ChecksOnly,
    /// A step failed; the failure banner was printed.
    Failed {
        /// The step.
        step: Step,
        /// Why.
        reasons: Vec<String>,
    },
}

impl Outcome {
    /// The process exit code: 0, or 1 for a failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Failed { .. } => 1,
            _ => 0,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The management MAC from the BMC, asked through `runner`.
fn bmc_mac(runner: &mut dyn Runner) -> Result<icos_config::MacAddr6, IpmitoolError> {
    let out = runner
        .output(&Cmd::new("ipmitool").args(["lan", "print"]))
        .map_err(|e| IpmitoolError::Run(std::io::Error::other(e.to_string())))?;
    match parse_ipmitool_mac(&out.stdout) {
        Ok(Some(mac)) => Ok(mac),
        Ok(None) => Err(IpmitoolError::NoMacLine {
            status: out.status_text(),
            stderr: out.stderr.trim().to_string(),
        }),
        Err(line) => Err(IpmitoolError::BadMacLine(line)),
    }
}

/// The SetupOS inputs' paths on the CONFIG and data partitions.
pub fn input_paths(config_dir: &Path, data_dir: &Path) -> InputPaths {
    let keys = config_dir.join("ssh_authorized_keys");
    let key = config_dir.join("node_operator_private_key.pem");
    InputPaths {
        config_ini: config_dir.join("config.ini"),
        deployment_json: data_dir.join("deployment.json"),
        ssh_keys: keys.is_dir().then_some(keys),
        node_operator_key: key.exists().then_some(key),
        mgmt_mac: None,
    }
}

/// What the steps pass on.
struct State {
    switches: Switches,
    total: usize,
    config: Option<SetupOSConfig>,
    plan: Option<InstallPlan>,
    hostos: Option<ImageArchive>,
    guestos: Option<ImageArchive>,
}

type StepResult = Result<(), Vec<String>>;

struct Installer<'a> {
    opts: &'a RunOptions,
    runner: &'a mut dyn Runner,
    console: &'a mut dyn Console,
    age_from_cmdline: Option<u64>,
}

impl Installer<'_> {
    fn say(&mut self, text: &str) {
        self.console.line(text);
    }

    fn step(&mut self, st: &mut State, step: Step) -> StepResult {
        match step {
            Step::Config => self.config(st),
            Step::Capture => self.capture(st),
            Step::Checks => self.checks(st),
            Step::Preflight => self.preflight(st),
            Step::SetupDisk => self.setup_disk(st),
            Step::InstallHostOs => self.install_hostos(st),
            Step::InstallGuestOs => self.install_guestos(st),
            Step::SetupHostOsConfig => self.setup_hostos_config(st),
            Step::Success => {
                let text = success_banner(st.switches.reboot_after_installation, self.opts.colour);
                self.say(text.trim_end());
                self.say(SUCCESS_LINE);
                Ok(())
            }
            Step::Reboot => {
                let secs = self.opts.reboot_delay.as_secs();
                self.say(&format!("rebooting into HostOS in {secs} s"));
                std::thread::sleep(self.opts.reboot_delay);
                self.runner
                    .run(&Cmd::new("systemctl").arg("reboot"))
                    .map(|_| ())
                    .map_err(|e| vec![e.to_string()])
            }
        }
    }

    fn config(&mut self, st: &mut State) -> StepResult {
        let o = self.opts;
        let paths = input_paths(&o.config_dir, &o.data_dir);
        self.say(&format!(
            "reading {}, {}{}{}",
            paths.config_ini.display(),
            paths.deployment_json.display(),
            paths
                .node_operator_key
                .as_ref()
                .map(|p| format!(", {}", p.display()))
                .unwrap_or_default(),
            paths
                .ssh_keys
                .as_ref()
                .map(|p| format!(", {}", p.display()))
                .unwrap_or_default(),
        ));
        let runner = &mut *self.runner;
        let inputs = SetupOsInputs::load_with(&paths, || bmc_mac(runner)).map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("config: {p}"))
                .collect::<Vec<_>>()
        })?;
        let config = create_setupos_config(&inputs);
        std::fs::create_dir_all(&o.work)
            .map_err(|e| vec![format!("creating {}: {e}", o.work.display())])?;
        let out = o.work.join("config.json");
        icos_config::save(&out, &config).map_err(|e| vec![format!("writing the config: {e}")])?;
        self.say(&format!(
            "config: management MAC {} (from {}), {} deployment, {} NNS URL(s); written to {}",
            icos_deterministic_ips::format_mac(&inputs.mgmt_mac),
            inputs.mgmt_mac_source,
            config.icos_settings.deployment_environment.as_str(),
            config.icos_settings.nns_urls.len(),
            out.display()
        ));
        st.config = Some(config);
        Ok(())
    }

    fn capture(&mut self, st: &mut State) -> StepResult {
        let Some(config) = st.config.clone() else {
            return Err(vec!["no config".into()]);
        };
        let o = self.opts;
        let runner = &mut *self.runner;
        let console = &mut *self.console;
        for note in prepare_network(&config, runner, o.route_wait, &mut |l| console.line(l)) {
            console.line(&format!("network: {note}"));
        }
        if !wait_for_ntp(runner, o.ntp_wait, &mut |l| console.line(l)) {
            console.line(&format!(
                "the clock is not synchronised after {} s; the time check will say so",
                o.ntp_wait.as_secs()
            ));
        }
        let dir = o.work.join("captured");
        let done = capture(&dir, &config, &o.sources, runner, now_secs())
            .map_err(|e| vec![e.to_string()])?;
        for note in &done.notes {
            console.line(&format!("capture: {note}"));
        }
        console.line(&format!(
            "captured {} files into {}",
            done.files.len(),
            dir.display()
        ));
        Ok(())
    }

    fn checks(&mut self, st: &mut State) -> StepResult {
        let dir = self.opts.work.join("captured");
        let run = check_captured(&dir, now_secs()).map_err(|e| {
            e.0.iter()
                .map(|p| format!("capture: {p}"))
                .collect::<Vec<_>>()
        })?;
        for line in run.report.to_string().lines() {
            self.say(line);
        }
        let pause = age_pause(
            &run.report,
            st.switches,
            self.age_from_cmdline,
            self.opts.age_pause_secs,
        );
        if !pause.is_zero() && run.passed() {
            self.say(&format!(
                "WARNING: this SetupOS image is more than six weeks old; download the newest \
                 release. Pausing {} s before going on.",
                pause.as_secs()
            ));
            std::thread::sleep(pause);
        }
        if !run.passed() {
            return Err(run.reasons());
        }
        match &run.plan {
            Some(Ok(plan)) => {
                self.say(&format!("install plan: {plan}"));
                st.plan = Some(plan.clone());
            }
            Some(Err(e)) => return Err(vec![format!("install plan: {e}")]),
            None => {}
        }
        Ok(())
    }

    fn preflight(&mut self, st: &mut State) -> StepResult {
        let Some(plan) = st.plan.clone() else {
            return Err(vec!["no install plan".into()]);
        };
        let o = self.opts;
        let mut problems = Vec::new();
        let mut archives = Vec::new();
        for name in [HOSTOS_ARCHIVE, GUESTOS_ARCHIVE] {
            let path = o.data_dir.join(name);
            self.say(&format!("reading {} to its end", path.display()));
            match inspect_archive(&path) {
                Ok(a) => {
                    self.say(&format!(
                        "{name}: disk.img of {} MiB ({} MiB stored)",
                        mib(a.size),
                        mib(a.stored)
                    ));
                    archives.push(Some(a));
                }
                Err(e) => {
                    problems.push(e.to_string());
                    archives.push(None);
                }
            }
        }
        let system = &plan.system_drive;
        if let Some(Some(h)) = archives.first()
            && h.size > system.size
        {
            problems.push(format!(
                "{HOSTOS_ARCHIVE}: disk.img is {} bytes, more than the {} bytes of {}",
                h.size, system.size, system.name
            ));
        }
        let guestos_lv = icos_layout::OsKind::HostOs
            .layout()
            .lvm
            .and_then(|l| l.volume("guestos").map(|v| l.volume_size_bytes(v)));
        if let (Some(Some(g)), Some(lv)) = (archives.get(1), guestos_lv)
            && g.size > lv
        {
            problems.push(format!(
                "{GUESTOS_ARCHIVE}: disk.img is {} bytes, more than the {lv} bytes of the \
                 guestos volume",
                g.size
            ));
        }
        for d in plan.wiped() {
            let dev = device_path(&o.dev_dir, &d.name);
            if !dev.exists() {
                problems.push(format!("{}: no such device", dev.display()));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        st.guestos = archives.pop().flatten();
        st.hostos = archives.pop().flatten();
        Ok(())
    }

    fn setup_disk(&mut self, st: &mut State) -> StepResult {
        let Some(plan) = st.plan.clone() else {
            return Err(vec!["no install plan".into()]);
        };
        let done =
            setup_disks(self.runner, &plan, &self.opts.dev_dir).map_err(|e| vec![e.to_string()])?;
        for d in done {
            self.say(&d);
        }
        Ok(())
    }

    fn write(&mut self, label: &str, archive: &ImageArchive, target: &Path) -> StepResult {
        self.say(&format!(
            "writing {} onto {}",
            archive.path.display(),
            target.display()
        ));
        let console = &mut *self.console;
        let result = install_image(
            archive,
            target,
            Zeroer::default(),
            self.opts.hole_check,
            &mut |p| console.progress(label, p),
        );
        console.progress_end(label);
        let (written, verified) = result.map_err(|e| vec![e.to_string()])?;
        self.say(&format!(
            "{label}: wrote {} MiB of data and zeroed {} MiB ({}) in {:.1} s",
            mib(written.data_bytes()),
            mib(written.zeroed_bytes()),
            written
                .zero_method
                .map_or("nothing to zero", |m| m.as_str()),
            written.write_secs
        ));
        self.say(&format!(
            "{label}: verified: {} MiB of data read back, SHA-256 {} matches; {} MiB of \
             zeroed ranges read back as zero ({} check) in {:.1} s",
            mib(verified.data_bytes),
            hex::encode(written.data_sha256),
            mib(verified.zero_bytes_checked),
            self.opts.hole_check.as_str(),
            verified.secs
        ));
        Ok(())
    }

    fn install_hostos(&mut self, st: &mut State) -> StepResult {
        let (Some(plan), Some(archive)) = (st.plan.clone(), st.hostos.clone()) else {
            return Err(vec!["no plan or HostOS image".into()]);
        };
        let o = self.opts;
        let system = device_path(&o.dev_dir, &plan.system_drive.name);
        self.write("install-hostos", &archive, &system)?;
        let extras: Vec<PathBuf> = plan
            .extra_pvs
            .iter()
            .map(|d| device_path(&o.dev_dir, &d.name))
            .collect();
        let (notes, warnings) =
            grow_hostos(self.runner, &system, &extras).map_err(|e| vec![e.to_string()])?;
        for n in notes {
            self.say(&n);
        }
        for w in warnings {
            self.say(&format!("warning: {w}"));
        }
        match set_boot_entry(self.runner, &system, &o.efi_dir).map_err(|e| vec![e.to_string()])? {
            Ok(done) => self.say(&done),
            Err(skipped) => self.say(&format!("warning: {skipped}")),
        }
        Ok(())
    }

    fn install_guestos(&mut self, st: &mut State) -> StepResult {
        let Some(archive) = st.guestos.clone() else {
            return Err(vec!["no GuestOS image".into()]);
        };
        let lv = self
            .opts
            .dev_dir
            .join(format!("mapper/{}-guestos", disk::VG));
        if !wait_for_path(&lv, Duration::from_secs(30)) {
            return Err(vec![format!("{} did not appear", lv.display())]);
        }
        self.write("install-guestos", &archive, &lv)
    }

    fn setup_hostos_config(&mut self, st: &mut State) -> StepResult {
        let Some(config) = st.config.clone() else {
            return Err(vec!["no config".into()]);
        };
        let o = self.opts;
        let hostos = icos_config::generate_hostos_config(&config);
        let saved = o.work.join("config-hostos.json");
        icos_config::save(&saved, &hostos)
            .map_err(|e| vec![format!("writing the HostOS config: {e}")])?;
        let files = hostos_config_files(&hostos, &o.config_dir, &o.data_dir)
            .map_err(|e| vec![e.to_string()])?;
        let lv = o.dev_dir.join(format!("mapper/{}-config", disk::VG));
        if !wait_for_path(&lv, Duration::from_secs(30)) {
            return Err(vec![format!("{} did not appear", lv.display())]);
        }
        let mnt = o.work.join("hostos-config");
        std::fs::create_dir_all(&mnt)
            .map_err(|e| vec![format!("creating {}: {e}", mnt.display())])?;
        self.runner
            .run(
                &Cmd::new("mount")
                    .args(["-t", "ext4"])
                    .arg(lv.display().to_string())
                    .arg(mnt.display().to_string()),
            )
            .map_err(|e| vec![e.to_string()])?;
        let written = write_config_files(&mnt, &files);
        let unmounted = self
            .runner
            .run(&Cmd::new("umount").arg(mnt.display().to_string()));
        written.map_err(|e| vec![e.to_string()])?;
        unmounted.map_err(|e| vec![e.to_string()])?;
        for f in &files {
            self.say(&format!(
                "{}: {} ({} bytes, from {})",
                lv.display(),
                f.name,
                f.bytes.len(),
                f.source
            ));
        }
        self.say(&format!(
            "HostOS config written to {} and read back; a copy is at {}",
            lv.display(),
            saved.display()
        ));
        Ok(())
    }
}

/// Runs the installer (see the module docs) and prints what it does; on a
/// failure prints the failure banner and [`FAILURE_LINE`].
pub fn run(opts: &RunOptions, runner: &mut dyn Runner, console: &mut dyn Console) -> Outcome {
    let cmdline = std::fs::read_to_string(&opts.sources.cmdline);
    let parsed = cmdline
        .as_ref()
        .map_err(|e| format!("{}: {e}", opts.sources.cmdline.display()))
        .and_then(|text| {
            let switches = parse_cmdline(text).map_err(|e| format!("kernel command line: {e}"))?;
            let pause = cmdline_age_pause(text).map_err(|e| format!("kernel command line: {e}"))?;
            Ok((switches, pause))
        });
    let mut inst = Installer {
        opts,
        runner,
        console,
        age_from_cmdline: None,
    };
    let (switches, pause) = match parsed {
        Ok(v) => v,
        Err(reason) => return fail(&mut inst, Step::Config, vec![reason]),
    };
    inst.age_from_cmdline = pause;
    let plan = steps(switches);
    inst.say(&format!(
        "SetupOS installer: {} steps: {}",
        plan.len(),
        plan.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut st = State {
        switches,
        total: plan.len(),
        config: None,
        plan: None,
        hostos: None,
        guestos: None,
    };
    let mut current = next_step(None, switches);
    let mut n = 0;
    while let Some(step) = current {
        n += 1;
        inst.say(&format!("[{n}/{}] {step}: {}", st.total, step.describe()));
        if let Err(reasons) = inst.step(&mut st, step) {
            return fail(&mut inst, step, reasons);
        }
        if step == Step::Checks && !switches.perform_installation {
            inst.say(&format!(
                "{CHECKS_ONLY_LINE}: installation is switched off \
                 (ic.setupos.perform_installation=false); nothing was written"
            ));
            return Outcome::ChecksOnly;
        }
        current = next_step(Some(step), switches);
    }
    Outcome::Installed {
        rebooting: switches.reboot_after_installation,
    }
}

fn fail(inst: &mut Installer<'_>, step: Step, mut reasons: Vec<String>) -> Outcome {
    if step.writes_drives() {
        reasons.push(format!(
            "the drives were being written when this happened ({step}); boot the installer \
             again to start over"
        ));
    }
    let banner = failure_banner(&reasons, inst.opts.colour);
    inst.say(banner.trim_end());
    inst.say(&format!("{FAILURE_LINE} at {step}: {}", reasons.join("; ")));
    Outcome::Failed { step, reasons }
}

#[cfg(test)]
mod tests;
