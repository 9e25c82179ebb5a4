//! What can go wrong preparing and running the machine.

use std::path::PathBuf;

/// Why a run could not be prepared or carried out. Each variant names the
/// file, folder or program involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input broke a rule (the caller's fault; nothing was started).
    #[error("{}: {reason}", path.display())]
    Input {
        /// The input file or folder.
        path: PathBuf,
        /// The rule it broke.
        reason: String,
    },
    /// A value given to the run broke a rule.
    #[error("{what}: {reason}")]
    Value {
        /// The value (a flag or field name).
        what: &'static str,
        /// The rule it broke.
        reason: String,
    },
    /// The SetupOS image is not one.
    #[error("SetupOS image {}: {reason}", path.display())]
    Image {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Extracting the image archive failed.
    #[error("extracting SetupOS image {}: {source}", path.display())]
    Extract {
        /// The archive.
        path: PathBuf,
        /// The cause.
        source: icos_sparse_tar::Error,
    },
    /// Writing the node provider's inputs into the stick failed or was
    /// refused.
    #[error("putting the inputs onto {}: {source}", stick.display())]
    Inject {
        /// The stick image.
        stick: PathBuf,
        /// The cause.
        source: Box<icos_setupos::InjectError>,
    },
    /// Setting the installer's switches failed.
    #[error(transparent)]
    Switches(#[from] icos_setupos::SwitchesError),
    /// A host tool is missing.
    #[error(transparent)]
    Tool(#[from] icos_imagefs::ToolError),
    /// Reading a file out of the stick failed.
    #[error(transparent)]
    ImageFs(#[from] icos_imagefs::ImageFsError),
    /// A file or folder could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The NTP service could not be started.
    #[error("NTP service (chronyd, config {}): {reason}", config.display())]
    Ntp {
        /// Its config file.
        config: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// OVMF is missing or its variable store could not be copied.
    #[error(transparent)]
    Firmware(#[from] icos_qemu::FirmwareError),
    /// QEMU could not be started or followed.
    #[error(transparent)]
    Qemu(#[from] icos_qemu::RunError),
    /// The clean-up watcher failed.
    #[error(transparent)]
    Reaper(#[from] icos_qemu::ReaperError),
}

impl Error {
    /// True when the caller's input is at fault (exit code 2 in a CLI).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Input { .. } | Error::Value { .. } | Error::Image { .. } => true,
            Error::Extract { source, .. } => !matches!(source, icos_sparse_tar::Error::Io { .. }),
            Error::Inject { source, .. } => source.is_bad_input(),
            Error::Switches(e) => matches!(e, icos_setupos::SwitchesError::NotSetupOs { .. }),
            _ => false,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
