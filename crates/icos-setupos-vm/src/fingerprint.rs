//! Whether a target disk was touched, cheaply.
//!
//! The target disks are sparse files of more than a terabyte; hashing all
//! of it would read a terabyte of zeros. A [`Fingerprint`] hashes only what
//! is allocated: the file's length, each data extent's offset and length
//! (`SEEK_DATA`/`SEEK_HOLE`) and the bytes in it (SHA-256). Any write to
//! the disk, even of zeros, allocates blocks and changes it; a blank disk
//! has no extents at all.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{SeekFrom, seek};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// What a sparse file holds, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The file's length.
    pub len: u64,
    /// Bytes in data extents.
    pub data_bytes: u64,
    /// Number of data extents.
    pub extents: u64,
    /// SHA-256 over the length, each extent's place and its bytes (hex).
    pub sha256: String,
}

impl Fingerprint {
    /// Whether nothing is allocated.
    pub fn is_blank(&self) -> bool {
        self.extents == 0
    }
}

/// The data extents of `file` (`len` bytes long): (start, end) pairs.
fn extents(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data after `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))?.min(len);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Fingerprints the file at `path`.
pub fn fingerprint(path: &Path) -> Result<Fingerprint, Error> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let len = file
        .metadata()
        .map_err(Error::io("reading the size of", path))?
        .len();
    let found = extents(&file, len).map_err(Error::io("finding the data extents of", path))?;
    let mut hash = Sha256::new();
    hash.update(len.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut data_bytes = 0;
    for &(start, end) in &found {
        hash.update(start.to_le_bytes());
        hash.update(end.to_le_bytes());
        let mut pos = start;
        while pos < end {
            let want = usize::try_from((end - pos).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file
                .read_at(&mut buf[..want], pos)
                .map_err(Error::io("reading", path))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            pos += n as u64;
            data_bytes += n as u64;
        }
    }
    Ok(Fingerprint {
        len,
        data_bytes,
        extents: found.len() as u64,
        sha256: hex(&hash.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn blank_disks_have_no_extents_and_any_write_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(1 << 40).unwrap();
        let blank = fingerprint(&path).unwrap();
        assert!(blank.is_blank());
        assert_eq!(blank.len, 1 << 40);
        assert_eq!(blank.data_bytes, 0);
        assert_eq!(fingerprint(&path).unwrap(), blank);

        // Zeros written are allocated: the fingerprint changes.
        file.write_all_at(&[0u8; 4096], 1 << 30).unwrap();
        let zeros = fingerprint(&path).unwrap();
        assert!(!zeros.is_blank());
        assert_ne!(zeros.sha256, blank.sha256);
        assert_eq!(zeros.data_bytes % 4096, 0);

        file.write_all_at(b"HostOS", 1 << 30).unwrap();
        let data = fingerprint(&path).unwrap();
        assert_eq!(data.extents, zeros.extents);
        assert_ne!(data.sha256, zeros.sha256);

        assert!(fingerprint(&dir.path().join("missing")).is_err());
    }
}
