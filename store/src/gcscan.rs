//! Streaming scans of every record the garbage collector's mark reads, decoded in place.
//!
//! [`crate::gcview::View`] copies every record into owned structs, which is what `why`, `du`
//! and `fsck` want. The mark reads a million records at 100 000 image sets and keeps only a
//! few fields of each, so it scans instead: each `scan_*` function walks one table of the
//! caller's read transaction and hands every record to a callback as a short-lived borrowed
//! item (strings point into the database page; only non-empty label lists allocate).
//!
//! The borrowed shapes below mirror the stored records field for field (postcard has no field
//! names: the order *is* the format). The tests encode each owned record and decode it here,
//! so a change to a record that is not mirrored fails them.
//!
//! A record that does not decode is [`crate::Error::Corrupt`] naming its table and key, as
//! everywhere else; the scan stops at the first one.

use std::fmt;

use redb::ReadableTable;
use serde::Deserialize;

use crate::codec;
use crate::content::{BLOBS_TABLE, INGESTS_TABLE};
use crate::db::{BLOBS, CONTAINERS, IMAGES, INGESTS, LEASE_RESOURCES, LEASES, NsKey};
use crate::digest::Digest;
use crate::error::Error;
use crate::timestamp::Timestamp;

/// A record's labels, borrowed, in key order.
pub type LabelRefs<'a> = Vec<(&'a str, &'a str)>;

/// A blob record of one namespace.
#[derive(Debug)]
pub struct BlobItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Its digest (checked to be one).
    pub digest: &'a str,
    /// Its labels.
    pub labels: LabelRefs<'a>,
}

/// An image.
#[derive(Debug)]
pub struct ImageItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Digest of its target.
    pub target: &'a str,
    /// Its labels.
    pub labels: LabelRefs<'a>,
}

/// A container.
#[derive(Debug)]
pub struct ContainerItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Its id.
    pub id: &'a str,
    /// Snapshotter of its root filesystem (may be empty).
    pub snapshotter: &'a str,
    /// Its snapshot key (may be empty).
    pub snapshot_key: &'a str,
    /// Its labels.
    pub labels: LabelRefs<'a>,
}

/// An in-flight ingest.
#[derive(Debug)]
pub struct IngestItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// The writer's ref.
    pub reference: &'a str,
    /// The digest the writer expects, if any.
    pub expected: Option<&'a str>,
    /// When an unleased ingest stops being a root; `None` for leased ingests.
    pub expires_at: Option<Timestamp>,
}

/// A lease (its resources are [`scan_lease_resources`]).
#[derive(Debug)]
pub struct LeaseItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Its id.
    pub id: &'a str,
    /// Its labels.
    pub labels: LabelRefs<'a>,
}

/// One resource a lease holds.
#[derive(Debug)]
pub struct LeaseResourceItem<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// The lease.
    pub lease: &'a str,
    /// `content`, `ingests`, `images` or `snapshots/<snapshotter>`.
    pub kind: &'a str,
    /// The resource's key.
    pub id: &'a str,
}

// The stored shapes, borrowed. Fields the collector does not use keep their type (postcard
// must still step over them) and a leading underscore.

#[derive(Deserialize)]
struct BlobShape<'a> {
    _size: u64,
    _created_at: Timestamp,
    _updated_at: Timestamp,
    #[serde(borrow)]
    labels: LabelRefs<'a>,
}

#[derive(Deserialize)]
struct DescriptorShape<'a> {
    _media_type: &'a str,
    digest: &'a str,
    _size: u64,
    #[serde(borrow)]
    _annotations: LabelRefs<'a>,
}

#[derive(Deserialize)]
struct ImageShape<'a> {
    #[serde(borrow)]
    target: DescriptorShape<'a>,
    #[serde(borrow)]
    labels: LabelRefs<'a>,
    _created_at: Timestamp,
    _updated_at: Timestamp,
}

