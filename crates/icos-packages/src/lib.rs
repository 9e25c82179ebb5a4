//! Pinned Debian package inputs for reproducible images.
//!
//! Images are built from Debian packages, and a bit-for-bit reproducible
//! image needs bit-for-bit the same packages every time. This crate pins
//! them and hands them to the image build:
//!
//! 1. **Lists** ([`list`]): the packages an image asks for, one name per
//!    line (`images/guestos/packages.list`).
//! 2. **Resolution** ([`mod@resolve`]): apt computes the dependency closure of
//!    a list against Debian's signed archive index, in a private apt root;
//!    each package's version, pool path, size and SHA-256 come from the
//!    verified `Packages` index ([`deb822`]).
//! 3. **The lock** ([`lock`]): the closure as a committed, diffable TOML
//!    file, sorted by name, with the archive's `InRelease` date.
//! 4. **The cache** ([`mod@cache`]): `fetch` downloads each locked package into
//!    a content-addressed directory (`sha256/<hex>.deb`), verifying size and
//!    SHA-256 before a file gets its name, and refuses any package that does
//!    not match, naming it. When everything is cached, nothing touches the
//!    network.
//! 5. **A local repository** ([`repo`]): the locked `.deb` files and their
//!    `Packages` index in one directory, an apt source for mmdebstrap or
//!    debootstrap that holds exactly the locked packages.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use icos_packages::{Cache, FetchOptions, Lock, ResolveOptions, fetch, read_lists, resolve, write_repo};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Refresh the lock (network, apt-get):
//! let names = read_lists(&[PathBuf::from("images/guestos/packages.list")])?;
//! resolve(&names, &ResolveOptions::default())?.store(Path::new("images/guestos/packages.lock"))?;
//!
//! // Build inputs (network only for what is not cached yet):
//! let lock = Lock::load(Path::new("images/guestos/packages.lock"))?;
//! let cache = Cache::default_location()?;
//! fetch(&lock, &cache, &FetchOptions::default())?;
//! write_repo(&lock, &cache, Path::new("build/guestos-repo"))?;
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod deb822;
pub mod digest;
pub mod list;
pub mod lock;
pub mod repo;
pub mod resolve;

#[cfg(test)]
mod test_support;

pub use cache::{Cache, FetchError, FetchOptions, FetchReport, Progress, fetch};
pub use digest::Sha256;
pub use list::{ListError, parse_list, read_lists};
pub use lock::{Lock, LockError, LockedPackage};
pub use repo::{RepoError, RepoReport, write_repo};
pub use resolve::{ResolveError, ResolveOptions, resolve};
