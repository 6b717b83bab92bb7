//! Bulk loading, **for benchmarks and tests only** (cargo feature `bulk`).
//!
//! [`Loader`] fills a store with records fast: records are buffered and written a few
//! thousand per write transaction, and blob files are written without `fsync`. That bypasses
//! the per-object durability protocol of `docs/design.md` (data durable, then one transaction
//! per object), so a crash during a load can leave records whose blob files were never made
//! durable. Records are not validated either (no label or media-type checks): callers pass
//! well-formed values. Never use this for real data; it exists so a benchmark can build a
//! store of 100 000 images in seconds rather than the minutes the public API takes.
//!
//! ```no_run
//! # fn main() -> strata_store::Result<()> {
//! use std::collections::BTreeMap;
//! use strata_store::bulk::{Loader, unique_bytes};
//! use strata_store::{Store, StoreOptions};
//!
//! let store = Store::open("/var/tmp/bench-store", StoreOptions::default())?;
//! let mut loader = Loader::new(&store);
//! for i in 0..100_000 {
//!     loader.blob_with_file("default", &unique_bytes(i, 256), BTreeMap::new())?;
//! }
//! let stats = loader.finish()?;
//! assert_eq!(stats.records, 100_000);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use crate::codec;
use crate::containers::Container;
use crate::content::{BLOBS_TABLE, BlobRecord};
use crate::db::{BLOBS, CONTAINERS, IMAGES, NsKey, WriteTxn};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::identifiers::validate_identifier;
use crate::images::{Image, ImageRecord};
use crate::namespaces;
use crate::object::{Kind, Node};
use crate::store::Store;
use crate::timestamp::Timestamp;

/// Records per write transaction unless [`Loader::per_transaction`] says otherwise.
pub const DEFAULT_PER_TRANSACTION: usize = 4096;

/// One buffered `(namespace, key) -> encoded record` row.
type Row = (String, String, Vec<u8>);

/// What a [`Loader`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records committed (blobs, images, containers, and whatever
    /// [`Loader::commit_with`] callers counted through [`Loader::count_extra`]).
    pub records: u64,
    /// Write transactions committed.
    pub transactions: u64,
    /// Blob files created (files already present are not counted).
    pub files: u64,
}

/// Buffers records and writes them [`DEFAULT_PER_TRANSACTION`] at a time; see the module
/// documentation for what it gives up. Call [`Loader::finish`] at the end: records still
/// buffered when a loader is dropped are lost (their blob files stay, as orphans).
#[derive(Debug)]
pub struct Loader<'s> {
    store: &'s Store,
    per_txn: usize,
    namespaces: BTreeSet<String>,
    blobs: Vec<Row>,
    images: Vec<Row>,
    containers: Vec<Row>,
    /// Records other crates buffer on top of this loader (snapshots), counted for batching.
    extra: usize,
    stats: Stats,
}

impl<'s> Loader<'s> {
    /// A loader writing into `store`.
    pub fn new(store: &'s Store) -> Loader<'s> {
        Loader {
            store,
            per_txn: DEFAULT_PER_TRANSACTION,
            namespaces: BTreeSet::new(),
            blobs: Vec::new(),
            images: Vec::new(),
            containers: Vec::new(),
            extra: 0,
            stats: Stats::default(),
        }
    }

    /// Commits once `n` records are buffered (at least 1). `usize::MAX` never commits by
    /// itself: the caller decides with [`Loader::commit`] (how a wrapping loader batches its
    /// own records with these).
    #[must_use]
    pub fn per_transaction(mut self, n: usize) -> Loader<'s> {
        self.per_txn = n.max(1);
        self
    }

    /// The store written to.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// Records buffered and not yet committed.
    pub fn pending(&self) -> usize {
        self.blobs.len() + self.images.len() + self.containers.len() + self.extra
    }

