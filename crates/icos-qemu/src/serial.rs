//! Following a serial log file as QEMU writes it, line by line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Reads new lines from a growing file. The file may not exist yet (QEMU
/// creates it when it starts) and may be truncated (then it is read again
/// from the start).
#[derive(Debug)]
pub(crate) struct SerialTail {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
    pending: VecDeque<String>,
    tail: VecDeque<String>,
    tail_cap: usize,
    lines: usize,
}

impl SerialTail {
    pub(crate) fn new(path: PathBuf, tail_cap: usize) -> SerialTail {
        SerialTail {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
            pending: VecDeque::new(),
            tail: VecDeque::new(),
            tail_cap,
            lines: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads whatever was appended since the last call and queues the
    /// complete lines.
    pub(crate) fn fill(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated: start over.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf)?;
        self.offset += n as u64;
        let mut rest = &buf[..];
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            self.queue_partial();
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Queues an unterminated last line (at exit or timeout).
    pub(crate) fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            self.queue_partial();
        }
    }

    fn queue_partial(&mut self) {
        let mut bytes = std::mem::take(&mut self.partial);
        while bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        self.pending
            .push_back(String::from_utf8_lossy(&bytes).into_owned());
    }

    /// The next queued line; it is counted and kept in the tail.
    pub(crate) fn pop(&mut self) -> Option<String> {
        let line = self.pending.pop_front()?;
        self.lines += 1;
        if self.tail_cap > 0 {
            if self.tail.len() == self.tail_cap {
                self.tail.pop_front();
            }
            self.tail.push_back(line.clone());
        }
        Some(line)
    }

    /// The last lines popped, oldest first.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// How many lines were popped.
    pub(crate) fn lines(&self) -> usize {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn drain(t: &mut SerialTail) -> Vec<String> {
        std::iter::from_fn(|| t.pop()).collect()
    }

    #[test]
    fn follows_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut t = SerialTail::new(path.clone(), 2);
        t.fill().unwrap(); // no file yet
        assert!(drain(&mut t).is_empty());

        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\r\ntw").unwrap();
        t.fill().unwrap();
        assert_eq!(drain(&mut t), ["one"]);
        f.write_all(b"o\nthree\n\xffx").unwrap();
        t.fill().unwrap();
        assert_eq!(drain(&mut t), ["two", "three"]);
        t.flush_partial();
        assert_eq!(drain(&mut t), ["\u{fffd}x"]);
        assert_eq!(t.lines(), 4);
        assert_eq!(t.tail(), ["three", "\u{fffd}x"]);

        // Truncation restarts from the beginning.
        let mut f = File::create(&path).unwrap();
        f.write_all(b"new\n").unwrap();
        t.fill().unwrap();
        assert_eq!(drain(&mut t), ["new"]);
    }
}
