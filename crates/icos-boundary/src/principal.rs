//! Principals (canister, subnet, node and user ids) and their textual form.
//!
//! A principal is a blob of at most 29 bytes. Its textual form, as the IC
//! interface specification defines it, is the big-endian CRC32 of the blob
//! followed by the blob, encoded in lowercase RFC 4648 base32 without
//! padding, and split with `-` into groups of five characters.
//!
//! [`parse_principal`] accepts only that canonical form: wrong case, wrong
//! grouping, a bad checksum or a bad length are all errors. It never panics,
//! whatever the input.

use std::fmt;
use std::str::FromStr;

/// The longest principal, in bytes.
pub const MAX_PRINCIPAL_LEN: usize = 29;

/// The longest textual principal: 33 bytes (checksum and blob) give 53
/// base32 characters plus 10 dashes.
const MAX_TEXT_LEN: usize = 63;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a textual or binary principal was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The blob is longer than 29 bytes.
    #[error("principal is {0} bytes long, at most 29 are allowed")]
    TooLong(usize),
    /// The text is longer than any principal's textual form.
    #[error("textual principal is {0} characters long, at most 63 are allowed")]
    TextTooLong(usize),
    /// A character outside lowercase base32 and `-`.
    #[error("invalid character {0:?} in textual principal")]
    InvalidChar(char),
    /// The base32 text does not decode to whole bytes.
    #[error("textual principal has an invalid base32 length")]
    InvalidBase32,
    /// Fewer than the 4 checksum bytes.
    #[error("textual principal is too short to hold a checksum")]
    TooShort,
    /// The CRC32 does not match the blob.
    #[error("textual principal has a wrong checksum")]
    BadChecksum,
    /// The text decodes, but is not the canonical form (grouping).
    #[error("textual principal is not in canonical form, expected {0}")]
    NotCanonical(String),
}

/// A principal: at most 29 bytes, stored inline (the type is `Copy`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    len: u8,
    bytes: [u8; MAX_PRINCIPAL_LEN],
}

impl Principal {
    /// The anonymous principal, the single byte `0x04`.
    pub const ANONYMOUS: Principal = Principal::from_array([0x04]);

    /// The management canister, the empty blob (`aaaaa-aa`).
    pub const MANAGEMENT_CANISTER: Principal = Principal::from_array([]);

    const fn from_array<const N: usize>(a: [u8; N]) -> Principal {
        let mut bytes = [0u8; MAX_PRINCIPAL_LEN];
        let mut i = 0;
        while i < N {
            bytes[i] = a[i];
            i += 1;
        }
        #[allow(clippy::cast_possible_truncation)]
        Principal {
            len: N as u8,
            bytes,
        }
    }

    /// The principal holding `blob`; fails when it is longer than 29 bytes.
    pub fn from_slice(blob: &[u8]) -> Result<Principal, PrincipalError> {
        if blob.len() > MAX_PRINCIPAL_LEN {
            return Err(PrincipalError::TooLong(blob.len()));
        }
        let mut bytes = [0u8; MAX_PRINCIPAL_LEN];
        bytes[..blob.len()].copy_from_slice(blob);
        let len = u8::try_from(blob.len()).map_err(|_| PrincipalError::TooLong(blob.len()))?;
        Ok(Principal { len, bytes })
    }

