//! Backends: how a snapshot's directory is laid out and mounted.
//!
//! Every snapshot lives in `snapshots/<snapshotter>/<id>/`, with its files in `fs/`:
//! - **overlay**: `fs/` is the snapshot's own layer (an overlay upper dir), `work/` the overlay
//!   work dir of an active snapshot; parents are stacked as lower dirs;
//! - **native**: `fs/` is a full copy of the parent plus this snapshot's changes, for hosts
//!   without overlay.

pub(crate) mod fs;
pub mod mount;
pub(crate) mod native;
pub(crate) mod overlay;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::snapshot::Kind;

/// One mount, as containerd describes it: `mount -t <type> -o <options> <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `bind` or `overlay`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Source path (`overlay` for overlay mounts).
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// The directory-level behaviour of one snapshotter.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Creates the tree of a new snapshot in the empty directory `dir` (a staging name that
    /// will be renamed into place). `parents` are the parents' directories, nearest first.
    fn create(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<()>;

    /// The mounts of a snapshot whose directory is `dir`.
    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<Vec<Mount>>;
}

/// `<dir>/fs`: a snapshot's files.
pub(crate) fn fs_dir(dir: &Path) -> PathBuf {
    dir.join("fs")
}

/// `<dir>/work`: an active overlay snapshot's work dir.
pub(crate) fn work_dir(dir: &Path) -> PathBuf {
    dir.join("work")
}

pub(crate) fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| crate::Error::Mount {
            target: p.display().to_string(),
            reason: "path is not UTF-8".into(),
        })
}
