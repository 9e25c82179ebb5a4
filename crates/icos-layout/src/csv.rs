//! Parsers for IC's layout tables: `partitions.csv` and `volumes.csv`.
//!
//! The format, as IC's image build scripts read it:
//!
//! - lines starting with `#` are comments, empty lines are skipped;
//! - every other line is one row of comma-separated fields, each padded with
//!   spaces that are not part of the value;
//! - `partitions.csv` rows are `name,start,size,type,uuid,comment` with start
//!   and size in 512-byte sectors and type one of `U`, `L`, `M`;
//! - `volumes.csv` rows are `name,start,size,uuid,comment` with start and size
//!   in LVM extents and an LVM-style UUID.
//!
//! The comment is the last field and keeps any further commas. Whitespace-only
//! lines, comment lines with leading blanks and CRLF line ends are accepted too.

use std::fmt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::layout::{LogicalVolume, LvmUuid, Partition, PartitionType};

/// Why one line of a table was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvErrorKind {
    /// The line has fewer fields than a row needs.
    TooFewFields {
        /// Fields a row needs.
        expected: usize,
        /// Fields the line has.
        found: usize,
    },
    /// The name field is empty.
    EmptyName,
    /// A start or size is not a non-negative integer.
    BadNumber {
        /// `start` or `size`.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The type code is not `U`, `L` or `M`.
    UnknownType {
        /// The text found.
        value: String,
    },
    /// The partition UUID does not parse.
    BadUuid {
        /// The text found.
        value: String,
    },
    /// The LVM UUID does not have the LVM format.
    BadLvmUuid {
        /// The text found.
        value: String,
    },
}

impl fmt::Display for CsvErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsvErrorKind::TooFewFields { expected, found } => {
                write!(
                    f,
                    "expected {expected} comma-separated fields, found {found}"
                )
            }
            CsvErrorKind::EmptyName => write!(f, "the name is empty"),
            CsvErrorKind::BadNumber { field, value } => {
                write!(f, "{field} {value:?} is not a non-negative integer")
            }
            CsvErrorKind::UnknownType { value } => {
                write!(f, "type {value:?} is not one of U, L, M")
            }
            CsvErrorKind::BadUuid { value } => write!(f, "{value:?} is not a UUID"),
            CsvErrorKind::BadLvmUuid { value } => write!(f, "{value:?} is not an LVM UUID"),
        }
    }
}

/// A rejected line of a layout table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub kind: CsvErrorKind,
}

/// A layout table file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CsvFileError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line was rejected.
    #[error("parsing {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The rejected line.
        #[source]
        source: CsvError,
    },
}

/// The data rows of a table: (1-based line number, fields), with comment and
/// blank lines dropped and at most `fields` fields per row (the last keeps any
/// further commas), each trimmed.
fn rows(text: &str, fields: usize) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(move |(index, line)| {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        Some((index + 1, line.splitn(fields, ',').map(str::trim).collect()))
    })
}

fn number(field: &'static str, value: &str) -> Result<u64, CsvErrorKind> {
    // `u64::from_str` takes a leading '+'; IC's int() does too, but keep to digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CsvErrorKind::BadNumber {
            field,
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| CsvErrorKind::BadNumber {
        field,
        value: value.to_owned(),
    })
}

fn check_count(cols: &[&str], expected: usize) -> Result<(), CsvErrorKind> {
    if cols.len() < expected {
        return Err(CsvErrorKind::TooFewFields {
            expected,
            found: cols.len(),
        });
    }
    if cols[0].is_empty() {
        return Err(CsvErrorKind::EmptyName);
    }
    Ok(())
}

fn partition_row(cols: &[&str]) -> Result<Partition, CsvErrorKind> {
    check_count(cols, 6)?;
    let kind = PartitionType::from_code(cols[3]).ok_or_else(|| CsvErrorKind::UnknownType {
        value: cols[3].to_owned(),
    })?;
    let uuid = Uuid::try_parse(cols[4]).map_err(|_| CsvErrorKind::BadUuid {
        value: cols[4].to_owned(),
    })?;
    Ok(Partition {
        name: cols[0].to_owned(),
        start: number("start", cols[1])?,
        size: number("size", cols[2])?,
        kind,
        uuid,
        comment: cols[5].to_owned(),
    })
}

fn volume_row(cols: &[&str]) -> Result<LogicalVolume, CsvErrorKind> {
    check_count(cols, 5)?;
    let uuid = LvmUuid::new(cols[3]).map_err(|_| CsvErrorKind::BadLvmUuid {
        value: cols[3].to_owned(),
    })?;
    Ok(LogicalVolume {
        name: cols[0].to_owned(),
        start_extent: number("start", cols[1])?,
        size_extents: number("size", cols[2])?,
        uuid,
        comment: cols[4].to_owned(),
    })
}

/// Parses the text of a `partitions.csv`, in row order.
pub fn parse_partitions_csv(text: &str) -> Result<Vec<Partition>, CsvError> {
    rows(text, 6)
        .map(|(line, cols)| partition_row(&cols).map_err(|kind| CsvError { line, kind }))
        .collect()
}

