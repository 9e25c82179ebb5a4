//! The deb822 format of Debian's control data, and the two archive files read
//! in it: a `Packages` index and the `InRelease` file that signs it.
//!
//! A deb822 file is a sequence of paragraphs (stanzas) separated by blank
//! lines. Each paragraph is a list of `Field: value` lines; a line that
//! starts with a space or a tab continues the previous field's value. Lines
//! starting with `#` are comments. Field names compare case-insensitively.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::digest::Sha256;

/// A malformed deb822 file, `Packages` index or `InRelease` file.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct Deb822Error {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line the problem is on (the paragraph's first line for a
    /// missing or invalid field).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One paragraph, borrowing from the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// The 1-based line number of the paragraph's first field.
    pub line: usize,
    /// The fields in order: the name and the raw value (a multi-line value
    /// keeps its newlines and the leading whitespace of its continuation
    /// lines).
    pub fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The value of the field `name` (case-insensitive), trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The lines of a multi-line field's value after its first line, trimmed,
    /// skipping empty ones (a `.` line stands for an empty line in deb822).
    pub fn continuation_lines(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v)
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }
}

/// Parses deb822 text into paragraphs. `path` only names the file in errors.
pub fn parse<'a>(path: &Path, text: &'a str) -> Result<Vec<Paragraph<'a>>, Deb822Error> {
    let mut paragraphs = Vec::new();
    let mut current: Option<Paragraph<'a>> = None;
    // Byte offset of the current field's value start, and its end so far.
    let mut value_span: Option<(usize, usize)> = None;
    let mut offset = 0usize;

    let finish_field = |current: &mut Option<Paragraph<'a>>, span: &mut Option<(usize, usize)>| {
        if let (Some(p), Some((start, end))) = (current.as_mut(), span.take())
            && let Some(last) = p.fields.last_mut()
        {
            last.1 = &text[start..end];
        }
    };

    for (index, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let line_start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let line_end = line_start + line.len();

        if line.trim().is_empty() {
            finish_field(&mut current, &mut value_span);
            if let Some(p) = current.take() {
                paragraphs.push(p);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match value_span.as_mut() {
                Some((_, end)) => *end = line_end,
                None => {
                    return Err(Deb822Error {
                        path: path.to_path_buf(),
                        line: line_no,
                        message: "continuation line outside a field".into(),
                    });
                }
            }
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Err(Deb822Error {
                path: path.to_path_buf(),
                line: line_no,
                message: format!("expected 'Field: value', got {line:?}"),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Deb822Error {
                path: path.to_path_buf(),
                line: line_no,
                message: format!("invalid field name {name:?}"),
            });
        }
        finish_field(&mut current, &mut value_span);
        let paragraph = current.get_or_insert_with(|| Paragraph {
            line: line_no,
            fields: Vec::new(),
        });
        if paragraph
            .fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(Deb822Error {
                path: path.to_path_buf(),
                line: line_no,
                message: format!("field {name} repeated in one paragraph"),
            });
        }
        let value_start = line_start + name.len() + 1;
        paragraph
            .fields
            .push((&text[line_start..line_start + name.len()], ""));
        value_span = Some((value_start, line_end));
    }
    finish_field(&mut current, &mut value_span);
    if let Some(p) = current.take() {
        paragraphs.push(p);
    }
    Ok(paragraphs)
}

/// One binary package of a `Packages` index: the fields a lock needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture` (`amd64` or `all`).
    pub architecture: String,
    /// `Filename`: the path of the `.deb` under the mirror's root.
    pub filename: String,
    /// `Size` in bytes.
    pub size: u64,
    /// `SHA256`.
    pub sha256: Sha256,
    /// `Priority` (`required`, `important`, `standard`, `optional`, ...), if given.
    pub priority: Option<String>,
    /// `Essential: yes`.
    pub essential: bool,
}

/// A parsed `Packages` index.
#[derive(Debug, Clone, Default)]
pub struct PackagesIndex {
    /// Every entry in file order.
    pub entries: Vec<IndexEntry>,
    by_filename: HashMap<String, usize>,
}

