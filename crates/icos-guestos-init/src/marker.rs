//! The success marker, `GUESTOS BOOT SUCCESS key=value ...`: the line that
//! HostOS and `icos run` wait for, printed once every early-boot step
//! succeeded and the payload answers.
//!
//! Its fields come from `/proc` and the image's files, and the unit states
//! from one `systemctl list-units` run, so that printing it costs one
//! program start and one `systemctl` under emulation, not a shell with a
//! dozen of them.
//!
//! ```text
//! GUESTOS BOOT SUCCESS uptime=11.63 dfinity.system=A root=/dev/mapper/vroot ro,noatime var=ext4 version=<v> payload=active configured=yes failed_units=[]
//! GUESTOS BOOT SUCCESS role=boundary uptime=... router=active gateway=active configured=yes failed_units=[]
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::firewall::Profile;
use crate::{InitError, Paths, Result};

/// The kernel command line argument that names the booted slot.
const SYSTEM_ARG: &str = "dfinity.system=";

/// The active state of every unit systemd has loaded, from
/// `systemctl list-units --all --plain --no-legend --full`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStates {
    active: BTreeMap<String, String>,
}

impl UnitStates {
    /// The arguments given to `systemctl`.
    pub const ARGS: [&'static str; 5] = ["list-units", "--all", "--plain", "--no-legend", "--full"];

    /// Reads `systemctl list-units` output: one unit per line, its name
    /// first and its active state third (`UNIT LOAD ACTIVE SUB DESCRIPTION`).
    pub fn parse(text: &str) -> UnitStates {
        let active = text
            .lines()
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let unit = cols.next()?;
                let active = cols.nth(1)?;
                Some((unit.to_owned(), active.to_owned()))
            })
            .collect();
        UnitStates { active }
    }

    /// Runs `systemctl` (the program at `systemctl`) and parses its output.
    pub fn query(systemctl: &Path) -> Result<UnitStates> {
        let command = format!("{} {}", systemctl.display(), Self::ARGS.join(" "));
        let out = Command::new(systemctl)
            .args(Self::ARGS)
            .output()
            .map_err(|e| InitError::Command {
                command: command.clone(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(InitError::failed(command, &out));
        }
        Ok(UnitStates::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// A unit's active state as `systemctl is-active` prints it: `inactive`
    /// for a unit systemd has not loaded.
    pub fn state(&self, unit: &str) -> &str {
        self.active.get(unit).map_or("inactive", String::as_str)
    }

    /// The failed units, by name.
    pub fn failed(&self) -> Vec<&str> {
        self.active
            .iter()
            .filter(|(_, a)| *a == "failed")
            .map(|(u, _)| u.as_str())
            .collect()
    }
}

/// A mounted file system, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted, e.g. `/dev/mapper/vroot`.
    pub source: String,
    /// The file system type.
    pub fstype: String,
    /// The mount's options, then the file system's own ones (without a
    /// repeated `ro`/`rw`), as `findmnt -o OPTIONS` shows them.
    pub options: String,
}

/// The mount at `target` that is on top (the last one listed) in
/// `mountinfo` (the text of `/proc/self/mountinfo`).
pub fn find_mount(mountinfo: &str, target: &str) -> Option<Mount> {
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|(point, _)| point == target)
        .map(|(_, mount)| mount)
}

/// `36 35 98:0 / /mnt opts optional... - fstype source superopts`.
fn parse_mountinfo_line(line: &str) -> Option<(String, Mount)> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let point = unescape(fields.get(4)?);
    let vfs = fields.get(5)?;
    let mut rest = after.split(' ');
    let fstype = rest.next()?.to_owned();
    let source = unescape(rest.next()?);
    let fs_opts = rest.next().unwrap_or("");
    let mut options: Vec<&str> = vfs.split(',').collect();
    options.extend(
        fs_opts
            .split(',')
            .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw"),
    );
    Some((
        point,
        Mount {
            source,
            fstype,
            options: options.join(","),
        },
    ))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(InitError::io("reading", path))
}

