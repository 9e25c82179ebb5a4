//! Hashes files with the `sha2` crate, as the installers and the upgrade
//! orchestrator do, and prints the digest and the throughput, for comparing
//! with `sha256sum`:
//!
//! ```text
//! cargo run --release -p icos-diskwrite --example sha256 -- FILE...
//! ```

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn hash(path: &str) -> std::io::Result<(String, u64, f64)> {
    let started = Instant::now();
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((
        hex::encode(hasher.finalize()),
        total,
        started.elapsed().as_secs_f64(),
    ))
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: sha256 FILE...");
        return ExitCode::from(2);
    }
    for path in &paths {
        match hash(path) {
            Ok((digest, bytes, secs)) => {
                #[allow(clippy::cast_precision_loss)]
                let mib = bytes as f64 / f64::from(1u32 << 20);
                println!(
                    "{digest}  {path}  {bytes} bytes  {secs:.3} s  {:.1} MiB/s",
                    mib / secs
                );
            }
            Err(e) => {
                eprintln!("sha256: {path}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
