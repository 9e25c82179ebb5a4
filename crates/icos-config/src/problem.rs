//! Problems found in a config, and the errors that carry them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A rule that a config broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    /// The text is not JSON, a member has the wrong type, or a required
    /// member is missing. The message is the JSON parser's.
    #[error("{0}")]
    Json(String),
    /// The document is none of the three config kinds.
    #[error(
        "cannot tell the config kind: expected a top-level setupos_settings (SetupOS), \
         hostos_settings (HostOS) or guestos_settings (GuestOS) member"
    )]
    UnknownKind,
    /// `config_version` is not `MAJOR.MINOR.PATCH`.
    #[error("'{0}' is not a version of the form MAJOR.MINOR.PATCH")]
    VersionSyntax(String),
    /// `config_version` has a newer major version than this program supports.
    #[error("version {found} has a newer major version than the supported {supported}")]
    VersionMajorTooNew {
        /// The version in the file.
        found: String,
        /// The version this program writes.
        supported: &'static str,
    },
    /// The deterministic IPv6 prefix is longer than 19 characters.
    #[error("prefix '{0}' is longer than 19 characters")]
    PrefixTooLong(String),
    /// The deterministic IPv6 prefix does not parse when `::` is appended.
    #[error("prefix '{0}' is not an IPv6 network prefix (it must parse with '::' appended)")]
    PrefixSyntax(String),
    /// The deterministic IPv6 prefix length is not 64.
    #[error("prefix length is {0}, must be 64")]
    PrefixLength(u8),
    /// The fixed IPv6 address is not `<ipv6>/<len>` with `len` at most 128.
    #[error(
        "'{0}' is not an IPv6 address with a prefix length of at most 128, like 2001:db8::1/64"
    )]
    FixedAddress(String),
    /// The IPv4 prefix length is larger than 32.
    #[error("IPv4 prefix length is {0}, must be at most 32")]
    Ipv4PrefixLength(u8),
    /// The node reward type does not match `^type[0-9]+(\.[0-9])?$`.
    #[error("'{0}' does not match ^type[0-9]+(\\.[0-9])?$ (e.g. type3.1)")]
    NodeRewardType(String),
    /// The domain name is malformed.
    #[error("'{name}' is not a valid domain name: {reason}")]
    DomainName {
        /// The domain name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// There are no NNS URLs.
    #[error("at least one NNS URL is required")]
    NnsUrlsEmpty,
    /// An NNS URL is not http or https.
    #[error("'{0}' is not an http or https URL")]
    NnsUrlScheme(String),
    /// The trusted execution environment is on but the GuestOS config has no
    /// certificate chain.
    #[error(
        "icos_settings.enable_trusted_execution_environment is true, so \
         trusted_execution_environment_config with sev_cert_chain_pem is required"
    )]
    TeeConfigMissing,
    /// The VM CPU model is not `kvm` or `qemu`.
    #[error("'{0}' is not a VM CPU model: expected kvm or qemu")]
    VmCpu(String),
    /// A VM resource is zero or not a positive integer.
    #[error("{0} must be a positive integer")]
    NotPositive(&'static str),
}

/// One problem: where in the JSON document, and which rule was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path of the member, e.g. `network_settings.ipv6_config.Deterministic.prefix`
    /// (array items as `nns_urls[0]`); empty for the whole document.
    pub path: String,
    /// The rule that was broken.
    pub rule: Rule,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, rule: Rule) -> Self {
        Problem {
            path: path.into(),
            rule,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

impl std::error::Error for Problem {}

/// All the problems of one config, optionally naming its file. Displayed one
/// problem per line, as `<file>: <path>: <rule>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The file the config came from, if any.
    pub file: Option<PathBuf>,
    /// The problems; never empty when returned as an error by this crate.
    pub problems: Vec<Problem>,
}

impl Problems {
    /// Problems not (yet) tied to a file.
    pub fn new(problems: Vec<Problem>) -> Self {
        Problems {
            file: None,
            problems,
        }
    }

    /// Attaches the file the config came from.
    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// `Ok(())` when `problems` is empty, otherwise the problems as an error.
    pub fn check(problems: Vec<Problem>) -> Result<(), Problems> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems::new(problems))
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if let Some(file) = &self.file {
                write!(f, "{}: ", file.display())?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<Problem> for Problems {
    fn from(problem: Problem) -> Self {
        Problems::new(vec![problem])
    }
}

/// Loading, checking or saving a config file failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid config; each problem names the file.
    #[error(transparent)]
    Invalid(#[from] Problems),
    /// The config could not be serialized.
    #[error("serializing the config for {}", path.display())]
    Serialize {
        /// The file it was meant for.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] icos_fs::FsError),
}

impl ConfigError {
    /// Whether the error is about the content of the input (bad input)
    /// rather than about reading or writing it.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, ConfigError::Invalid(_))
    }

    /// The problems, if the error is about the content of the input.
    pub fn problems(&self) -> Option<&Problems> {
        match self {
            ConfigError::Invalid(problems) => Some(problems),
            _ => None,
        }
    }
}

pub(crate) fn read_error(path: &Path) -> impl FnOnce(io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    }
}
