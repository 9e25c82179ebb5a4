//! ext4 images with `mke2fs -d`, checks with `e2fsck -fn`, reads with `debugfs`.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::BLOCK_SIZE;
use crate::cmd::Cmd;
use crate::dirtar::{TarOptions, write_dir_tar};
use crate::error::ImageFsError;
use crate::tools::Tools;

/// The `mke2fs.conf` every ext4 image is made with (passed as
/// `MKE2FS_CONFIG`), so that the host's `/etc/mke2fs.conf` does not change
/// the result. It is e2fsprogs 1.47.2's Debian default.
pub const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,metadata_csum_seed,64bit,dir_nlink,extra_isize,orphan_file
\t}
";

/// Largest ext4 label, in bytes.
const MAX_LABEL: usize = 16;

/// The parameters of an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Spec {
    /// Image size in bytes; a multiple of 4096.
    pub size_bytes: u64,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID (`mke2fs -U`).
    pub uuid: uuid::Uuid,
    /// Directory hash seed (`mke2fs -E hash_seed=`).
    pub hash_seed: uuid::Uuid,
    /// `SOURCE_DATE_EPOCH`: superblock times, inode atime/ctime/crtime, and
    /// the upper bound of mtimes taken from a directory.
    pub epoch: u64,
}

/// What goes into a new ext4 filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext4Source<'a> {
    /// Nothing: only the root directory and `lost+found`.
    Empty,
    /// A directory tree, with its numeric owners. It is streamed to mke2fs as
    /// a sorted tar with mtimes clamped to the epoch (see the crate docs).
    Dir(&'a Path),
    /// A directory tree stored as owned by 0:0 whatever its owners (for trees
    /// assembled without root privileges).
    DirRootOwned(&'a Path),
    /// A tar archive, handed to `mke2fs -d` as is: its headers give owners,
    /// modes and mtimes.
    Tar(&'a Path),
}

fn check_spec(spec: &Ext4Spec) -> Result<(), ImageFsError> {
    if spec.size_bytes == 0 || !spec.size_bytes.is_multiple_of(BLOCK_SIZE) {
        return Err(ImageFsError::invalid(
            "ext4 size",
            format!(
                "{} bytes is not a positive multiple of {BLOCK_SIZE}",
                spec.size_bytes
            ),
        ));
    }
    if spec.label.len() > MAX_LABEL {
        return Err(ImageFsError::invalid(
            "ext4 label",
            format!("{:?} is longer than {MAX_LABEL} bytes", spec.label),
        ));
    }
    if spec.label.chars().any(|c| c.is_control()) {
        return Err(ImageFsError::invalid(
            "ext4 label",
            format!("{:?} holds control characters", spec.label),
        ));
    }
    Ok(())
}

/// Creates `path` as an empty sparse file of `len` bytes, replacing any file
/// there.
pub(crate) fn create_sparse(path: &Path, len: u64) -> Result<(), ImageFsError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(ImageFsError::io("creating", path))?;
    file.set_len(len)
        .map_err(ImageFsError::io("setting the length of", path))
}

pub(crate) fn sync_file(path: &Path) -> Result<(), ImageFsError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(ImageFsError::io("syncing", path))
}

