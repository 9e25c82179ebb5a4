//! Host tools: finding them (naming the Debian package when one is
//! missing), asking their versions for cache keys, and running them with
//! their output captured for error messages.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{BuildError, Result};

/// A host command and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    /// The command name.
    pub command: &'static str,
    /// The Debian package.
    pub package: &'static str,
}

/// `mmdebstrap`: builds the root file system from the local repository.
pub const MMDEBSTRAP: HostTool = HostTool {
    command: "mmdebstrap",
    package: "mmdebstrap",
};
/// `xz`: uncompresses a kernel's `.ko.xz` modules in mmdebstrap's tree
/// (see [`crate::guestos::UNCOMPRESS_MODULES_HOOK`]).
pub const XZ: HostTool = HostTool {
    command: "xz",
    package: "xz-utils",
};
/// `dpkg-deb`: unpacks the locked GRUB packages.
pub const DPKG_DEB: HostTool = HostTool {
    command: "dpkg-deb",
    package: "dpkg",
};
/// `apt-ftparchive`: indexes the local repository.
pub const APT_FTPARCHIVE: HostTool = HostTool {
    command: "apt-ftparchive",
    package: "apt-utils",
};
/// `git`: the version of the source tree.
pub const GIT: HostTool = HostTool {
    command: "git",
    package: "git",
};
/// `cargo`: builds our own binaries.
pub const CARGO: HostTool = HostTool {
    command: "cargo",
    package: "rustup (see rust-toolchain.toml)",
};

/// Directories searched besides `PATH` (sbin is often missing from it).
const EXTRA_DIRS: [&str; 4] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin"];

/// Finds `tool` in `PATH` or the sbin directories.
pub fn find(tool: HostTool) -> Result<PathBuf> {
    find_in(tool, std::env::var_os("PATH").as_deref())
}

fn find_in(tool: HostTool, path_var: Option<&OsStr>) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(EXTRA_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool.command);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(BuildError::MissingTool {
        tool: tool.command.to_owned(),
        package: tool.package.to_owned(),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line `program args` prints (stdout, else stderr), for cache
/// keys. An empty string when it cannot be run.
pub fn version_line(program: &Path, args: &[&str]) -> String {
    let Ok(out) = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    else {
        return String::new();
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A printable command line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd`, capturing stdout and stderr. Fails with the command line,
/// the exit status and the last 40 lines of output.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(BuildError::Command {
            command,
            status: out.status.to_string(),
            output: tail(&text, 40),
        });
    }
    Ok(out.stdout)
}

/// Runs `cmd` with stdout and stderr going to `log`; on failure the error
/// carries the last 40 lines of the log.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let command = describe(cmd);
    tracing::debug!(%command, log = %log.display(), "running");
    let file = std::fs::File::create(log).map_err(BuildError::io("creating", log))?;
    let file2 = file.try_clone().map_err(BuildError::io("opening", log))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|source| BuildError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        return Err(BuildError::Command {
            command,
            status: status.to_string(),
            output: format!("{}\n(full log: {})", tail(&text, 40), log.display()),
        });
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let tool = HostTool {
            command: "icos-no-such-tool",
            package: "icos-no-such-package",
        };
        let err = find_in(tool, Some(OsStr::new("/nonexistent"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("icos-no-such-tool"), "{msg}");
        assert!(msg.contains("icos-no-such-package"), "{msg}");
    }

    #[test]
    fn finds_tools_and_reports_failures() {
        let sh = find(HostTool {
            command: "sh",
            package: "dash",
        })
        .unwrap();
        assert!(sh.is_absolute());
        let out = run(Command::new(&sh).args(["-c", "echo hi"])).unwrap();
        assert_eq!(out, b"hi\n");
        let err = run(Command::new(&sh).args(["-c", "echo bad >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exit status: 3") && msg.contains("bad"),
            "{msg}"
        );
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
