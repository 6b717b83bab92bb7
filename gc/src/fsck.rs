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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::ReadableTable;
use serde::Serialize;
use strata_snapshotter::gc::{self as sgc, SnapshotEntry};
use strata_store::db::{BLOBS, LEASE_RESOURCES, LEASES, SNAPSHOT_CHILDREN, SNAPSHOTS, WriteTxn};
use strata_store::gcview::{Current, IngestEntry, View};
use strata_store::{Algorithm, Digest, Store};

use crate::{Error, Result};

/// Blob files are hashed in chunks of this size.
const CHUNK: usize = 1 << 20;

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
    let mut run = Run {
        store,
        report: FsckReport::default(),
        plan: Vec::new(),
        settled: HashSet::new(),
        progress,
    };
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

/// One directory entry as listed.
#[derive(Debug)]
struct Entry {
    name: String,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct Listing {
    blobs: Vec<(Algorithm, Entry)>,
    /// (snapshotter, entry under `snapshots/<snapshotter>/`).
    snapshots: Vec<(String, Entry)>,
    /// Entries directly under `snapshots/` that are not directories.
    snapshot_strays: Vec<Entry>,
    ingests: Vec<Entry>,
}

/// A `(namespace, snapshotter, key)`.
type SnapKey = (String, String, String);

/// A `snapshot_children` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ChildRow {
    ns: String,
    sn: String,
    parent: String,
    child: String,
}

/// A `lease_resources` row.
#[derive(Debug, Clone)]
struct ResourceRow {
    ns: String,
    lease: String,
    kind: String,
    id: String,
}

/// Everything read from the one read transaction. `None` where a corrupt record made a table
/// unreadable as a whole (reported as [`ProblemKind::CorruptRecord`]).
#[derive(Debug, Default)]
struct Records {
    /// `(namespace, digest string)` of every blob record (keys only: never undecodable).
    blob_keys: Vec<(String, String)>,
    /// Sizes by `(namespace, digest string)`, from the decoded records.
    blob_sizes: Option<HashMap<(String, String), u64>>,
    ingests: Option<Vec<IngestEntry>>,
    snapshots: Option<Vec<SnapshotEntry>>,
    snapshot_keys: HashSet<SnapKey>,
    children: Vec<ChildRow>,
    leases: HashSet<(String, String)>,
    resources: Vec<ResourceRow>,
}

/// A repair to make for the problem at `problem`.
#[derive(Debug)]
struct Planned {
    problem: usize,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Unmount(PathBuf),
    /// Remove every record of `digest`, then move the file (checked to be the inode hashed).
    CorruptBlob {
        digest: Digest,
        path: PathBuf,
        inode: (u64, u64),
    },
    /// Remove one record whose size is wrong.
    BlobRecord {
        ns: String,
        digest: String,
    },
    /// Move a file no record names (re-checked under the blob-file lock).
    OrphanBlob {
        alg: Algorithm,
        name: String,
        path: PathBuf,
    },
    PhantomChild(ChildRow),
    AddChildLink(ChildRow),
    LeaseResource(ResourceRow),
    /// Remove a snapshot record whose directory is missing, if it has no children.
    MissingSnapshot {
        ns: String,
        sn: String,
        key: String,
        id: u64,
    },
    /// Move an orphan directory (snapshot or ingest) to `quarantine/<rel>`.
    OrphanDir {
        path: PathBuf,
        rel: PathBuf,
    },
}

impl Action {
    /// Order of application inside the repair transaction: phantom rows go before the
    /// children check of a missing snapshot.
    fn rank(&self) -> u8 {
        match self {
            Action::Unmount(_) => 0,
            Action::CorruptBlob { .. } | Action::BlobRecord { .. } | Action::OrphanBlob { .. } => 1,
            Action::PhantomChild(_) | Action::AddChildLink(_) | Action::LeaseResource(_) => 2,
            Action::MissingSnapshot { .. } => 3,
            Action::OrphanDir { .. } => 4,
        }
    }
}

struct Run<'a, 'p> {
    store: &'a Store,
    report: FsckReport,
    plan: Vec<Planned>,
    /// Problems a repair attempt has already noted (repaired or not).
    settled: HashSet<usize>,
    progress: &'p mut dyn FnMut(Progress),
}

fn db_err(e: impl Into<strata_store::Error>) -> Error {
    Error::Store(e.into())
}

fn io_err(op: &'static str, path: &Path, e: io::Error) -> Error {
    Error::Store(strata_store::Error::io(op, path, e))
}

