//! FAT images with `mkfs.vfat` and mtools, read back with `mcopy`.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::cmd::Cmd;
use crate::error::ImageFsError;
use crate::ext4::{create_sparse, sync_file};
use crate::tools::Tools;

/// Images of at least this size are made FAT32 (like an ESP); smaller ones
/// get the FAT12/FAT16 mkfs.vfat picks for their size.
pub const FAT32_MIN_SIZE: u64 = 64 << 20;

/// Largest FAT label, in bytes.
const MAX_LABEL: usize = 11;

/// The parameters of a FAT image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfatSpec {
    /// Image size in bytes; a multiple of 512 of at least 1 MiB. From
    /// [`FAT32_MIN_SIZE`] up the filesystem is FAT32.
    pub size_bytes: u64,
    /// Volume label: at most 11 bytes of printable ASCII.
    pub label: String,
    /// Volume id (serial number), shown by tools as `XXXX-XXXX`.
    pub volume_id: u32,
    /// `SOURCE_DATE_EPOCH`: the date of every directory and file created.
    /// Dates before 1980-01-01, the earliest a FAT entry can hold, are
    /// stored as 1980-01-01 00:00:00 UTC.
    pub epoch: u64,
}

/// 1980-01-01 00:00:00 UTC, the earliest FAT date.
pub const FAT_EPOCH_MIN: u64 = 315_532_800;

fn check_spec(spec: &VfatSpec) -> Result<(), ImageFsError> {
    if spec.size_bytes < (1 << 20) || !spec.size_bytes.is_multiple_of(512) {
        return Err(ImageFsError::invalid(
            "vfat size",
            format!(
                "{} bytes is not a multiple of 512 of at least 1 MiB",
                spec.size_bytes
            ),
        ));
    }
    if spec.label.is_empty()
        || spec.label.len() > MAX_LABEL
        || !spec.label.bytes().all(|b| (0x20..0x7f).contains(&b))
        || spec.label.contains([
            '"', '*', '+', ',', '.', '/', ':', ';', '<', '=', '>', '?', '[', '\\', ']', '|',
        ])
    {
        return Err(ImageFsError::invalid(
            "vfat label",
            format!(
                "{:?} is not 1 to {MAX_LABEL} printable ASCII characters without FAT-reserved ones",
                spec.label
            ),
        ));
    }
    Ok(())
}

/// Splits and checks a path inside the image: relative, `/`-separated, no
/// empty, `.` or `..` components, no backslashes or control characters.
fn components(path: &str) -> Result<Vec<&str>, ImageFsError> {
    let bad =
        |why: &str| ImageFsError::invalid("path inside the vfat image", format!("{path:?}: {why}"));
    let parts: Vec<&str> = path.split('/').collect();
    if path.is_empty() || path.starts_with('/') {
        return Err(bad("must be relative and not empty"));
    }
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(bad("empty, `.` or `..` component"));
        }
        if p.contains(['\\', ':', '*', '?', '"', '<', '>', '|']) || p.chars().any(char::is_control)
        {
            return Err(bad("holds a character FAT cannot store"));
        }
    }
    Ok(parts)
}

/// The mtools image argument for a filesystem at `offset` in `image`.
fn mtools_image(image: &Path, offset: u64) -> std::ffi::OsString {
    let mut s = image.as_os_str().to_os_string();
    if offset != 0 {
        s.push(format!("@@{offset}"));
    }
    s
}

fn mtools(program: &Path, epoch: Option<u64>) -> Cmd {
    let cmd = Cmd::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLS_NO_VFAT", "0")
        .env("MTOOLS_LOWER_CASE", "0")
        .env("MTOOLS_NAME_NUMERIC_TAIL", "1")
        .env("MTOOLS_TWENTY_FOUR_HOUR_CLOCK", "1");
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e.to_string()),
        None => cmd,
    }
}

/// Writes `volume_id` into the boot sector (and, on FAT32, its backup copy):
/// `mkfs.vfat --invariant` always writes 1234-ABCD.
fn set_volume_id(image: &Path, volume_id: u32) -> Result<(), ImageFsError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(ImageFsError::io("opening", image))?;
    let mut boot = [0u8; 512];
    f.read_exact(&mut boot)
        .map_err(ImageFsError::io("reading the boot sector of", image))?;
    let fat_sectors_16 = u16::from_le_bytes([boot[22], boot[23]]);
    let bytes_per_sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let id = volume_id.to_le_bytes();
    let mut places = Vec::new();
    if fat_sectors_16 == 0 {
        // FAT32: extended BPB at 0x40, id at 0x43; backup boot sector number at 0x32.
        places.push(0x43);
        let backup = u64::from(u16::from_le_bytes([boot[0x32], boot[0x33]]));
        if backup != 0 && backup != 0xffff {
            places.push(backup * bytes_per_sector + 0x43);
        }
    } else {
        places.push(0x27);
    }
    for at in places {
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.write_all(&id))
            .map_err(ImageFsError::io("writing the volume id of", image))?;
    }
    Ok(())
}

