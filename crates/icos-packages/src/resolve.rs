//! Resolving package names to a lock: the full dependency closure, pinned
//! to what the signed archive index says today.
//!
//! apt does the dependency resolution, in a private root in a temporary
//! directory: its own `sources.list`, an empty dpkg status (nothing is
//! installed), no configuration from the host (`APT_CONFIG` points at a file
//! that moves every `Dir::` into the private root before apt reads any
//! other configuration), and only Debian's archive keyring, named by
//! `signed-by`, so `apt-get update` verifies the `InRelease` signature and
//! the index hashes. Then
//! `apt-get install --print-uris --no-install-recommends` over the requested
//! names (plus, unless turned off, every `Priority: required` and
//! `Essential: yes` package, as debootstrap's minbase variant installs)
//! prints the URI of every package of the closure, downloading none.
//!
//! The lock's versions, sizes and SHA-256 digests are then taken from the
//! `Packages` index itself, parsed here, after checking that index against
//! the SHA-256 the `InRelease` lists for it.
//!
//! A requested `name/suite` (such as `linux-image-amd64/bookworm-backports`)
//! adds that suite of the same mirror to apt's sources, and apt takes the
//! package from it; every other name must be in the main suite, and
//! dependencies come from whichever suite apt prefers (a backports suite
//! only when nothing else satisfies them). Each suite's `InRelease` and
//! `Packages` are verified the same way.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{debug, info};

use crate::deb822::{Deb822Error, PackagesIndex, Release};
use crate::digest::Sha256;
use crate::lock::{Lock, LockedPackage, is_suite_name, split_requested};

/// Debian's archive, as apt reaches it.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The keyring of Debian's archive signing keys (package
/// `debian-archive-keyring`).
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The suite images are built from.
pub const DEFAULT_SUITE: &str = "bookworm";
/// The architecture images are built for.
pub const DEFAULT_ARCHITECTURE: &str = "amd64";

/// Where and how to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// The mirror root URL (no trailing slash needed).
    pub mirror: String,
    /// The suite codename.
    pub suite: String,
    /// The Debian architecture.
    pub architecture: String,
    /// The archive components to use.
    pub components: Vec<String>,
    /// The keyring that must have signed the archive's `InRelease`.
    pub keyring: PathBuf,
    /// Add every `Priority: required` and `Essential: yes` package to the
    /// request, as a minimal Debian root needs.
    pub include_required: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            mirror: DEFAULT_MIRROR.into(),
            suite: DEFAULT_SUITE.into(),
            architecture: DEFAULT_ARCHITECTURE.into(),
            components: vec!["main".into()],
            keyring: PathBuf::from(DEFAULT_KEYRING),
            include_required: true,
        }
    }
}

/// Why a resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// An option is unusable (empty, or a character apt would misread).
    #[error("{what}: {value:?} {rule}")]
    BadOption {
        /// The option.
        what: &'static str,
        /// Its value.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The archive keyring is missing.
    #[error("archive keyring {} not found (install debian-archive-keyring)", path.display())]
    NoKeyring {
        /// The keyring path.
        path: PathBuf,
    },
    /// The private apt root could not be set up or read.
    #[error("{step} {}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// apt-get could not be started.
    #[error("running apt-get (install apt)")]
    Spawn(#[source] std::io::Error),
    /// apt-get failed.
    #[error("apt-get {step} for {mirror} {suite} failed ({status}):\n{stderr}")]
    Apt {
        /// `update` or `install --print-uris`.
        step: &'static str,
        /// The mirror.
        mirror: String,
        /// The suite.
        suite: String,
        /// How apt-get exited.
        status: String,
        /// What apt-get printed on stderr.
        stderr: String,
    },
    /// `apt-get update` left no index for the suite, component or architecture.
    #[error("no {what} for {mirror} {suite} after apt-get update")]
    MissingIndex {
        /// The file that is missing.
        what: String,
        /// The mirror.
        mirror: String,
        /// The suite.
        suite: String,
    },
    /// An index file is malformed.
    #[error(transparent)]
    Index(#[from] Deb822Error),
    /// The archive's `InRelease` is about another suite.
    #[error("{mirror}: InRelease is for {found}, not {suite}")]
    WrongSuite {
        /// The mirror.
        mirror: String,
        /// The requested suite.
        suite: String,
        /// The suite and codename it names.
        found: String,
    },
    /// A `Packages` index does not match the digest its `InRelease` lists.
    #[error("{}: SHA-256 and size {actual} are not the {expected} that InRelease lists for {name}", path.display())]
    IndexDigest {
        /// The downloaded index file.
        path: PathBuf,
        /// Its name in the `InRelease` (`main/binary-amd64/Packages`).
        name: String,
        /// The digest and size the `InRelease` lists.
        expected: String,
        /// The digest and size of the file.
        actual: String,
    },
    /// Requested names that the index has no package of.
    #[error("no package named {} in {suite} {components} ({architecture})", names.join(", "))]
    UnknownPackages {
        /// The names.
        names: Vec<String>,
        /// The suite.
        suite: String,
        /// The components, space-separated.
        components: String,
        /// The architecture.
        architecture: String,
    },
    /// A requested name is only provided by other packages.
    #[error("{name} is not in the closure: list the package that provides it instead")]
    NotInClosure {
        /// The requested name.
        name: String,
    },
    /// apt printed a line it was not expected to.
    #[error("unexpected apt-get output line {line:?}")]
    Output {
        /// The line.
        line: String,
    },
    /// apt chose a file that the index does not list.
    #[error("{url}: not in the Packages index of {mirror} {suite}")]
    NotInIndex {
        /// The URL apt printed.
        url: String,
        /// The mirror.
        mirror: String,
        /// The suite.
        suite: String,
    },
}

impl ResolveError {
    /// Whether the error is about the user's input (options, names) rather
    /// than about the archive, the network or apt.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ResolveError::BadOption { .. }
                | ResolveError::UnknownPackages { .. }
                | ResolveError::NotInClosure { .. }
        )
    }
}

