//! Cleanup and reconcile: the files no record names, found by comparing the directories with
//! the records, and removed outside any transaction.
//!
//! This (with `listing.rs`, which lists the directories) is the only place the collector
//! touches files. It runs after every sweep and on its own at start-up ([`crate::reconcile`],
//! or the first collection of [`crate::Scheduler::start`]) or from `gcctl gc`, so what a
//! crash left behind is reclaimed whether or not anything was deleted in this process
//! (containerd only cleans stores it marked dirty in memory, so crash leftovers stay until
//! some later delete).
//!
//! A pass has two steps, so the listing (the larger part of the work at 100 000 sets) can run
//! on another thread while the collector marks: `begin` starts watching ids and lists the
//! blob, ingest and snapshot directories; `finish` reads the records (after the sweep, in a
//! collection), compares, ends the watch and removes the orphans; `reconcile` is both in a
//! row. However long passes between the two, a listed entry is judged by records read after
//! the listing, which is all the rules below need (a longer watch only protects more ids).
//!
//! # Why nothing in use is removed
//! Every object is written data first, record second, so a file without a record is either
//! garbage or an object still being created. The three kinds are told apart so:
//! - **snapshot directories** are built before their record under an id that stays *in
//!   flight* until the record commits ([`Store::allocate_id`]). The pass watches ids
//!   ([`Store::watch_ids`]) before listing and reads records after listing: a listed directory
//!   that no record names and whose id was not in flight during the pass was finished (record
//!   visible) or abandoned before the pass began. Only a directory named by an id's canonical
//!   spelling (`12`) is a record's; any other name (`012`, `new-12` being built, `rm-12` being
//!   removed, a stray file) is an orphan unless the id in it is in flight;
//! - **ingest directories** are created after their record commits, so a listed directory's
//!   record is visible in the read that follows the listing, unless it was deleted;
//! - **blob files** are renamed into place before their record commits, under the shared side
//!   of the blob-file lock; each candidate is re-checked and removed under the exclusive side
//!   ([`Store::blob_files_exclusive`]), in short batches so commits are never held up long.
//!
//! Nothing mounted inside an orphan directory is walked into (the mount table is read just
//! before the orphans are measured and removed): such a directory is reported as failed until
//! it is unmounted. One item that cannot be removed (EBUSY from a mount, EPERM) is reported in
//! [`Cleanup::failed`] and left for the next pass; it never stops the pass.
//!
//! # Cost
//! Only what is compared is read: blob keys, ingest records, and the id of each snapshot
//! record; directory entries are kept as ids and decoded digests (`listing.rs`).
//! Paths are built, and files measured, only for orphans and records whose data is missing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_snapshotter::gc::{disk_usage, remove_tree, snapshot_dirs};
use strata_store::db::BLOBS;
use strata_store::gcview;
use strata_store::{Digest, Store, failpoint};

use crate::error::Result;
use crate::listing::{self, BlobDir, IdDir};

/// How many blob files are re-checked and removed per hold of the blob-file lock.
const BLOB_BATCH: usize = 256;

/// A file or directory that no record names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Orphan {
    /// What it is: `blob`, `ingest` or `snapshot`.
    pub kind: &'static str,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes it occupies on disk (allocated blocks).
    pub bytes: u64,
}

/// A record whose data is missing on disk. Reported, never dropped: the record may be all
/// that is left to tell which image needs re-fetching.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Missing {
    /// The object, e.g. `blob default/sha256:...` or `snapshot default/overlay/<key>`.
    pub object: String,
    /// Where its data should be.
    pub path: PathBuf,
}

/// An orphan that could not be removed this pass; the next pass retries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The path.
    pub path: PathBuf,
    /// Why (the OS error).
    pub error: String,
}

/// What one cleanup pass found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// Orphans removed (or, for a dry run, that would be removed), children first.
    pub removed: Vec<Orphan>,
    /// Orphans that could not be removed.
    pub failed: Vec<Failure>,
    /// Records whose data is missing.
    pub missing: Vec<Missing>,
}

impl Cleanup {
    /// Bytes of the orphans removed.
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|o| o.bytes).sum()
    }
}

