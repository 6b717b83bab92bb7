//! A consistent, read-only view of every record the garbage collector looks at.
//!
//! [`View::new`] reads every namespace, blob, ingest, image, lease (with its resources) and
//! container from one read transaction (an MVCC snapshot), so a reader sees one point in time
//! while writers keep running. Records are decoded with the store's own record types, into
//! owned copies: what `why`'s lookups, `du` and `fsck` want. The mark itself, which reads
//! every record and keeps little of each, scans in place instead ([`crate::gcscan`]). A record
//! that does not decode is an [`Error::Corrupt`] naming its table and key.

use std::collections::BTreeMap;

use redb::ReadableTable;

use crate::codec;
use crate::containers::Container;
use crate::content::{BLOBS_TABLE, BlobRecord, INGESTS_TABLE, IngestRecord};
use crate::db::{
    self, BLOBS, CONTAINERS, IMAGES, INGESTS, LEASE_RESOURCES, LEASES, NAMESPACES, NsKey, WriteTxn,
};
use crate::digest::Digest;
use crate::error::Result;
use crate::images::ImageRecord;
use crate::leases::LeaseRecord;
use crate::namespaces::NamespaceRecord;
use crate::timestamp::Timestamp;

/// A namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEntry {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A committed blob recorded in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Namespace.
    pub ns: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its labels in this namespace.
    pub labels: BTreeMap<String, String>,
    /// When this namespace committed it.
    pub created_at: Timestamp,
}

/// An in-flight ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestEntry {
    /// Namespace.
    pub ns: String,
    /// The writer's ref.
    pub reference: String,
    /// Its directory id (`content/ingest/<id>`).
    pub id: u64,
    /// The digest the writer expects, if any.
    pub expected: Option<Digest>,
    /// When an unleased ingest stops being a GC root; `None` for leased ingests.
    pub expires_at: Option<Timestamp>,
}

/// An image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Namespace.
    pub ns: String,
    /// Its name.
    pub name: String,
    /// Digest of its target.
    pub target: Digest,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A lease and the resources it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    /// Namespace.
    pub ns: String,
    /// Its id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `(type, id)` of every resource: type is `content`, `ingests`, `images` or
    /// `snapshots/<snapshotter>`.
    pub resources: Vec<(String, String)>,
}

/// A container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEntry {
    /// Namespace.
    pub ns: String,
    /// Its id.
    pub id: String,
    /// The snapshotter of its root filesystem (may be empty).
    pub snapshotter: String,
    /// Its snapshot key in that snapshotter (may be empty).
    pub snapshot_key: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Every record of every namespace, read from one transaction.
#[derive(Debug)]
pub struct View<'t> {
    txn: &'t redb::ReadTransaction,
    /// Namespaces, by name.
    pub namespaces: Vec<NamespaceEntry>,
    /// Blobs, by (namespace, digest).
    pub blobs: Vec<BlobEntry>,
    /// Ingests, by (namespace, ref).
    pub ingests: Vec<IngestEntry>,
    /// Images, by (namespace, name).
    pub images: Vec<ImageEntry>,
    /// Leases, by (namespace, id).
    pub leases: Vec<LeaseEntry>,
    /// Containers, by (namespace, id).
    pub containers: Vec<ContainerEntry>,
}

fn all<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    name: &'static str,
) -> Result<Vec<(String, String, T)>> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let (ns, key) = k.value();
        let rec: T = codec::decode(name, &NsKey(ns, key), v.value())?;
        out.push((ns.to_owned(), key.to_owned(), rec));
    }
    Ok(out)
}

