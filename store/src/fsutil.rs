//! Every durable file-system step of the store, in one place.
//!
//! The durability protocol (see `docs/design.md`) is built from these calls only: write data,
//! `fsync` the file, rename it into place, `fsync` the parent directory, and only then commit
//! the transaction that names it. Keeping them here means a reviewer checks the ordering in
//! the callers and the mechanics once, and every error names its path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` and its missing parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

/// Creates `dir` (its parent must exist); an existing directory is fine.
pub fn create_dir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Makes a file's data and metadata durable.
pub fn sync_file(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Opens a file for appending, creating it empty if missing.
pub fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Opens a file for reading; a missing file is `Ok(None)`.
pub fn open_read(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", path, e)),
    }
}

/// Clears the write bits of a file's mode (committed blobs are read-only).
pub fn make_read_only(file: &File, path: &Path) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    let mode = meta.permissions().mode() & !0o222;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Gives the owner write permission on `path` again; a missing file is fine.
pub fn make_writable(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o200 == 0 => {
            let mode = meta.permissions().mode() | 0o200;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", path, e))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// Removes everything inside `dir`, keeping `dir`.
pub fn empty_dir(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let res = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    Ok(())
}

/// Feeds the whole file to `f` in 1 MiB chunks (used to rebuild a hash when resuming).
pub fn read_chunks(file: &mut File, path: &Path, mut f: impl FnMut(&[u8])) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(total);
        }
        f(buf.get(..n).unwrap_or_default());
        total += n as u64;
    }
}
