//! The database side of the comparison: every table fsck checks, read from one read
//! transaction. Keys always decode, so the checks that need only keys (blob files, children
//! rows, lease resources) run even when a record does not decode.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;
use strata_snapshotter::gc::{self as sgc, SnapshotEntry};
use strata_store::db::{BLOBS, LEASE_RESOURCES, LEASES, SNAPSHOT_CHILDREN, SNAPSHOTS};
use strata_store::gcview::{IngestEntry, View};

use super::run::{Run, db_err};
use crate::{Error, Result};

/// A `(namespace, snapshotter, key)`.
pub(super) type SnapKey = (String, String, String);

/// A `snapshot_children` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ChildRow {
    pub(super) ns: String,
    pub(super) sn: String,
    pub(super) parent: String,
    pub(super) child: String,
}

/// A `lease_resources` row.
#[derive(Debug, Clone)]
pub(super) struct ResourceRow {
    pub(super) ns: String,
    pub(super) lease: String,
    pub(super) kind: String,
    pub(super) id: String,
}

/// Everything read from the one read transaction. `None` where a corrupt record made a table
/// unreadable as a whole (reported as [`super::ProblemKind::CorruptRecord`]).
#[derive(Debug, Default)]
pub(super) struct Records {
    /// `(namespace, digest string)` of every blob record (keys only: never undecodable).
    pub(super) blob_keys: Vec<(String, String)>,
    /// Sizes by `(namespace, digest string)`, from the decoded records.
    pub(super) blob_sizes: Option<HashMap<(String, String), u64>>,
    /// Every ingest record, decoded.
    pub(super) ingests: Option<Vec<IngestEntry>>,
    /// Every snapshot record, decoded.
    pub(super) snapshots: Option<Vec<SnapshotEntry>>,
    /// The key of every snapshot record.
    pub(super) snapshot_keys: HashSet<SnapKey>,
    /// Every `snapshot_children` row.
    pub(super) children: Vec<ChildRow>,
    /// The `(namespace, id)` of every lease record.
    pub(super) leases: HashSet<(String, String)>,
    /// Every `lease_resources` row.
    pub(super) resources: Vec<ResourceRow>,
}

impl Run<'_, '_> {
    /// Reads [`Records`] from `txn`. A record that does not decode is a `corrupt_record`
    /// problem and leaves its table's decoded records `None`.
    ///
    /// # Errors
    /// Database errors other than a corrupt record.
    pub(super) fn read_records(&mut self, txn: &redb::ReadTransaction) -> Result<Records> {
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
}

/// Every digest string some namespace records.
pub(super) fn recorded_digests(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for item in table.iter().map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        out.insert(k.value().1.to_owned());
    }
    Ok(out)
}
