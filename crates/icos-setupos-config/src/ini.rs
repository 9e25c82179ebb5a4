//! The small INI dialect of `config.ini`.
//!
//! * `KEY=VALUE` lines; key and value are trimmed and the key is lower-cased.
//!   The value runs to the end of the line, so it may itself hold `=`, `#`
//!   or `;` (there are no inline comments, no quoting and no escapes).
//! * Lines whose first non-blank character is `#` or `;` are comments; blank
//!   lines are skipped.
//! * `[section]` headers are accepted and ignored: all sections are flattened
//!   into one set of keys.
//! * `\n` and `\r\n` line ends; a leading UTF-8 byte-order mark is skipped.
//!
//! A malformed line is a problem naming its line number; reading goes on so
//! that every malformed line is reported.

use crate::problem::Problems;

/// One `KEY=VALUE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The key, trimmed and lower-cased.
    pub key: String,
    /// The value, trimmed.
    pub value: String,
}

/// Splits `text` into entries, in file order; malformed lines become problems
/// keyed `line N`.
pub(crate) fn read(text: &str) -> (Vec<Entry>, Problems) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    let mut problems = Problems::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            if !trimmed.ends_with(']') {
                problems.at(
                    format!("line {line}"),
                    format!("section header {} has no closing ']'", quote(trimmed)),
                );
            }
            continue;
        }
        match trimmed.split_once('=') {
            None => problems.at(
                format!("line {line}"),
                format!("expected KEY=VALUE but found {}", quote(trimmed)),
            ),
            Some((key, _)) if key.trim().is_empty() => problems.at(
                format!("line {line}"),
                format!("no key before '=' in {}", quote(trimmed)),
            ),
            Some((key, value)) => entries.push(Entry {
                line,
                key: key.trim().to_lowercase(),
                value: value.trim().to_string(),
            }),
        }
    }
    (entries, problems)
}

/// Quotes a value for a message, shortening very long ones.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        format!("'{value}'")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("'{head}…'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        let (entries, problems) = read(text);
        assert!(problems.is_empty(), "{problems}");
        entries.into_iter().map(|e| (e.key, e.value)).collect()
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let got = pairs("\n\t\r\n# c  \n; c\n   # indented\n  Key = some value  \nempty=\n");
        assert_eq!(
            got,
            [
                ("key".to_string(), "some value".to_string()),
                ("empty".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn values_are_verbatim_to_the_end_of_the_line() {
        let got = pairs("a=x=y # not a comment ; nor this\nb=\"quoted\\n\"\n");
        assert_eq!(got[0].1, "x=y # not a comment ; nor this");
        assert_eq!(got[1].1, "\"quoted\\n\"");
    }

    #[test]
    fn crlf_and_bom() {
        let got = pairs("\u{feff}A=1\r\nb=2\r\n");
        assert_eq!(
            got,
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn sections_are_flattened() {
        let got = pairs("top=1\n[net]\nipv6_prefix=2a00::\n [ other ] \nk=v\n");
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["top", "ipv6_prefix", "k"]);
    }

    #[test]
    fn every_malformed_line_is_reported() {
        let (entries, problems) = read("a=1\nno equals sign\n=value\n[open\nb=2\n");
        assert_eq!(entries.len(), 2);
        let keys: Vec<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(keys, ["line 2", "line 3", "line 4"]);
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "é".repeat(200);
        let q = quote(&long);
        assert!(q.chars().count() < 90, "{q}");
        assert_eq!(quote("ab"), "'ab'");
    }
}