/// Makes the ext4 image `out` (replacing any file there) of
/// `spec.size_bytes` bytes from `source`, deterministically:
///
/// `mke2fs -q -F -t ext4 -b 4096 -I 256 -L LABEL -U UUID -E hash_seed=SEED,
/// lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,nodiscard [-d TAR|-]
/// OUT BLOCKS` with `SOURCE_DATE_EPOCH`, `E2FSPROGS_FAKE_TIME`, `TZ=UTC` and a
/// fixed [`MKE2FS_CONF`]. The file is synced before returning.
pub fn make_ext4(
    tools: &Tools,
    spec: &Ext4Spec,
    source: Ext4Source<'_>,
    out: &Path,
) -> Result<(), ImageFsError> {
    check_spec(spec)?;
    let conf_dir = tempfile::Builder::new()
        .prefix(".icos-imagefs-")
        .tempdir()
        .map_err(ImageFsError::io(
            "creating a temporary directory in",
            std::env::temp_dir(),
        ))?;
    let conf = conf_dir.path().join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF).map_err(ImageFsError::io("writing", &conf))?;

    create_sparse(out, spec.size_bytes)?;
    let mut cmd = Cmd::new(&tools.mke2fs)
        .epoch(spec.epoch)
        .env("MKE2FS_CONFIG", &conf)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L"])
        .arg(&spec.label)
        .arg("-U")
        .arg(spec.uuid.hyphenated().to_string())
        .arg("-E")
        .arg(format!(
            "hash_seed={},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,nodiscard",
            spec.hash_seed.hyphenated()
        ));
    let tree = match source {
        Ext4Source::Empty => None,
        Ext4Source::Tar(tar) => {
            if !tar.is_file() {
                return Err(ImageFsError::Unsupported {
                    path: tar.to_path_buf(),
                    reason: "not a tar file".into(),
                });
            }
            cmd = cmd.arg("-d").arg(tar);
            None
        }
        Ext4Source::Dir(dir) => Some((dir, false)),
        Ext4Source::DirRootOwned(dir) => Some((dir, true)),
    };
    if tree.is_some() {
        cmd = cmd.arg("-d").arg("-");
    }
    cmd = cmd.arg(out).arg((spec.size_bytes / BLOCK_SIZE).to_string());

    let result = match tree {
        None => cmd.run().map(|_| ()).map_err(ImageFsError::from),
        Some((dir, root_owned)) => {
            let opts = TarOptions {
                epoch: spec.epoch,
                root_owned,
                xattrs: true,
            };
            cmd.run_with_stdin(|stdin| {
                let mut w = BufWriter::with_capacity(1 << 20, stdin);
                write_dir_tar(dir, opts, &mut w)?;
                w.flush()
                    .map_err(ImageFsError::io("streaming the tar of", dir))
            })
            .map(|_| ())
        }
    };
    match result {
        Err(ImageFsError::Command(e)) if e.stderr_tail.contains("libarchive") => Err(
            ImageFsError::Tool(crate::tools::ToolError::MissingLibrary {
                library: "libarchive.so.13".into(),
                why: format!(
                    "mke2fs -d reads tars through it; mke2fs said: {}",
                    e.stderr_tail.trim()
                ),
                package: "libarchive13".into(),
                install: "apt-get install libarchive13".into(),
            }),
        ),
        Err(e) => Err(e),
        Ok(()) => sync_file(out),
    }
}

/// Checks the ext4 filesystem in `image` with `e2fsck -fn` (forced, read
/// only); any problem is an error carrying e2fsck's output.
pub fn e2fsck_check(tools: &Tools, image: &Path) -> Result<(), ImageFsError> {
    let cmd = Cmd::new(&tools.e2fsck).arg("-fn").arg(image);
    let out = cmd.run_unchecked()?;
    if out.status.success() {
        return Ok(());
    }
    Err(ImageFsError::FsckFailed {
        image: image.to_path_buf(),
        status: out.status.to_string(),
        output: crate::cmd::tail(&[out.stdout.as_slice(), out.stderr.as_slice()].concat()),
    })
}

/// The name debugfs opens: the image, with `?offset=N` for a filesystem
/// inside a disk image.
fn debugfs_target(image: &Path, offset: u64) -> Result<PathBuf, ImageFsError> {
    let text = image.as_os_str();
    if text.to_string_lossy().contains('?') {
        return Err(ImageFsError::invalid(
            "image path",
            format!(
                "{}: debugfs cannot open a path containing '?'",
                image.display()
            ),
        ));
    }
    if offset == 0 {
        return Ok(image.to_path_buf());
    }
    let mut s = text.to_os_string();
    s.push(format!("?offset={offset}"));
    Ok(PathBuf::from(s))
}

