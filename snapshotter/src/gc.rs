//! What the garbage collector reads and removes of snapshots: every snapshot record of every
//! namespace and snapshotter from the caller's read transaction, and single records inside
//! the sweep's write transaction.

use std::collections::BTreeMap;

use redb::ReadableTable;
use strata_store::Timestamp;
use strata_store::codec;
use strata_store::db::{SNAPSHOT_CHILDREN, SNAPSHOTS, WriteTxn};

use crate::error::{Error, Result};
use crate::snapshot::{Kind, SnapshotRecord};

/// One snapshot as the garbage collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Namespace.
    pub ns: String,
    /// Snapshotter name (`overlay`, `native`, ...).
    pub snapshotter: String,
    /// Its key (or name, once committed).
    pub key: String,
    /// Its directory id (`snapshots/<snapshotter>/<id>`).
    pub id: u64,
    /// Its parent in the same snapshotter, if any.
    pub parent: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its kind.
    pub kind: Kind,
    /// Creation time.
    pub created_at: Timestamp,
    /// Bytes its own layer uses, as measured at commit (`None` while active).
    pub size: Option<u64>,
}

fn store_err(e: impl Into<redb::Error>) -> Error {
    Error::Store(e.into().into())
}

fn entry(ns: &str, sn: &str, key: &str, bytes: &[u8]) -> Result<SnapshotEntry> {
    let rec: SnapshotRecord = codec::decode("snapshots", &format!("{ns}/{sn}/{key}"), bytes)?;
    Ok(SnapshotEntry {
        ns: ns.to_owned(),
        snapshotter: sn.to_owned(),
        key: key.to_owned(),
        id: rec.id,
        parent: rec.parent,
        labels: rec.labels,
        kind: rec.kind,
        created_at: rec.created_at,
        size: rec.usage.map(|u| u.size),
    })
}

/// Every snapshot record, in (namespace, snapshotter, key) order, read from `txn`.
///
/// # Errors
/// Corrupt (naming the table and key) for a record that does not decode; database errors.
pub fn snapshot_records(txn: &redb::ReadTransaction) -> Result<Vec<SnapshotEntry>> {
    let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
    let mut out = Vec::new();
    for item in table.iter().map_err(store_err)? {
        let (k, v) = item.map_err(store_err)?;
        let (ns, sn, key) = k.value();
        out.push(entry(ns, sn, key, v.value())?);
    }
    Ok(out)
}

/// Calls `f(namespace, snapshotter, key, id)` with every snapshot record of `txn`, in
/// (namespace, snapshotter, key) order, decoding only the id (the record's first field): what
/// cleanup compares the directories with. The names are borrowed from the database page, so
/// a scan of 700 000 records allocates nothing per record.
///
/// # Errors
/// Corrupt (naming the table and key) for an id that does not decode; database errors.
pub fn snapshot_dirs(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&str, &str, &str, u64),
) -> Result<()> {
    /// `ns/snapshotter/key`, formatted only when a record does not decode.
    struct RecordKey<'a>(&'a str, &'a str, &'a str);
    impl std::fmt::Display for RecordKey<'_> {
        fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(out, "{}/{}/{}", self.0, self.1, self.2)
        }
    }

    let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
    for item in table.iter().map_err(store_err)? {
        let (k, v) = item.map_err(store_err)?;
        let (ns, sn, key) = k.value();
        let id: u64 = codec::decode_prefix("snapshots", &RecordKey(ns, sn, key), v.value())?;
        f(ns, sn, key, id);
    }
    Ok(())
}

