//! `meta.redb`: the tables, opening with an integrity check, the schema version, and typed
//! record access.
//!
//! Every record table maps a `(namespace, name)` key to `[version byte] ++ postcard` bytes
//! (see [`crate::codec`]); `docs/format.md` lists every table, key and value.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::object::Node;

/// Schema version this build writes. Older files are migrated at open in one transaction.
pub const SCHEMA_VERSION: u32 = 2;

/// The schema's history: step `n` brings a version `n - 1` file to version `n`. A new file runs
/// them all. Tables are created up front so read transactions can open them unconditionally.
type Migration = fn(&WriteTxn<'_>) -> Result<()>;
const MIGRATIONS: &[(u32, Migration)] = &[(1, create_v1_tables), (2, create_snapshot_tables)];

fn create_v1_tables(txn: &WriteTxn<'_>) -> Result<()> {
    txn.open_table(NAMESPACES)?;
    txn.open_table(BLOBS)?;
    txn.open_table(INGESTS)?;
    txn.open_table(IMAGES)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_RESOURCES)?;
    txn.open_table(CONTAINERS)?;
    Ok(())
}

fn create_snapshot_tables(txn: &WriteTxn<'_>) -> Result<()> {
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(SNAPSHOT_CHILDREN)?;
    Ok(())
}

/// Store-wide values: `schema_version` (u32 LE), `next_id` (u64 LE).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// namespace -> `NamespaceRecord`.
pub const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
/// (namespace, digest) -> `BlobRecord`.
pub const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blobs");
/// (namespace, ref) -> `IngestRecord`.
pub const INGESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ingests");
/// (namespace, image name) -> `ImageRecord`.
pub const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
/// (namespace, lease id) -> `LeaseRecord`.
pub const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// (namespace, lease id, resource type, resource id) -> ().
pub const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
/// (namespace, container id) -> `ContainerRecord`.
pub const CONTAINERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("containers");

/// (namespace, snapshotter, key) -> snapshot record (owned by strata-snapshotter).
pub const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("snapshots");
/// (namespace, snapshotter, parent key, child key) -> (): the children index.
pub const SNAPSHOT_CHILDREN: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("snapshot_children");

const KEY_SCHEMA_VERSION: &str = "schema_version";
const KEY_NEXT_ID: &str = "next_id";

/// A `(namespace, name)` key rendered for error messages.
#[derive(Debug)]
pub struct NsKey<'a>(pub &'a str, pub &'a str);

impl fmt::Display for NsKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// The open metadata database.
pub struct Db {
    /// `None` only while closing (see `Drop`).
    db: Option<redb::Database>,
    path: PathBuf,
    /// While a collection is marking: every object a committed write touched since the mark's
    /// read transaction began. `None` when no mark is running.
    touched: Mutex<Option<HashSet<Node>>>,
    /// Told of every commit (a GC scheduler counts mutations and deletions).
    observer: std::sync::RwLock<Option<Observer>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// File sizes around a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Compaction {
    /// Bytes before.
    pub before: u64,
    /// Bytes after.
    pub after: u64,
}

/// Called after each commit that changed something, with whether it deleted anything.
pub type Observer = std::sync::Arc<dyn Fn(Commit) + Send + Sync>;

/// What a committed write transaction did, as an [`Observer`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Objects it created or changed.
    pub touched: usize,
    /// Whether it deleted a record the collector cares about (containerd's "dirty").
    pub deletion: bool,
    /// The earliest expiry it set (a lease's or image's `gc.expire`, an unleased ingest's):
    /// a collection is due then even if nothing else is written.
    pub expires: Option<crate::Timestamp>,
}

