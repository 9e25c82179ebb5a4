//! The one seam through which the installer runs external commands.
//!
//! Every command is a [`Cmd`] (program, arguments, optional standard
//! input). A [`Runner`] runs it: [`Runner::output`] returns the output
//! whatever the exit status (for commands whose failure is data, like
//! `ping`), [`Runner::run`] turns a non-zero exit into a
//! [`CommandError::Failed`] that carries the command line and its stderr.
//! [`SystemRunner`] runs real processes and logs each command line.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// One external command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program (looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Bytes fed to its standard input, if any.
    pub stdin: Option<Vec<u8>>,
}

impl Cmd {
    /// `program` without arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
        }
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feeds `bytes` to the command's standard input.
    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
}

fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+%@".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Cmd {
    /// The command line as a shell would take it (`sfdisk -N 3 /dev/vda`),
    /// with `< input` when it has standard input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quoted(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quoted(a))?;
        }
        if let Some(input) = &self.stdin {
            write!(
                f,
                " <<< {}",
                quoted(String::from_utf8_lossy(input).trim_end())
            )?;
        }
        Ok(())
    }
}

/// What a command printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    /// The exit code; `None` when a signal ended it.
    pub status: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The exit status as text (`exit status 5`, `killed by a signal`).
    pub fn status_text(&self) -> String {
        match self.status {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        }
    }

    /// Standard output followed by standard error, as a console shows them.
    pub fn combined(&self) -> String {
        let mut text = self.stdout.clone();
        if !self.stderr.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&self.stderr);
        }
        text
    }
}

/// A command that could not be run, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not executable).
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ended with a non-zero exit status.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// The exit status, as text.
        status: String,
        /// What it wrote to stderr (or stdout, when stderr was empty), trimmed.
        stderr: String,
    },
}

impl CommandError {
    /// The error for `cmd` ending as `out` says.
    pub fn failed(cmd: &Cmd, out: &CmdOutput) -> Self {
        let text = if out.stderr.trim().is_empty() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        };
        CommandError::Failed {
            command: cmd.to_string(),
            status: out.status_text(),
            stderr: if text.is_empty() {
                "(no output)".to_string()
            } else {
                text.to_string()
            },
        }
    }
}

/// Runs commands.
pub trait Runner {
    /// Runs `cmd` and returns its output whatever its exit status; fails
    /// only when it cannot be started.
    fn output(&mut self, cmd: &Cmd) -> Result<CmdOutput, CommandError>;

    /// Runs `cmd`; a non-zero exit status is a [`CommandError::Failed`].
    fn run(&mut self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        let out = self.output(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(CommandError::failed(cmd, &out))
        }
    }
}

/// Runs real processes, with `LC_ALL=C` so their output has one form, and
/// logs every command line (`tracing`, info level).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn output(&mut self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        tracing::info!(command = %cmd, "running");
        let spawn_err = |source| CommandError::Spawn {
            command: cmd.to_string(),
            source,
        };
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .env("LC_ALL", "C")
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
            // A program that exits without reading its input is not an
            // error here; its exit status tells.
            let _ = pipe.write_all(input);
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        let result = CmdOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !result.success() {
            tracing::debug!(command = %cmd, status = %result.status_text(), stderr = %result.stderr.trim(), "non-zero exit");
        }
        Ok(result)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A runner for tests: answers from a table, records every command.

    use super::*;

    /// Answers each command whose line starts with a key with that
    /// answer; anything else succeeds with no output.
    #[derive(Debug, Default)]
    pub struct FakeRunner {
        pub answers: Vec<(String, CmdOutput)>,
        pub log: Vec<String>,
    }

    impl FakeRunner {
        pub fn answer(&mut self, prefix: &str, status: i32, stdout: &str, stderr: &str) {
            self.answers.push((
                prefix.to_string(),
                CmdOutput {
                    status: Some(status),
                    stdout: stdout.to_string(),
                    stderr: stderr.to_string(),
                },
            ));
        }
    }

    impl Runner for FakeRunner {
        fn output(&mut self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
            let line = cmd.to_string();
            self.log.push(line.clone());
            Ok(self
                .answers
                .iter()
                .find(|(prefix, _)| line.starts_with(prefix.as_str()))
                .map(|(_, out)| out.clone())
                .unwrap_or(CmdOutput {
                    status: Some(0),
                    ..CmdOutput::default()
                }))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn command_lines_are_quoted_like_a_shell() {
        let cmd = Cmd::new("efibootmgr")
            .args(["--create", "--label", "IC-OS", "--loader"])
            .arg(r"\EFI\BOOT\BOOTX64.EFI");
        assert_eq!(
            cmd.to_string(),
            r"efibootmgr --create --label IC-OS --loader '\EFI\BOOT\BOOTX64.EFI'"
        );
        let cmd = Cmd::new("sfdisk")
            .args(["-N", "3", "/dev/vda"])
            .stdin(", +\n");
        assert_eq!(cmd.to_string(), "sfdisk -N 3 /dev/vda <<< ', +'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
        assert_eq!(quoted(""), "''");
    }

    #[test]
    fn the_system_runner_reports_exit_status_and_stderr() {
        let mut r = SystemRunner;
        let ok = r
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2"]))
            .unwrap();
        assert_eq!(ok.stdout, "out\n");
        assert_eq!(ok.stderr, "err\n");
        assert_eq!(ok.combined(), "out\nerr\n");

        let cmd = Cmd::new("sh").args(["-c", "echo broken >&2; exit 3"]);
        let out = r.output(&cmd).unwrap();
        assert_eq!(out.status, Some(3));
        let err = r.run(&cmd).unwrap_err().to_string();
        assert_eq!(
            err,
            "`sh -c 'echo broken >&2; exit 3'` failed (exit status 3): broken"
        );

        let fed = r.run(&Cmd::new("cat").stdin("fed\n")).unwrap();
        assert_eq!(fed.stdout, "fed\n");

        let err = r
            .run(&Cmd::new("/nonexistent/program"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`/nonexistent/program` could not be started"),
            "{err}"
        );
    }
}
