//! Finding the external tools and checking their versions.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cmd::Cmd;

/// Directories searched after `PATH` (the sbin directories are often missing
/// from an unprivileged user's `PATH`).
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The oldest e2fsprogs accepted: 1.47.2 stamps ctime with
/// `SOURCE_DATE_EPOCH` and reads tars with `mke2fs -d` (bookworm-backports).
pub const MIN_E2FSPROGS: Version = Version::new(1, 47, 2);
/// The oldest mtools accepted: the one whose `SOURCE_DATE_EPOCH` handling
/// was verified (new directories and files get that date).
pub const MIN_MTOOLS: Version = Version::new(4, 0, 32);
/// The oldest veritysetup accepted.
pub const MIN_VERITYSETUP: Version = Version::new(2, 0, 0);

/// A dotted version number, e.g. `1.47.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// First component.
    pub major: u32,
    /// Second component.
    pub minor: u32,
    /// Third component (0 when absent).
    pub patch: u32,
}

impl Version {
    /// A version from its three components.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The first `N.N[.N]` token in `text` (e.g. a tool's `--version` output).
    pub fn find_in(text: &str) -> Option<Version> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|token| {
                let token = token.trim_matches('.');
                let parts: Vec<&str> = token.split('.').collect();
                if parts.len() < 2 || parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
                    return None;
                }
                let n = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<u32>().ok());
                Some(Version::new(n(0)?, n(1)?, n(2)?))
            })
            .next()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A tool that is missing, too old or lacking a feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The command is not in `PATH` or the sbin directories.
    #[error(
        "command `{command}` not found: install the Debian package `{package}` ({install}, or run scripts/prereqs.sh)"
    )]
    Missing {
        /// The command looked for.
        command: String,
        /// The Debian package providing it.
        package: String,
        /// The install command.
        install: String,
    },
    /// The command is older than required.
    #[error(
        "`{command}` is version {found}, at least {required} is needed ({why}): install `{package}` with `{install}` (or run scripts/prereqs.sh)"
    )]
    TooOld {
        /// The command checked.
        command: String,
        /// The version found.
        found: Version,
        /// The oldest version accepted.
        required: Version,
        /// Why that version is needed.
        why: String,
        /// The Debian package to upgrade.
        package: String,
        /// The install command.
        install: String,
    },
    /// The command's version could not be read.
    #[error("cannot tell the version of `{command}` from its output: {output:?}")]
    NoVersion {
        /// The command line run.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The command lacks a needed option.
    #[error("`{command}` does not support {feature}: install a newer `{package}` ({install})")]
    MissingFeature {
        /// The command checked.
        command: String,
        /// The missing option.
        feature: String,
        /// The Debian package to upgrade.
        package: String,
        /// The install command.
        install: String,
    },
    /// A shared library a tool loads at run time is missing.
    #[error("{library} not found ({why}): install the Debian package `{package}` ({install})")]
    MissingLibrary {
        /// The library's file name.
        library: String,
        /// What needs it.
        why: String,
        /// The Debian package providing it.
        package: String,
        /// The install command.
        install: String,
    },
}

fn install_cmd(package: &str) -> String {
    format!("apt-get install {package}")
}

fn install_backports(package: &str) -> String {
    format!("apt-get install -t bookworm-backports {package}")
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `command` in `PATH` and the usual sbin/bin directories; the error
/// names the Debian `package` that provides it.
pub fn find_tool(command: &str, package: &str) -> Result<PathBuf, ToolError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .filter(|d| d.is_absolute())
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
        .ok_or_else(|| ToolError::Missing {
            command: command.to_string(),
            package: package.to_string(),
            install: install_cmd(package),
        })
}

/// The external tools this crate runs, by absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `mke2fs` (e2fsprogs).
    pub mke2fs: PathBuf,
    /// `e2fsck` (e2fsprogs).
    pub e2fsck: PathBuf,
    /// `debugfs` (e2fsprogs).
    pub debugfs: PathBuf,
    /// `mkfs.vfat` (dosfstools).
    pub mkfs_vfat: PathBuf,
    /// `mcopy` (mtools).
    pub mcopy: PathBuf,
    /// `mmd` (mtools).
    pub mmd: PathBuf,
    /// `mdir` (mtools).
    pub mdir: PathBuf,
    /// `veritysetup` (cryptsetup-bin).
    pub veritysetup: PathBuf,
    /// The e2fsprogs version (`mke2fs -V`).
    pub e2fsprogs_version: Version,
    /// The mtools version (`mcopy -V`).
    pub mtools_version: Version,
    /// The veritysetup version (`veritysetup --version`).
    pub veritysetup_version: Version,
}

fn version_of(program: &Path, args: &[&str]) -> Result<Version, ToolError> {
    let cmd = Cmd::new(program).args(args);
    let (stdout, stderr) = match cmd.run_unchecked() {
        Ok(out) => (out.stdout_text(), out.stderr_text()),
        Err(e) => (String::new(), e.status),
    };
    let text = format!("{stdout}\n{stderr}");
    // e.g. "mke2fs 1.47.2 (1-Jan-2025)": the version follows the command name.
    Version::find_in(&text).ok_or_else(|| ToolError::NoVersion {
        command: cmd.command_line(),
        output: text.trim().to_string(),
    })
}

