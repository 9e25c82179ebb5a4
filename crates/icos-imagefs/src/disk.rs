//! Whole disk images: the layout's GPT plus partition images at their offsets.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use icos_layout::{Layout, WriteOptions, write_gpt_image};

use crate::error::ImageFsError;

/// Granularity of hole detection: an all-zero, 4096-byte aligned block of an
/// image is not written (it stays a hole of the new disk).
const ZERO_BLOCK: usize = 4096;
/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

fn data_segments(file: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut segments = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: scan everything.
            Err(_) => return vec![(0, len)],
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(_) => return vec![(0, len)],
        };
        if end <= start {
            break;
        }
        segments.push((start, end));
        pos = end;
    }
    segments
}

/// Copies the file at `src` into `dst` at byte `offset`, skipping holes
/// (`SEEK_DATA`/`SEEK_HOLE`) and all-zero 4096-byte blocks, so that `dst`
/// keeps a hole wherever the image is zero (`dst` is expected to be zero
/// there already, e.g. a fresh sparse file). Returns the bytes written.
pub fn copy_sparse_at(
    src: &Path,
    dst: &File,
    dst_path: &Path,
    offset: u64,
) -> Result<u64, ImageFsError> {
    let file = File::open(src).map_err(ImageFsError::io("opening", src))?;
    let len = file
        .metadata()
        .map_err(ImageFsError::io("reading metadata of", src))?
        .len();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    for (seg_start, seg_end) in data_segments(&file, len) {
        // Align the segment start down so zero blocks are judged on the
        // image's own 4096-byte grid.
        let mut pos = seg_start - seg_start % ZERO_BLOCK as u64;
        while pos < seg_end {
            let want = usize::try_from((seg_end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            let got = file
                .read_at(&mut buf[..want], pos)
                .map_err(ImageFsError::io("reading", src))?;
            if got == 0 {
                break;
            }
            for (i, block) in buf[..got].chunks(ZERO_BLOCK).enumerate() {
                if block.iter().all(|&b| b == 0) {
                    continue;
                }
                let at = pos + (i * ZERO_BLOCK) as u64;
                dst.write_all_at(block, offset + at)
                    .map_err(ImageFsError::io("writing", dst_path))?;
                written += block.len() as u64;
            }
            pos += got as u64;
        }
    }
    Ok(written)
}

/// Finds where `name` goes: a GPT partition, or else a logical volume of the
/// layout's LVM (inside its physical-volume partition). Returns the byte
/// offset and size.
fn place(layout: &Layout, name: &str) -> Option<(u64, u64)> {
    if let Some(p) = layout.partition(name) {
        return Some((p.offset_bytes(), p.size_bytes()));
    }
    layout.volume_byte_range(name)
}

/// Builds the sparse disk image `out` (replacing any file there atomically):
/// a file of `layout.disk_size` bytes with the layout's GPT
/// ([`icos_layout::write_gpt_image`]), and each `(partition name, image)`
/// copied at its partition's offset with holes preserved. A name that is not
/// a partition may name a logical volume of the layout's LVM. An image larger
/// than its partition, an unknown name or a name given twice is refused
/// before anything is written. The file is fsynced, renamed into place and
/// its directory fsynced.
pub fn assemble_disk(
    layout: &Layout,
    images: &[(&str, &Path)],
    out: &Path,
) -> Result<(), ImageFsError> {
    let mut placed = Vec::with_capacity(images.len());
    let mut seen = BTreeSet::new();
    for &(name, image) in images {
        if !seen.insert(name) {
            return Err(ImageFsError::DuplicatePartition {
                name: name.to_string(),
            });
        }
        let (offset, size) = place(layout, name).ok_or_else(|| ImageFsError::UnknownPartition {
            layout: layout.name.clone(),
            name: name.to_string(),
            image: image.to_path_buf(),
        })?;
        let image_size = std::fs::metadata(image)
            .map_err(ImageFsError::io("reading metadata of", image))?
            .len();
        if image_size > size {
            return Err(ImageFsError::ImageTooLarge {
                name: name.to_string(),
                image: image.to_path_buf(),
                image_size,
                partition_size: size,
            });
        }
        placed.push((name, image, offset));
    }

    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".icos-disk-")
        .tempfile_in(dir)
        .map_err(ImageFsError::io("creating a temporary file in", dir))?;
    write_gpt_image(
        tmp.path(),
        layout,
        WriteOptions {
            size: None,
            force: true,
        },
    )
    .map_err(|source| ImageFsError::Gpt {
        layout: layout.name.clone(),
        source,
    })?;
    let disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .map_err(ImageFsError::io("opening", tmp.path()))?;
    for (name, image, offset) in placed {
        let written = copy_sparse_at(image, &disk, out, offset)?;
        tracing::debug!(partition = name, image = %image.display(), offset, written, "image placed");
    }
    disk.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(ImageFsError::io("setting the permissions of", tmp.path()))?;
    disk.sync_all()
        .map_err(ImageFsError::io("syncing", tmp.path()))?;
    drop(disk);
    tmp.persist(out).map_err(|e| ImageFsError::Io {
        action: "renaming a temporary file to",
        path: out.to_path_buf(),
        source: e.error,
    })?;
    icos_fs::sync_dir(dir).map_err(|e| ImageFsError::Io {
        action: "syncing the directory of",
        path: out.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(())
}
