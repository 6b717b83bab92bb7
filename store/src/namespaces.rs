//! Namespaces: the isolation unit of every record. Blobs on disk are shared across them.
//!
//! A namespace record is created explicitly or implicitly by the first write into it. It
//! cannot be deleted while images, blobs or containers remain in it; its leases and ingests go
//! with it.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::db::{self, BLOBS, CONTAINERS, IMAGES, INGESTS, LEASES, NAMESPACES, SNAPSHOTS};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::identifiers::{set_label, validate_identifier, validate_labels};
use crate::store::Store;
use crate::timestamp::Timestamp;

const TABLE: &str = "namespaces";

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// Its name (an identifier).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NamespaceRecord {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) created_at: Timestamp,
}

/// Namespace operations; see [`Store::namespaces`].
#[derive(Debug)]
pub struct Namespaces<'a> {
    pub(crate) store: &'a Store,
}

impl Namespaces<'_> {
    /// Creates a namespace.
    ///
    /// # Errors
    /// InvalidArgument for a bad name or label; AlreadyExists.
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Namespace> {
        validate_identifier("namespace", name)?;
        let labels = validate_labels(labels)?;
        let txn = self.store.db().write()?;
        let record = NamespaceRecord {
            labels,
            created_at: Timestamp::now(),
        };
        {
            let mut t = txn.open_table(NAMESPACES)?;
            if t.get(name)?.is_some() {
                return Err(Error::already_exists("namespace", name));
            }
            t.insert(name, codec::encode(TABLE, &name, &record)?.as_slice())?;
        }
        txn.commit()?;
        Ok(Namespace {
            name: name.to_owned(),
            labels: record.labels,
            created_at: record.created_at,
        })
    }

    /// Every namespace, by name.
    pub fn list(&self) -> Result<Vec<Namespace>> {
        let txn = self.store.db().read()?;
        let t = txn.open_table(NAMESPACES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let name = k.value();
            let r: NamespaceRecord = codec::decode(TABLE, &name, v.value())?;
            out.push(Namespace {
                name: name.to_owned(),
                labels: r.labels,
                created_at: r.created_at,
            });
        }
        Ok(out)
    }

    /// One namespace.
    ///
    /// # Errors
    /// NotFound.
    pub fn get(&self, name: &str) -> Result<Namespace> {
        let txn = self.store.db().read()?;
        let t = txn.open_table(NAMESPACES)?;
        let r: NamespaceRecord = match t.get(name)? {
            None => return Err(Error::not_found("namespace", name)),
            Some(g) => codec::decode(TABLE, &name, g.value())?,
        };
        Ok(Namespace {
            name: name.to_owned(),
            labels: r.labels,
            created_at: r.created_at,
        })
    }

    /// Sets one label; an empty value deletes it.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for an oversized label.
    pub fn set_label(&self, name: &str, key: &str, value: &str) -> Result<Namespace> {
        let txn = self.store.db().write()?;
        let ns = {
            let mut t = txn.open_table(NAMESPACES)?;
            let mut r: NamespaceRecord = match t.get(name)? {
                None => return Err(Error::not_found("namespace", name)),
                Some(g) => codec::decode(TABLE, &name, g.value())?,
            };
            set_label(&mut r.labels, key, value)?;
            t.insert(name, codec::encode(TABLE, &name, &r)?.as_slice())?;
            Namespace {
                name: name.to_owned(),
                labels: r.labels,
                created_at: r.created_at,
            }
        };
        txn.commit()?;
        Ok(ns)
    }

    /// Deletes an empty namespace with its leases and ingests.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition naming what remains (images, blobs, containers,
    /// snapshots).
    pub fn delete(&self, name: &str) -> Result<()> {
        let txn = self.store.db().write()?;
        let mut ingest_ids = Vec::new();
        {
            let mut t = txn.open_table(NAMESPACES)?;
            if t.get(name)?.is_none() {
                return Err(Error::not_found("namespace", name));
            }
            let mut remaining = Vec::new();
            if db::any_in_namespace(&txn.open_table(IMAGES)?, name)? {
                remaining.push("images");
            }
            if db::any_in_namespace(&txn.open_table(BLOBS)?, name)? {
                remaining.push("blobs");
            }
            if db::any_in_namespace(&txn.open_table(CONTAINERS)?, name)? {
                remaining.push("containers");
            }
            if let Some(item) = txn.open_table(SNAPSHOTS)?.range((name, "", "")..)?.next()
                && item?.0.value().0 == name
            {
                remaining.push("snapshots");
            }
            if !remaining.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "namespace {name:?} must be empty before it is deleted, but it still has {}",
                    remaining.join(", ")
                )));
            }
            let mut ingests = txn.open_table(INGESTS)?;
            for (r, rec) in db::list::<crate::content::IngestRecord>(&ingests, "ingests", name)? {
                ingest_ids.push(rec.id);
                ingests.remove((name, r.as_str()))?;
            }
            let mut leases = txn.open_table(LEASES)?;
            for id in db::keys(&leases, name)? {
                leases.remove((name, id.as_str()))?;
            }
            crate::leases::remove_resources(&txn, name, None)?;
            t.remove(name)?;
        }
        txn.commit()?;
        // The records are gone; their ingest directories are now orphans, removed here and
        // otherwise by reconcile.
        for id in ingest_ids {
            fsutil::remove_dir_all(&self.store.layout().ingest_dir(id))?;
        }
        Ok(())
    }
}

/// Creates the namespace record inside `txn` if the namespace does not exist yet (first
/// write into a namespace creates it, as in containerd).
pub fn ensure(txn: &crate::db::WriteTxn<'_>, name: &str) -> Result<()> {
    let mut t = txn.open_table(NAMESPACES)?;
    if t.get(name)?.is_none() {
        let r = NamespaceRecord {
            labels: BTreeMap::new(),
            created_at: Timestamp::now(),
        };
        t.insert(name, codec::encode(TABLE, &name, &r)?.as_slice())?;
    }
    Ok(())
}
