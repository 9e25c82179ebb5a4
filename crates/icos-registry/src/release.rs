//! The SHA-256 a version proposal records: of `update-img.tar.zst`, as
//! `icos build` writes it and lists it in `SHA256SUMS`.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::RepoError;

/// The release package's file name.
pub const UPDATE_IMG: &str = "update-img.tar.zst";

/// SHA-256 (lowercase hex) of a file, streamed.
pub fn sha256_of_file(path: &Path) -> Result<String, RepoError> {
    let mut f = std::fs::File::open(path).map_err(|e| RepoError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| RepoError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of `name` in a `sha256sum`-format file (`<hex>  <name>`,
/// or `<hex> *<name>`).
pub fn sha256_from_sums(path: &Path, name: &str) -> Result<String, RepoError> {
    let text = std::fs::read_to_string(path).map_err(|e| RepoError::io(path, e))?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((hash, file)) = line.split_once(' ') else {
            return Err(RepoError::corrupt(
                path,
                format!("line {}: not `<sha256>  <file>`", i + 1),
            ));
        };
        let file = file.trim_start_matches([' ', '*']);
        if file == name {
            crate::model::check_sha256(&format!("line {}", i + 1), hash)
                .map_err(|v| RepoError::corrupt(path, v.to_string()))?;
            return Ok(hash.to_owned());
        }
    }
    Err(RepoError::corrupt(path, format!("no entry for {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_files_agree() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let img = dir.path().join(UPDATE_IMG);
        std::fs::write(&img, b"abc").unwrap_or_else(|e| panic!("{e}"));
        let sha = sha256_of_file(&img).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let sums = dir.path().join("SHA256SUMS");
        std::fs::write(
            &sums,
            format!(
                "{}  disk-img.tar.zst\n{sha}  {UPDATE_IMG}\n",
                "0".repeat(64)
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sha256_from_sums(&sums, UPDATE_IMG).ok(), Some(sha));
        let err = sha256_from_sums(&sums, "other").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("no entry for other"), "{err}");
        std::fs::write(&sums, format!("XYZ  {UPDATE_IMG}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert!(sha256_from_sums(&sums, UPDATE_IMG).is_err());
    }
}