/// A write transaction that remembers which objects it created or changed, so a collector
/// marking concurrently can keep them (see [`Db::read_tracked`]).
///
/// Derefs to redb's transaction for table access; commit and abort go through this type,
/// which is what makes the record of touched objects complete.
pub struct WriteTxn<'db> {
    txn: redb::WriteTransaction,
    db: &'db Db,
    touched: RefCell<Vec<Node>>,
    deletion: std::cell::Cell<bool>,
    expires: std::cell::Cell<Option<crate::Timestamp>>,
}

impl fmt::Debug for WriteTxn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTxn")
            .field("touched", &self.touched)
            .finish_non_exhaustive()
    }
}

impl Deref for WriteTxn<'_> {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        &self.txn
    }
}

impl WriteTxn<'_> {
    /// Records that this transaction creates or changes `node` (a record that may reference
    /// other objects, or be referenced by a lease). Every write of a blob, image, snapshot,
    /// container, ingest or lease resource calls this; deletions need not.
    pub fn touch(&self, node: Node) {
        self.touched.borrow_mut().push(node);
    }

    /// Records that this transaction deletes an object (image, blob, lease or lease
    /// resource, container, snapshot): a GC scheduler counts these.
    pub fn deleted(&self) {
        self.deletion.set(true);
    }

    /// Records that this transaction sets an expiry at `at` (see [`Commit::expires`]).
    pub fn expires(&self, at: crate::Timestamp) {
        let earliest = self.expires.get().map_or(at, |e| e.min(at));
        self.expires.set(Some(earliest));
    }

    /// Commits (`Durability::Immediate`). The touched objects are handed to a running mark
    /// before the commit, under the lock [`Db::read_tracked`] takes, so a mark either sees
    /// this transaction's effects or is told what it touched.
    ///
    /// # Errors
    /// Database errors; nothing is committed then.
    pub fn commit(self) -> Result<()> {
        let touched = self.touched.into_inner();
        let commit = Commit {
            touched: touched.len(),
            deletion: self.deletion.get(),
            expires: self.expires.get(),
        };
        let mut tracking = self.db.tracking()?;
        if let Some(set) = tracking.as_mut() {
            set.extend(touched);
        }
        self.txn.commit()?;
        drop(tracking);
        if commit.touched > 0 || commit.deletion || commit.expires.is_some() {
            self.db.notify(commit);
        }
        Ok(())
    }

    /// Abandons every change.
    ///
    /// # Errors
    /// Database errors.
    pub fn abort(self) -> Result<()> {
        Ok(self.txn.abort()?)
    }
}

