//! A deterministic pax tar of a directory tree, the input `mke2fs -d` reads.
//!
//! Entries are written depth first with each directory's names sorted
//! bytewise, named like `tar -C DIR .` names them (`./`, `./etc/`,
//! `./etc/hostname`). Numeric owners, permission bits, symlink targets, hard
//! links, device numbers and extended attributes are kept; modification times
//! are clamped to the epoch, and access and change times are the epoch.
//! Every entry has a pax extended header with `atime` and `ctime`, plus long
//! names, long link targets, large sizes or ids, and extended attributes
//! (`SCHILY.xattr.NAME`, sorted by name) when there are any.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::ImageFsError;

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
/// Largest value an 11-digit octal field holds.
const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Largest value a 7-digit octal field holds.
const MAX_OCTAL_7: u64 = 0o777_7777;

/// How [`write_dir_tar`] stores the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarOptions {
    /// Modification times later than this (seconds since 1970) are stored as
    /// this; earlier ones are kept.
    pub epoch: u64,
    /// Store every entry as owned by 0:0 instead of its numeric owner.
    pub root_owned: bool,
    /// Store extended attributes (`security.capability`, SELinux labels…).
    pub xattrs: bool,
}

struct Header<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    kind: u8,
    link: &'a [u8],
    dev_major: u64,
    dev_minor: u64,
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let bytes = text.as_bytes();
    // The callers never pass a value wider than the field (pax covers those).
    let start = bytes.len().saturating_sub(digits);
    field[..digits].copy_from_slice(&bytes[start..]);
    field[digits] = 0;
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn header_block(h: &Header<'_>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put(&mut b[0..100], h.name);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid.min(MAX_OCTAL_7));
    octal(&mut b[116..124], h.gid.min(MAX_OCTAL_7));
    octal(&mut b[124..136], h.size.min(MAX_OCTAL_11));
    octal(&mut b[136..148], h.mtime.min(MAX_OCTAL_11));
    b[156] = h.kind;
    put(&mut b[157..257], h.link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if h.kind == b'3' || h.kind == b'4' {
        octal(&mut b[329..337], h.dev_major.min(MAX_OCTAL_7));
        octal(&mut b[337..345], h.dev_minor.min(MAX_OCTAL_7));
    }
    // The checksum is computed with its own field as spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let text = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(text.as_bytes());
    b
}

/// One pax record: `LEN KEY=VALUE\n`, LEN counting the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pad(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let rem = usize::try_from(len % BLOCK as u64).unwrap_or(0);
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// Major and minor numbers of a Linux `dev_t` (glibc encoding).
pub(crate) fn dev_split(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

struct Writer<'a> {
    out: &'a mut dyn Write,
    opts: TarOptions,
    /// (dev, ino) of multiply-linked files already written → their names.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Writer<'_> {
    fn out_err(&self, path: &Path) -> impl Fn(io::Error) -> ImageFsError + '_ {
        let path = path.to_path_buf();
        move |source| ImageFsError::Io {
            action: "writing the tar stream for",
            path: path.clone(),
            source,
        }
    }

    fn xattrs(&self, path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, ImageFsError> {
        if !self.opts.xattrs {
            return Ok(Vec::new());
        }
        let names = match xattr::list(path) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(ImageFsError::io("listing the extended attributes of", path)(e)),
        };
        let mut attrs = Vec::new();
        for name in names {
            let value = xattr::get(path, &name)
                .map_err(ImageFsError::io("reading the extended attributes of", path))?;
            if let Some(value) = value {
                attrs.push((name, value));
            }
        }
        attrs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(attrs)
    }

    fn entry(&mut self, path: &Path, name: &[u8], meta: &Metadata) -> Result<(), ImageFsError> {
        let ft = meta.file_type();
        let (uid, gid) = if self.opts.root_owned {
            (0, 0)
        } else {
            (u64::from(meta.uid()), u64::from(meta.gid()))
        };
        let mtime = u64::try_from(meta.mtime())
            .unwrap_or(0)
            .min(self.opts.epoch);
        let mut link_target: Vec<u8> = Vec::new();
        let mut size = 0u64;
        let (mut dev_major, mut dev_minor) = (0, 0);
        let kind = if ft.is_dir() {
            b'5'
        } else if ft.is_symlink() {
            link_target = fs::read_link(path)
                .map_err(ImageFsError::io("reading the symlink", path))?
                .into_os_string()
                .into_vec();
            b'2'
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = (meta.nlink() > 1).then(|| self.links.get(&key)).flatten() {
                link_target = first.clone();
                b'1'
            } else {
                if meta.nlink() > 1 {
                    self.links.insert(key, name.to_vec());
                }
                size = meta.len();
                b'0'
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            (dev_major, dev_minor) = dev_split(meta.rdev());
            if ft.is_char_device() { b'3' } else { b'4' }
        } else if ft.is_fifo() {
            b'6'
        } else {
            tracing::warn!(path = %path.display(), "skipping a socket: tar cannot store it");
            return Ok(());
        };
        let attrs = self.xattrs(path)?;

        // mke2fs takes atime and ctime from the archive (0 when absent): give
        // both the epoch, like the crtime mke2fs stamps itself.
        let mut pax = Vec::new();
        let epoch = self.opts.epoch.to_string();
        pax_record(&mut pax, b"atime", epoch.as_bytes());
        pax_record(&mut pax, b"ctime", epoch.as_bytes());
        if name.len() > NAME_LEN {
            pax_record(&mut pax, b"path", name);
        }
        if link_target.len() > NAME_LEN {
            pax_record(&mut pax, b"linkpath", &link_target);
        }
        if size > MAX_OCTAL_11 {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
        }
        if uid > MAX_OCTAL_7 {
            pax_record(&mut pax, b"uid", uid.to_string().as_bytes());
        }
        if gid > MAX_OCTAL_7 {
            pax_record(&mut pax, b"gid", gid.to_string().as_bytes());
        }
        for (key, value) in &attrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(key.as_bytes());
            pax_record(&mut pax, &k, value);
        }
        {
            let base = Path::new(OsStr::from_bytes(name))
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let mut pax_name = b"./PaxHeaders/".to_vec();
            pax_name.extend_from_slice(&base[..base.len().min(NAME_LEN - pax_name.len())]);
            let hdr = header_block(&Header {
                name: &pax_name,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                mtime,
                kind: b'x',
                link: b"",
                dev_major: 0,
                dev_minor: 0,
            });
            self.out.write_all(&hdr).map_err(self.out_err(path))?;
            self.out.write_all(&pax).map_err(self.out_err(path))?;
            pad(self.out, pax.len() as u64).map_err(self.out_err(path))?;
        }
        let hdr = header_block(&Header {
            name,
            mode: meta.mode(),
            uid,
            gid,
            size,
            mtime,
            kind,
            link: &link_target,
            dev_major,
            dev_minor,
        });
        self.out.write_all(&hdr).map_err(self.out_err(path))?;
        if kind == b'0' {
            let file = File::open(path).map_err(ImageFsError::io("opening", path))?;
            let copied = io::copy(&mut file.take(size), &mut self.out).map_err(|source| {
                ImageFsError::Io {
                    action: "copying into the tar stream",
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            if copied != size {
                return Err(ImageFsError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the file shrank from {size} to {copied} bytes while it was read"
                    ),
                });
            }
            pad(self.out, size).map_err(self.out_err(path))?;
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path, prefix: &[u8]) -> Result<(), ImageFsError> {
        for child in sorted_children(dir)? {
            let path = dir.join(&child);
            let meta = fs::symlink_metadata(&path)
                .map_err(ImageFsError::io("reading metadata of", &path))?;
            let mut name = prefix.to_vec();
            name.extend_from_slice(child.as_bytes());
            if meta.is_dir() {
                name.push(b'/');
                self.entry(&path, &name, &meta)?;
                self.walk(&path, &name)?;
            } else {
                self.entry(&path, &name, &meta)?;
            }
        }
        Ok(())
    }
}

/// The names in `dir`, sorted bytewise.
pub(crate) fn sorted_children(dir: &Path) -> Result<Vec<OsString>, ImageFsError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(ImageFsError::io("listing", dir))? {
        let entry = entry.map_err(ImageFsError::io("listing", dir))?;
        names.push(entry.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Writes a deterministic pax tar of the tree at `root` to `out`: sorted names
/// under `./`, numeric owners (or 0:0), mtimes clamped to `opts.epoch`,
/// hard links, devices and extended attributes kept, sockets skipped.
pub fn write_dir_tar(
    root: &Path,
    opts: TarOptions,
    out: &mut dyn Write,
) -> Result<(), ImageFsError> {
    let meta = fs::metadata(root).map_err(ImageFsError::io("reading metadata of", root))?;
    if !meta.is_dir() {
        return Err(ImageFsError::Unsupported {
            path: root.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut w = Writer {
        out,
        opts,
        links: HashMap::new(),
    };
    w.entry(root, b"./", &meta)?;
    w.walk(root, b"./")?;
    w.out
        .write_all(&[0u8; 2 * BLOCK])
        .map_err(|source| ImageFsError::Io {
            action: "writing the tar stream for",
            path: PathBuf::from(root),
            source,
        })?;
    w.out.flush().map_err(|source| ImageFsError::Io {
        action: "writing the tar stream for",
        path: PathBuf::from(root),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"x");
        assert_eq!(v, b"9 path=x\n");
        let mut v = Vec::new();
        let long = vec![b'a'; 95];
        pax_record(&mut v, b"path", &long);
        let text = String::from_utf8(v.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), v.len());
    }

    #[test]
    fn header_checksum_matches_definition() {
        let h = header_block(&Header {
            name: b"./a",
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 1_700_000_000,
            kind: b'0',
            link: b"",
            dev_major: 0,
            dev_minor: 0,
        });
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&x| u64::from(x)).sum();
        let stored = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&h[100..108], b"0000644\0");
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        // makedev(1, 3) and makedev(259, 70000)
        assert_eq!(dev_split(0x103), (1, 3));
        let dev = (259u64 << 8) | (70000u64 & 0xff) | ((70000u64 & !0xff) << 12);
        assert_eq!(dev_split(dev), (259, 70000));
    }
}
