//! Helpers shared by the image tests (`build_*`, `hostos_nested`): the
//! source tree, host tool checks, commands that must succeed, and a work
//! folder of their own under `$CARGO_TARGET_TMPDIR`.
//!
//! Each test binary uses a part of this module.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod hostos;
pub mod registry;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The workspace root (the icos source tree).
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Fails the test, naming the Debian package, when a host tool is missing.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "host tool `{tool}` is missing: install the Debian package `{package}` (./scripts/prereqs.sh)"
    );
}

/// Runs `cmd`, fails the test with its output unless it succeeds, and
/// returns its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok_bytes(cmd)).into_owned()
}

/// [`run_ok`], returning the raw standard output.
pub fn run_ok_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `$CARGO_TARGET_TMPDIR/<name>`, emptied, and held with a file lock (so
/// two runs of the same test never share it) as long as the returned file
/// lives.
pub fn fresh_dir(name: &str) -> (PathBuf, File) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    (dir, lock)
}

/// `icos build KIND EXTRA... --source <tree> --out OUT`, timed; returns the
/// artifacts folder `OUT/KIND`.
pub fn build_release(kind: &str, extra: &[&str], out: &Path) -> PathBuf {
    let started = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_icos"))
        .args(["build", kind])
        .args(extra)
        .arg("--source")
        .arg(source_root())
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "icos build {kind} {extra:?} failed: {status}"
    );
    eprintln!(
        "BENCH build {kind} {}: {:.1} s",
        extra.join(" "),
        started.elapsed().as_secs_f64()
    );
    out.join(kind)
}

/// Checks that an image's output folder holds exactly the four published
/// artifacts.
pub fn assert_artifacts(art: &Path) {
    let mut names: Vec<String> = fs::read_dir(art)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "VERSION.TXT",
            "disk-img.tar.zst",
            "update-img.tar.zst"
        ],
        "{}",
        art.display()
    );
}

/// Child processes killed (and reaped) when the test ends, whatever
/// happens.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Builds `icos-testnet-replica` next to the test's `icos` binary (`icos`:
/// `env!("CARGO_BIN_EXE_icos")`), in the same profile; returns its path.
pub fn testnet_replica_binary(icos: &str) -> PathBuf {
    let icos = PathBuf::from(icos);
    let profile_dir = icos.parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(source_root())
        .args([
            "build",
            "--locked",
            "-p",
            "icos-testnet-replica-bin",
            "--bin",
            "icos-testnet-replica",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    run_ok_bytes(&mut cmd);
    profile_dir.join("icos-testnet-replica")
}