impl Db {
    /// Opens (or creates) `path`, checking its integrity, then brings its schema up to
    /// [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// [`Error::DatabaseDamaged`] naming the file when its bytes are damaged or it is not a
    /// redb file (never a panic: a panic inside redb is caught and reported the same way);
    /// [`Error::SchemaTooNew`] when a newer strata wrote it.
    pub fn open(path: &Path, cache_size: usize) -> Result<Db> {
        let damaged = |detail: String| Error::DatabaseDamaged {
            path: path.to_owned(),
            detail,
        };
        crate::seal::verify_and_remove(path)?;
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(cache_size)
            .set_check_integrity_on_open(true);
        // redb documents that a file altered outside redb may make it panic; a damaged file
        // must give an error that names it, not a crash.
        let opened = catch_unwind(AssertUnwindSafe(|| builder.create(path)));
        let db = match opened {
            Err(_) => return Err(damaged("redb panicked while reading it".into())),
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(classify_open_error(path, e)),
        };
        let db = Db {
            db: Some(db),
            path: path.to_owned(),
            touched: Mutex::new(None),
            observer: std::sync::RwLock::new(None),
        };
        db.migrate()?;
        Ok(db)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a read transaction (an MVCC snapshot; never blocked by writers).
    pub fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.database()?.begin_read()?)
    }

    /// Starts the write transaction (waiting for the one running, if any). Commits are
    /// `Durability::Immediate` (redb's default).
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        Ok(WriteTxn {
            txn: self.database()?.begin_write()?,
            db: self,
            touched: RefCell::new(Vec::new()),
            deletion: std::cell::Cell::new(false),
            expires: std::cell::Cell::new(None),
        })
    }

    /// Sets (or clears) the one observer told of every commit that touched or deleted
    /// something. It runs on the committing thread, after the commit: keep it short.
    pub fn set_observer(&self, observer: Option<Observer>) {
        let mut slot = match self.observer.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *slot = observer;
    }

    fn notify(&self, commit: Commit) {
        let observer = match self.observer.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(o) = observer {
            o(commit);
        }
    }

    /// Starts a read transaction for a mark and, atomically with it, starts recording what
    /// later commits touch, until [`Db::take_touched`]. No commit can fall between the two:
    /// commits hand over their touched objects under the same lock.
    ///
    /// # Errors
    /// Unavailable while another mark is tracking; database errors.
    pub fn read_tracked(&self) -> Result<redb::ReadTransaction> {
        let mut tracking = self.tracking()?;
        if tracking.is_some() {
            return Err(Error::Unavailable(
                "another garbage collection is marking".into(),
            ));
        }
        let txn = self.read()?;
        *tracking = Some(HashSet::new());
        Ok(txn)
    }

    /// Stops recording and returns what commits touched since [`Db::read_tracked`]. Called
    /// with the sweep's write transaction open, so no other commit can still be in flight.
    pub fn take_touched(&self) -> Result<HashSet<Node>> {
        Ok(self.tracking()?.take().unwrap_or_default())
    }

    /// Compacts the file (redb rewrites live pages to the front and truncates the rest).
    /// Needs no transaction open. The file's final size is known once it is closed.
    ///
    /// # Errors
    /// Unavailable while a transaction is open; database and I/O errors.
    pub fn compact(&mut self) -> Result<()> {
        let db = self
            .db
            .as_mut()
            .ok_or(Error::Db(redb::Error::DatabaseClosed))?;
        // redb compacts in steps; each call moves what it can.
        while db.compact().map_err(|e| match e {
            redb::CompactionError::TransactionInProgress => {
                Error::Unavailable("cannot compact while a transaction is open".into())
            }
            other => Error::Db(other.into()),
        })? {}
        Ok(())
    }

    fn tracking(&self) -> Result<MutexGuard<'_, Option<HashSet<Node>>>> {
        self.touched
            .lock()
            .map_err(|_| Error::Unavailable("write tracking lock poisoned".into()))
    }

    fn database(&self) -> Result<&redb::Database> {
        self.db
            .as_ref()
            .ok_or(Error::Db(redb::Error::DatabaseClosed))
    }

    fn migrate(&self) -> Result<()> {
        let txn = self.write()?;
        let found = {
            let meta = txn.open_table(META)?;
            let v = meta.get(KEY_SCHEMA_VERSION)?;
            match v {
                None => None,
                Some(g) => Some(read_u32(g.value()).ok_or_else(|| Error::Corrupt {
                    table: "meta",
                    key: KEY_SCHEMA_VERSION.into(),
                    reason: "not a 4-byte integer".into(),
                })?),
            }
        };
        match found {
            Some(v) if v == SCHEMA_VERSION => {
                // Nothing to do: abort rather than commit, so an open costs no fsync.
                txn.abort()?;
                return Ok(());
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::SchemaTooNew {
                    path: self.path.clone(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            // Older or new: run every step above the version found, in this one transaction.
            _ => {}
        }
        let from = found.unwrap_or(0);
        for (version, step) in MIGRATIONS {
            if *version > from {
                step(&txn)?;
            }
        }
        txn.open_table(META)?
            .insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

impl Drop for Db {
    /// Closes redb (surfacing errors a plain drop would swallow) and seals the file.
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        match db.close() {
            Ok(()) => {
                if let Err(e) = crate::seal::write(&self.path) {
                    tracing::warn!(error = %e, "could not seal the metadata database");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "closing the metadata database failed")
            }
        }
    }
}

fn classify_open_error(path: &Path, e: redb::DatabaseError) -> Error {
    let damaged = |detail: String| Error::DatabaseDamaged {
        path: path.to_owned(),
        detail,
    };
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(s)) => damaged(s),
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData
                || io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            damaged(format!("not a readable redb database ({io})"))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io("open", path, io),
        redb::DatabaseError::RepairAborted => {
            damaged("repair after an unclean shutdown was aborted".into())
        }
        redb::DatabaseError::UpgradeRequired(v) => damaged(format!(
            "written in redb file format {v}, which needs an upgrade"
        )),
        redb::DatabaseError::DatabaseAlreadyOpen => Error::StoreBusy {
            root: path.to_owned(),
            pid: None,
        },
        other => Error::Db(other.into()),
    }
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(bytes).ok().map(u32::from_le_bytes)
}

/// Allocates the next store-wide id (ingest and snapshot directory names). Ids are never
/// reused, so a directory always maps back to at most one record.
pub fn next_id(txn: &WriteTxn<'_>) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let current = match meta.get(KEY_NEXT_ID)? {
        None => 1,
        Some(g) => <[u8; 8]>::try_from(g.value())
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Corrupt {
                table: "meta",
                key: KEY_NEXT_ID.into(),
                reason: "not an 8-byte integer".into(),
            })?,
    };
    meta.insert(
        KEY_NEXT_ID,
        current.saturating_add(1).to_le_bytes().as_slice(),
    )?;
    Ok(current)
}

