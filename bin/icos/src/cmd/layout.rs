//! `icos layout`: show the IC-OS disk layouts, and write or read GPTs on image
//! files (sparse files; no loop device or mount is used).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use icos_layout::{
    GIB, GptEntry, GptTable, HeaderStatus, ImageError, Layout, MIB, OsKind, SECTOR_SIZE, Uuid,
    WriteOptions, read_gpt_image, write_gpt_image,
};
use serde_json::{Value, json};

use crate::exit::{Classify, CmdResult};

/// `icos layout` subcommands.
#[derive(Debug, Subcommand)]
pub enum LayoutCmd {
    /// Print a built-in layout: each partition's name, start, size, type and
    /// UUID, and for HostOS the LVM volumes inside `hostlvm`.
    Show(ShowArgs),
    /// Write a layout's GPT (protective MBR, primary and backup tables) into
    /// a sparse image file, creating or extending it.
    WriteGpt(WriteGptArgs),
    /// Print the GPT found in an image file.
    ReadGpt(ReadGptArgs),
}

/// The built-in layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OsArg {
    /// The GuestOS disk (replica VM).
    Guestos,
    /// The HostOS disk (node's system drive).
    Hostos,
    /// The SetupOS installer image.
    Setupos,
}

impl From<OsArg> for OsKind {
    fn from(os: OsArg) -> OsKind {
        match os {
            OsArg::Guestos => OsKind::GuestOs,
            OsArg::Hostos => OsKind::HostOs,
            OsArg::Setupos => OsKind::SetupOs,
        }
    }
}

/// Arguments of `icos layout show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The layout to print.
    #[arg(value_enum)]
    pub os: OsArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `icos layout write-gpt`.
#[derive(Debug, Args)]
pub struct WriteGptArgs {
    /// The layout whose GPT to write.
    #[arg(value_enum)]
    pub os: OsArg,
    /// The image file to create (or, with --force, to reuse).
    pub image: PathBuf,
    /// Image size in bytes, or with a K, M, G or T suffix (powers of 1024);
    /// default: the layout's image size (GuestOS 50G, HostOS and SetupOS the
    /// end of the last partition plus 1 MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Write into an existing non-empty file: its length is set to the image
    /// size and only the GPT sectors are rewritten.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `icos layout read-gpt`.
#[derive(Debug, Args)]
pub struct ReadGptArgs {
    /// The image file (or block device) to read; it is opened read-only.
    pub image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `icos layout` subcommand.
pub fn run(cmd: LayoutCmd) -> CmdResult {
    match cmd {
        LayoutCmd::Show(args) => {
            let layout = OsKind::from(args.os).layout();
            if args.json {
                print_json(&layout_json(&layout))
            } else {
                print!("{}", layout_table(&layout));
                Ok(())
            }
        }
        LayoutCmd::WriteGpt(args) => {
            let layout = OsKind::from(args.os).layout();
            let options = WriteOptions {
                size: args.size,
                force: args.force,
            };
            let size = classify(write_gpt_image(&args.image, &layout, options))?;
            println!(
                "wrote the {} GPT ({} partitions) to {} ({size} bytes, {})",
                layout.name,
                layout.partitions.len(),
                args.image.display(),
                human(size)
            );
            Ok(())
        }
        LayoutCmd::ReadGpt(args) => {
            let table = classify(read_gpt_image(&args.image))?;
            if args.json {
                print_json(&table_json(&table))
            } else {
                print!("{}", gpt_table(&args.image, &table));
                Ok(())
            }
        }
    }
}

fn classify<T>(result: Result<T, ImageError>) -> CmdResult<T> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.is_bad_input() => Err(e).bad_input(),
        Err(e) => Err(e).failed(),
    }
}

fn print_json(value: &Value) -> CmdResult {
    let text = serde_json::to_string_pretty(value).failed()?;
    println!("{text}");
    Ok(())
}

/// Parses a byte count: digits, optionally followed by K, M, G or T (also
/// KiB, MiB, GiB, TiB), each a power of 1024.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let shift = match suffix {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(format!("unknown size suffix {suffix:?}: use K, M, G or T")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

