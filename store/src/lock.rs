//! The root's `LOCK` file: one `Store` per root, across threads and processes.
//!
//! redb locks only its own file; blobs, ingests and snapshot directories need a lock of
//! their own, taken before the database is opened. The holder writes its pid into the file
//! so a second opener can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive `flock` on `<root>/LOCK`, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`Error::StoreBusy`] with the holder's pid when another opener has it (this includes a
    /// second `Store::open` of the same root in this process); [`Error::Io`] otherwise.
    pub fn acquire(root: &Path) -> Result<StoreLock> {
        let path = root.join("LOCK");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::StoreBusy {
                    root: PathBuf::from(root),
                    pid: read_pid(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        // The pid is advice for error messages only, so it is not synced.
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"))
            .map_err(|e| Error::io("write", &path, e))?;
        Ok(StoreLock { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
