//! `icos repro-check`: rebuild and compare, to show a build is bit-for-bit
//! reproducible.
//!
//! * `icos repro-check guestos` copies the source tree (`git ls-files`:
//!   tracked plus untracked, not ignored, files) into two folders at
//!   different paths and depths, and runs `icos build guestos --source
//!   COPY` once for each, one after the other (so at different times), with
//!   a different `TZ` and umask (0022 and 0077, set by `sh -c 'umask …;
//!   exec "$@"'`). The driver is this `icos` binary; the Rust binaries that
//!   go into the image are compiled by the builder from each copy, into a
//!   target folder inside the copy, so their path remapping is exercised
//!   too. Each build has its own stage cache (`CACHE/build`); the verified,
//!   content-addressed `.deb` store (`CACHE/sha256`) is shared. The image
//!   version is fixed to the source tree's `git rev-parse HEAD`.
//! * `icos repro-check setupos` does the same for SetupOS, whose build
//!   includes the HostOS and GuestOS it carries; its `/commit-time` is the
//!   source tree's git commit time of `HEAD`, passed to both builds
//!   (`--commit-time`), since the copies are not git checkouts. `all`
//!   builds GuestOS, Boundary-GuestOS, HostOS and SetupOS.
//! * `--first-in-tree` makes build A a normal build of the source tree
//!   itself: its own `target/image` and the shared stage cache, so what an
//!   earlier build of the same inputs made is taken from there (whenever
//!   and wherever it was built). Build B stays a fresh copy with a fresh
//!   cache, so two real builds are still compared; the check costs one
//!   build instead of two when the tree was built already (the test
//!   command's VM tests build every image first).
//! * `icos repro-check --against SHA256SUMS` builds once the same way and
//!   compares with published sums: the verifier's workflow.
//! * `icos repro-check --compare A B` builds nothing: it compares two
//!   existing build outputs (folders holding `guestos/`) or two images.
//!
//! The report is a table (artifact, SHA-256 A, SHA-256 B, same?) over the
//! four artifacts; when an archive differs, its decompressed images
//! (`disk.img`, or `boot.img` and `root.img`) get rows too. When the disks
//! differ, each GPT partition (and the table
//! itself) is compared; a differing ext4 partition or image is unpacked
//! with `debugfs -R 'rdump / DIR'` and a vfat one with `mcopy -s`, and the
//! files that differ are named (content, type, mode, link target, or
//! present on one side only). Without a differing file, the differing
//! superblock fields (`dumpe2fs -h`) are named.
//!
//! Exit 0: identical; 1: a difference (or a failed build); 2: bad input
//! (an unreadable or malformed SHA256SUMS, a missing folder).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use icos_packages::Sha256;
use serde::Serialize;

use crate::cmd::run::{WorkDir, default_work_parent};
use crate::exit::{Classify, CmdResult, Failure};

/// The artifacts of a GuestOS build, in `DIR/guestos/`.
pub const ARTIFACTS: [&str; 4] = [
    "disk-img.tar.zst",
    "update-img.tar.zst",
    "SHA256SUMS",
    "VERSION.TXT",
];
/// The artifacts of a SetupOS build, in `DIR/setupos/` (no upgrade image).
pub const SETUPOS_ARTIFACTS: [&str; 3] = ["disk-img.tar.zst", "SHA256SUMS", "VERSION.TXT"];
/// The images inside the archives: (archive, member).
const INNER: [(&str, &str); 3] = [
    ("disk-img.tar.zst", "disk.img"),
    ("update-img.tar.zst", "boot.img"),
    ("update-img.tar.zst", "root.img"),
];
const SECTOR: u64 = 512;
const CHUNK: usize = 1 << 20;

/// The image to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OsArg {
    /// GuestOS.
    Guestos,
    /// Boundary-GuestOS.
    #[value(name = "boundary-guestos")]
    BoundaryGuestos,
    /// HostOS.
    Hostos,
    /// SetupOS (which builds the HostOS and GuestOS it carries first).
    Setupos,
    /// GuestOS, Boundary-GuestOS, HostOS and SetupOS, one after the other
    /// in each build's source copy.
    All,
}

impl OsArg {
    /// The `icos build` targets, in build order.
    fn targets(self) -> &'static [&'static str] {
        match self {
            OsArg::Guestos => &["guestos"],
            OsArg::BoundaryGuestos => &["boundary-guestos"],
            OsArg::Hostos => &["hostos"],
            OsArg::Setupos => &["setupos"],
            OsArg::All => &["guestos", "boundary-guestos", "hostos", "setupos"],
        }
    }
}

/// The build variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvArg {
    /// Development image (console login allowed).
    Dev,
    /// Production image.
    Prod,
}

impl EnvArg {
    fn as_str(self) -> &'static str {
        match self {
            EnvArg::Dev => "dev",
            EnvArg::Prod => "prod",
        }
    }
}

