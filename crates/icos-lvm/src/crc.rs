//! The CRC-32 LVM2 uses for its label, metadata area header and metadata text.
//!
//! It is the reflected CRC-32 polynomial (`0xEDB88320`) without the usual
//! final inversion, started from LVM's own initial value instead of
//! `0xFFFFFFFF`.

/// The initial value LVM2 feeds into every checksum.
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

/// Table for the reflected polynomial, built at compile time.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut value = i;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 {
                (value >> 1) ^ 0xEDB8_8320
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[i as usize] = value;
        i += 1;
    }
    table
}

/// Continues an LVM checksum over `data` from `crc`.
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize];
    }
    crc
}

/// The LVM checksum of `data` ([`INITIAL_CRC`] then [`update`]).
pub fn checksum(data: &[u8]) -> u32 {
    update(INITIAL_CRC, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relates_to_the_standard_crc32() {
        // With the standard start value and a final inversion this is the
        // common CRC-32, whose check value for "123456789" is 0xCBF43926.
        assert_eq!(!update(0xFFFF_FFFF, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn empty_input_is_the_initial_value() {
        assert_eq!(checksum(&[]), INITIAL_CRC);
    }

    #[test]
    fn updates_compose() {
        let whole = checksum(b"hello world");
        let split = update(checksum(b"hello "), b"world");
        assert_eq!(whole, split);
    }
}