#[derive(Deserialize)]
struct ContainerShape<'a> {
    _id: &'a str,
    _image: &'a str,
    snapshotter: &'a str,
    snapshot_key: &'a str,
    _runtime: &'a str,
    #[serde(borrow)]
    labels: LabelRefs<'a>,
    _created_at: Timestamp,
    _updated_at: Timestamp,
}

#[derive(Deserialize)]
struct IngestShape<'a> {
    _id: u64,
    expected: Option<&'a str>,
    _total: u64,
    _started_at: Timestamp,
    expires_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct LeaseShape<'a> {
    _created_at: Timestamp,
    #[serde(borrow)]
    labels: LabelRefs<'a>,
}

/// How many records the `scan_*` functions visit in all (lease resources not counted): what
/// a caller sizes its tables by. Table lengths are stored, so this reads no records.
///
/// # Errors
/// Database errors.
pub fn record_count(txn: &redb::ReadTransaction) -> Result<u64, Error> {
    use redb::ReadableTableMetadata;
    let mut n = 0;
    for def in [BLOBS, IMAGES, CONTAINERS, INGESTS, LEASES] {
        n += txn.open_table(def)?.len()?;
    }
    Ok(n)
}

/// Every blob record, by (namespace, digest).
///
/// # Errors
/// Corrupt for a record that does not decode or a key that is not a digest; database
/// errors; the first error `f` returns.
pub fn scan_blobs<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(BlobItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(BLOBS).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, v) = item.map_err(Error::from)?;
        let (ns, digest) = k.value();
        let key = NsKey(ns, digest);
        let record: BlobShape<'_> = codec::decode(BLOBS_TABLE, &key, v.value())?;
        Digest::check(digest).map_err(|e| corrupt(BLOBS_TABLE, &key, &e))?;
        f(BlobItem {
            ns,
            digest,
            labels: record.labels,
        })?;
    }
    Ok(())
}

/// Every image, by (namespace, name).
///
/// # Errors
/// Corrupt; database errors; the first error `f` returns.
pub fn scan_images<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(ImageItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(IMAGES).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, v) = item.map_err(Error::from)?;
        let (ns, name) = k.value();
        let key = NsKey(ns, name);
        let record: ImageShape<'_> = codec::decode("images", &key, v.value())?;
        Digest::check(record.target.digest).map_err(|e| corrupt("images", &key, &e))?;
        f(ImageItem {
            ns,
            name,
            target: record.target.digest,
            labels: record.labels,
        })?;
    }
    Ok(())
}

/// Every container, by (namespace, id).
///
/// # Errors
/// Corrupt; database errors; the first error `f` returns.
pub fn scan_containers<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(ContainerItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(CONTAINERS).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, v) = item.map_err(Error::from)?;
        let (ns, id) = k.value();
        let record: ContainerShape<'_> = codec::decode("containers", &NsKey(ns, id), v.value())?;
        f(ContainerItem {
            ns,
            id,
            snapshotter: record.snapshotter,
            snapshot_key: record.snapshot_key,
            labels: record.labels,
        })?;
    }
    Ok(())
}

/// Every ingest, by (namespace, ref).
///
/// # Errors
/// Corrupt (also for an expected digest that is not one); database errors; the first error
/// `f` returns.
pub fn scan_ingests<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(IngestItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(INGESTS).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, v) = item.map_err(Error::from)?;
        let (ns, reference) = k.value();
        let key = NsKey(ns, reference);
        let record: IngestShape<'_> = codec::decode(INGESTS_TABLE, &key, v.value())?;
        if let Some(d) = record.expected {
            Digest::check(d).map_err(|e| corrupt(INGESTS_TABLE, &key, &e))?;
        }
        f(IngestItem {
            ns,
            reference,
            expected: record.expected,
            expires_at: record.expires_at,
        })?;
    }
    Ok(())
}

/// Every lease, by (namespace, id).
///
/// # Errors
/// Corrupt; database errors; the first error `f` returns.
pub fn scan_leases<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(LeaseItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(LEASES).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, v) = item.map_err(Error::from)?;
        let (ns, id) = k.value();
        let record: LeaseShape<'_> = codec::decode("leases", &NsKey(ns, id), v.value())?;
        f(LeaseItem {
            ns,
            id,
            labels: record.labels,
        })?;
    }
    Ok(())
}

