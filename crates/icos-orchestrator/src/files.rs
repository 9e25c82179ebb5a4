//! Atomic writes of generated files, done only when the contents change.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Error;

/// Writes `data` to `path` (mode `mode`) through a temporary file in the
/// same folder, synced and renamed into place, unless the file already
/// holds exactly `data`. Returns whether it wrote.
pub fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, "creating", e))?;
    f.write_all(data)
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, "writing", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "replacing", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "syncing", e))?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_changes_with_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/file");
        assert!(write_if_changed(&p, b"one", 0o600).unwrap());
        assert!(!write_if_changed(&p, b"one", 0o600).unwrap());
        assert!(write_if_changed(&p, b"two", 0o600).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        let err = write_if_changed(&d.path().join("a/b/file/x"), b"", 0o600).unwrap_err();
        assert!(err.to_string().contains("a/b/file"), "{err}");
    }
}
