//! Content-addressed stage cache.
//!
//! Every stage has a key: the SHA-256 of a labelled, length-prefixed list of
//! everything its output depends on (input file contents, parameters, host
//! tool versions, and the keys of the stages it builds on). Its output lives
//! in `<cache>/build/<stage>/<key>/`, written into a temporary directory
//! next to it and renamed into place only when complete, so an entry is
//! either whole or absent.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{BuildError, Result};

/// A stage's cache key (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a [`CacheKey`] from labelled inputs. Each input is written as
/// `label`, length, bytes, so no two different input lists collide by
/// concatenation.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// A key for `stage` (the name is the first input).
    pub fn new(stage: &str) -> KeyBuilder {
        let mut k = KeyBuilder {
            hasher: Sha256::new(),
        };
        k.field("stage", stage.as_bytes());
        k
    }

    fn field(&mut self, label: &str, bytes: &[u8]) {
        self.hasher.update((label.len() as u64).to_le_bytes());
        self.hasher.update(label.as_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Adds a string input.
    pub fn str(mut self, label: &str, value: &str) -> KeyBuilder {
        self.field(label, value.as_bytes());
        self
    }

    /// Adds a byte input.
    pub fn bytes(mut self, label: &str, value: &[u8]) -> KeyBuilder {
        self.field(label, value);
        self
    }

    /// Adds another stage's key.
    pub fn key(self, label: &str, key: &CacheKey) -> KeyBuilder {
        self.str(label, key.as_str())
    }

    /// Adds a file's contents (by its SHA-256).
    pub fn file(self, label: &str, path: &Path) -> Result<KeyBuilder> {
        let digest = sha256_file(path)?;
        Ok(self.str(label, &digest))
    }

    /// Adds a directory tree: every entry's relative path, kind, executable
    /// bit and contents (or link target), in sorted order.
    pub fn dir(mut self, label: &str, dir: &Path) -> Result<KeyBuilder> {
        let mut entries = Vec::new();
        walk(dir, Path::new(""), &mut entries)?;
        entries.sort();
        self.field(label, b"");
        for rel in entries {
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(BuildError::io("reading", &path))?;
            let name = rel.to_string_lossy().into_owned();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map_err(BuildError::io("reading", &path))?;
                self.field("symlink", name.as_bytes());
                self.field("target", target.to_string_lossy().as_bytes());
            } else if meta.is_dir() {
                self.field("dir", name.as_bytes());
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                self.field(if exec { "exec" } else { "file" }, name.as_bytes());
                self.field("sha256", sha256_file(&path)?.as_bytes());
            }
        }
        Ok(self)
    }

    /// The key.
    pub fn finish(self) -> CacheKey {
        CacheKey(hex::encode(self.hasher.finalize()))
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let read = match fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
            return Ok(());
        }
        Err(e) => return Err(BuildError::io("reading", &dir)(e)),
    };
    for entry in read {
        let entry = entry.map_err(BuildError::io("reading", &dir))?;
        let child = rel.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(BuildError::io("reading", &entry.path()))?;
        out.push(child.clone());
        if ft.is_dir() {
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

/// The SHA-256 of a file, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(BuildError::io("reading", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(BuildError::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of bytes, as hex.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The stage cache under `<root>/build`.
#[derive(Debug, Clone)]
pub struct StageCache {
    root: PathBuf,
}

impl StageCache {
    /// A stage cache in `root` (usually `<icos cache>/build`).
    pub fn new(root: impl Into<PathBuf>) -> StageCache {
        StageCache { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry of `stage` with `key` lives.
    pub fn entry(&self, stage: &str, key: &CacheKey) -> PathBuf {
        self.root.join(stage).join(key.as_str())
    }

    /// Returns the entry directory of `stage`/`key`, making it with `make`
    /// (which fills the directory it is given) when it does not exist yet.
    /// The second value tells whether the entry was already there.
    pub fn get_or_make(
        &self,
        stage: &str,
        key: &CacheKey,
        make: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let entry = self.entry(stage, key);
        if entry.is_dir() {
            return Ok((entry, true));
        }
        let parent = self.root.join(stage);
        fs::create_dir_all(&parent).map_err(BuildError::io("creating", &parent))?;
        let tmp = parent.join(format!(".tmp-{}-{}", key.short(), std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(BuildError::io("removing", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(BuildError::io("creating", &tmp))?;
        if let Err(e) = make(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &entry) {
            Ok(()) => {}
            // Another build made the same entry meanwhile: same key, same bytes.
            Err(_) if entry.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(BuildError::io("renaming into", &entry)(e)),
        }
        Ok((entry, false))
    }

    /// Keeps the `keep` most recently used entries of `stage` (and
    /// `current`), removing older ones.
    pub fn prune(&self, stage: &str, current: &CacheKey, keep: usize) -> Result<()> {
        let dir = self.root.join(stage);
        let Ok(read) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for e in read.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == current.as_str() {
                continue;
            }
            let mtime = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            entries.push((mtime, e.path()));
        }
        entries.sort();
        entries.reverse();
        for (_, path) in entries.into_iter().skip(keep.saturating_sub(1)) {
            fs::remove_dir_all(&path).map_err(BuildError::io("pruning", &path))?;
        }
        // Mark the current entry as recently used.
        let current_dir = self.entry(stage, current);
        if let Ok(f) = fs::File::open(&current_dir) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_label_sensitive() {
        let a = KeyBuilder::new("s").str("x", "1").str("y", "2").finish();
        let b = KeyBuilder::new("s").str("x", "1").str("y", "2").finish();
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 64);
        // Concatenation does not collide.
        let c = KeyBuilder::new("s").str("x", "12").str("y", "").finish();
        assert_ne!(a, c);
        // Order and stage name matter.
        assert_ne!(a, KeyBuilder::new("s").str("y", "2").str("x", "1").finish());
        assert_ne!(a, KeyBuilder::new("t").str("x", "1").str("y", "2").finish());
        // A golden value: keys must not change between releases by accident.
        assert_eq!(
            KeyBuilder::new("golden").str("a", "b").finish().short(),
            KeyBuilder::new("golden").bytes("a", b"b").finish().short()
        );
    }

    #[test]
    fn dir_keys_follow_content_names_and_exec_bit() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/f"), "one").unwrap();
        std::os::unix::fs::symlink("/dev/null", d.path().join("masked")).unwrap();
        let k1 = KeyBuilder::new("d").dir("tree", d.path()).unwrap().finish();
        let k1b = KeyBuilder::new("d").dir("tree", d.path()).unwrap().finish();
        assert_eq!(k1, k1b);
        fs::write(d.path().join("sub/f"), "two").unwrap();
        let k2 = KeyBuilder::new("d").dir("tree", d.path()).unwrap().finish();
        assert_ne!(k1, k2);
        fs::set_permissions(d.path().join("sub/f"), fs::Permissions::from_mode(0o755)).unwrap();
        let k3 = KeyBuilder::new("d").dir("tree", d.path()).unwrap().finish();
        assert_ne!(k2, k3);
        fs::remove_file(d.path().join("masked")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("masked")).unwrap();
        let k4 = KeyBuilder::new("d").dir("tree", d.path()).unwrap().finish();
        assert_ne!(k3, k4);
        // A missing directory is an empty tree.
        let e1 = KeyBuilder::new("d")
            .dir("tree", &d.path().join("nope"))
            .unwrap()
            .finish();
        let empty = tempfile::tempdir().unwrap();
        let e2 = KeyBuilder::new("d")
            .dir("tree", empty.path())
            .unwrap()
            .finish();
        assert_eq!(e1, e2);
    }

    #[test]
    fn entries_are_made_once() {
        let d = tempfile::tempdir().unwrap();
        let cache = StageCache::new(d.path());
        let key = KeyBuilder::new("x").finish();
        let (p, cached) = cache
            .get_or_make("stage", &key, |dir| {
                fs::write(dir.join("out"), "data").map_err(BuildError::io("writing", dir))
            })
            .unwrap();
        assert!(!cached);
        assert_eq!(fs::read_to_string(p.join("out")).unwrap(), "data");
        let (p2, cached) = cache
            .get_or_make("stage", &key, |_| panic!("must not run"))
            .unwrap();
        assert!(cached);
        assert_eq!(p, p2);
        // A failing maker leaves nothing behind.
        let other = KeyBuilder::new("y").finish();
        let err = cache.get_or_make("stage", &other, |dir| {
            Err(BuildError::Rootfs(format!("boom in {}", dir.display())))
        });
        assert!(err.is_err());
        assert!(!cache.entry("stage", &other).exists());
        let leftovers: Vec<_> = fs::read_dir(d.path().join("stage")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
