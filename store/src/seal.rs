//! The clean-close seal of `meta.redb`.
//!
//! redb checksums the pages it uses, so damage to free pages goes unnoticed, and a small
//! database is mostly free pages. Yet any byte of a cleanly closed database that changes
//! before the next open was changed by something other than strata: a failing disk, a stray
//! `dd`, a bad restore. So at clean close the store writes `meta.redb.seal` (the file's length
//! and sha256), and at open a seal that does not match refuses the file. The seal is removed
//! before redb opens the file for writing; a crash therefore leaves no seal, and recovery
//! falls back to redb's own repair and integrity check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::fsutil;

const MAGIC: &str = "strata-seal-v1";

fn seal_path(meta: &Path) -> PathBuf {
    let mut p = meta.as_os_str().to_owned();
    p.push(".seal");
    PathBuf::from(p)
}

fn fingerprint(meta: &Path) -> Result<(u64, Digest)> {
    let mut file = fsutil::open_read(meta)?
        .ok_or_else(|| Error::not_found("database file", meta.display().to_string()))?;
    let mut h = Algorithm::Sha256.hasher();
    let len = fsutil::read_chunks(&mut file, meta, |c| h.update(c))?;
    Ok((len, h.finish()))
}

/// Checks `meta` against its seal, if there is one, then removes the seal.
///
/// # Errors
/// [`Error::DatabaseDamaged`] when the file differs from what was sealed (the seal is kept,
/// so the check repeats until the file is dealt with).
pub fn verify_and_remove(meta: &Path) -> Result<()> {
    let path = seal_path(meta);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut parts = text.split_whitespace();
    let sealed = match (
        parts.next(),
        parts.next().and_then(|l| l.parse::<u64>().ok()),
        parts.next(),
    ) {
        (Some(MAGIC), Some(len), Some(digest)) => digest.parse::<Digest>().ok().map(|d| (len, d)),
        _ => None,
    };
    if meta.exists() {
        let Some(sealed) = sealed else {
            return Err(Error::DatabaseDamaged {
                path: meta.to_owned(),
                detail: format!("its seal {} is unreadable", path.display()),
            });
        };
        if fingerprint(meta)? != sealed {
            return Err(Error::DatabaseDamaged {
                path: meta.to_owned(),
                detail: format!(
                    "its bytes changed after strata closed it cleanly (seal {} does not match; \
                     if you restored the file on purpose, delete the seal)",
                    path.display()
                ),
            });
        }
    }
    fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    match meta.parent() {
        Some(dir) => fsutil::sync_dir(dir),
        None => Ok(()),
    }
}

/// Writes the seal of a cleanly closed `meta` (data synced, renamed, directory synced).
pub fn write(meta: &Path) -> Result<()> {
    let (len, digest) = fingerprint(meta)?;
    let path = seal_path(meta);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, format!("{MAGIC} {len} {digest}\n"))
        .map_err(|e| Error::io("write", &tmp, e))?;
    let f = fs::File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
    fsutil::sync_file(&f, &tmp)?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    match meta.parent() {
        Some(dir) => fsutil::sync_dir(dir),
        None => Ok(()),
    }
}
