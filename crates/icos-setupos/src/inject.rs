//! Writing a node provider's inputs into a SetupOS disk image (or the USB
//! stick it was written to), without mounting anything.
//!
//! | input | partition | path inside |
//! |---|---|---|
//! | `config.ini` | CONFIG (FAT) | `config.ini` |
//! | node operator key | CONFIG (FAT) | `node_operator_private_key.pem` |
//! | SSH key file, or folder with `admin`/`backup`/`readonly` | CONFIG (FAT) | `ssh_authorized_keys/admin` (...) |
//! | `deployment.json` | data (ext4) | `deployment.json` |
//!
//! Order of work: every input is read and checked with the rules of
//! `icos-setupos-config` and every problem is reported together; then the
//! GPT is read and the two partitions are checked to hold a FAT and an ext4
//! filesystem. Only then is anything written: the FAT files with mtools
//! (`mcopy -i IMAGE@@OFFSET`), the ext4 file with `debugfs -w`
//! (`IMAGE?offset=OFFSET`), replacing files of the same name. The image is
//! fsynced, and each file is read back and compared byte for byte.
//!
//! mtools rather than the `fatfs` crate: mtools already makes and reads
//! these filesystems in `icos-imagefs` (so one implementation writes and
//! reads them), handles long names and the FAT12/16/32 variants, and works
//! on a partition inside a disk image or device by offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_imagefs::{
    ImageFsError, Tools, ext4_file_exists, read_file_from_ext4, read_file_from_vfat,
};
use icos_layout::{SECTOR_SIZE, read_gpt_image};
use icos_setupos_config::{
    Problems, load_config_ini, load_deployment_json, load_node_operator_key, load_ssh_keys,
    ssh_keys::check_authorized_keys,
};

/// The two filesystems that take inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The FAT CONFIG partition (GPT name `config`).
    Config,
    /// The ext4 data partition (GPT name `data`).
    Data,
}

impl Target {
    /// The GPT partition name.
    pub fn partition_name(self) -> &'static str {
        match self {
            Target::Config => "config",
            Target::Data => "data",
        }
    }
}

/// One file to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Which filesystem.
    pub target: Target,
    /// The path inside it (`ssh_authorized_keys/admin`).
    pub inside: String,
    /// The file to copy.
    pub source: PathBuf,
}

/// The node provider's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectInputs {
    /// `config.ini`.
    pub config_ini: PathBuf,
    /// The node operator private key (PEM).
    pub node_operator_key: Option<PathBuf>,
    /// An `authorized_keys` file for the admin account, or a folder with
    /// `admin`, `backup` and `readonly` files.
    pub ssh_keys: Option<PathBuf>,
    /// `deployment.json`.
    pub deployment_json: Option<PathBuf>,
}