/// What is on disk, listed by [`begin`] inside a watch of ids, for [`finish`] to compare with
/// the records. It may move to another thread. Dropped without [`finish`], it ends the watch.
#[derive(Debug)]
pub(crate) struct Listing<'s> {
    watch: Watch<'s>,
    /// `content/blobs/<alg>/`, one per algorithm.
    blobs: Vec<BlobDir>,
    /// `content/ingest/`.
    ingests: IdDir,
    /// `snapshots/<snapshotter>/`, by snapshotter name (when UTF-8).
    snapshots: Vec<(Option<String>, IdDir)>,
}

/// A watch of ids ([`Store::watch_ids`]) that ends exactly once: by [`Watch::end`], or on drop
/// when a pass stops early, so no pass leaves one behind to refuse the next.
#[derive(Debug)]
struct Watch<'s> {
    store: &'s Store,
    active: bool,
}

impl<'s> Watch<'s> {
    fn start(store: &'s Store) -> Result<Watch<'s>> {
        store.watch_ids()?;
        Ok(Watch {
            store,
            active: true,
        })
    }

    /// Ends the watch; returns every id in flight while it ran.
    fn end(mut self) -> Result<HashSet<u64>> {
        self.active = false;
        Ok(self.store.end_watch()?)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.active {
            // Nothing to report to: the pass is already failing or was abandoned.
            let _ = self.store.end_watch();
        }
    }
}

/// Starts a pass: watches ids, then lists the blob, ingest and snapshot directories. Finish
/// it with [`finish`] (on any thread); until then, or until the listing drops, the store's
/// watch is taken.
///
/// The caller holds [`Store::maintenance`], so no other pass watches ids meanwhile.
///
/// # Errors
/// Unavailable while another pass watches ids; a directory that cannot be listed (the watch
/// is ended before the error returns).
pub(crate) fn begin(store: &Store) -> Result<Listing<'_>> {
    let watch = Watch::start(store)?;
    // An error below drops `watch`, which ends it.
    let layout = store.layout();
    let blobs = strata_store::Algorithm::ALL
        .into_iter()
        .map(|alg| BlobDir::list(alg, layout.blob_dir(alg)))
        .collect::<Result<Vec<_>>>()?;
    let ingests = IdDir::list(layout.ingest_root())?;
    let snapshots = listing::snapshotters(&layout.snapshots())?;
    Ok(Listing {
        watch,
        blobs,
        ingests,
        snapshots,
    })
}

/// Finishes the pass [`begin`] started on `store`: reads the records, ends the watch, and
/// finds every orphan and missing record; with `remove`, removes the orphans (children
/// first), else reports them as [`Cleanup::removed`].
///
/// # Errors
/// InvalidArgument for a listing of another store; a corrupt record, database errors. Single
/// orphans that cannot be removed are [`Cleanup::failed`] entries, not errors. The watch is
/// ended on every path.
pub(crate) fn finish(store: &Store, listing: Listing<'_>, remove: bool) -> Result<Cleanup> {
    let Listing {
        watch,
        blobs,
        ingests,
        snapshots,
    } = listing;
    if watch.store.layout().root() != store.layout().root() {
        return Err(strata_store::Error::InvalidArgument(format!(
            "a listing of {} cannot finish a cleanup of {}",
            watch.store.layout().root().display(),
            store.layout().root().display()
        ))
        .into());
    }
    let records = read(store, &blobs, &snapshots);
    let watched = watch.end();
    let (records, watched) = (records?, watched?);

    // Something mounted inside an orphan directory (a leftover mount, a bind mount) must not
    // be walked into: removing the directory would unlink the mounted files, which are not
    // the store's. Such directories are reported and retried once unmounted.
    let mounts = std::fs::read("/proc/self/mountinfo")
        .map(|t| crate::fsck::mount_points(&t))
        .unwrap_or_default();
    let mut report = Cleanup {
        missing: missing(store, &records, &watched),
        ..Cleanup::default()
    };
    let blobs = blob_orphans(&blobs, &records.blobs_seen);
    let ingests = ingest_orphans(&ingests, &records.ingest_ids, &mounts);
    let snapshots = snapshot_orphans(&snapshots, &records.snapshots_seen, &watched, &mounts);
    if !remove {
        report.removed = blobs.into_iter().map(|b| b.orphan).collect();
        report.removed.extend(ingests);
        report.removed.extend(snapshots);
        return Ok(report);
    }
    remove_blobs(store, blobs, &mut report)?;
    for o in ingests.into_iter().chain(snapshots) {
        remove_dir(o, &mounts, &mut report)?;
    }
    Ok(report)
}

