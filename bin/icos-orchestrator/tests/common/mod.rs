//! Helpers of the process tests: the `icos` binary built next to this
//! package's, shell commands that must succeed, and children killed when
//! the test ends.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The `icos` binary, built next to this test's `icos-orchestrator` (same
/// target directory and profile).
pub fn icos_binary() -> PathBuf {
    let own = PathBuf::from(env!("CARGO_BIN_EXE_icos-orchestrator"));
    let profile_dir = own.parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap().to_path_buf();
    let source_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&source_root)
        .args(["build", "--locked", "-p", "icos", "--bin", "icos"])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "building icos: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("icos")
}

/// Runs `cmd` with `sh -c`; fails the test unless it succeeds.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
