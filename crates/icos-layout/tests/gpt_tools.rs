//! GPTs written by this crate, checked with util-linux `sfdisk` and GPT fdisk
//! `sgdisk` on sparse image files (no loop devices, no mounts).
//!
//! The tools are required: a missing tool fails the test with the name of the
//! package that provides it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use icos_layout::{
    GptTable, IC_LABEL_ID, Layout, MIB, OsKind, WriteOptions, read_gpt_image, read_partitions_csv,
    write_gpt_image,
};
use uuid::Uuid;

/// Finds `tool` on PATH or in the sbin directories; panics naming `package`.
fn tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{tool} is required for this test but was not found: install the `{package}` package");
}

fn sfdisk() -> PathBuf {
    tool("sfdisk", "fdisk")
}

fn sgdisk() -> PathBuf {
    tool("sgdisk", "gdisk")
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}",
        program.display(),
        out.status
    );
    stdout
}

/// One partition line of `sfdisk --dump`.
#[derive(Debug, PartialEq, Eq)]
struct DumpPartition {
    start: u64,
    size: u64,
    type_guid: Uuid,
    uuid: Uuid,
    name: Option<String>,
}

/// The parts of `sfdisk --dump` the tests compare.
#[derive(Debug, Default)]
struct Dump {
    label: String,
    label_id: Option<Uuid>,
    first_lba: u64,
    last_lba: u64,
    sector_size: u64,
    partitions: Vec<DumpPartition>,
}

/// Parses `sfdisk --dump` output: `key: value` header lines, a blank line,
/// then `DEVICE : key=value, key=value, name="..."` lines.
fn parse_dump(text: &str) -> Dump {
    let mut dump = Dump::default();
    for line in text.lines() {
        if let Some((_, fields)) = line.split_once(" : ") {
            let mut start = None;
            let mut size = None;
            let mut type_guid = None;
            let mut uuid = None;
            let mut name = None;
            for field in fields.split(", ") {
                let (key, value) = field.split_once('=').expect("key=value");
                let value = value.trim();
                match key.trim() {
                    "start" => start = Some(value.parse().unwrap()),
                    "size" => size = Some(value.parse().unwrap()),
                    "type" => type_guid = Some(Uuid::parse_str(value).unwrap()),
                    "uuid" => uuid = Some(Uuid::parse_str(value).unwrap()),
                    "name" => name = Some(value.trim_matches('"').to_owned()),
                    other => panic!("unexpected sfdisk field {other:?} in {line:?}"),
                }
            }
            dump.partitions.push(DumpPartition {
                start: start.expect("start"),
                size: size.expect("size"),
                type_guid: type_guid.expect("type"),
                uuid: uuid.expect("uuid"),
                name,
            });
        } else if let Some((key, value)) = line.split_once(": ") {
            let value = value.trim();
            match key {
                "label" => dump.label = value.to_owned(),
                "label-id" => dump.label_id = Some(Uuid::parse_str(value).unwrap()),
                "first-lba" => dump.first_lba = value.parse().unwrap(),
                "last-lba" => dump.last_lba = value.parse().unwrap(),
                "sector-size" => dump.sector_size = value.parse().unwrap(),
                _ => {}
            }
        }
    }
    dump
}

fn check_with_sfdisk(image: &Path, layout: &Layout, disk_size: u64) {
    let dump = parse_dump(&run(&sfdisk(), &["--dump", image.to_str().unwrap()], None));
    assert_eq!(dump.label, "gpt");
    assert_eq!(dump.label_id, Some(IC_LABEL_ID));
    assert_eq!(dump.label_id, Some(layout.disk_guid));
    assert_eq!(dump.sector_size, 512);
    assert_eq!(dump.first_lba, 2048);
    assert_eq!(dump.last_lba, disk_size / 512 - 34);
    let want: Vec<DumpPartition> = layout
        .partitions
        .iter()
        .map(|p| DumpPartition {
            start: p.start,
            size: p.size,
            type_guid: p.kind.type_guid(),
            uuid: p.uuid,
            name: Some(p.name.clone()),
        })
        .collect();
    assert_eq!(dump.partitions, want, "{}", layout.name);
}

fn check_with_sgdisk(image: &Path) {
    let out = run(&sgdisk(), &["-v", image.to_str().unwrap()], None);
    assert!(out.contains("No problems found."), "sgdisk -v:\n{out}");
    assert!(
        !out.to_lowercase().contains("problem:"),
        "sgdisk -v:\n{out}"
    );
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The first and last MiB of an image: every sector the GPT writer touches.
fn gpt_regions(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let len = std::fs::metadata(path).unwrap().len();
    (read_range(path, 0, MIB), read_range(path, len - MIB, MIB))
}

fn assert_sparse(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    // Only the few GPT sectors at either end hold data blocks.
    assert!(
        meta.blocks() * 512 <= 2 * MIB,
        "{} has {} allocated bytes",
        path.display(),
        meta.blocks() * 512
    );
}

fn assert_reads_back(table: &GptTable, layout: &Layout) {
    assert_eq!(table.differences_from(layout), Vec::<String>::new());
    assert_eq!(table.problems(), Vec::<String>::new());
    let names: Vec<&str> = table.partitions.iter().map(|p| p.name.as_str()).collect();
    let want: Vec<&str> = layout.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, want);
}