/// Finds every orphan and missing record; with `remove`, removes the orphans: [`begin`] and
/// [`finish`] in a row.
///
/// The caller holds [`Store::maintenance`], so no other pass watches ids meanwhile.
///
/// # Errors
/// As [`begin`] and [`finish`].
pub(crate) fn reconcile(store: &Store, remove: bool) -> Result<Cleanup> {
    finish(store, begin(store)?, remove)
}

/// What the records say about the listing.
struct Records {
    /// Per blob directory, per entry: whether a blob record or an ingest's expected digest
    /// names it.
    blobs_seen: Vec<Vec<bool>>,
    /// `(namespace, digest)` of the blob records whose file was not listed.
    blobs_unlisted: Vec<(String, String)>,
    /// Ids of the ingest records.
    ingest_ids: HashSet<u64>,
    /// Per snapshotter directory, per id entry: whether a snapshot record names it.
    snapshots_seen: Vec<Vec<bool>>,
    /// `(namespace, snapshotter, key, id)` of the snapshot records whose directory was not
    /// listed.
    snapshots_unlisted: Vec<(String, String, String, u64)>,
}

/// Reads the records from one read transaction (begun after the listing, as the module docs
/// require), noting which listed entries they name. Only what is compared is read: blob keys,
/// ingest records, and the id of each snapshot record. Nothing is allocated per record but
/// for records whose data was not listed.
fn read(
    store: &Store,
    blobs: &[BlobDir],
    snapshots: &[(Option<String>, IdDir)],
) -> Result<Records> {
    let txn = store.db().read()?;
    let mut seen: Vec<BlobSeen> = blobs
        .iter()
        .map(|b| BlobSeen {
            flags: vec![false; b.len()],
            last: 0,
        })
        .collect();
    let mut blobs_unlisted = Vec::new();
    gcview::blob_keys(&txn, |ns, digest| {
        let listed = digest
            .split_once(':')
            .is_some_and(|(alg, name)| see_blob(blobs, &mut seen, alg, name));
        if !listed {
            blobs_unlisted.push((ns.to_owned(), digest.to_owned()));
        }
    })?;
    // A file is also kept while an ingest expects it: a shared writer adopts the file at
    // commit without re-sending its bytes.
    let ingests = gcview::ingests(&txn)?;
    for d in ingests.iter().filter_map(|i| i.expected.as_ref()) {
        see_blob(blobs, &mut seen, d.algorithm().name(), d.hex());
    }
    let blobs_seen = seen.into_iter().map(|s| s.flags).collect();
    let ingest_ids = ingests.iter().map(|i| i.id).collect();

    let mut snapshots_seen: Vec<Vec<bool>> = snapshots
        .iter()
        .map(|(_, dir)| vec![false; dir.ids.len()])
        .collect();
    let mut snapshots_unlisted = Vec::new();
    snapshot_dirs(&txn, |ns, sn, key, id| {
        // A handful of snapshotters: a scan beats hashing the name.
        let seen = snapshots
            .iter()
            .zip(snapshots_seen.iter_mut())
            .find(|((name, _), _)| name.as_deref() == Some(sn))
            .and_then(|((_, dir), seen)| seen.get_mut(dir.position(id)?));
        match seen {
            Some(seen) => *seen = true,
            None => snapshots_unlisted.push((ns.to_owned(), sn.to_owned(), key.to_owned(), id)),
        }
    })?;
    Ok(Records {
        blobs_seen,
        blobs_unlisted,
        ingest_ids,
        snapshots_seen,
        snapshots_unlisted,
    })
}

/// Which entries of one blob directory records name.
struct BlobSeen {
    /// Per entry.
    flags: Vec<bool>,
    /// The entry found last (records come in digest order within a namespace).
    last: usize,
}

/// Notes that a record names the blob file `<alg>/<name>`; whether it was listed.
fn see_blob(blobs: &[BlobDir], seen: &mut [BlobSeen], alg: &str, name: &str) -> bool {
    let Some((dir, seen)) = blobs
        .iter()
        .zip(seen)
        .find(|(dir, _)| dir.alg.name() == alg)
    else {
        return false;
    };
    let Some(i) = dir.position(name, seen.last) else {
        return false;
    };
    seen.last = i;
    seen.flags.get_mut(i).map(|f| *f = true).is_some()
}

