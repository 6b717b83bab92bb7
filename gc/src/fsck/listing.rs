//! The disk side of the comparison: blob files, snapshot directories and ingest directories,
//! listed inside the [`strata_store::Store::watch_ids`] window, before the read transaction
//! they are compared with begins.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use strata_store::Algorithm;

use super::run::Run;

/// One directory entry as listed.
#[derive(Debug)]
pub(super) struct Entry {
    /// The file name, lossily as UTF-8 (a name that is not UTF-8 names no record).
    pub(super) name: String,
    /// The full path.
    pub(super) path: PathBuf,
}

/// What is on disk, sorted by path within each directory.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// (algorithm, entry under `content/blobs/<alg>/`).
    pub(super) blobs: Vec<(Algorithm, Entry)>,
    /// (snapshotter, entry under `snapshots/<snapshotter>/`).
    pub(super) snapshots: Vec<(String, Entry)>,
    /// Entries directly under `snapshots/` that are not directories.
    pub(super) snapshot_strays: Vec<Entry>,
    /// Entries under `content/ingest/`.
    pub(super) ingests: Vec<Entry>,
}

impl Run<'_, '_> {
    /// Every entry of `dir`; an unreadable directory is a problem and lists as empty (so
    /// nothing in it is taken for an orphan). A missing directory lists as empty.
    fn read_dir(&mut self, dir: &Path) -> Vec<Entry> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.unreadable(dir, "list the directory", &e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => out.push(Entry {
                    name: e.file_name().to_string_lossy().into_owned(),
                    path: e.path(),
                }),
                Err(e) => self.unreadable(dir, "list the directory", &e),
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Lists the blob, snapshot and ingest directories. Missing directories list as empty.
    pub(super) fn list(&mut self) -> Listing {
        let layout = self.store.layout().clone();
        let mut listing = Listing::default();
        for alg in Algorithm::ALL {
            for e in self.read_dir(&layout.blob_dir(alg)) {
                listing.blobs.push((alg, e));
            }
        }
        for top in self.read_dir(&layout.snapshots()) {
            if fs::symlink_metadata(&top.path).is_ok_and(|m| m.is_dir()) {
                for e in self.read_dir(&top.path) {
                    listing.snapshots.push((top.name.clone(), e));
                }
            } else {
                listing.snapshot_strays.push(top);
            }
        }
        listing.ingests = self.read_dir(&layout.ingest_root());
        listing
    }
}
