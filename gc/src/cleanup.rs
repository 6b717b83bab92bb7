//! Cleanup and reconcile: the files no record names, found by comparing the directories with
//! the records, and removed outside any transaction.
//!
//! This is the only place the collector touches files. It runs after every sweep and on its
//! own at start-up ([`crate::reconcile`], or the first collection of [`crate::Scheduler::start`]) or from `gcctl gc`, so what a crash left
//! behind is reclaimed whether or not anything was deleted in this process (containerd only
//! cleans stores it marked dirty in memory, so crash leftovers stay until some later delete).
//!
//! # Why nothing in use is removed
//! Every object is written data first, record second, so a file without a record is either
//! garbage or an object still being created. The three kinds are told apart so:
//! - **snapshot directories** are built before their record under an id that stays *in
//!   flight* until the record commits ([`Store::allocate_id`]). The pass watches ids
//!   ([`Store::watch_ids`]) before listing and reads records after listing: a listed directory
//!   that no record names and whose id was not in flight during the pass was finished (record
//!   visible) or abandoned before the pass began;
//! - **ingest directories** are created after their record commits, so a listed directory's
//!   record is visible in the read that follows the listing, unless it was deleted;
//! - **blob files** are renamed into place before their record commits, under the shared side
//!   of the blob-file lock; each candidate is re-checked and removed under the exclusive side
//!   ([`Store::blob_files_exclusive`]), in short batches so commits are never held up long.
//!
//! One item that cannot be removed (EBUSY from a mount, EPERM) is reported in
//! [`Cleanup::failed`] and left for the next pass; it never stops the pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_snapshotter::gc::{disk_usage, remove_tree, snapshot_dirs};
use strata_store::db::BLOBS;
use strata_store::gcview;
use strata_store::{Algorithm, Digest, Store, failpoint};

use crate::error::Result;

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

/// What is on disk, listed before the records are read.
struct Listing {
    /// Blob files: digest string -> path.
    blobs: HashMap<String, PathBuf>,
    /// Ingest directories: name -> path.
    ingests: Vec<(String, PathBuf)>,
    /// Snapshot directories: (snapshotter, name, path).
    snapshots: Vec<(String, String, PathBuf)>,
}

/// Finds every orphan and missing record; with `remove`, removes the orphans.
///
/// The caller holds [`Store::maintenance`], so no other pass watches ids meanwhile.
///
/// # Errors
/// A directory of the store that cannot be listed, a corrupt record, database errors. Single
/// orphans that cannot be removed are [`Cleanup::failed`] entries, not errors.
pub(crate) fn reconcile(store: &Store, remove: bool) -> Result<Cleanup> {
    // Something mounted inside an orphan directory (a leftover mount, a bind mount) must not
    // be walked into: removing the directory would unlink the mounted files, which are not
    // the store's. Such directories are reported and retried once unmounted.
    let mounts = std::fs::read("/proc/self/mountinfo")
        .map(|t| crate::fsck::mount_points(&t))
        .unwrap_or_default();
    store.watch_ids()?;
    let found = find(store, &mounts);
    let watched = store.end_watch()?;
    let (orphans, mut missing) = found?;
    let mut report = Cleanup::default();
    // A snapshot created after the listing and removed before its directory was checked
    // looks missing; its id was in flight during the pass, so it is not reported.
    missing.retain(|m| {
        !(m.object.starts_with("snapshot ")
            && m.path
                .file_name()
                .and_then(|n| dir_id(&n.to_string_lossy()))
                .is_some_and(|id| watched.contains(&id)))
    });
    missing.sort();
    report.missing = missing;
    if !remove {
        report.removed = orphans.blobs;
        report.removed.extend(orphans.ingests);
        report.removed.extend(orphans.snapshots);
        report.removed.retain(|o| !in_flight(o, &watched));
        return Ok(report);
    }
    remove_blobs(store, orphans.blobs, &mut report)?;
    for o in orphans.ingests {
        remove_dir(o, &mounts, &mut report)?;
    }
    for o in orphans.snapshots {
        if !in_flight(&o, &watched) {
            remove_dir(o, &mounts, &mut report)?;
        }
    }
    Ok(report)
}

struct Orphans {
    blobs: Vec<Orphan>,
    ingests: Vec<Orphan>,
    /// Children first: ids descending (a child is always created after its parent).
    snapshots: Vec<Orphan>,
}

