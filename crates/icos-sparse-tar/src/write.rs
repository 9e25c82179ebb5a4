//! Writing archives.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::header::{self, BLOCK, BLOCK_U64, RECORD};
use crate::scan::{self, IO_CHUNK, Layout};
use crate::{EntryInfo, EntryKind, Error, Phase, Progress};

/// What the uname/gname fields of every member hold (uid/gid are always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerNames {
    /// Empty, as GNU tar writes with `--numeric-owner`.
    #[default]
    Numeric,
    /// `root`/`root`, as GNU tar writes with `--owner=root:0
    /// --group=root:0` and without `--numeric-owner`.
    Root,
}

/// zstd settings for [`Plan::write_tar_zst`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdOptions {
    /// Compression level (1..=22; negative levels are the fast modes).
    pub level: i32,
    /// Worker threads. Any value `>= 1` gives the same bytes (libzstd's
    /// multi-threaded streaming output does not depend on the worker
    /// count); `0` selects single-threaded mode, whose output differs.
    pub workers: u32,
}

impl ZstdOptions {
    /// The default level: IC-OS compresses its images with `zstd -10`
    /// (multi-threaded), and level 10 is still fast enough on two cores for
    /// a few hundred MB of image data.
    pub const DEFAULT_LEVEL: i32 = 10;
}

impl Default for ZstdOptions {
    /// Level [`Self::DEFAULT_LEVEL`], one worker per available CPU.
    fn default() -> Self {
        let workers =
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
        Self {
            level: Self::DEFAULT_LEVEL,
            workers,
        }
    }
}

/// Sizes of a written `.tar.zst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstSummary {
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
    /// Size of the compressed file.
    pub compressed_size: u64,
}

#[derive(Debug, Clone)]
struct Input {
    name: String,
    source: PathBuf,
    mode: u32,
}

/// Collects the files of an archive and their settings.
///
/// Members are written in name order whatever order they are added in.
#[derive(Debug, Clone, Default)]
pub struct TarBuilder {
    inputs: Vec<Input>,
    owner_names: OwnerNames,
    detect_sparse: bool,
}

impl TarBuilder {
    /// An empty builder: sparse detection on, [`OwnerNames::Numeric`].
    pub fn new() -> Self {
        Self {
            inputs: Vec::new(),
            owner_names: OwnerNames::default(),
            detect_sparse: true,
        }
    }

    /// Adds the file at `source` as member `name`, mode 0644.
    pub fn add_file(&mut self, name: impl Into<String>, source: impl Into<PathBuf>) -> &mut Self {
        self.add_file_with_mode(name, source, 0o644)
    }

    /// Adds the file at `source` as member `name` with permission bits
    /// `mode` (at most 0o7777).
    pub fn add_file_with_mode(
        &mut self,
        name: impl Into<String>,
        source: impl Into<PathBuf>,
        mode: u32,
    ) -> &mut Self {
        self.inputs.push(Input {
            name: name.into(),
            source: source.into(),
            mode,
        });
        self
    }

    /// Sets what the uname/gname fields hold.
    pub fn owner_names(&mut self, owner_names: OwnerNames) -> &mut Self {
        self.owner_names = owner_names;
        self
    }

    /// Turns sparse detection on (the default, GNU tar's `--sparse`) or off
    /// (every file becomes a plain member).
    pub fn detect_sparse(&mut self, on: bool) -> &mut Self {
        self.detect_sparse = on;
        self
    }

