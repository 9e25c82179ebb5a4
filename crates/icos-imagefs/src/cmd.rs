//! The one way external commands are run: explicit environment, logged,
//! output captured, failures reported with the full command line.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Instant;

use crate::error::ImageFsError;

/// `PATH` given to every command (tools are run by absolute path anyway;
/// this is for the helpers they start themselves).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lines of stderr kept in a [`CommandError`].
const TAIL_LINES: usize = 40;

/// An external command that could not be started or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}){}", tail_suffix(.stderr_tail, .stdout_tail))]
pub struct CommandError {
    /// The full command line, shell-quoted, with the environment it was given.
    pub command: String,
    /// The exit status, or why the command could not be started or waited for.
    pub status: String,
    /// The last lines of the command's stderr.
    pub stderr_tail: String,
    /// The last lines of the command's stdout.
    pub stdout_tail: String,
}

fn tail_suffix(stderr: &str, stdout: &str) -> String {
    match (stderr.trim().is_empty(), stdout.trim().is_empty()) {
        (false, _) => format!(":\n{}", stderr.trim_end()),
        (true, false) => format!(":\n{}", stdout.trim_end()),
        (true, true) => String::new(),
    }
}

/// The last [`TAIL_LINES`] lines of `bytes`, as text.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command line with an explicit environment.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if safe {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Cmd {
    /// A command with the base environment: `PATH`, `TZ=UTC`, `LC_ALL=C`,
    /// `LANG=C` and a `HOME` that does not exist (so no per-user tool
    /// configuration is read).
    pub fn new(program: &Path) -> Cmd {
        Cmd {
            program: program.to_path_buf(),
            args: Vec::new(),
            env: vec![
                ("PATH", PATH.into()),
                ("TZ", "UTC".into()),
                ("LC_ALL", "C".into()),
                ("LANG", "C".into()),
                ("HOME", "/nonexistent".into()),
            ],
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: &'static str, value: impl AsRef<OsStr>) -> Cmd {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_os_string()));
        self
    }

    /// Sets `SOURCE_DATE_EPOCH` and `E2FSPROGS_FAKE_TIME` to `epoch`.
    pub fn epoch(self, epoch: u64) -> Cmd {
        self.env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
    }

    /// The command line as a shell would take it, environment first.
    pub fn command_line(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| !matches!(*k, "PATH" | "HOME" | "LANG"))
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        parts.push(quote(self.program.as_os_str()));
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).env_clear();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn error(&self, status: String, out: Option<&Output>) -> CommandError {
        CommandError {
            command: self.command_line(),
            status,
            stderr_tail: out.map(|o| tail(&o.stderr)).unwrap_or_default(),
            stdout_tail: out.map(|o| tail(&o.stdout)).unwrap_or_default(),
        }
    }

    /// Turns an unsuccessful [`Output`] into the error for this command.
    pub fn failure(&self, out: &Output) -> CommandError {
        self.error(out.status.to_string(), Some(out))
    }

    /// Runs the command with stdin from /dev/null; an exit status other than
    /// 0 is returned as `Ok` too.
    pub fn run_unchecked(&self) -> Result<Output, CommandError> {
        let line = self.command_line();
        tracing::debug!(command = %line, "running");
        let started = Instant::now();
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.error(format!("could not start: {e}"), None))?;
        let out = Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        };
        tracing::debug!(command = %line, status = %out.status, elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "finished");
        Ok(out)
    }

    /// Runs the command; an exit status other than 0 is an error.
    pub fn run(&self) -> Result<Output, CommandError> {
        let out = self.run_unchecked()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.failure(&out))
        }
    }

    /// Runs the command with `feed` writing its stdin; an exit status other
    /// than 0 is an error. When both fail, the feeder's error is returned
    /// unless it is a broken pipe (the command stopped reading first).
    pub fn run_with_stdin<F>(&self, feed: F) -> Result<Output, ImageFsError>
    where
        F: FnOnce(&mut dyn Write) -> Result<(), ImageFsError>,
    {
        let line = self.command_line();
        tracing::debug!(command = %line, "running (stdin fed)");
        let started = Instant::now();
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(format!("could not start: {e}"), None))?;
        let stdout = child.stdout.take().map(spawn_reader);
        let stderr = child.stderr.take().map(spawn_reader);
        let fed = match child.stdin.take() {
            Some(mut stdin) => {
                let r = feed(&mut stdin);
                let flushed = stdin.flush();
                drop(stdin);
                r.and_then(|()| {
                    flushed.map_err(|source| ImageFsError::Io {
                        action: "writing to the stdin of",
                        path: self.program.clone(),
                        source,
                    })
                })
            }
            None => Ok(()),
        };
        let status = child
            .wait()
            .map_err(|e| self.error(format!("could not wait: {e}"), None))?;
        let out = Output {
            status,
            stdout: stdout.map(join_reader).unwrap_or_default(),
            stderr: stderr.map(join_reader).unwrap_or_default(),
        };
        tracing::debug!(command = %line, status = %out.status, elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "finished");
        match fed {
            // The command stopped reading: its own error says why.
            Err(ImageFsError::Io { ref source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe && !out.status.success() =>
            {
                Err(self.failure(&out).into())
            }
            // The feeder failed (e.g. a source file could not be read): that
            // is the cause, whatever the command made of the cut-off input.
            Err(e) => Err(e),
            Ok(()) if !out.status.success() => Err(self.failure(&out).into()),
            Ok(()) => Ok(out),
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just ends the capture; the exit status tells the rest.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}