/// Resolves `requested` package names to a lock: runs `apt-get update` and
/// `apt-get install --print-uris` in a private root (see the module docs).
/// Needs the network and the `apt-get` command.
pub fn resolve(requested: &[String], options: &ResolveOptions) -> Result<Lock, ResolveError> {
    check_options(options)?;
    if !options.keyring.is_file() {
        return Err(ResolveError::NoKeyring {
            path: options.keyring.clone(),
        });
    }
    let mirror = options.mirror.trim_end_matches('/').to_owned();
    let suites = suites_of(requested, options)?;
    let root = AptRoot::create(&mirror, options, &suites)?;

    info!(mirror, suites = suites.join(" "), "apt-get update");
    root.apt_get("update", &["update"], options)?;

    // The main suite's InRelease dates the lock; its index alone gives the
    // required packages and every name asked without a suite.
    let (release, mut index) = root.read_indexes(&mirror, options, &options.suite)?;
    info!(
        suite = options.suite,
        date = release.date,
        packages = index.entries.len(),
        "archive index verified"
    );
    let mut extra = Vec::with_capacity(suites.len() - 1);
    for suite in &suites[1..] {
        let (release, other) = root.read_indexes(&mirror, options, suite)?;
        info!(
            suite,
            date = release.date,
            packages = other.entries.len(),
            "archive index verified"
        );
        extra.push((suite.as_str(), other));
    }

    let unknown: Vec<String> = requested
        .iter()
        .filter(|entry| match split_requested(entry) {
            (name, Some(suite)) if suite != options.suite => !extra
                .iter()
                .any(|(s, other)| *s == suite && other.contains_name(name)),
            (name, _) => !index.contains_name(name),
        })
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ResolveError::UnknownPackages {
            names: unknown,
            suite: options.suite.clone(),
            components: options.components.join(" "),
            architecture: options.architecture.clone(),
        });
    }

    let mut names: Vec<String> = requested.to_vec();
    if options.include_required {
        names.extend(
            index
                .entries
                .iter()
                .filter(|e| {
                    (e.essential || e.priority.as_deref() == Some("required"))
                        && (e.architecture == options.architecture || e.architecture == "all")
                })
                .map(|e| e.name.clone()),
        );
    }
    names.sort();
    names.dedup();
    for (_, other) in extra {
        index.extend(other);
    }
    debug!(count = names.len(), "names asked of apt");

    let mut args = vec![
        "install",
        "--print-uris",
        "-y",
        "-qq",
        "--no-install-recommends",
        "-o",
        "APT::Install-Suggests=false",
    ];
    args.extend(names.iter().map(String::as_str));
    let stdout = root.apt_get("install --print-uris", &args, options)?;

    let mut packages: BTreeMap<String, LockedPackage> = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let url = print_uris_url(line).ok_or_else(|| ResolveError::Output {
            line: line.to_owned(),
        })?;
        let not_in_index = || ResolveError::NotInIndex {
            url: url.to_owned(),
            mirror: mirror.clone(),
            suite: options.suite.clone(),
        };
        let filename = url
            .strip_prefix(&mirror)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(percent_decode)
            .ok_or_else(not_in_index)?;
        let entry = index.by_filename(&filename).ok_or_else(not_in_index)?;
        packages.insert(
            entry.name.clone(),
            LockedPackage {
                name: entry.name.clone(),
                version: entry.version.clone(),
                architecture: entry.architecture.clone(),
                filename: entry.filename.clone(),
                size: entry.size,
                sha256: entry.sha256,
            },
        );
    }
    for entry in requested {
        let name = split_requested(entry).0;
        if !packages.contains_key(name) {
            return Err(ResolveError::NotInClosure {
                name: name.to_owned(),
            });
        }
    }

    let mut requested = requested.to_vec();
    requested.sort();
    requested.dedup();
    Ok(Lock {
        suite: options.suite.clone(),
        architecture: options.architecture.clone(),
        components: options.components.clone(),
        mirror,
        date: release.date,
        required: options.include_required,
        requested,
        packages: packages.into_values().collect(),
    })
}