/// Why the inputs could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Some input breaks a rule; nothing was written.
    #[error("{0}")]
    Inputs(Problems),
    /// The image is not a SetupOS image; nothing was written.
    #[error("{image}: not a SetupOS image: {reason}")]
    NotSetupOs {
        /// The image.
        image: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A tool failed or a file could not be read or written.
    #[error(transparent)]
    ImageFs(#[from] ImageFsError),
    /// An I/O step failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A write tool reported a problem.
    #[error("{image}: writing {inside} into the {partition} partition failed: {detail}")]
    Write {
        /// The image.
        image: PathBuf,
        /// The partition.
        partition: &'static str,
        /// The path inside.
        inside: String,
        /// What the tool said.
        detail: String,
    },
    /// A file read back differs from its source.
    #[error("{image}: {inside} in the {partition} partition reads back different from {}", file.display())]
    Mismatch {
        /// The image.
        image: PathBuf,
        /// The partition.
        partition: &'static str,
        /// The path inside.
        inside: String,
        /// The source file.
        file: PathBuf,
    },
}

impl InjectError {
    /// True when the inputs or the image are at fault (the image is
    /// untouched), false when writing failed.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            InjectError::Inputs(_) | InjectError::NotSetupOs { .. }
        )
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InjectError {
    let path = path.to_path_buf();
    move |source| InjectError::Io {
        action,
        path,
        source,
    }
}

/// Checks every input with the SetupOS config rules and says where each
/// file goes. Every problem of every input is returned together.
pub fn plan_placements(inputs: &InjectInputs) -> Result<Vec<Placement>, Problems> {
    let mut problems = Problems::new();
    let mut out = Vec::new();
    let mut place = |target, inside: &str, source: &Path| {
        out.push(Placement {
            target,
            inside: inside.to_string(),
            source: source.to_path_buf(),
        });
    };
    match load_config_ini(&inputs.config_ini) {
        Ok(_) => place(Target::Config, "config.ini", &inputs.config_ini),
        Err(p) => problems.extend(p),
    }
    if let Some(key) = &inputs.node_operator_key {
        match load_node_operator_key(key) {
            Ok(_) => place(Target::Config, "node_operator_private_key.pem", key),
            Err(p) => problems.extend(p),
        }
    }
    if let Some(keys) = &inputs.ssh_keys {
        if keys.is_dir() {
            match load_ssh_keys(keys) {
                Ok(found) => {
                    for file in &found.files {
                        place(
                            Target::Config,
                            &format!("ssh_authorized_keys/{}", file.account),
                            &file.path,
                        );
                    }
                }
                Err(p) => problems.extend(p),
            }
        } else {
            let checked = std::fs::read(keys)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|b| String::from_utf8(b).map_err(|e| format!("is not UTF-8 text: {e}")));
            match checked {
                Err(why) => problems.push(icos_setupos_config::Problem::whole(why).in_file(keys)),
                Ok(text) => match check_authorized_keys(&text) {
                    Ok(_) => place(Target::Config, "ssh_authorized_keys/admin", keys),
                    Err(p) => problems.extend(p.in_file(keys)),
                },
            }
        }
    }
    if let Some(deployment) = &inputs.deployment_json {
        match load_deployment_json(deployment) {
            Ok(_) => place(Target::Data, "deployment.json", deployment),
            Err(p) => problems.extend(p),
        }
    }
    problems.into_result(out)
}

/// Where a partition is in the image, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPlace {
    /// Byte offset of the partition.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Finds the CONFIG and data partitions of the SetupOS image by their GPT