/// Arguments of `icos repro-check`.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct ReproCheckArgs {
    /// The image to rebuild.
    #[arg(value_enum, default_value_t = OsArg::Guestos)]
    os: OsArg,
    /// The GuestOS and Boundary-GuestOS build variant (HostOS has one).
    #[arg(long, value_enum, default_value_t = EnvArg::Dev)]
    env: EnvArg,
    /// Build once and compare with these published sums (the verifier's
    /// workflow) instead of building twice.
    #[arg(long, value_name = "SHA256SUMS", conflicts_with = "compare")]
    against: Option<PathBuf>,
    /// Build nothing: compare two build outputs (folders holding guestos/)
    /// or two images (disk.img, or a disk-img.tar.zst).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Build A is a normal build of the source tree itself (its target
    /// folder, the shared stage cache) instead of a fresh copy; build B is
    /// still built from nothing.
    #[arg(long, conflicts_with_all = ["compare", "against"])]
    first_in_tree: bool,
    /// The source tree [default: the git work tree of the current folder].
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// The image version [default: `git rev-parse HEAD` of the source tree].
    #[arg(long = "version", id = "image_version", value_name = "VERSION")]
    version: Option<String>,
    /// Where the work folder is made [default: $TMPDIR, else /var/tmp].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work folder (source copies, builds, unpacked files).
    #[arg(long)]
    keep: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// The artifact.
    pub artifact: String,
    /// Its SHA-256 on side A (the first build, or the published sum).
    pub sha256_a: Option<String>,
    /// Its SHA-256 on side B (the second build, or the local build).
    pub sha256_b: Option<String>,
    /// Whether both exist and are equal.
    pub same: bool,
}

/// A file that differs inside a differing filesystem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileDiff {
    /// The path inside the filesystem, starting with `/`.
    pub path: String,
    /// What differs.
    pub change: String,
}

/// A region of an image that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegionDiff {
    /// The image (`disk.img`, `boot.img`, `root.img`).
    pub image: String,
    /// The GPT partition name, `GPT` for the table, `unpartitioned` for
    /// the rest, or `whole image`.
    pub region: String,
    /// Bytes `[start, end)` of the image.
    pub range: (u64, u64),
    /// The filesystem found there (`ext4`, `vfat`) if any.
    pub filesystem: Option<String>,
    /// The files that differ.
    pub files: Vec<FileDiff>,
    /// Anything else worth knowing (superblock fields, tool failures).
    pub notes: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What side A is.
    pub a: String,
    /// What side B is.
    pub b: String,
    /// Whether everything compared equal.
    pub identical: bool,
    /// The table.
    pub artifacts: Vec<Row>,
    /// Where the differences are.
    pub differences: Vec<RegionDiff>,
}

/// Runs `icos repro-check`.
pub fn run(args: ReproCheckArgs) -> CmdResult {
    let targets = args.os.targets();
    // Inputs first: nothing is built for bad input.
    let published = match &args.against {
        Some(path) => Some(read_sums(path)?),
        None => None,
    };
    if published.is_some() && targets.len() > 1 {
        return Err(Failure::BadInput(anyhow!(
            "--against compares one image's SHA256SUMS: name guestos, boundary-guestos, hostos or setupos, not all"
        )));
    }
    let parent = args.work_dir.clone().unwrap_or_else(default_work_parent);

    let report = if let Some(pair) = &args.compare {
        let [a, b] = pair.as_slice() else {
            return Err(Failure::BadInput(anyhow!("--compare takes two paths")));
        };
        let work = WorkDir::create(&parent, "icos-repro", args.keep).failed()?;
        let report = compare_paths(a, b, work.path())?;
        finish_work(&work);
        report
    } else {
        let source = source_tree(args.source.as_deref())?;
        let version = match &args.version {
            Some(v) => v.clone(),
            None => git(&source, &["rev-parse", "HEAD"])
                .context("finding the image version (pass --version)")
                .bad_input()?,
        };
        let commit_time = git(&source, &["log", "-1", "--format=%ct", "HEAD"])
            .ok()
            .and_then(|t| t.parse().ok());
        let work = WorkDir::create(&parent, "icos-repro", args.keep).failed()?;
        let files = source_files(&source).bad_input()?;
        // Each build differs only in its plan (copy, cache, TZ, umask).
        let build_by = |plan: &Plan| {
            build(
                plan,
                &source,
                &files,
                &version,
                args.env,
                targets,
                commit_time,
            )
        };
        let report = match published {
            Some((sums_path, sums)) => {
                let out = build_by(&Plan::a(work.path()))?;
                against(&sums_path, &sums, &out.join(targets[0]))?
            }
            None => {
                let plan_a = if args.first_in_tree {
                    Plan::in_tree(work.path(), &source)
                } else {
                    Plan::a(work.path())
                };
                let out_a = build_by(&plan_a)?;
                let out_b = build_by(&Plan::b(work.path()))?;
                let mut report = Report {
                    a: format!("build A ({})", out_a.display()),
                    b: format!("build B ({})", out_b.display()),
                    identical: true,
                    artifacts: Vec::new(),
                    differences: Vec::new(),
                };
                for target in targets {
                    let cmp = work.path().join("cmp").join(target);
                    let part = compare_outputs(
                        &out_a.join(target),
                        &out_b.join(target),
                        target_artifacts(target),
                        &cmp,
                    )?;
                    report.identical &= part.identical;
                    for mut row in part.artifacts {
                        if targets.len() > 1 {
                            row.artifact = format!("{target}/{}", row.artifact);
                        }
                        report.artifacts.push(row);
                    }
                    report.differences.extend(part.differences);
                }
                report
            }
        };
        finish_work(&work);
        report
    };
    print_report(&report, args.json).failed()?;
    if report.identical {
        Ok(())
    } else {
        let differing: Vec<&str> = report
            .artifacts
            .iter()
            .filter(|r| !r.same)
            .map(|r| r.artifact.as_str())
            .collect();
        Err(Failure::Failed(anyhow!(
            "not reproducible: {} differ{}",
            differing.join(", "),
            describe_regions(&report.differences)
        )))
    }
}

