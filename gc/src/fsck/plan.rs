//! The repairs the checks plan: one [`Action`] per repairable problem, applied by `repair`
//! only with [`super::FsckOptions::repair`]. Each action carries what the repair needs to
//! re-check, against the records as they are then, that it still applies.

use std::path::PathBuf;

use strata_store::{Algorithm, Digest};

use super::records::{ChildRow, ResourceRow};

/// A repair to make for the problem at `problem`.
#[derive(Debug)]
pub(super) struct Planned {
    /// Index of the problem in [`super::FsckReport::problems`].
    pub(super) problem: usize,
    /// What the repair does.
    pub(super) action: Action,
}

/// One repair. Record changes are re-checked in the repair transaction; moves check that
/// their source still exists.
#[derive(Debug)]
pub(super) enum Action {
    /// Unmount a stale mount (lazily when busy).
    Unmount(PathBuf),
    /// Remove every record of `digest`, then move the file (checked to be the inode hashed).
    CorruptBlob {
        digest: Digest,
        path: PathBuf,
        inode: (u64, u64),
    },
    /// Remove one record whose size is wrong.
    BlobRecord { ns: String, digest: String },
    /// Move a file no record names (re-checked under the blob-file lock).
    OrphanBlob {
        alg: Algorithm,
        name: String,
        path: PathBuf,
    },
    /// Remove a `snapshot_children` row, if it is still phantom.
    PhantomChild(ChildRow),
    /// Add a missing `snapshot_children` row, if both records still agree on the link.
    AddChildLink(ChildRow),
    /// Remove a `lease_resources` row, if its lease still has no record.
    LeaseResource(ResourceRow),
    /// Remove a snapshot record whose directory is missing, if it has no children.
    MissingSnapshot {
        ns: String,
        sn: String,
        key: String,
        id: u64,
    },
    /// Move an orphan directory (snapshot or ingest) to `quarantine/<rel>`.
    OrphanDir { path: PathBuf, rel: PathBuf },
}

impl Action {
    /// Order of application inside the repair transaction: phantom rows go before the
    /// children check of a missing snapshot.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Action::Unmount(_) => 0,
            Action::CorruptBlob { .. } | Action::BlobRecord { .. } | Action::OrphanBlob { .. } => 1,
            Action::PhantomChild(_) | Action::AddChildLink(_) | Action::LeaseResource(_) => 2,
            Action::MissingSnapshot { .. } => 3,
            Action::OrphanDir { .. } => 4,
        }
    }
}