/// The record `(ns, sn, key)` of a snapshots table, read or written.
fn get_entry(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotEntry>> {
    let got = table.get((ns, sn, key)).map_err(store_err)?;
    got.map(|v| entry(ns, sn, key, v.value())).transpose()
}

/// One snapshot record as it is now in `txn`.
///
/// # Errors
/// Corrupt; database errors.
pub fn current_snapshot(
    txn: &WriteTxn<'_>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotEntry>> {
    get_entry(&txn.open_table(SNAPSHOTS).map_err(store_err)?, ns, sn, key)
}

/// Removes one snapshot record and its entry in its parent's children index; returns the
/// removed record (its `id` names the directory the cleanup removes), or `None` when there was
/// none. The caller removes children before parents (a sweep removes only unreachable
/// snapshots, and a parent of a reachable one is reachable), so no child is left pointing at
/// a missing parent.
///
/// # Errors
/// Corrupt; database errors.
pub fn remove_snapshot(
    txn: &WriteTxn<'_>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotEntry>> {
    let Some(e) = current_snapshot(txn, ns, sn, key)? else {
        return Ok(None);
    };
    txn.open_table(SNAPSHOTS)
        .map_err(store_err)?
        .remove((ns, sn, key))
        .map_err(store_err)?;
    if let Some(p) = &e.parent {
        txn.open_table(SNAPSHOT_CHILDREN)
            .map_err(store_err)?
            .remove((ns, sn, p.as_str(), key))
            .map_err(store_err)?;
    }
    Ok(Some(e))
}

/// Removes many snapshot records (and their children-index rows) with each table opened
/// once; for each key, whether it had a record. See [`remove_snapshot`].
///
/// # Errors
/// Corrupt; database errors.
pub fn remove_snapshots(txn: &WriteTxn<'_>, keys: &[(&str, &str, &str)]) -> Result<Vec<bool>> {
    let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
    let mut children = txn.open_table(SNAPSHOT_CHILDREN).map_err(store_err)?;
    let mut out = Vec::with_capacity(keys.len());
    for &(ns, sn, key) in keys {
        let removed = table.remove((ns, sn, key)).map_err(store_err)?;
        let Some(bytes) = removed else {
            out.push(false);
            continue;
        };
        let e = entry(ns, sn, key, bytes.value())?;
        drop(bytes);
        if let Some(p) = &e.parent {
            children
                .remove((ns, sn, p.as_str(), key))
                .map_err(store_err)?;
        }
        out.push(true);
    }
    Ok(out)
}

pub use crate::backend::fs::{disk_usage, remove_tree};

/// One snapshot record as the mark reads it, borrowed from the database page.
#[derive(Debug)]
pub struct SnapshotItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Snapshotter name.
    pub snapshotter: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its parent's key in the same snapshotter, if any.
    pub parent: Option<&'a str>,
    /// Its labels, in key order.
    pub labels: strata_store::gcscan::LabelRefs<'a>,
}

/// The stored shape of [`SnapshotRecord`], borrowed (field order is the format; the test
/// below keeps the two in step).
#[derive(serde::Deserialize)]
struct SnapshotShape<'a> {
    _id: u64,
    _kind: Kind,
    parent: Option<&'a str>,
    #[serde(borrow)]
    labels: strata_store::gcscan::LabelRefs<'a>,
    _created_at: Timestamp,
    _updated_at: Timestamp,
    _usage: Option<crate::snapshot::Usage>,
}

/// `ns/snapshotter/key`, formatted only when an error needs it.
struct SnapshotKey<'a>(&'a str, &'a str, &'a str);

impl std::fmt::Display for SnapshotKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.0, self.1, self.2)
    }
}

/// Calls `f` with every snapshot record of `txn`, in (namespace, snapshotter, key) order,
/// decoded in place (see `strata_store::gcscan`).
///
/// # Errors
/// Corrupt for a record that does not decode; database errors; the first error `f` returns.
pub fn scan_snapshots<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(SnapshotItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
    for item in table.iter().map_err(store_err)? {
        let (k, v) = item.map_err(store_err)?;
        let (ns, sn, key) = k.value();
        let record: SnapshotShape<'_> =
            codec::decode("snapshots", &SnapshotKey(ns, sn, key), v.value())
                .map_err(Error::from)?;
        f(SnapshotItem {
            ns,
            snapshotter: sn,
            key,
            parent: record.parent,
            labels: record.labels,
        })?;
    }
    Ok(())
}

/// One snapshot record as of the read transaction `txn` (a point read: the dry run prices
/// only what it would remove).
///
/// # Errors
/// Corrupt; database errors.
pub fn read_snapshot(
    txn: &redb::ReadTransaction,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotEntry>> {
    get_entry(&txn.open_table(SNAPSHOTS).map_err(store_err)?, ns, sn, key)
}

/// How many snapshot records there are (a stored length: no record is read).
///
/// # Errors
/// Database errors.
pub fn snapshot_count(txn: &redb::ReadTransaction) -> Result<u64> {
    use redb::ReadableTableMetadata;
    let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
    table.len().map_err(store_err)
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::snapshot::Usage;

    #[test]
    fn snapshot_shape_mirrors_the_record() {
        let mut labels = BTreeMap::new();
        labels.insert("containerd.io/gc.root".to_owned(), "x".to_owned());
        for (parent, usage) in [
            (Some("p".to_owned()), Some(Usage { size: 1, inodes: 2 })),
            (None, None),
        ] {
            let r = SnapshotRecord::new(9, Kind::Committed, parent.clone(), labels.clone(), usage);
            let bytes = codec::encode("snapshots", &"k", &r).unwrap();
            let s: SnapshotShape<'_> = codec::decode("snapshots", &"k", &bytes).unwrap();
            assert_eq!(s.parent, parent.as_deref());
            assert_eq!(s.labels, vec![("containerd.io/gc.root", "x")]);
        }
    }
}
