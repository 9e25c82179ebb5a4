//! A local, flat apt repository holding exactly a lock's packages.
//!
//! [`write_repo`] puts every `.deb` of a lock into one directory (hard-linked
//! from the cache, or copied when the directory is on another file system)
//! and writes a `Packages` index for them with `apt-ftparchive packages`
//! (package `apt-utils`), which reads each `.deb`'s control data and hashes
//! the file. The index is then checked against the lock, package by
//! package (name, version, architecture, size and SHA-256), and its
//! paragraphs are sorted by package name so that the same lock always gives
//! the same bytes.
//!
//! The directory is usable as the apt source
//! `deb [trusted=yes] file:DIR ./`, for instance
//! `mmdebstrap --variant=required bookworm root.tar "deb [trusted=yes] file:DIR ./"`.
//! `trusted=yes` is sound here because every file was verified against the
//! lock, whose digests came from the signed archive index. Nothing else is
//! in the directory, so apt can install only locked packages.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{debug, info};

use crate::cache::Cache;
use crate::deb822::{self, Deb822Error};
use crate::lock::Lock;

/// Why a repository could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The target directory holds files already.
    #[error("{}: not empty: a repository is written into a new or empty directory", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{step} {}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A package of the lock is not in the cache.
    #[error("{package} {version}: not in the cache ({}): run `icos packages fetch` first", path.display())]
    NotCached {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// Where the cache would have it.
        path: PathBuf,
    },
    /// `apt-ftparchive` could not be run.
    #[error("running apt-ftparchive (install apt-utils)")]
    Spawn(#[source] io::Error),
    /// `apt-ftparchive` failed.
    #[error("apt-ftparchive packages in {} failed ({status}):\n{stderr}", dir.display())]
    Tool {
        /// The repository directory.
        dir: PathBuf,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The generated index is malformed.
    #[error(transparent)]
    Index(#[from] Deb822Error),
    /// The generated index disagrees with the lock.
    #[error("{}: {package}: {message}", dir.display())]
    Mismatch {
        /// The repository directory.
        dir: PathBuf,
        /// The package.
        package: String,
        /// What differs.
        message: String,
    },
}

/// What [`write_repo`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoReport {
    /// Packages in the repository.
    pub packages: usize,
    /// Of those, hard-linked from the cache.
    pub linked: usize,
    /// Of those, copied from the cache.
    pub copied: usize,
}

/// Writes a flat apt repository of `lock`'s packages from `cache` into
/// `dir` (created if missing; it must be empty). See the module docs.
pub fn write_repo(lock: &Lock, cache: &Cache, dir: &Path) -> Result<RepoReport, RepoError> {
    let io_err = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RepoError::Io { step, path, source }
    };
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    if fs::read_dir(dir)
        .map_err(io_err("reading", dir))?
        .next()
        .is_some()
    {
        return Err(RepoError::NotEmpty {
            dir: dir.to_path_buf(),
        });
    }

    let mut report = RepoReport::default();
    for p in &lock.packages {
        let source = cache.path_of(&p.sha256);
        let size = fs::metadata(&source).map(|m| m.len()).ok();
        if size != Some(p.size) {
            return Err(RepoError::NotCached {
                package: p.name.clone(),
                version: p.version.clone(),
                path: source,
            });
        }
        let target = dir.join(p.deb_name());
        if fs::hard_link(&source, &target).is_ok() {
            report.linked += 1;
        } else {
            fs::copy(&source, &target).map_err(io_err("copying to", &target))?;
            report.copied += 1;
        }
        report.packages += 1;
    }

    let output = Command::new("apt-ftparchive")
        .arg("packages")
        .arg(".")
        .current_dir(dir)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(RepoError::Spawn)?;
    if !output.status.success() {
        return Err(RepoError::Tool {
            dir: dir.to_path_buf(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let index_path = dir.join("Packages");
    let packages = sorted_checked_index(lock, dir, &index_path, &text)?;
    let write = |path: &Path, data: &[u8]| {
        icos_fs::write_atomic(path, data).map_err(|e| RepoError::Io {
            step: "writing",
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })
    };
    write(&index_path, packages.as_bytes())?;
    write(
        &dir.join("Release"),
        release_text(lock, packages.as_bytes()).as_bytes(),
    )?;
    info!(dir = %dir.display(), packages = report.packages, "local repository written");
    Ok(report)
}

/// A `Release` file for the flat repository. apt does not need one with
/// `trusted=yes`, but it gives the repository the lock's suite and codename,
/// which tools select packages by (mmdebstrap's `required` variant matches
/// `?codename(^bookworm$)`). The date is the lock's, so the same lock gives
/// the same bytes.
fn release_text(lock: &Lock, packages: &[u8]) -> String {
    format!(
        "Origin: icos\n\
         Label: icos\n\
         Suite: {suite}\n\
         Codename: {suite}\n\
         Date: {date}\n\
         Architectures: {arch} all\n\
         No-Support-for-Architecture-all: Packages\n\
         Description: the packages of an icos lock\n\
         SHA256:\n {sha} {size} Packages\n",
        suite = lock.suite,
        date = lock.date,
        arch = lock.architecture,
        sha = crate::digest::Sha256::of(packages),
        size = packages.len(),
    )
}

/// Checks the generated index against the lock and re-emits it sorted by
/// package name.
fn sorted_checked_index(
    lock: &Lock,
    dir: &Path,
    index_path: &Path,
    text: &str,
) -> Result<String, RepoError> {
    let mismatch = |package: &str, message: String| RepoError::Mismatch {
        dir: dir.to_path_buf(),
        package: package.to_owned(),
        message,
    };
    let mut stanzas: BTreeMap<String, String> = BTreeMap::new();
    for p in deb822::parse(index_path, text)? {
        let name = p.get("Package").unwrap_or_default();
        let locked = lock
            .package(name)
            .ok_or_else(|| mismatch(name, "in the index but not in the lock".into()))?;
        let checks = [
            ("Version", locked.version.clone()),
            ("Architecture", locked.architecture.clone()),
            ("Size", locked.size.to_string()),
            ("SHA256", locked.sha256.to_string()),
            ("Filename", format!("./{}", locked.deb_name())),
        ];
        for (field, expected) in checks {
            let actual = p.get(field).unwrap_or_default();
            if actual != expected {
                return Err(mismatch(
                    name,
                    format!("{field} is {actual:?} in the .deb, the lock pins {expected:?}"),
                ));
            }
        }
        let mut stanza = String::new();
        for (field, value) in &p.fields {
            stanza.push_str(field);
            stanza.push(':');
            stanza.push_str(value);
            stanza.push('\n');
        }
        if stanzas.insert(name.to_owned(), stanza).is_some() {
            return Err(mismatch(name, "appears twice in the index".into()));
        }
    }
    if let Some(missing) = lock
        .packages
        .iter()
        .find(|p| !stanzas.contains_key(&p.name))
    {
        return Err(mismatch(&missing.name, "missing from the index".into()));
    }
    debug!(count = stanzas.len(), "index checked against the lock");
    Ok(stanzas.into_values().collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256;
    use crate::lock::LockedPackage;
    use crate::test_support::lock;

    /// Builds a real, tiny `.deb` with dpkg-deb and returns its bytes.
    fn build_deb(dir: &Path, name: &str, version: &str, depends: &str) -> Vec<u8> {
        let root = dir.join(format!("{name}-root"));
        fs::create_dir_all(root.join("DEBIAN")).unwrap();
        fs::create_dir_all(root.join("usr/share/doc").join(name)).unwrap();
        fs::write(root.join("usr/share/doc").join(name).join("README"), name).unwrap();
        let mut control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: icos <icos@example.org>\nDescription: test package {name}\n"
        );
        if !depends.is_empty() {
            control.push_str(&format!("Depends: {depends}\n"));
        }
        fs::write(root.join("DEBIAN/control"), control).unwrap();
        let out = dir.join(format!("{name}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(&root)
            .arg(&out)
            .output()
            .expect("dpkg-deb (package dpkg) is needed by this test");
        assert!(status.status.success(), "{status:?}");
        fs::read(out).unwrap()
    }

    fn locked(name: &str, version: &str, body: &[u8]) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "all".into(),
            // Like the archive, file names leave out the epoch.
            filename: format!(
                "pool/main/t/{name}/{name}_{}_all.deb",
                version.split_once(':').map_or(version, |(_, v)| v)
            ),
            size: body.len() as u64,
            sha256: Sha256::of(body),
        }
    }

    fn put(cache: &Cache, body: &[u8]) {
        let path = cache.path_of(&Sha256::of(body));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    #[test]
    fn writes_a_flat_repository_matching_the_lock() {
        let work = tempfile::tempdir().unwrap();
        let zeta = build_deb(work.path(), "zeta", "2.0-1", "alpha (>= 1)");
        let alpha = build_deb(work.path(), "alpha", "1:1.0+b1", "");
        let cache = Cache::new(work.path().join("cache"));
        put(&cache, &zeta);
        put(&cache, &alpha);
        let lock = lock(
            "http://127.0.0.1:9",
            vec![
                locked("zeta", "2.0-1", &zeta),
                locked("alpha", "1:1.0+b1", &alpha),
            ],
        );

        let repo = work.path().join("repo");
        let report = write_repo(&lock, &cache, &repo).unwrap();
        assert_eq!(report.packages, 2);
        assert_eq!(report.linked + report.copied, 2);
        let mut names: Vec<String> = fs::read_dir(&repo)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "Packages",
                "Release",
                "alpha_1.0+b1_all.deb",
                "zeta_2.0-1_all.deb"
            ]
        );

        let text = fs::read_to_string(repo.join("Packages")).unwrap();
        let index = crate::deb822::PackagesIndex::parse(Path::new("Packages"), &text).unwrap();
        let names: Vec<&str> = index.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        let z = index.by_filename("./zeta_2.0-1_all.deb").unwrap();
        assert_eq!(z.sha256, Sha256::of(&zeta));
        assert!(text.contains("Depends: alpha (>= 1)\n"), "{text}");
        let release = fs::read_to_string(repo.join("Release")).unwrap();
        let release =
            crate::deb822::Release::parse_inrelease(Path::new("Release"), &release).unwrap();
        assert_eq!(release.codename.as_deref(), Some("bookworm"));
        assert_eq!(release.date, lock.date);
        assert_eq!(
            release.sha256["Packages"],
            (text.len() as u64, Sha256::of(text.as_bytes()))
        );

        // A second run needs an empty directory.
        let err = write_repo(&lock, &cache, &repo).unwrap_err();
        assert!(matches!(err, RepoError::NotEmpty { .. }), "{err}");
    }

    #[test]
    fn refuses_missing_and_mislabelled_packages() {
        let work = tempfile::tempdir().unwrap();
        let cache = Cache::new(work.path().join("cache"));
        let alpha = build_deb(work.path(), "alpha", "1.0", "");
        let lock_missing = lock("http://x", vec![locked("alpha", "1.0", &alpha)]);
        let err = write_repo(&lock_missing, &cache, &work.path().join("r1")).unwrap_err();
        assert!(
            err.to_string().starts_with("alpha 1.0: not in the cache"),
            "{err}"
        );

        // The lock says 1.1, the .deb says 1.0.
        put(&cache, &alpha);
        let lying = lock("http://x", vec![locked("alpha", "1.1", &alpha)]);
        let err = write_repo(&lying, &cache, &work.path().join("r2")).unwrap_err();
        assert!(
            err.to_string()
                .contains("alpha: Version is \"1.0\" in the .deb, the lock pins \"1.1\""),
            "{err}"
        );
    }
}
