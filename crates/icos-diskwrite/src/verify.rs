//! Reading back what a [`crate::Writer`] wrote and checking it.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::CHUNK;
use crate::error::{DiskWriteError, io_err};
use crate::extent::{HoleCheck, samples};
use crate::medium::Medium;
use crate::writer::Record;

/// What [`verify`] read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verified {
    /// Bytes of data read back and hashed.
    pub data_bytes: u64,
    /// Bytes of zeroed ranges read back and found zero.
    pub zero_bytes_checked: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// Reads back, after dropping the medium's cached pages, the data extents
/// of `record` (their SHA-256 must equal the recorded one) and the zeroed
/// ranges, all or sampled (they must be zero). Call it after the writes
/// are synced.
pub fn verify<M: Medium + ?Sized>(
    medium: &mut M,
    record: &Record,
    holes: HoleCheck,
) -> Result<Verified, DiskWriteError> {
    let started = Instant::now();
    medium.drop_cache();
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    for e in &record.data {
        let mut at = e.offset;
        while at < e.end() {
            let n = usize::try_from((e.end() - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            medium
                .read_at(at, &mut buf[..n])
                .map_err(io_err(medium.path(), "reading back", at))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != record.data_sha256 {
        return Err(DiskWriteError::Verify {
            target: medium.path().to_path_buf(),
            expected: hex::encode(record.data_sha256),
            actual: hex::encode(actual),
        });
    }
    let mut checked = 0u64;
    for &z in &record.zeroed {
        let parts = match holes {
            HoleCheck::Full => vec![z],
            HoleCheck::Sample => samples(z),
        };
        for p in parts {
            let mut at = p.offset;
            while at < p.end() {
                let n = usize::try_from((p.end() - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                medium.read_at(at, &mut buf[..n]).map_err(io_err(
                    medium.path(),
                    "reading back",
                    at,
                ))?;
                if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                    return Err(DiskWriteError::NotZero {
                        target: medium.path().to_path_buf(),
                        offset: at + i as u64,
                    });
                }
                at += n as u64;
                checked += n as u64;
            }
        }
    }
    Ok(Verified {
        data_bytes: record.data_bytes(),
        zero_bytes_checked: checked,
        secs: started.elapsed().as_secs_f64(),
    })
}
