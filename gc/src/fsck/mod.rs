//! fsck: checks every on-disk object of a store against its record, and every record against
//! its data, like `podman system check` or `ostree fsck`.
//!
//! [`fsck`] runs, in order (each is a [`Progress`] phase):
//!
//! 1. **mounts**: no entry of `/proc/self/mountinfo` has its mount point strictly under the
//!    store root (the root itself may be a mount point). Such a mount was left by a process that
//!    died while it held a snapshot mounted; it pins the snapshot's files and may hide them.
//! 2. **blobs**: every blob file some blob record (of any namespace) names exists, hashes to its
//!    own name and has the size every record gives it; every file under `content/blobs/<alg>/`
//!    is named by some record.
//! 3. **snapshots**: every snapshot record has its directory `snapshots/<sn>/<id>`, and its
//!    parent record; every directory under `snapshots/<sn>/` belongs to a record; the children
//!    index (`snapshot_children`) holds exactly the parent links the records give.
//! 4. **ingests**: every directory under `content/ingest/` belongs to an ingest record, and no
//!    ingest holds more bytes than its expected total.
//! 5. **leases**: every `lease_resources` row belongs to an existing lease.
//!
//! Nothing that another thread of this process is creating right now is reported as an orphan:
//! directories are listed inside a [`Store::watch_ids`] window and compared with a read
//! transaction begun after the listing, and blob files are re-checked under the blob-file lock,
//! which every commit holds from publishing a file to recording it. The whole pass holds
//! [`Store::maintenance`], so it never overlaps a garbage collection (which would remove
//! records and files underneath it); do not call it while holding that lock.
//!
//! With [`FsckOptions::repair`] nothing is deleted: broken data is *moved* into
//! `<root>/quarantine/<UTC time>/` and every record removed is written to `records.json`
//! there, so a repair can always be undone by hand. See `docs/fsck.md`.

// One module per job. The checks, in the order `fsck` runs them, are `mounts`, `blobs`,
// `snapshots`, `ingests` and `leases`: each is an `impl Run` block that adds problems to the
// report and plans the repair of each repairable one. `listing` and `records` take the two
// sides they compare (what is on disk, what the database says). `plan` is the repairs the
// checks ask for and `repair` applies them, with `record_fixes` for the record changes,
// `quarantine` for the moves, and `records_json`, `json` and `stamp` for what it writes.
// `run` holds the state of one pass.
mod blobs;
mod ingests;
mod json;
mod leases;
mod listing;
mod mounts;
mod plan;
mod quarantine;
mod record_fixes;
mod records;
mod records_json;
mod repair;
mod run;
mod snapshots;
mod stamp;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use strata_store::Store;

use crate::Result;

// `cleanup` finds the mounts it must undo with the same parser.
pub(crate) use mounts::mount_points;

use run::Run;

/// The phases [`fsck`] reports through [`Progress`], in the order they run. `blobs` counts
/// bytes hashed; the others count objects. `repair` runs only with [`FsckOptions::repair`].
pub const PHASES: [&str; 6] = [
    "mounts",
    "blobs",
    "snapshots",
    "ingests",
    "leases",
    "repair",
];

/// What [`fsck`] does besides checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsckOptions {
    /// Move broken data into `<root>/quarantine/<time>/` and remove the records that name
    /// broken or missing data (each written to `records.json` there first). Nothing is
    /// deleted. See [`ProblemKind`] for what each problem's repair is.
    pub repair: bool,
}

impl FsckOptions {
    /// Check only (the default).
    pub fn new() -> Self {
        FsckOptions::default()
    }

    /// The same options with [`FsckOptions::repair`] set to `repair`.
    pub fn with_repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }
}

/// How far a phase is: `done` of `total` (bytes in the `blobs` phase, objects elsewhere).
/// See [`PHASES`]. `done` may exceed `total` when a file grows while it is being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// One of [`PHASES`].
    pub phase: &'static str,
    /// Work done so far.
    pub done: u64,
    /// Work in the phase.
    pub total: u64,
}

