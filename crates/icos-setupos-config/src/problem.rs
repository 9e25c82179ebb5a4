//! Broken rules, collected so that every one of them is reported at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// One rule that one input broke.
///
/// Displayed as `FILE: KEY: MESSAGE`, leaving out the parts that are unknown,
/// for example `examples/config.ini: ipv6_prefix: '2a00:fb01:400:44:1234' is
/// longer than 19 characters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in, when it is known.
    pub file: Option<PathBuf>,
    /// Where in the input: a config.ini key (`ipv6_prefix`), a JSON path
    /// (`nns.urls[1]`), a line (`line 3`) or a flag (`--mgmt-mac`).
    pub key: Option<String>,
    /// The rule that was broken, with the offending value.
    pub message: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// A problem with the input as a whole (no key).
    pub fn whole(message: impl Into<String>) -> Self {
        Problem {
            file: None,
            key: None,
            message: message.into(),
        }
    }

    /// The same problem, placed in `file` unless it already names a file.
    pub fn in_file(mut self, file: &Path) -> Self {
        if self.file.is_none() {
            self.file = Some(file.to_path_buf());
        }
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one or more inputs.
///
/// Displayed as the single problem when there is one, otherwise as a count
/// followed by one problem per line.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    /// Adds a problem at `key`.
    pub fn at(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::at(key, message));
    }

    /// Adds a problem.
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// The problems, in the order they were found.
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    /// The same problems, each placed in `file` unless it already names one.
    pub fn in_file(self, file: &Path) -> Self {
        Problems(self.0.into_iter().map(|p| p.in_file(file)).collect())
    }

    /// `Ok(value)` when there are no problems, otherwise `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// True when some problem is at exactly `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.0.iter().any(|p| p.key.as_deref() == Some(key))
    }
}

impl From<Problem> for Problems {
    fn from(problem: Problem) -> Self {
        Problems(vec![problem])
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(problems: Vec<Problem>) -> Self {
        Problems(problems)
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no problems"),
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_key_and_rule() {
        let p = Problem::at("ipv6_prefix", "'x' is too long").in_file(Path::new("a/config.ini"));
        assert_eq!(p.to_string(), "a/config.ini: ipv6_prefix: 'x' is too long");
        assert_eq!(Problem::whole("empty").to_string(), "empty");
    }

    #[test]
    fn in_file_keeps_an_existing_file() {
        let p = Problem::at("k", "m")
            .in_file(Path::new("first"))
            .in_file(Path::new("second"));
        assert_eq!(p.file.as_deref(), Some(Path::new("first")));
    }

    #[test]
    fn many_problems_are_listed_one_per_line() {
        let mut ps = Problems::new();
        ps.at("a", "one");
        ps.at("b", "two");
        let text = ps.in_file(Path::new("f")).to_string();
        assert_eq!(text, "2 problems:\n  f: a: one\n  f: b: two");
    }
}