    /// What has been committed so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Makes sure namespace `ns` has its record (created at the next commit if missing).
    ///
    /// # Errors
    /// InvalidArgument for an invalid namespace name.
    pub fn namespace(&mut self, ns: &str) -> Result<()> {
        if !self.namespaces.contains(ns) {
            validate_identifier("namespace", ns)?;
            self.namespaces.insert(ns.to_owned());
        }
        Ok(())
    }

    /// Writes `data` as the blob file `content/blobs/sha256/<hex>` (read-only, **not
    /// fsynced**) and returns its digest. No record is written: see [`Loader::blob`]. A file
    /// already there is left as it is (same digest, same bytes).
    ///
    /// # Errors
    /// Io.
    pub fn blob_file(&mut self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of(Algorithm::Sha256, data);
        let path = self.store.layout().blob(&digest);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path);
        match created {
            Ok(mut f) => {
                f.write_all(data)
                    .map_err(|e| Error::io("write", &path, e))?;
                self.stats.files += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &path, e)),
        }
        Ok(digest)
    }

    /// Buffers the blob record `(ns, digest)` of `size` bytes with `labels`, created now.
    /// Whether its file exists is the caller's business: a record without a file is what
    /// `gcctl fsck` calls missing data.
    ///
    /// # Errors
    /// InvalidArgument for an invalid namespace; the errors of a commit when the batch is
    /// full.
    pub fn blob(
        &mut self,
        ns: &str,
        digest: &Digest,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.namespace(ns)?;
        let now = Timestamp::now();
        let record = BlobRecord {
            size,
            created_at: now,
            updated_at: now,
            labels,
        };
        let key = digest.to_string();
        let bytes = codec::encode(BLOBS_TABLE, &NsKey(ns, &key), &record)?;
        self.blobs.push((ns.to_owned(), key, bytes));
        self.added()
    }

    /// [`Loader::blob_file`] then [`Loader::blob`]: a complete blob. Returns its digest.
    ///
    /// # Errors
    /// As those two.
    pub fn blob_with_file(
        &mut self,
        ns: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let digest = self.blob_file(data)?;
        self.blob(ns, &digest, data.len() as u64, labels)?;
        Ok(digest)
    }

    /// Buffers an image record (name, target, labels), created now.
    ///
    /// # Errors
    /// InvalidArgument for an invalid namespace; the errors of a commit when the batch is
    /// full.
    pub fn image(&mut self, ns: &str, image: &Image) -> Result<()> {
        self.namespace(ns)?;
        let now = Timestamp::now();
        let record = ImageRecord {
            target: image.target.clone(),
            labels: image.labels.clone(),
            created_at: now,
            updated_at: now,
        };
        let bytes = codec::encode("images", &NsKey(ns, &image.name), &record)?;
        self.images.push((ns.to_owned(), image.name.clone(), bytes));
        self.added()
    }

    /// Buffers a container record, created now.
    ///
    /// # Errors
    /// InvalidArgument for an invalid namespace; the errors of a commit when the batch is
    /// full.
    pub fn container(&mut self, ns: &str, container: &Container) -> Result<()> {
        self.namespace(ns)?;
        let now = Timestamp::now();
        let mut record = container.clone();
        record.created_at = now;
        record.updated_at = now;
        let bytes = codec::encode("containers", &NsKey(ns, &record.id), &record)?;
        self.containers.push((ns.to_owned(), record.id, bytes));
        self.added()
    }

    /// Counts `n` records a wrapping loader buffered and will write in
    /// [`Loader::commit_with`]; they count towards the batch size and [`Stats::records`].
    pub fn count_extra(&mut self, n: usize) {
        self.extra += n;
    }

    /// Commits everything buffered in one write transaction.
    ///
    /// # Errors
    /// Database errors; the buffered records are dropped then.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_with(|_| Ok(()))
    }

    /// Commits everything buffered, plus what `extra` writes, in one write transaction (how
    /// `strata_snapshotter::bulk` adds its snapshot rows).
    ///
    /// # Errors
    /// Database errors and those of `extra`; the buffered records are dropped then.
    pub fn commit_with(&mut self, extra: impl FnOnce(&WriteTxn<'_>) -> Result<()>) -> Result<()> {
        let records = self.pending();
        let namespaces = std::mem::take(&mut self.namespaces);
        let mut blobs = std::mem::take(&mut self.blobs);
        let mut images = std::mem::take(&mut self.images);
        let mut containers = std::mem::take(&mut self.containers);
        self.extra = 0;
        let txn = self.store.db().write()?;
        for ns in &namespaces {
            namespaces::ensure(&txn, ns)?;
        }
        for (table, rows, kind) in [
            (BLOBS, &mut blobs, Kind::Content),
            (IMAGES, &mut images, Kind::Image),
            (CONTAINERS, &mut containers, Kind::Container),
        ] {
            if rows.is_empty() {
                continue;
            }
            // Sorted inserts fill redb's pages in order: fewer splits, fewer pages touched.
            rows.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            let mut t = txn.open_table(table)?;
            for (ns, key, bytes) in rows.iter() {
                t.insert((ns.as_str(), key.as_str()), bytes.as_slice())?;
                txn.touch(Node::new(kind, ns.as_str(), key.as_str()));
            }
        }
        extra(&txn)?;
        txn.commit()?;
        // Keep the namespaces known: ensuring them again costs a lookup per commit only.
        self.namespaces = namespaces;
        self.stats.records += records as u64;
        self.stats.transactions += 1;
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
        Ok(self.stats)
    }

    fn added(&mut self) -> Result<()> {
        if self.pending() >= self.per_txn {
            self.commit()?;
        }
        Ok(())
    }
}