impl PackagesIndex {
    /// Parses the text of a `Packages` file. Every paragraph must have
    /// `Package`, `Version`, `Architecture`, `Filename`, `Size` and `SHA256`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Deb822Error> {
        let mut index = PackagesIndex::default();
        for p in parse(path, text)? {
            index.push(entry_of(path, &p)?);
        }
        Ok(index)
    }

    /// Adds an entry (a later entry with the same `Filename` replaces the
    /// lookup of an earlier one).
    pub fn push(&mut self, entry: IndexEntry) {
        self.by_filename
            .insert(entry.filename.clone(), self.entries.len());
        self.entries.push(entry);
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: PackagesIndex) {
        for e in other.entries {
            self.push(e);
        }
    }

    /// The entry whose `Filename` is `filename`.
    pub fn by_filename(&self, filename: &str) -> Option<&IndexEntry> {
        self.by_filename.get(filename).map(|&i| &self.entries[i])
    }

    /// Whether some entry is the real package `name`.
    pub fn contains_name(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }
}

fn entry_of(path: &Path, p: &Paragraph<'_>) -> Result<IndexEntry, Deb822Error> {
    let err = |message: String| Deb822Error {
        path: path.to_path_buf(),
        line: p.line,
        message,
    };
    let field = |name: &str| {
        p.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err(format!("paragraph without {name}")))
    };
    let name = field("Package")?;
    let in_package = |m: String| err(format!("package {name}: {m}"));
    let size = field("Size")?;
    let size = size
        .parse::<u64>()
        .map_err(|_| in_package(format!("Size is not a number: {size:?}")))?;
    let sha256 = field("SHA256")?
        .parse::<Sha256>()
        .map_err(|e| in_package(format!("SHA256: {e}")))?;
    Ok(IndexEntry {
        name: name.to_owned(),
        version: field("Version")?.to_owned(),
        architecture: field("Architecture")?.to_owned(),
        filename: field("Filename")?.to_owned(),
        size,
        sha256,
        priority: p.get("Priority").map(str::to_owned),
        essential: p
            .get("Essential")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
    })
}

/// The signed part of an `InRelease` file: what the archive says about a suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Suite` (`stable`, `oldstable`, ...), if given.
    pub suite: Option<String>,
    /// `Codename` (`bookworm`, ...), if given.
    pub codename: Option<String>,
    /// `Date`, as written (RFC 2822, UTC).
    pub date: String,
    /// The `SHA256` list: index path (such as `main/binary-amd64/Packages`)
    /// to size and digest.
    pub sha256: HashMap<String, (u64, Sha256)>,
}

impl Release {
    /// Parses an `InRelease` file (an OpenPGP clear-signed `Release`).
    ///
    /// The signature is not checked here: apt verifies it against the
    /// archive keyring when it downloads the file. A file without the
    /// clear-sign armor is parsed as a plain `Release`.
    pub fn parse_inrelease(path: &Path, text: &str) -> Result<Self, Deb822Error> {
        let body = clearsigned_body(text);
        let paragraphs = parse(path, &body)?;
        let err = |line, message: String| Deb822Error {
            path: path.to_path_buf(),
            line,
            message,
        };
        let Some(p) = paragraphs.first() else {
            return Err(err(1, "no Release paragraph".into()));
        };
        let date = p
            .get("Date")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| err(p.line, "no Date field".into()))?;
        let mut sha256 = HashMap::new();
        for l in p.continuation_lines("SHA256") {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let [digest, size, name] = parts[..] else {
                return Err(err(p.line, format!("bad SHA256 line {l:?}")));
            };
            let digest = digest
                .parse::<Sha256>()
                .map_err(|e| err(p.line, format!("SHA256 of {name}: {e}")))?;
            let size = size
                .parse::<u64>()
                .map_err(|_| err(p.line, format!("bad size in SHA256 line {l:?}")))?;
            sha256.insert(name.to_owned(), (size, digest));
        }
        Ok(Release {
            suite: p.get("Suite").map(str::to_owned),
            codename: p.get("Codename").map(str::to_owned),
            date: date.to_owned(),
            sha256,
        })
    }
}

