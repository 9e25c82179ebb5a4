//! The run folder: the stick (a private copy of the SetupOS image holding
//! the node provider's inputs and the installer's switches) and the blank
//! target disks.
//!
//! | file | what |
//! |---|---|
//! | `setupos.img` | the stick: the image, extracted from `disk-img.tar.zst` or copied from a raw disk (holes kept) |
//! | `inputs/config.ini` | the stick's own `config.ini`, when other inputs are injected without a new one |
//! | `target-N.img` | blank sparse target disks (raw) |

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use icos_imagefs::Tools;
use icos_setupos::inject::{InjectInputs, PartitionPlace, find_partitions};
use icos_setupos::{Switches, inject, read_switches, write_switches};

use crate::error::Error;
use crate::node::NodeFacts;

/// The disk inside `disk-img.tar.zst`.
pub const DISK_MEMBER: &str = "disk.img";
/// The stick's file in the run folder.
pub const STICK_FILE: &str = "setupos.img";
/// How many target disks by default.
pub const DEFAULT_DISKS: u32 = 2;
/// Their default size: 1100 GiB, just above what the installer calls a
/// large drive.
pub const DEFAULT_DISK_SIZE: u64 = 1100 << 30;
/// The smallest drive the installer installs onto (1 TiB).
pub const LARGE_DRIVE: u64 = 1 << 40;
/// The most target disks a run takes.
pub const MAX_DISKS: u32 = 16;
/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The node provider's inputs for the stick; none given keeps the stick's
/// own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// `config.ini`.
    pub config_ini: Option<PathBuf>,
    /// `deployment.json`.
    pub deployment_json: Option<PathBuf>,
    /// The node operator private key (PEM).
    pub node_operator_key: Option<PathBuf>,
    /// An SSH key file for the admin account, or a folder with `admin`,
    /// `backup`, `readonly`.
    pub ssh_keys: Option<PathBuf>,
}

impl Inputs {
    /// Whether any input is given.
    pub fn any(&self) -> bool {
        self.config_ini.is_some()
            || self.deployment_json.is_some()
            || self.node_operator_key.is_some()
            || self.ssh_keys.is_some()
    }
}

/// What to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareSpec {
    /// The SetupOS image: `disk-img.tar.zst` (or a plain tar) holding
    /// `disk.img`, or a raw disk. Never modified.
    pub image: PathBuf,
    /// The inputs to put onto the stick.
    pub inputs: Inputs,
    /// The installer's switches.
    pub switches: Switches,
    /// How many target disks.
    pub disks: u32,
    /// Their size in bytes.
    pub disk_size: u64,
}

/// A prepared run folder.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The run folder.
    pub dir: PathBuf,
    /// The stick image.
    pub stick: PathBuf,
    /// The target disks, in the machine's order.
    pub targets: Vec<PathBuf>,
    /// The switches as read back from the stick.
    pub switches: Switches,
    /// What the stick says about the node.
    pub node: NodeFacts,
    /// Where the stick's deployment.json came from (for messages).
    pub deployment_source: PathBuf,
    /// Things worth saying before the run.
    pub notes: Vec<String>,
}

/// What kind of file an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A tar, possibly zstd-compressed, holding `disk.img`.
    Archive,
    /// A raw disk.
    Raw,
}

/// Tells an archive from a raw disk by its first bytes.
pub fn image_kind(path: &Path) -> Result<ImageKind, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: format!(
            "{e} (build one with `icos build setupos --out DIR`: DIR/setupos/disk-img.tar.zst)"
        ),
    })?;
    if !meta.is_file() {
        return Err(Error::Image {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(Error::io("reading", path))?;
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    Ok(if head.starts_with(&ZSTD_MAGIC) || is_tar {
        ImageKind::Archive
    } else {
        ImageKind::Raw
    })
}

/// Parses a disk size: a number of bytes, or a number with a binary unit
/// `K`, `M`, `G`, `T` (also `KiB`, `MiB`, `GiB`, `TiB`); `1100G`, `1.5T`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use K, M, G or T, binary)"
            ));
        }
    };
    let bad = || format!("'{text}' is not a size (e.g. 1100G, 1.5T, 4096)");
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(1u64 << shift)
            .ok_or_else(bad)?,
        Some((whole, frac)) => {
            if frac.is_empty() || frac.len() > 6 {
                return Err(bad());
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let scale = 10u64.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            let frac: u64 = frac.parse().map_err(|_| bad())?;
            let unit = 1u128 << shift;
            let total = u128::from(whole) * unit + u128::from(frac) * unit / u128::from(scale);
            u64::try_from(total).map_err(|_| bad())?
        }
    };
    if bytes == 0 {
        return Err(format!("'{text}': a disk needs at least one byte"));
    }
    Ok(bytes)
}

