//! Decompressing on a thread of its own while the caller consumes: a
//! visitor that hashes and writes (the slot installer, SetupOS's image
//! writer) then overlaps with zstd instead of waiting for it.

use std::io::{self, Read};
use std::mem;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

/// Bytes handed over at a time.
const PIECE: usize = 1 << 20;
/// Pieces decompressed ahead of the consumer (bounds the memory held).
const DEPTH: usize = 4;

/// Runs `consume` with a reader of what `source` yields, `source` being
/// read on a scoped thread. An error of `source` reaches the reader at the
/// point of the stream where it happened. When `consume` returns early,
/// the thread stops after at most one more piece.
pub(crate) fn with_read_ahead<S, T>(source: S, consume: impl FnOnce(ReadAhead) -> T) -> T
where
    S: Read + Send,
{
    let (pieces_tx, pieces) = mpsc::sync_channel(DEPTH);
    let (free, free_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || produce(source, &pieces_tx, &free_rx));
        consume(ReadAhead {
            pieces,
            free,
            current: Vec::new(),
            at: 0,
            ended: false,
        })
    })
}

/// Fills pieces from `source` until its end, an error, or the consumer
/// is gone.
fn produce<S: Read>(
    mut source: S,
    pieces: &SyncSender<io::Result<Vec<u8>>>,
    free: &Receiver<Vec<u8>>,
) {
    loop {
        let mut piece = free.try_recv().unwrap_or_default();
        piece.resize(PIECE, 0);
        let mut filled = 0;
        let mut failed = None;
        while filled < PIECE {
            match source.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        piece.truncate(filled);
        if filled > 0 && pieces.send(Ok(piece)).is_err() {
            return;
        }
        if let Some(e) = failed {
            let _ = pieces.send(Err(e));
            return;
        }
        if filled < PIECE {
            return;
        }
    }
}

/// The consumer's side of [`with_read_ahead`].
pub(crate) struct ReadAhead {
    pieces: Receiver<io::Result<Vec<u8>>>,
    free: Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.pieces.recv() {
                Ok(Ok(piece)) => {
                    let used = mem::replace(&mut self.current, piece);
                    self.at = 0;
                    // The producer may be gone already; the piece is then
                    // simply dropped.
                    let _ = self.free.send(used);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(mpsc::RecvError) => self.ended = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Yields `data` in reads of at most `step` bytes, then fails with
    /// `error` (if any) instead of ending.
    struct Source {
        data: Vec<u8>,
        at: usize,
        step: usize,
        error: Option<io::ErrorKind>,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return match self.error {
                    Some(kind) => Err(io::Error::new(kind, "source broke")),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((i * 7 + i / 4093) % 251).unwrap())
            .collect()
    }

    #[test]
    fn hands_over_every_byte_in_order() {
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 12_345] {
            for step in [1000, PIECE, 3 * PIECE] {
                let data = pattern(len);
                let source = Source {
                    data: data.clone(),
                    at: 0,
                    step,
                    error: None,
                };
                let got = with_read_ahead(source, |mut r| {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 4099];
                    loop {
                        let n = r.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        out.extend_from_slice(&buf[..n]);
                    }
                    assert_eq!(r.read(&mut buf).unwrap(), 0, "the end stays the end");
                    out
                });
                assert!(got == data, "{len} bytes in reads of {step}");
            }
        }
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it() {
        let data = pattern(2 * PIECE + 10);
        let source = Source {
            data: data.clone(),
            at: 0,
            step: 65_536,
            error: Some(io::ErrorKind::InvalidData),
        };
        with_read_ahead(source, |mut r| {
            let mut out = Vec::new();
            let err = r.read_to_end(&mut out).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(out == data, "every byte before the error arrived");
        });
    }

    #[test]
    fn a_consumer_that_stops_early_does_not_hang() {
        let source = Source {
            data: pattern(64 * PIECE),
            at: 0,
            step: PIECE,
            error: None,
        };
        let first = with_read_ahead(source, |mut r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).unwrap();
            b
        });
        assert_eq!(first[..], pattern(10)[..]);
    }
}
