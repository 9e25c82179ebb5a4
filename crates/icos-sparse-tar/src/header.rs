//! The 512-byte header blocks of the GNU tar format: numeric fields, the
//! checksum, regular/sparse/long-name headers, and parsing them back.

use crate::Segment;

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;
/// Size of a tar block as a `u64`.
pub(crate) const BLOCK_U64: u64 = 512;
/// GNU tar's default record size (blocking factor 20); archives end on it.
pub(crate) const RECORD: u64 = 20 * BLOCK_U64;
/// Sparse map entries held by the main header of an old-GNU sparse member.
pub(crate) const SPARSE_IN_HEADER: usize = 4;
/// Sparse map entries held by each extension block.
pub(crate) const SPARSE_IN_EXT: usize = 21;
/// Name of the pseudo member that carries a long name.
pub(crate) const LONGLINK_NAME: &[u8] = b"././@LongLink";
/// Longest name that fits in the header's name field.
pub(crate) const NAME_FIELD: usize = 100;

/// Type flag of a regular file.
pub(crate) const TYPE_REGULAR: u8 = b'0';
/// Type flag of an old-GNU sparse file.
pub(crate) const TYPE_SPARSE: u8 = b'S';
/// Type flag of a GNU long-name pseudo member.
pub(crate) const TYPE_LONGNAME: u8 = b'L';

// Field offsets (POSIX ustar layout, old-GNU extensions from 345 on).
const NAME: usize = 0;
const MODE: usize = 100;
const UID: usize = 108;
const GID: usize = 116;
const SIZE: usize = 124;
const MTIME: usize = 136;
const CHKSUM: usize = 148;
const TYPEFLAG: usize = 156;
const MAGIC: usize = 257;
const UNAME: usize = 265;
const GNAME: usize = 297;
const PREFIX: usize = 345;
const SPARSE: usize = 386;
const ISEXTENDED: usize = 482;
const REALSIZE: usize = 483;
const EXT_ISEXTENDED: usize = 504;

/// "ustar  \0": magic and version of the GNU format.
const GNU_MAGIC: &[u8; 8] = b"ustar  \0";
/// "ustar\0" followed by version "00": POSIX ustar.
const USTAR_MAGIC: &[u8; 6] = b"ustar\0";

/// Stores `value` the way GNU tar does in GNU format: zero-padded octal
/// with a trailing NUL when it fits in `len - 1` digits, otherwise
/// base-256 (first byte 0x80, the value big-endian in the remaining bytes).
pub(crate) fn put_num(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let fits_octal = digits * 3 >= 64 || value >> (digits * 3) == 0;
    if fits_octal {
        let mut v = value;
        for slot in field[..digits].iter_mut().rev() {
            // Masked to three bits: the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (v & 7) as u8;
            *slot = b'0' + digit;
            v >>= 3;
        }
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = bytes.len().min(field.len() - 1);
        let start = field.len() - n;
        field[start..].copy_from_slice(&bytes[bytes.len() - n..]);
    }
}

/// Parses a numeric field: octal (leading spaces, trailing NUL/space) or
/// positive base-256. Returns `None` when the field is malformed.
pub(crate) fn get_num(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(&b) if b & 0x80 != 0 => {
            if b != 0x80 {
                // Negative (0xff) or a set bit GNU tar never writes there.
                return None;
            }
            field[1..].iter().try_fold(0u64, |acc, &byte| {
                if acc >> 56 != 0 {
                    None
                } else {
                    Some(acc << 8 | u64::from(byte))
                }
            })
        }
        _ => {
            let digits = field
                .iter()
                .skip_while(|&&c| c == b' ')
                .take_while(|&&c| c != 0 && c != b' ');
            let mut value = 0u64;
            for &c in digits {
                if !(b'0'..=b'7').contains(&c) || value >> 61 != 0 {
                    return None;
                }
                value = value << 3 | u64::from(c - b'0');
            }
            Some(value)
        }
    }
}

/// Fills in the checksum the way GNU tar does: six octal digits, NUL, space.
fn finish(block: &mut [u8; BLOCK]) {
    block[CHKSUM..CHKSUM + 8].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_num(&mut block[CHKSUM..CHKSUM + 7], sum);
    block[CHKSUM + 7] = b' ';
}

/// The fields every member header of ours shares.
pub(crate) struct Common<'a> {
    /// Name bytes; only the first 100 are stored (longer names travel in a
    /// preceding long-name member).
    pub name: &'a [u8],
    /// Permission bits.
    pub mode: u32,
    /// Whether uname/gname say "root" (otherwise they stay empty, as with
    /// `--numeric-owner`).
    pub owner_names: bool,
}

