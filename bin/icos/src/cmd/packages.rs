//! `icos packages`: pin the Debian packages that images are built from,
//! fetch them into a verified content-addressed cache, and lay them out as a
//! local apt repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use icos_packages::cache::human_bytes;
use icos_packages::resolve::{
    DEFAULT_ARCHITECTURE, DEFAULT_KEYRING, DEFAULT_MIRROR, DEFAULT_SUITE,
};
use icos_packages::{
    Cache, FetchError, FetchOptions, ListError, Lock, LockError, Progress, ResolveError,
    ResolveOptions, fetch, read_lists, resolve, write_repo,
};

use crate::exit::{Classify, CmdResult, Failure};

/// `icos packages` subcommands.
#[derive(Debug, Subcommand)]
pub enum PackagesCmd {
    /// Resolve package lists to their full dependency closure against
    /// Debian's signed archive index and write the lock file.
    ///
    /// apt resolves in a private root (empty dpkg status, only Debian's
    /// archive keyring, no host configuration) with
    /// --no-install-recommends; every Priority: required and Essential
    /// package is added unless --no-required. Needs the network and apt-get.
    Lock(LockArgs),
    /// Download every package of a lock into the content-addressed cache,
    /// verifying size and SHA-256; a package that does not match is refused
    /// (exit 1) and never enters the cache.
    ///
    /// Cached packages are re-verified and not downloaded again; when all
    /// are cached no connection is made.
    Fetch(FetchArgs),
    /// Write a flat apt repository holding exactly a lock's packages, from
    /// the cache (run fetch first); use it as
    /// `deb [trusted=yes] file:DIR ./`.
    Repo(RepoArgs),
    /// Check a lock file, and with --list that it was made from these lists
    /// (the lists' names are exactly the lock's `requested`). No network.
    Check(CheckArgs),
}

/// Arguments of `icos packages lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Package list files: one name per line (`name/suite` for another suite), `#` comments.
    #[arg(long = "list", value_name = "FILE", required = true, num_args = 1..)]
    lists: Vec<PathBuf>,
    /// The lock file to write.
    #[arg(short, long, value_name = "LOCK")]
    output: PathBuf,
    /// The Debian mirror root URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_MIRROR)]
    mirror: String,
    /// The suite codename.
    #[arg(long, default_value = DEFAULT_SUITE)]
    suite: String,
    /// The architecture.
    #[arg(long, default_value = DEFAULT_ARCHITECTURE)]
    architecture: String,
    /// An archive component to use (repeat for more).
    #[arg(long = "component", value_name = "NAME", default_values_t = [String::from("main")])]
    components: Vec<String>,
    /// The keyring that must have signed the archive's InRelease.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_KEYRING)]
    keyring: PathBuf,
    /// Do not add the Priority: required and Essential packages (for
    /// build-only inputs that are unpacked, not installed into a root).
    #[arg(long)]
    no_required: bool,
}

/// How `fetch` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, a line per download otherwise.
    Auto,
    /// A line per download.
    Lines,
    /// Only the summary.
    None,
}

/// Arguments of `icos packages fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The lock file.
    #[arg(long, value_name = "LOCK")]
    lock: PathBuf,
    /// The cache directory [default: $ICOS_CACHE, else $XDG_CACHE_HOME/icos,
    /// else ~/.cache/icos].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Download from this mirror root instead of the lock's (the pool paths
    /// and digests stay those of the lock).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Parallel downloads (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
    jobs: u8,
    /// Never use the network: a package missing from the cache is an error.
    #[arg(long)]
    offline: bool,
    /// How to show progress on stderr.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

/// Arguments of `icos packages repo`.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// The lock file.
    #[arg(long, value_name = "LOCK")]
    lock: PathBuf,
    /// The cache directory (as for fetch).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// The repository directory to write (new or empty).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

/// Arguments of `icos packages check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The lock file.
    #[arg(long, value_name = "LOCK")]
    lock: PathBuf,
    /// The package lists the lock should have been made from.
    #[arg(long = "list", value_name = "FILE", num_args = 1..)]
    lists: Vec<PathBuf>,
}