fn finish_work(work: &WorkDir) {
    if work.kept() {
        eprintln!("icos repro-check: kept {}", work.path().display());
    }
}

fn describe_regions(diffs: &[RegionDiff]) -> String {
    if diffs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = diffs
        .iter()
        .map(|d| {
            let files: Vec<&str> = d.files.iter().take(5).map(|f| f.path.as_str()).collect();
            if files.is_empty() {
                format!("{} {}", d.image, d.region)
            } else {
                format!("{} {} ({})", d.image, d.region, files.join(", "))
            }
        })
        .collect();
    format!("; in {}", parts.join("; "))
}

// ---------------------------------------------------------------------------
// SHA256SUMS

/// Parses `sha256sum` output: `<64 hex>  <name>` or `<64 hex> *<name>`
/// per line; blank lines are skipped. Names lose a leading `./`.
pub fn parse_sums(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        let (hash, rest) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected '<sha256>  <file>'"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the first field is not 64 hex digits"));
        }
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(|| bad("expected two spaces or ' *' between the sum and the name"))?;
        let name = name.trim_start_matches("./");
        if name.is_empty() {
            return Err(bad("no file name"));
        }
        out.push((name.to_owned(), hash.to_ascii_lowercase()));
    }
    if out.is_empty() {
        return Err("no sums in the file".to_owned());
    }
    Ok(out)
}

type Sums = (PathBuf, Vec<(String, String)>);

fn read_sums(path: &Path) -> CmdResult<Sums> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .bad_input()?;
    let sums = parse_sums(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
        .bad_input()?;
    Ok((path.to_owned(), sums))
}

fn against(sums_path: &Path, sums: &[(String, String)], out: &Path) -> CmdResult<Report> {
    let mut rows = Vec::new();
    for (name, published) in sums {
        // Published names may carry a folder (guestos/disk-img.tar.zst).
        let base = name.rsplit('/').next().unwrap_or(name);
        let local = out.join(base);
        let local_sum = if local.is_file() {
            Some(sha256_file(&local)?)
        } else {
            None
        };
        rows.push(Row {
            artifact: name.clone(),
            same: local_sum.as_deref() == Some(published.as_str()),
            sha256_a: Some(published.clone()),
            sha256_b: local_sum,
        });
    }
    Ok(Report {
        a: format!("published ({})", sums_path.display()),
        b: format!("local build ({})", out.display()),
        identical: rows.iter().all(|r| r.same),
        artifacts: rows,
        differences: Vec::new(),
    })
}

// ---------------------------------------------------------------------------
// Building

/// How one build differs from the other.
struct Plan {
    label: &'static str,
    /// Where the source copy goes.
    copy: PathBuf,
    /// Whether `copy` is the source tree itself, built in place.
    in_tree: bool,
    /// Where the artifacts go.
    out: PathBuf,
    /// The build's own cache (its stage cache is `cache/build`); `None`:
    /// the shared default cache.
    cache: Option<PathBuf>,
    tz: &'static str,
    umask: &'static str,
}

impl Plan {
    fn a(work: &Path) -> Plan {
        let root = work.join("a");
        Plan {
            label: "A",
            copy: root.join("src"),
            in_tree: false,
            out: root.join("out"),
            cache: Some(root.join("cache")),
            tz: "UTC",
            umask: "0022",
        }
    }

