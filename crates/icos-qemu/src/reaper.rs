//! Cleaning up after a caller that dies without cleaning up itself.
//!
//! QEMU (and the helpers a caller starts beside it, such as chronyd) run in
//! process groups of their own, so a Ctrl-C in the terminal does not reach
//! them, and a caller killed by a signal runs no destructors: not even
//! [`RunningVm`](crate::RunningVm)'s, which kills QEMU on drop. A [`Reaper`] is a small `sh` (in a process group of its own
//! too) that reads process group ids from a pipe held by the caller. When
//! the pipe closes because the caller is gone, it kills every group it was
//! told about and removes the run folder (when asked to). A caller that
//! ends normally drops the reaper, which stops the `sh` without letting it
//! act.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The reaper could not be started or told about a process group.
#[derive(Debug, thiserror::Error)]
#[error("{action} (sh): {source}")]
pub struct ReaperError {
    /// What was being done.
    action: &'static str,
    /// The cause.
    #[source]
    source: std::io::Error,
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> ReaperError {
    move |source| ReaperError { action, source }
}

/// The reaper's script: collect ids until end of input, then kill each
/// group and remove `$1` if given. (`kill -s KILL -- -PGID`: dash's kill
/// refuses `-KILL --`.)
const SCRIPT: &str = r#"groups=""
while read -r g; do groups="$groups $g"; done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
if [ -n "$1" ]; then rm -rf -- "$1"; fi"#;

/// See the module docs.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts the reaper; it removes `remove` when it acts, if given.
    pub fn start(remove: Option<&Path>) -> Result<Reaper, ReaperError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("icos-reaper")
            .arg(remove.map(Path::as_os_str).unwrap_or_default())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting the clean-up watcher"))?;
        let pipe = child.stdin.take();
        Ok(Reaper { child, pipe })
    }

    /// Starts a reaper already watching process group `pgid`.
    pub fn watching(pgid: u32, remove: Option<&Path>) -> Result<Reaper, ReaperError> {
        let mut reaper = Reaper::start(remove)?;
        reaper.watch(pgid)?;
        Ok(reaper)
    }

    /// Adds a process group to kill if the caller dies.
    pub fn watch(&mut self, pgid: u32) -> Result<(), ReaperError> {
        if let Some(pipe) = self.pipe.as_mut() {
            writeln!(pipe, "{pgid}")
                .and_then(|()| pipe.flush())
                .map_err(io("telling the clean-up watcher about a process"))?;
        }
        Ok(())
    }

    /// What happens when the caller dies: the pipe closes and the reaper
    /// acts; waits for it.
    #[cfg(test)]
    pub(crate) fn act(mut self) -> std::process::ExitStatus {
        drop(self.pipe.take());
        self.child.wait().expect("waiting for the reaper")
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Stop the script before its input closes, so it does nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.pipe.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("sleep")
    }

    fn wait_killed(child: &mut Child) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return std::os::unix::process::ExitStatusExt::signal(&status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_dead_caller_s_processes_and_folder_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("run");
        std::fs::create_dir(&work).expect("mkdir");
        let mut a = sleeper();
        let mut b = sleeper();
        let mut reaper = Reaper::start(Some(&work)).expect("reaper");
        reaper.watch(a.id()).expect("watch");
        reaper.watch(b.id()).expect("watch");
        assert!(reaper.act().success());
        assert_eq!(wait_killed(&mut a), Some(9));
        assert_eq!(wait_killed(&mut b), Some(9));
        assert!(!work.exists());
    }

    #[test]
    fn a_normal_end_leaves_everything_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = sleeper();
        let mut reaper = Reaper::start(Some(dir.path())).expect("reaper");
        reaper.watch(a.id()).expect("watch");
        drop(reaper);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            a.try_wait().expect("try_wait").is_none(),
            "the sleeper was killed"
        );
        assert!(dir.path().exists());
        let _ = a.kill();
        let _ = a.wait();
    }
}
