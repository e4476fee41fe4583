//! Positional, thread-safe reads from a slide file (`pread`), bounded by the file's length.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file opened for concurrent positional reads. Every read is checked against the file length,
/// so a corrupt offset or byte count becomes [`Error::SlideFormat`], never a huge allocation.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::other("is a directory, not a slide file"),
            ));
        }
        Ok(Self {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A [`Error::SlideFormat`] naming this file.
    pub fn format_error(&self, msg: impl Into<String>) -> Error {
        Error::slide(&self.path, msg)
    }

    /// Checks that `[offset, offset + len)` lies inside the file.
    pub fn check_range(&self, offset: u64, len: u64, what: &str) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(self.format_error(format!(
                "{what} at offset {offset} with length {len} runs past the end of the file \
                 ({} bytes): truncated or corrupt",
                self.len
            ))),
        }
    }

    /// Fills `buf` from `offset`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        self.check_range(offset, buf.len() as u64, what)?;
        read_exact_at(&self.file, offset, buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.format_error(format!("{what}: unexpected end of file (truncated?)"))
            } else {
                Error::io(&self.path, e)
            }
        })
    }

    /// Reads `len` bytes from `offset` into a fresh vector (bounded by the file length).
    pub fn read_vec(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        self.check_range(offset, len, what)?;
        let len =
            usize::try_from(len).map_err(|_| self.format_error(format!("{what}: too large")))?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(offset, &mut buf, what)?;
        Ok(buf)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