/// `len` bytes that differ for every `seed` (a splitmix64 stream), so each seed gives a blob
/// with its own digest.
pub fn unique_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut out = Vec::with_capacity(len + 8);
    // The seed itself first, so two seeds can never give the same bytes.
    out.extend_from_slice(&seed.to_le_bytes());
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len.max(8));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;
    use crate::images::Descriptor;

    #[test]
    fn records_and_files_land_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut loader = Loader::new(&store).per_transaction(3);
        let mut digests = Vec::new();
        for i in 0..5 {
            let d = loader
                .blob_with_file("ns1", &unique_bytes(i, 100), BTreeMap::new())
                .unwrap();
            digests.push(d);
        }
        let target = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digests[0].clone(),
            size: 100,
            annotations: BTreeMap::new(),
        };
        loader
            .image("ns1", &Image::new("example.com/a:1", target))
            .unwrap();
        let mut c = Container::new("c1");
        c.snapshotter = "native".into();
        c.snapshot_key = "k".into();
        loader.container("ns1", &c).unwrap();
        let stats = loader.finish().unwrap();
        assert_eq!(stats.records, 7);
        assert_eq!(stats.files, 5);
        assert_eq!(stats.transactions, 3);

        assert_eq!(store.content().list::<&str>("ns1", &[]).unwrap().len(), 5);
        let info = store.content().info("ns1", &digests[3]).unwrap();
        assert_eq!(info.size, 100);
        let mut read = Vec::new();
        std::io::Read::read_to_end(
            &mut store.content().reader("ns1", &digests[3]).unwrap(),
            &mut read,
        )
        .unwrap();
        assert_eq!(read, unique_bytes(3, 100));
        assert_eq!(
            store
                .images()
                .get("ns1", "example.com/a:1")
                .unwrap()
                .target
                .digest,
            digests[0]
        );
        assert_eq!(
            store.containers().get("ns1", "c1").unwrap().snapshot_key,
            "k"
        );
        assert_eq!(store.namespaces().get("ns1").unwrap().name, "ns1");
        assert!(store.content().orphans().unwrap().is_empty());
    }

    #[test]
    fn unique_bytes_differ_per_seed() {
        assert_ne!(unique_bytes(1, 64), unique_bytes(2, 64));
        assert_eq!(unique_bytes(7, 3).len(), 8);
        assert_eq!(unique_bytes(7, 100).len(), 100);
    }
}