/// The suites to resolve against: the main suite first, then every other
/// suite that a requested `name/suite` names, sorted.
fn suites_of(requested: &[String], options: &ResolveOptions) -> Result<Vec<String>, ResolveError> {
    let mut extra: Vec<String> = Vec::new();
    for entry in requested {
        if let Some(suite) = split_requested(entry).1 {
            if !is_suite_name(suite) {
                return Err(ResolveError::BadOption {
                    what: "requested suite",
                    value: entry.clone(),
                    rule: "must be lowercase letters, digits and '-', starting with a letter",
                });
            }
            if suite != options.suite {
                extra.push(suite.to_owned());
            }
        }
    }
    extra.sort();
    extra.dedup();
    let mut suites = vec![options.suite.clone()];
    suites.extend(extra);
    Ok(suites)
}

/// apt's `sources.list` for `suites` of `mirror`, one line each, every one
/// verified with the archive keyring only.
fn sources_list(mirror: &str, options: &ResolveOptions, suites: &[String]) -> String {
    suites
        .iter()
        .map(|suite| {
            format!(
                "deb [arch={} signed-by={}] {}/ {} {}\n",
                options.architecture,
                options.keyring.display(),
                mirror,
                suite,
                options.components.join(" ")
            )
        })
        .collect()
}

fn check_options(o: &ResolveOptions) -> Result<(), ResolveError> {
    let word = |what: &'static str, value: &str| {
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            Err(ResolveError::BadOption {
                what,
                value: value.to_owned(),
                rule: "must be a non-empty word of letters, digits, '-', '_' and '.'",
            })
        } else {
            Ok(())
        }
    };
    word("suite", &o.suite)?;
    word("architecture", &o.architecture)?;
    if o.components.is_empty() {
        return Err(ResolveError::BadOption {
            what: "components",
            value: String::new(),
            rule: "must name at least one component",
        });
    }
    for c in &o.components {
        word("component", c)?;
    }
    let m = &o.mirror;
    if !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/"))
        || m.contains(char::is_whitespace)
        || m.contains(['[', ']', '"'])
    {
        return Err(ResolveError::BadOption {
            what: "mirror",
            value: m.clone(),
            rule: "must be an http://, https:// or file:/ URL without spaces or brackets",
        });
    }
    Ok(())
}

/// The URL of an `apt-get --print-uris` line: `'URL' FILE SIZE HASH`.
fn print_uris_url(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix('\'')?;
    let (url, _) = rest.split_once('\'')?;
    Some(url)
}

/// Undoes URI percent-encoding (`%2b` → `+`); a malformed escape stays as is.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A private apt root in a temporary directory.
struct AptRoot {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl AptRoot {
    fn create(
        mirror: &str,
        options: &ResolveOptions,
        suites: &[String],
    ) -> Result<Self, ResolveError> {
        let io = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ResolveError::Io { step, path, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("icos-apt-")
            .tempdir()
            .map_err(io(
                "creating a temporary directory in",
                &std::env::temp_dir(),
            ))?;
        let root = dir.path();
        // apt downloads as the unprivileged `_apt` user when run as root: let
        // it reach the lists directory.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o755))
                .map_err(io("setting permissions of", root))?;
        }
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
        ] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(io("creating", &path))?;
        }
        let status = root.join("var/lib/dpkg/status");
        fs::write(&status, "").map_err(io("writing", &status))?;
        let sources = root.join("etc/apt/sources.list");
        fs::write(&sources, sources_list(mirror, options, suites))
            .map_err(io("writing", &sources))?;