fn base(common: &Common<'_>, typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let n = common.name.len().min(NAME_FIELD);
    block[NAME..NAME + n].copy_from_slice(&common.name[..n]);
    put_num(&mut block[MODE..MODE + 8], u64::from(common.mode));
    put_num(&mut block[UID..UID + 8], 0);
    put_num(&mut block[GID..GID + 8], 0);
    put_num(&mut block[SIZE..SIZE + 12], size);
    put_num(&mut block[MTIME..MTIME + 12], 0);
    block[TYPEFLAG] = typeflag;
    block[MAGIC..MAGIC + 8].copy_from_slice(GNU_MAGIC);
    if common.owner_names {
        block[UNAME..UNAME + 4].copy_from_slice(b"root");
        block[GNAME..GNAME + 4].copy_from_slice(b"root");
    }
    block
}

/// The header of a regular file member.
pub(crate) fn regular(common: &Common<'_>, size: u64) -> [u8; BLOCK] {
    let mut block = base(common, TYPE_REGULAR, size);
    finish(&mut block);
    block
}

/// The `././@LongLink` header announcing a long name of `name_len` bytes
/// (the data that follows is the name plus a NUL).
pub(crate) fn long_name(owner_names: bool, name_len: usize) -> [u8; BLOCK] {
    let common = Common {
        name: LONGLINK_NAME,
        mode: 0o644,
        owner_names,
    };
    let mut block = base(&common, TYPE_LONGNAME, name_len as u64 + 1);
    finish(&mut block);
    block
}

fn put_segments(area: &mut [u8], segments: &[Segment]) {
    for (slot, seg) in area.chunks_exact_mut(24).zip(segments) {
        put_num(&mut slot[..12], seg.offset);
        put_num(&mut slot[12..], seg.length);
    }
}

/// The header block of an old-GNU sparse member followed by its extension
/// blocks (one per 21 map entries beyond the first 4).
pub(crate) fn sparse(
    common: &Common<'_>,
    real_size: u64,
    stored_size: u64,
    map: &[Segment],
) -> Vec<[u8; BLOCK]> {
    let mut blocks = Vec::with_capacity(
        1 + map
            .len()
            .saturating_sub(SPARSE_IN_HEADER)
            .div_ceil(SPARSE_IN_EXT),
    );
    let mut head = base(common, TYPE_SPARSE, stored_size);
    let (first, mut rest) = map.split_at(map.len().min(SPARSE_IN_HEADER));
    put_segments(&mut head[SPARSE..SPARSE + 24 * SPARSE_IN_HEADER], first);
    head[ISEXTENDED] = u8::from(!rest.is_empty());
    put_num(&mut head[REALSIZE..REALSIZE + 12], real_size);
    finish(&mut head);
    blocks.push(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(SPARSE_IN_EXT));
        let mut ext = [0u8; BLOCK];
        put_segments(&mut ext[..24 * SPARSE_IN_EXT], chunk);
        ext[EXT_ISEXTENDED] = u8::from(!tail.is_empty());
        blocks.push(ext);
        rest = tail;
    }
    blocks
}

/// A member header as read back.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Name from the name field (and the ustar prefix, for POSIX headers).
    pub name: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// The size field: bytes of data that follow the header(s).
    pub size: u64,
    /// Type flag.
    pub typeflag: u8,
    /// For old-GNU sparse members: the real size and the first map entries.
    pub sparse: Option<SparseHead>,
}

/// The sparse part of an old-GNU header.
#[derive(Debug)]
pub(crate) struct SparseHead {
    /// Size of the file once expanded.
    pub real_size: u64,
    /// Map entries stored in the header itself.
    pub map: Vec<Segment>,
    /// Whether extension blocks follow.
    pub extended: bool,
}

/// Why a header block was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// The stored checksum does not match the block.
    Checksum,
    /// A numeric field is malformed.
    Number(&'static str),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checksum => write!(f, "header checksum mismatch"),
            Self::Number(field) => write!(f, "malformed numeric field '{field}'"),
        }
    }
}

fn num(block: &[u8], at: usize, len: usize, field: &'static str) -> Result<u64, HeaderProblem> {
    get_num(&block[at..at + len]).ok_or(HeaderProblem::Number(field))
}

/// Reads map entries until the first empty slot; GNU tar marks the end of
/// the list by an empty `numbytes` field.
fn get_segments(area: &[u8], out: &mut Vec<Segment>) -> Result<(), HeaderProblem> {
    for slot in area.chunks_exact(24) {
        if slot[12] == 0 {
            break;
        }
        let offset = get_num(&slot[..12]).ok_or(HeaderProblem::Number("sparse offset"))?;
        let length = get_num(&slot[12..]).ok_or(HeaderProblem::Number("sparse numbytes"))?;
        out.push(Segment { offset, length });
    }
    Ok(())
}

