//! The lock file: every input package of an image with its exact version,
//! pool path, size and SHA-256.
//!
//! # Format
//!
//! TOML, written by [`Lock::to_toml`] in one fixed layout so that a refresh
//! gives a small, readable diff:
//!
//! ```toml
//! # Pinned Debian packages: the exact inputs of an image build.
//! # Written by `icos packages lock`; refresh it with that command, do not edit.
//! # Packages: 1. Total size: 1170836 bytes.
//! format = 1
//! suite = "bookworm"
//! architecture = "amd64"
//! components = [
//!     "main",
//! ]
//! mirror = "http://deb.debian.org/debian"
//! date = "Sat, 11 Jul 2026 10:16:37 UTC"
//! required = true
//! requested = [
//!     "linux-image-amd64",
//!     "systemd",
//! ]
//!
//! [[package]]
//! name = "adduser"
//! version = "3.134"
//! architecture = "all"
//! filename = "pool/main/a/adduser/adduser_3.134_all.deb"
//! size = 1170836
//! sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! ```
//!
//! The header records where the packages were resolved: the suite, the
//! architecture, the archive components, the mirror, the `Date` of the
//! archive's signed `InRelease` at that moment, whether every
//! `Priority: required` package was added to the closure (`required`), and
//! the package names that were asked for (`requested`, sorted; a name asked
//! of another suite of the same archive carries it, as in
//! `linux-image-amd64/bookworm-backports`). Then one
//! `[[package]]` table per package of the closure, sorted by name; a name
//! appears once. `filename` is the path of the `.deb` under the mirror root,
//! as the archive's `Packages` index gives it.
//!
//! The parser rejects unknown keys, unsorted or repeated packages, digests
//! that are not 64 lowercase hex digits and file names that are not plain
//! relative paths, naming the file and the line.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::digest::Sha256;

/// The version of the lock format that this crate reads and writes.
pub const FORMAT: u32 = 1;

/// A problem with a lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file could not be read.
    #[error("reading lock file {}", path.display())]
    Read {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("writing lock file")]
    Write(#[from] icos_fs::FsError),
    /// The content broke a rule of the format.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The lock file.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: usize,
        /// What is wrong, naming the entry where there is one.
        message: String,
    },
}

impl LockError {
    /// Whether the error is about the file's content (bad input) rather than
    /// about reading or writing it.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, LockError::Invalid { .. })
    }
}

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackage {
    /// The package name.
    pub name: String,
    /// The exact Debian version.
    pub version: String,
    /// The package architecture (`amd64` or `all`).
    pub architecture: String,
    /// The path of the `.deb` under the mirror root (`pool/main/...`).
    pub filename: String,
    /// The size of the `.deb` in bytes.
    pub size: u64,
    /// The SHA-256 of the `.deb`.
    pub sha256: Sha256,
}

impl LockedPackage {
    /// The file name of the `.deb` (the last component of `filename`).
    pub fn deb_name(&self) -> &str {
        self.filename.rsplit('/').next().unwrap_or(&self.filename)
    }
}

/// A parsed lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The Debian suite (codename), such as `bookworm`.
    pub suite: String,
    /// The Debian architecture, such as `amd64`.
    pub architecture: String,
    /// The archive components, such as `main`.
    pub components: Vec<String>,
    /// The mirror root URL the packages were resolved against.
    pub mirror: String,
    /// The `Date` of the archive's `InRelease` at resolution time.
    pub date: String,
    /// Whether every `Priority: required` package is part of the closure.
    pub required: bool,
    /// The package names that were asked for, sorted.
    pub requested: Vec<String>,
    /// The closure, sorted by name.
    pub packages: Vec<LockedPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    format: Spanned<u32>,
    suite: Spanned<String>,
    architecture: Spanned<String>,
    components: Spanned<Vec<String>>,
    mirror: Spanned<String>,
    date: String,
    required: bool,
    requested: Spanned<Vec<String>>,
    #[serde(default)]
    package: Vec<Spanned<RawPackage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    version: String,
    architecture: String,
    filename: String,
    size: u64,
    sha256: String,
}

impl Lock {
    /// Reads and validates a lock file.
    pub fn load(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates the text of a lock file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, LockError> {
        let invalid = |offset: usize, message: String| LockError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawLock = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            invalid(offset, e.message().trim_end().to_owned())
        })?;