/// Records whose data is missing, sorted. Only records whose data was not listed are looked
/// at, each with a fresh look: not listed may mean created after the listing.
fn missing(store: &Store, records: &Records, watched: &HashSet<u64>) -> Vec<Missing> {
    let layout = store.layout();
    let mut missing = Vec::new();
    for (ns, digest) in &records.blobs_unlisted {
        if let Ok(d) = digest.parse::<Digest>()
            && !layout.blob(&d).exists()
        {
            missing.push(Missing {
                object: format!("blob {ns}/{digest}"),
                path: layout.blob(&d),
            });
        }
    }
    for (ns, sn, key, id) in &records.snapshots_unlisted {
        // A snapshot created after the listing and removed before its directory was checked
        // looks missing; its id was in flight during the pass, so it is not reported.
        if watched.contains(id) {
            continue;
        }
        let dir = store.snapshot_root(sn).join(id.to_string());
        if !dir.exists() {
            missing.push(Missing {
                object: format!("snapshot {ns}/{sn}/{key}"),
                path: dir,
            });
        }
    }
    missing.sort();
    missing
}

/// An orphan blob file and the digest it would be recorded under.
struct BlobOrphan {
    orphan: Orphan,
    digest: String,
}

/// Blob files no record names, sorted by path, with their allocated bytes.
fn blob_orphans(blobs: &[BlobDir], seen: &[Vec<bool>]) -> Vec<BlobOrphan> {
    let mut out = Vec::new();
    for (dir, seen) in blobs.iter().zip(seen) {
        let unseen = seen.iter().enumerate().filter(|(_, s)| !**s);
        for name in unseen.filter_map(|(i, _)| dir.name(i)) {
            let path = dir.path.join(&name);
            out.push(BlobOrphan {
                digest: format!("{}:{}", dir.alg.name(), name.to_string_lossy()),
                orphan: Orphan {
                    kind: "blob",
                    bytes: allocated(&path),
                    path,
                },
            });
        }
    }
    out.sort_by(|a, b| a.orphan.cmp(&b.orphan));
    out
}

/// Ingest directories no ingest record names, sorted by path.
fn ingest_orphans(dir: &IdDir, recorded: &HashSet<u64>, mounts: &[PathBuf]) -> Vec<Orphan> {
    let unrecorded = dir.ids.iter().filter(|id| !recorded.contains(id));
    let mut out: Vec<Orphan> = unrecorded
        .map(|id| dir.path.join(id.to_string()))
        .chain(dir.other.iter().map(|name| dir.path.join(name)))
        .map(|path| dir_orphan("ingest", path, mounts))
        .collect();
    out.sort();
    out
}

