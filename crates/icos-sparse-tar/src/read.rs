//! Reading archives: listing and extracting.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::header::{self, BLOCK, BLOCK_U64};
use crate::readahead;
use crate::{EntryInfo, EntryKind, Error, Phase, Progress, Segment};

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Longest long-name member accepted.
const MAX_LONG_NAME: u64 = 64 << 10;

/// Lists the members of a plain or zstd-compressed tar read from `input`.
pub fn list<R: Read>(input: R) -> Result<Vec<EntryInfo>, Error> {
    walk_any(input, Path::new("<stream>"), &mut Lister)
}

/// Lists the members of the plain or zstd-compressed tar at `path`.
pub fn list_file(path: &Path) -> Result<Vec<EntryInfo>, Error> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    walk_any(file, path, &mut Lister)
}

/// Extracts a plain or zstd-compressed tar read from `input` into the
/// existing directory `dest` and returns its members.
///
/// Sparse members are recreated with their holes: the file is sized first
/// and only the data segments are written. Names that are absolute or
/// contain `..` are refused, as is any path that would pass through or
/// replace a symbolic link or other non-regular file. Existing regular
/// files are overwritten. Permission bits are applied without setuid,
/// setgid and sticky bits. Reports [`Phase::Extract`] progress in bytes of
/// member data.
pub fn extract<R: Read>(
    input: R,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EntryInfo>, Error> {
    let mut extractor = Extractor::new(dest, progress)?;
    walk_any(input, Path::new("<stream>"), &mut extractor)
}

/// Extracts the plain or zstd-compressed tar at `path` into `dest`; see
/// [`extract`].
pub fn extract_file(
    path: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EntryInfo>, Error> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let mut extractor = Extractor::new(dest, progress)?;
    walk_any(file, path, &mut extractor)
}

/// What happens to each member while walking an archive with [`visit`].
///
/// For a member whose data is wanted, `data` is called in increasing
/// offset order with the stored bytes only: for a sparse member the gaps
/// between calls (and after the last one, up to [`EntryInfo::size`]) are
/// holes, for a plain member the calls cover the whole file.
pub trait Visitor {
    /// A member starts; returns whether its data is wanted.
    fn begin(&mut self, info: &EntryInfo) -> Result<bool, Error>;
    /// `bytes` of the member belong at `offset` of the expanded file.
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error>;
    /// The member is complete.
    fn end(&mut self, info: &EntryInfo) -> Result<(), Error>;
}

/// Walks a plain or zstd-compressed tar read from `input` (named `label` in
/// errors), handing every member to `visitor`, and returns the members.
/// The archive is read to its end, so a zstd checksum is verified.
///
/// A compressed archive is decompressed on a thread of its own, a few MiB
/// ahead of `visitor`, so that a visitor that hashes and writes what it is
/// handed works while the next bytes are decompressed.
pub fn visit<R: Read + Send, V: Visitor>(
    input: R,
    label: &Path,
    visitor: &mut V,
) -> Result<Vec<EntryInfo>, Error> {
    match open_input(input, label)? {
        Input::Plain(input) => walk(input, label, visitor),
        Input::Zstd(decoder) => {
            readahead::with_read_ahead(decoder, |stream| walk(stream, label, visitor))
        }
    }
}

fn walk_any<R: Read, V: Visitor>(
    input: R,
    label: &Path,
    visitor: &mut V,
) -> Result<Vec<EntryInfo>, Error> {
    match open_input(input, label)? {
        Input::Plain(input) => walk(input, label, visitor),
        Input::Zstd(decoder) => walk(decoder, label, visitor),
    }
}

/// An archive's bytes, as stored or through zstd.
enum Input<R: Read> {
    Plain(BufReader<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

/// Tells a zstd-compressed archive (by its magic) from a plain one.
fn open_input<R: Read>(input: R, label: &Path) -> Result<Input<R>, Error> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let head = input.fill_buf().map_err(Error::io("reading", label))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(input)
            .map_err(Error::io("decompressing", label))?;
        Ok(Input::Zstd(decoder))
    } else {
        Ok(Input::Plain(input))
    }
}

struct Stream<R> {
    inner: R,
    pos: u64,
    label: PathBuf,
}

impl<R: Read> Stream<R> {
    fn format(&self, at: u64, reason: impl Into<String>) -> Error {
        Error::Format {
            archive: self.label.clone(),
            offset: at,
            reason: reason.into(),
        }
    }

    /// Reads a block; `None` at a clean end of input.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>, Error> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(self.format(self.pos, "archive ends inside a block")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", &self.label)(e)),
            }
        }
        self.pos += BLOCK_U64;
        Ok(Some(block))
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.format(self.pos, "archive ends inside a member")
            } else {
                Error::io("reading", &self.label)(e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64, buf: &mut [u8]) -> Result<(), Error> {
        while n > 0 {
            let want = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
            self.exact(&mut buf[..want])?;
            n -= want as u64;
        }
        Ok(())
    }
}