/// The success line of a node of `profile`, from the files under `paths`
/// and the unit states `units`.
pub fn success_line(paths: &Paths, profile: Profile, units: &UnitStates) -> Result<String> {
    let uptime = read(&paths.at("/proc/uptime"))?;
    let uptime = uptime.split_whitespace().next().unwrap_or("?");
    let cmdline = read(&paths.at("/proc/cmdline"))?;
    let system = cmdline
        .split_whitespace()
        .find(|a| a.starts_with(SYSTEM_ARG))
        .unwrap_or(SYSTEM_ARG);
    let mountinfo = read(&paths.at("/proc/self/mountinfo"))?;
    let root = find_mount(&mountinfo, "/").map_or_else(
        || "none".to_owned(),
        |m| format!("{} {}", m.source, m.options),
    );
    let var = find_mount(&mountinfo, "/var").map_or_else(|| "none".to_owned(), |m| m.fstype);
    let version = read(&paths.version_txt())?;
    let configured = if paths.configured_marker().exists() {
        "yes"
    } else {
        "no"
    };
    let (prefix, role) = match profile {
        Profile::Replica => {
            let payload = if paths.node_config_dir().join("orchestrator.env").exists() {
                format!("orchestrator-{}", units.state("icos-orchestrator.service"))
            } else {
                units.state("replica.service").to_owned()
            };
            ("", format!("payload={payload}"))
        }
        Profile::Boundary => (
            "role=boundary ",
            format!(
                "router={} gateway={}",
                units.state("icos-boundary.service"),
                units.state("icos-gateway.service")
            ),
        ),
    };
    Ok(format!(
        "GUESTOS BOOT SUCCESS {prefix}uptime={uptime} {system} root={root} var={var} version={} {role} configured={configured} failed_units=[{}]",
        version.trim(),
        units.failed().join(" ")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:0 / / ro,noatime - ext4 /dev/mapper/vroot ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,mode=755
30 22 0:26 / /var rw,relatime shared:9 - tmpfs tmpfs rw,size=262144k,mode=755
31 22 253:1 / /var rw,noatime shared:10 - ext4 /dev/mapper/var rw,discard
32 22 8:1 / /mnt/a\\040b ro,relatime - vfat /dev/sda1 ro,codepage=437
";

    const UNITS: &str = "\
-.mount                       loaded    active   mounted Root Mount
chrony.service                loaded    active   running chrony, an NTP client/server
lvm2-monitor.service          masked    inactive dead    lvm2-monitor.service
replica.service               loaded    activating start   Internet Computer replica
zz-broken.service             loaded    failed   failed  Broken
a-broken.socket               loaded    failed   failed  Also broken
";

    fn root() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        for (f, text) in [
            ("/proc/uptime", "11.63 19.02\n"),
            (
                "/proc/cmdline",
                "BOOT_IMAGE=/vmlinuz root=PARTUUID=x dfinity.system=B quiet\n",
            ),
            ("/proc/self/mountinfo", MOUNTINFO),
            ("/opt/ic/share/version.txt", "0123abcd\n"),
        ] {
            let path = p.at(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        (d, p)
    }

    #[test]
    fn units_parse_into_states_and_failures() {
        let u = UnitStates::parse(UNITS);
        assert_eq!(u.state("chrony.service"), "active");
        assert_eq!(u.state("replica.service"), "activating");
        assert_eq!(u.state("lvm2-monitor.service"), "inactive");
        assert_eq!(u.state("not-loaded.service"), "inactive");
        assert_eq!(u.failed(), ["a-broken.socket", "zz-broken.service"]);
        assert_eq!(UnitStates::parse(""), UnitStates::default());
    }

    #[test]
    fn the_top_mount_wins_and_options_merge() {
        let var = find_mount(MOUNTINFO, "/var").unwrap();
        assert_eq!(var.source, "/dev/mapper/var");
        assert_eq!(var.fstype, "ext4");
        assert_eq!(var.options, "rw,noatime,discard");
        let root = find_mount(MOUNTINFO, "/").unwrap();
        assert_eq!(
            (root.source.as_str(), root.options.as_str()),
            ("/dev/mapper/vroot", "ro,noatime")
        );
        assert_eq!(find_mount(MOUNTINFO, "/mnt/a b").unwrap().fstype, "vfat");
        assert_eq!(find_mount(MOUNTINFO, "/boot"), None);
        assert_eq!(find_mount("garbage\n1 2 3\n", "/"), None);
    }

    #[test]
    fn replica_line() {
        let (_d, p) = root();
        let mut u = UnitStates::parse("replica.service loaded active running x\n");
        let line = success_line(&p, Profile::Replica, &u).unwrap();
        assert_eq!(
            line,
            "GUESTOS BOOT SUCCESS uptime=11.63 dfinity.system=B root=/dev/mapper/vroot ro,noatime var=ext4 version=0123abcd payload=active configured=no failed_units=[]"
        );
        // with the orchestrator's environment, the orchestrator is the payload
        std::fs::create_dir_all(p.node_config_dir()).unwrap();
        std::fs::write(p.node_config_dir().join("orchestrator.env"), "").unwrap();
        std::fs::create_dir_all(p.config_partition()).unwrap();
        std::fs::write(p.configured_marker(), "").unwrap();
        u = UnitStates::parse(UNITS);
        let line = success_line(&p, Profile::Replica, &u).unwrap();
        assert!(
            line.ends_with(
                "payload=orchestrator-inactive configured=yes failed_units=[a-broken.socket zz-broken.service]"
            ),
            "{line}"
        );
    }

    #[test]
    fn boundary_line() {
        let (_d, p) = root();
        let u = UnitStates::parse(
            "icos-boundary.service loaded active running r\nicos-gateway.service loaded failed failed g\n",
        );
        let line = success_line(&p, Profile::Boundary, &u).unwrap();
        assert_eq!(
            line,
            "GUESTOS BOOT SUCCESS role=boundary uptime=11.63 dfinity.system=B root=/dev/mapper/vroot ro,noatime var=ext4 version=0123abcd router=active gateway=failed configured=no failed_units=[icos-gateway.service]"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let (_d, p) = root();
        std::fs::remove_file(p.version_txt()).unwrap();
        let e = success_line(&p, Profile::Replica, &UnitStates::default()).unwrap_err();
        assert!(e.to_string().contains("version.txt"), "{e}");
    }

    #[test]
    fn a_failing_systemctl_is_an_error() {
        let e = UnitStates::query(Path::new("/bin/false")).unwrap_err();
        assert!(e.to_string().contains("/bin/false list-units"), "{e}");
        let e = UnitStates::query(Path::new("/nonexistent/systemctl")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/systemctl"), "{e}");
    }
}