/// A short binary size: "100 MiB", "50 GiB", "1.5 GiB", "512 B".
fn human(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in units {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                // One decimal, rounded down, without floating point.
                let tenths = bytes / (unit / 10);
                format!("{}.{} {name}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

/// A UUID in upper case, as `sfdisk` prints it.
fn upper(uuid: &Uuid) -> String {
    let mut buf = Uuid::encode_buffer();
    uuid.hyphenated().encode_upper(&mut buf).to_owned()
}

/// Left-aligned columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn layout_table(layout: &Layout) -> String {
    let mut out = format!(
        "layout:     {}\nlabel-id:   {}\ndisk size:  {} bytes ({}), {SECTOR_SIZE}-byte sectors\n\n",
        layout.name,
        upper(&layout.disk_guid),
        layout.disk_size,
        human(layout.disk_size)
    );
    let mut rows = vec![
        ["#", "name", "start", "size", "bytes", "type", "uuid"]
            .map(String::from)
            .to_vec(),
    ];
    for (number, p) in (1..).zip(&layout.partitions) {
        rows.push(vec![
            format!("{number}"),
            p.name.clone(),
            p.start.to_string(),
            p.size.to_string(),
            human(p.size_bytes()),
            p.kind.code().to_string(),
            upper(&p.uuid),
        ]);
    }
    out.push_str(&columns(&rows));
    if let Some(lvm) = &layout.lvm {
        out.push_str(&format!(
            "\nLVM volume group {} (uuid {}) on partition {}\nPV uuid {}, {} extents, first extent {} into the PV\n\n",
            lvm.vg_name,
            lvm.vg_uuid,
            lvm.pv_partition,
            lvm.pv_uuid,
            human(lvm.extent_size),
            human(lvm.pe_start)
        ));
        let mut rows = vec![
            ["name", "start", "extents", "bytes", "uuid"]
                .map(String::from)
                .to_vec(),
        ];
        for v in &lvm.volumes {
            rows.push(vec![
                v.name.clone(),
                v.start_extent.to_string(),
                v.size_extents.to_string(),
                human(lvm.volume_size_bytes(v)),
                v.uuid.to_string(),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    out
}

fn layout_json(layout: &Layout) -> Value {
    let partitions: Vec<Value> = (1u32..)
        .zip(&layout.partitions)
        .map(|(number, p)| {
            json!({
                "number": number,
                "name": p.name,
                "start": p.start,
                "size": p.size,
                "offset_bytes": p.offset_bytes(),
                "size_bytes": p.size_bytes(),
                "type": p.kind.code().to_string(),
                "type_guid": upper(&p.kind.type_guid()),
                "uuid": upper(&p.uuid),
                "comment": p.comment,
            })
        })
        .collect();
    let mut value = json!({
        "name": layout.name,
        "label_id": upper(&layout.disk_guid),
        "disk_size": layout.disk_size,
        "sector_size": SECTOR_SIZE,
        "partitions": partitions,
    });
    if let Some(lvm) = &layout.lvm {
        let volumes: Vec<Value> = lvm
            .volumes
            .iter()
            .map(|v| {
                let (offset, size) = layout
                    .volume_byte_range(&v.name)
                    .map_or((Value::Null, Value::Null), |(o, s)| (o.into(), s.into()));
                json!({
                    "name": v.name,
                    "start_extent": v.start_extent,
                    "size_extents": v.size_extents,
                    "offset_bytes": offset,
                    "size_bytes": size,
                    "uuid": v.uuid.as_str(),
                    "comment": v.comment,
                })
            })
            .collect();
        value["lvm"] = json!({
            "pv_partition": lvm.pv_partition,
            "vg_name": lvm.vg_name,
            "vg_uuid": lvm.vg_uuid.as_str(),
            "pv_uuid": lvm.pv_uuid.as_str(),
            "extent_size": lvm.extent_size,
            "pe_start": lvm.pe_start,
            "volumes": volumes,
        });
    }
    value
}

fn type_label(entry: &GptEntry) -> String {
    entry
        .partition_type()
        .map_or_else(|| upper(&entry.type_guid), |t| t.code().to_string())
}

fn gpt_table(image: &std::path::Path, table: &GptTable) -> String {
    let state = |h: &HeaderStatus| {
        let validity = if h.valid { "valid" } else { "invalid" };
        match &h.problem {
            Some(p) => format!("sector {}, {validity}: {p}", h.lba),
            None => format!("sector {}, {validity}", h.lba),
        }
    };
    let mut out = format!(
        "image:          {}\nlabel-id:       {}\ndisk size:      {} bytes ({})\nusable sectors: {}..={}\nprotective MBR: {}\nprimary header: {}\nbackup header:  {}\n\n",
        image.display(),
        upper(&table.disk_guid),
        table.disk_size,
        human(table.disk_size),
        table.first_usable_lba,
        table.last_usable_lba,
        if table.protective_mbr { "yes" } else { "no" },
        state(&table.primary),
        state(&table.backup),
    );
    let mut rows = vec![
        ["#", "name", "start", "size", "bytes", "type", "uuid"]
            .map(String::from)
            .to_vec(),
    ];
    for p in &table.partitions {
        rows.push(vec![
            p.number.to_string(),
            p.name.clone(),
            p.start.to_string(),
            p.size.to_string(),
            human(p.size.saturating_mul(SECTOR_SIZE)),
            type_label(p),
            upper(&p.uuid),
        ]);
    }
    out.push_str(&columns(&rows));
    let problems = table.problems();
    if problems.is_empty() {
        out.push_str("\nproblems: none\n");
    } else {
        out.push_str("\nproblems:\n");
        for p in problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

fn table_json(table: &GptTable) -> Value {
    let partitions: Vec<Value> = table
        .partitions
        .iter()
        .map(|p| {
            json!({
                "number": p.number,
                "name": p.name,
                "start": p.start,
                "size": p.size,
                "type": p.partition_type().map(|t| t.code().to_string()),
                "type_guid": upper(&p.type_guid),
                "uuid": upper(&p.uuid),
                "attributes": p.attributes,
            })
        })
        .collect();
    let header = |h: &HeaderStatus| json!({ "lba": h.lba, "valid": h.valid, "problem": h.problem });
    json!({
        "label_id": upper(&table.disk_guid),
        "disk_size": table.disk_size,
        "sector_size": SECTOR_SIZE,
        "first_usable_lba": table.first_usable_lba,
        "last_usable_lba": table.last_usable_lba,
        "protective_mbr": table.protective_mbr,
        "primary_header": header(&table.primary),
        "backup_header": header(&table.backup),
        "problems": table.problems(),
        "partitions": partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("50G"), Ok(50 * GIB));
        assert_eq!(parse_size("3MiB"), Ok(3 * MIB));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(100 * MIB), "100 MiB");
        assert_eq!(human(50 * GIB), "50 GiB");
        assert_eq!(human(3 * GIB / 2), "1.5 GiB");
        assert_eq!(human(512), "512 B");
    }
}