/// The store error inside `e` when it is a corrupt record: `(table, key, reason)`.
fn as_corrupt(e: &Error) -> Option<(&'static str, &str, &str)> {
    let store = match e {
        Error::Store(s) => s,
        Error::Snapshotter(strata_snapshotter::Error::Store(s)) => s,
        _ => return None,
    };
    match store {
        strata_store::Error::Corrupt { table, key, reason } => Some((table, key, reason)),
        _ => None,
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

impl Run<'_, '_> {
    fn problem(&mut self, kind: ProblemKind, object: String, detail: String) -> usize {
        self.report.problems.push(Problem {
            kind,
            object,
            detail,
            repaired: false,
        });
        self.report.problems.len() - 1
    }

    fn planned(&mut self, kind: ProblemKind, object: String, detail: String, action: Action) {
        let problem = self.problem(kind, object, detail);
        self.plan.push(Planned { problem, action });
    }

    fn unreadable(&mut self, path: &Path, what: &str, e: &io::Error) {
        self.problem(
            ProblemKind::Unreadable,
            path.display().to_string(),
            format!("cannot {what}: {e}"),
        );
    }

    fn tick(&mut self, phase: &'static str, done: u64, total: u64) {
        (self.progress)(Progress { phase, done, total });
    }

    /// Reports a corrupt record and returns `None`, or passes any other error on.
    fn corrupt<T>(&mut self, got: Result<T>, skipped: &str) -> Result<Option<T>> {
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let Some((table, key, reason)) = as_corrupt(&e) else {
                    return Err(e);
                };
                let (object, detail) = (
                    format!("record {table} {key}"),
                    format!("{reason}; skipped: {skipped}"),
                );
                self.problem(ProblemKind::CorruptRecord, object, detail);
                Ok(None)
            }
        }
    }

    // ---- mounts ----------------------------------------------------------------------------

    /// Mounts under the root, found in `/proc/self/mountinfo`; unmounted in reverse order
    /// (the kernel lists mounts in the order they were made, so later ones may sit on top).
    fn check_mounts(&mut self) {
        let info = Path::new("/proc/self/mountinfo");
        let text = match fs::read(info) {
            Ok(t) => t,
            Err(e) => return self.unreadable(info, "read the mount table", &e),
        };
        let root = self.store.layout().root();
        // Mount points are absolute and canonical in the table.
        let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let points = mount_points(&text);
        let total = points.len() as u64;
        self.tick("mounts", 0, total);
        let mut stale = Vec::new();
        for point in points {
            if point != root && point.starts_with(&root) {
                stale.push(point);
            }
        }
        for point in stale.into_iter().rev() {
            let object = point.display().to_string();
            self.planned(
                ProblemKind::StaleMount,
                object,
                "mounted under the store root; no strata operation leaves a mount there".into(),
                Action::Unmount(point),
            );
        }
        self.report.checked.mounts = total;
        self.tick("mounts", total, total);
    }

    // ---- listing -------------------------------------------------------------------------

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

    fn list(&mut self) -> Listing {
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

    // ---- records ---------------------------------------------------------------------------

    fn read_records(&mut self, txn: &redb::ReadTransaction) -> Result<Records> {
        let mut r = Records::default();
        for item in txn
            .open_table(BLOBS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let (ns, d) = k.value();
            r.blob_keys.push((ns.to_owned(), d.to_owned()));
        }
        let view = View::new(txn).map_err(Error::from);
        if let Some(view) = self.corrupt(view, "blob sizes, ingest checks")? {
            let sizes = view
                .blobs
                .iter()
                .map(|b| ((b.ns.clone(), b.digest.to_string()), b.size))
                .collect();
            r.blob_sizes = Some(sizes);
            r.ingests = Some(view.ingests);
        }
        let snaps = sgc::snapshot_records(txn).map_err(Error::from);
        r.snapshots = self.corrupt(snaps, "snapshot directory and parent checks")?;
        for item in txn
            .open_table(SNAPSHOTS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let (ns, sn, key) = k.value();
            r.snapshot_keys
                .insert((ns.to_owned(), sn.to_owned(), key.to_owned()));
        }
        for item in txn
            .open_table(SNAPSHOT_CHILDREN)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let (ns, sn, parent, child) = k.value();
            r.children.push(ChildRow {
                ns: ns.to_owned(),
                sn: sn.to_owned(),
                parent: parent.to_owned(),
                child: child.to_owned(),
            });
        }
        for item in txn
            .open_table(LEASES)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let (ns, id) = k.value();
            r.leases.insert((ns.to_owned(), id.to_owned()));
        }
        for item in txn
            .open_table(LEASE_RESOURCES)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            let (ns, lease, kind, id) = k.value();
            r.resources.push(ResourceRow {
                ns: ns.to_owned(),
                lease: lease.to_owned(),
                kind: kind.to_owned(),
                id: id.to_owned(),
            });
        }
        Ok(r)
    }

    // ---- blobs -----------------------------------------------------------------------------

    /// Guarantees, for the records of the read transaction: each named file exists (else
    /// `missing_data`, confirmed by a later transaction that still has the record), hashes to
    /// its name and has each record's size (else `corrupt_blob`); and each listed file that no
    /// record names, confirmed under the blob-file lock, is an `orphan`.
    fn check_blobs(&mut self, records: &Records, files: &[(Algorithm, Entry)]) -> Result<()> {
        let layout = self.store.layout().clone();
        // Namespaces recording each digest.
        let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        let mut recorded_names: HashSet<&str> = HashSet::new();
        for (ns, d) in &records.blob_keys {
            recorded_names.insert(d.as_str());
            match d.parse::<Digest>() {
                Ok(digest) => by_digest.entry(digest).or_default().push(ns.clone()),
                Err(e) => {
                    self.problem(
                        ProblemKind::CorruptRecord,
                        format!("record blobs {ns}/{d}"),
                        format!("key is not a digest: {e}"),
                    );
                }
            }
        }

        let mut to_hash = Vec::new();
        let mut missing = Vec::new();
        let mut total = 0u64;
        for (digest, namespaces) in &by_digest {
            let path = layout.blob(digest);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    total = total.saturating_add(m.len());
                    to_hash.push((digest, namespaces, path));
                }
                Ok(m) => self.planned(
                    ProblemKind::CorruptBlob,
                    format!("blob {digest}"),
                    format!("{} is not a regular file", path.display()),
                    Action::CorruptBlob {
                        digest: digest.clone(),
                        inode: (m.dev(), m.ino()),
                        path,
                    },
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push((digest, namespaces)),
                Err(e) => self.unreadable(&path, "stat the blob file", &e),
            }
        }

        self.tick("blobs", 0, total);
        let mut done = 0u64;
        let mut buf = vec![0u8; CHUNK];
        for (digest, namespaces, path) in to_hash {
            let mut on_chunk = |n: u64| {
                done = done.saturating_add(n);
                (self.progress)(Progress {
                    phase: "blobs",
                    done,
                    total,
                });
            };
            let hashed = hash_file(&path, digest.algorithm(), &mut buf, &mut on_chunk);
            let (actual, len, inode) = match hashed {
                Ok(h) => h,
                Err(e) => {
                    self.unreadable(&path, "read the blob file", &e);
                    continue;
                }
            };
            self.report.checked.blobs += 1;
            self.report.checked.bytes += len;
            if actual != *digest {
                self.planned(
                    ProblemKind::CorruptBlob,
                    format!("blob {digest}"),
                    format!(
                        "content hashes to {actual} ({len} bytes); recorded in namespace(s) {}",
                        namespaces.join(", ")
                    ),
                    Action::CorruptBlob {
                        digest: digest.clone(),
                        path,
                        inode,
                    },
                );
                continue;
            }
            let Some(sizes) = &records.blob_sizes else {
                continue;
            };
            for ns in namespaces {
                let key = (ns.clone(), digest.to_string());
                if let Some(&size) = sizes.get(&key)
                    && size != len
                {
                    self.planned(
                        ProblemKind::CorruptBlob,
                        format!("blob {digest} in namespace {ns}"),
                        format!(
                            "recorded size {size}, the file holds {len} bytes (and matches \
                             its digest, so the record is wrong)"
                        ),
                        Action::BlobRecord {
                            ns: ns.clone(),
                            digest: digest.to_string(),
                        },
                    );
                }
            }
        }
        self.tick("blobs", done, total);

        if !missing.is_empty() {
            // A record deleted since the transaction (its file may go with the next
            // collection) is not a problem: confirm with a transaction begun after the stat.
            let fresh = self.store.db().read()?;
            let table = fresh.open_table(BLOBS).map_err(db_err)?;
            for (digest, namespaces) in missing {
                let path = layout.blob(digest);
                let key = digest.to_string();
                let mut still = Vec::new();
                for ns in namespaces {
                    if table
                        .get((ns.as_str(), key.as_str()))
                        .map_err(db_err)?
                        .is_some()
                    {
                        still.push(ns.as_str());
                    }
                }
                if !still.is_empty() && !exists(&path) {
                    self.problem(
                        ProblemKind::MissingData,
                        format!("blob {digest}"),
                        format!(
                            "{} does not exist; recorded in namespace(s) {}; fetch the blob \
                             again to restore it",
                            path.display(),
                            still.join(", ")
                        ),
                    );
                }
            }
        }

        let candidates: Vec<&(Algorithm, Entry)> = files
            .iter()
            .filter(|(alg, e)| {
                !recorded_names.contains(format!("{}:{}", alg.name(), e.name).as_str())
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        // A commit holds the shared side of this lock from publishing its file to committing
        // its record: under the exclusive side, a fresh transaction sees every published file's
        // record.
        let _files = self.store.blob_files_exclusive()?;
        let now_recorded = {
            let fresh = self.store.db().read()?;
            let table = fresh.open_table(BLOBS).map_err(db_err)?;
            recorded_digests(&table)?
        };
        for (alg, e) in candidates {
            let name = format!("{}:{}", alg.name(), e.name);
            if now_recorded.contains(&name) || !exists(&e.path) {
                continue;
            }
            let detail = if name.parse::<Digest>().is_ok() {
                "no blob record names this file".to_owned()
            } else {
                "not a blob file name; no blob record names it".to_owned()
            };
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                detail,
                Action::OrphanBlob {
                    alg: *alg,
                    name: e.name.clone(),
                    path: e.path.clone(),
                },
            );
        }
        Ok(())
    }

    // ---- snapshots -------------------------------------------------------------------------

    /// Guarantees: each record's directory exists (else `missing_data`, confirmed by a later
    /// transaction) and its parent record exists (else `dangling_parent`); each
    /// `snapshot_children` row names two records, the child naming that parent (else
    /// `phantom_child`), and each parent link has its row (else `missing_child_link`); each
    /// listed directory belongs to a record or to a snapshot being created now (else
    /// `orphan`).
    fn check_snapshots(
        &mut self,
        records: &Records,
        listing: &Listing,
        watched: &HashSet<u64>,
    ) -> Result<()> {
        let keys = &records.snapshot_keys;
        let rows: BTreeSet<&ChildRow> = records.children.iter().collect();
        let total = records.snapshots.as_ref().map_or(0, Vec::len) + listing.snapshots.len();
        let total = total as u64;
        let mut done = 0u64;
        self.tick("snapshots", 0, total);

        // Phantom rows need only keys (always readable); a child's parent needs its record.
        let parents: Option<HashMap<SnapKey, Option<&str>>> = records.snapshots.as_ref().map(|s| {
            s.iter()
                .map(|e| {
                    let k = (e.ns.clone(), e.snapshotter.clone(), e.key.clone());
                    (k, e.parent.as_deref())
                })
                .collect()
        });
        for row in &records.children {
            let pk = (row.ns.clone(), row.sn.clone(), row.parent.clone());
            let ck = (row.ns.clone(), row.sn.clone(), row.child.clone());
            let reason = if !keys.contains(&pk) && !keys.contains(&ck) {
                Some("neither the parent nor the child has a record".to_owned())
            } else if !keys.contains(&pk) {
                Some("the parent has no record".to_owned())
            } else if !keys.contains(&ck) {
                Some("the child has no record".to_owned())
            } else {
                match parents.as_ref().and_then(|p| p.get(&ck)) {
                    Some(Some(p)) if *p == row.parent => None,
                    Some(Some(p)) => Some(format!("the child's parent is {p:?}")),
                    Some(None) => Some("the child has no parent".to_owned()),
                    None => None,
                }
            };
            if let Some(reason) = reason {
                self.planned(
                    ProblemKind::PhantomChild,
                    format!(
                        "snapshot_children {}/{}/{} -> {}",
                        row.ns, row.sn, row.parent, row.child
                    ),
                    format!("{reason}; the row keeps the parent from being removed"),
                    Action::PhantomChild(row.clone()),
                );
            }
        }

        let Some(snaps) = &records.snapshots else {
            // Without decoded records no directory can be matched to its record.
            return Ok(());
        };
        let mut ids: HashMap<&str, HashSet<u64>> = HashMap::new();
        let mut missing = Vec::new();
        for e in snaps {
            ids.entry(e.snapshotter.as_str()).or_default().insert(e.id);
            self.report.checked.snapshots += 1;
            let object = format!(
                "snapshot {}/{}/{} (id {})",
                e.ns, e.snapshotter, e.key, e.id
            );
            if let Some(p) = &e.parent {
                let pk = (e.ns.clone(), e.snapshotter.clone(), p.clone());
                if !keys.contains(&pk) {
                    self.problem(
                        ProblemKind::DanglingParent,
                        object.clone(),
                        format!("its parent {p:?} has no record"),
                    );
                } else {
                    let row = ChildRow {
                        ns: e.ns.clone(),
                        sn: e.snapshotter.clone(),
                        parent: p.clone(),
                        child: e.key.clone(),
                    };
                    if !rows.contains(&row) {
                        self.planned(
                            ProblemKind::MissingChildLink,
                            object.clone(),
                            format!(
                                "no snapshot_children row links it to its parent {p:?}, so \
                                 the parent could be removed under it"
                            ),
                            Action::AddChildLink(row),
                        );
                    }
                }
            }
            let dir = self
                .store
                .snapshot_root(&e.snapshotter)
                .join(e.id.to_string());
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    self.problem(
                        ProblemKind::MissingData,
                        object,
                        format!("{} is not a directory", dir.display()),
                    );
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(e),
                Err(err) => self.unreadable(&dir, "stat the snapshot directory", &err),
            }
            done += 1;
            self.tick("snapshots", done, total);
        }
        if !missing.is_empty() {
            // Remove deletes the record before the directory: confirm the record is still
            // there (same id) in a transaction begun after the stat.
            let fresh = self.store.db().read()?;
            let now: HashMap<SnapKey, u64> = sgc::snapshot_records(&fresh)?
                .into_iter()
                .map(|e| ((e.ns, e.snapshotter, e.key), e.id))
                .collect();
            for e in missing {
                let k = (e.ns.clone(), e.snapshotter.clone(), e.key.clone());
                let dir = self
                    .store
                    .snapshot_root(&e.snapshotter)
                    .join(e.id.to_string());
                if now.get(&k) != Some(&e.id) || exists(&dir) {
                    continue;
                }
                self.planned(
                    ProblemKind::MissingData,
                    format!(
                        "snapshot {}/{}/{} (id {})",
                        e.ns, e.snapshotter, e.key, e.id
                    ),
                    format!("{} does not exist", dir.display()),
                    Action::MissingSnapshot {
                        ns: e.ns.clone(),
                        sn: e.snapshotter.clone(),
                        key: e.key.clone(),
                        id: e.id,
                    },
                );
            }
        }

        for stray in &listing.snapshot_strays {
            self.planned(
                ProblemKind::Orphan,
                stray.path.display().to_string(),
                "not a snapshotter directory".into(),
                Action::OrphanDir {
                    path: stray.path.clone(),
                    rel: Path::new("snapshots").join(&stray.name),
                },
            );
        }
        for (sn, e) in &listing.snapshots {
            done += 1;
            self.tick("snapshots", done, total);
            let recorded = ids.get(sn.as_str());
            let detail = match parse_snapshot_dir(&e.name) {
                SnapDir::Id(id) if recorded.is_some_and(|r| r.contains(&id)) => continue,
                SnapDir::Id(id) | SnapDir::New(id) if watched.contains(&id) => continue,
                SnapDir::Id(_) => "no snapshot record has this id".to_owned(),
                SnapDir::New(_) => "a snapshot build that never finished (new-<id>)".to_owned(),
                SnapDir::Removing(_) => {
                    "a snapshot removal that never finished (rm-<id>)".to_owned()
                }
                SnapDir::Other => "not a snapshot directory name".to_owned(),
            };
            if !exists(&e.path) {
                continue;
            }
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                detail,
                Action::OrphanDir {
                    path: e.path.clone(),
                    rel: Path::new("snapshots").join(sn).join(&e.name),
                },
            );
        }
        self.tick("snapshots", done, total);
        Ok(())
    }

    // ---- ingests ---------------------------------------------------------------------------

    /// Guarantees: each listed directory under `content/ingest` belongs to an ingest record of
    /// the read transaction (begun after the listing; a record is committed before its
    /// directory is made), else `orphan`; no ingest's `data` exceeds its non-zero expected
    /// total, else `corrupt_ingest`.
    fn check_ingests(&mut self, records: &Records, dirs: &[Entry]) {
        let Some(ingests) = &records.ingests else {
            return;
        };
        let total = ingests.len() as u64;
        self.tick("ingests", 0, total);
        let layout = self.store.layout().clone();
        let mut ids = HashSet::new();
        for (i, ing) in ingests.iter().enumerate() {
            ids.insert(ing.id);
            self.report.checked.ingests += 1;
            let data = layout.ingest_dir(ing.id).join("data");
            let len = match fs::metadata(&data) {
                Ok(m) => m.len(),
                // No directory or no data yet: a writer that has not written.
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => {
                    self.unreadable(&data, "stat the ingest data", &e);
                    0
                }
            };
            if len > 0 {
                // The expected total is not part of the collector's view; the status carries it.
                match self.store.content().status(&ing.ns, &ing.reference) {
                    Ok(s) if s.total > 0 && len > s.total => {
                        self.problem(
                            ProblemKind::CorruptIngest,
                            format!("ingest {}/{} (id {})", ing.ns, ing.reference, ing.id),
                            format!(
                                "{} holds {len} bytes, more than the expected total {}; abort \
                                 the ingest",
                                data.display(),
                                s.total
                            ),
                        );
                    }
                    Ok(_) => {}
                    // Committed or aborted since the read transaction.
                    Err(e) if e.kind() == strata_store::ErrorKind::NotFound => {}
                    Err(e) => {
                        self.problem(
                            ProblemKind::Unreadable,
                            format!("ingest {}/{} (id {})", ing.ns, ing.reference, ing.id),
                            format!("cannot read its status: {e}"),
                        );
                    }
                }
            }
            self.tick("ingests", i as u64 + 1, total);
        }
        for e in dirs {
            if e.name.parse::<u64>().is_ok_and(|id| ids.contains(&id)) || !exists(&e.path) {
                continue;
            }
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                "no ingest record has this id".into(),
                Action::OrphanDir {
                    path: e.path.clone(),
                    rel: Path::new("ingest").join(&e.name),
                },
            );
        }
    }

    // ---- leases ----------------------------------------------------------------------------

    /// Guarantees: each `lease_resources` row belongs to a lease record, else
    /// `orphan_lease_resource` (such a row would hold its resource for a lease no one can see
    /// or delete).
    fn check_leases(&mut self, records: &Records) {
        let total = records.resources.len() as u64;
        self.tick("leases", 0, total);
        for (i, row) in records.resources.iter().enumerate() {
            self.report.checked.leases += 1;
            if !records
                .leases
                .contains(&(row.ns.clone(), row.lease.clone()))
            {
                self.planned(
                    ProblemKind::OrphanLeaseResource,
                    format!(
                        "lease_resources {}/{} {} {}",
                        row.ns, row.lease, row.kind, row.id
                    ),
                    format!("lease {:?} has no record", row.lease),
                    Action::LeaseResource(row.clone()),
                );
            }
            self.tick("leases", i as u64 + 1, total);
        }
    }

    // ---- repair ----------------------------------------------------------------------------

    fn mark(&mut self, problem: usize, repaired: bool, note: &str) {
        self.settled.insert(problem);
        if let Some(p) = self.report.problems.get_mut(problem) {
            p.repaired = repaired;
            if !note.is_empty() {
                p.detail = format!("{}; repair: {note}", p.detail);
            }
        }
    }

    /// Applies the plan. Order: unmount; then, holding the blob-file lock, one write
    /// transaction removes (or adds) records, after `records.json` lists them durably; after
    /// its commit the files are moved (records go before files, as in every deletion, so a
    /// crash leaves orphans, never a record without its data); last the orphan directories.
    fn repair(&mut self) {
        let mut plan = std::mem::take(&mut self.plan);
        plan.sort_by_key(|p| p.action.rank());
        let total = plan.len() as u64;
        self.tick("repair", 0, total);

        let mut in_txn = Vec::new();
        let mut dirs = Vec::new();
        for p in plan {
            match p.action {
                Action::Unmount(path) => match strata_snapshotter::backend::mount::unmount(&path) {
                    Ok(()) => self.mark(p.problem, true, "unmounted"),
                    Err(e) => self.mark(p.problem, false, &format!("failed: {e}")),
                },
                Action::OrphanDir { path, rel } => dirs.push((p.problem, path, rel)),
                action => in_txn.push(Planned {
                    problem: p.problem,
                    action,
                }),
            }
        }
        let needs_quarantine = !dirs.is_empty() || !in_txn.is_empty();
        let quarantine = if needs_quarantine {
            match make_quarantine(self.store.layout().root()) {
                Ok(q) => Some(q),
                Err(e) => {
                    let note = format!("failed: cannot create the quarantine directory: {e}");
                    for problem in in_txn
                        .iter()
                        .map(|p| p.problem)
                        .chain(dirs.iter().map(|d| d.0))
                    {
                        self.mark(problem, false, &note);
                    }
                    None
                }
            }
        } else {
            None
        };
        let Some(q) = quarantine else {
            self.tick("repair", total, total);
            return;
        };
        self.report.quarantine = Some(q.clone());

        if !in_txn.is_empty() {
            let pending: Vec<usize> = in_txn.iter().map(|p| p.problem).collect();
            if let Err(e) = self.repair_records(&q, in_txn) {
                let note = format!("failed: {e}");
                for problem in pending {
                    if !self.settled.contains(&problem) {
                        self.mark(problem, false, &note);
                    }
                }
            }
        }
        for (problem, path, rel) in dirs {
            if !exists(&path) {
                self.mark(problem, true, "gone meanwhile");
                continue;
            }
            match quarantine_move(&path, &q.join(&rel)) {
                Ok(()) => self.mark(
                    problem,
                    true,
                    &format!("moved to {}", q.join(&rel).display()),
                ),
                Err(e) => self.mark(problem, false, &format!("failed: {e}")),
            }
        }
        self.tick("repair", total, total);
        // Leave no empty quarantine behind when nothing needed one after all.
        let _ = fs::remove_dir(&q);
        if !q.exists() {
            self.report.quarantine = None;
        }
    }

    /// The blob and record repairs: one write transaction under the blob-file lock, then the
    /// blob file moves.
    fn repair_records(&mut self, q: &Path, actions: Vec<Planned>) -> Result<()> {
        let store = self.store;
        let _files = store.blob_files_exclusive()?;
        let txn = store.db().write()?;
        let recorded = recorded_digests(&txn.open_table(BLOBS).map_err(db_err)?)?;
        let mut log = RecordLog::default();
        // (problem, note) settled in the transaction; applied once it commits.
        let mut settled: Vec<(usize, bool, String)> = Vec::new();
        // Files to move after the commit.
        let mut moves: Vec<Move> = Vec::new();

        for p in actions {
            let problem = p.problem;
            match p.action {
                Action::CorruptBlob {
                    digest,
                    path,
                    inode,
                } => {
                    let now = fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
                    if now.ok() != Some(inode) {
                        self.mark(
                            problem,
                            false,
                            "the file changed while checking; run fsck again",
                        );
                        continue;
                    }
                    let n = remove_blob_records(&txn, &digest.to_string(), &mut log)?;
                    let to = q
                        .join("blobs")
                        .join(digest.algorithm().name())
                        .join(digest.hex());
                    moves.push(Move {
                        problem,
                        from: path,
                        to,
                        records: Some(n),
                    });
                }
                Action::BlobRecord { ns, digest } => {
                    if remove_blob_record(&txn, &ns, &digest, &mut log)? {
                        settled.push((problem, true, "removed the record (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the record changed meanwhile");
                    }
                }
                Action::OrphanBlob { alg, name, path } => {
                    if recorded.contains(&format!("{}:{name}", alg.name())) {
                        self.mark(problem, false, "a record names it now; left in place");
                        continue;
                    }
                    let to = q.join("blobs").join(alg.name()).join(&name);
                    moves.push(Move {
                        problem,
                        from: path,
                        to,
                        records: None,
                    });
                }
                Action::PhantomChild(row) => {
                    if still_phantom(&txn, &row)? {
                        txn.open_table(SNAPSHOT_CHILDREN)
                            .map_err(db_err)?
                            .remove((
                                row.ns.as_str(),
                                row.sn.as_str(),
                                row.parent.as_str(),
                                row.child.as_str(),
                            ))
                            .map_err(db_err)?;
                        log.removed.push(child_json(&row));
                        settled.push((problem, true, "removed the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the row changed meanwhile");
                    }
                }
                Action::AddChildLink(row) => {
                    let child = sgc::current_snapshot(&txn, &row.ns, &row.sn, &row.child)?;
                    let parent = sgc::current_snapshot(&txn, &row.ns, &row.sn, &row.parent)?;
                    if parent.is_some()
                        && child.is_some_and(|c| c.parent.as_ref() == Some(&row.parent))
                    {
                        txn.open_table(SNAPSHOT_CHILDREN)
                            .map_err(db_err)?
                            .insert(
                                (
                                    row.ns.as_str(),
                                    row.sn.as_str(),
                                    row.parent.as_str(),
                                    row.child.as_str(),
                                ),
                                (),
                            )
                            .map_err(db_err)?;
                        log.added.push(child_json(&row));
                        settled.push((problem, true, "added the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the records changed meanwhile");
                    }
                }
                Action::LeaseResource(row) => {
                    let lease = txn
                        .open_table(LEASES)
                        .map_err(db_err)?
                        .get((row.ns.as_str(), row.lease.as_str()))
                        .map_err(db_err)?
                        .is_some();
                    let removed = !lease
                        && txn
                            .open_table(LEASE_RESOURCES)
                            .map_err(db_err)?
                            .remove((
                                row.ns.as_str(),
                                row.lease.as_str(),
                                row.kind.as_str(),
                                row.id.as_str(),
                            ))
                            .map_err(db_err)?
                            .is_some();
                    if removed {
                        log.removed.push(Json::obj(vec![
                            ("table", Json::str("lease_resources")),
                            ("namespace", Json::str(&row.ns)),
                            ("lease", Json::str(&row.lease)),
                            ("type", Json::str(&row.kind)),
                            ("id", Json::str(&row.id)),
                        ]));
                        settled.push((problem, true, "removed the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the lease or row changed meanwhile");
                    }
                }
                Action::MissingSnapshot { ns, sn, key, id } => {
                    let note = remove_missing_snapshot(store, &txn, &ns, &sn, &key, id, &mut log)?;
                    match note {
                        Ok(n) => settled.push((problem, true, n)),
                        Err(n) => self.mark(problem, false, &n),
                    }
                }
                Action::Unmount(_) | Action::OrphanDir { .. } => {}
            }
        }

        let changed = !log.removed.is_empty() || !log.added.is_empty();
        let mut committed = !changed;
        if changed {
            // Durable before the commit: a crash after it must not lose what was removed.
            let records = q.join("records.json");
            match write_durable(&records, log.render().as_bytes()) {
                Err(e) => {
                    txn.abort()?;
                    let note = format!("failed: cannot write {}: {e}", records.display());
                    for (problem, _, _) in &settled {
                        self.mark(*problem, false, &note);
                    }
                    settled.clear();
                }
                Ok(()) => match txn.commit() {
                    Ok(()) => committed = true,
                    Err(e) => {
                        let _ = fs::remove_file(&records);
                        let note = format!("failed: commit: {e}");
                        for (problem, _, _) in &settled {
                            self.mark(*problem, false, &note);
                        }
                        settled.clear();
                    }
                },
            }
        } else {
            txn.abort()?;
        }

        for (problem, done, note) in settled {
            self.mark(problem, done, &note);
        }
        for m in moves {
            if m.records.is_some() && !committed {
                // Its records are still there: moving the file would leave them without data.
                continue;
            }
            let removed = m
                .records
                .map(|n| format!("removed {n} record(s) (records.json); "))
                .unwrap_or_default();
            match quarantine_move(&m.from, &m.to) {
                Ok(()) => {
                    let note = format!("{removed}moved to {}", m.to.display());
                    self.mark(m.problem, true, &note);
                }
                Err(e) => {
                    let note = format!("{removed}moving the file failed: {e}");
                    self.mark(m.problem, false, &note);
                }
            }
        }
        Ok(())
    }
}

/// A file a repair moves into quarantine once the repair transaction has committed.
#[derive(Debug)]
struct Move {
    problem: usize,
    from: PathBuf,
    to: PathBuf,
    /// For a corrupt blob, how many records were removed (it moves only if they were).
    records: Option<usize>,
}

/// Hashes `path` in chunks of `buf`'s size: `(digest, length, (dev, inode))`.
fn hash_file(
    path: &Path,
    alg: Algorithm,
    buf: &mut [u8],
    on_chunk: &mut dyn FnMut(u64),
) -> io::Result<(Digest, u64, (u64, u64))> {
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut hasher = alg.hasher();
    let mut len = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        len += n as u64;
        on_chunk(n as u64);
    }
    Ok((hasher.finish(), len, (meta.dev(), meta.ino())))
}

/// Every digest string some namespace records.
fn recorded_digests(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for item in table.iter().map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        out.insert(k.value().1.to_owned());
    }
    Ok(out)
}

/// Removes every namespace's record of `digest` (as they are now, including any a commit
/// added since the check); returns how many.
fn remove_blob_records(txn: &WriteTxn<'_>, digest: &str, log: &mut RecordLog) -> Result<usize> {
    let namespaces: Vec<String> = {
        let table = txn.open_table(BLOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            let (ns, d) = k.value();
            if d == digest {
                out.push(ns.to_owned());
            }
        }
        out
    };
    let mut n = 0;
    for ns in namespaces {
        if remove_blob_record(txn, &ns, digest, log)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Removes one blob record, logging it (decoded when it decodes, raw bytes always).
fn remove_blob_record(
    txn: &WriteTxn<'_>,
    ns: &str,
    digest: &str,
    log: &mut RecordLog,
) -> Result<bool> {
    let entry = Current::new(txn).blob(ns, digest).ok().flatten();
    let raw = txn
        .open_table(BLOBS)
        .map_err(db_err)?
        .remove((ns, digest))
        .map_err(db_err)?
        .map(|g| g.value().to_vec());
    let Some(raw) = raw else {
        return Ok(false);
    };
    let mut fields = vec![
        ("table", Json::str("blobs")),
        ("namespace", Json::str(ns)),
        ("digest", Json::str(digest)),
    ];
    if let Some(e) = entry {
        fields.push(("size", Json::Num(e.size)));
        fields.push(("labels", Json::Map(e.labels)));
        fields.push(("created_at", Json::Str(e.created_at.to_rfc3339())));
    }
    fields.push(("raw", Json::Str(hex(&raw))));
    log.removed.push(Json::obj(fields));
    Ok(true)
}

/// Whether a `snapshot_children` row is still phantom in `txn`.
fn still_phantom(txn: &WriteTxn<'_>, row: &ChildRow) -> Result<bool> {
    let present = txn
        .open_table(SNAPSHOT_CHILDREN)
        .map_err(db_err)?
        .get((
            row.ns.as_str(),
            row.sn.as_str(),
            row.parent.as_str(),
            row.child.as_str(),
        ))
        .map_err(db_err)?
        .is_some();
    if !present {
        return Ok(false);
    }
    let parent = sgc::current_snapshot(txn, &row.ns, &row.sn, &row.parent)?;
    let child = sgc::current_snapshot(txn, &row.ns, &row.sn, &row.child)?;
    Ok(match (parent, child) {
        (Some(_), Some(c)) => c.parent.as_ref() != Some(&row.parent),
        _ => true,
    })
}

/// Removes the record of a snapshot whose directory is missing, unless something depends on
/// it: `Ok(Ok(note))` when removed, `Ok(Err(why not))` otherwise.
fn remove_missing_snapshot(
    store: &Store,
    txn: &WriteTxn<'_>,
    ns: &str,
    sn: &str,
    key: &str,
    id: u64,
    log: &mut RecordLog,
) -> Result<std::result::Result<String, String>> {
    let Some(current) = sgc::current_snapshot(txn, ns, sn, key)? else {
        return Ok(Err("the record is gone meanwhile".into()));
    };
    if current.id != id || exists(&store.snapshot_root(sn).join(id.to_string())) {
        return Ok(Err("the record or its directory changed meanwhile".into()));
    }
    if let Some(child) = snapshot_child(txn, ns, sn, key)? {
        return Ok(Err(format!(
            "kept: snapshot {child:?} is its child; remove the child first"
        )));
    }
    let raw = txn
        .open_table(SNAPSHOTS)
        .map_err(db_err)?
        .get((ns, sn, key))
        .map_err(db_err)?
        .map(|g| g.value().to_vec())
        .unwrap_or_default();
    let Some(e) = sgc::remove_snapshot(txn, ns, sn, key)? else {
        return Ok(Err("the record is gone meanwhile".into()));
    };
    let mut fields = vec![
        ("table", Json::str("snapshots")),
        ("namespace", Json::str(ns)),
        ("snapshotter", Json::str(sn)),
        ("key", Json::str(key)),
        ("id", Json::Num(e.id)),
        ("kind", Json::Str(e.kind.to_string())),
        ("parent", e.parent.as_deref().map_or(Json::Null, Json::str)),
        ("labels", Json::Map(e.labels.clone())),
        ("created_at", Json::Str(e.created_at.to_rfc3339())),
        ("raw", Json::Str(hex(&raw))),
    ];
    if let Some(size) = e.size {
        fields.push(("size", Json::Num(size)));
    }
    log.removed.push(Json::obj(fields));
    if let Some(p) = &e.parent {
        log.removed.push(child_json(&ChildRow {
            ns: ns.to_owned(),
            sn: sn.to_owned(),
            parent: p.clone(),
            child: key.to_owned(),
        }));
    }
    Ok(Ok("removed the record (records.json)".into()))
}

/// A child of `key`: from the children index, or any record naming it as parent.
fn snapshot_child(txn: &WriteTxn<'_>, ns: &str, sn: &str, key: &str) -> Result<Option<String>> {
    {
        let children = txn.open_table(SNAPSHOT_CHILDREN).map_err(db_err)?;
        if let Some(item) = children.range((ns, sn, key, "")..).map_err(db_err)?.next() {
            let (k, _) = item.map_err(db_err)?;
            let (kns, ksn, parent, child) = k.value();
            if kns == ns && ksn == sn && parent == key {
                return Ok(Some(child.to_owned()));
            }
        }
    }
    let keys: Vec<String> = {
        let table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.range((ns, sn, "")..).map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            let (kns, ksn, k) = k.value();
            if kns != ns || ksn != sn {
                break;
            }
            out.push(k.to_owned());
        }
        out
    };
    for k in keys {
        if let Some(e) = sgc::current_snapshot(txn, ns, sn, &k)?
            && e.parent.as_deref() == Some(key)
        {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

fn child_json(row: &ChildRow) -> Json {
    Json::obj(vec![
        ("table", Json::str("snapshot_children")),
        ("namespace", Json::str(&row.ns)),
        ("snapshotter", Json::str(&row.sn)),
        ("parent", Json::str(&row.parent)),
        ("child", Json::str(&row.child)),
    ])
}

/// What a snapshot directory's name says.
#[derive(Debug, PartialEq, Eq)]
enum SnapDir {
    Id(u64),
    New(u64),
    Removing(u64),
    Other,
}

fn parse_snapshot_dir(name: &str) -> SnapDir {
    let num = |s: &str| {
        // Only the canonical decimal form: "007" names no record's directory.
        s.parse::<u64>().ok().filter(|n| n.to_string() == s)
    };
    if let Some(id) = num(name) {
        SnapDir::Id(id)
    } else if let Some(id) = name.strip_prefix("new-").and_then(num) {
        SnapDir::New(id)
    } else if let Some(id) = name.strip_prefix("rm-").and_then(num) {
        SnapDir::Removing(id)
    } else {
        SnapDir::Other
    }
}

/// Mount points (field 5) of `/proc/self/mountinfo`, octal escapes (`\040`) decoded.
pub(crate) fn mount_points(text: &[u8]) -> Vec<PathBuf> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .filter(|f| !f.is_empty())
        .map(|f| PathBuf::from(OsString::from_vec(unescape_octal(f))))
        .collect()
}

fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        if b == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// `<root>/quarantine/<UTC time>` (with `-2`, `-3`, ... when that exists), created.
fn make_quarantine(root: &Path) -> io::Result<PathBuf> {
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

/// `20261122T201500Z`.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Moves `from` to `to` (same filesystem), creating `to`'s parents, and syncs both parents so
/// the move survives a crash.
fn quarantine_move(from: &Path, to: &Path) -> Result<()> {
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
fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(path))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The records a repair removed and added, for `records.json`.
#[derive(Debug, Default)]
struct RecordLog {
    removed: Vec<Json>,
    added: Vec<Json>,
}

impl RecordLog {
    /// `{"format": 1, "removed": [...], "added": [...]}`, one record per line.
    fn render(&self) -> String {
        let mut out = String::from("{\n  \"format\": 1,\n");
        for (name, list, last) in [
            ("removed", &self.removed, false),
            ("added", &self.added, true),
        ] {
            out.push_str(&format!("  \"{name}\": ["));
            for (i, j) in list.iter().enumerate() {
                out.push_str(if i == 0 { "\n    " } else { ",\n    " });
                j.render(&mut out);
            }
            out.push_str(if list.is_empty() { "]" } else { "\n  ]" });
            out.push_str(if last { "\n" } else { ",\n" });
        }
        out.push_str("}\n");
        out
    }
}

/// The little JSON `records.json` needs (this crate has no JSON dependency).
#[derive(Debug)]
enum Json {
    Str(String),
    Num(u64),
    Null,
    Map(BTreeMap<String, String>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    fn obj(fields: Vec<(&'static str, Json)>) -> Json {
        Json::Obj(fields)
    }

    fn render(&self, out: &mut String) {
        match self {
            Json::Str(s) => json_string(s, out),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Null => out.push_str("null"),
            Json::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    json_string(k, out);
                    out.push_str(": ");
                    json_string(v, out);
                }
                out.push('}');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    json_string(k, out);
                    out.push_str(": ");
                    v.render(out);
                }
                out.push('}');
            }
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_decode_octal_escapes() {
        let table = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n\
                      37 35 0:40 / /var/lib/my\\040store/tmp/x rw - tmpfs tmpfs rw\n\
                      38 35 0:41 / /a\\134b rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(table),
            vec![
                PathBuf::from("/mnt2"),
                PathBuf::from("/var/lib/my store/tmp/x"),
                PathBuf::from("/a\\b"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_lone_backslashes() {
        assert_eq!(unescape_octal(b"a\\9b\\04"), b"a\\9b\\04".to_vec());
    }

    #[test]
    fn utc_stamp_formats_civil_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        // 2026-11-22T20:15:00Z.
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_378_500);
        assert_eq!(utc_stamp(t), "20261122T201500Z");
        // A leap day.
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(t), "20000229T000000Z");
    }

    #[test]
    fn snapshot_dir_names() {
        assert_eq!(parse_snapshot_dir("42"), SnapDir::Id(42));
        assert_eq!(parse_snapshot_dir("new-7"), SnapDir::New(7));
        assert_eq!(parse_snapshot_dir("rm-7"), SnapDir::Removing(7));
        assert_eq!(parse_snapshot_dir("007"), SnapDir::Other);
        assert_eq!(parse_snapshot_dir("x"), SnapDir::Other);
    }

    #[test]
    fn records_json_escapes() {
        let log = RecordLog {
            removed: vec![Json::obj(vec![
                ("a", Json::str("q\"\\\n\u{1}")),
                ("n", Json::Num(3)),
                ("p", Json::Null),
            ])],
            added: vec![],
        };
        assert_eq!(
            log.render(),
            "{\n  \"format\": 1,\n  \"removed\": [\n    {\"a\": \"q\\\"\\\\\\n\\u0001\", \
             \"n\": 3, \"p\": null}\n  ],\n  \"added\": []\n}\n"
        );
    }
}
