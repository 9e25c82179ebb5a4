//! Whether the ACPI power button reaches systemd-logind.
//!
//! The host stops a GuestOS VM gracefully by pressing its ACPI power button
//! once (QMP `system_powerdown`); logind turns the press into a clean
//! power-off. A press before logind holds the button's event device open is
//! lost, and the host then waits for its timeout and kills the VM. The
//! marker step therefore waits until logind holds the button open before it
//! reports success, so the marker also means "ready to be stopped".
//!
//! Both facts come from the file system: the button's event device from
//! `/sys/class/input/event*/device/name`, and logind's open files from
//! `/proc/<pid>/fd`, so the check is tested on a folder.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{InitError, Paths, Result};

/// The input device name the kernel gives the ACPI power button.
pub const BUTTON_NAME: &str = "Power Button";

/// The process that turns a press into a power-off.
pub const WATCHER: &str = "systemd-logind";

/// How long the marker step waits for the watcher.
pub const WAIT: Duration = Duration::from_secs(15);

/// A power button event device and the process holding it open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The event device, e.g. `event0` (`/dev/input/event0`).
    pub event: String,
    /// The watcher's process id.
    pub pid: u32,
}

/// The event devices (`eventN`) of every input device named
/// [`BUTTON_NAME`], sorted.
pub fn button_events(paths: &Paths) -> Result<Vec<String>> {
    let dir = paths.sys().join("class/input");
    let entries = std::fs::read_dir(&dir).map_err(InitError::io("listing", &dir))?;
    let mut events: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if !name.starts_with("event") {
                return None;
            }
            let device = std::fs::read_to_string(e.path().join("device/name")).ok()?;
            (device.trim() == BUTTON_NAME).then_some(name)
        })
        .collect();
    events.sort();
    Ok(events)
}

/// The first process named `comm` that holds one of `events`
/// (`/dev/input/<event>`) open.
pub fn holder(paths: &Paths, comm: &str, events: &[String]) -> Option<Watched> {
    let procs = std::fs::read_dir(paths.at("/proc")).ok()?;
    for proc in procs.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let is_watcher = std::fs::read_to_string(proc.path().join("comm"))
            .is_ok_and(|c| c.trim_end_matches('\n') == comm);
        if !is_watcher {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(event) = events
                .iter()
                .find(|e| target == Path::new("/dev/input").join(e.as_str()))
            {
                return Some(Watched {
                    event: event.clone(),
                    pid,
                });
            }
        }
    }
    None
}

/// Waits until [`WATCHER`] holds a power button open, looking every `poll`
/// for at most `timeout`; fails naming what was missing.
pub fn wait_watched(paths: &Paths, timeout: Duration, poll: Duration) -> Result<Watched> {
    let start = Instant::now();
    loop {
        let events = button_events(paths)?;
        if let Some(w) = holder(paths, WATCHER, &events) {
            return Ok(w);
        }
        if start.elapsed() >= timeout {
            let detail = if events.is_empty() {
                format!(
                    "no input device named \"{BUTTON_NAME}\" in {}",
                    paths.sys().join("class/input").display()
                )
            } else {
                let devices: Vec<String> =
                    events.iter().map(|e| format!("/dev/input/{e}")).collect();
                format!("{WATCHER} does not hold {} open", devices.join(" or "))
            };
            return Err(InitError::PowerButton {
                secs: timeout.as_secs(),
                detail,
            });
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn input(root: &Path, event: &str, name: &str) {
        let dir = root.join("sys/class/input").join(event).join("device");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    }

    fn process(root: &Path, pid: u32, comm: &str, open: &[&str]) {
        let dir = root.join("proc").join(pid.to_string());
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        for (n, target) in open.iter().enumerate() {
            symlink(target, dir.join("fd").join(n.to_string())).unwrap();
        }
    }

    /// The error of a wait that gives up at once.
    fn not_watched(paths: &Paths) -> String {
        wait_watched(paths, Duration::ZERO, Duration::ZERO)
            .unwrap_err()
            .to_string()
    }

    fn tree() -> (tempfile::TempDir, Paths) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        input(root, "event0", "AT Translated Set 2 keyboard");
        input(root, "event1", BUTTON_NAME);
        input(root, "input1", BUTTON_NAME);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        let paths = Paths::new(root);
        (tmp, paths)
    }

    #[test]
    fn only_event_devices_named_power_button_count() {
        let (_tmp, paths) = tree();
        assert_eq!(button_events(&paths).unwrap(), vec!["event1".to_owned()]);
    }

    #[test]
    fn logind_holding_the_button_is_found() {
        let (tmp, paths) = tree();
        process(tmp.path(), 7, "dbus-daemon", &["/dev/input/event1"]);
        process(
            tmp.path(),
            42,
            WATCHER,
            &["/dev/null", "/dev/input/event0", "/dev/input/event1"],
        );
        let w = wait_watched(&paths, Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(
            w,
            Watched {
                event: "event1".into(),
                pid: 42
            }
        );
    }

    #[test]
    fn another_process_holding_it_does_not_count() {
        let (tmp, paths) = tree();
        process(tmp.path(), 7, "acpid", &["/dev/input/event1"]);
        process(tmp.path(), 42, WATCHER, &["/dev/input/event0"]);
        let err = not_watched(&paths);
        assert!(
            err.contains("systemd-logind does not hold /dev/input/event1 open"),
            "{err}"
        );
        assert!(err.contains("graceful shutdown"), "{err}");
    }

    #[test]
    fn a_machine_without_the_button_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        input(tmp.path(), "event0", "AT Translated Set 2 keyboard");
        let paths = Paths::new(tmp.path());
        let err = not_watched(&paths);
        assert!(
            err.contains("no input device named \"Power Button\""),
            "{err}"
        );
    }

    #[test]
    fn a_missing_sysfs_is_an_error_naming_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let err = button_events(&Paths::new(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sys/class/input"), "{err}");
    }

    #[test]
    fn the_wait_sees_a_watcher_that_comes_late() {
        let (tmp, paths) = tree();
        let root = tmp.path().to_owned();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            process(&root, 42, WATCHER, &["/dev/input/event1"]);
        });
        let w = wait_watched(&paths, Duration::from_secs(10), Duration::from_millis(5)).unwrap();
        late.join().unwrap();
        assert_eq!(w.pid, 42);
    }
}
