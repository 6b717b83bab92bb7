//! The quarantine directory, `<root>/quarantine/<UTC time>/`, and the durable moves and
//! writes into it. Moves are `rename(2)` within the root, each parent synced, so a moved file
//! is never lost by a crash; a move across filesystems fails (`EXDEV`) rather than copy.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::stamp::utc_stamp;
use crate::{Error, Result};

/// `<root>/quarantine/<UTC time>` (with `-2`, `-3`, ... when that exists), created.
pub(super) fn make_quarantine(root: &Path) -> io::Result<PathBuf> {
    let base = root.join("quarantine");
    fs::create_dir_all(&base)?;
    let stamp = utc_stamp(SystemTime::now());
    for n in 1u32..=9999 {
        let dir = if n == 1 {
            base.join(&stamp)
        } else {
            base.join(format!("{stamp}-{n}"))
        };
        match fs::create_dir(&dir) {
            Ok(()) => {
                sync_dir(&base)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free quarantine directory name"))
}

/// Moves `from` to `to` (same filesystem), creating `to`'s parents, and syncs both parents so
/// the move survives a crash.
pub(super) fn quarantine_move(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(to);
    fs::create_dir_all(parent).map_err(|e| io_err("create directory", parent, e))?;
    fs::rename(from, to).map_err(|e| io_err("rename", from, e))?;
    sync_dir(parent).map_err(|e| io_err("fsync", parent, e))?;
    if let Some(src) = from.parent() {
        sync_dir(src).map_err(|e| io_err("fsync", src, e))?;
    }
    Ok(())
}

/// Writes `path` through a temporary file, fsynced and renamed, with its directory synced.
pub(super) fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(path))
}

/// Syncs `dir`, so the entries created, renamed or removed in it survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn io_err(op: &'static str, path: &Path, e: io::Error) -> Error {
    Error::Store(strata_store::Error::io(op, path, e))
}
