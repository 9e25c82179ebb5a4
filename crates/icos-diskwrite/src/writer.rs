//! Streaming an image's data and holes into a [`Medium`].

use sha2::{Digest, Sha256};

use crate::CHUNK;
use crate::error::{DiskWriteError, io_err};
use crate::extent::{Extent, push_extent};
use crate::medium::Medium;
use crate::zero::ZeroMethod;

/// Zeroing is asked for in pieces of this size, progress reported between.
const ZERO_PIECE: u64 = 1 << 30;
/// A pending hole this large is zeroed at once, so progress is real.
const ZERO_EAGER: u64 = 64 * CHUNK as u64;

/// How far a [`Writer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Bytes of the image done (written, zeroed, or held back).
    pub done: u64,
    /// Bytes of data written so far (held-back bytes excluded).
    pub data_written: u64,
}

/// What a [`Writer`] put into its medium, for [`crate::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The image's size.
    pub size: u64,
    /// The ranges holding data, the held-back head included.
    pub data: Vec<Extent>,
    /// The ranges made zero.
    pub zeroed: Vec<Extent>,
    /// SHA-256 of the bytes of `data`, in offset order.
    pub data_sha256: [u8; 32],
    /// How the last zeroed range was made zero.
    pub zero_method: Option<ZeroMethod>,
}

impl Record {
    /// Bytes of data.
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|e| e.len).sum()
    }

    /// Bytes made zero.
    pub fn zeroed_bytes(&self) -> u64 {
        self.zeroed.iter().map(|e| e.len).sum()
    }
}

/// Writes an image of a known size into a [`Medium`], from data handed in
/// offset order: the gaps between data, and all-zero chunks, are zeroed
/// (merged into as few requests as possible), data is written and hashed.
/// The first `hold` bytes can be held back: [`Writer::finish`] hands them
/// to the caller (zeros where the image has a hole) to be written last;
/// they count as one data extent at offset 0.
pub struct Writer<'p, M> {
    medium: M,
    size: u64,
    head: Vec<u8>,
    head_logged: bool,
    cursor: u64,
    pending_zero: Option<Extent>,
    data: Vec<Extent>,
    zeroed: Vec<Extent>,
    hasher: Sha256,
    data_written: u64,
    zero_method: Option<ZeroMethod>,
    zeros: Vec<u8>,
    progress: Option<&'p mut dyn FnMut(Position)>,
}