fn cstr(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Parses and checks a header block.
pub(crate) fn parse(block: &[u8; BLOCK]) -> Result<Parsed, HeaderProblem> {
    let stored = num(block, CHKSUM, 8, "chksum")?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (CHKSUM..CHKSUM + 8).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    // Some old writers summed signed chars; accept that too, like GNU tar.
    #[allow(clippy::cast_possible_wrap)]
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (CHKSUM..CHKSUM + 8).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(HeaderProblem::Checksum);
    }
    let mode = num(block, MODE, 8, "mode")?;
    let size = num(block, SIZE, 12, "size")?;
    let typeflag = block[TYPEFLAG];
    let mut name = cstr(&block[NAME..NAME + NAME_FIELD]).to_vec();
    if &block[MAGIC..MAGIC + 6] == USTAR_MAGIC {
        let prefix = cstr(&block[PREFIX..PREFIX + 155]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let sparse = if typeflag == TYPE_SPARSE {
        let real_size = num(block, REALSIZE, 12, "realsize")?;
        let mut map = Vec::new();
        get_segments(&block[SPARSE..SPARSE + 24 * SPARSE_IN_HEADER], &mut map)?;
        Some(SparseHead {
            real_size,
            map,
            extended: block[ISEXTENDED] != 0,
        })
    } else {
        None
    };
    Ok(Parsed {
        name,
        mode: u32::try_from(mode & 0o7777).unwrap_or(0o644),
        size,
        typeflag,
        sparse,
    })
}

/// Parses a sparse extension block; returns whether another one follows.
pub(crate) fn parse_ext(
    block: &[u8; BLOCK],
    out: &mut Vec<Segment>,
) -> Result<bool, HeaderProblem> {
    get_segments(&block[..24 * SPARSE_IN_EXT], out)?;
    Ok(block[EXT_ISEXTENDED] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_are_zero_padded_with_trailing_nul() {
        let mut f = [0xAAu8; 8];
        put_num(&mut f, 0o644);
        assert_eq!(&f, b"0000644\0");
        let mut f = [0xAAu8; 12];
        put_num(&mut f, 0);
        assert_eq!(&f, b"00000000000\0");
        put_num(&mut f, 0o77777777777);
        assert_eq!(&f, b"77777777777\0");
    }

    #[test]
    fn large_values_use_base256() {
        let mut f = [0u8; 12];
        put_num(&mut f, 1 << 33);
        assert_eq!(f, [0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(get_num(&f), Some(1 << 33));
        put_num(&mut f, 50 << 30);
        assert_eq!(get_num(&f), Some(50 << 30));
    }

    #[test]
    fn parses_octal_variants() {
        assert_eq!(get_num(b"0000644\0"), Some(0o644));
        assert_eq!(get_num(b"   644 \0"), Some(0o644));
        assert_eq!(get_num(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(get_num(b"0000648\0"), None);
        assert_eq!(
            get_num(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
            None
        );
    }

    #[test]
    fn checksum_format_and_roundtrip() {
        let common = Common {
            name: b"a",
            mode: 0o644,
            owner_names: false,
        };
        let block = regular(&common, 5);
        assert_eq!(block[CHKSUM + 6], 0);
        assert_eq!(block[CHKSUM + 7], b' ');
        let parsed = parse(&block).unwrap();
        assert_eq!(parsed.name, b"a");
        assert_eq!(parsed.size, 5);
        assert_eq!(parsed.typeflag, TYPE_REGULAR);
        let mut bad = block;
        bad[0] = b'b';
        assert_eq!(parse(&bad).unwrap_err(), HeaderProblem::Checksum);
    }

    #[test]
    fn sparse_header_with_extensions_roundtrips() {
        let map: Vec<Segment> = (0..30)
            .map(|i| Segment {
                offset: i * 4096,
                length: 512,
            })
            .collect();
        let common = Common {
            name: b"disk.img",
            mode: 0o644,
            owner_names: true,
        };
        let blocks = sparse(&common, 1 << 40, 30 * 512, &map);
        assert_eq!(blocks.len(), 3);
        let head = parse(&blocks[0]).unwrap();
        let sp = head.sparse.unwrap();
        assert_eq!(sp.real_size, 1 << 40);
        assert!(sp.extended);
        let mut all = sp.map;
        assert!(parse_ext(&blocks[1], &mut all).unwrap());
        assert!(!parse_ext(&blocks[2], &mut all).unwrap());
        assert_eq!(all, map);
    }
}