/// Makes the FAT image `out` (replacing any file there) holding `files`
/// (path inside the image, source file), deterministically:
/// `mkfs.vfat [-F 32] -S 512 -n LABEL --invariant`, the volume id written
/// into the boot sector, then `mmd` for every parent directory and `mcopy`
/// for every file, both in sorted order, with `SOURCE_DATE_EPOCH`. Two paths
/// that differ only in case are refused (FAT does not tell them apart).
pub fn make_vfat(
    tools: &Tools,
    spec: &VfatSpec,
    files: &[(String, PathBuf)],
    out: &Path,
) -> Result<(), ImageFsError> {
    check_spec(spec)?;
    let mut dirs = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut sorted: Vec<(&str, &Path)> = Vec::with_capacity(files.len());
    for (inside, source) in files {
        let parts = components(inside)?;
        if !seen.insert(inside.to_ascii_uppercase()) {
            return Err(ImageFsError::invalid(
                "path inside the vfat image",
                format!("{inside:?} is given twice (FAT names ignore case)"),
            ));
        }
        for n in 1..parts.len() {
            dirs.insert(parts[..n].join("/"));
        }
        if !source.is_file() {
            return Err(ImageFsError::Unsupported {
                path: source.clone(),
                reason: format!(
                    "not a regular file (meant for {inside:?} in {})",
                    out.display()
                ),
            });
        }
        sorted.push((inside, source));
    }
    if let Some(clash) = dirs.iter().find(|d| seen.contains(&d.to_ascii_uppercase())) {
        return Err(ImageFsError::invalid(
            "path inside the vfat image",
            format!("{clash:?} is both a file and a directory"),
        ));
    }
    sorted.sort();

    let epoch = spec.epoch.max(FAT_EPOCH_MIN);
    create_sparse(out, spec.size_bytes)?;
    let mut mkfs = Cmd::new(&tools.mkfs_vfat).env("SOURCE_DATE_EPOCH", epoch.to_string());
    if spec.size_bytes >= FAT32_MIN_SIZE {
        mkfs = mkfs.args(["-F", "32"]);
    }
    mkfs.args(["-S", "512", "-n"])
        .arg(&spec.label)
        .arg("--invariant")
        .arg(out)
        .run()?;
    set_volume_id(out, spec.volume_id)?;

    let img = mtools_image(out, 0);
    // BTreeSet order puts every parent before its children.
    for dir in &dirs {
        mtools(&tools.mmd, Some(epoch))
            .arg("-i")
            .arg(&img)
            .arg(format!("::/{dir}"))
            .run()?;
    }
    for (inside, source) in sorted {
        mtools(&tools.mcopy, Some(epoch))
            .arg("-i")
            .arg(&img)
            .arg(source)
            .arg(format!("::/{inside}"))
            .run()?;
    }
    sync_file(out)
}

/// Reads the file `path` (e.g. `EFI/BOOT/BOOTX64.EFI`) out of the FAT
/// filesystem at byte `offset` of `image` (0 for a partition image) with
/// `mcopy -n -i IMAGE@@OFFSET ::/PATH -`, without mounting.
pub fn read_file_from_vfat(
    tools: &Tools,
    image: &Path,
    offset: u64,
    path: &str,
) -> Result<Vec<u8>, ImageFsError> {
    components(path)?;
    let cmd = mtools(&tools.mcopy, None)
        .arg("-n")
        .arg("-i")
        .arg(mtools_image(image, offset))
        .arg(format!("::/{path}"))
        .arg("-");
    let out = cmd.run_unchecked()?;
    let stderr = out.stderr_text();
    if !out.status.success() || stderr.contains("not found") {
        if stderr.contains("not found") || stderr.contains("No such file") {
            return Err(ImageFsError::FileNotFound {
                image: image.to_path_buf(),
                offset,
                path: path.to_string(),
                detail: stderr.trim().to_string(),
            });
        }
        return Err(cmd.failure(&out).into());
    }
    Ok(out.stdout)
}

/// Every file and directory in the FAT filesystem at byte `offset` of
/// `image`, as `/`-separated paths without a leading slash, sorted
/// (`mdir -/ -b`).
pub fn list_vfat(tools: &Tools, image: &Path, offset: u64) -> Result<Vec<String>, ImageFsError> {
    let cmd = mtools(&tools.mdir, None)
        .args(["-/", "-b", "-i"])
        .arg(mtools_image(image, offset))
        .arg("::/");
    let out = cmd.run()?;
    let mut paths: Vec<String> = out
        .stdout_text()
        .lines()
        .filter_map(|l| l.strip_prefix("::/"))
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_are_checked() {
        assert_eq!(
            components("EFI/BOOT/BOOTX64.EFI").unwrap(),
            ["EFI", "BOOT", "BOOTX64.EFI"]
        );
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "a\\b", "a:b"] {
            assert!(components(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_rules() {
        let ok = VfatSpec {
            size_bytes: 8 << 20,
            label: "ESP".into(),
            volume_id: 1,
            epoch: 1_700_000_000,
        };
        assert!(check_spec(&ok).is_ok());
        for bad in [
            VfatSpec {
                label: "TWELVE_CHARS".into(),
                ..ok.clone()
            },
            VfatSpec {
                label: "A.B".into(),
                ..ok.clone()
            },
            VfatSpec {
                size_bytes: 1000,
                ..ok.clone()
            },
        ] {
            assert!(check_spec(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mtools_offsets() {
        assert_eq!(mtools_image(Path::new("d.img"), 0), "d.img");
        assert_eq!(mtools_image(Path::new("d.img"), 1048576), "d.img@@1048576");
    }
}
