//! The error type of the image builder.

use std::io;
use std::path::{Path, PathBuf};

/// Why a build failed. Every variant names what it was working on: the
/// file, the command, the package or the host tool.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A host tool is not installed.
    #[error(
        "missing host tool `{tool}`: install the Debian package `{package}` (./scripts/prereqs.sh)"
    )]
    MissingTool {
        /// The command that was looked for.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file operation failed.
    #[error("{step} {}: {source}{}", path.display(), disk_full_hint(source))]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command could not be started.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", tail_suffix(output))]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// An input of the build (a committed data file, a flag's value) is
    /// missing or malformed.
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A package the build needs is not in the lock.
    #[error("{}: package `{package}` is not locked (add it to the list and run `icos packages lock`)", lock.display())]
    NotLocked {
        /// The lock file.
        lock: PathBuf,
        /// The package.
        package: String,
    },
    /// The root file system does not have something the image needs.
    #[error("root file system: {0}")]
    Rootfs(String),
    /// Reading or writing a tar stream failed.
    #[error("{step} tar {}: {source}{}", path.display(), disk_full_hint(source))]
    Tar {
        /// What was being done.
        step: &'static str,
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lock file could not be read.
    #[error(transparent)]
    Lock(Box<icos_packages::LockError>),
    /// Fetching packages failed.
    #[error("fetching packages: {0}")]
    Fetch(Box<icos_packages::FetchError>),
    /// The local apt repository could not be written.
    #[error("writing the local apt repository: {0}")]
    Repo(Box<icos_packages::RepoError>),
    /// Making or checking a file system image failed.
    #[error("{step}: {source}")]
    ImageFs {
        /// What was being made.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: Box<icos_imagefs::ImageFsError>,
    },
    /// A file system tool is missing or too old.
    #[error(transparent)]
    Tools(Box<icos_imagefs::ToolError>),
    /// Writing an archive failed.
    #[error("writing {}: {source}", path.display())]
    SparseTar {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<icos_sparse_tar::Error>,
    },
    /// The grubenv could not be encoded.
    #[error("grubenv: {0}")]
    Grubenv(String),
    /// An ELF file in the root file system is malformed.
    #[error("{path}: {message}")]
    Elf {
        /// The file, inside the root file system.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl BuildError {
    /// Whether the error is about the caller's input (exit code 2) rather
    /// than a failure to carry the build out (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            BuildError::Input { .. } | BuildError::NotLocked { .. } => true,
            BuildError::Lock(e) => e.is_bad_input(),
            _ => false,
        }
    }

    /// An [`BuildError::Io`] for `step` on `path`.
    pub(crate) fn io(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
        let path = path.to_path_buf();
        move |source| BuildError::Io { step, path, source }
    }

    /// An [`BuildError::ImageFs`] for `step`.
    pub(crate) fn imagefs(
        step: &'static str,
    ) -> impl FnOnce(icos_imagefs::ImageFsError) -> BuildError {
        move |source| BuildError::ImageFs {
            step,
            source: Box::new(source),
        }
    }
}

impl From<icos_imagefs::ToolError> for BuildError {
    fn from(e: icos_imagefs::ToolError) -> Self {
        BuildError::Tools(Box::new(e))
    }
}

impl From<icos_packages::LockError> for BuildError {
    fn from(e: icos_packages::LockError) -> Self {
        BuildError::Lock(Box::new(e))
    }
}

impl From<icos_packages::FetchError> for BuildError {
    fn from(e: icos_packages::FetchError) -> Self {
        BuildError::Fetch(Box::new(e))
    }
}

impl From<icos_packages::RepoError> for BuildError {
    fn from(e: icos_packages::RepoError) -> Self {
        BuildError::Repo(Box::new(e))
    }
}

fn disk_full_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        " (the disk is full: free space or choose another --out/--cache)"
    } else {
        ""
    }
}

fn tail_suffix(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", output.trim_end())
    }
}

/// The build's result type.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;