/// names and checks that they hold a FAT and an ext4 filesystem.
pub fn find_partitions(image: &Path) -> Result<(PartitionPlace, PartitionPlace), InjectError> {
    let not = |reason: String| InjectError::NotSetupOs {
        image: image.to_path_buf(),
        reason,
    };
    let table = read_gpt_image(image).map_err(|e| match e {
        icos_layout::ImageError::Io { .. } => not(format!("{e:#}")),
        other => not(format!("no readable GPT ({})", error_chain(&other))),
    })?;
    let mut file = File::open(image).map_err(io("opening", image))?;
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(io("measuring", image))?;
    let mut places = Vec::new();
    for target in [Target::Config, Target::Data] {
        let name = target.partition_name();
        let entry = table
            .partition(name)
            .ok_or_else(|| not(format!("the GPT has no partition named '{name}'")))?;
        let place = PartitionPlace {
            offset: entry.start * SECTOR_SIZE,
            size: entry.size * SECTOR_SIZE,
        };
        if place.offset + place.size > len {
            return Err(not(format!(
                "partition '{name}' ends at byte {}, past the end of the image ({len} bytes)",
                place.offset + place.size
            )));
        }
        match target {
            Target::Config => {
                let mut boot = [0u8; 512];
                read_at(&mut file, place.offset, &mut boot)
                    .map_err(io("reading the CONFIG boot sector of", image))?;
                let fat = boot[510..512] == [0x55, 0xaa]
                    && (boot[54..57] == *b"FAT" || boot[82..87] == *b"FAT32");
                if !fat {
                    return Err(not(format!("partition '{name}' holds no FAT filesystem")));
                }
            }
            Target::Data => {
                let mut magic = [0u8; 2];
                read_at(&mut file, place.offset + 1024 + 56, &mut magic)
                    .map_err(io("reading the data superblock of", image))?;
                if magic != [0x53, 0xef] {
                    return Err(not(format!(
                        "partition '{name}' holds no ext2/3/4 filesystem"
                    )));
                }
            }
        }
        places.push(place);
    }
    Ok((places[0], places[1]))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs a write tool; anything on stderr other than a version banner is a
/// failure.
fn run_tool(mut cmd: Command, fail: impl Fn(String) -> InjectError) -> Result<(), InjectError> {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLS_NO_VFAT", "0")
        .env("MTOOLS_LOWER_CASE", "0")
        .env("MTOOLS_NAME_NUMERIC_TAIL", "1");
    let out = cmd
        .output()
        .map_err(|e| fail(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(fail(format!("{} ({})", complaints.join("; "), out.status)));
    }
    Ok(())
}

/// Whether `path` exists in the FAT filesystem (`mdir` finds it).
fn vfat_exists(tools: &Tools, mtools_image: &str, path: &str) -> bool {
    Command::new(&tools.mdir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-b", "-i", mtools_image, &format!("::/{path}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Each file, in the order written.
    pub files: Vec<Placement>,
}

/// Checks the inputs and the image, then writes the inputs into the image
/// in place, syncs it and verifies every file by reading it back. Nothing
/// is written when an input or the image is at fault.
pub fn inject(tools: &Tools, image: &Path, inputs: &InjectInputs) -> Result<Injected, InjectError> {
    let placements = plan_placements(inputs).map_err(InjectError::Inputs)?;
    write_placements(tools, image, placements)
}

/// The second half of [`inject`]: checks the image, then writes files
/// already checked by [`plan_placements`], syncs and verifies them.
pub fn write_placements(
    tools: &Tools,
    image: &Path,
    placements: Vec<Placement>,
) -> Result<Injected, InjectError> {
    let (config, data) = find_partitions(image)?;
    let image_text = image.to_string_lossy();
    if image_text.contains('?') {
        return Err(InjectError::NotSetupOs {
            image: image.to_path_buf(),
            reason: "debugfs cannot open a path containing '?'; rename the image".into(),
        });
    }
    let mtools_image = format!("{image_text}@@{}", config.offset);
    let debugfs_target = format!("{image_text}?offset={}", data.offset);

    for p in &placements {
        let fail = |detail: String| InjectError::Write {
            image: image.to_path_buf(),
            partition: p.target.partition_name(),
            inside: p.inside.clone(),
            detail,
        };
        tracing::info!(
            "writing {} to {} in the {} partition",
            p.source.display(),
            p.inside,
            p.target.partition_name()
        );
        match p.target {
            Target::Config => {
                if let Some((dir, _)) = p.inside.rsplit_once('/')
                    && !vfat_exists(tools, &mtools_image, dir)
                {
                    let mut mmd = Command::new(&tools.mmd);
                    mmd.args(["-i", &mtools_image, &format!("::/{dir}")]);
                    run_tool(mmd, fail)?;
                }
                let mut mcopy = Command::new(&tools.mcopy);
                mcopy
                    .args(["-D", "o", "-i", &mtools_image])
                    .arg(&p.source)
                    .arg(format!("::/{}", p.inside));
                run_tool(mcopy, fail)?;
            }
            Target::Data => {
                let source = p.source.to_string_lossy();
                if source.contains(['"', '\n']) || p.inside.contains(['"', '\n']) {
                    return Err(fail("a path holds a quote or newline".into()));
                }
                let inside = format!("/{}", p.inside);
                let mut script = String::new();
                if ext4_file_exists(tools, image, data.offset, &p.inside)? {
                    script.push_str(&format!("rm \"{inside}\"\n"));
                }
                script.push_str(&format!(
                    "write \"{source}\" \"{inside}\"\n\
                     sif \"{inside}\" mode 0100644\n\
                     sif \"{inside}\" uid 0\n\
                     sif \"{inside}\" gid 0\n"
                ));
                let dir = tempfile::tempdir()
                    .map_err(io("creating a temporary directory", Path::new("/tmp")))?;
                let cmds = dir.path().join("debugfs.cmds");
                std::fs::write(&cmds, script).map_err(io("writing", &cmds))?;
                let mut debugfs = Command::new(&tools.debugfs);
                debugfs.arg("-w").arg("-f").arg(&cmds).arg(&debugfs_target);
                run_tool(debugfs, fail)?;
            }
        }
    }
    OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", image))?;

    for p in &placements {
        let want = std::fs::read(&p.source).map_err(io("reading", &p.source))?;
        let got = match p.target {
            Target::Config => read_file_from_vfat(tools, image, config.offset, &p.inside)?,
            Target::Data => read_file_from_ext4(tools, image, data.offset, &p.inside)?,
        };
        if got != want {
            return Err(InjectError::Mismatch {
                image: image.to_path_buf(),
                partition: p.target.partition_name(),
                inside: p.inside.clone(),
                file: p.source.clone(),
            });
        }
    }
    Ok(Injected { files: placements })
}
