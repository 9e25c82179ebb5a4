//! Capturing on the live system what [`crate::check_captured`] reads.
//!
//! [`capture`] writes exactly the files of the table in the `captured`
//! module docs into one folder: copies of `/proc/cmdline`, `/commit-time`
//! and `/proc/meminfo` (paths in [`LiveSources`], so tests use a fake
//! root), the SetupOS config, the time, and the output of the commands
//! ([`capture_commands`]), run through a [`Runner`]. A command whose
//! failure is data (`ping`, `curl`, `systemctl is-active`) is kept whatever
//! its exit status; any other command that fails leaves its file out, with
//! a note, so the checks report the file missing and the note says why.
//! The NNS probe also passes `--max-time 10`, so a server that accepts and
//! never answers cannot hold the installer.
//!
//! Before capturing, [`prepare_network`] waits for the default route that
//! router advertisements install and, when IPv4 is configured, puts the
//! address and default route on the interface of that route (as IC does
//! before pinging the IPv4 gateway); [`wait_for_ntp`] sets the RTC to UTC
//! and waits for `timedatectl show` to say `NTPSynchronized=yes`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use icos_config::{Ipv6Config, SetupOSConfig};

use crate::hardware::parse_lshw_memory;
use crate::network::parse_ip_route;
use crate::runner::{Cmd, CommandError, Runner};
use crate::time::timedatectl_value;

/// The files read on the live system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSources {
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline: PathBuf,
    /// The image's commit time (`/commit-time`).
    pub commit_time: PathBuf,
    /// `/proc/meminfo`.
    pub meminfo: PathBuf,
}

impl Default for LiveSources {
    fn default() -> Self {
        LiveSources {
            cmdline: "/proc/cmdline".into(),
            commit_time: "/commit-time".into(),
            meminfo: "/proc/meminfo".into(),
        }
    }
}

/// Writing the capture failed (a command failing is a note, not this).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The capture folder or a file in it could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config could not be serialised.
    #[error("serialising the SetupOS config: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// How a command's output becomes its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Standard output, only when the command succeeds.
    Stdout,
    /// Standard output whatever the exit status.
    StdoutAnyExit,
    /// Standard output and error whatever the exit status (ping).
    CombinedAnyExit,
}

/// One captured command: the file it goes to, the command, what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The file in the capture folder.
    pub file: &'static str,
    /// The command.
    pub cmd: Cmd,
    /// What is kept.
    pub keep: Keep,
}

/// The IPv6 gateway of the config, when it names one.
pub fn ipv6_gateway(config: &SetupOSConfig) -> Option<std::net::Ipv6Addr> {
    match &config.network_settings.ipv6_config {
        Ipv6Config::Deterministic(d) => Some(d.gateway),
        Ipv6Config::Fixed(f) => Some(f.gateway),
        _ => None,
    }
}

/// The commands captured for `config` (except the NNS probes, which are
/// one per URL: [`nns_probe`]).
pub fn capture_commands(config: &SetupOSConfig) -> Vec<Capture> {
    let c = |file, cmd, keep| Capture { file, cmd, keep };
    let mut out = vec![
        c(
            "lshw.json",
            Cmd::new("lshw").args(["-json", "-class", "cpu"]),
            Keep::Stdout,
        ),
        c(
            "lshw-memory.json",
            Cmd::new("lshw").args(["-json", "-class", "memory"]),
            Keep::Stdout,
        ),
        c("nproc", Cmd::new("nproc"), Keep::Stdout),
        c(
            "lsblk.json",
            Cmd::new("lsblk").args(["-J", "-b", "-d", "-o", "NAME,SIZE,TYPE,RM,RO,MODEL"]),
            Keep::Stdout,
        ),
        c(
            "ip-addr.json",
            Cmd::new("ip").args(["-j", "addr", "show"]),
            Keep::Stdout,
        ),
        c(
            "ip-route.json",
            Cmd::new("ip").args(["-j", "-6", "route", "show"]),
            Keep::Stdout,
        ),
    ];
    if let Some(gw) = ipv6_gateway(config) {
        out.push(c(
            "ping6",
            Cmd::new("ping").args(["-6", "-c", "4"]).arg(gw.to_string()),
            Keep::CombinedAnyExit,
        ));
    }
    if let Some(v4) = &config.network_settings.ipv4_config {
        out.push(c(
            "ping4",
            Cmd::new("ping")
                .args(["-4", "-c", "2", "-w", "20"])
                .arg(v4.gateway.to_string()),
            Keep::CombinedAnyExit,
        ));
    }
    out.push(c(
        "chrony",
        Cmd::new("systemctl").args(["is-active", "chrony"]),
        Keep::StdoutAnyExit,
    ));
    out.push(c(
        "timedatectl",
        Cmd::new("timedatectl").arg("show"),
        Keep::Stdout,
    ));
    out
}

