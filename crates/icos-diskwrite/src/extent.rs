//! Ranges of a target and which of their blocks a sampled check reads.

/// The size of one sampled block of a zeroed range.
pub const SAMPLE: u64 = 4096;
/// Sampled blocks inside a zeroed range are this far apart.
pub const SAMPLE_EVERY: u64 = 1 << 30;

/// A range of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Its first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

impl Extent {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Appends `len` bytes at `offset` to `list`, merging with the last extent
/// when they touch; empty ranges are dropped.
pub fn push_extent(list: &mut Vec<Extent>, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    match list.last_mut() {
        Some(last) if last.end() == offset => last.len += len,
        _ => list.push(Extent { offset, len }),
    }
}

/// How much of the zeroed ranges [`crate::verify`] reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleCheck {
    /// The first and last 4 KiB of every range and one 4 KiB block per GiB.
    Sample,
    /// Every byte.
    Full,
}

impl HoleCheck {
    /// The name printed (`sample`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            HoleCheck::Sample => "sample",
            HoleCheck::Full => "full",
        }
    }
}

/// The blocks of a zeroed range that [`HoleCheck::Sample`] reads: the first
/// [`SAMPLE`] bytes, one block every [`SAMPLE_EVERY`], and the last block.
pub fn samples(extent: Extent) -> Vec<Extent> {
    let end = extent.end();
    let mut out = Vec::new();
    let mut at = extent.offset;
    while at < end {
        out.push(Extent {
            offset: at,
            len: SAMPLE.min(end - at),
        });
        at = at.saturating_add(SAMPLE_EVERY);
    }
    let last = end.saturating_sub(SAMPLE).max(extent.offset);
    if out.last().is_some_and(|e| e.offset != last) {
        out.push(Extent {
            offset: last,
            len: end - last,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_when_they_touch() {
        let mut l = Vec::new();
        push_extent(&mut l, 0, 10);
        push_extent(&mut l, 10, 5);
        push_extent(&mut l, 20, 0);
        push_extent(&mut l, 30, 1);
        assert_eq!(
            l,
            [Extent { offset: 0, len: 15 }, Extent { offset: 30, len: 1 }]
        );
    }

    #[test]
    fn samples_cover_both_ends_and_every_gib() {
        let s = samples(Extent {
            offset: 0,
            len: 100,
        });
        assert_eq!(
            s,
            [Extent {
                offset: 0,
                len: 100
            }]
        );
        let s = samples(Extent {
            offset: 4096,
            len: 3 * SAMPLE_EVERY,
        });
        let offsets: Vec<u64> = s.iter().map(|e| e.offset).collect();
        assert_eq!(
            offsets,
            [
                4096,
                4096 + SAMPLE_EVERY,
                4096 + 2 * SAMPLE_EVERY,
                4096 + 3 * SAMPLE_EVERY - SAMPLE
            ]
        );
        assert!(s.iter().all(|e| e.len == SAMPLE));
    }
}