    fn b(work: &Path) -> Plan {
        let root = work.join("b");
        Plan {
            label: "B",
            copy: root.join("a/much/deeper/build-path-b/icos"),
            in_tree: false,
            out: root.join("out"),
            cache: Some(root.join("cache")),
            tz: "Pacific/Kiritimati",
            umask: "0077",
        }
    }

    /// Build A in the source tree itself, with the shared cache.
    fn in_tree(work: &Path, source: &Path) -> Plan {
        Plan {
            copy: source.to_owned(),
            in_tree: true,
            cache: None,
            ..Plan::a(work)
        }
    }
}

fn source_tree(given: Option<&Path>) -> CmdResult<PathBuf> {
    let start = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_dir()
            .context("finding the current folder")
            .failed()?,
    };
    let top = git(&start, &["rev-parse", "--show-toplevel"])
        .with_context(|| {
            format!(
                "{}: not inside a git work tree (pass --source)",
                start.display()
            )
        })
        .bad_input()?;
    Ok(PathBuf::from(top))
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Tracked files plus untracked files that are not ignored, that exist.
fn source_files(source: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(source)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| PathBuf::from(String::from_utf8_lossy(n).into_owned()))
        .filter(|rel| source.join(rel).symlink_metadata().is_ok())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

fn copy_tree(source: &Path, files: &[PathBuf], dest: &Path) -> anyhow::Result<()> {
    for rel in files {
        let from = source.join(rel);
        let to = dest.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let meta = from.symlink_metadata()?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from)?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("creating the link {}", to.display()))?;
        } else if meta.is_file() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// The shared `.deb` store: `$ICOS_CACHE/sha256` or the default cache's.
fn shared_deb_store() -> Option<PathBuf> {
    icos_packages::Cache::default_location()
        .ok()
        .map(|c| c.root().join("sha256"))
}

/// Makes a build's own cache folder, sharing the verified `.deb` store.
fn own_cache(cache: &Path) -> CmdResult {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("creating {}", cache.display()))
        .failed()?;
    if let Some(store) = shared_deb_store() {
        std::fs::create_dir_all(&store)
            .with_context(|| format!("creating {}", store.display()))
            .failed()?;
        std::os::unix::fs::symlink(&store, cache.join("sha256"))
            .with_context(|| format!("linking {} into {}", store.display(), cache.display()))
            .failed()?;
    }
    Ok(())
}

/// The artifacts a build of `target` writes.
fn target_artifacts(target: &str) -> &'static [&'static str] {
    if target == "setupos" {
        &SETUPOS_ARTIFACTS
    } else {
        &ARTIFACTS
    }
}

/// Builds `targets` from a fresh copy of the source as `plan` says;
/// returns the output folder (holding `guestos/`, `hostos/`).
fn build(
    plan: &Plan,
    source: &Path,
    files: &[PathBuf],
    version: &str,
    env: EnvArg,
    targets: &[&str],
    commit_time: Option<u64>,
) -> CmdResult<PathBuf> {
    let started = Instant::now();
    if plan.in_tree {
        eprintln!(
            "icos repro-check: build {}: in the source tree {}, shared cache",
            plan.label,
            plan.copy.display()
        );
    } else {
        eprintln!(
            "icos repro-check: build {}: copying {} files to {}",
            plan.label,
            files.len(),
            plan.copy.display()
        );
        copy_tree(source, files, &plan.copy).failed()?;
    }
    if let Some(cache) = &plan.cache {
        own_cache(cache)?;
    }
    let exe = std::env::current_exe()
        .context("finding the icos binary")
        .failed()?;
    eprintln!(
        "icos repro-check: build {}: TZ={} umask {} in {}",
        plan.label,
        plan.tz,
        plan.umask,
        plan.copy.display()
    );
    let script = format!("umask {}; exec \"$@\"", plan.umask);
    for target in targets {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&script).arg("sh").arg(&exe);
        cmd.args(["build", target, "--version", version]);
        if *target != "hostos" {
            cmd.args(["--env", env.as_str()]);
        }
        if *target == "setupos" {
            // The copies are not git checkouts: SetupOS's /commit-time
            // comes from the source tree's HEAD, as in a normal build.
            if let Some(t) = commit_time {
                cmd.args(["--commit-time", &t.to_string()]);
            }
        }
        cmd.arg("--source").arg(&plan.copy);
        if let Some(cache) = &plan.cache {
            cmd.arg("--cache").arg(cache);
        }
        let status = cmd
            .arg("--out")
            .arg(&plan.out)
            .current_dir(&plan.copy)
            .env("TZ", plan.tz)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("starting icos build")
            .failed()?;
        if !status.success() {
            return Err(Failure::Failed(anyhow!(
                "build {} (icos build {target} --source {}) failed: {status}",
                plan.label,
                plan.copy.display()
            )));
        }
    }
    eprintln!(
        "icos repro-check: build {} done in {:.0} s",
        plan.label,
        started.elapsed().as_secs_f64()
    );
    Ok(plan.out.clone())
}