/// The probe of one NNS URL; its standard output is curl's HTTP status.
pub fn nns_probe(url: &str) -> Cmd {
    Cmd::new("curl")
        .args([
            "--insecure",
            "--head",
            "--connect-timeout",
            "3",
            "--max-time",
            "10",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(url)
}

/// Every file [`capture`] may write.
pub const CAPTURE_FILES: [&str; 16] = [
    "cmdline",
    "commit-time",
    "meminfo",
    "now",
    "config.json",
    "lshw.json",
    "lshw-memory.json",
    "nproc",
    "lsblk.json",
    "ip-addr.json",
    "ip-route.json",
    "ping6",
    "ping4",
    "chrony",
    "timedatectl",
    "nns",
];

/// What [`capture`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The files written, in order.
    pub files: Vec<String>,
    /// Why files were left out, or other things worth knowing.
    pub notes: Vec<String>,
}

fn write(dir: &Path, name: &str, bytes: &[u8], done: &mut Captured) -> Result<(), LiveError> {
    let path = dir.join(name);
    fs::write(&path, bytes).map_err(|source| LiveError::Write { path, source })?;
    done.files.push(name.to_string());
    Ok(())
}

/// Captures into `out` (created if needed) everything the checks read;
/// `now` is written as the time of the capture. See the module docs.
pub fn capture(
    out: &Path,
    config: &SetupOSConfig,
    sources: &LiveSources,
    runner: &mut dyn Runner,
    now: u64,
) -> Result<Captured, LiveError> {
    fs::create_dir_all(out).map_err(|source| LiveError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    // Files of an earlier capture must not stand in for ones left out now.
    for name in CAPTURE_FILES {
        match fs::remove_file(out.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LiveError::Write {
                    path: out.join(name),
                    source: e,
                });
            }
            _ => {}
        }
    }
    let mut done = Captured::default();
    for (name, path) in [
        ("cmdline", &sources.cmdline),
        ("commit-time", &sources.commit_time),
        ("meminfo", &sources.meminfo),
    ] {
        match fs::read(path) {
            Ok(bytes) => write(out, name, &bytes, &mut done)?,
            Err(e) => done
                .notes
                .push(format!("{name}: cannot read {}: {e}", path.display())),
        }
    }
    write(out, "now", format!("{now}\n").as_bytes(), &mut done)?;
    let mut json = icos_config::to_json_pretty(config)?;
    json.push('\n');
    write(out, "config.json", json.as_bytes(), &mut done)?;

    for c in capture_commands(config) {
        let result = match c.keep {
            Keep::Stdout => runner.run(&c.cmd).map(|o| o.stdout),
            Keep::StdoutAnyExit => runner.output(&c.cmd).map(|o| o.stdout),
            Keep::CombinedAnyExit => runner.output(&c.cmd).map(|o| o.combined()),
        };
        match result {
            Ok(text) => {
                if c.file == "lshw-memory.json"
                    && let Err(e) = parse_lshw_memory(&text)
                {
                    // The hardware check then uses /proc/meminfo.
                    done.notes.push(format!(
                        "lshw-memory.json left out ({e}); the memory size comes from meminfo"
                    ));
                    continue;
                }
                write(out, c.file, text.as_bytes(), &mut done)?;
            }
            Err(e) => done.notes.push(format!("{}: {e}", c.file)),
        }
    }

    let mut probes = String::new();
    for url in &config.icos_settings.nns_urls {
        let status = match runner.output(&nns_probe(url.as_str())) {
            Ok(o) if !o.stdout.trim().is_empty() => o.stdout.trim().to_string(),
            Ok(_) => "000".to_string(),
            Err(e) => {
                done.notes.push(format!("nns: {e}"));
                "000".to_string()
            }
        };
        probes.push_str(&format!("{url} {status}\n"));
    }
    write(out, "nns", probes.as_bytes(), &mut done)?;
    Ok(done)
}

