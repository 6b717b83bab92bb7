//! The native backend: every active snapshot is a full copy of its parent.

use std::path::{Path, PathBuf};

use super::{Backend, Mount, fs, fs_dir, path_str};
use crate::Result;
use crate::snapshot::Kind;

/// Full copies, for hosts without overlay (or without root).
#[derive(Debug, Clone, Default)]
pub(crate) struct Native;

impl Backend for Native {
    fn create(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<()> {
        fs::create_dir_mode(dir, 0o700)?;
        match (kind, parents.first()) {
            // An active snapshot starts as a copy of its parent (copy_file_range, so reflinks
            // where the filesystem has them).
            (Kind::Active, Some(parent)) => {
                fs::copy_tree(&fs_dir(parent), &fs_dir(dir))?;
                // The copy is this snapshot's data: durable before its record exists.
                fs::sync_filesystem(dir)
            }
            // A view of a parent mounts the parent read-only; it needs no files of its own.
            _ => fs::create_dir_mode(&fs_dir(dir), 0o755),
        }
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<Vec<Mount>> {
        let (source, ro) = match (kind, parents.first()) {
            (Kind::Committed, _) => return Ok(Vec::new()),
            (Kind::Active, _) => (fs_dir(dir), false),
            (Kind::View, None) => (fs_dir(dir), true),
            (Kind::View, Some(parent)) => (fs_dir(parent), true),
        };
        Ok(vec![Mount {
            kind: "bind".into(),
            source: path_str(&source)?,
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        }])
    }
}