// ---------------------------------------------------------------------------
// Comparing

fn sha256_file(path: &Path) -> CmdResult<String> {
    Sha256::of_file(path)
        .map(|(sum, _)| sum.to_hex())
        .with_context(|| format!("hashing {}", path.display()))
        .failed()
}

fn sha_of(path: &Path) -> CmdResult<Option<String>> {
    if path.is_file() {
        sha256_file(path).map(Some)
    } else {
        Ok(None)
    }
}

fn row(artifact: &str, a: Option<String>, b: Option<String>) -> Row {
    Row {
        artifact: artifact.to_owned(),
        same: a.is_some() && a == b,
        sha256_a: a,
        sha256_b: b,
    }
}

fn is_zstd_or_tar(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || (n >= 262 && &head[257..262] == b"ustar")
}

/// `--compare A B`: two output folders, or two images.
fn compare_paths(a: &Path, b: &Path, work: &Path) -> CmdResult<Report> {
    for p in [a, b] {
        if !p.exists() {
            return Err(Failure::BadInput(anyhow!("{}: not found", p.display())));
        }
    }
    let out_dir = |p: &Path| {
        if p.join("guestos").is_dir() {
            p.join("guestos")
        } else {
            p.to_owned()
        }
    };
    let mut report = match (a.is_dir(), b.is_dir()) {
        (true, true) => compare_outputs(&out_dir(a), &out_dir(b), &ARTIFACTS, work)?,
        (false, false) => compare_images(a, b, work)?,
        _ => {
            return Err(Failure::BadInput(anyhow!(
                "--compare takes two folders or two files"
            )));
        }
    };
    report.a = a.display().to_string();
    report.b = b.display().to_string();
    Ok(report)
}

/// Compares two single images (raw disks, or archives holding them).
fn compare_images(a: &Path, b: &Path, work: &Path) -> CmdResult<Report> {
    let mut artifacts = vec![row(
        &a.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha_of(a)?,
        sha_of(b)?,
    )];
    let mut differences = Vec::new();
    if !artifacts[0].same {
        let (disk_a, disk_b, name) = if is_zstd_or_tar(a) && is_zstd_or_tar(b) {
            let ea = extract(a, &work.join("a"))?;
            let eb = extract(b, &work.join("b"))?;
            let mut names: Vec<String> = ea.into_iter().chain(eb).map(|(n, _)| n).collect();
            names.sort();
            names.dedup();
            let mut first = None;
            for name in &names {
                let (pa, pb) = (work.join("a").join(name), work.join("b").join(name));
                let r = row(name, sha_of(&pa)?, sha_of(&pb)?);
                if !r.same && first.is_none() {
                    first = Some(name.clone());
                }
                artifacts.push(r);
            }
            match first {
                Some(n) => (work.join("a").join(&n), work.join("b").join(&n), n),
                None => (a.to_owned(), b.to_owned(), String::new()),
            }
        } else {
            let n = artifacts[0].artifact.clone();
            (a.to_owned(), b.to_owned(), n)
        };
        if !name.is_empty() {
            differences = diff_image(&name, &disk_a, &disk_b, &work.join("fs"))?;
        }
    }
    Ok(Report {
        a: String::new(),
        b: String::new(),
        identical: artifacts.iter().all(|r| r.same),
        artifacts,
        differences,
    })
}

/// Extracts an archive into `dest`; returns member names and sizes.
fn extract(archive: &Path, dest: &Path) -> CmdResult<Vec<(String, u64)>> {
    std::fs::create_dir_all(dest)
        .with_context(|| format!("creating {}", dest.display()))
        .failed()?;
    let members = icos_sparse_tar::extract_file(archive, dest, &mut |_| {})
        .with_context(|| format!("extracting {}", archive.display()))
        .failed()?;
    Ok(members.into_iter().map(|m| (m.name, m.size)).collect())
}