/// Snapshot directories no record names and whose id was not in flight, children first: ids
/// descending (a child is always created after its parent), names without an id first.
fn snapshot_orphans(
    snapshots: &[(Option<String>, IdDir)],
    seen: &[Vec<bool>],
    watched: &HashSet<u64>,
    mounts: &[PathBuf],
) -> Vec<Orphan> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for ((_, dir), seen) in snapshots.iter().zip(seen) {
        for (&id, _) in dir.ids.iter().zip(seen).filter(|(_, s)| !**s) {
            if !watched.contains(&id) {
                found.push((id, dir.path.join(id.to_string())));
            }
        }
        for name in &dir.other {
            let id = listing::dir_id(name);
            if !id.is_some_and(|id| watched.contains(&id)) {
                found.push((id.unwrap_or(u64::MAX), dir.path.join(name)));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found
        .into_iter()
        .map(|(_, path)| dir_orphan("snapshot", path, mounts))
        .collect()
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map_or(0, |m| m.blocks() * 512)
}

fn dir_orphan(kind: &'static str, path: PathBuf, mounts: &[PathBuf]) -> Orphan {
    let bytes = if mounted_inside(&path, mounts) {
        0
    } else {
        disk_usage(&path).map_or(0, |u| u.size)
    };
    Orphan { kind, path, bytes }
}

/// Whether a mount point is `dir` or lies under it.
fn mounted_inside(dir: &Path, mounts: &[PathBuf]) -> bool {
    mounts.iter().any(|m| m.starts_with(dir))
}

/// Removes orphan blob files in batches, each re-checked under the exclusive blob-file lock
/// against a fresh read: a commit that recorded the digest since the records were read keeps
/// its file.
fn remove_blobs(store: &Store, orphans: Vec<BlobOrphan>, report: &mut Cleanup) -> Result<()> {
    for batch in orphans.chunks(BLOB_BATCH) {
        let _files = store.blob_files_exclusive()?;
        let txn = store.db().read()?;
        let view_ns = gcview::namespace_names(&txn)?;
        let blobs = txn.open_table(BLOBS).map_err(strata_store::Error::from)?;
        for BlobOrphan { orphan, digest } in batch {
            let mut recorded = false;
            for ns in &view_ns {
                let got = blobs
                    .get((ns.as_str(), digest.as_str()))
                    .map_err(strata_store::Error::from)?;
                if got.is_some() {
                    recorded = true;
                    break;
                }
            }
            if recorded {
                continue;
            }
            match std::fs::remove_file(&orphan.path) {
                Ok(()) => report.removed.push(orphan.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.failed.push(Failure {
                    path: orphan.path.clone(),
                    error: e.to_string(),
                }),
            }
            failpoint!("gc.cleanup.after_remove");
        }
    }
    Ok(())
}

fn remove_dir(o: Orphan, mounts: &[PathBuf], report: &mut Cleanup) -> Result<()> {
    if mounted_inside(&o.path, mounts) {
        report.failed.push(Failure {
            error: "something is mounted inside it; unmount it and collect again".into(),
            path: o.path,
        });
        return Ok(());
    }
    match remove_tree(&o.path) {
        Ok(()) => report.removed.push(o),
        Err(e) => report.failed.push(Failure {
            path: o.path,
            error: e.to_string(),
        }),
    }
    failpoint!("gc.cleanup.after_remove");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use strata_snapshotter::Snapshotter;
    use strata_store::{Scope, StoreOptions};

    use super::*;

    fn store() -> (Store, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::default();
        opts.cache_size = 4 << 20;
        (Store::open(tmp.path(), opts).unwrap(), tmp)
    }

    fn unavailable(r: Result<Listing<'_>>) -> bool {
        matches!(
            r,
            Err(crate::Error::Store(strata_store::Error::Unavailable(_)))
        )
    }

    #[test]
    fn a_listing_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Result<Listing<'_>>>();
    }

    #[test]
    fn a_listing_dropped_without_finish_ends_the_watch() {
        let (store, _tmp) = store();
        let first = begin(&store).unwrap();
        assert!(unavailable(begin(&store)), "one watch at a time");
        drop(first);
        let second = begin(&store).unwrap();
        finish(&store, second, true).unwrap();
        // finish ended it too.
        drop(begin(&store).unwrap());
        store.watch_ids().unwrap();
        store.end_watch().unwrap();
    }

    #[test]
    fn a_listing_that_fails_ends_the_watch() {
        let (store, _tmp) = store();
        let ingest = store.layout().ingest_root();
        std::fs::remove_dir_all(&ingest).unwrap();
        std::fs::write(&ingest, b"not a directory").unwrap();
        assert!(begin(&store).is_err());
        store.watch_ids().unwrap();
        store.end_watch().unwrap();
        std::fs::remove_file(&ingest).unwrap();
        assert!(begin(&store).is_ok());
    }

    #[test]
    fn a_listing_of_another_store_is_refused_and_its_watch_ended() {
        let (a, _ta) = store();
        let (b, _tb) = store();
        let listing = begin(&a).unwrap();
        assert!(finish(&b, listing, false).is_err());
        drop(begin(&a).unwrap());
    }

    #[test]
    fn odd_names_are_orphans_unless_their_id_is_in_flight() {
        let (store, _tmp) = store();
        let root = store.snapshot_root("native");
        let busy = store.allocate_id().unwrap();
        let free = store.allocate_id().unwrap().id();
        let names = [
            busy.id().to_string(),
            format!("new-{}", busy.id()),
            format!("rm-{}", busy.id()),
            format!("0{}", busy.id()),
            format!("new-{free}"),
            format!("rm-{free}"),
            format!("0{free}"),
            free.to_string(),
            "junk".to_owned(),
        ];
        for n in &names {
            std::fs::create_dir_all(root.join(n).join("fs")).unwrap();
        }
        let kept = |c: &Cleanup| -> BTreeSet<String> {
            let gone: BTreeSet<_> = c.removed.iter().map(|o| o.path.clone()).collect();
            names
                .iter()
                .filter(|n| !gone.contains(&root.join(n)))
                .cloned()
                .collect()
        };
        let in_flight: BTreeSet<String> = names[..4].iter().cloned().collect();

        let dry = reconcile(&store, false).unwrap();
        assert_eq!(kept(&dry), in_flight);
        // Children first: names without an id, then ids descending.
        let order: Vec<_> = dry.removed.iter().map(|o| o.path.clone()).collect();
        let mut want: Vec<_> = [
            format!("0{free}"),
            format!("new-{free}"),
            format!("rm-{free}"),
            free.to_string(),
        ]
        .iter()
        .map(|n| root.join(n))
        .collect();
        want.sort();
        want.insert(0, root.join("junk"));
        assert_eq!(order, want);
        assert!(dry.failed.is_empty() && dry.missing.is_empty());

        let done = reconcile(&store, true).unwrap();
        assert_eq!(done.removed, dry.removed);
        assert!(
            names
                .iter()
                .all(|n| root.join(n).exists() == in_flight.contains(n))
        );
        drop(busy);
        let rest = reconcile(&store, true).unwrap();
        assert_eq!(rest.removed.len(), in_flight.len());
        assert!(names.iter().all(|n| !root.join(n).exists()));
    }

    #[test]
    fn a_listing_taken_early_is_judged_by_the_records_read_at_finish() {
        let (store, _tmp) = store();
        let sn = Snapshotter::native(&store).unwrap();
        let scope = Scope::new("default").unwrap();
        for key in ["a", "b"] {
            sn.prepare(&scope, key, None, BTreeMap::new()).unwrap();
        }
        let id = |key: &str| {
            let txn = store.db().read().unwrap();
            let recs = strata_snapshotter::gc::snapshot_records(&txn).unwrap();
            recs.iter().find(|r| r.key == key).map(|r| r.id).unwrap()
        };
        let a = id("a");

        let listing = begin(&store).unwrap();
        // While the collector marks: a new snapshot (directory not listed), a record removed
        // as a sweep does (its directory listed), a blob file not listed.
        sn.prepare(&scope, "c", None, BTreeMap::new()).unwrap();
        let txn = store.db().write().unwrap();
        strata_snapshotter::gc::remove_snapshot(&txn, "default", "native", "a").unwrap();
        txn.commit().unwrap();
        let late_blob = store.layout().blob_dir(strata_store::Algorithm::Sha256);
        std::fs::create_dir_all(&late_blob).unwrap();
        let late_blob = late_blob.join("ab".repeat(32));
        std::fs::write(&late_blob, b"x").unwrap();

        let done = finish(&store, listing, true).unwrap();
        let removed: Vec<_> = done.removed.iter().map(|o| o.path.clone()).collect();
        assert_eq!(removed, vec![sn.root().join(a.to_string())]);
        assert!(done.missing.is_empty() && done.failed.is_empty());
        for key in ["b", "c"] {
            assert!(sn.root().join(id(key).to_string()).exists());
        }
        assert!(late_blob.exists());
        // The next pass lists it.
        let next = reconcile(&store, true).unwrap();
        let removed: Vec<_> = next.removed.iter().map(|o| o.path.clone()).collect();
        assert_eq!(removed, vec![late_blob]);
    }

    #[test]
    fn missing_data_is_reported_once_its_absence_is_seen_afresh() {
        let (store, _tmp) = store();
        let sn = Snapshotter::native(&store).unwrap();
        let scope = Scope::new("default").unwrap();
        sn.prepare(&scope, "gone", None, BTreeMap::new()).unwrap();
        let txn = store.db().read().unwrap();
        let recs = strata_snapshotter::gc::snapshot_records(&txn).unwrap();
        drop(txn);
        let dir = sn.root().join(recs[0].id.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        let done = reconcile(&store, true).unwrap();
        assert_eq!(
            done.missing,
            vec![Missing {
                object: "snapshot default/native/gone".into(),
                path: dir,
            }]
        );
        assert!(done.removed.is_empty());
    }
}
