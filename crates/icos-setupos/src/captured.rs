//! Running every check over a directory of captured command output.
//!
//! The installer captures what it needs on the live system into one
//! directory, then runs [`check_captured`] on it. Each file holds the
//! verbatim output of one command:
//!
//! | file | command | needed |
//! |---|---|---|
//! | `cmdline` | `cat /proc/cmdline` | no (all switches on) |
//! | `commit-time` | `cat /commit-time` (seconds since 1970) | yes |
//! | `now` | `date +%s` | no (the caller's clock) |
//! | `config.json` | the SetupOS config made from the node provider's inputs | yes |
//! | `lshw.json` | `lshw -json -class cpu` | for the hardware check |
//! | `lshw-memory.json` | `lshw -json -class memory` | this or `meminfo` |
//! | `meminfo` | `cat /proc/meminfo` | this or `lshw-memory.json` |
//! | `nproc` | `nproc` | for the hardware check |
//! | `lsblk.json` | `lsblk -J -b -d -o NAME,SIZE,TYPE,RM,RO,MODEL` | for the hardware check and the install plan |
//! | `ip-addr.json` | `ip -j addr show` | yes |
//! | `ip-route.json` | `ip -j -6 route show` | yes |
//! | `ping6` | `ping6 -c4 IPV6_GATEWAY` | yes |
//! | `ping4` | `ping4 -c2 -w20 IPV4_GATEWAY` | with IPv4 |
//! | `nns` | per NNS URL: `echo URL $(curl --insecure --head --connect-timeout 3 -s -o /dev/null -w '%{http_code}' URL)` | yes |
//! | `chrony` | `systemctl is-active chrony` | yes |
//! | `timedatectl` | `timedatectl show` | yes |
//!
//! `lshw-memory.json` is preferred over `meminfo`: IC compares the installed
//! memory (lshw's `System Memory`) with the threshold, and `MemTotal` is
//! several GiB less than what is installed.

use std::fmt;
use std::path::{Path, PathBuf};

use icos_config::SetupOSConfig;
use serde::Serialize;

use crate::cmdline::{Switches, parse_cmdline};
use crate::hardware::{
    HardwareFacts, MemorySource, ParseError, check_hardware, parse_lsblk, parse_lshw_cpus,
    parse_lshw_memory, parse_meminfo, parse_nproc,
};
use crate::network::{
    NetworkFacts, check_network, parse_ip_addr, parse_ip_route, parse_nns_probes, parse_ping,
};
use crate::plan::{InstallPlan, PlanRules, plan_install};
use crate::report::{CheckName, CheckResult, Report};
use crate::time::{check_age, check_time, parse_epoch};

/// A captured file that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureProblem {
    /// The file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for CaptureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

/// Every problem with the captured files (the checks did not run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CaptureErrors(pub Vec<CaptureProblem>);

impl fmt::Display for CaptureErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} captured files are unusable:", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// The outcome of all checks over one capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedRun {
    /// The kernel command-line switches.
    pub switches: Switches,
    /// The checks, in run order: age, hardware, network, time.
    pub report: Report,
    /// The install plan, when installation is on: the plan or why there is none.
    pub plan: Option<Result<InstallPlan, String>>,
}

impl CapturedRun {
    /// True when nothing stops the installation.
    pub fn passed(&self) -> bool {
        self.report.passed() && !matches!(self.plan, Some(Err(_)))
    }

    /// Every reason the installation stops, for the failure banner.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = self.report.errors();
        if let Some(Err(e)) = &self.plan {
            out.push(format!("install plan: {e}"));
        }
        out
    }
}

struct Reader<'a> {
    dir: &'a Path,
    problems: Vec<CaptureProblem>,
}

impl Reader<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn note(&mut self, name: &str, reason: impl Into<String>) {
        let file = self.path(name);
        self.problems.push(CaptureProblem {
            file,
            reason: reason.into(),
        });
    }

    /// The text of `name`, `None` (and no problem) when it does not exist.
    fn optional(&mut self, name: &str) -> Option<String> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.note(name, format!("cannot read: {e}"));
                None
            }
        }
    }

    fn required(&mut self, name: &str, why: &str) -> Option<String> {
        let path = self.path(name);
        if !path.exists() {
            self.note(name, format!("missing ({why})"));
            return None;
        }
        self.optional(name)
    }

    fn parse<T>(
        &mut self,
        name: &str,
        text: Option<String>,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        match f(&text?) {
            Ok(v) => Some(v),
            Err(e) => {
                self.note(name, e.0);
                None
            }
        }
    }
}

