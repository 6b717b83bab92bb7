//! What the garbage collector reads of snapshots: every snapshot record of every namespace
//! and snapshotter, from the caller's read transaction.

use std::collections::BTreeMap;

use strata_store::Timestamp;
use strata_store::codec;
use strata_store::db::SNAPSHOTS;

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
    /// Its parent in the same snapshotter, if any.
    pub parent: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its kind.
    pub kind: Kind,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Every snapshot record, in (namespace, snapshotter, key) order, read from `txn`.
///
/// # Errors
/// Corrupt (naming the table and key) for a record that does not decode; database errors.
pub fn snapshot_records(txn: &redb::ReadTransaction) -> Result<Vec<SnapshotEntry>> {
    let store_err = |e: redb::Error| Error::Store(e.into());
    let table = txn.open_table(SNAPSHOTS).map_err(|e| store_err(e.into()))?;
    let mut out = Vec::new();
    for item in redb::ReadableTable::iter(&table).map_err(|e| store_err(e.into()))? {
        let (k, v) = item.map_err(|e| store_err(e.into()))?;
        let (ns, sn, key) = k.value();
        let rec: SnapshotRecord =
            codec::decode("snapshots", &format!("{ns}/{sn}/{key}"), v.value())?;
        out.push(SnapshotEntry {
            ns: ns.to_owned(),
            snapshotter: sn.to_owned(),
            key: key.to_owned(),
            parent: rec.parent,
            labels: rec.labels,
            kind: rec.kind,
            created_at: rec.created_at,
        });
    }
    Ok(out)
}
