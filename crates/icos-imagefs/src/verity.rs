//! dm-verity hash trees written in place with `veritysetup format`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::BLOCK_SIZE;
use crate::cmd::Cmd;
use crate::error::ImageFsError;
use crate::tools::Tools;

/// SHA-256 digests per 4096-byte hash block.
const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / 32;

/// A dm-verity root hash (SHA-256), shown and parsed as 64 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash(pub [u8; 32]);

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({self})")
    }
}

impl FromStr for RootHash {
    type Err = ImageFsError;

    fn from_str(s: &str) -> Result<RootHash, ImageFsError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|e| {
            ImageFsError::invalid("root hash", format!("{s:?} is not 64 hex digits: {e}"))
        })?;
        Ok(RootHash(bytes))
    }
}

/// Where and how the hash tree is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VeritySpec {
    /// Byte offset of the verity superblock and hash tree in the image; a
    /// multiple of 4096, at or after the end of the data.
    pub hash_offset: u64,
    /// Number of 4096-byte data blocks covered, from the start of the image.
    pub data_blocks: u64,
    /// The salt (`--salt`).
    pub salt: [u8; 32],
    /// The UUID stored in the verity superblock (`--uuid`).
    pub uuid: uuid::Uuid,
}

/// Bytes taken at `hash_offset` by the superblock and the SHA-256 hash tree
/// of `data_blocks` 4096-byte blocks.
pub fn verity_hash_size(data_blocks: u64) -> u64 {
    let mut total = 1; // the superblock, padded to a hash block
    let mut level = data_blocks;
    while level > 1 {
        level = level.div_ceil(HASHES_PER_BLOCK);
        total += level;
    }
    if data_blocks == 1 {
        total += 1;
    }
    total * BLOCK_SIZE
}

fn check(image: &Path, spec: &VeritySpec) -> Result<u64, ImageFsError> {
    if spec.data_blocks == 0 {
        return Err(ImageFsError::invalid("verity data blocks", "0 data blocks"));
    }
    if !spec.hash_offset.is_multiple_of(BLOCK_SIZE) {
        return Err(ImageFsError::invalid(
            "verity hash offset",
            format!("{} is not a multiple of {BLOCK_SIZE}", spec.hash_offset),
        ));
    }
    let data_end = spec.data_blocks.checked_mul(BLOCK_SIZE).ok_or_else(|| {
        ImageFsError::invalid(
            "verity data blocks",
            format!("{} is too large", spec.data_blocks),
        )
    })?;
    if spec.hash_offset < data_end {
        return Err(ImageFsError::invalid(
            "verity hash offset",
            format!(
                "{} is inside the {} data blocks (which end at byte {data_end})",
                spec.hash_offset, spec.data_blocks
            ),
        ));
    }
    let len = std::fs::metadata(image)
        .map_err(ImageFsError::io("reading metadata of", image))?
        .len();
    if len < data_end {
        return Err(ImageFsError::invalid(
            "verity data blocks",
            format!(
                "{}: {} blocks need {data_end} bytes, the file has {len}",
                image.display(),
                spec.data_blocks
            ),
        ));
    }
    Ok(len)
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|rest| rest.trim_start_matches(':').trim())
}

/// Writes the dm-verity superblock and hash tree of the first
/// `spec.data_blocks` blocks of `image` into `image` itself at
/// `spec.hash_offset` (like IC's in-place signing), with SHA-256, 4096-byte
/// blocks and the given salt and UUID; returns the root hash.
///
/// The image must be long enough for the hash tree
/// ([`verity_hash_size`]); it is not extended.
pub fn verity_format(
    tools: &Tools,
    image: &Path,
    spec: &VeritySpec,
) -> Result<RootHash, ImageFsError> {
    let len = check(image, spec)?;
    let needed = spec.hash_offset + verity_hash_size(spec.data_blocks);
    if len < needed {
        return Err(ImageFsError::invalid(
            "verity hash offset",
            format!(
                "{}: the hash tree at {} needs the file to be {needed} bytes, it has {len}",
                image.display(),
                spec.hash_offset
            ),
        ));
    }
    let cmd = Cmd::new(&tools.veritysetup)
        .arg("format")
        .arg(image)
        .arg(image)
        .arg(format!("--hash-offset={}", spec.hash_offset))
        .arg(format!("--data-blocks={}", spec.data_blocks))
        .args([
            "--data-block-size=4096",
            "--hash-block-size=4096",
            "--hash=sha256",
        ])
        .arg(format!("--salt={}", hex::encode(spec.salt)))
        .arg(format!("--uuid={}", spec.uuid.hyphenated()));
    let out = cmd.run()?;
    let stdout = out.stdout_text();
    let hash = field(&stdout, "Root hash").ok_or_else(|| ImageFsError::UnexpectedOutput {
        command: cmd.command_line(),
        detail: format!("no `Root hash:` line in {stdout:?}"),
    })?;
    let root = hash
        .parse::<RootHash>()
        .map_err(|e| ImageFsError::UnexpectedOutput {
            command: cmd.command_line(),
            detail: e.to_string(),
        })?;
    crate::ext4::sync_file(image)?;
    tracing::debug!(image = %image.display(), root_hash = %root, "verity tree written");
    Ok(root)
}

