//! Reading committed blobs at any offset.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil;

/// A committed blob opened for reading. Stateless `read_at`, plus `Read` from the start.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    path: PathBuf,
    size: u64,
    pos: u64,
}

impl BlobReader {
    pub(crate) fn open(path: &Path, digest: &Digest, size: u64) -> Result<BlobReader> {
        let file = fsutil::open_read(path)?.ok_or_else(|| Error::Corrupt {
            table: "blobs",
            key: digest.to_string(),
            reason: format!(
                "recorded, but its file {} is missing (run gcctl fsck)",
                path.display()
            ),
        })?;
        Ok(BlobReader {
            file,
            path: path.to_owned(),
            size,
            pos: 0,
        })
    }

    /// The blob's recorded size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    ///
    /// # Errors
    /// [`Error::Io`] naming the blob file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let max = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = buf.get_mut(..max).unwrap_or_default();
        self.file
            .read_at(buf, offset)
            .map_err(|e| Error::io("read", &self.path, e))
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}