/// Runs an `icos packages` subcommand.
pub fn run(cmd: PackagesCmd) -> CmdResult {
    match cmd {
        PackagesCmd::Lock(args) => lock(&args),
        PackagesCmd::Fetch(args) => fetch_cmd(&args),
        PackagesCmd::Repo(args) => repo(&args),
        PackagesCmd::Check(args) => check(&args),
    }
}

fn load_lock(path: &Path) -> CmdResult<Lock> {
    Lock::load(path).map_err(|e: LockError| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })
}

fn lists(paths: &[PathBuf]) -> CmdResult<Vec<String>> {
    read_lists(paths).map_err(|e: ListError| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })
}

fn cache_of(dir: Option<&PathBuf>) -> CmdResult<Cache> {
    match dir {
        Some(dir) => Ok(Cache::new(dir)),
        None => Cache::default_location().failed(),
    }
}

fn lock(args: &LockArgs) -> CmdResult {
    let names = lists(&args.lists)?;
    let options = ResolveOptions {
        mirror: args.mirror.clone(),
        suite: args.suite.clone(),
        architecture: args.architecture.clone(),
        components: args.components.clone(),
        keyring: args.keyring.clone(),
        include_required: !args.no_required,
    };
    let lock = resolve(&names, &options).map_err(|e: ResolveError| {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })?;
    lock.store(&args.output).failed()?;
    println!(
        "{}: {} packages ({} requested), {}, archive {} {} of {}",
        args.output.display(),
        lock.packages.len(),
        lock.requested.len(),
        human_bytes(lock.total_size()),
        lock.mirror,
        lock.suite,
        lock.date
    );
    Ok(())
}

fn fetch_cmd(args: &FetchArgs) -> CmdResult {
    let lock = load_lock(&args.lock)?;
    let cache = cache_of(args.cache.as_ref())?;
    let options = FetchOptions {
        mirror: args.mirror.clone(),
        jobs: usize::from(args.jobs),
        offline: args.offline,
        progress: match args.progress {
            ProgressArg::Auto => Progress::Auto,
            ProgressArg::Lines => Progress::Lines,
            ProgressArg::None => Progress::Quiet,
        },
        ..FetchOptions::default()
    };
    let started = Instant::now();
    let report = fetch(&lock, &cache, &options)
        .map_err(|e: FetchError| anyhow!(e).context(format!("fetching {}", args.lock.display())))
        .failed()?;
    println!(
        "{} packages, {}: {} cached, {} downloaded ({}) into {} in {:.1} s",
        report.packages,
        human_bytes(report.total_bytes),
        report.cached,
        report.downloaded,
        human_bytes(report.downloaded_bytes),
        cache.root().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn repo(args: &RepoArgs) -> CmdResult {
    let lock = load_lock(&args.lock)?;
    let cache = cache_of(args.cache.as_ref())?;
    let report = write_repo(&lock, &cache, &args.output).failed()?;
    println!(
        "{}: {} packages ({} linked, {} copied); apt source: deb [trusted=yes] file:{} ./",
        args.output.display(),
        report.packages,
        report.linked,
        report.copied,
        std::path::absolute(&args.output)
            .unwrap_or_else(|_| args.output.clone())
            .display()
    );
    Ok(())
}

fn check(args: &CheckArgs) -> CmdResult {
    let lock = load_lock(&args.lock)?;
    if !args.lists.is_empty() {
        let names = lists(&args.lists)?;
        let added: Vec<&String> = names
            .iter()
            .filter(|n| !lock.requested.contains(n))
            .collect();
        let removed: Vec<&String> = lock
            .requested
            .iter()
            .filter(|n| !names.contains(n))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            return Err(anyhow!(
                "{}: out of date with the lists (run `icos packages lock`): listed but not locked: [{}]; locked but not listed: [{}]",
                args.lock.display(),
                join(&added),
                join(&removed)
            ))
            .bad_input();
        }
    }
    println!(
        "{}: {} packages, {}, {} {} {} of {}",
        args.lock.display(),
        lock.packages.len(),
        human_bytes(lock.total_size()),
        lock.mirror,
        lock.suite,
        lock.architecture,
        lock.date
    );
    Ok(())
}