/// The class of a [`Problem`], serialized in snake case (`missing_data`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record names data that is not there: a blob file or a snapshot directory.
    /// Repair: a snapshot record without children is removed; a blob is only reported (its
    /// bytes must be fetched again; then the record is whole again).
    MissingData,
    /// A blob file does not hash to its name, is not a regular file, or a record gives it
    /// another size. Repair: the file is quarantined and its records in every namespace
    /// removed; when only a record's size is wrong (the file matches its digest), only that
    /// record is removed.
    CorruptBlob,
    /// A blob file, snapshot directory or ingest directory that no record names (left by a
    /// crash; `new-<id>` and `rm-<id>` snapshot directories always are). Repair: quarantined.
    Orphan,
    /// A snapshot record whose parent record is missing. Not repaired: the snapshot's files
    /// may depend on its parent's.
    DanglingParent,
    /// A `snapshot_children` row naming a parent or child without a record, or a child whose
    /// record names another parent (containerd#11908). Such a row keeps its parent from being
    /// removed forever. Repair: the row is removed.
    PhantomChild,
    /// A snapshot whose record names a parent that exists, without the matching
    /// `snapshot_children` row, so the parent could be removed under it. Repair: the row is
    /// added.
    MissingChildLink,
    /// An ingest whose `data` holds more bytes than its non-zero expected total; its commit
    /// can only fail. Not repaired: abort the ingest.
    CorruptIngest,
    /// A `lease_resources` row whose lease record is missing. Repair: the row is removed.
    OrphanLeaseResource,
    /// A mount whose mount point is under the store root. Repair: unmounted (lazily when busy).
    StaleMount,
    /// A record that does not decode. The checks that need its table's records are skipped
    /// (their results would be wrong); not repaired.
    CorruptRecord,
    /// A file or directory that could not be read; what it would have shown is unknown. Not
    /// repaired.
    Unreadable,
}

impl ProblemKind {
    /// The snake-case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::MissingData => "missing_data",
            ProblemKind::CorruptBlob => "corrupt_blob",
            ProblemKind::Orphan => "orphan",
            ProblemKind::DanglingParent => "dangling_parent",
            ProblemKind::PhantomChild => "phantom_child",
            ProblemKind::MissingChildLink => "missing_child_link",
            ProblemKind::CorruptIngest => "corrupt_ingest",
            ProblemKind::OrphanLeaseResource => "orphan_lease_resource",
            ProblemKind::StaleMount => "stale_mount",
            ProblemKind::CorruptRecord => "corrupt_record",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// What it is about: `blob sha256:…`, `snapshot ns/sn/key (id 42)`, `ingest ns/ref (id 7)`,
    /// `snapshot_children ns/sn/parent -> child`, `lease_resources ns/lease type id`, or a path.
    pub object: String,
    /// What is wrong and, after a repair attempt, what the repair did or why it could not.
    pub detail: String,
    /// Whether a repair fixed it.
    pub repaired: bool,
}

/// How many objects each phase looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// Blob files hashed.
    pub blobs: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Snapshot records checked.
    pub snapshots: u64,
    /// Ingest records checked.
    pub ingests: u64,
    /// `lease_resources` rows checked against their lease.
    pub leases: u64,
    /// Entries of the mount table read.
    pub mounts: u64,
}

/// What [`fsck`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Every problem, in the order found (phase by phase).
    pub problems: Vec<Problem>,
    /// What was looked at.
    pub checked: Checked,
    /// The quarantine directory of this run, when a repair moved data or removed records.
    pub quarantine: Option<PathBuf>,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems a repair did not fix (all of them without a repair).
    pub fn unrepaired(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.repaired)
    }
}

/// Checks `store` (see the module documentation) and, with `options.repair`, repairs what can
/// be repaired without deleting anything. `progress` is called as each phase advances.
///
/// Holds [`Store::maintenance`] for the whole pass: it waits for a running collection.
///
/// # Errors
/// Only what stops the whole pass: the maintenance lock, database errors. A file that cannot
/// be read, a record that does not decode, or a repair that fails is a [`Problem`].
pub fn fsck(
    store: &Store,
    options: &FsckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<FsckReport> {
    let _maintenance = store.maintenance()?;
    let mut run = Run::new(store, progress);
    run.check_mounts();

    // The in-flight rule: a directory listed inside the watch whose id is neither watched nor
    // recorded in a transaction begun after the listing belongs to nobody.
    store.watch_ids()?;
    let listing = run.list();
    let txn = store.db().read();
    let watched = store.end_watch();
    let txn = txn?;
    let watched = watched?;
    let records = run.read_records(&txn)?;
    drop(txn);

    run.check_blobs(&records, &listing.blobs)?;
    run.check_snapshots(&records, &listing, &watched)?;
    run.check_ingests(&records, &listing.ingests);
    run.check_leases(&records);
    if options.repair {
        run.repair();
    }
    Ok(run.report)
}
