//! Package list files: the packages an image asks for.
//!
//! One Debian package name per line; `#` starts a comment that runs to the
//! end of the line; blank lines are ignored. A name may appear in several
//! lists, and is then asked for once. `name/suite` takes the package from
//! another suite of the same archive (`linux-image-amd64/bookworm-backports`),
//! as `apt-get install name/release` does; its dependencies are resolved
//! against every suite.

use std::path::{Path, PathBuf};

use crate::lock::{is_requested_entry, split_requested};

/// A problem with a package list file.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("reading package list {}", path.display())]
    Read {
        /// The list file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a package name.
    #[error("{}:{line}: {text:?} is not a Debian package name (one name per line, optionally /suite; '#' comments)", path.display())]
    BadLine {
        /// The list file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The offending text, comment removed.
        text: String,
    },
    /// A name appears twice in the same file.
    #[error("{}:{line}: {name} is listed already on line {first}", path.display())]
    Repeated {
        /// The list file.
        path: PathBuf,
        /// The 1-based line of the repeat.
        line: usize,
        /// The first line that lists it.
        first: usize,
        /// The package name.
        name: String,
    },
}

impl ListError {
    /// Whether the error is about the file's content rather than reading it.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ListError::Read { .. })
    }
}

/// Parses the text of a list file into names in file order; `path` names
/// the file in errors.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<String>, ListError> {
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if !is_requested_entry(content) {
            return Err(ListError::BadLine {
                path: path.to_path_buf(),
                line,
                text: content.to_owned(),
            });
        }
        let name = split_requested(content).0;
        if let Some((_, first)) = names.iter().find(|(n, _)| split_requested(n).0 == name) {
            return Err(ListError::Repeated {
                path: path.to_path_buf(),
                line,
                first: *first,
                name: name.to_owned(),
            });
        }
        names.push((content.to_owned(), line));
    }
    Ok(names.into_iter().map(|(n, _)| n).collect())
}

/// Reads list files and returns the union of their names, sorted.
pub fn read_lists(paths: &[PathBuf]) -> Result<Vec<String>, ListError> {
    let mut all = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| ListError::Read {
            path: path.clone(),
            source,
        })?;
        all.extend(parse_list(path, &text)?);
    }
    all.sort();
    all.dedup();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_comments_and_blank_lines() {
        let text = "# GuestOS\n\nsystemd   # init\n  udev\n#kmod\nlibstdc++6\n";
        let names = parse_list(Path::new("l"), text).unwrap();
        assert_eq!(names, ["systemd", "udev", "libstdc++6"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_list(Path::new("images/x.list"), "a1\nsystemd udev\n").unwrap_err();
        assert!(e.is_bad_input());
        assert_eq!(
            e.to_string(),
            "images/x.list:2: \"systemd udev\" is not a Debian package name (one name per line, optionally /suite; '#' comments)"
        );
        let e = parse_list(Path::new("l"), "kmod\nudev\nkmod # again\n").unwrap_err();
        assert_eq!(e.to_string(), "l:3: kmod is listed already on line 1");
    }

    #[test]
    fn a_name_can_come_from_another_suite() {
        let text = "linux-image-amd64/bookworm-backports\nsystemd\n";
        let names = parse_list(Path::new("l"), text).unwrap();
        assert_eq!(names, ["linux-image-amd64/bookworm-backports", "systemd"]);
        for bad in ["kmod/", "kmod/Bookworm", "/bookworm", "kmod/a/b", "kmod/-x"] {
            let e = parse_list(Path::new("l"), bad).unwrap_err();
            assert!(e.is_bad_input(), "{bad}");
        }
        let e = parse_list(Path::new("l"), "kmod\nkmod/bookworm-backports\n").unwrap_err();
        assert_eq!(e.to_string(), "l:2: kmod is listed already on line 1");
    }

    #[test]
    fn union_of_files_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.list");
        let b = dir.path().join("b.list");
        std::fs::write(&a, "zsh\nkmod\n").unwrap();
        std::fs::write(&b, "kmod\nbash\n").unwrap();
        assert_eq!(read_lists(&[a, b]).unwrap(), ["bash", "kmod", "zsh"]);
        let e = read_lists(&[dir.path().join("none.list")]).unwrap_err();
        assert!(!e.is_bad_input());
        assert!(e.to_string().contains("none.list"), "{e}");
    }
}
