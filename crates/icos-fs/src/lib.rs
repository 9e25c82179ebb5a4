//! Durable file writes.
//!
//! A reader of a file written with [`write_atomic`] sees either the old
//! content or the new content, never a mix, even across a crash: the data is
//! written to a temporary file in the same directory, fsynced, renamed over
//! the target, and then the directory itself is fsynced so the rename is on
//! disk too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A failed durable write, naming the file it was about.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The target path has no parent directory or file name.
    #[error("{path}: not a file path")]
    NotAFilePath {
        /// The offending path.
        path: PathBuf,
    },
    /// An I/O step failed.
    #[error("{step} {path}")]
    Io {
        /// What was being done: "creating", "writing", "syncing", "renaming to".
        step: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically and durably (see the crate docs).
///
/// The file gets mode 0644 (subject to the umask) unless it already exists,
/// in which case its permissions are kept.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FsError> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => {
            return Err(FsError::NotAFilePath {
                path: path.to_path_buf(),
            });
        }
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())
                .map_err(io_err("setting permissions of", &tmp))?;
        }
        file.write_all(data).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("renaming to", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_new_file_and_replaces_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_directory_is_reported_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("x");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
    }
}