/// Compares two `guestos/` output folders.
fn compare_outputs(a: &Path, b: &Path, names: &[&str], work: &Path) -> CmdResult<Report> {
    let mut artifacts = Vec::new();
    for name in names {
        artifacts.push(row(name, sha_of(&a.join(name))?, sha_of(&b.join(name))?));
    }
    let mut extracted: BTreeMap<&str, (PathBuf, PathBuf)> = BTreeMap::new();
    for &(archive, member) in INNER.iter().filter(|(archive, _)| names.contains(archive)) {
        // An archive identical on both sides holds identical images: only a
        // differing archive is unpacked, to find where the difference is.
        if artifacts.iter().any(|r| r.artifact == archive && r.same) {
            continue;
        }
        let (pa, pb) = (a.join(archive), b.join(archive));
        let dirs = if let Some(d) = extracted.get(archive) {
            d.clone()
        } else {
            let stem = archive.trim_end_matches(".tar.zst");
            let (da, db) = (work.join("a").join(stem), work.join("b").join(stem));
            for (p, d) in [(&pa, &da), (&pb, &db)] {
                if p.is_file() {
                    extract(p, d)?;
                }
            }
            extracted.insert(archive, (da.clone(), db.clone()));
            (da, db)
        };
        artifacts.push(row(
            member,
            sha_of(&dirs.0.join(member))?,
            sha_of(&dirs.1.join(member))?,
        ));
    }
    let mut differences = Vec::new();
    for (archive, member) in INNER {
        let Some((da, db)) = extracted.get(archive) else {
            continue;
        };
        let same = artifacts
            .iter()
            .find(|r| r.artifact == member)
            .is_some_and(|r| r.same);
        let (ia, ib) = (da.join(member), db.join(member));
        if !same && ia.is_file() && ib.is_file() {
            differences.extend(diff_image(member, &ia, &ib, &work.join("fs"))?);
        }
    }
    Ok(Report {
        a: a.display().to_string(),
        b: b.display().to_string(),
        identical: artifacts.iter().all(|r| r.same),
        artifacts,
        differences,
    })
}

/// Whether bytes `[start, end)` of two files are equal.
fn ranges_equal(fa: &File, fb: &File, start: u64, end: u64) -> std::io::Result<bool> {
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut pos = start;
    while pos < end {
        let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
        let ra = read_at_full(fa, &mut ba[..n], pos)?;
        let rb = read_at_full(fb, &mut bb[..n], pos)?;
        if ra != rb || ba[..ra] != bb[..rb] {
            return Ok(false);
        }
        if ra < n {
            break;
        }
        pos += n as u64;
    }
    Ok(true)
}