impl<M: Medium> std::fmt::Debug for Writer<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.medium.path())
            .field("size", &self.size)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl<'p, M: Medium> Writer<'p, M> {
    /// A writer of a `size`-byte image into `medium`; refuses, before
    /// anything is written, an image larger than the medium.
    pub fn new(medium: M, size: u64) -> Result<Self, DiskWriteError> {
        if size > medium.size() {
            return Err(DiskWriteError::Order {
                target: medium.path().to_path_buf(),
                offset: 0,
                len: size,
                reason: format!("the image is larger than the {}-byte target", medium.size()),
            });
        }
        Ok(Writer {
            medium,
            size,
            head: Vec::new(),
            head_logged: false,
            cursor: 0,
            pending_zero: None,
            data: Vec::new(),
            zeroed: Vec::new(),
            hasher: Sha256::new(),
            data_written: 0,
            zero_method: None,
            zeros: vec![0u8; CHUNK],
            progress: None,
        })
    }

    /// Holds back the first `hold` bytes (at most the image's size).
    #[must_use]
    pub fn hold_back(mut self, hold: u64) -> Self {
        let n = usize::try_from(hold.min(self.size)).unwrap_or(0);
        self.head = vec![0u8; n];
        self
    }

    /// Calls `progress` after every piece of work.
    #[must_use]
    pub fn on_progress(mut self, progress: &'p mut dyn FnMut(Position)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Bytes of the image handled so far.
    pub fn position(&self) -> Position {
        Position {
            done: self.cursor,
            data_written: self.data_written,
        }
    }

    fn report_at(&mut self, done: u64) {
        let data_written = self.data_written;
        if let Some(p) = self.progress.as_mut() {
            p(Position { done, data_written });
        }
    }

    /// The held-back head is complete once anything past it comes: it is
    /// logged first, so the data hash stays in offset order.
    fn log_head(&mut self) {
        if !self.head_logged {
            self.head_logged = true;
            self.hasher.update(&self.head);
            push_extent(&mut self.data, 0, self.head.len() as u64);
        }
    }

    fn flush_zero(&mut self) -> Result<(), DiskWriteError> {
        if let Some(z) = self.pending_zero.take() {
            let mut at = z.offset;
            while at < z.end() {
                let n = (z.end() - at).min(ZERO_PIECE);
                let how =
                    self.medium
                        .zero(at, n)
                        .map_err(io_err(self.medium.path(), "zeroing", at))?;
                self.zero_method = Some(how);
                at += n;
                if at < z.end() {
                    self.report_at(at);
                }
            }
            push_extent(&mut self.zeroed, z.offset, z.len);
        }
        Ok(())
    }

    fn hole(&mut self, offset: u64, len: u64) -> Result<(), DiskWriteError> {
        if len == 0 {
            return Ok(());
        }
        self.log_head();
        match &mut self.pending_zero {
            Some(z) if z.end() == offset => z.len += len,
            _ => {
                self.flush_zero()?;
                self.pending_zero = Some(Extent { offset, len });
            }
        }
        self.cursor = offset + len;
        if self.pending_zero.is_some_and(|z| z.len >= ZERO_EAGER) {
            self.flush_zero()?;
        }
        Ok(())
    }

    /// `bytes` of the image at `offset`: not before what was handed in
    /// already (the gap since is a hole), not past the image's end.
    pub fn data(&mut self, offset: u64, mut bytes: &[u8]) -> Result<(), DiskWriteError> {
        let len = bytes.len() as u64;
        let order = |reason: String| DiskWriteError::Order {
            target: self.medium.path().to_path_buf(),
            offset,
            len,
            reason,
        };
        if offset < self.cursor {
            return Err(order(format!(
                "comes before byte {}, handed in already",
                self.cursor
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(order(format!("goes past the image's {} bytes", self.size)));
        }
        let mut offset = offset;
        let hold = self.head.len() as u64;
        if offset < hold {
            let n = usize::try_from((hold - offset).min(len)).unwrap_or(0);
            let at = usize::try_from(offset).unwrap_or(0);
            self.head[at..at + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            offset += n as u64;
            self.cursor = offset;
        }
        if bytes.is_empty() {
            self.report_at(self.cursor);
            return Ok(());
        }
        self.log_head();
        self.cursor = self.cursor.max(hold);
        if offset > self.cursor {
            self.hole(self.cursor, offset - self.cursor)?;
        }
        let all_zero = match self.zeros.get(..bytes.len()) {
            Some(zeros) => bytes == zeros,
            None => bytes.iter().all(|&b| b == 0),
        };
        let len = bytes.len() as u64;
        if all_zero {
            self.hole(offset, len)?;
        } else {
            self.flush_zero()?;
            self.medium.write_at(offset, bytes).map_err(io_err(
                self.medium.path(),
                "writing",
                offset,
            ))?;
            self.hasher.update(bytes);
            push_extent(&mut self.data, offset, len);
            self.data_written += len;
            self.cursor = offset + len;
        }
        self.report_at(self.cursor);
        Ok(())
    }

    /// Zeroes what is left up to the image's size and hands back the
    /// medium, the record and the held-back head (to be written at 0).
    pub fn finish(mut self) -> Result<(M, Record, Vec<u8>), DiskWriteError> {
        self.log_head();
        let hold = self.head.len() as u64;
        let from = self.cursor.max(hold);
        self.hole(from, self.size - from)?;
        self.flush_zero()?;
        self.cursor = self.size;
        self.report_at(self.size);
        let record = Record {
            size: self.size,
            data: self.data,
            zeroed: self.zeroed,
            data_sha256: self.hasher.finalize().into(),
            zero_method: self.zero_method,
        };
        Ok((self.medium, record, self.head))
    }
}
