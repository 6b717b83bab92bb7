//! [`Store`]: one root directory, its lock, its database, and the per-area handles.

use std::collections::{HashMap, HashSet};
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
    /// Ids reserved from the database sequence, and those handed out whose record is not
    /// committed yet.
    ids: Mutex<IdState>,
    /// Held by a collection or a repair for its whole run, so two never overlap.
    maintenance: Mutex<()>,
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
                ids: Mutex::new(IdState::default()),
                maintenance: Mutex::new(()),
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

    /// A new store-wide id for an on-disk object built before its record (a snapshot
    /// directory). Ids are never reused; they are reserved from the database sequence in
    /// blocks, so most calls cost no transaction, and a crash only skips the unused rest of a
    /// block.
    ///
    /// The id is *in flight* until the returned guard drops: the creator drops it once the
    /// record naming the directory has committed, or the directory is gone. The collector
    /// never removes the directory of an id in flight (see [`Store::watch_ids`]).
    pub fn allocate_id(&self) -> Result<InFlightId> {
        const BLOCK: u64 = 64;
        let mut ids = self.id_state()?;
        if ids.next == ids.end {
            let first = crate::db::reserve_ids(&self.inner.db, BLOCK)?;
            ids.next = first;
            ids.end = first + BLOCK;
        }
        let id = ids.next;
        ids.next += 1;
        ids.live.insert(id);
        if let Some(w) = ids.watch.as_mut() {
            w.insert(id);
        }
        Ok(InFlightId {
            store: self.clone(),
            id,
        })
    }

    /// Starts watching ids: what [`Store::end_watch`] returns will hold every id in flight
    /// now and every id allocated until then. A directory listed after this call whose id is
    /// neither recorded (in a read transaction begun after the listing) nor watched is garbage:
    /// its creator finished before the watch began, so its record would be visible.
    ///
    /// # Errors
    /// Unavailable while another watch runs (hold [`Store::maintenance`] around it).
    pub fn watch_ids(&self) -> Result<()> {
        let mut ids = self.id_state()?;
        if ids.watch.is_some() {
            return Err(crate::Error::Unavailable(
                "another maintenance pass is watching ids".into(),
            ));
        }
        ids.watch = Some(ids.live.clone());
        Ok(())
    }

    /// Ends the watch [`Store::watch_ids`] began; returns the watched ids.
    pub fn end_watch(&self) -> Result<HashSet<u64>> {
        Ok(self.id_state()?.watch.take().unwrap_or_default())
    }

    /// The lock a collection or repair holds for its whole run, so passes never overlap.
    ///
    /// # Errors
    /// Unavailable when a previous holder panicked.
    pub fn maintenance(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.inner
            .maintenance
            .lock()
            .map_err(|_| crate::Error::Unavailable("maintenance lock poisoned".into()))
    }

    /// Shared by blob commits, exclusive while blob files are removed: hold the write side
    /// while checking that no record names a file and removing it.
    ///
    /// # Errors
    /// Unavailable when a previous holder panicked.
    pub fn blob_files_exclusive(&self) -> Result<std::sync::RwLockWriteGuard<'_, ()>> {
        self.inner
            .blob_files
            .write()
            .map_err(|_| crate::Error::Unavailable("blob file lock poisoned".into()))
    }

    fn id_state(&self) -> Result<std::sync::MutexGuard<'_, IdState>> {
        self.inner
            .ids
            .lock()
            .map_err(|_| crate::Error::Unavailable("id allocator lock poisoned".into()))
    }

    /// Compacts `meta.redb` and returns its sizes before and after. Takes the store by value:
    /// compaction needs the database to itself.
    ///
    /// # Errors
    /// Unavailable while another handle to this store is alive (a clone, a snapshotter);
    /// database and I/O errors.
    pub fn compact(self) -> Result<crate::db::Compaction> {
        let mut inner = Arc::try_unwrap(self.inner).map_err(|_| {
            crate::Error::Unavailable(
                "cannot compact while other handles to the store are open".into(),
            )
        })?;
        let path = inner.layout.meta();
        let size = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| crate::Error::io("stat", p, e))
        };
        let before = size(&path)?;
        inner.db.compact()?;
        // Closing writes the final header: measure after it.
        drop(inner);
        let after = size(&path)?;
        Ok(crate::db::Compaction { before, after })
    }

    /// `<root>/snapshots/<snapshotter>`.
    pub fn snapshot_root(&self, snapshotter: &str) -> PathBuf {
        self.inner.layout.snapshots().join(snapshotter)
    }
}

/// Ids reserved (`next..end`), in flight (`live`), and watched by a maintenance pass.
#[derive(Debug, Default)]
struct IdState {
    next: u64,
    end: u64,
    live: HashSet<u64>,
    watch: Option<HashSet<u64>>,
}

/// An id whose directory may exist before its record: in flight until dropped.
#[derive(Debug)]
pub struct InFlightId {
    store: Store,
    id: u64,
}

impl InFlightId {
    /// The id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for InFlightId {
    fn drop(&mut self) {
        // A poisoned lock only means another thread panicked; the set itself is still valid.
        let mut ids = match self.store.inner.ids.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        ids.live.remove(&self.id);
    }
}