/// Checks the dm-verity data and hash tree in `image` against `root_hash`
/// in user space (`veritysetup verify`, no device-mapper), after checking
/// that the superblock holds the spec's data blocks, salt and UUID.
pub fn verity_verify(
    tools: &Tools,
    image: &Path,
    spec: &VeritySpec,
    root_hash: &RootHash,
) -> Result<(), ImageFsError> {
    check(image, spec)?;
    let mismatch = |detail: String| ImageFsError::VerityMismatch {
        image: image.to_path_buf(),
        detail,
    };
    let dump = Cmd::new(&tools.veritysetup)
        .arg("dump")
        .arg(image)
        .arg(format!("--hash-offset={}", spec.hash_offset));
    let out = dump.run_unchecked()?;
    if !out.status.success() {
        return Err(mismatch(format!(
            "no verity superblock at offset {}: {}",
            spec.hash_offset,
            crate::cmd::tail(&out.stderr).trim()
        )));
    }
    let text = out.stdout_text();
    let expect = [
        ("UUID", spec.uuid.hyphenated().to_string()),
        ("Data blocks", spec.data_blocks.to_string()),
        ("Salt", hex::encode(spec.salt)),
        ("Hash algorithm", "sha256".to_string()),
        ("Data block size", "4096".to_string()),
        ("Hash block size", "4096".to_string()),
    ];
    for (name, want) in expect {
        match field(&text, name) {
            Some(got) if got.eq_ignore_ascii_case(&want) => {}
            got => {
                return Err(mismatch(format!(
                    "superblock {name} is {got:?}, the spec says {want}"
                )));
            }
        }
    }
    let cmd = Cmd::new(&tools.veritysetup)
        .arg("verify")
        .arg(image)
        .arg(image)
        .arg(root_hash.to_string())
        .arg(format!("--hash-offset={}", spec.hash_offset));
    let out = cmd.run_unchecked()?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = out.stderr_text();
    // "Verification of root hash failed." / "Verification failed at position N."
    if stderr.contains("erification") {
        return Err(mismatch(crate::cmd::tail(&out.stderr).trim().to_string()));
    }
    Err(cmd.failure(&out).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_round_trips() {
        let text = "33ad2149d8d806d0a66b0745f7481e678fa8391959ad0306eba0f936e7970896";
        let h: RootHash = text.parse().unwrap();
        assert_eq!(h.to_string(), text);
        assert!("33ad".parse::<RootHash>().is_err());
        assert!(format!("{h:?}").contains(text));
    }

    #[test]
    fn hash_tree_sizes() {
        // 1024 blocks: 8 leaf hash blocks + 1 top + the superblock.
        assert_eq!(verity_hash_size(1024), 10 * 4096);
        assert_eq!(verity_hash_size(128), 2 * 4096);
        assert_eq!(verity_hash_size(129), 4 * 4096);
        assert_eq!(verity_hash_size(1), 2 * 4096);
    }

    #[test]
    fn fields_are_parsed() {
        let out = "UUID:            \t1736291d\nRoot hash:      \tabcd\n";
        assert_eq!(field(out, "Root hash"), Some("abcd"));
        assert_eq!(field(out, "UUID"), Some("1736291d"));
    }
}
