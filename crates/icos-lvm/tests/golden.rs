//! The HostOS `hostlvm` PV header region, pinned: the metadata text as a
//! golden file, and the SHA-256 of the whole region (label, metadata area
//! header, text) so that any byte change is noticed.
//!
//! Update after an intended change with
//! `ICOS_UPDATE_GOLDEN=1 cargo test -p icos-lvm --test golden`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use icos_lvm::{VolumeGroupSpec, header_region, text::format_metadata};
use sha2::{Digest, Sha256};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check(name: &str, text: &str) {
    let path = golden(name);
    if std::env::var_os("ICOS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).expect("writing golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with ICOS_UPDATE_GOLDEN=1 cargo test -p icos-lvm --test golden",
            path.display()
        )
    });
    assert!(
        want == text,
        "{} differs; got:\n{text}\nIf the change is intended, run \
         ICOS_UPDATE_GOLDEN=1 cargo test -p icos-lvm --test golden",
        path.display()
    );
}

#[test]
fn hostlvm_metadata_text() {
    check(
        "hostlvm-metadata.txt",
        &format_metadata(&VolumeGroupSpec::ic_hostos()),
    );
}

#[test]
fn hostlvm_header_region_digest() {
    let region = header_region(&VolumeGroupSpec::ic_hostos()).unwrap();
    let mut padded = region.clone();
    padded.resize(1 << 20, 0);
    let digest = hex(&Sha256::digest(&padded));
    check(
        "hostlvm-header.sha256",
        &format!("{digest}  first MiB of the hostlvm PV\n"),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