/// The signed text of a clear-signed message, dash-escaping undone; the
/// whole text when there is no armor.
fn clearsigned_body(text: &str) -> String {
    let mut lines = text.lines();
    let Some(first) = lines.clone().next() else {
        return String::new();
    };
    if first.trim_end() != "-----BEGIN PGP SIGNED MESSAGE-----" {
        return text.to_owned();
    }
    lines.next();
    // Armor headers ("Hash: SHA256") end at the first empty line.
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    for l in lines {
        if l.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            break;
        }
        body.push_str(l.strip_prefix("- ").unwrap_or(l));
        body.push('\n');
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: adduser
Version: 3.134
Installed-Size: 849
Maintainer: Debian Adduser Developers <adduser@packages.debian.org>
Architecture: all
Depends: passwd
Description: add and remove users and groups
Multi-Arch: foreign
Homepage: https://salsa.debian.org/debian/adduser
Description-md5: 7965b5cd83972a254552a570bcd32c93
Tag: admin::user-management
Section: admin
Priority: important
Filename: pool/main/a/adduser/adduser_3.134_all.deb
Size: 1170836
MD5sum: 0b25e3e94fb23d5ec0e4ac1f04fe2b9d
SHA256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad

Package: base-files
Essential: yes
Priority: required
Version: 12.4+deb12u5
Architecture: amd64
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.
 .
 It also contains the license files.
Filename: pool/main/b/base-files/base-files_12.4+deb12u5_amd64.deb
Size: 70000
SHA256: 248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1
";

    #[test]
    fn parses_paragraphs_and_multiline_values() {
        let ps = parse(Path::new("P"), PACKAGES).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].line, 1);
        assert_eq!(ps[1].line, 19);
        assert_eq!(ps[1].get("package"), Some("base-files"));
        let desc = ps[1].get("Description").unwrap();
        assert!(desc.starts_with("Debian base system"));
        assert!(desc.ends_with("license files."));
        assert_eq!(ps[1].continuation_lines("Description").count(), 3);
    }

    #[test]
    fn index_entries_and_lookup() {
        let index = PackagesIndex::parse(Path::new("P"), PACKAGES).unwrap();
        assert_eq!(index.entries.len(), 2);
        let e = index
            .by_filename("pool/main/b/base-files/base-files_12.4+deb12u5_amd64.deb")
            .unwrap();
        assert_eq!(e.name, "base-files");
        assert_eq!(e.version, "12.4+deb12u5");
        assert_eq!(e.size, 70000);
        assert!(e.essential);
        assert_eq!(e.priority.as_deref(), Some("required"));
        assert!(!index.entries[0].essential);
        assert!(index.contains_name("adduser"));
        assert!(!index.contains_name("passwd"));
    }

    #[test]
    fn crlf_comments_and_blank_runs() {
        let text = "# comment\r\nPackage: a\r\n\r\n\r\n\r\nPackage: b\r\nX: y\r\n";
        let ps = parse(Path::new("P"), text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("Package"), Some("a"));
        assert_eq!(ps[1].line, 6);
        assert_eq!(ps[1].get("x"), Some("y"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse(Path::new("/x/Packages"), "Package: a\nno colon here\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/Packages:2: expected 'Field: value', got \"no colon here\""
        );
        let e = parse(Path::new("P"), " leading\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse(Path::new("P"), "A: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("repeated"), "{e}");
        let broken = PACKAGES.replace("Size: 70000", "Size: many");
        let e = PackagesIndex::parse(Path::new("P"), &broken).unwrap_err();
        assert_eq!(e.line, 19);
        assert!(e.to_string().contains("package base-files: Size"), "{e}");
        let missing = PACKAGES.replace("SHA256: 248d", "SHA1: 248d");
        let e = PackagesIndex::parse(Path::new("P"), &missing).unwrap_err();
        assert!(e.to_string().contains("without SHA256"), "{e}");
    }

    #[test]
    fn inrelease_signed_body() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\n\
Hash: SHA256\n\
\n\
Origin: Debian\n\
Suite: oldstable\n\
Codename: bookworm\n\
Date: Sat, 11 Jul 2026 10:16:37 UTC\n\
SHA256:\n \
248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1  1234 main/binary-amd64/Packages\n \
ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad   99 main/binary-amd64/Packages.xz\n\
- Dashed: line\n\
-----BEGIN PGP SIGNATURE-----\n\
\n\
iQIzBAEBCAAdFiEE\n\
-----END PGP SIGNATURE-----\n";
        let r = Release::parse_inrelease(Path::new("InRelease"), text).unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.suite.as_deref(), Some("oldstable"));
        assert_eq!(r.date, "Sat, 11 Jul 2026 10:16:37 UTC");
        assert_eq!(r.sha256.len(), 2);
        let (size, digest) = r.sha256["main/binary-amd64/Packages"];
        assert_eq!(size, 1234);
        assert_eq!(
            digest.to_string(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let e = Release::parse_inrelease(Path::new("R"), "Origin: Debian\n").unwrap_err();
        assert!(e.to_string().contains("no Date"), "{e}");
    }
}