    /// The principal's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether this is the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        *self == Self::ANONYMOUS
    }

    /// The principal as a 256-bit big-endian number: the blob left-padded
    /// with zeros to 32 bytes. Byte-wise comparison of two keys is numeric
    /// comparison, which is how canister ranges are ordered.
    pub fn to_u256(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        let blob = self.as_slice();
        key[32 - blob.len()..].copy_from_slice(blob);
        key
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A principal's textual form, built without allocating (see
/// [`Principal::to_text`]); dereferences to `str`.
#[derive(Clone, Copy)]
pub struct PrincipalText {
    len: u8,
    buf: [u8; MAX_TEXT_LEN],
}

impl std::ops::Deref for PrincipalText {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII from the alphabet and `-` is ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Principal {
    /// The textual form, on the stack.
    pub fn to_text(&self) -> PrincipalText {
        let blob = self.as_slice();
        let mut data = [0u8; 4 + MAX_PRINCIPAL_LEN];
        data[..4].copy_from_slice(&crc32fast::hash(blob).to_be_bytes());
        data[4..4 + blob.len()].copy_from_slice(blob);
        let mut out = PrincipalText {
            len: 0,
            buf: [0; MAX_TEXT_LEN],
        };
        let mut n = 0;
        base32_encode(&data[..4 + blob.len()], |symbol| {
            if n > 0 && n % 6 == 5 {
                out.buf[n] = b'-';
                n += 1;
            }
            out.buf[n] = symbol;
            n += 1;
        });
        // At most 53 symbols and 10 dashes: n ≤ 63.
        out.len = u8::try_from(n).unwrap_or(0);
        out
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({self})")
    }
}

impl FromStr for Principal {
    type Err = PrincipalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_principal(s)
    }
}

/// Parses a textual principal, checking its checksum and canonical form.
///
/// Never panics, for any input.
pub fn parse_principal(text: &str) -> Result<Principal, PrincipalError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(PrincipalError::TextTooLong(text.len()));
    }
    let mut symbols = [0u8; MAX_TEXT_LEN];
    let mut count = 0;
    for c in text.chars() {
        if c == '-' {
            continue;
        }
        match ALPHABET.iter().position(|&a| char::from(a) == c) {
            Some(v) => {
                symbols[count] = u8::try_from(v).map_err(|_| PrincipalError::InvalidChar(c))?;
                count += 1;
            }
            None => return Err(PrincipalError::InvalidChar(c)),
        }
    }
    let mut data = [0u8; MAX_TEXT_LEN * 5 / 8];
    let len = base32_decode(&symbols[..count], &mut data)?;
    if len < 4 {
        return Err(PrincipalError::TooShort);
    }
    let (checksum, blob) = data[..len].split_at(4);
    let principal = Principal::from_slice(blob)?;
    if checksum != crc32fast::hash(blob).to_be_bytes() {
        return Err(PrincipalError::BadChecksum);
    }
    let canonical = principal.to_text();
    if *canonical != *text {
        return Err(PrincipalError::NotCanonical(canonical.to_string()));
    }
    Ok(principal)
}

/// Encodes `data` as base32 symbols (ASCII), passing each to `emit`.
fn base32_encode(data: &[u8], mut emit: impl FnMut(u8)) {
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            emit(ALPHABET[((buffer >> bits) & 31) as usize]);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        emit(ALPHABET[((buffer << (5 - bits)) & 31) as usize]);
    }
}