/// Lists, then reads the records (the order the module docs rely on). Only what cleanup
/// compares is read: blob keys, ingest records, and the id of each snapshot record.
fn find(store: &Store, mounts: &[PathBuf]) -> Result<(Orphans, Vec<Missing>)> {
    let listing = list(store)?;
    let txn = store.db().read()?;
    let blob_keys = gcview::blob_keys(&txn)?;
    let ingest_records = gcview::ingests(&txn)?;
    let snapshots = snapshot_dirs(&txn)?;
    drop(txn);
    let layout = store.layout();
    let mut missing = Vec::new();

    // Blobs: a file is kept while any namespace records it or an ingest expects it (a shared
    // writer adopts the file at commit without re-sending its bytes).
    let mut seen: HashSet<&str> = HashSet::with_capacity(blob_keys.len());
    for (ns, digest) in &blob_keys {
        seen.insert(digest);
        // Not listed may mean committed after the listing: only a fresh look says missing.
        if !listing.blobs.contains_key(digest)
            && let Ok(d) = digest.parse::<Digest>()
            && !layout.blob(&d).exists()
        {
            missing.push(Missing {
                object: format!("blob {ns}/{digest}"),
                path: layout.blob(&d),
            });
        }
    }
    let expected: Vec<String> = ingest_records
        .iter()
        .filter_map(|i| i.expected.as_ref().map(Digest::to_string))
        .collect();
    seen.extend(expected.iter().map(String::as_str));
    let mut blobs: Vec<Orphan> = listing
        .blobs
        .iter()
        .filter(|(d, _)| !seen.contains(d.as_str()))
        .map(|(_, path)| Orphan {
            kind: "blob",
            bytes: allocated(path),
            path: path.clone(),
        })
        .collect();
    blobs.sort();

    let ingest_ids: HashSet<String> = ingest_records.iter().map(|i| i.id.to_string()).collect();
    let mut ingests: Vec<Orphan> = listing
        .ingests
        .into_iter()
        .filter(|(name, _)| !ingest_ids.contains(name))
        .map(|(_, path)| dir_orphan("ingest", path, mounts))
        .collect();
    ingests.sort();

    let listed: HashSet<(&str, &str)> = listing
        .snapshots
        .iter()
        .map(|(sn, name, _)| (sn.as_str(), name.as_str()))
        .collect();
    // Recorded ids per snapshotter; a directory is recorded when its name is exactly one.
    let mut recorded: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (ns, sn, key, id) in &snapshots {
        let name = id.to_string();
        if !listed.contains(&(sn.as_str(), name.as_str())) {
            let dir = store.snapshot_root(sn).join(&name);
            if !dir.exists() {
                missing.push(Missing {
                    object: format!("snapshot {ns}/{sn}/{key}"),
                    path: dir,
                });
            }
        }
        recorded.entry(sn.as_str()).or_default().insert(*id);
    }
    drop(listed);
    let is_recorded = |sn: &str, name: &str| {
        name.parse::<u64>().is_ok_and(|id| {
            // Only the canonical spelling is a record's directory ("012" is not 12's).
            id.to_string() == name && recorded.get(sn).is_some_and(|ids| ids.contains(&id))
        })
    };
    let mut snaps: Vec<(u64, Orphan)> = listing
        .snapshots
        .into_iter()
        .filter(|(sn, name, _)| !is_recorded(sn, name))
        .map(|(_, name, path)| {
            (
                dir_id(&name).unwrap_or(u64::MAX),
                dir_orphan("snapshot", path, mounts),
            )
        })
        .collect();
    snaps.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let snapshots = snaps.into_iter().map(|(_, o)| o).collect();

    Ok((
        Orphans {
            blobs,
            ingests,
            snapshots,
        },
        missing,
    ))
}

fn list(store: &Store) -> Result<Listing> {
    let layout = store.layout();
    let mut blobs = HashMap::new();
    for alg in Algorithm::ALL {
        for (name, path) in entries(&layout.blob_dir(alg))? {
            blobs.insert(format!("{}:{name}", alg.name()), path);
        }
    }
    let ingests = entries(&layout.ingest_root())?;
    let mut snapshots = Vec::new();
    for (sn, root) in entries(&layout.snapshots())? {
        if !root.is_dir() {
            continue;
        }
        for (name, path) in entries(&root)? {
            snapshots.push((sn.clone(), name, path));
        }
    }
    Ok(Listing {
        blobs,
        ingests,
        snapshots,
    })
}

/// `(name, path)` of every entry of `dir`; a missing directory has none.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let iter = match std::fs::read_dir(dir) {
        Ok(i) => i,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(strata_store::Error::io("read directory", dir, e).into()),
    };
    let mut out = Vec::new();
    for entry in iter {
        let entry = entry.map_err(|e| strata_store::Error::io("read directory", dir, e))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(out)
}

/// The id in a snapshot directory name: `<id>`, `new-<id>` or `rm-<id>`.
fn dir_id(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix("new-")
        .or_else(|| name.strip_prefix("rm-"))
        .unwrap_or(name);
    digits.parse().ok()
}

fn in_flight(o: &Orphan, watched: &HashSet<u64>) -> bool {
    o.kind == "snapshot"
        && o.path
            .file_name()
            .and_then(|n| dir_id(&n.to_string_lossy()))
            .is_some_and(|id| watched.contains(&id))
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
/// against a fresh read: a commit that recorded the digest since the listing keeps its file.
fn remove_blobs(store: &Store, orphans: Vec<Orphan>, report: &mut Cleanup) -> Result<()> {
    let layout = store.layout();
    for batch in orphans.chunks(BLOB_BATCH) {
        let _files = store.blob_files_exclusive()?;
        let txn = store.db().read()?;
        let view_ns = gcview::namespace_names(&txn)?;
        let blobs = txn.open_table(BLOBS).map_err(strata_store::Error::from)?;
        for o in batch {
            let Some(digest) = blob_digest(layout, &o.path) else {
                continue;
            };
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
            match std::fs::remove_file(&o.path) {
                Ok(()) => report.removed.push(o.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.failed.push(Failure {
                    path: o.path.clone(),
                    error: e.to_string(),
                }),
            }
            failpoint!("gc.cleanup.after_remove");
        }
    }
    Ok(())
}

/// `sha256:<hex>` for `.../blobs/sha256/<hex>`.
fn blob_digest(layout: &strata_store::Layout, path: &Path) -> Option<String> {
    let hex = path.file_name()?.to_string_lossy();
    let alg = path.parent()?.file_name()?.to_string_lossy();
    let d = format!("{alg}:{hex}");
    Algorithm::ALL
        .iter()
        .any(|a| layout.blob_dir(*a) == path.parent().unwrap_or(path))
        .then_some(d)
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