        let r = root.display();
        let config = root.join("apt.conf");
        let text = format!(
            "Dir \"{r}/\";\n\
             Dir::State \"{r}/var/lib/apt/\";\n\
             Dir::State::Lists \"{r}/var/lib/apt/lists/\";\n\
             Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
             Dir::Cache \"{r}/var/cache/apt/\";\n\
             Dir::Log \"{r}/var/log/apt/\";\n\
             Dir::Etc \"{r}/etc/apt/\";\n\
             Dir::Etc::Main \"{r}/etc/apt/apt.conf\";\n\
             Dir::Etc::Parts \"{r}/etc/apt/apt.conf.d/\";\n\
             Dir::Etc::SourceList \"{r}/etc/apt/sources.list\";\n\
             Dir::Etc::SourceParts \"{r}/etc/apt/sources.list.d/\";\n\
             Dir::Etc::Preferences \"{r}/etc/apt/preferences\";\n\
             Dir::Etc::PreferencesParts \"{r}/etc/apt/preferences.d/\";\n\
             Dir::Etc::Trusted \"{r}/etc/apt/trusted.gpg\";\n\
             Dir::Etc::TrustedParts \"{r}/etc/apt/trusted.gpg.d/\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             APT::Install-Recommends \"false\";\n\
             APT::Install-Suggests \"false\";\n\
             APT::Get::AllowUnauthenticated \"false\";\n\
             Acquire::AllowInsecureRepositories \"false\";\n\
             Acquire::AllowDowngradeToInsecureRepositories \"false\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::GzipIndexes \"false\";\n\
             Acquire::Retries \"3\";\n",
            arch = options.architecture,
        );
        fs::write(&config, text).map_err(io("writing", &config))?;
        Ok(AptRoot { dir, config })
    }

    /// Runs apt-get with the private configuration; returns its stdout.
    fn apt_get<S: AsRef<OsStr>>(
        &self,
        step: &'static str,
        args: &[S],
        options: &ResolveOptions,
    ) -> Result<String, ResolveError> {
        let output = Command::new("apt-get")
            .args(args)
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(ResolveError::Spawn)?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // apt-get update reports some failures (a bad signature, an
        // unreachable mirror) on stderr with `E:` or `W:` and exit status 0
        // in older versions: treat any `E:` line as a failure too.
        let has_error = stderr.lines().any(|l| l.starts_with("E:"));
        if !output.status.success() || has_error {
            return Err(ResolveError::Apt {
                step,
                mirror: options.mirror.clone(),
                suite: options.suite.clone(),
                status: output.status.to_string(),
                stderr: stderr.trim_end().to_owned(),
            });
        }
        if !stderr.trim().is_empty() {
            debug!(step, "apt-get stderr: {}", stderr.trim_end());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Reads the verified `InRelease` and `Packages` files of `suite` that
    /// `apt-get update` left, and checks the latter against the former.
    fn read_indexes(
        &self,
        mirror: &str,
        options: &ResolveOptions,
        suite: &str,
    ) -> Result<(Release, PackagesIndex), ResolveError> {
        let lists = self.dir.path().join("var/lib/apt/lists");
        let names: Vec<String> = fs::read_dir(&lists)
            .map_err(|source| ResolveError::Io {
                step: "reading",
                path: lists.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let missing = |what: String| ResolveError::MissingIndex {
            what,
            mirror: mirror.to_owned(),
            suite: suite.to_owned(),
        };
        let find = |suffix: &str| {
            names
                .iter()
                .find(|n| n.ends_with(suffix))
                .map(|n| lists.join(n))
        };
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| ResolveError::Io {
                step: "reading",
                path: path.to_path_buf(),
                source,
            })
        };

        // apt names its lists after the URL: `…_dists_<suite>_InRelease`.
        let inrelease = find(&format!("_dists_{suite}_InRelease"))
            .ok_or_else(|| missing("signed InRelease".into()))?;
        let release = Release::parse_inrelease(&inrelease, &read(&inrelease)?)?;
        let names_suite =
            release.codename.as_deref() == Some(suite) || release.suite.as_deref() == Some(suite);
        if !names_suite {
            return Err(ResolveError::WrongSuite {
                mirror: mirror.to_owned(),
                suite: suite.to_owned(),
                found: format!(
                    "{} ({})",
                    release.suite.as_deref().unwrap_or("?"),
                    release.codename.as_deref().unwrap_or("?")
                ),
            });
        }

        let mut index = PackagesIndex::default();
        for component in &options.components {
            let name = format!("{component}/binary-{}/Packages", options.architecture);
            let suffix = format!("_dists_{suite}_{}", name.replace('/', "_"));
            let path = find(&suffix).ok_or_else(|| missing(name.clone()))?;
            let text = read(&path)?;
            let actual = Sha256::of(text.as_bytes());
            let actual_size = text.len() as u64;
            let (expected_size, expected) = *release
                .sha256
                .get(&name)
                .ok_or_else(|| missing(format!("InRelease entry for {name}")))?;
            if (expected_size, expected) != (actual_size, actual) {
                return Err(ResolveError::IndexDigest {
                    path,
                    name,
                    expected: format!("{expected} ({expected_size} bytes)"),
                    actual: format!("{actual} ({actual_size} bytes)"),
                });
            }
            index.extend(PackagesIndex::parse(&path, &text)?);
        }
        Ok((release, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_uris_lines() {
        let line = "'http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9%2bdeb12u14_amd64.deb' libc6_2.36-9+deb12u14_amd64.deb 2759320 MD5Sum:8d98";
        let url = print_uris_url(line).unwrap();
        assert_eq!(
            percent_decode(url.strip_prefix("http://deb.debian.org/debian/").unwrap()),
            "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb"
        );
        assert_eq!(print_uris_url("Reading package lists..."), None);
    }

    #[test]
    fn another_suite_is_added_to_the_sources() {
        let options = ResolveOptions::default();
        let requested = [
            "kmod".to_owned(),
            "linux-image-amd64/bookworm-backports".to_owned(),
            "udev/bookworm".to_owned(),
        ];
        let suites = suites_of(&requested, &options).unwrap();
        assert_eq!(suites, ["bookworm", "bookworm-backports"]);
        assert_eq!(
            sources_list("http://deb.debian.org/debian", &options, &suites),
            "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian/ bookworm main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian/ bookworm-backports main\n"
        );
        assert_eq!(
            suites_of(&["kmod".to_owned()], &options).unwrap(),
            ["bookworm"]
        );
        let e = suites_of(&["kmod/Bad".to_owned()], &options).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%7e%3a"), "a+b~:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn options_are_checked() {
        let ok = ResolveOptions::default();
        assert!(check_options(&ok).is_ok());
        let bad = ResolveOptions {
            suite: "book worm".into(),
            ..ok.clone()
        };
        assert!(check_options(&bad).unwrap_err().is_bad_input());
        let bad = ResolveOptions {
            mirror: "ftp://x".into(),
            ..ok.clone()
        };
        assert!(
            check_options(&bad)
                .unwrap_err()
                .to_string()
                .contains("mirror")
        );
        let bad = ResolveOptions {
            components: vec![],
            ..ok
        };
        assert!(check_options(&bad).is_err());
    }

    /// Resolves a small request against the real archive. The archive's
    /// content changes with every point release, so only shapes are checked.
    #[test]
    #[ignore = "needs the network and deb.debian.org; the archive changes over time"]
    fn resolves_against_debian() {
        let lock = resolve(&["kmod".to_owned()], &ResolveOptions::default()).unwrap();
        assert_eq!(lock.suite, "bookworm");
        assert!(lock.package("kmod").is_some());
        assert!(lock.package("libc6").is_some());
        assert!(
            lock.package("base-files").is_some(),
            "required packages are added"
        );
        let text = lock.to_toml();
        assert_eq!(Lock::parse(Path::new("l"), &text).unwrap(), lock);
    }

    /// A package from bookworm-backports: the kernel comes from there, the
    /// rest of the closure from bookworm.
    #[test]
    #[ignore = "needs the network and deb.debian.org; the archive changes over time"]
    fn resolves_a_backports_package_against_debian() {
        let requested = ["linux-image-amd64/bookworm-backports".to_owned()];
        let lock = resolve(&requested, &ResolveOptions::default()).unwrap();
        assert_eq!(lock.requested, ["linux-image-amd64/bookworm-backports"]);
        let meta = lock.package("linux-image-amd64").unwrap();
        assert!(meta.version.contains("bpo12"), "{}", meta.version);
        assert!(!lock.package("libc6").unwrap().version.contains("bpo"));
    }
}