/// Parses the text of a `volumes.csv`, in row order.
pub fn parse_volumes_csv(text: &str) -> Result<Vec<LogicalVolume>, CsvError> {
    rows(text, 5)
        .map(|(line, cols)| volume_row(&cols).map_err(|kind| CsvError { line, kind }))
        .collect()
}

fn read(path: &Path) -> Result<String, CsvFileError> {
    std::fs::read_to_string(path).map_err(|source| CsvFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a `partitions.csv` file.
pub fn read_partitions_csv(path: &Path) -> Result<Vec<Partition>, CsvFileError> {
    parse_partitions_csv(&read(path)?).map_err(|source| CsvFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a `volumes.csv` file.
pub fn read_volumes_csv(path: &Path) -> Result<Vec<LogicalVolume>, CsvFileError> {
    parse_volumes_csv(&read(path)?).map_err(|source| CsvFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Formats partitions as a `partitions.csv` body (no header comment), with
/// upper-case UUIDs and unpadded fields.
pub fn format_partitions_csv(partitions: &[Partition]) -> String {
    let mut out = String::new();
    for p in partitions {
        let mut buf = Uuid::encode_buffer();
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            p.name,
            p.start,
            p.size,
            p.kind.code(),
            p.uuid.hyphenated().encode_upper(&mut buf),
            p.comment
        ));
    }
    out
}

/// Formats volumes as a `volumes.csv` body (no header comment), unpadded.
pub fn format_volumes_csv(volumes: &[LogicalVolume]) -> String {
    let mut out = String::new();
    for v in volumes {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            v.name, v.start_extent, v.size_extents, v.uuid, v.comment
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::OsKind;

    const SAMPLE: &str = "# header\n#\n\n  # indented comment\nesp   ,    2048,  204800,U,b78084e2-3363-1346-8c25-d426f26b8928,EFI system partition\r\n\
        grub  ,  206848,  204800,L,6788E4CF-F456-104E-9A34-A2C58CFB0EE6,Grub, with a comma\n   \n";

    #[test]
    fn parses_padded_rows_and_skips_comments() {
        let parts = parse_partitions_csv(SAMPLE).expect("parses");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "esp");
        assert_eq!(parts[0].start, 2048);
        assert_eq!(parts[0].kind, PartitionType::Efi);
        assert_eq!(parts[0].comment, "EFI system partition");
        assert_eq!(
            parts[0].uuid,
            uuid::uuid!("B78084E2-3363-1346-8C25-D426F26B8928")
        );
        assert_eq!(parts[1].comment, "Grub, with a comma");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "esp,2048,204800,U,B78084E2-3363-1346-8C25-D426F26B8928",
                CsvErrorKind::TooFewFields {
                    expected: 6,
                    found: 5,
                },
            ),
            (
                ",2048,204800,U,B78084E2-3363-1346-8C25-D426F26B8928,x",
                CsvErrorKind::EmptyName,
            ),
            (
                "esp,-1,204800,U,B78084E2-3363-1346-8C25-D426F26B8928,x",
                CsvErrorKind::BadNumber {
                    field: "start",
                    value: "-1".into(),
                },
            ),
            (
                "esp,1,2k,U,B78084E2-3363-1346-8C25-D426F26B8928,x",
                CsvErrorKind::BadNumber {
                    field: "size",
                    value: "2k".into(),
                },
            ),
            (
                "esp,1,2,X,B78084E2-3363-1346-8C25-D426F26B8928,x",
                CsvErrorKind::UnknownType { value: "X".into() },
            ),
            (
                "esp,1,2,UL,B78084E2-3363-1346-8C25-D426F26B8928,x",
                CsvErrorKind::UnknownType { value: "UL".into() },
            ),
            (
                "esp,1,2,U,not-a-uuid,x",
                CsvErrorKind::BadUuid {
                    value: "not-a-uuid".into(),
                },
            ),
        ];
        for (row, kind) in cases {
            let err = parse_partitions_csv(&format!("# c\n{row}\n")).expect_err(row);
            assert_eq!(err, CsvError { line: 2, kind }, "{row}");
        }
        let err = parse_volumes_csv("a,0,1,bad,c\n").expect_err("bad uuid");
        assert_eq!(
            err.kind,
            CsvErrorKind::BadLvmUuid {
                value: "bad".into()
            }
        );
        assert_eq!(err.to_string(), "line 1: \"bad\" is not an LVM UUID");
    }

    #[test]
    fn format_round_trips() {
        for kind in OsKind::ALL {
            let layout = kind.layout();
            let text = format_partitions_csv(&layout.partitions);
            assert_eq!(
                parse_partitions_csv(&text).expect("parses"),
                layout.partitions
            );
        }
        let volumes = OsKind::HostOs.layout().lvm.expect("lvm").volumes;
        let text = format_volumes_csv(&volumes);
        assert_eq!(parse_volumes_csv(&text).expect("parses"), volumes);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err =
            read_partitions_csv(Path::new("/nonexistent/partitions.csv")).expect_err("missing");
        assert_eq!(err.to_string(), "reading /nonexistent/partitions.csv");
    }
}