/// Reads the captured files in `dir` and runs every check, as the
/// installer does; `now` (seconds since 1970) is used when the capture has
/// no `now` file. Fails, listing every unusable file, when a needed file is
/// missing or malformed.
pub fn check_captured(dir: &Path, now: u64) -> Result<CapturedRun, CaptureErrors> {
    let mut rd = Reader {
        dir,
        problems: Vec::new(),
    };
    let switches = match rd.optional("cmdline") {
        None => Switches::default(),
        Some(text) => parse_cmdline(&text).unwrap_or_else(|e| {
            rd.note("cmdline", e);
            Switches::default()
        }),
    };

    let commit = rd.required("commit-time", "the age check needs the image's commit time");
    let commit = rd.parse("commit-time", commit, parse_epoch);
    let now_text = rd.optional("now");
    let now = rd.parse("now", now_text, parse_epoch).unwrap_or(now);

    let config_path = rd.path("config.json");
    let config: Option<SetupOSConfig> = if config_path.exists() {
        match icos_config::load(&config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                rd.note("config.json", format!("{e}"));
                None
            }
        }
    } else {
        rd.note(
            "config.json",
            "missing (the network check needs the SetupOS config)",
        );
        None
    };

    let needs_lsblk = switches.check_hardware || switches.perform_installation;
    let drives = if needs_lsblk {
        let t = rd.required("lsblk.json", "the drive inventory");
        rd.parse("lsblk.json", t, parse_lsblk)
    } else {
        None
    };
    let hardware = if switches.check_hardware {
        let t = rd.required("lshw.json", "the CPU inventory");
        let cpus = rd.parse("lshw.json", t, parse_lshw_cpus);
        let t = rd.required("nproc", "the thread count");
        let threads = rd.parse("nproc", t, parse_nproc);
        let memory = match rd.optional("lshw-memory.json") {
            Some(t) => rd
                .parse("lshw-memory.json", Some(t), parse_lshw_memory)
                .map(|m| (m, MemorySource::Lshw)),
            None => {
                let t = rd.required("meminfo", "the memory size (or give lshw-memory.json)");
                rd.parse("meminfo", t, parse_meminfo)
                    .map(|m| (m, MemorySource::Meminfo))
            }
        };
        match (cpus, threads, memory, drives.clone()) {
            (Some(cpus), Some(threads), Some(memory), Some(drives)) => Some(HardwareFacts {
                cpus,
                threads,
                memory,
                drives,
            }),
            _ => None,
        }
    } else {
        None
    };

    let t = rd.required("ip-addr.json", "the interfaces and addresses");
    let interfaces = rd.parse("ip-addr.json", t, parse_ip_addr);
    let t = rd.required("ip-route.json", "the IPv6 routes");
    let routes = rd.parse("ip-route.json", t, parse_ip_route);
    let ping6 = rd
        .required("ping6", "the IPv6 gateway ping")
        .map(|t| parse_ping(&t));
    let with_v4 = config
        .as_ref()
        .is_some_and(|c| c.network_settings.ipv4_config.is_some());
    let ping4 = if with_v4 {
        rd.required("ping4", "IPv4 is configured: the IPv4 gateway ping")
            .map(|t| parse_ping(&t))
    } else {
        None
    };
    let t = rd.required("nns", "the NNS probes");
    let nns = rd.parse("nns", t, parse_nns_probes);
    let chrony = rd.required("chrony", "the chrony service state");
    let timedatectl = rd.required("timedatectl", "the clock state");

    if !rd.problems.is_empty() {
        return Err(CaptureErrors(rd.problems));
    }
    // Every needed value is present once no problem was noted.
    let (Some(commit), Some(config), Some(interfaces), Some(routes), Some(ping6), Some(nns)) =
        (commit, config, interfaces, routes, ping6, nns)
    else {
        return Err(CaptureErrors(vec![CaptureProblem {
            file: dir.to_path_buf(),
            reason: "incomplete capture".into(),
        }]));
    };

    let mut checks = vec![check_age(commit, now)];
    checks.push(match &hardware {
        Some(facts) => {
            check_hardware(
                facts,
                config.icos_settings.node_operator_private_key.is_some(),
            )
            .0
        }
        None => CheckResult::skipped(
            CheckName::Hardware,
            "switched off on the kernel command line (ic.setupos.check_hardware=false)",
        ),
    });
    checks.push(check_network(
        &config,
        &NetworkFacts {
            interfaces,
            routes,
            ping6,
            ping4: ping4.filter(|_| with_v4),
            nns,
        },
    ));
    checks.push(check_time(
        chrony.as_deref().unwrap_or_default(),
        timedatectl.as_deref().unwrap_or_default(),
    ));
    let plan = if switches.perform_installation {
        drives.map(|d| plan_install(&d, &PlanRules::default()).map_err(|e| e.to_string()))
    } else {
        None
    };
    Ok(CapturedRun {
        switches,
        report: Report { checks },
        plan,
    })
}