        if *raw.format.get_ref() != FORMAT {
            return Err(invalid(
                raw.format.span().start,
                format!(
                    "format {} is not supported (this icos reads format {FORMAT})",
                    raw.format.get_ref()
                ),
            ));
        }
        for (field, value) in [
            ("suite", &raw.suite),
            ("architecture", &raw.architecture),
            ("mirror", &raw.mirror),
        ] {
            if value.get_ref().trim().is_empty() {
                return Err(invalid(value.span().start, format!("{field} is empty")));
            }
        }
        if raw.components.get_ref().is_empty() {
            return Err(invalid(
                raw.components.span().start,
                "components is empty".into(),
            ));
        }
        let requested = raw.requested.get_ref();
        if let Some(pair) = requested.windows(2).find(|w| w[0] >= w[1]) {
            return Err(invalid(
                raw.requested.span().start,
                format!(
                    "requested must be sorted and without repeats: {:?} before {:?}",
                    pair[0], pair[1]
                ),
            ));
        }

        let mut packages: Vec<LockedPackage> = Vec::with_capacity(raw.package.len());
        let mut filenames = BTreeSet::new();
        for (i, spanned) in raw.package.iter().enumerate() {
            let offset = spanned.span().start;
            let p = spanned.get_ref();
            let entry = format!("package #{} ({})", i + 1, p.name);
            let bad = |m: String| invalid(offset, format!("{entry}: {m}"));
            if !is_package_name(&p.name) {
                return Err(bad(format!(
                    "name {:?} is not a Debian package name",
                    p.name
                )));
            }
            if p.version.is_empty() || p.version.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "version {:?} is not a Debian version",
                    p.version
                )));
            }
            if p.architecture.is_empty()
                || !p
                    .architecture
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad(format!("architecture {:?} is invalid", p.architecture)));
            }
            if !is_safe_relative_path(&p.filename) || !p.filename.ends_with(".deb") {
                return Err(bad(format!(
                    "filename {:?} is not a relative path to a .deb without '..'",
                    p.filename
                )));
            }
            if p.size == 0 {
                return Err(bad("size is 0".into()));
            }
            let sha256 = p
                .sha256
                .parse::<Sha256>()
                .map_err(|e| bad(format!("sha256: {e}")))?;
            if let Some(prev) = packages.last()
                && prev.name.as_str() >= p.name.as_str()
            {
                let why = if prev.name == p.name {
                    "repeated"
                } else {
                    "not sorted by name"
                };
                return Err(bad(format!("{why}: comes after {}", prev.name)));
            }
            let deb_name = p.filename.rsplit('/').next().unwrap_or(&p.filename);
            if !filenames.insert(deb_name.to_owned()) {
                return Err(bad(format!("file name {deb_name} appears twice")));
            }
            packages.push(LockedPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                filename: p.filename.clone(),
                size: p.size,
                sha256,
            });
        }

        Ok(Lock {
            suite: raw.suite.into_inner(),
            architecture: raw.architecture.into_inner(),
            components: raw.components.into_inner(),
            mirror: raw.mirror.into_inner(),
            date: raw.date,
            required: raw.required,
            requested: raw.requested.into_inner(),
            packages,
        })
    }

    /// The lock in its canonical text form (see the module docs). Packages
    /// and requested names are sorted on the way out.
    pub fn to_toml(&self) -> String {
        let mut packages: Vec<&LockedPackage> = self.packages.iter().collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        let mut requested = self.requested.clone();
        requested.sort();
        requested.dedup();
        let total: u64 = packages.iter().map(|p| p.size).sum();

        let mut out = String::new();
        out.push_str(
            "# Pinned Debian packages: the exact inputs of an image build.\n\
             # Written by `icos packages lock`; refresh it with that command, do not edit.\n",
        );
        let _ = writeln!(
            out,
            "# Packages: {}. Total size: {} bytes.",
            packages.len(),
            total
        );
        let _ = writeln!(out, "format = {FORMAT}");
        let _ = writeln!(out, "suite = {}", quote(&self.suite));
        let _ = writeln!(out, "architecture = {}", quote(&self.architecture));
        let _ = writeln!(out, "components = {}", quote_list(&self.components));
        let _ = writeln!(out, "mirror = {}", quote(&self.mirror));
        let _ = writeln!(out, "date = {}", quote(&self.date));
        let _ = writeln!(out, "required = {}", self.required);
        let _ = writeln!(out, "requested = {}", quote_list(&requested));
        for p in packages {
            out.push_str("\n[[package]]\n");
            let _ = writeln!(out, "name = {}", quote(&p.name));
            let _ = writeln!(out, "version = {}", quote(&p.version));
            let _ = writeln!(out, "architecture = {}", quote(&p.architecture));
            let _ = writeln!(out, "filename = {}", quote(&p.filename));
            let _ = writeln!(out, "size = {}", p.size);
            let _ = writeln!(out, "sha256 = \"{}\"", p.sha256);
        }
        out
    }

    /// The requested package names without their suites (see
    /// [`split_requested`]), as a root built from the lock installs them.
    pub fn requested_names(&self) -> Vec<&str> {
        self.requested
            .iter()
            .map(|r| split_requested(r).0)
            .collect()
    }

    /// Writes the lock to `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<(), LockError> {
        icos_fs::write_atomic(path, self.to_toml().as_bytes())?;
        Ok(())
    }

    /// The sum of the package sizes in bytes.
    pub fn total_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }

    /// The package called `name`.
    pub fn package(&self, name: &str) -> Option<&LockedPackage> {
        self.packages
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.packages[i])
    }
}

