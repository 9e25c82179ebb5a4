//! The FAT side of the media, made and read with dosfstools and mtools,
//! without mounting anything.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::{FAT_EPOCH, MEDIA_LABEL, MediaError, VOLUME_ID};

/// How much of a tool's standard error an error message keeps.
const STDERR_TAIL: usize = 2000;

fn run(program: &str, args: &[&std::ffi::OsStr], hint: &'static str) -> Result<Output, MediaError> {
    let output = spawn(program, args, hint)?;
    if output.status.success() {
        return Ok(output);
    }
    Err(tool_error(program, args, &output))
}

fn spawn(
    program: &str,
    args: &[&std::ffi::OsStr],
    hint: &'static str,
) -> Result<Output, MediaError> {
    Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| MediaError::Spawn {
            program: program.to_owned(),
            hint: if source.kind() == std::io::ErrorKind::NotFound {
                hint
            } else {
                ""
            },
            source,
        })
}

fn tool_error(program: &str, args: &[&std::ffi::OsStr], output: &Output) -> MediaError {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let trimmed = stderr.trim();
    let start = trimmed.len().saturating_sub(STDERR_TAIL);
    let start = (start..trimmed.len())
        .find(|&i| trimmed.is_char_boundary(i))
        .unwrap_or(trimmed.len());
    MediaError::Tool {
        command: std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status,
        stderr: trimmed[start..].to_owned(),
    }
}

const DOSFSTOOLS: &str = " (install the Debian package dosfstools)";
const MTOOLS: &str = " (install the Debian package mtools)";

/// Creates `out` (replacing it) as a FAT file system of `size` bytes
/// labelled [`MEDIA_LABEL`] with volume id [`VOLUME_ID`], holding `files`
/// (name on the media, source file) in its root, every timestamp at
/// [`FAT_EPOCH`].
pub(crate) fn make_fat(size: u64, files: &[(&str, &Path)], out: &Path) -> Result<(), MediaError> {
    let io = |action| {
        move |source| MediaError::Io {
            action,
            path: out.to_owned(),
            source,
        }
    };
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing")(e)),
    }
    let file = std::fs::File::create(out).map_err(io("creating"))?;
    file.set_len(size).map_err(io("sizing"))?;
    drop(file);
    let volume_id = format!("{VOLUME_ID:08X}");
    run(
        "mkfs.vfat",
        &[
            "--invariant".as_ref(),
            "-n".as_ref(),
            MEDIA_LABEL.as_ref(),
            "-i".as_ref(),
            volume_id.as_ref(),
            out.as_os_str(),
        ],
        DOSFSTOOLS,
    )?;
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(FAT_EPOCH);
    for (name, source) in files {
        let handle = std::fs::File::options()
            .write(true)
            .open(source)
            .map_err(|source_err| MediaError::Io {
                action: "opening",
                path: source.to_path_buf(),
                source: source_err,
            })?;
        handle
            .set_times(
                std::fs::FileTimes::new()
                    .set_modified(epoch)
                    .set_accessed(epoch),
            )
            .map_err(|e| MediaError::Io {
                action: "setting the times of",
                path: source.to_path_buf(),
                source: e,
            })?;
        drop(handle);
        let target = format!("::{name}");
        run(
            "mcopy",
            &[
                "-m".as_ref(),
                "-i".as_ref(),
                out.as_os_str(),
                source.as_os_str(),
                target.as_ref(),
            ],
            MTOOLS,
        )?;
    }
    Ok(())
}

/// The paths of every file and folder on the FAT media, relative to its
/// root (`a`, `dir`, `dir/b`), as `mdir -/ -b` lists them.
pub(crate) fn list(media: &Path) -> Result<Vec<String>, MediaError> {
    let args: [&std::ffi::OsStr; 5] = [
        "-/".as_ref(),
        "-b".as_ref(),
        "-i".as_ref(),
        media.as_os_str(),
        "::".as_ref(),
    ];
    let output = spawn("mdir", &args, MTOOLS)?;
    if !output.status.success() {
        // mdir fails on an empty root folder with 'File "::" not found'.
        let empty = output.stdout.is_empty()
            && String::from_utf8_lossy(&output.stderr).contains("not found");
        if empty {
            return Ok(Vec::new());
        }
        return Err(tool_error("mdir", &args, &output));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("::/"))
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The volume label of the FAT media (trailing spaces removed).
pub(crate) fn label(media: &Path) -> Result<String, MediaError> {
    let output = run(
        "mlabel",
        &[
            "-s".as_ref(),
            "-i".as_ref(),
            media.as_os_str(),
            "::".as_ref(),
        ],
        MTOOLS,
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .trim()
        .strip_prefix("Volume label is")
        .map(|l| l.trim().to_owned())
        .unwrap_or_default())
}

/// Copies the file `name` from the root of the FAT media to `dest`.
pub(crate) fn read_file(media: &Path, name: &str, dest: &Path) -> Result<(), MediaError> {
    let source = format!("::{name}");
    run(
        "mcopy",
        &[
            "-n".as_ref(),
            "-i".as_ref(),
            media.as_os_str(),
            source.as_ref(),
            dest.as_os_str(),
        ],
        MTOOLS,
    )?;
    Ok(())
}