/// A size in words: the largest binary unit that holds it whole
/// (`1100 GiB`), else one decimal of the largest unit below it (`1.5 TiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    if let Some((shift, unit)) = UNITS
        .iter()
        .find(|(shift, _)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
    {
        return format!("{} {unit}", bytes >> shift);
    }
    match UNITS.iter().find(|(shift, _)| bytes >= 1 << shift) {
        Some((shift, unit)) => format!("{:.1} {unit}", bytes as f64 / (1u64 << shift) as f64),
        None => format!("{bytes} B"),
    }
}

/// Copies a raw image into `dest`, keeping its holes.
fn copy_raw(image: &Path, dest: &Path) -> Result<(), Error> {
    let len = std::fs::metadata(image)
        .map_err(Error::io("reading", image))?
        .len();
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(Error::io("creating", dest))?;
    out.set_len(len).map_err(Error::io("sizing", dest))?;
    icos_imagefs::copy_sparse_at(image, &out, dest, 0)?;
    out.sync_all().map_err(Error::io("syncing", dest))?;
    Ok(())
}

/// Extracts `disk.img` of an archive as `dest`.
fn extract(image: &Path, dir: &Path, dest: &Path) -> Result<(), Error> {
    let staging = dir.join("extract");
    std::fs::create_dir(&staging).map_err(Error::io("creating", &staging))?;
    let members =
        icos_sparse_tar::extract_file(image, &staging, &mut |_| {}).map_err(|source| {
            Error::Extract {
                path: image.to_path_buf(),
                source,
            }
        })?;
    if !members.iter().any(|m| m.name == DISK_MEMBER) {
        return Err(Error::Image {
            path: image.to_path_buf(),
            reason: format!(
                "the archive holds no {DISK_MEMBER} (members: {})",
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let disk = staging.join(DISK_MEMBER);
    std::fs::rename(&disk, dest).map_err(Error::io("moving", &disk))?;
    std::fs::remove_dir_all(&staging).map_err(Error::io("removing", &staging))?;
    Ok(())
}

/// Makes `count` blank sparse disks of `size` bytes: `dir/target-N.img`.
pub fn create_targets(dir: &Path, count: u32, size: u64) -> Result<Vec<PathBuf>, Error> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("target-{i}.img"));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(Error::io("creating", &path))?;
            file.set_len(size).map_err(Error::io("sizing", &path))?;
            Ok(path)
        })
        .collect()
}

/// Checks the spec's numbers.
fn check_spec(spec: &PrepareSpec) -> Result<(), Error> {
    if !(1..=MAX_DISKS).contains(&spec.disks) {
        return Err(Error::Value {
            what: "disks",
            reason: format!("{} target disks: give 1 to {MAX_DISKS}", spec.disks),
        });
    }
    if spec.disk_size == 0 || !spec.disk_size.is_multiple_of(512) {
        return Err(Error::Value {
            what: "disk size",
            reason: format!(
                "{} bytes: must be a positive multiple of 512",
                spec.disk_size
            ),
        });
    }
    Ok(())
}

/// Reads the stick's config.ini and deployment.json as the installer will.
fn read_node(
    tools: &Tools,
    stick: &Path,
    config: PartitionPlace,
    data: PartitionPlace,
) -> Result<(String, String), Error> {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let ini = icos_imagefs::read_file_from_vfat(tools, stick, config.offset, "config.ini")?;
    let deployment =
        icos_imagefs::read_file_from_ext4(tools, stick, data.offset, "/deployment.json")?;
    Ok((text(ini), text(deployment)))
}