fn require(
    command: &str,
    found: Version,
    required: Version,
    why: &str,
    package: &str,
    install: String,
) -> Result<(), ToolError> {
    if found >= required {
        Ok(())
    } else {
        Err(ToolError::TooOld {
            command: command.to_string(),
            found,
            required,
            why: why.to_string(),
            package: package.to_string(),
            install,
        })
    }
}

/// Where `libarchive.so.13` may live.
fn libarchive_present() -> bool {
    const NAME: &str = "libarchive.so.13";
    let mut dirs: Vec<PathBuf> = ["/usr/lib", "/lib", "/usr/lib64", "/lib64", "/usr/local/lib"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for base in ["/usr/lib", "/lib"] {
        if let Ok(entries) = std::fs::read_dir(base) {
            dirs.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with("-linux-gnu")),
            );
        }
    }
    dirs.iter().any(|d| d.join(NAME).exists())
}

impl Tools {
    /// Finds every tool and checks versions and features: e2fsprogs ≥ 1.47.2
    /// (bookworm-backports) with `libarchive13` for tar input, dosfstools
    /// with `--invariant`, mtools ≥ 4.0.32, veritysetup ≥ 2.0.
    pub fn discover() -> Result<Tools, ToolError> {
        let mke2fs = find_tool("mke2fs", "e2fsprogs")?;
        let e2fsck = find_tool("e2fsck", "e2fsprogs")?;
        let debugfs = find_tool("debugfs", "e2fsprogs")?;
        let mkfs_vfat = find_tool("mkfs.vfat", "dosfstools")?;
        let mcopy = find_tool("mcopy", "mtools")?;
        let mmd = find_tool("mmd", "mtools")?;
        let mdir = find_tool("mdir", "mtools")?;
        let veritysetup = find_tool("veritysetup", "cryptsetup-bin")?;

        let e2fsprogs_version = version_of(&mke2fs, &["-V"])?;
        require(
            "mke2fs",
            e2fsprogs_version,
            MIN_E2FSPROGS,
            "deterministic ctime and tar input to mke2fs -d",
            "e2fsprogs",
            install_backports("e2fsprogs"),
        )?;
        if !libarchive_present() {
            return Err(ToolError::MissingLibrary {
                library: "libarchive.so.13".into(),
                why: "mke2fs -d loads it to read tar input".into(),
                package: "libarchive13".into(),
                install: install_cmd("libarchive13"),
            });
        }
        let mtools_version = version_of(&mcopy, &["-V"])?;
        require(
            "mcopy",
            mtools_version,
            MIN_MTOOLS,
            "SOURCE_DATE_EPOCH for the dates of new files and directories",
            "mtools",
            install_cmd("mtools"),
        )?;
        let veritysetup_version = version_of(&veritysetup, &["--version"])?;
        require(
            "veritysetup",
            veritysetup_version,
            MIN_VERITYSETUP,
            "veritysetup format with --hash-offset",
            "cryptsetup-bin",
            install_cmd("cryptsetup-bin"),
        )?;
        let help = Cmd::new(&mkfs_vfat).arg("--help");
        let help_text = help
            .run_unchecked()
            .map(|o| format!("{}{}", o.stdout_text(), o.stderr_text()))
            .unwrap_or_default();
        if !help_text.contains("--invariant") {
            return Err(ToolError::MissingFeature {
                command: "mkfs.vfat".into(),
                feature: "--invariant (dosfstools 4.2)".into(),
                package: "dosfstools".into(),
                install: install_cmd("dosfstools"),
            });
        }
        let tools = Tools {
            mke2fs,
            e2fsck,
            debugfs,
            mkfs_vfat,
            mcopy,
            mmd,
            mdir,
            veritysetup,
            e2fsprogs_version,
            mtools_version,
            veritysetup_version,
        };
        tracing::debug!(?tools, "tools found");
        Ok(tools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_tool_output() {
        assert_eq!(
            Version::find_in("mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2"),
            Some(Version::new(1, 47, 2))
        );
        assert_eq!(
            Version::find_in("mcopy (GNU mtools) 4.0.32\nconfiguration options: ..."),
            Some(Version::new(4, 0, 32))
        );
        assert_eq!(
            Version::find_in("veritysetup 2.6.1 flags: UDEV BLKID"),
            Some(Version::new(2, 6, 1))
        );
        assert_eq!(Version::find_in("no version here 7"), None);
        assert!(Version::new(1, 47, 0) < MIN_E2FSPROGS);
        assert!(Version::new(1, 47, 10) > MIN_E2FSPROGS);
    }

    #[test]
    fn missing_tool_names_its_package() {
        let err = find_tool("icos-no-such-tool", "icos-no-such-package").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("icos-no-such-tool"), "{text}");
        assert!(text.contains("icos-no-such-package"), "{text}");
    }
}