fn walk<R: Read, V: Visitor>(
    input: R,
    label: &Path,
    visitor: &mut V,
) -> Result<Vec<EntryInfo>, Error> {
    let mut s = Stream {
        inner: input,
        pos: 0,
        label: label.to_path_buf(),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut entries = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    loop {
        let at = s.pos;
        let Some(block) = s.block()? else {
            if long_name.is_some() {
                return Err(s.format(at, "long name without a member"));
            }
            break;
        };
        if block.iter().all(|&b| b == 0) {
            // End of archive. Read the rest so a zstd checksum is verified.
            io::copy(&mut s.inner, &mut io::sink()).map_err(Error::io("reading", label))?;
            break;
        }
        let parsed = header::parse(&block).map_err(|p| s.format(at, p.to_string()))?;
        let padded = parsed.size.next_multiple_of(BLOCK_U64);
        match parsed.typeflag {
            header::TYPE_LONGNAME => {
                if parsed.size > MAX_LONG_NAME {
                    return Err(s.format(at, "long name too long"));
                }
                let mut name = vec![0u8; usize::try_from(padded).unwrap_or(0)];
                s.exact(&mut name)?;
                name.truncate(usize::try_from(parsed.size).unwrap_or(0));
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                name.truncate(end);
                long_name = Some(name);
                continue;
            }
            b'K' => {
                // GNU long link name: only meaningful for links, which are
                // refused below when their member comes.
                s.skip(padded, &mut buf)?;
                continue;
            }
            _ => {}
        }
        let raw_name = long_name.take().unwrap_or(parsed.name);
        let name = String::from_utf8(raw_name).map_err(|e| Error::BadName {
            name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "not UTF-8",
        })?;
        let (kind, size, map) = match (parsed.typeflag, parsed.sparse) {
            (header::TYPE_REGULAR | 0 | b'7', _) => (EntryKind::File, parsed.size, None),
            (b'5', _) => (EntryKind::Directory, 0, None),
            (header::TYPE_SPARSE, Some(head)) => {
                let mut map = head.map;
                let mut extended = head.extended;
                while extended {
                    let ext_at = s.pos;
                    let ext = s
                        .block()?
                        .ok_or_else(|| s.format(ext_at, "archive ends inside a sparse map"))?;
                    extended = header::parse_ext(&ext, &mut map)
                        .map_err(|p| s.format(ext_at, p.to_string()))?;
                }
                check_map(&map, head.real_size, parsed.size)
                    .map_err(|r| s.format(at, format!("{name}: {r}")))?;
                (EntryKind::SparseFile, head.real_size, Some(map))
            }
            (typeflag, _) => {
                return Err(Error::Unsupported {
                    archive: label.to_path_buf(),
                    name,
                    typeflag: char::from(typeflag),
                });
            }
        };
        let info = EntryInfo {
            name,
            kind,
            mode: parsed.mode,
            size,
            stored_size: if kind == EntryKind::Directory {
                0
            } else {
                parsed.size
            },
            sparse_map: map,
        };
        let wanted = visitor.begin(&info)?;
        if kind == EntryKind::Directory || !wanted {
            s.skip(padded, &mut buf)?;
        } else {
            let whole = [Segment {
                offset: 0,
                length: info.size,
            }];
            let segments = info.sparse_map.as_deref().unwrap_or(&whole);
            for seg in segments {
                let mut done = 0u64;
                while done < seg.length {
                    let want =
                        usize::try_from(seg.length - done).map_or(buf.len(), |n| n.min(buf.len()));
                    s.exact(&mut buf[..want])?;
                    visitor.data(seg.offset + done, &buf[..want])?;
                    done += want as u64;
                }
            }
            s.skip(padded - parsed.size, &mut buf)?;
        }
        visitor.end(&info)?;
        entries.push(info);
    }
    Ok(entries)
}

/// A map must be sorted, non-overlapping, inside the file, and account for
/// exactly the stored bytes.
fn check_map(map: &[Segment], real_size: u64, stored: u64) -> Result<(), &'static str> {
    let mut pos = 0u64;
    let mut total = 0u64;
    for seg in map {
        let end = seg
            .offset
            .checked_add(seg.length)
            .ok_or("sparse segment overflows")?;
        if seg.offset < pos {
            return Err("sparse map out of order or overlapping");
        }
        if end > real_size {
            return Err("sparse segment beyond the end of the file");
        }
        pos = end;
        total += seg.length;
    }
    if total != stored {
        return Err("sparse map does not match the stored size");
    }
    Ok(())
}