fn read_at_full(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Finds the differing regions of two images: per GPT partition when both
/// have a GPT, else the whole image; differing filesystems are unpacked
/// and their differing files named.
pub(crate) fn diff_image(
    name: &str,
    a: &Path,
    b: &Path,
    work: &Path,
) -> CmdResult<Vec<RegionDiff>> {
    let open = |p: &Path| {
        File::open(p)
            .with_context(|| format!("opening {}", p.display()))
            .failed()
    };
    let (fa, fb) = (open(a)?, open(b)?);
    let size_a = fa.metadata().map(|m| m.len()).unwrap_or(0);
    let size_b = fb.metadata().map(|m| m.len()).unwrap_or(0);
    let size = size_a.max(size_b);
    let io = |e: std::io::Error| {
        Failure::Failed(anyhow!(
            "comparing {} and {}: {e}",
            a.display(),
            b.display()
        ))
    };

    let mut regions: Vec<(String, u64, u64)> = Vec::new();
    match (
        icos_layout::read_gpt_image(a),
        icos_layout::read_gpt_image(b),
    ) {
        (Ok(ta), Ok(tb)) => {
            let mut parts: Vec<(String, u64, u64)> = ta
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.start * SECTOR,
                        (p.start + p.size) * SECTOR,
                    )
                })
                .collect();
            parts.sort_by_key(|p| p.1);
            let table_a: Vec<_> = ta
                .partitions
                .iter()
                .map(|p| (&p.name, p.start, p.size))
                .collect();
            let table_b: Vec<_> = tb
                .partitions
                .iter()
                .map(|p| (&p.name, p.start, p.size))
                .collect();
            if table_a != table_b {
                regions.push(("GPT".to_owned(), 0, size));
            } else {
                let first = ta.first_usable_lba * SECTOR;
                let last = (ta.last_usable_lba + 1) * SECTOR;
                regions.push(("GPT".to_owned(), 0, first));
                regions.push(("GPT backup".to_owned(), last, size));
                let mut pos = first;
                for (pname, start, end) in &parts {
                    if *start > pos {
                        regions.push(("unpartitioned".to_owned(), pos, *start));
                    }
                    regions.push((pname.clone(), *start, *end));
                    pos = pos.max(*end);
                }
                if pos < last {
                    regions.push(("unpartitioned".to_owned(), pos, last));
                }
            }
        }
        _ => regions.push(("whole image".to_owned(), 0, size)),
    }

    let mut out = Vec::new();
    for (region, start, end) in regions {
        if start >= end || (size_a == size_b && ranges_equal(&fa, &fb, start, end).map_err(io)?) {
            continue;
        }
        let mut diff = RegionDiff {
            image: name.to_owned(),
            region: region.clone(),
            range: (start, end),
            filesystem: None,
            files: Vec::new(),
            notes: Vec::new(),
        };
        if size_a != size_b && region == "whole image" {
            diff.notes
                .push(format!("sizes differ: {size_a} and {size_b} bytes"));
        }
        if !matches!(region.as_str(), "GPT" | "GPT backup" | "unpartitioned") {
            let safe: String = format!("{name}-{region}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let dir = work.join(safe);
            diff_filesystems(&fa, &fb, start, end, &dir, &mut diff)?;
        }
        out.push(diff);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fs {
    Ext4,
    Vfat,
}

fn detect_fs(f: &File, start: u64) -> Option<Fs> {
    let mut sb = [0u8; 2048];
    let n = read_at_full(f, &mut sb, start).ok()?;
    if n >= 0x43a && sb[0x438] == 0x53 && sb[0x439] == 0xef {
        return Some(Fs::Ext4);
    }
    if n >= 512
        && sb[510] == 0x55
        && sb[511] == 0xaa
        && (sb[0x36..0x39] == *b"FAT" || sb[0x52..0x55] == *b"FAT")
    {
        return Some(Fs::Vfat);
    }
    None
}

/// Copies bytes `[start, end)` of `f` to a new sparse file.
fn copy_range(f: &File, start: u64, end: u64, to: &Path) -> std::io::Result<()> {
    let mut out = File::create(to)?;
    out.set_len(end - start)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = start;
    while pos < end {
        let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
        let got = read_at_full(f, &mut buf[..n], pos)?;
        if got == 0 {
            break;
        }
        if buf[..got].iter().any(|b| *b != 0) {
            out.seek(SeekFrom::Start(pos - start))?;
            out.write_all(&buf[..got])?;
        }
        pos += got as u64;
    }
    out.sync_all()
}

fn diff_filesystems(
    fa: &File,
    fb: &File,
    start: u64,
    end: u64,
    dir: &Path,
    diff: &mut RegionDiff,
) -> CmdResult {
    let (Some(kind), Some(kind_b)) = (detect_fs(fa, start), detect_fs(fb, start)) else {
        diff.notes
            .push("no ext4 or vfat filesystem on both sides".to_owned());
        return Ok(());
    };
    if kind != kind_b {
        diff.notes.push("the filesystem types differ".to_owned());
        return Ok(());
    }
    diff.filesystem = Some(
        match kind {
            Fs::Ext4 => "ext4",
            Fs::Vfat => "vfat",
        }
        .to_owned(),
    );
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .failed()?;
    let mut trees = Vec::new();
    for (side, f) in [("a", fa), ("b", fb)] {
        let img = dir.join(format!("{side}.img"));
        copy_range(f, start, end, &img)
            .with_context(|| format!("writing {}", img.display()))
            .failed()?;
        let tree = dir.join(side);
        std::fs::create_dir_all(&tree)
            .with_context(|| format!("creating {}", tree.display()))
            .failed()?;
        let result = match kind {
            Fs::Ext4 => tool(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump / {}", tree.display()))
                    .arg(&img),
            ),
            Fs::Vfat => tool(
                Command::new("mcopy")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .args(["-s", "-n", "-p", "-m", "-i"])
                    .arg(&img)
                    .arg("::*")
                    .arg(&tree),
            ),
        };
        if let Err(e) = result {
            diff.notes.push(format!("unpacking side {side}: {e:#}"));
        }
        trees.push((img, tree));
    }
    diff.files = diff_trees(&trees[0].1, &trees[1].1).failed()?;
    if diff.files.is_empty() && kind == Fs::Ext4 {
        let fields = superblock_diff(&trees[0].0, &trees[1].0);
        if fields.is_empty() {
            diff.notes.push(
                "no file differs: the difference is in metadata (inodes, timestamps, allocation)"
                    .to_owned(),
            );
        } else {
            diff.notes.extend(fields);
        }
    }
    Ok(())
}

/// Runs a tool; fails on a non-zero exit, and on any standard error
/// output other than debugfs's version banner (debugfs exits 0 even when
/// its request fails).
fn tool(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            complaints.join("; ")
        );
    }
    Ok(())
}

/// Superblock lines (`dumpe2fs -h`) that differ, as notes.
fn superblock_diff(a: &Path, b: &Path) -> Vec<String> {
    let dump = |p: &Path| -> BTreeMap<String, String> {
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(p)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (da, db) = (dump(a), dump(b));
    da.iter()
        .filter(|(k, v)| db.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "superblock {k}: {v:?} vs {:?}",
                db.get(k).map(String::as_str).unwrap_or("-")
            )
        })
        .collect()
}

/// One entry of an unpacked tree.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { sha: String, mode: u32 },
    Dir { mode: u32 },
    Link(PathBuf),
    Other,
}

