//! One garbage collection: mark, sweep, cleanup, with the time each took; and the dry run
//! that predicts it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use strata_snapshotter::gc::{disk_usage, read_snapshot};
use strata_store::{Store, Timestamp, failpoint};

use crate::cleanup::{self, Cleanup};
use crate::error::Result;
use crate::mark::{Marked, mark_txn};
use crate::node::{Kind, Node};
use crate::sweep::sweep;

/// What one collection did and how long each phase took.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the mark began.
    pub started_at: Timestamp,
    /// The mark (a read transaction; writers ran meanwhile).
    #[serde(serialize_with = "millis")]
    pub mark: Duration,
    /// The sweep: how long the one write transaction was held.
    #[serde(serialize_with = "millis")]
    pub sweep: Duration,
    /// Cleanup of files no record names (no transaction held).
    #[serde(serialize_with = "millis")]
    pub cleanup: Duration,
    /// Records removed, sorted by type, namespace and key.
    pub removed: Vec<Node>,
    /// Unreachable when marked, but kept because a write during the mark reached them.
    pub kept_late: usize,
    /// Files removed, failures and missing data.
    pub files: Cleanup,
    /// When the next collection would find something to remove without any write (the
    /// earliest lease, image or ingest expiry still ahead).
    pub next_expiry: Option<Timestamp>,
}

impl Report {
    /// Bytes freed on disk (blob files, ingests and snapshot directories removed).
    pub fn bytes_freed(&self) -> u64 {
        self.files.bytes()
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Runs one full collection now: mark on a read transaction, sweep in one write transaction,
/// then cleanup and reconcile of files outside any transaction.
///
/// # Errors
/// Unavailable while another collection runs on this store; corrupt records; database and
/// directory errors. A failed sweep removes nothing.
pub fn collect(store: &Store) -> Result<Report> {
    collect_at(store, Timestamp::now())
}

/// [`collect`] judging expiry and conditions by the clock `now` (tests).
///
/// # Errors
/// As [`collect`].
pub fn collect_at(store: &Store, now: Timestamp) -> Result<Report> {
    let _pass = store.maintenance()?;
    std::thread::scope(|scope| {
        // Cleanup's listing of the directories needs no record, so it runs on another core
        // while the mark reads the records; cleanup reads its records after the sweep.
        let listing = scope.spawn(|| cleanup::begin(store));
        let started_at = Timestamp::now();
        let t = Instant::now();
        let marked = {
            let txn = store.db().read_tracked()?;
            let marked = mark_txn(&txn, started_at, now).and_then(|m| {
                // Between the mark and the sweep: writes here are what the late trace is for.
                failpoint!("gc.mark.after");
                Ok(m)
            });
            if marked.is_err() {
                // Stop tracking: no sweep will take the set.
                let _ = store.db().take_touched();
            }
            marked?
        };
        let mark = t.elapsed();
        // The sweep changes records only, so it need not wait for the listing: a listing held
        // up by a slow or stuck directory never holds up the records' collection.
        let swept = match sweep(store, &marked) {
            Ok(s) => s,
            Err(e) => {
                let _ = store.db().take_touched();
                return Err(e);
            }
        };
        let t = Instant::now();
        let listing = joined(listing);
        // The sweep has committed: a cleanup that cannot even list a directory is reported
        // with the sweep's result, and the next collection retries it.
        let files = listing
            .and_then(|l| cleanup::finish(store, l, true))
            .unwrap_or_else(|e| cleanup::Cleanup {
                failed: vec![cleanup::Failure {
                    path: store.layout().root().to_owned(),
                    error: e.to_string(),
                }],
                ..cleanup::Cleanup::default()
            });
        let cleanup = t.elapsed();
        Ok(Report {
            started_at,
            mark,
            sweep: swept.hold,
            cleanup,
            removed: swept.removed,
            kept_late: swept.kept_late,
            files,
            next_expiry: marked.next_expiry,
        })
    })
}

/// The result of a thread running [`cleanup::begin`]; a panic there is an error here.
fn joined<'s>(
    handle: std::thread::ScopedJoinHandle<'_, Result<cleanup::Listing<'s>>>,
) -> Result<cleanup::Listing<'s>> {
    handle
        .join()
        .unwrap_or_else(|_| Err(crate::Error::Panicked("directory listing")))
}

/// Reclaims what a crash left: files no record names. Also reports records whose data is
/// missing. Runs inside every [`collect`]; call it alone at start-up.
///
/// # Errors
/// As [`collect`].
pub fn reconcile(store: &Store) -> Result<Cleanup> {
    let _pass = store.maintenance()?;
    cleanup::reconcile(store, true)
}