/// Prepares the run folder `dir` (existing, empty): the stick with the
/// inputs and switches, and the target disks. Checks the numbers and the
/// image before writing anything big. `say` gets a line per step.
pub fn prepare(
    tools: &Tools,
    spec: &PrepareSpec,
    dir: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<Prepared, Error> {
    check_spec(spec)?;
    let kind = image_kind(&spec.image)?;
    let stick = dir.join(STICK_FILE);
    let started = std::time::Instant::now();
    match kind {
        ImageKind::Archive => {
            say(&format!("extracting {} ...", spec.image.display()));
            extract(&spec.image, dir, &stick)?;
        }
        ImageKind::Raw => {
            say(&format!("copying {} ...", spec.image.display()));
            copy_raw(&spec.image, &stick)?;
        }
    }
    say(&format!(
        "stick {} ready in {:.1} s",
        stick.display(),
        started.elapsed().as_secs_f64()
    ));
    let (config, data) = find_partitions(&stick).map_err(|e| Error::Image {
        path: spec.image.clone(),
        reason: e.to_string(),
    })?;

    if spec.inputs.any() {
        let config_ini = match &spec.inputs.config_ini {
            Some(path) => path.clone(),
            None => {
                // Keep the stick's config.ini; inject takes one always.
                let inputs_dir = dir.join("inputs");
                std::fs::create_dir(&inputs_dir).map_err(Error::io("creating", &inputs_dir))?;
                let path = inputs_dir.join("config.ini");
                let bytes =
                    icos_imagefs::read_file_from_vfat(tools, &stick, config.offset, "config.ini")?;
                std::fs::write(&path, bytes).map_err(Error::io("writing", &path))?;
                path
            }
        };
        let injected = inject(
            tools,
            &stick,
            &InjectInputs {
                config_ini,
                node_operator_key: spec.inputs.node_operator_key.clone(),
                ssh_keys: spec.inputs.ssh_keys.clone(),
                deployment_json: spec.inputs.deployment_json.clone(),
            },
        )
        .map_err(|source| Error::Inject {
            stick: stick.clone(),
            source: Box::new(source),
        })?;
        for file in &injected.files {
            say(&format!(
                "put {} onto the stick as {} ({} partition)",
                file.source.display(),
                file.inside,
                file.target.partition_name()
            ));
        }
    }
    write_switches(&stick, &spec.switches)?;
    let switches = read_switches(&stick)?;
    let words = switches.to_cmdline();
    say(&format!(
        "installer switches: {}",
        if words.is_empty() { "all on" } else { &words }
    ));

    let (ini_text, deployment_text) = read_node(tools, &stick, config, data)?;
    let node = NodeFacts::parse(&ini_text, &deployment_text);
    let deployment_source = spec.inputs.deployment_json.clone().unwrap_or_else(|| {
        PathBuf::from(format!("{}:/data/deployment.json", spec.image.display()))
    });

    let mut notes = Vec::new();
    if spec.disk_size < LARGE_DRIVE {
        notes.push(format!(
            "target disks of {} are below the {} the installer takes as a large drive",
            format_size(spec.disk_size),
            format_size(LARGE_DRIVE)
        ));
    }
    let targets = create_targets(dir, spec.disks, spec.disk_size)?;
    say(&format!(
        "{} blank target disk(s) of {} (sparse)",
        targets.len(),
        format_size(spec.disk_size)
    ));
    Ok(Prepared {
        dir: dir.to_path_buf(),
        stick,
        targets,
        switches,
        node,
        deployment_source,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1100G"), Ok(1100 << 30));
        assert_eq!(parse_size("1100GiB"), Ok(1100 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        for bad in ["", "G", "1.G", "0", "12X", "1e9", "99999999999T", "1..5T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1100 << 30), "1100 GiB");
        assert_eq!(format_size(3 << 39), "1536 GiB");
        assert_eq!(format_size((3 << 39) + 1), "1.5 TiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn archives_and_raw_disks_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert_eq!(image_kind(&raw).unwrap(), ImageKind::Raw);
        let zst = dir.path().join("disk-img.tar.zst");
        std::fs::write(&zst, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap();
        assert_eq!(image_kind(&zst).unwrap(), ImageKind::Archive);
        let e = image_kind(&dir.path().join("missing")).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("icos build setupos"), "{e}");
        assert!(
            image_kind(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
    }

    #[test]
    fn targets_are_blank_sparse_files() {
        let dir = tempfile::tempdir().unwrap();
        let targets = create_targets(dir.path(), 2, 1 << 40).unwrap();
        assert_eq!(targets.len(), 2);
        for t in &targets {
            let meta = std::fs::metadata(t).unwrap();
            assert_eq!(meta.len(), 1 << 40);
            assert_eq!(std::os::unix::fs::MetadataExt::blocks(&meta), 0);
        }
        // Never over an existing file.
        assert!(create_targets(dir.path(), 1, 4096).is_err());
    }

    #[test]
    fn bad_numbers_are_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools::discover().unwrap();
        for (disks, size) in [(0, 1 << 40), (17, 1 << 40), (2, 1000)] {
            let spec = PrepareSpec {
                image: dir.path().join("none"),
                inputs: Inputs::default(),
                switches: Switches::default(),
                disks,
                disk_size: size,
            };
            let e = prepare(&tools, &spec, dir.path(), &mut |_| {}).unwrap_err();
            assert!(matches!(e, Error::Value { .. }), "{e}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