#[test]
fn builtin_layouts_pass_sfdisk_and_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    for os in OsKind::ALL {
        let layout = os.layout();
        let image = dir.path().join(format!("{os}.img"));
        let size = write_gpt_image(&image, &layout, WriteOptions::default()).unwrap();
        assert_eq!(size, layout.disk_size);
        assert_eq!(std::fs::metadata(&image).unwrap().len(), size);
        assert_sparse(&image);

        check_with_sfdisk(&image, &layout, size);
        check_with_sgdisk(&image);
        assert_reads_back(&read_gpt_image(&image).unwrap(), &layout);

        // Written again (to a new file and over the old one): the same bytes.
        let again = dir.path().join(format!("{os}-again.img"));
        write_gpt_image(&again, &layout, WriteOptions::default()).unwrap();
        assert_eq!(gpt_regions(&image), gpt_regions(&again), "{os}");
        let forced = WriteOptions {
            size: None,
            force: true,
        };
        write_gpt_image(&image, &layout, forced).unwrap();
        assert_eq!(gpt_regions(&image), gpt_regions(&again), "{os}");
        assert_sparse(&again);
        std::fs::remove_file(&image).unwrap();
        std::fs::remove_file(&again).unwrap();
    }
}

/// The `sfdisk` script IC's image build feeds `sfdisk`, plus partition names.
fn sfdisk_script(layout: &Layout) -> String {
    let mut script = format!("label: gpt\nlabel-id: {}\n", layout.disk_guid);
    for p in &layout.partitions {
        script.push_str(&format!(
            "start={},size={},type={},uuid={},name={}\n",
            p.start,
            p.size,
            p.kind.type_guid(),
            p.uuid,
            p.name
        ));
    }
    script
}

#[test]
fn bytes_equal_what_sfdisk_writes() {
    let dir = tempfile::tempdir().unwrap();
    for os in OsKind::ALL {
        let layout = os.layout();
        let ours = dir.path().join("ours.img");
        let theirs = dir.path().join("theirs.img");
        write_gpt_image(&ours, &layout, WriteOptions::default()).unwrap();
        File::create(&theirs)
            .unwrap()
            .set_len(layout.disk_size)
            .unwrap();
        run(
            &sfdisk(),
            &[
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                theirs.to_str().unwrap(),
            ],
            Some(&sfdisk_script(&layout)),
        );
        assert_eq!(gpt_regions(&ours), gpt_regions(&theirs), "{os}");
        std::fs::remove_file(&ours).unwrap();
        std::fs::remove_file(&theirs).unwrap();
    }
}

#[test]
fn a_custom_size_moves_the_backup_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OsKind::SetupOs.layout();
    let size = layout.disk_size + 64 * MIB;
    let image = dir.path().join("big.img");
    let opts = WriteOptions {
        size: Some(size),
        force: false,
    };
    write_gpt_image(&image, &layout, opts).unwrap();
    check_with_sfdisk(&image, &layout, size);
    check_with_sgdisk(&image);
    let table = read_gpt_image(&image).unwrap();
    assert_eq!(table.backup.lba, size / 512 - 1);
    assert_reads_back(&table, &layout);
}

#[test]
fn the_newer_guestos_fixture_writes_too() {
    let csv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guestos-partitions.csv");
    let layout = Layout::from_partitions("guestos-exe", read_partitions_csv(&csv).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("guestos-exe.img");
    write_gpt_image(&image, &layout, WriteOptions::default()).unwrap();
    check_with_sfdisk(&image, &layout, layout.disk_size);
    check_with_sgdisk(&image);
    assert_reads_back(&read_gpt_image(&image).unwrap(), &layout);
}

#[test]
fn reads_an_image_built_the_way_ic_builds_guestos() {
    // IC: sfdisk on the minimal image (no names), then `truncate --size 50G`.
    let layout = OsKind::GuestOs.layout();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ic.img");
    let file = File::create(&image).unwrap();
    file.set_len(layout.ic_image_size()).unwrap();
    let script: String = sfdisk_script(&layout)
        .lines()
        .map(|l| l.split(",name=").next().unwrap_or(l).to_owned() + "\n")
        .collect();
    run(
        &sfdisk(),
        &[
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            image.to_str().unwrap(),
        ],
        Some(&script),
    );
    file.set_len(layout.disk_size).unwrap();
    drop(file);

    let table = read_gpt_image(&image).unwrap();
    assert_eq!(table.disk_guid, IC_LABEL_ID);
    assert!(table.primary.valid && table.backup.valid);
    assert_eq!(table.backup.lba, layout.ic_image_size() / 512 - 1);
    assert_eq!(table.problems().len(), 1, "{:?}", table.problems());
    let got: Vec<(u64, u64, Uuid, Uuid, &str)> = table
        .partitions
        .iter()
        .map(|p| (p.start, p.size, p.type_guid, p.uuid, p.name.as_str()))
        .collect();
    let want: Vec<(u64, u64, Uuid, Uuid, &str)> = layout
        .partitions
        .iter()
        .map(|p| (p.start, p.size, p.kind.type_guid(), p.uuid, ""))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn refuses_to_overwrite_and_to_undersize() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OsKind::SetupOs.layout();

    let existing = dir.path().join("existing.img");
    std::fs::write(&existing, b"data").unwrap();
    let err = write_gpt_image(&existing, &layout, WriteOptions::default()).unwrap_err();
    assert!(err.is_bad_input());
    assert_eq!(err.path(), existing);
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"data");

    let small = dir.path().join("small.img");
    let opts = WriteOptions {
        size: Some(100 * MIB),
        force: false,
    };
    let err = write_gpt_image(&small, &layout, opts).unwrap_err();
    assert!(err.is_bad_input());
    assert!(
        !small.exists(),
        "nothing is created for a size that cannot fit"
    );
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("too small for layout setupos"), "{chain}");

    // An empty existing file is fine without force.
    let empty = dir.path().join("empty.img");
    File::create(&empty).unwrap();
    write_gpt_image(&empty, &layout, WriteOptions::default()).unwrap();
    check_with_sgdisk(&empty);

    let err = write_gpt_image(dir.path(), &layout, WriteOptions::default()).unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("not a regular file"), "{err}");
}