/// The interface of the IPv6 default route in `ip -j -6 route` output.
pub fn default_route_dev(ip_route_json: &str) -> Option<String> {
    parse_ip_route(ip_route_json)
        .ok()?
        .into_iter()
        .find(|r| r.dst == "default")
        .map(|r| r.dev)
}

/// Polls `probe` every `every` until it returns `Some` or `limit` passes
/// (it is always called at least once).
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Whether a failed `ip ... add` failed only because it is there already.
fn already_there(e: &CommandError) -> bool {
    matches!(e, CommandError::Failed { stderr, .. } if stderr.contains("File exists"))
}

/// Waits up to `limit` for a default IPv6 route from a router
/// advertisement, then, with IPv4 configured, adds the IPv4 address and
/// default route to that route's interface. Returns what happened, one
/// line each (problems included: the network check reports them).
pub fn prepare_network(
    config: &SetupOSConfig,
    runner: &mut dyn Runner,
    limit: Duration,
    say: &mut dyn FnMut(&str),
) -> Vec<String> {
    let mut notes = Vec::new();
    say(&format!(
        "waiting for an IPv6 default route from a router advertisement (up to {} s)",
        limit.as_secs()
    ));
    let started = Instant::now();
    let route_cmd = Cmd::new("ip").args(["-j", "-6", "route", "show"]);
    let dev = poll(limit, Duration::from_secs(1), || {
        runner
            .output(&route_cmd)
            .ok()
            .and_then(|o| default_route_dev(&o.stdout))
    });
    match &dev {
        Some(d) => notes.push(format!(
            "IPv6 default route via {d} after {:.0} s",
            started.elapsed().as_secs_f64()
        )),
        None => notes.push(format!("no IPv6 default route after {} s", limit.as_secs())),
    }
    if let Some(v4) = &config.network_settings.ipv4_config {
        match &dev {
            None => notes.push(
                "IPv4 not set up: no interface with a default route to put it on".to_string(),
            ),
            Some(dev) => {
                let addr = Cmd::new("ip")
                    .args(["addr", "add"])
                    .arg(format!("{}/{}", v4.address, v4.prefix_length))
                    .args(["dev", dev.as_str()]);
                let route = Cmd::new("ip")
                    .args(["route", "add", "default", "via"])
                    .arg(v4.gateway.to_string())
                    .args(["dev", dev.as_str()]);
                for cmd in [addr, route] {
                    match runner.run(&cmd) {
                        Ok(_) => notes.push(format!("IPv4: {cmd}")),
                        Err(e) if already_there(&e) => {
                            notes.push(format!("IPv4: already set: {cmd}"));
                        }
                        Err(e) => notes.push(format!("IPv4: {e}")),
                    }
                }
            }
        }
    }
    notes
}

