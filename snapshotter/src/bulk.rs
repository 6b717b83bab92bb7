//! Bulk loading of snapshots, **for benchmarks and tests only** (cargo feature `bulk`).
//!
//! [`Loader`] wraps [`strata_store::bulk::Loader`] and adds snapshot records, their rows in
//! the children index and their directories, a few thousand records per write transaction.
//! Like the store's loader it bypasses the durability protocol: directories are created with
//! `mkdir` alone (no `fsync`, no staging rename, no `syncfs`), and nothing is validated (a
//! parent is not checked to exist or be committed). It exists so a benchmark can build a
//! store of hundreds of thousands of snapshots whose on-disk tree looks like the real one:
//! `snapshots/<snapshotter>/<id>/fs` (plus `work` for an active overlay snapshot), each
//! directory empty.
//!
//! Each snapshot's id comes from [`strata_store::Store::allocate_id`] and stays in flight
//! until its record commits, so a collection running meanwhile never takes the fresh
//! directory for an orphan.
//!
//! ```no_run
//! # fn main() -> strata_snapshotter::Result<()> {
//! use std::collections::BTreeMap;
//! use strata_snapshotter::bulk::Loader;
//! use strata_store::{Store, StoreOptions};
//!
//! let store = Store::open("/var/tmp/bench-store", StoreOptions::default())?;
//! let mut loader = Loader::new(&store);
//! let keys: Vec<String> = (0..7).map(|l| format!("layer-{l}")).collect();
//! loader.committed_chain("default", "native", &keys, None)?;
//! loader.finish()?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use strata_store::bulk::{DEFAULT_PER_TRANSACTION, Loader as StoreLoader};
use strata_store::db::{SNAPSHOT_CHILDREN, SNAPSHOTS, WriteTxn};
use strata_store::object::Node;
use strata_store::{InFlightId, Store, codec};

use crate::backend::{fs, fs_dir, work_dir};
use crate::snapshot::{Kind, SnapshotRecord, Usage};
use crate::{Error, Result};

/// What a [`Loader`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every record committed: snapshots and the store's records (blobs, images, ...).
    pub records: u64,
    /// Write transactions committed.
    pub transactions: u64,
    /// Blob files created.
    pub files: u64,
    /// Snapshot records committed.
    pub snapshots: u64,
    /// Directories created.
    pub directories: u64,
}

/// One buffered snapshot: its key, its encoded record, and its parent for the children index.
#[derive(Debug)]
struct Row {
    ns: String,
    sn: String,
    key: String,
    parent: Option<String>,
    bytes: Vec<u8>,
}

/// Buffers snapshot records (and, through [`Loader::with_store`], the store's records) and
/// writes them in large transactions; see the module documentation for what it gives up. Call
/// [`Loader::finish`] at the end: records still buffered when a loader is dropped are lost
/// (their directories stay, as orphans).
#[derive(Debug)]
pub struct Loader<'s> {
    inner: StoreLoader<'s>,
    per_txn: usize,
    rows: Vec<Row>,
    /// Ids of the buffered rows: in flight until their records commit.
    in_flight: Vec<InFlightId>,
    /// Snapshotter roots known to exist.
    roots: HashSet<String>,
    /// What a committed snapshot's empty `fs` uses, measured on the first one created.
    empty_usage: Option<Usage>,
    snapshots: u64,
    directories: u64,
}

impl<'s> Loader<'s> {
    /// A loader writing into `store`.
    pub fn new(store: &'s Store) -> Loader<'s> {
        Loader {
            // This loader decides when to commit, counting both kinds of record.
            inner: StoreLoader::new(store).per_transaction(usize::MAX),
            per_txn: DEFAULT_PER_TRANSACTION,
            rows: Vec::new(),
            in_flight: Vec::new(),
            roots: HashSet::new(),
            empty_usage: None,
            snapshots: 0,
            directories: 0,
        }
    }

    /// Commits once `n` records (snapshots and store records together) are buffered.
    #[must_use]
    pub fn per_transaction(mut self, n: usize) -> Loader<'s> {
        self.per_txn = n.max(1);
        self
    }