struct Lister;

impl Visitor for Lister {
    fn begin(&mut self, _: &EntryInfo) -> Result<bool, Error> {
        Ok(false)
    }
    fn data(&mut self, _: u64, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn end(&mut self, _: &EntryInfo) -> Result<(), Error> {
        Ok(())
    }
}

/// The path inside `dest` for member `name`, refusing anything that could
/// leave `dest`. `.` components and repeated slashes are tolerated, as GNU
/// tar writes names like `./disk.img`.
fn safe_relative(name: &str) -> Result<PathBuf, Error> {
    let bad = |reason| Error::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.starts_with('/') {
        return Err(bad("absolute"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("'..' component")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("absolute")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("empty"));
    }
    Ok(out)
}

struct Extractor<'p> {
    dest: PathBuf,
    progress: &'p mut dyn FnMut(Progress),
    done: u64,
    current: Option<(File, PathBuf)>,
}

impl<'p> Extractor<'p> {
    fn new(dest: &Path, progress: &'p mut dyn FnMut(Progress)) -> Result<Self, Error> {
        let meta = fs::metadata(dest).map_err(Error::io("opening destination", dest))?;
        if !meta.is_dir() {
            return Err(Error::UnsafeTarget { path: dest.into() });
        }
        Ok(Self {
            dest: dest.to_path_buf(),
            progress,
            done: 0,
            current: None,
        })
    }

    /// Creates the directories leading to `rel` (exclusive) inside `dest`,
    /// refusing to pass through anything but real directories.
    fn make_parents(&self, rel: &Path) -> Result<(), Error> {
        let mut path = self.dest.clone();
        let parent = rel.parent().unwrap_or(Path::new(""));
        for component in parent.components() {
            path.push(component);
            self.ensure_dir(&path)?;
        }
        Ok(())
    }

    fn ensure_dir(&self, path: &Path) -> Result<(), Error> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::UnsafeTarget { path: path.into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(path).map_err(Error::io("creating directory", path))
            }
            Err(e) => Err(Error::io("inspecting", path)(e)),
        }
    }
}