fn debugfs_path(path: &str) -> Result<String, ImageFsError> {
    if path.contains(['"', '\n', '\0']) {
        return Err(ImageFsError::invalid(
            "path inside the filesystem",
            format!("{path:?} holds a quote, newline or NUL"),
        ));
    }
    Ok(format!("\"/{}\"", path.trim_start_matches('/')))
}

/// Lines debugfs printed to stderr other than its version banner.
fn debugfs_complaints(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inode type debugfs reports for `path`, or the complaint.
fn debugfs_type(
    tools: &Tools,
    target: &Path,
    path: &str,
) -> Result<Result<String, String>, ImageFsError> {
    let cmd = Cmd::new(&tools.debugfs)
        .arg("-R")
        .arg(format!("stat {}", debugfs_path(path)?))
        .arg(target);
    let out = cmd.run()?;
    let complaints = debugfs_complaints(&out.stderr_text());
    if !complaints.is_empty() {
        return Ok(Err(complaints));
    }
    let stdout = out.stdout_text();
    let kind = stdout
        .lines()
        .find_map(|l| l.split("Type:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    match kind {
        Some(k) => Ok(Ok(k)),
        None => Err(ImageFsError::UnexpectedOutput {
            command: cmd.command_line(),
            detail: "no `Type:` in the stat output".into(),
        }),
    }
}

/// Whether `path` exists (as any kind of inode) in the ext4 filesystem at
/// byte `offset` of `image`.
pub fn ext4_file_exists(
    tools: &Tools,
    image: &Path,
    offset: u64,
    path: &str,
) -> Result<bool, ImageFsError> {
    let target = debugfs_target(image, offset)?;
    Ok(debugfs_type(tools, &target, path)?.is_ok())
}

/// Reads the regular file `path` out of the ext4 filesystem at byte `offset`
/// of `image` (0 for a partition image, the partition's offset for a disk
/// image) with `debugfs -R 'cat PATH'`, without mounting.
pub fn read_file_from_ext4(
    tools: &Tools,
    image: &Path,
    offset: u64,
    path: &str,
) -> Result<Vec<u8>, ImageFsError> {
    let target = debugfs_target(image, offset)?;
    let not_found = |detail: String| ImageFsError::FileNotFound {
        image: image.to_path_buf(),
        offset,
        path: path.to_string(),
        detail,
    };
    match debugfs_type(tools, &target, path)? {
        Err(complaint) => return Err(not_found(complaint)),
        Ok(kind) if kind != "regular" => return Err(not_found(format!("it is a {kind}"))),
        Ok(_) => {}
    }
    let cmd = Cmd::new(&tools.debugfs)
        .arg("-R")
        .arg(format!("cat {}", debugfs_path(path)?))
        .arg(&target);
    let out = cmd.run()?;
    let complaints = debugfs_complaints(&out.stderr_text());
    if !complaints.is_empty() {
        return Err(not_found(complaints));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Ext4Spec {
        Ext4Spec {
            size_bytes: 1 << 20,
            label: "x".into(),
            uuid: uuid::Uuid::nil(),
            hash_seed: uuid::Uuid::nil(),
            epoch: 0,
        }
    }

    #[test]
    fn spec_rules() {
        assert!(check_spec(&spec()).is_ok());
        let bad = Ext4Spec {
            size_bytes: 4097,
            ..spec()
        };
        assert!(check_spec(&bad).unwrap_err().to_string().contains("4097"));
        let bad = Ext4Spec {
            label: "a-very-long-label-indeed".into(),
            ..spec()
        };
        assert!(check_spec(&bad).unwrap_err().to_string().contains("label"));
    }

    #[test]
    fn debugfs_names() {
        assert_eq!(debugfs_path("a b/c").unwrap(), "\"/a b/c\"");
        assert!(debugfs_path("a\"b").is_err());
        assert_eq!(
            debugfs_target(Path::new("/x/disk.img"), 1048576).unwrap(),
            PathBuf::from("/x/disk.img?offset=1048576")
        );
        assert_eq!(
            debugfs_complaints("debugfs 1.47.2 (1-Jan-2025)\n/x: File not found by ext2_lookup \n"),
            "/x: File not found by ext2_lookup "
        );
    }
}