/// Every lease resource row, by (namespace, lease, type, key).
///
/// # Errors
/// Database errors; the first error `f` returns.
pub fn scan_lease_resources<E: From<Error>>(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(LeaseResourceItem<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let table = txn.open_table(LEASE_RESOURCES).map_err(Error::from)?;
    for item in table.iter().map_err(Error::from)? {
        let (k, _) = item.map_err(Error::from)?;
        let (ns, lease, kind, id) = k.value();
        f(LeaseResourceItem {
            ns,
            lease,
            kind,
            id,
        })?;
    }
    Ok(())
}

fn corrupt(table: &'static str, key: &dyn fmt::Display, e: &Error) -> Error {
    Error::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::containers::Container;
    use crate::content::{BlobRecord, IngestRecord};
    use crate::images::{Descriptor, ImageRecord};
    use crate::leases::LeaseRecord;

    fn labels() -> BTreeMap<String, String> {
        [("a", "1"), ("containerd.io/gc.ref.content", "sha256:x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn as_refs(l: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
        l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    fn digest() -> Digest {
        Digest::of(crate::Algorithm::Sha256, b"x")
    }

    // Each shape decodes the bytes its owned record encodes to, every byte consumed
    // (`codec::decode` refuses trailing bytes), with the fields the collector reads equal.

    #[test]
    fn blob_shape_mirrors_the_record() {
        let r = BlobRecord {
            size: 7,
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
            labels: labels(),
        };
        let bytes = codec::encode("t", &"k", &r).unwrap();
        let s: BlobShape<'_> = codec::decode("t", &"k", &bytes).unwrap();
        assert_eq!(s.labels, as_refs(&r.labels));
    }

    #[test]
    fn image_shape_mirrors_the_record() {
        let mut annotations = BTreeMap::new();
        annotations.insert("org.opencontainers.image.ref.name".into(), "v1".into());
        let r = ImageRecord {
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: digest(),
                size: 3,
                annotations,
            },
            labels: labels(),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
        };
        let bytes = codec::encode("t", &"k", &r).unwrap();
        let s: ImageShape<'_> = codec::decode("t", &"k", &bytes).unwrap();
        assert_eq!(s.target.digest, digest().to_string());
        assert_eq!(s.labels, as_refs(&r.labels));
    }

    #[test]
    fn container_shape_mirrors_the_record() {
        let mut c = Container::new("c1");
        c.image = "img".into();
        c.snapshotter = "overlay".into();
        c.snapshot_key = "c1-key".into();
        c.runtime = "io.containerd.runc.v2".into();
        c.labels = labels();
        let bytes = codec::encode("t", &"k", &c).unwrap();
        let s: ContainerShape<'_> = codec::decode("t", &"k", &bytes).unwrap();
        assert_eq!((s.snapshotter, s.snapshot_key), ("overlay", "c1-key"));
        assert_eq!(s.labels, as_refs(&c.labels));
    }

    #[test]
    fn ingest_shape_mirrors_the_record() {
        for (expected, expires_at) in [(Some(digest()), Some(Timestamp(9))), (None, None)] {
            let r = IngestRecord {
                id: 4,
                expected: expected.clone(),
                total: 10,
                started_at: Timestamp(1),
                expires_at,
            };
            let bytes = codec::encode("t", &"k", &r).unwrap();
            let s: IngestShape<'_> = codec::decode("t", &"k", &bytes).unwrap();
            assert_eq!(s.expected, expected.map(|d| d.to_string()).as_deref());
            assert_eq!(s.expires_at, expires_at);
        }
    }

    #[test]
    fn lease_shape_mirrors_the_record() {
        let r = LeaseRecord {
            created_at: Timestamp(1),
            labels: labels(),
        };
        let bytes = codec::encode("t", &"k", &r).unwrap();
        let s: LeaseShape<'_> = codec::decode("t", &"k", &bytes).unwrap();
        assert_eq!(s.labels, as_refs(&r.labels));
    }
}
