//! The record changes a repair makes inside its write transaction. Each re-checks, against
//! the records as they are now, that its fix still applies, and logs every record it removes
//! (decoded where it decodes, raw bytes always) for `records.json`.

use redb::ReadableTable;
use strata_snapshotter::gc as sgc;
use strata_store::Store;
use strata_store::db::{BLOBS, SNAPSHOT_CHILDREN, SNAPSHOTS, WriteTxn};
use strata_store::gcview::Current;

use super::json::Json;
use super::records::ChildRow;
use super::records_json::{RecordLog, child_json, hex};
use super::run::{db_err, exists};
use crate::Result;

/// Removes every namespace's record of `digest` (as they are now, including any a commit
/// added since the check); returns how many.
pub(super) fn remove_blob_records(
    txn: &WriteTxn<'_>,
    digest: &str,
    log: &mut RecordLog,
) -> Result<usize> {
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
pub(super) fn remove_blob_record(
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
pub(super) fn still_phantom(txn: &WriteTxn<'_>, row: &ChildRow) -> Result<bool> {
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
pub(super) fn remove_missing_snapshot(
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