impl Visitor for Extractor<'_> {
    fn begin(&mut self, info: &EntryInfo) -> Result<bool, Error> {
        let rel = safe_relative(&info.name)?;
        self.make_parents(&rel)?;
        let path = self.dest.join(&rel);
        if info.kind == EntryKind::Directory {
            self.ensure_dir(&path)?;
            return Ok(false);
        }
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_file() => return Err(Error::UnsafeTarget { path }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspecting", &path)(e)),
        }
        let nofollow = i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nofollow)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io("creating", &path))?;
        // All holes first; data segments are then written into place.
        file.set_len(info.size)
            .map_err(Error::io("sizing", &path))?;
        self.current = Some((file, path));
        Ok(true)
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        if let Some((file, path)) = &self.current {
            file.write_all_at(bytes, offset)
                .map_err(Error::io("writing", path))?;
        }
        self.done += bytes.len() as u64;
        (self.progress)(Progress {
            phase: Phase::Extract,
            done: self.done,
            total: None,
        });
        Ok(())
    }

    fn end(&mut self, info: &EntryInfo) -> Result<(), Error> {
        if let Some((file, path)) = self.current.take() {
            file.set_permissions(Permissions::from_mode(info.mode & 0o777))
                .map_err(Error::io("setting permissions of", &path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_member(name: &str, typeflag: u8, data: &[u8]) -> Vec<u8> {
        let common = header::Common {
            name: name.as_bytes(),
            mode: 0o644,
            owner_names: false,
        };
        let mut block = header::regular(&common, data.len() as u64);
        block[156] = typeflag;
        // Recompute the checksum after changing the type flag.
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        header::put_num(&mut block[148..155], sum);
        let mut out = block.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    fn finish(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    #[test]
    fn refuses_traversal_and_absolute_names() {
        for name in ["../evil", "a/../../evil", "/etc/evil"] {
            let tar = finish(raw_member(name, b'0', b"x"));
            let dir = tempfile::tempdir().unwrap();
            let err = extract(&tar[..], dir.path(), &mut |_| {}).unwrap_err();
            assert!(matches!(err, Error::BadName { .. }), "{name}: {err}");
        }
        assert_eq!(safe_relative("./a//b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn refuses_links_and_writing_through_symlinks() {
        let tar = finish(raw_member("l", b'2', b""));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            extract(&tar[..], dir.path(), &mut |_| {}),
            Err(Error::Unsupported { typeflag: '2', .. })
        ));
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        let tar = finish(raw_member("sub/f", b'0', b"x"));
        assert!(matches!(
            extract(&tar[..], dir.path(), &mut |_| {}),
            Err(Error::UnsafeTarget { .. })
        ));
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("f")).unwrap();
        let tar = finish(raw_member("f", b'0', b"x"));
        assert!(matches!(
            extract(&tar[..], dir.path(), &mut |_| {}),
            Err(Error::UnsafeTarget { .. })
        ));
        assert!(!outside.path().join("f").exists());
    }

    #[test]
    fn extracts_regular_files_and_directories() {
        let mut tar = raw_member("d", b'5', b"");
        tar.extend(raw_member("d/e/f.txt", b'0', b"hello"));
        let tar = finish(tar);
        let dir = tempfile::tempdir().unwrap();
        let entries = extract(&tar[..], dir.path(), &mut |_| {}).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(fs::read(dir.path().join("d/e/f.txt")).unwrap(), b"hello");
        assert_eq!(list(&tar[..]).unwrap(), entries);
    }

    #[test]
    fn rejects_truncated_and_corrupt_archives() {
        let tar = raw_member("f", b'0', &[1u8; 2000]);
        assert!(matches!(list(&tar[..1000]), Err(Error::Format { .. })));
        let mut bad = finish(tar);
        bad[10] ^= 1;
        assert!(matches!(list(&bad[..]), Err(Error::Format { .. })));
    }

    #[test]
    fn map_checks() {
        let s = |offset, length| Segment { offset, length };
        assert!(check_map(&[s(0, 512), s(4096, 0)], 4096, 512).is_ok());
        assert!(check_map(&[s(4096, 512), s(0, 512)], 8192, 1024).is_err());
        assert!(check_map(&[s(0, 512)], 100, 512).is_err());
        assert!(check_map(&[s(0, 512)], 4096, 1024).is_err());
    }
}