impl<'t> View<'t> {
    /// Reads every record from `txn`.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] for a record (or blob key) that does not decode; database
    /// errors.
    pub fn new(txn: &'t redb::ReadTransaction) -> Result<View<'t>> {
        let mut namespaces = Vec::new();
        for item in txn.open_table(NAMESPACES)?.iter()? {
            let (k, v) = item?;
            let name = k.value();
            let r: NamespaceRecord = codec::decode("namespaces", &name, v.value())?;
            namespaces.push(NamespaceEntry {
                name: name.to_owned(),
                labels: r.labels,
            });
        }

        let mut blobs = Vec::new();
        for (ns, key, r) in all::<BlobRecord>(&txn.open_table(BLOBS)?, BLOBS_TABLE)? {
            let digest: Digest = key.parse().map_err(|e| crate::Error::Corrupt {
                table: BLOBS_TABLE,
                key: NsKey(&ns, &key).to_string(),
                reason: format!("key is not a digest: {e}"),
            })?;
            blobs.push(blob_entry(ns, digest, r));
        }

        let ingests = all::<IngestRecord>(&txn.open_table(INGESTS)?, INGESTS_TABLE)?
            .into_iter()
            .map(|(ns, reference, r)| ingest_entry(ns, reference, r))
            .collect();

        let images = all::<ImageRecord>(&txn.open_table(IMAGES)?, "images")?
            .into_iter()
            .map(|(ns, name, r)| image_entry(ns, name, r))
            .collect();

        let mut resources: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
        for item in txn.open_table(LEASE_RESOURCES)?.iter()? {
            let (k, _) = item?;
            let (ns, lease, kind, id) = k.value();
            resources
                .entry((ns.to_owned(), lease.to_owned()))
                .or_default()
                .push((kind.to_owned(), id.to_owned()));
        }
        let leases = all::<LeaseRecord>(&txn.open_table(LEASES)?, "leases")?
            .into_iter()
            .map(|(ns, id, r)| {
                let res = resources
                    .remove(&(ns.clone(), id.clone()))
                    .unwrap_or_default();
                LeaseEntry {
                    ns,
                    id,
                    labels: r.labels,
                    resources: res,
                }
            })
            .collect();

        let containers = all::<Container>(&txn.open_table(CONTAINERS)?, "containers")?
            .into_iter()
            .map(|(ns, id, c)| container_entry(ns, id, c))
            .collect();

        Ok(View {
            txn,
            namespaces,
            blobs,
            ingests,
            images,
            leases,
            containers,
        })
    }

    /// The transaction this view was read from (for reading other tables at the same point).
    pub fn txn(&self) -> &'t redb::ReadTransaction {
        self.txn
    }
}

fn blob_entry(ns: String, digest: Digest, r: BlobRecord) -> BlobEntry {
    BlobEntry {
        ns,
        digest,
        size: r.size,
        labels: r.labels,
        created_at: r.created_at,
    }
}

fn ingest_entry(ns: String, reference: String, r: IngestRecord) -> IngestEntry {
    IngestEntry {
        ns,
        reference,
        id: r.id,
        expected: r.expected,
        expires_at: r.expires_at,
    }
}

fn image_entry(ns: String, name: String, r: ImageRecord) -> ImageEntry {
    ImageEntry {
        ns,
        name,
        target: r.target.digest,
        labels: r.labels,
    }
}

fn container_entry(ns: String, id: String, c: Container) -> ContainerEntry {
    ContainerEntry {
        ns,
        id,
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        labels: c.labels,
    }
}

/// Calls `f(namespace, digest)` with the key of every blob record of `txn`, in key order,
/// without decoding the records; the digest is the key as stored, not validated. The names
/// are borrowed from the database page: nothing is allocated per record.
///
/// # Errors
/// Database errors.
pub fn blob_keys(txn: &redb::ReadTransaction, mut f: impl FnMut(&str, &str)) -> Result<()> {
    for item in txn.open_table(BLOBS)?.iter()? {
        let (k, _) = item?;
        let (ns, digest) = k.value();
        f(ns, digest);
    }
    Ok(())
}

/// Every ingest record.
///
/// # Errors
/// Corrupt; database errors.
pub fn ingests(txn: &redb::ReadTransaction) -> Result<Vec<IngestEntry>> {
    Ok(
        all::<IngestRecord>(&txn.open_table(INGESTS)?, INGESTS_TABLE)?
            .into_iter()
            .map(|(ns, reference, r)| ingest_entry(ns, reference, r))
            .collect(),
    )
}

/// The name of every namespace, in order.
///
/// # Errors
/// Database errors.
pub fn namespace_names(txn: &redb::ReadTransaction) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in txn.open_table(NAMESPACES)?.iter()? {
        out.push(item?.0.value().to_owned());
    }
    Ok(out)
}