/// A requested entry split into its package name and the suite it is
/// taken from, when it names one: `linux-image-amd64/bookworm-backports`
/// is `("linux-image-amd64", Some("bookworm-backports"))`, as apt reads
/// `install name/release`. Dependencies still come from every suite.
pub fn split_requested(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('/') {
        Some((name, suite)) => (name, Some(suite)),
        None => (entry, None),
    }
}

/// Whether `entry` is a package name, optionally followed by `/` and a
/// suite name (see [`split_requested`]).
pub fn is_requested_entry(entry: &str) -> bool {
    let (name, suite) = split_requested(entry);
    is_package_name(name) && suite.is_none_or(is_suite_name)
}

/// Whether `suite` can name a Debian suite or codename (`bookworm`,
/// `bookworm-backports`, `oldstable`): lowercase letters, digits and `-`,
/// starting with a letter.
pub fn is_suite_name(suite: &str) -> bool {
    let b = suite.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Whether `name` follows Debian policy for package names: lowercase
/// letters, digits, `+`, `-` and `.`, at least two characters, starting
/// with a letter or digit.
pub fn is_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c))
}

/// A relative path of plain components: no leading `/`, no `.` or `..`, no
/// empty component, no backslash or control character.
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', '\0'])
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_list(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let mut out = String::from("[\n");
    for item in items {
        let _ = writeln!(out, "    {},", quote(item));
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            components: vec!["main".into()],
            mirror: "http://deb.debian.org/debian".into(),
            date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
            required: true,
            requested: vec!["systemd".into(), "kmod".into()],
            packages: vec![
                LockedPackage {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into(),
                    architecture: "amd64".into(),
                    filename: "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb".into(),
                    size: 2_759_320,
                    sha256: Sha256::of(b"libc6"),
                },
                LockedPackage {
                    name: "adduser".into(),
                    version: "3.134".into(),
                    architecture: "all".into(),
                    filename: "pool/main/a/adduser/adduser_3.134_all.deb".into(),
                    size: 1_170_836,
                    sha256: Sha256::of(b"adduser"),
                },
            ],
        }
    }

    fn canonical(mut lock: Lock) -> Lock {
        lock.packages.sort_by(|a, b| a.name.cmp(&b.name));
        lock.requested.sort();
        lock
    }

    #[test]
    fn round_trip() {
        let lock = sample();
        let text = lock.to_toml();
        let parsed = Lock::parse(Path::new("l.toml"), &text).unwrap();
        assert_eq!(parsed, canonical(lock));
        assert_eq!(parsed.to_toml(), text);
        assert_eq!(parsed.packages[0].name, "adduser");
        assert_eq!(parsed.package("libc6").unwrap().size, 2_759_320);
        assert!(parsed.package("nope").is_none());
        assert_eq!(parsed.total_size(), 2_759_320 + 1_170_836);
        assert_eq!(
            parsed.packages[1].deb_name(),
            "libc6_2.36-9+deb12u14_amd64.deb"
        );
        assert!(
            text.contains("# Packages: 2. Total size: 3930156 bytes."),
            "{text}"
        );
    }

    #[test]
    fn requested_entries_from_another_suite() {
        let mut lock = sample();
        lock.requested = vec![
            "kmod".into(),
            "linux-image-amd64/bookworm-backports".into(),
            "systemd/bookworm".into(),
        ];
        let text = lock.to_toml();
        let parsed = Lock::parse(Path::new("l.toml"), &text).unwrap();
        assert_eq!(
            parsed.requested_names(),
            ["kmod", "linux-image-amd64", "systemd"]
        );
        assert_eq!(parsed.requested, lock.requested);
        assert_eq!(split_requested("kmod"), ("kmod", None));
        assert!(is_requested_entry("linux-image-amd64/bookworm-backports"));
        assert!(!is_requested_entry("linux-image-amd64/Bookworm"));
        assert!(!is_requested_entry("linux-image-amd64/"));
        assert!(is_suite_name("oldstable") && !is_suite_name("-x") && !is_suite_name(""));
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packages.lock");
        sample().store(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap(), canonical(sample()));
        let e = Lock::load(&dir.path().join("absent")).unwrap_err();
        assert!(!e.is_bad_input());
        assert!(e.to_string().contains("absent"), "{e}");
    }

    #[test]
    fn quoting_survives_odd_strings() {
        let mut lock = sample();
        lock.date = "a \"quoted\" \\ date\twith\u{1}control".into();
        let parsed = Lock::parse(Path::new("l"), &lock.to_toml()).unwrap();
        assert_eq!(parsed.date, lock.date);
    }

    fn error_of(text: &str) -> (usize, String) {
        match Lock::parse(Path::new("images/x.lock"), text).unwrap_err() {
            LockError::Invalid {
                path,
                line,
                message,
            } => {
                assert_eq!(path, Path::new("images/x.lock"));
                (line, message)
            }
            other => panic!("unexpected {other}"),
        }
    }

    /// The sample text with `from` replaced by `to` (which must occur).
    fn edited(from: &str, to: &str) -> String {
        let text = sample().to_toml();
        assert!(text.contains(from), "{from} not in {text}");
        text.replacen(from, to, 1)
    }

    #[test]
    fn rejects_bad_entries_naming_line_and_entry() {
        let (line, m) = error_of(&edited("sha256 = \"", "sha256 = \"zz"));
        assert!(m.contains("package #1 (adduser): sha256"), "{m}");
        assert_eq!(line, 18);

        let (line, m) = error_of(&edited("name = \"libc6\"", "name = \"aaa\""));
        assert!(
            m.contains("package #2 (aaa): not sorted by name: comes after adduser"),
            "{m}"
        );
        assert_eq!(line, 26);

        let (_, m) = error_of(&edited("name = \"libc6\"", "name = \"adduser\""));
        assert!(m.contains("repeated"), "{m}");

        let (_, m) = error_of(&edited("filename = \"pool", "filename = \"../pool"));
        assert!(m.contains("filename"), "{m}");

        let (_, m) = error_of(&edited("size = 1170836", "size = 0"));
        assert!(m.contains("size is 0"), "{m}");

        let (_, m) = error_of(&edited("name = \"adduser\"", "name = \"Add User\""));
        assert!(m.contains("not a Debian package name"), "{m}");
    }

    #[test]
    fn rejects_bad_header_and_syntax() {
        let (line, m) = error_of(&edited("format = 1", "format = 2"));
        assert_eq!(line, 4);
        assert!(m.contains("format 2 is not supported"), "{m}");

        let (line, m) = error_of(&edited("size = 1170836", "size = \"big\""));
        assert_eq!(line, 23);
        assert!(m.contains("invalid type"), "{m}");

        let (_, m) = error_of(&edited(
            "version = \"3.134\"",
            "version = \"3.134\"\ncolour = \"red\"",
        ));
        assert!(m.contains("colour"), "{m}");

        let (line, m) = error_of(&edited("required = true", "required = "));
        assert_eq!(line, 12);
        assert!(!m.is_empty());

        let (_, m) = error_of(&edited("mirror = \"http://deb.debian.org/debian\"\n", ""));
        assert!(m.contains("mirror"), "{m}");

        let (_, m) = error_of("just words\n");
        assert!(!m.is_empty());
    }

    #[test]
    fn package_names() {
        for ok in [
            "libc6",
            "g++",
            "linux-image-amd64",
            "0ad",
            "libstdc++6",
            "python3.11",
        ] {
            assert!(is_package_name(ok), "{ok}");
        }
        for bad in ["", "a", "Libc", "-x", "a b", "a_b", "a:amd64"] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn safe_paths() {
        assert!(is_safe_relative_path("pool/main/a/a.deb"));
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a\nb"] {
            assert!(!is_safe_relative_path(bad), "{bad:?}");
        }
    }
}