fn walk(root: &Path) -> anyhow::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let key = format!("/{}", rel.display());
            let meta = path.symlink_metadata()?;
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            let e = if ft.is_symlink() {
                Entry::Link(std::fs::read_link(&path)?)
            } else if ft.is_dir() {
                stack.push(path.clone());
                Entry::Dir { mode }
            } else if ft.is_file() {
                let (sum, _) = Sha256::of_file(&path)
                    .with_context(|| format!("hashing {}", path.display()))?;
                Entry::File {
                    sha: sum.to_hex(),
                    mode,
                }
            } else {
                Entry::Other
            };
            out.insert(key, e);
        }
    }
    Ok(out)
}

/// The differing entries of two unpacked trees, by path.
pub(crate) fn diff_trees(a: &Path, b: &Path) -> anyhow::Result<Vec<FileDiff>> {
    let (ta, tb) = (walk(a)?, walk(b)?);
    let mut out = Vec::new();
    for (path, ea) in &ta {
        let change = match (ea, tb.get(path)) {
            (_, None) => Some("only in A".to_owned()),
            (x, Some(y)) if x == y => None,
            (Entry::File { sha: sa, mode: ma }, Some(Entry::File { sha: sb, mode: mb })) => {
                Some(if sa != sb {
                    "content differs".to_owned()
                } else {
                    format!("mode {ma:o} vs {mb:o}")
                })
            }
            (Entry::Dir { mode: ma }, Some(Entry::Dir { mode: mb })) => {
                Some(format!("mode {ma:o} vs {mb:o}"))
            }
            (Entry::Link(la), Some(Entry::Link(lb))) => {
                Some(format!("link target {} vs {}", la.display(), lb.display()))
            }
            _ => Some("type differs".to_owned()),
        };
        if let Some(change) = change {
            out.push(FileDiff {
                path: path.clone(),
                change,
            });
        }
    }
    for path in tb.keys().filter(|p| !ta.contains_key(*p)) {
        out.push(FileDiff {
            path: path.clone(),
            change: "only in B".to_owned(),
        });
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

// ---------------------------------------------------------------------------
// Output

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("A: {}", report.a);
    println!("B: {}", report.b);
    println!();
    let width = report
        .artifacts
        .iter()
        .map(|r| r.artifact.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<width$}  {:<64}  {:<64}  same?",
        "artifact", "sha256 A", "sha256 B"
    );
    for r in &report.artifacts {
        println!(
            "{:<width$}  {:<64}  {:<64}  {}",
            r.artifact,
            r.sha256_a.as_deref().unwrap_or("(missing)"),
            r.sha256_b.as_deref().unwrap_or("(missing)"),
            if r.same { "yes" } else { "NO" }
        );
    }
    for d in &report.differences {
        println!();
        println!(
            "{} differs in {} (bytes {}..{}{})",
            d.image,
            if d.region == "whole image"
                || d.region.starts_with("GPT")
                || d.region == "unpartitioned"
            {
                d.region.clone()
            } else {
                format!("partition {}", d.region)
            },
            d.range.0,
            d.range.1,
            d.filesystem
                .as_deref()
                .map(|f| format!(", {f}"))
                .unwrap_or_default()
        );
        for f in &d.files {
            println!("  {}: {}", f.path, f.change);
        }
        for n in &d.notes {
            println!("  note: {n}");
        }
    }
    println!();
    println!(
        "{}",
        if report.identical {
            "identical: the build is reproducible"
        } else {
            "DIFFERENT: the build is not reproducible"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sums_parse_both_forms_and_report_the_line() {
        let text = format!("{H}  disk-img.tar.zst\n\n{H} *./guestos/VERSION.TXT\n");
        assert_eq!(
            parse_sums(&text),
            Ok(vec![
                ("disk-img.tar.zst".to_owned(), H.to_owned()),
                ("guestos/VERSION.TXT".to_owned(), H.to_owned())
            ])
        );
        let err = parse_sums(&format!("{H}  a\nnot a sum\n")).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_sums("").is_err());
        assert!(parse_sums(&format!("{}  a", &H[..63])).is_err());
    }

    #[test]
    fn trees_differ_by_content_mode_presence_and_link() {
        let base = std::env::temp_dir().join(format!("icos-repro-tree-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("etc")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join("etc/same"), "x").unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(a.join("etc/f"), "1").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(b.join("etc/f"), "2").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(a.join("only-a"), "").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("same", a.join("etc/l")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("f", b.join("etc/l")).unwrap_or_else(|e| panic!("{e}"));
        let diffs = diff_trees(&a, &b).unwrap_or_else(|e| panic!("{e}"));
        let named: Vec<(&str, &str)> = diffs
            .iter()
            .map(|d| (d.path.as_str(), d.change.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("/etc/f", "content differs"),
                ("/etc/l", "link target same vs f"),
                ("/only-a", "only in A"),
            ]
        );
        std::fs::remove_dir_all(&base).unwrap_or_else(|e| panic!("{e}"));
    }
}