    /// Opens and scans every source and works out the exact archive: each
    /// member's map and the total size. Reports [`Phase::Scan`] progress.
    pub fn plan(&self, progress: &mut dyn FnMut(Progress)) -> Result<Plan, Error> {
        let mut inputs: Vec<&Input> = self.inputs.iter().collect();
        inputs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        for pair in inputs.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(Error::DuplicateName {
                    name: pair[0].name.clone(),
                });
            }
        }
        struct Opened<'a> {
            input: &'a Input,
            file: File,
            size: u64,
            blocks: u64,
            extents: Vec<(u64, u64)>,
        }
        let mut opened = Vec::with_capacity(inputs.len());
        let mut scan_total = 0u64;
        for input in inputs {
            check_member_name(&input.name)?;
            if input.mode > 0o7777 {
                return Err(Error::BadMode {
                    name: input.name.clone(),
                    mode: input.mode,
                });
            }
            let file = File::open(&input.source).map_err(Error::io("opening", &input.source))?;
            let meta = file
                .metadata()
                .map_err(Error::io("reading metadata of", &input.source))?;
            if !meta.is_file() {
                return Err(Error::NotAFile {
                    path: input.source.clone(),
                });
            }
            let (size, blocks) = (meta.len(), meta.blocks());
            let extents =
                if self.detect_sparse && scan::is_sparse_on_disk(size, blocks) && blocks > 0 {
                    scan::data_extents(&file, &input.source, size)?
                } else {
                    Vec::new()
                };
            scan_total += extents
                .iter()
                .map(|&(s, e)| e.next_multiple_of(BLOCK_U64).min(size) - (s - s % BLOCK_U64))
                .sum::<u64>();
            opened.push(Opened {
                input,
                file,
                size,
                blocks,
                extents,
            });
        }

        let mut done = 0u64;
        let mut members = Vec::with_capacity(opened.len());
        let mut tar_size = 0u64;
        let mut data_total = 0u64;
        for o in opened {
            let layout = if self.detect_sparse {
                scan::layout(
                    &o.file,
                    &o.input.source,
                    o.size,
                    o.blocks,
                    &o.extents,
                    &mut |n| {
                        done += n;
                        progress(Progress {
                            phase: Phase::Scan,
                            done,
                            total: Some(scan_total),
                        });
                    },
                )?
            } else {
                Layout::Regular
            };
            let (kind, stored_size, sparse_map) = match layout {
                Layout::Regular => (EntryKind::File, o.size, None),
                Layout::Sparse(map) => {
                    let stored = map.iter().map(|s| s.length).sum();
                    (EntryKind::SparseFile, stored, Some(map))
                }
            };
            let info = EntryInfo {
                name: o.input.name.clone(),
                kind,
                mode: o.input.mode,
                size: o.size,
                stored_size,
                sparse_map,
            };
            tar_size += member_size(&info);
            data_total += stored_size;
            members.push(Member {
                info,
                source: o.input.source.clone(),
                file: o.file,
            });
        }
        Ok(Plan {
            members,
            owner_names: self.owner_names,
            tar_size: end_of_archive(tar_size),
            data_total,
        })
    }

    /// Plans and writes the tar stream to `out` (see [`Plan::write_to`]).
    pub fn write_to<W: Write>(
        &self,
        out: W,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<W, Error> {
        self.plan(progress)?.write_to(out, progress)
    }

    /// Plans and writes a `.tar.zst` file (see [`Plan::write_tar_zst`]).
    pub fn write_tar_zst(
        &self,
        path: &Path,
        zstd: &ZstdOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ZstSummary, Error> {
        self.plan(progress)?.write_tar_zst(path, zstd, progress)
    }
}

/// Member names must be plain relative paths: non-empty `/`-separated
/// components, none of them `.` or `..`, no NUL.
fn check_member_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute"));
    }
    for component in name.split('/') {
        match component {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' or '..' component")),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Member {
    info: EntryInfo,
    source: PathBuf,
    file: File,
}

/// Bytes a member takes in the archive: optional long-name member, header,
/// extension blocks and data (each sparse segment padded to 512 bytes, as
/// GNU tar writes them).
fn member_size(info: &EntryInfo) -> u64 {
    let name_len = info.name.len() as u64;
    let long_name = if name_len > header::NAME_FIELD as u64 {
        BLOCK_U64 + (name_len + 1).next_multiple_of(BLOCK_U64)
    } else {
        0
    };
    let body = match &info.sparse_map {
        None => info.size.next_multiple_of(BLOCK_U64),
        Some(map) => {
            let ext = map
                .len()
                .saturating_sub(header::SPARSE_IN_HEADER)
                .div_ceil(header::SPARSE_IN_EXT);
            ext as u64 * BLOCK_U64
                + map
                    .iter()
                    .map(|s| s.length.next_multiple_of(BLOCK_U64))
                    .sum::<u64>()
        }
    };
    long_name + BLOCK_U64 + body
}

/// Size after the end-of-archive marker: one zero block, then zeros up to
/// the end of the record, which always leaves at least two zero blocks.
fn end_of_archive(members: u64) -> u64 {
    (members + 2 * BLOCK_U64).next_multiple_of(RECORD)
}

/// A scanned set of members, ready to be written. Holds the sources open.
#[derive(Debug)]
pub struct Plan {
    members: Vec<Member>,
    owner_names: OwnerNames,
    tar_size: u64,
    data_total: u64,
}

impl Plan {
    /// The members in archive order, with their maps.
    pub fn entries(&self) -> impl Iterator<Item = &EntryInfo> {
        self.members.iter().map(|m| &m.info)
    }

    /// Exact size of the tar stream [`Plan::write_to`] will produce.
    pub fn tar_size(&self) -> u64 {
        self.tar_size
    }

    /// Writes the tar stream to `out` and returns it. Reports
    /// [`Phase::Write`] progress in bytes of file data copied. Fails with
    /// [`Error::FileChanged`] if a source changed size or shrank since
    /// [`TarBuilder::plan`].
    pub fn write_to<W: Write>(
        &self,
        out: W,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<W, Error> {
        self.write_labelled(out, Path::new("<output>"), progress)
    }

    fn write_labelled<W: Write>(
        &self,
        out: W,
        label: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<W, Error> {
        let mut out = Counting {
            inner: BufWriter::with_capacity(64 << 10, out),
            written: 0,
        };
        let owner_names = self.owner_names == OwnerNames::Root;
        let mut done = 0u64;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut report = |n: u64| {
            done += n;
            progress(Progress {
                phase: Phase::Write,
                done,
                total: Some(self.data_total),
            });
        };
        for m in &self.members {
            let info = &m.info;
            let name = info.name.as_bytes();
            let current = m
                .file
                .metadata()
                .map_err(Error::io("reading metadata of", &m.source))?;
            if current.len() != info.size {
                return Err(Error::FileChanged {
                    path: m.source.clone(),
                });
            }
            if name.len() > header::NAME_FIELD {
                out.put(&header::long_name(owner_names, name.len()), label)?;
                out.put(name, label)?;
                out.put(&[0], label)?;
                out.pad(name.len() as u64 + 1, label)?;
            }
            let common = header::Common {
                name,
                mode: info.mode,
                owner_names,
            };
            match &info.sparse_map {
                None => {
                    out.put(&header::regular(&common, info.size), label)?;
                    copy(
                        &m.file,
                        &m.source,
                        0,
                        info.size,
                        &mut buf,
                        &mut out,
                        label,
                        &mut report,
                    )?;
                    out.pad(info.size, label)?;
                }
                Some(map) => {
                    for block in header::sparse(&common, info.size, info.stored_size, map) {
                        out.put(&block, label)?;
                    }
                    for seg in map {
                        copy(
                            &m.file,
                            &m.source,
                            seg.offset,
                            seg.length,
                            &mut buf,
                            &mut out,
                            label,
                            &mut report,
                        )?;
                        out.pad(seg.length, label)?;
                    }
                }
            }
        }
        let end = end_of_archive(out.written);
        let zeros = [0u8; BLOCK];
        while out.written < end {
            out.put(&zeros, label)?;
        }
        debug_assert_eq!(out.written, self.tar_size);
        out.inner
            .into_inner()
            .map_err(|e| Error::io("writing", label)(e.into_error()))
    }

    /// Writes the archive zstd-compressed to `path`, atomically: into a
    /// temporary file in the same directory, synced, then renamed. The
    /// frame records the content size and a checksum, like the `zstd`
    /// command does for a file.
    pub fn write_tar_zst(
        &self,
        path: &Path,
        zstd: &ZstdOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ZstSummary, Error> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::NotAFile { path: path.into() })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(Error::io("creating", &tmp))?;
            let encoder = self
                .encoder(file, zstd)
                .map_err(Error::io("setting up zstd for", &tmp))?;
            let encoder = self.write_labelled(encoder, &tmp, progress)?;
            let file = encoder
                .finish()
                .map_err(Error::io("compressing into", &tmp))?;
            file.sync_all().map_err(Error::io("syncing", &tmp))?;
            let compressed_size = file
                .metadata()
                .map_err(Error::io("reading metadata of", &tmp))?
                .len();
            fs::rename(&tmp, path).map_err(Error::io("renaming to", path))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io("syncing directory", dir))?;
            Ok(ZstSummary {
                tar_size: self.tar_size,
                compressed_size,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn encoder<W: Write>(
        &self,
        out: W,
        zstd: &ZstdOptions,
    ) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
        let mut encoder = zstd::stream::write::Encoder::new(out, zstd.level)?;
        if zstd.workers > 0 {
            encoder.multithread(zstd.workers)?;
        }
        encoder.include_checksum(true)?;
        encoder.include_contentsize(true)?;
        encoder.set_pledged_src_size(Some(self.tar_size))?;
        Ok(encoder)
    }
}

/// A writer that counts what went through it.
struct Counting<W: Write> {
    inner: BufWriter<W>,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8], label: &Path) -> Result<(), Error> {
        self.inner
            .write_all(bytes)
            .map_err(Error::io("writing", label))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero padding after `len` bytes of data, up to the next block.
    fn pad(&mut self, len: u64, label: &Path) -> Result<(), Error> {
        let rem = len % BLOCK_U64;
        if rem != 0 {
            let zeros = [0u8; BLOCK];
            let n = usize::try_from(BLOCK_U64 - rem).unwrap_or(0);
            self.put(&zeros[..n], label)?;
        }
        Ok(())
    }
}

/// Copies `len` bytes at `offset` of `file` to `out`.
#[allow(clippy::too_many_arguments)]
fn copy<W: Write>(
    file: &File,
    source: &Path,
    offset: u64,
    len: u64,
    buf: &mut [u8],
    out: &mut Counting<W>,
    label: &Path,
    report: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = usize::try_from(end - pos).map_or(buf.len(), |n| n.min(buf.len()));
        let chunk = &mut buf[..want];
        file.read_exact_at(chunk, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::FileChanged {
                    path: source.into(),
                }
            } else {
                Error::io("reading", source)(e)
            }
        })?;
        out.put(chunk, label)?;
        pos += want as u64;
        report(want as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_checked() {
        assert!(check_member_name("disk.img").is_ok());
        assert!(check_member_name("a/b").is_ok());
        for bad in ["", "/abs", "../x", "a/../b", "a//b", "./a", "a/", "a\0b"] {
            assert!(check_member_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn archive_end_is_padded_to_records() {
        assert_eq!(end_of_archive(0), RECORD);
        assert_eq!(end_of_archive(RECORD - 1024), RECORD);
        assert_eq!(end_of_archive(RECORD - 512), 2 * RECORD);
    }

    #[test]
    fn planned_size_matches_written_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"hello").unwrap();
        let b = dir.path().join("b");
        let f = File::create(&b).unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_all_at(&[7u8; 3000], 1 << 20).unwrap();
        drop(f);
        let mut builder = TarBuilder::new();
        builder.add_file("b", &b).add_file("x".repeat(150), &a);
        let plan = builder.plan(&mut |_| {}).unwrap();
        let names: Vec<_> = plan.entries().map(|e| e.name.len()).collect();
        assert_eq!(names, [1, 150]);
        let out = plan.write_to(Vec::new(), &mut |_| {}).unwrap();
        assert_eq!(out.len() as u64, plan.tar_size());
        assert_eq!(out.len() as u64 % RECORD, 0);
    }

    #[test]
    fn rejects_duplicates_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"x").unwrap();
        let mut builder = TarBuilder::new();
        builder.add_file("a", &a).add_file("a", &a);
        assert!(matches!(
            builder.plan(&mut |_| {}),
            Err(Error::DuplicateName { .. })
        ));
        let mut builder = TarBuilder::new();
        builder.add_file("d", dir.path());
        assert!(matches!(
            builder.plan(&mut |_| {}),
            Err(Error::NotAFile { .. })
        ));
        let mut builder = TarBuilder::new();
        builder.add_file_with_mode("a", &a, 0o10000);
        assert!(matches!(
            builder.plan(&mut |_| {}),
            Err(Error::BadMode { .. })
        ));
    }
}