    /// Adds store records (blobs, images, containers) through the wrapped
    /// [`strata_store::bulk::Loader`]; they are committed with the snapshots.
    ///
    /// # Errors
    /// Those of `f`; the errors of a commit when the batch is full.
    pub fn with_store<T>(
        &mut self,
        f: impl FnOnce(&mut StoreLoader<'s>) -> strata_store::Result<T>,
    ) -> Result<T> {
        let out = f(&mut self.inner)?;
        self.added()?;
        Ok(out)
    }

    /// Creates snapshot `key` of `kind` in `snapshotter` (any name; `native` and `overlay`
    /// are what the snapshotter opens) on `parent`: its directory now, its record and its
    /// children-index row at the next commit. Returns its id.
    ///
    /// A committed snapshot records the usage of an empty `fs` directory.
    ///
    /// # Errors
    /// InvalidArgument for an empty key or an invalid namespace; Io; the errors of a commit
    /// when the batch is full.
    pub fn snapshot(
        &mut self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: BTreeMap<String, String>,
    ) -> Result<u64> {
        if key.is_empty() {
            return Err(strata_store::Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            )
            .into());
        }
        self.inner.namespace(ns)?;
        let store = self.inner.store();
        let root = store.snapshot_root(snapshotter);
        if !self.roots.contains(snapshotter) {
            std::fs::create_dir_all(&root).map_err(|e| Error::io("create directory", &root, e))?;
            self.roots.insert(snapshotter.to_owned());
        }
        let in_flight = store.allocate_id()?;
        let id = in_flight.id();
        let dir = root.join(id.to_string());
        mkdir(&dir, 0o700)?;
        mkdir(&fs_dir(&dir), 0o755)?;
        self.directories += 2;
        if kind == Kind::Active && snapshotter == "overlay" {
            mkdir(&work_dir(&dir), 0o711)?;
            self.directories += 1;
        }
        let usage = match kind {
            Kind::Committed => Some(match self.empty_usage {
                Some(u) => u,
                None => *self.empty_usage.insert(fs::disk_usage(&fs_dir(&dir))?),
            }),
            Kind::Active | Kind::View => None,
        };
        let record = SnapshotRecord::new(id, kind, parent.map(str::to_owned), labels, usage);
        let bytes = codec::encode("snapshots", &format!("{ns}/{snapshotter}/{key}"), &record)?;
        self.rows.push(Row {
            ns: ns.to_owned(),
            sn: snapshotter.to_owned(),
            key: key.to_owned(),
            parent: record.parent,
            bytes,
        });
        self.in_flight.push(in_flight);
        self.inner.count_extra(1);
        self.added()?;
        Ok(id)
    }

    /// A chain of committed snapshots: `keys[0]` on `base` (or parentless), each next key on
    /// the one before. Returns their ids in the same order.
    ///
    /// # Errors
    /// As [`Loader::snapshot`].
    pub fn committed_chain<K: AsRef<str>>(
        &mut self,
        ns: &str,
        snapshotter: &str,
        keys: &[K],
        base: Option<&str>,
    ) -> Result<Vec<u64>> {
        let mut ids = Vec::with_capacity(keys.len());
        let mut parent = base;
        for key in keys {
            let key = key.as_ref();
            ids.push(self.snapshot(
                ns,
                snapshotter,
                key,
                parent,
                Kind::Committed,
                BTreeMap::new(),
            )?);
            parent = Some(key);
        }
        Ok(ids)
    }

    /// Records buffered and not yet committed (snapshots and store records).
    pub fn pending(&self) -> usize {
        self.inner.pending()
    }

