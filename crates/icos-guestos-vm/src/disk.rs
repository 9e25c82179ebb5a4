//! Byte windows onto one partition of a disk, so that filesystem code sees
//! the partition as a device of its own: [`Window`] (from `icos-fat`) for
//! `Read`/`Write`/`Seek`, `FileWindow` for `ext4_view`.

pub use icos_fat::Window;

/// Reads a partition window of a file for `ext4_view`.
#[derive(Debug)]
pub(crate) struct FileWindow {
    pub(crate) file: std::fs::File,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl ext4_view::Ext4Read for FileWindow {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(format!(
                "read of {} bytes at {start_byte} is past the end of the {}-byte partition",
                dst.len(),
                self.len
            )
            .into());
        }
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(dst, self.offset + start_byte)?;
        Ok(())
    }
}
