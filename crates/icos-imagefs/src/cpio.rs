//! Deterministic newc (`070701`) cpio archives, the format of an initramfs.
//!
//! [`write_cpio_newc`] archives a directory tree like
//! `find . -mindepth 1 | LC_ALL=C sort | cpio --reproducible -o -H newc -R 0:0`
//! with fixed mtimes: names relative to the root without a leading `./`, in
//! bytewise order; owner 0:0; inode numbers 1, 2, 3… in archive order (hard
//! links share their first one, and the data goes with the last link, as GNU
//! cpio does); device numbers 0; directory link counts computed from the
//! archive itself. Nothing of the host (umask, time, inode numbers, the
//! filesystem's directory order) gets in.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::dirtar::{dev_split, sorted_children};
use crate::error::ImageFsError;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Options of [`write_cpio_newc_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpioOptions {
    /// The mtime of every entry (seconds since 1970); 0 by default.
    pub mtime: u32,
}

/// One member of a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// The name stored, e.g. `bin/busybox` (no leading `/` or `./`).
    pub name: PathBuf,
    /// The inode number stored.
    pub ino: u32,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since 1970.
    pub mtime: u32,
    /// Major number of the device the file was on.
    pub dev_major: u32,
    /// Minor number of the device the file was on.
    pub dev_minor: u32,
    /// Major number of a device node.
    pub rdev_major: u32,
    /// Minor number of a device node.
    pub rdev_minor: u32,
    /// The contents: file data, or a symlink's target.
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    /// Whether the entry is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    /// Whether the entry is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

struct Fields<'a> {
    name: &'a [u8],
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    dev: (u32, u32),
    rdev: (u32, u32),
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn write_header(out: &mut dyn Write, f: &Fields<'_>) -> io::Result<()> {
    let namesize = f.name.len() + 1;
    let mut h = Vec::with_capacity(110 + namesize + 3);
    h.extend_from_slice(MAGIC);
    for v in [
        f.ino, f.mode, f.uid, f.gid, f.nlink, f.mtime, f.size, f.dev.0, f.dev.1, f.rdev.0, f.rdev.1,
    ] {
        h.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    // namesize fits: names are checked to be shorter than u32::MAX by the callers
    h.extend_from_slice(format!("{namesize:08x}").as_bytes());
    h.extend_from_slice(b"00000000");
    h.extend_from_slice(f.name);
    h.push(0);
    h.resize(h.len() + pad4(h.len()), 0);
    out.write_all(&h)
}

fn write_trailer(out: &mut dyn Write) -> io::Result<()> {
    write_header(
        out,
        &Fields {
            name: TRAILER.as_bytes(),
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            dev: (0, 0),
            rdev: (0, 0),
        },
    )
}

fn to_u32(value: u64, path: &Path, what: &str) -> Result<u32, ImageFsError> {
    u32::try_from(value).map_err(|_| ImageFsError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("its {what} ({value}) does not fit a newc header"),
    })
}

/// Writes `entries` exactly as given, then the trailer.
pub fn write_cpio_entries(entries: &[CpioEntry], mut out: impl Write) -> Result<(), ImageFsError> {
    let werr = |name: &Path| {
        let name = name.to_path_buf();
        move |source| ImageFsError::Io {
            action: "writing the cpio entry",
            path: name,
            source,
        }
    };
    for e in entries {
        let size = to_u32(e.data.len() as u64, &e.name, "size")?;
        let name = e.name.as_os_str().as_bytes();
        write_header(
            &mut out,
            &Fields {
                name,
                ino: e.ino,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                nlink: e.nlink,
                mtime: e.mtime,
                size,
                dev: (e.dev_major, e.dev_minor),
                rdev: (e.rdev_major, e.rdev_minor),
            },
        )
        .map_err(werr(&e.name))?;
        out.write_all(&e.data).map_err(werr(&e.name))?;
        out.write_all(&[0u8; 3][..pad4(e.data.len())])
            .map_err(werr(&e.name))?;
    }
    write_trailer(&mut out).map_err(werr(Path::new(TRAILER)))?;
    out.flush().map_err(werr(Path::new(TRAILER)))
}

/// Writes a deterministic newc archive of the tree at `root` with every
/// mtime 0 (see the module docs).
pub fn write_cpio_newc(root: &Path, out: impl Write) -> Result<(), ImageFsError> {
    write_cpio_newc_with(root, out, &CpioOptions::default())
}

struct Planned {
    rel: Vec<u8>,
    path: PathBuf,
    meta: fs::Metadata,
}

fn collect(dir: &Path, prefix: &[u8], into: &mut Vec<Planned>) -> Result<(), ImageFsError> {
    for child in sorted_children(dir)? {
        let path = dir.join(&child);
        let meta =
            fs::symlink_metadata(&path).map_err(ImageFsError::io("reading metadata of", &path))?;
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(child.as_bytes());
        let is_dir = meta.is_dir();
        into.push(Planned {
            rel: rel.clone(),
            path: path.clone(),
            meta,
        });
        if is_dir {
            collect(&path, &rel, into)?;
        }
    }
    Ok(())
}

/// Writes a deterministic newc archive of the tree at `root` (see the module
/// docs), with the given options.
pub fn write_cpio_newc_with(
    root: &Path,
    mut out: impl Write,
    opts: &CpioOptions,
) -> Result<(), ImageFsError> {
    let meta = fs::metadata(root).map_err(ImageFsError::io("reading metadata of", root))?;
    if !meta.is_dir() {
        return Err(ImageFsError::Unsupported {
            path: root.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut plan = Vec::new();
    collect(root, b"", &mut plan)?;
    // Whole-path bytewise order, like `find | LC_ALL=C sort`.
    plan.sort_by(|a, b| a.rel.cmp(&b.rel));

    // Directory link counts from the archive: 2 + subdirectories.
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    for p in plan.iter().filter(|p| p.meta.is_dir()) {
        let parent = match p.rel.iter().rposition(|&c| c == b'/') {
            Some(i) => &p.rel[..i],
            None => &p.rel[..0],
        };
        *subdirs.entry(parent).or_default() += 1;
    }
    // Hard-link groups: (dev, ino) → indices in archive order.
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, p) in plan.iter().enumerate() {
        if p.meta.is_file() && p.meta.nlink() > 1 {
            groups
                .entry((p.meta.dev(), p.meta.ino()))
                .or_default()
                .push(i);
        }
    }

    let mut next_ino: u32 = 1;
    let mut group_ino: HashMap<(u64, u64), u32> = HashMap::new();
    for (i, p) in plan.iter().enumerate() {
        let werr = ImageFsError::io("writing the cpio entry for", &p.path);
        let ft = p.meta.file_type();
        let key = (p.meta.dev(), p.meta.ino());
        let group = groups.get(&key).filter(|_| ft.is_file());
        let ino = match group {
            Some(_) => *group_ino.entry(key).or_insert_with(|| {
                let n = next_ino;
                next_ino += 1;
                n
            }),
            None => {
                let n = next_ino;
                next_ino += 1;
                n
            }
        };
        let (nlink, carries_data) = if ft.is_dir() {
            (
                2 + subdirs.get(p.rel.as_slice()).copied().unwrap_or(0),
                false,
            )
        } else if let Some(members) = group {
            (
                to_u32(members.len() as u64, &p.path, "link count")?,
                members.last() == Some(&i),
            )
        } else {
            (1, ft.is_file() || ft.is_symlink())
        };
        let symlink_target = if ft.is_symlink() {
            Some(
                fs::read_link(&p.path)
                    .map_err(ImageFsError::io("reading the symlink", &p.path))?
                    .into_os_string()
                    .into_vec(),
            )
        } else {
            None
        };
        let size = match (&symlink_target, carries_data) {
            (Some(t), _) => t.len() as u64,
            (None, true) => p.meta.len(),
            (None, false) => 0,
        };
        let rdev = if ft.is_file() || ft.is_dir() || ft.is_symlink() {
            (0, 0)
        } else {
            let (ma, mi) = dev_split(p.meta.rdev());
            (
                to_u32(ma, &p.path, "device major")?,
                to_u32(mi, &p.path, "device minor")?,
            )
        };
        write_header(
            &mut out,
            &Fields {
                name: &p.rel,
                ino,
                mode: p.meta.mode(),
                uid: 0,
                gid: 0,
                nlink,
                mtime: opts.mtime,
                size: to_u32(size, &p.path, "size")?,
                dev: (0, 0),
                rdev,
            },
        )
        .map_err(werr)?;
        if let Some(target) = symlink_target {
            out.write_all(&target)
                .map_err(ImageFsError::io("writing the cpio entry for", &p.path))?;
        } else if size > 0 {
            let file = File::open(&p.path).map_err(ImageFsError::io("opening", &p.path))?;
            let copied = io::copy(&mut file.take(size), &mut out)
                .map_err(ImageFsError::io("copying into the cpio archive", &p.path))?;
            if copied != size {
                return Err(ImageFsError::Unsupported {
                    path: p.path.clone(),
                    reason: format!(
                        "the file shrank from {size} to {copied} bytes while it was read"
                    ),
                });
            }
        }
        // size < 2^32 was checked above, so it fits usize
        let padding = pad4((size % 4) as usize);
        out.write_all(&[0u8; 3][..padding])
            .map_err(ImageFsError::io("writing the cpio entry for", &p.path))?;
    }
    write_trailer(&mut out).map_err(ImageFsError::io("writing the cpio trailer for", root))?;
    out.flush()
        .map_err(ImageFsError::io("writing the cpio archive of", root))
}

fn read_hex(field: &[u8], at: u64) -> Result<u32, ImageFsError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| ImageFsError::Unsupported {
            path: PathBuf::from("<cpio>"),
            reason: format!(
                "bad header field {:?} at byte {at}",
                String::from_utf8_lossy(field)
            ),
        })
}

/// Reads a newc archive up to its trailer and returns its members.
pub fn read_cpio_newc(mut input: impl Read) -> Result<Vec<CpioEntry>, ImageFsError> {
    let rerr = ImageFsError::io;
    let mut entries = Vec::new();
    let mut pos: u64 = 0;
    loop {
        let mut h = [0u8; 110];
        input
            .read_exact(&mut h)
            .map_err(rerr("reading a cpio header from", "<cpio>"))?;
        if &h[..6] != MAGIC {
            return Err(ImageFsError::Unsupported {
                path: PathBuf::from("<cpio>"),
                reason: format!("no newc magic at byte {pos}"),
            });
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            *v = read_hex(&h[6 + i * 8..14 + i * 8], pos)?;
        }
        let namesize = f[11] as usize;
        let mut name = vec![0u8; namesize + pad4(110 + namesize)];
        input
            .read_exact(&mut name)
            .map_err(rerr("reading a cpio name from", "<cpio>"))?;
        name.truncate(namesize.saturating_sub(1));
        let size = f[6] as usize;
        let mut data = vec![0u8; size + pad4(size)];
        input
            .read_exact(&mut data)
            .map_err(rerr("reading cpio data from", "<cpio>"))?;
        data.truncate(size);
        pos += (110 + namesize + pad4(110 + namesize) + size + pad4(size)) as u64;
        if name == TRAILER.as_bytes() {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name: PathBuf::from(std::ffi::OsString::from_vec(name)),
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            dev_major: f[7],
            dev_minor: f[8],
            rdev_major: f[9],
            rdev_minor: f[10],
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = vec![
            CpioEntry {
                name: "bin".into(),
                ino: 1,
                mode: S_IFDIR | 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
                mtime: 0,
                dev_major: 0,
                dev_minor: 0,
                rdev_major: 0,
                rdev_minor: 0,
                data: vec![],
            },
            CpioEntry {
                name: "bin/sh".into(),
                ino: 2,
                mode: S_IFLNK | 0o777,
                uid: 0,
                gid: 0,
                nlink: 1,
                mtime: 0,
                dev_major: 0,
                dev_minor: 0,
                rdev_major: 0,
                rdev_minor: 0,
                data: b"busybox".to_vec(),
            },
        ];
        let mut buf = Vec::new();
        write_cpio_entries(&entries, &mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(&buf[..6], b"070701");
        let back = read_cpio_newc(buf.as_slice()).unwrap();
        assert_eq!(back, entries);
        assert!(back[0].is_dir() && back[1].is_symlink() && !back[1].is_file());
    }

    #[test]
    fn header_layout() {
        let mut buf = Vec::new();
        write_trailer(&mut buf).unwrap();
        // 110-byte header + "TRAILER!!!\0" (11) padded to a multiple of 4.
        assert_eq!(buf.len(), 124);
        assert!(buf.starts_with(b"070701"));
        assert_eq!(&buf[94..102], b"0000000b");
    }
}