/// Sets the RTC to UTC (as IC does) and waits up to `limit` for the clock
/// to be synchronised. Returns whether it is.
pub fn wait_for_ntp(runner: &mut dyn Runner, limit: Duration, say: &mut dyn FnMut(&str)) -> bool {
    if let Err(e) = runner.run(&Cmd::new("timedatectl").args(["set-local-rtc", "0"])) {
        say(&format!("warning: {e}"));
    }
    say(&format!(
        "waiting for the clock to be synchronised (NTPSynchronized=yes, up to {} s)",
        limit.as_secs()
    ));
    let show = Cmd::new("timedatectl").arg("show");
    poll(limit, Duration::from_secs(2), || {
        let out = runner.output(&show).ok()?;
        (timedatectl_value(&out.stdout, "NTPSynchronized") == Some("yes")).then_some(())
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::check_captured;
    use crate::runner::fake::FakeRunner;

    fn data(name: &str) -> String {
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/gen2-7313")
                .join(name),
        )
        .unwrap()
    }

    fn config(with_v4: bool) -> SetupOSConfig {
        let mut c: SetupOSConfig = serde_json::from_str(&data("config.json")).unwrap();
        if !with_v4 {
            c.network_settings.ipv4_config = None;
        }
        c
    }

    /// A runner answering as the captured Gen2 server did.
    fn gen2_runner() -> FakeRunner {
        let mut r = FakeRunner::default();
        r.answer("lshw -json -class cpu", 0, &data("lshw.json"), "");
        r.answer("lshw -json -class memory", 0, &data("lshw-memory.json"), "");
        r.answer("nproc", 0, &data("nproc"), "");
        r.answer("lsblk", 0, &data("lsblk.json"), "");
        r.answer("ip -j addr", 0, &data("ip-addr.json"), "");
        r.answer("ip -j -6 route", 0, &data("ip-route.json"), "");
        r.answer("ping -6", 0, &data("ping6"), "");
        r.answer("ping -4", 0, &data("ping4"), "");
        r.answer("systemctl is-active chrony", 0, &data("chrony"), "");
        r.answer("timedatectl show", 0, &data("timedatectl"), "");
        r.answer("curl", 0, "200", "");
        r
    }

    #[test]
    fn capture_over_a_fake_root_feeds_the_checks() {
        let root = tempfile::tempdir().unwrap();
        let sources = LiveSources {
            cmdline: root.path().join("proc/cmdline"),
            commit_time: root.path().join("commit-time"),
            meminfo: root.path().join("proc/meminfo"),
        };
        fs::create_dir_all(root.path().join("proc")).unwrap();
        fs::write(
            &sources.cmdline,
            "root=/dev/sda5 ic.setupos.reboot_after_installation=0\n",
        )
        .unwrap();
        fs::write(&sources.commit_time, data("commit-time")).unwrap();
        fs::write(&sources.meminfo, data("meminfo")).unwrap();
        let now: u64 = data("now").trim().parse().unwrap();
        let out = root.path().join("captured");
        let cfg = config(true);
        let mut r = gen2_runner();
        let done = capture(&out, &cfg, &sources, &mut r, now).unwrap();
        assert!(done.notes.is_empty(), "{:?}", done.notes);
        assert_eq!(done.files, CAPTURE_FILES);
        assert_eq!(
            done.files,
            [
                "cmdline",
                "commit-time",
                "meminfo",
                "now",
                "config.json",
                "lshw.json",
                "lshw-memory.json",
                "nproc",
                "lsblk.json",
                "ip-addr.json",
                "ip-route.json",
                "ping6",
                "ping4",
                "chrony",
                "timedatectl",
                "nns"
            ]
        );
        assert_eq!(
            fs::read_to_string(out.join("cmdline")).unwrap(),
            "root=/dev/sda5 ic.setupos.reboot_after_installation=0\n"
        );
        let nns = fs::read_to_string(out.join("nns")).unwrap();
        assert!(nns.lines().all(|l| l.ends_with(" 200")), "{nns}");
        assert!(r.log.iter().any(|l| l.starts_with(
            "curl --insecure --head --connect-timeout 3 --max-time 10 -s -o /dev/null -w '%{http_code}' "
        )));

        let run = check_captured(&out, 0).unwrap();
        assert!(!run.switches.reboot_after_installation);
        assert!(
            run.report
                .get(crate::CheckName::Hardware)
                .is_some_and(|h| !h.skipped)
        );
    }

    #[test]
    fn failing_commands_become_notes_and_missing_files() {
        let root = tempfile::tempdir().unwrap();
        let sources = LiveSources {
            cmdline: root.path().join("cmdline"),
            commit_time: root.path().join("no-commit-time"),
            meminfo: root.path().join("meminfo"),
        };
        fs::write(&sources.cmdline, "quiet\n").unwrap();
        fs::write(&sources.meminfo, data("meminfo")).unwrap();
        let mut r = gen2_runner();
        r.answers.insert(
            0,
            (
                "lsblk".into(),
                crate::runner::CmdOutput {
                    status: Some(32),
                    stdout: String::new(),
                    stderr: "lsblk: failed to access sysfs directory".into(),
                },
            ),
        );
        r.answers.insert(
            0,
            (
                "lshw -json -class memory".into(),
                crate::runner::CmdOutput {
                    status: Some(0),
                    stdout: "[]".into(),
                    stderr: String::new(),
                },
            ),
        );
        r.answers.insert(
            0,
            (
                "ping -6".into(),
                crate::runner::CmdOutput {
                    status: Some(2),
                    stdout: String::new(),
                    stderr: "ping: connect: Network is unreachable\n".into(),
                },
            ),
        );
        let out = root.path().join("captured");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("lsblk.json"), data("lsblk.json")).unwrap();
        fs::write(out.join("ping4"), data("ping4")).unwrap();
        fs::write(out.join("unrelated"), "kept").unwrap();
        let done = capture(&out, &config(false), &sources, &mut r, 1).unwrap();
        assert!(out.join("unrelated").exists());
        assert!(!out.join("lsblk.json").exists());
        assert!(!out.join("commit-time").exists());
        assert!(!out.join("lshw-memory.json").exists());
        assert!(!out.join("ping4").exists(), "no IPv4 configured");
        assert_eq!(
            fs::read_to_string(out.join("ping6")).unwrap(),
            "ping: connect: Network is unreachable\n"
        );
        let notes = done.notes.join("\n");
        assert!(notes.contains("commit-time: cannot read"), "{notes}");
        assert!(notes.contains("lsblk.json: `lsblk -J"), "{notes}");
        assert!(notes.contains("failed to access sysfs"), "{notes}");
        assert!(notes.contains("memory size comes from meminfo"), "{notes}");
        let err = check_captured(&out, 1).unwrap_err().to_string();
        assert!(err.contains("lsblk.json: missing"), "{err}");
        assert!(err.contains("commit-time: missing"), "{err}");
    }

    #[test]
    fn network_preparation_waits_for_the_route_and_adds_ipv4() {
        let mut r = gen2_runner();
        let mut said = Vec::new();
        let notes = prepare_network(&config(true), &mut r, Duration::ZERO, &mut |l| {
            said.push(l.to_string());
        });
        assert!(said[0].starts_with("waiting for an IPv6 default route"));
        let dev = default_route_dev(&data("ip-route.json")).unwrap();
        assert!(
            notes[0].starts_with(&format!("IPv6 default route via {dev}")),
            "{notes:?}"
        );
        let v4 = config(true).network_settings.ipv4_config.unwrap();
        assert!(r.log.contains(&format!(
            "ip addr add {}/{} dev {dev}",
            v4.address, v4.prefix_length
        )));
        assert!(r.log.contains(&format!(
            "ip route add default via {} dev {dev}",
            v4.gateway
        )));

        // No route: one poll, nothing added.
        let mut r = FakeRunner::default();
        r.answer("ip -j -6 route", 0, "[]", "");
        let notes = prepare_network(&config(true), &mut r, Duration::ZERO, &mut |_| {});
        assert_eq!(notes[0], "no IPv6 default route after 0 s");
        assert!(notes[1].starts_with("IPv4 not set up"));
        assert!(!r.log.iter().any(|l| l.contains(" add ")));

        // An address that is already there is fine.
        let mut r = gen2_runner();
        r.answer("ip addr add", 2, "", "RTNETLINK answers: File exists");
        let notes = prepare_network(&config(true), &mut r, Duration::ZERO, &mut |_| {});
        assert!(notes[1].starts_with("IPv4: already set"), "{notes:?}");
    }

    #[test]
    fn ntp_wait_reads_timedatectl() {
        let mut r = FakeRunner::default();
        r.answer("timedatectl show", 0, "NTP=yes\nNTPSynchronized=yes\n", "");
        assert!(wait_for_ntp(&mut r, Duration::ZERO, &mut |_| {}));
        assert_eq!(r.log, ["timedatectl set-local-rtc 0", "timedatectl show"]);
        let mut r = FakeRunner::default();
        r.answer("timedatectl show", 0, "NTPSynchronized=no\n", "");
        assert!(!wait_for_ntp(&mut r, Duration::ZERO, &mut |_| {}));
    }
}