/// Files and directories no record names now, and records whose data is missing: what the
/// next collection's cleanup would find, without a mark and without removing anything. Safe
/// while writers run: objects being created are told apart from orphans as cleanup does
/// (`docs/gc.md`).
///
/// # Errors
/// Unavailable while another collection runs on this store; corrupt records; database and
/// directory errors.
pub fn orphans(store: &Store) -> Result<Cleanup> {
    let _pass = store.maintenance()?;
    cleanup::reconcile(store, false)
}

/// One object a collection would remove, with the bytes its removal frees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Doomed {
    /// The object.
    pub node: Node,
    /// Bytes freed on disk: the blob file when no surviving record in any namespace names
    /// it, the snapshot's directory; 0 otherwise.
    pub unique_bytes: u64,
    /// Bytes that stay because something surviving shares them (a blob recorded in another
    /// namespace too).
    pub shared_bytes: u64,
}

/// What a collection would do now.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The records a sweep would remove, sorted (the same order as [`Report::removed`]).
    pub remove: Vec<Doomed>,
    /// Files no record names now, which cleanup would remove.
    pub orphans: Vec<cleanup::Orphan>,
    /// Records whose data is missing.
    pub missing: Vec<cleanup::Missing>,
    /// Sum of [`Doomed::unique_bytes`] and the orphans' bytes.
    pub unique_bytes: u64,
    /// Sum of [`Doomed::shared_bytes`].
    pub shared_bytes: u64,
}

/// What [`collect`] would remove if it ran now and nothing changed meanwhile; removes
/// nothing.
///
/// # Errors
/// Corrupt records; database and directory errors.
pub fn dry_run(store: &Store) -> Result<Plan> {
    dry_run_at(store, Timestamp::now())
}

/// [`dry_run`] by the clock `now`.
///
/// # Errors
/// As [`dry_run`].
pub fn dry_run_at(store: &Store, now: Timestamp) -> Result<Plan> {
    let _pass = store.maintenance()?;
    let (remove, files) = std::thread::scope(|scope| {
        let listing = scope.spawn(|| cleanup::begin(store));
        let remove = {
            let txn = store.db().read()?;
            let marked = mark_txn(&txn, Timestamp::now(), now)?;
            price(store, &txn, &marked)?
        };
        let files = cleanup::finish(store, joined(listing)?, false)?;
        Ok::<_, crate::Error>((remove, files))
    })?;
    let unique_bytes = remove.iter().map(|d| d.unique_bytes).sum::<u64>() + files.bytes();
    let shared_bytes = remove.iter().map(|d| d.shared_bytes).sum();
    Ok(Plan {
        remove,
        orphans: files.removed,
        missing: files.missing,
        unique_bytes,
        shared_bytes,
    })
}

/// The bytes each unreachable object's removal frees, from the records the mark read.
fn price(store: &Store, txn: &redb::ReadTransaction, marked: &Marked) -> Result<Vec<Doomed>> {
    let graph = &marked.graph;
    // A blob file survives while any namespace's record of its digest is kept.
    let kept_anywhere = |digest: &str| {
        graph.nodes.namespaces().any(|ns| {
            graph
                .nodes
                .lookup(Kind::Content, ns, digest)
                .is_some_and(|id| graph.nodes.exists(id) && marked.state[id as usize] != 0)
        })
    };
    // Allocated blocks, as cleanup counts what it frees; only doomed blobs are looked at.
    let on_disk = |digest: &str| {
        digest.parse::<strata_store::Digest>().map_or(0, |d| {
            std::fs::symlink_metadata(store.layout().blob(&d))
                .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        })
    };
    let mut counted: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for node in marked.unreachable() {
        let (unique_bytes, shared_bytes) = match node.kind {
            Kind::Content => {
                let size = on_disk(&node.key);
                if kept_anywhere(&node.key) {
                    (0, size)
                } else if counted.insert(node.key.clone()) {
                    (size, 0)
                } else {
                    // The same digest removed from two namespaces frees one file.
                    (0, 0)
                }
            }
            Kind::Snapshot => {
                let record = match node.key.split_once('/') {
                    Some((sn, key)) => read_snapshot(txn, &node.ns, sn, key)?,
                    None => None,
                };
                let bytes = record.map_or(0, |s| {
                    s.size.unwrap_or_else(|| {
                        disk_usage(&store.snapshot_root(&s.snapshotter).join(s.id.to_string()))
                            .map_or(0, |u| u.size)
                    })
                });
                (bytes, 0)
            }
            _ => (0, 0),
        };
        out.push(Doomed {
            node,
            unique_bytes,
            shared_bytes,
        });
    }
    Ok(out)
}