/// Decodes 5-bit symbols; trailing bits must be zero and no partial byte of
/// 5 or more bits may be left over (RFC 4648 lengths only).
fn base32_decode(symbols: &[u8], out: &mut [u8]) -> Result<usize, PrincipalError> {
    // Valid unpadded lengths modulo 8 are 0, 2, 4, 5 and 7.
    if matches!(symbols.len() % 8, 1 | 3 | 6) || symbols.len() * 5 / 8 > out.len() {
        return Err(PrincipalError::InvalidBase32);
    }
    let mut n = 0;
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &s in symbols {
        buffer = (buffer << 5) | u32::from(s & 31);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[n] = ((buffer >> bits) & 0xff) as u8;
            n += 1;
            buffer &= (1 << bits) - 1;
        }
    }
    if buffer != 0 {
        return Err(PrincipalError::InvalidBase32);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_principals_round_trip() {
        let cases: &[(&str, &[u8])] = &[
            ("aaaaa-aa", &[]),
            ("2vxsx-fae", &[4]),
            // The interface specification's own example.
            ("em77e-bvlzu-aq", &[0xab, 0xcd, 0x01]),
            (
                "rwlgt-iiaaa-aaaaa-aaaaa-cai",
                &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            ),
            (
                "rrkah-fqaaa-aaaaa-aaaaq-cai",
                &[0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
            ),
            (
                "ryjl3-tyaaa-aaaaa-aaaba-cai",
                &[0, 0, 0, 0, 0, 0, 0, 2, 1, 1],
            ),
        ];
        for (text, blob) in cases {
            let p = parse_principal(text).unwrap();
            assert_eq!(p.as_slice(), *blob, "{text}");
            assert_eq!(p.to_string(), *text);
            assert_eq!(Principal::from_slice(blob).unwrap().to_string(), *text);
        }
        assert!(parse_principal("2vxsx-fae").unwrap().is_anonymous());
        assert_eq!(Principal::ANONYMOUS.to_string(), "2vxsx-fae");
        assert_eq!(Principal::MANAGEMENT_CANISTER.to_string(), "aaaaa-aa");
    }

    #[test]
    fn a_29_byte_principal_round_trips() {
        let blob: Vec<u8> = (0..29).collect();
        let p = Principal::from_slice(&blob).unwrap();
        let text = p.to_string();
        assert!(text.len() <= MAX_TEXT_LEN);
        assert_eq!(parse_principal(&text).unwrap(), p);
    }

    #[test]
    fn bad_checksums_are_rejected() {
        // Last group changed: the checksum no longer matches.
        assert_eq!(
            parse_principal("rwlgt-iiaaa-aaaaa-aaaaa-caa"),
            Err(PrincipalError::BadChecksum)
        );
        // One blob byte changed (the checksum is kept).
        let p = parse_principal("rwlgt-iiaaa-aaaaa-aaaaa-cai").unwrap();
        let mut data = crc32fast::hash(p.as_slice()).to_be_bytes().to_vec();
        let mut blob = p.as_slice().to_vec();
        blob[7] ^= 1;
        data.extend_from_slice(&blob);
        let text = group(&encode(&data));
        assert_eq!(parse_principal(&text), Err(PrincipalError::BadChecksum));
        // Checksum of the anonymous principal altered.
        assert_eq!(
            parse_principal("2vxsx-fqe"),
            Err(PrincipalError::BadChecksum)
        );
    }

    fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        base32_encode(data, |c| out.push(char::from(c)));
        out
    }

    fn group(s: &str) -> String {
        s.as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("-")
    }

    #[test]
    fn non_canonical_and_garbage_inputs_are_rejected() {
        assert!(matches!(
            parse_principal("RWLGT-IIAAA-AAAAA-AAAAA-CAI"),
            Err(PrincipalError::InvalidChar('R'))
        ));
        assert!(matches!(
            parse_principal("rwlgtiiaaaaaaaaaaaaacai"),
            Err(PrincipalError::NotCanonical(_))
        ));
        assert!(matches!(
            parse_principal("rwlgt-iiaaa-aaaaa-aaaaa-ca-i"),
            Err(PrincipalError::NotCanonical(_))
        ));
        assert_eq!(parse_principal(""), Err(PrincipalError::TooShort));
        assert_eq!(parse_principal("aa"), Err(PrincipalError::TooShort));
        assert_eq!(parse_principal("a"), Err(PrincipalError::InvalidBase32));
        assert!(matches!(
            parse_principal("a1"),
            Err(PrincipalError::InvalidChar('1'))
        ));
        assert!(matches!(
            parse_principal("é"),
            Err(PrincipalError::InvalidChar('é'))
        ));
        assert!(matches!(
            parse_principal(&"a".repeat(64)),
            Err(PrincipalError::TextTooLong(64))
        ));
        // 30 bytes: too long a blob, even with a right checksum.
        let blob = [7u8; 30];
        let mut data = crc32fast::hash(&blob).to_be_bytes().to_vec();
        data.extend_from_slice(&blob);
        let text = group(&encode(&data));
        assert!(text.len() > MAX_TEXT_LEN || parse_principal(&text).is_err());
    }

    #[test]
    fn no_input_panics() {
        // A cheap deterministic sweep over short strings of the alphabet.
        let chars = ['a', 'b', '2', '7', '-', 'z', 'A', '1'];
        for len in 0..6 {
            let mut idx = vec![0usize; len];
            loop {
                let s: String = idx.iter().map(|&i| chars[i]).collect();
                let _ = parse_principal(&s);
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < chars.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
    }

    #[test]
    fn u256_keys_order_numerically() {
        let a = Principal::from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]).unwrap();
        let b = Principal::from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 1, 1]).unwrap();
        let short = Principal::from_slice(&[0xff]).unwrap();
        assert!(a.to_u256() < b.to_u256());
        // Left padding: a 1-byte principal is numerically smaller.
        assert!(short.to_u256() < a.to_u256());
        assert_eq!(Principal::MANAGEMENT_CANISTER.to_u256(), [0u8; 32]);
        assert_eq!(a.to_u256()[22..], a.as_slice()[..]);
    }
}