/// Point reads and removals of single records inside the sweep's write transaction: the
/// records as they are now, not as the mark saw them.
#[derive(Debug)]
pub struct Current<'a, 'db> {
    txn: &'a WriteTxn<'db>,
}

impl<'a, 'db> Current<'a, 'db> {
    /// Reads through `txn`.
    pub fn new(txn: &'a WriteTxn<'db>) -> Self {
        Current { txn }
    }

    /// A blob record of one namespace.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn blob(&self, ns: &str, digest: &str) -> Result<Option<BlobEntry>> {
        let Some(r) = db::get::<BlobRecord>(&self.txn.open_table(BLOBS)?, BLOBS_TABLE, ns, digest)?
        else {
            return Ok(None);
        };
        let parsed: Digest = digest.parse().map_err(|e| crate::Error::Corrupt {
            table: BLOBS_TABLE,
            key: NsKey(ns, digest).to_string(),
            reason: format!("key is not a digest: {e}"),
        })?;
        Ok(Some(blob_entry(ns.to_owned(), parsed, r)))
    }

    /// An image.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn image(&self, ns: &str, name: &str) -> Result<Option<ImageEntry>> {
        Ok(
            db::get::<ImageRecord>(&self.txn.open_table(IMAGES)?, "images", ns, name)?
                .map(|r| image_entry(ns.to_owned(), name.to_owned(), r)),
        )
    }

    /// An ingest.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn ingest(&self, ns: &str, reference: &str) -> Result<Option<IngestEntry>> {
        Ok(
            db::get::<IngestRecord>(&self.txn.open_table(INGESTS)?, INGESTS_TABLE, ns, reference)?
                .map(|r| ingest_entry(ns.to_owned(), reference.to_owned(), r)),
        )
    }

    /// A container.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn container(&self, ns: &str, id: &str) -> Result<Option<ContainerEntry>> {
        Ok(
            db::get::<Container>(&self.txn.open_table(CONTAINERS)?, "containers", ns, id)?
                .map(|c| container_entry(ns.to_owned(), id.to_owned(), c)),
        )
    }

    /// A lease with its resources.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn lease(&self, ns: &str, id: &str) -> Result<Option<LeaseEntry>> {
        let Some(r) = db::get::<LeaseRecord>(&self.txn.open_table(LEASES)?, "leases", ns, id)?
        else {
            return Ok(None);
        };
        let mut resources = Vec::new();
        for item in self
            .txn
            .open_table(LEASE_RESOURCES)?
            .range((ns, id, "", "")..)?
        {
            let (k, _) = item?;
            let (kns, kid, kind, rid) = k.value();
            if kns != ns || kid != id {
                break;
            }
            resources.push((kind.to_owned(), rid.to_owned()));
        }
        Ok(Some(LeaseEntry {
            ns: ns.to_owned(),
            id: id.to_owned(),
            labels: r.labels,
            resources,
        }))
    }

    /// Removes a blob record of one namespace; whether there was one.
    ///
    /// # Errors
    /// Database errors.
    pub fn remove_blob(&self, ns: &str, digest: &str) -> Result<bool> {
        Ok(self.txn.open_table(BLOBS)?.remove((ns, digest))?.is_some())
    }

    /// Removes an image record; whether there was one.
    ///
    /// # Errors
    /// Database errors.
    pub fn remove_image(&self, ns: &str, name: &str) -> Result<bool> {
        Ok(self.txn.open_table(IMAGES)?.remove((ns, name))?.is_some())
    }

    /// Removes an ingest record; the id of its directory, if there was one.
    ///
    /// # Errors
    /// Corrupt; database errors.
    pub fn remove_ingest(&self, ns: &str, reference: &str) -> Result<Option<u64>> {
        let entry = self.ingest(ns, reference)?;
        if entry.is_some() {
            self.txn.open_table(INGESTS)?.remove((ns, reference))?;
        }
        Ok(entry.map(|e| e.id))
    }

    /// Removes a lease and its resource rows; whether there was one.
    ///
    /// # Errors
    /// Database errors.
    pub fn remove_lease(&self, ns: &str, id: &str) -> Result<bool> {
        let existed = self.txn.open_table(LEASES)?.remove((ns, id))?.is_some();
        if existed {
            crate::leases::remove_resources(self.txn, ns, Some(id))?;
        }
        Ok(existed)
    }
}
