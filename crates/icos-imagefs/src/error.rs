//! The error type of every operation in this crate.

use std::io;
use std::path::PathBuf;

use crate::cmd::CommandError;
use crate::tools::ToolError;

/// Why an image could not be built, checked or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageFsError {
    /// A required tool is missing or too old.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// An external command failed.
    #[error(transparent)]
    Command(#[from] Box<CommandError>),
    /// An I/O step on a file failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done, e.g. "creating", "reading".
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A parameter breaks a rule of the format or of the tool.
    #[error("invalid {what}: {reason}")]
    InvalidSpec {
        /// The parameter, e.g. "ext4 label".
        what: &'static str,
        /// The rule it breaks, with the offending value.
        reason: String,
    },
    /// An input tree or archive holds something that cannot be stored.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The offending file.
        path: PathBuf,
        /// What cannot be stored.
        reason: String,
    },
    /// The GPT could not be written.
    #[error("writing the GPT of layout {layout}")]
    Gpt {
        /// The layout's name.
        layout: String,
        /// The error from the GPT writer.
        #[source]
        source: icos_layout::ImageError,
    },
    /// An image was given for a partition the layout does not have.
    #[error("layout {layout} has no partition or volume named {name:?} (image {image})")]
    UnknownPartition {
        /// The layout's name.
        layout: String,
        /// The name asked for.
        name: String,
        /// The image meant for it.
        image: PathBuf,
    },
    /// Two images were given for the same partition.
    #[error("partition {name} is given two images")]
    DuplicatePartition {
        /// The partition's name.
        name: String,
    },
    /// An image does not fit its partition.
    #[error(
        "{image} is {image_size} bytes, more than the {partition_size} bytes of partition {name}"
    )]
    ImageTooLarge {
        /// The partition's name.
        name: String,
        /// The image file.
        image: PathBuf,
        /// The image's length in bytes.
        image_size: u64,
        /// The partition's size in bytes.
        partition_size: u64,
    },
    /// A file asked for is not in a filesystem image.
    #[error("{path:?} is not a regular file in {image} (offset {offset}): {detail}")]
    FileNotFound {
        /// The filesystem image (or disk image).
        image: PathBuf,
        /// The byte offset of the filesystem in it.
        offset: u64,
        /// The path inside the filesystem.
        path: String,
        /// What the tool said.
        detail: String,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {detail}")]
    UnexpectedOutput {
        /// The command line.
        command: String,
        /// What was wrong with the output.
        detail: String,
    },
    /// dm-verity verification found data or hashes that do not match.
    #[error("dm-verity verification of {image} failed: {detail}")]
    VerityMismatch {
        /// The image checked.
        image: PathBuf,
        /// What veritysetup reported, or which parameter differs.
        detail: String,
    },
    /// `e2fsck -fn` found problems.
    #[error("e2fsck -fn {image}: the filesystem has errors (exit status {status}):\n{output}")]
    FsckFailed {
        /// The image checked.
        image: PathBuf,
        /// e2fsck's exit status.
        status: String,
        /// The tail of e2fsck's output.
        output: String,
    },
}

impl ImageFsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImageFsError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        ImageFsError::InvalidSpec {
            what,
            reason: reason.into(),
        }
    }
}

impl From<CommandError> for ImageFsError {
    fn from(e: CommandError) -> Self {
        ImageFsError::Command(Box::new(e))
    }
}
