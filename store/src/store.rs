//! [`Store`]: one root directory, its lock, its database, and the per-area handles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::containers::Containers;
use crate::content::ContentStore;
use crate::db::Db;
use crate::digest::{Algorithm, Digest};
use crate::error::Result;
use crate::fsutil;
use crate::identifiers::validate_identifier;
use crate::images::Images;
use crate::leases::Leases;
use crate::lock::StoreLock;
use crate::namespaces::Namespaces;
use crate::timestamp::Timestamp;

/// Settings for [`Store::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// redb page cache in bytes (default 64 MiB).
    pub cache_size: usize,
    /// How long an ingest that no lease holds stays a GC root (default 24 h, as containerd).
    pub ingest_expiry: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size: 64 << 20,
            ingest_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// Paths of a store root. Every on-disk object lives at one of these.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `<root>/meta.redb`.
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta.redb")
    }
    /// `<root>/content/blobs/<alg>`.
    pub fn blob_dir(&self, alg: Algorithm) -> PathBuf {
        self.root.join("content").join("blobs").join(alg.name())
    }
    /// `<root>/content/blobs/<alg>/<hex>`: a committed, read-only blob.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest.algorithm()).join(digest.hex())
    }
    /// `<root>/content/ingest`.
    pub fn ingest_root(&self) -> PathBuf {
        self.root.join("content").join("ingest")
    }
    /// `<root>/content/ingest/<id>`: one in-flight write, holding `data`.
    pub fn ingest_dir(&self, id: u64) -> PathBuf {
        self.ingest_root().join(id.to_string())
    }
    /// `<root>/snapshots`.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// `<root>/tmp`: staging and temporary mounts, emptied at open.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// The namespace (and optionally the lease) an operation acts in.
///
/// A lease in the scope makes every object the operation creates a member of that lease in
/// the same transaction, as containerd's context lease does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    namespace: String,
    lease: Option<String>,
}

impl Scope {
    /// A scope in `namespace`, which must be a valid identifier.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for an invalid namespace name.
    pub fn new(namespace: &str) -> Result<Scope> {
        validate_identifier("namespace", namespace)?;
        Ok(Scope {
            namespace: namespace.to_owned(),
            lease: None,
        })
    }

    /// The same scope, with work done under lease `id` (which must exist when used).
    pub fn with_lease(mut self, id: impl Into<String>) -> Scope {
        self.lease = Some(id.into());
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The lease, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) db: Db,
    pub(crate) options: StoreOptions,
    /// Refs with an open writer in this process, and since when. Other processes are kept
    /// out by the root lock.
    pub(crate) open_writers: Mutex<HashMap<(String, String), Timestamp>>,
    /// Shared by blob commits, exclusive for a sweep of blob files, so a file is never removed
    /// between a commit's check that it exists and the transaction that records it.
    pub(crate) blob_files: RwLock<()>,
    /// Ids reserved from the database sequence and not handed out yet: `next..end`.
    ids: Mutex<(u64, u64)>,
    _lock: StoreLock,
}

/// A strata store: cheap to clone, one per root per process.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Opens the store at `root`, creating its layout on first use.
    ///
    /// In order: create the directories, take `<root>/LOCK`, open `meta.redb` with its
    /// integrity checked and its schema migrated, then empty `<root>/tmp`.
    ///
    /// # Errors
    /// - [`crate::Error::StoreBusy`] with the holder's pid when another `Store` holds the root;
    /// - [`crate::Error::DatabaseDamaged`] naming `meta.redb` when it is damaged (nothing is
    ///   changed on disk in that case);
    /// - [`crate::Error::SchemaTooNew`], [`crate::Error::Io`].
    pub fn open(root: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let layout = Layout::new(root.as_ref());
        fsutil::create_dir_all(layout.root())?;
        let lock = StoreLock::acquire(layout.root())?;
        for dir in [layout.ingest_root(), layout.snapshots(), layout.tmp()] {
            fsutil::create_dir_all(&dir)?;
        }
        for alg in Algorithm::ALL {
            fsutil::create_dir_all(&layout.blob_dir(alg))?;
        }
        let db = Db::open(&layout.meta(), options.cache_size)?;
        fsutil::empty_dir(&layout.tmp())?;
        Ok(Store {
            inner: Arc::new(Inner {
                layout,
                db,
                options,
                open_writers: Mutex::new(HashMap::new()),
                blob_files: RwLock::new(()),
                ids: Mutex::new((0, 0)),
                _lock: lock,
            }),
        })
    }

    /// The paths of this store.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Namespaces: create, list, label, delete.
    pub fn namespaces(&self) -> Namespaces<'_> {
        Namespaces { store: self }
    }

    /// The content store: blobs and ingests.
    pub fn content(&self) -> ContentStore<'_> {
        ContentStore { store: self }
    }

    /// Image records.
    pub fn images(&self) -> Images<'_> {
        Images { store: self }
    }

    /// Leases and their resources.
    pub fn leases(&self) -> Leases<'_> {
        Leases { store: self }
    }

    /// Container records.
    pub fn containers(&self) -> Containers<'_> {
        Containers { store: self }
    }

    /// The metadata database, for strata's sibling crates (snapshots, GC) that keep their
    /// records in it. Writers must follow the durability protocol of `docs/design.md`: data
    /// durable first, then the transaction that names it.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// A new store-wide id for an on-disk object (an ingest or snapshot directory). Ids are
    /// never reused; they are reserved from the database sequence in blocks, so most calls
    /// cost no transaction, and a crash only skips the unused rest of a block.
    pub fn allocate_id(&self) -> Result<u64> {
        const BLOCK: u64 = 64;
        let mut ids = self
            .inner
            .ids
            .lock()
            .map_err(|_| crate::Error::Unavailable("id allocator lock poisoned".into()))?;
        if ids.0 == ids.1 {
            let first = crate::db::reserve_ids(&self.inner.db, BLOCK)?;
            *ids = (first, first + BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// `<root>/snapshots/<snapshotter>`.
    pub fn snapshot_root(&self, snapshotter: &str) -> PathBuf {
        self.inner.layout.snapshots().join(snapshotter)
    }
}