/// Reads and decodes one `(ns, name)` record.
pub fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    name: &'static str,
    ns: &str,
    key: &str,
) -> Result<Option<T>> {
    match table.get((ns, key))? {
        None => Ok(None),
        Some(g) => codec::decode(name, &NsKey(ns, key), g.value()).map(Some),
    }
}

/// Encodes and writes one `(ns, name)` record.
pub fn put<T: Serialize>(
    table: &mut redb::Table<(&'static str, &'static str), &'static [u8]>,
    name: &'static str,
    ns: &str,
    key: &str,
    value: &T,
) -> Result<()> {
    let bytes = codec::encode(name, &NsKey(ns, key), value)?;
    table.insert((ns, key), bytes.as_slice())?;
    Ok(())
}

/// Every record of one namespace, in key order.
pub fn list<T: DeserializeOwned>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    name: &'static str,
    ns: &str,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in table.range((ns, "")..)? {
        let (k, v) = item?;
        let (kns, key) = k.value();
        if kns != ns {
            break;
        }
        out.push((
            key.to_owned(),
            codec::decode(name, &NsKey(ns, key), v.value())?,
        ));
    }
    Ok(out)
}

/// Whether `(ns, key)` has a record (without decoding it).
pub fn exists(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
    key: &str,
) -> Result<bool> {
    Ok(table.get((ns, key))?.is_some())
}

/// The keys of one namespace's records, in order (without decoding them).
pub fn keys(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in table.range((ns, "")..)? {
        let (k, _) = item?;
        let (kns, key) = k.value();
        if kns != ns {
            break;
        }
        out.push(key.to_owned());
    }
    Ok(out)
}

/// Reserves `count` consecutive store-wide ids in one transaction; returns the first.
pub fn reserve_ids(db: &Db, count: u64) -> Result<u64> {
    let txn = db.write()?;
    let first = next_id(&txn)?;
    if count > 1 {
        let mut meta = txn.open_table(META)?;
        meta.insert(
            KEY_NEXT_ID,
            first.saturating_add(count).to_le_bytes().as_slice(),
        )?;
    }
    txn.commit()?;
    Ok(first)
}

/// Whether a namespace has at least one record in `table`.
pub fn any_in_namespace(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<bool> {
    match table.range((ns, "")..)?.next() {
        None => Ok(false),
        Some(item) => Ok(item?.0.value().0 == ns),
    }
}