    /// Commits everything buffered in one write transaction, then lets the ids go.
    ///
    /// # Errors
    /// Database errors; the buffered records are dropped then (their directories stay, as
    /// orphans).
    pub fn commit(&mut self) -> Result<()> {
        let mut rows = std::mem::take(&mut self.rows);
        let committed = rows.len() as u64;
        self.inner.commit_with(|txn| write_rows(txn, &mut rows))?;
        self.snapshots += committed;
        // The records naming these directories are visible now.
        self.in_flight.clear();
        Ok(())
    }

    /// Commits what is buffered and returns what the loader wrote in all.
    ///
    /// # Errors
    /// As [`Loader::commit`].
    pub fn finish(mut self) -> Result<Stats> {
        if self.pending() > 0 {
            self.commit()?;
        }
        let s = self.inner.stats();
        Ok(Stats {
            records: s.records,
            transactions: s.transactions,
            files: s.files,
            snapshots: self.snapshots,
            directories: self.directories,
        })
    }

    fn added(&mut self) -> Result<()> {
        if self.pending() >= self.per_txn {
            self.commit()?;
        }
        Ok(())
    }
}

/// `mkdir` with `mode` (less the umask); no fsync.
fn mkdir(dir: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .mode(mode)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

fn write_rows(txn: &WriteTxn<'_>, rows: &mut [Row]) -> strata_store::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Sorted inserts fill redb's pages in order.
    rows.sort_unstable_by(|a, b| (&a.ns, &a.sn, &a.key).cmp(&(&b.ns, &b.sn, &b.key)));
    {
        let mut table = txn.open_table(SNAPSHOTS)?;
        for r in rows.iter() {
            table.insert(
                (r.ns.as_str(), r.sn.as_str(), r.key.as_str()),
                r.bytes.as_slice(),
            )?;
            txn.touch(Node::snapshot(r.ns.as_str(), &r.sn, &r.key));
        }
    }
    let mut children = txn.open_table(SNAPSHOT_CHILDREN)?;
    for r in rows.iter() {
        if let Some(p) = &r.parent {
            children.insert(
                (r.ns.as_str(), r.sn.as_str(), p.as_str(), r.key.as_str()),
                (),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Snapshotter;
    use strata_store::StoreOptions;

    #[test]
    fn chains_are_real_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut loader = Loader::new(&store).per_transaction(5);
        let keys: Vec<String> = (0..7).map(|l| format!("c/layer-{l}")).collect();
        let ids = loader
            .committed_chain("ns1", "native", &keys, None)
            .unwrap();
        let blob = loader
            .with_store(|s| {
                s.blob_with_file(
                    "ns1",
                    &strata_store::bulk::unique_bytes(1, 64),
                    BTreeMap::new(),
                )
            })
            .unwrap();
        let stats = loader.finish().unwrap();
        assert_eq!(stats.snapshots, 7);
        assert_eq!(stats.records, 8);
        assert_eq!(stats.directories, 14);
        assert_eq!(stats.transactions, 2);
        assert_eq!(ids.len(), 7);
        assert!(store.content().info("ns1", &blob).is_ok());

        let sn = Snapshotter::native(&store).unwrap();
        let top = sn.stat("ns1", "c/layer-6").unwrap();
        assert_eq!(top.kind, Kind::Committed);
        assert_eq!(top.parent.as_deref(), Some("c/layer-5"));
        assert_eq!(sn.list::<&str>("ns1", &[]).unwrap().len(), 7);
        assert!(sn.orphans().unwrap().is_empty());
        // The children index is there: a parent with a child cannot be removed.
        let scope = strata_store::Scope::new("ns1").unwrap();
        assert!(sn.remove(&scope, "c/layer-5").is_err());
        // A prepare on the top works like on any committed snapshot.
        sn.prepare(&scope, "work", Some("c/layer-6"), BTreeMap::new())
            .unwrap();
        sn.remove(&scope, "work").unwrap();
        sn.remove(&scope, "c/layer-6").unwrap();
        sn.remove(&scope, "c/layer-5").unwrap();
    }
}
