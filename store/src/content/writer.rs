//! [`Writer`]: one resumable ingest, from open to commit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BLOBS_TABLE, BlobRecord, INGESTS_TABLE, IngestRecord};
use crate::db::{self, BLOBS, INGESTS};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::identifiers::validate_labels;
use crate::object::{Kind, Node};
use crate::store::{Scope, Store};
use crate::timestamp::Timestamp;
use crate::{failpoint, fsutil, leases, namespaces};
use redb::ReadableTable;

/// What a writer expects to receive.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// The digest the content must have. Also picks the hash algorithm (default sha256).
    pub expected: Option<Digest>,
    /// The total size, 0 when unknown.
    pub total: u64,
}

/// Removes the ref from the open-writer set when the writer goes away, however it goes.
#[derive(Debug)]
struct OpenGuard {
    store: Store,
    key: (String, String),
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.store.inner.open_writers.lock() {
            open.remove(&self.key);
        }
    }
}

pub(crate) fn is_open(store: &Store, namespace: &str, reference: &str) -> bool {
    store
        .inner
        .open_writers
        .lock()
        .map(|open| open.contains_key(&(namespace.to_owned(), reference.to_owned())))
        .unwrap_or(true)
}

pub(crate) fn timestamp_of(t: SystemTime) -> Timestamp {
    t.duration_since(UNIX_EPOCH)
        .map(|d| Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
        .unwrap_or_default()
}

/// Where the writer's bytes are.
#[derive(Debug)]
enum Data {
    /// In `content/ingest/<id>/data`, open for appending.
    File(File),
    /// Nowhere yet: the blob is already on disk (committed by another namespace) and a commit
    /// without writes only adds this namespace's record. The first write copies it into a real
    /// ingest first.
    Shared { digest: Digest, size: u64 },
}

/// An open ingest. Write bytes, then [`Writer::commit`]; dropping it (or [`Writer::close`])
/// keeps the ingest for a later writer to resume.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    scope: Scope,
    reference: String,
    id: u64,
    data: Data,
    hasher: Hasher,
    offset: u64,
    total: u64,
    expected: Option<Digest>,
    started_at: Timestamp,
    /// Last write or truncate by this writer; for a resumed ingest, the data file's mtime
    /// until then. Kept in memory (as containerd does) because file times come from the
    /// kernel's coarse clock and may read earlier than the write that set them.
    updated_at: Timestamp,
    _guard: OpenGuard,
}

impl Writer {
    pub(crate) fn open(
        store: &Store,
        scope: &Scope,
        reference: &str,
        options: WriterOptions,
    ) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "ingest ref must not be empty".into(),
            ));
        }
        let ns = scope.namespace();
        let guard = lock_ref(store, ns, reference)?;
        let txn = store.db().write()?;
        if let Some(expected) = &options.expected {
            let key = expected.to_string();
            if txn.open_table(BLOBS)?.get((ns, key.as_str()))?.is_some() {
                leases::attach(&txn, scope, "content", &key)?;
                txn.commit()?;
                return Err(Error::already_exists("blob", key));
            }
        }
        let existing: Option<IngestRecord> =
            db::get(&txn.open_table(INGESTS)?, INGESTS_TABLE, ns, reference)?;
        let now = Timestamp::now();
        let mut record = match existing {
            Some(mut r) => {
                if r.expected.is_none() {
                    r.expected.clone_from(&options.expected);
                }
                if r.total == 0 {
                    r.total = options.total;
                }
                r
            }
            None => {
                namespaces::ensure(&txn, ns)?;
                IngestRecord {
                    id: db::next_id(&txn)?,
                    expected: options.expected.clone(),
                    total: options.total,
                    started_at: now,
                    expires_at: None,
                }
            }
        };
        // On every open, new or resumed: a lease in the scope takes the ingest (and must
        // exist); without one the ingest expires `ingest_expiry` after this open.
        record.expires_at = scope
            .lease()
            .is_none()
            .then(|| now.plus(store.inner.options.ingest_expiry));
        leases::attach(&txn, scope, "ingests", reference)?;
        db::put(
            &mut txn.open_table(INGESTS)?,
            INGESTS_TABLE,
            ns,
            reference,
            &record,
        )?;
        txn.touch(Node::new(Kind::Ingest, ns, reference));
        if let Some(at) = record.expires_at {
            txn.expires(at);
        }
        txn.commit()?;
        failpoint!("content.writer.after_record");

        let algorithm = record
            .expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let dir = store.layout().ingest_dir(record.id);
        let data_path = dir.join("data");
        let mut writer = Writer {
            store: store.clone(),
            scope: scope.clone(),
            reference: reference.to_owned(),
            id: record.id,
            data: Data::Shared {
                digest: Digest::of(algorithm, b""),
                size: 0,
            },
            hasher: algorithm.hasher(),
            offset: 0,
            total: record.total,
            expected: record.expected.clone(),
            started_at: record.started_at,
            updated_at: record.started_at,
            _guard: guard,
        };
        if !data_path.exists()
            && let Some((digest, size)) =
                shareable_blob(store, writer.expected.as_ref(), writer.total, true)?
        {
            writer.offset = size;
            writer.total = size;
            writer.data = Data::Shared { digest, size };
            return Ok(writer);
        }
        fsutil::create_dir(&dir)?;
        // A crash between a commit's chmod and its rename leaves a read-only `data`; it is
        // still this ingest's bytes, so make it writable again before resuming.
        fsutil::make_writable(&data_path)?;
        let mut file = fsutil::open_append(&data_path)?;
        // Resume: the bytes on disk are the ingest so far; rebuild the hash from them.
        let mut hasher = algorithm.hasher();
        writer.offset = fsutil::read_chunks(&mut file, &data_path, |chunk| hasher.update(chunk))?;
        writer.hasher = hasher;
        writer.updated_at = file
            .metadata()
            .and_then(|m| m.modified())
            .map_or(writer.started_at, timestamp_of);
        writer.data = Data::File(file);
        Ok(writer)
    }

    fn data_path(&self) -> PathBuf {
        self.store.layout().ingest_dir(self.id).join("data")
    }

    /// Turns a shared writer into a real ingest holding a copy of the blob so far.
    fn materialize(&mut self) -> Result<&mut File> {
        if let Data::Shared { digest, size } = &self.data {
            let (digest, size) = (digest.clone(), *size);
            let dir = self.store.layout().ingest_dir(self.id);
            fsutil::create_dir(&dir)?;
            let path = self.data_path();
            let mut file = fsutil::open_append(&path)?;
            file.set_len(0)
                .map_err(|e| Error::io("truncate", &path, e))?;
            self.hasher = self.hasher.algorithm().hasher();
            self.offset = 0;
            if size > 0 {
                let src = self.store.layout().blob(&digest);
                let mut blob = fsutil::open_read(&src)?
                    .ok_or_else(|| Error::not_found("blob file", src.display().to_string()))?;
                let hasher = &mut self.hasher;
                let mut write_err = None;
                self.offset = fsutil::read_chunks(&mut blob, &src, |chunk| {
                    hasher.update(chunk);
                    if write_err.is_none() {
                        write_err = file.write_all(chunk).err();
                    }
                })?;
                if let Some(e) = write_err {
                    return Err(Error::io("write", &path, e));
                }
            }
            self.data = Data::File(file);
        }
        match &mut self.data {
            Data::File(f) => Ok(f),
            Data::Shared { .. } => Err(Error::FailedPrecondition("ingest data unavailable".into())),
        }
    }

    /// The ref being written.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The digest of the bytes so far.
    pub fn digest(&self) -> Digest {
        match &self.data {
            Data::Shared { digest, .. } => digest.clone(),
            Data::File(_) => self.hasher.current(),
        }
    }

    /// Offset, totals and times of this ingest.
    pub fn status(&self) -> super::IngestStatus {
        let updated_at = self.updated_at;
        super::IngestStatus {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at,
        }
    }

    /// Discards the bytes written so far. Only `size == 0` is supported.
    ///
    /// # Errors
    /// InvalidArgument for another size; Io.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        if size != 0 {
            return Err(Error::InvalidArgument(format!(
                "ingest {:?}: only truncation to 0 is supported",
                self.reference
            )));
        }
        if let Data::Shared { .. } = self.data {
            self.data = Data::Shared {
                digest: Digest::of(self.hasher.algorithm(), b""),
                size: 0,
            };
        }
        let path = self.data_path();
        let file = self.materialize()?;
        file.set_len(0)
            .map_err(|e| Error::io("truncate", &path, e))?;
        self.hasher = self.hasher.algorithm().hasher();
        self.offset = 0;
        self.updated_at = Timestamp::now();
        Ok(())
    }

    /// Closes the writer, keeping the ingest to resume later (same as dropping it).
    pub fn close(self) {}

    /// Commits the bytes as a blob of the scope's namespace, with `labels`.
    ///
    /// `size` 0 and `expected` `None` mean "not checked". The ingest's bytes are synced and
    /// published before the record (see the module docs of [`crate::content`]).
    ///
    /// # Errors
    /// - FailedPrecondition when the size or digest differs; the ingest is kept, so a later
    ///   writer can resume it and commit again;
    /// - AlreadyExists when this namespace has the blob already; the ingest is removed;
    /// - InvalidArgument for a bad label (nothing changes);
    /// - Io: when the data cannot be synced, the ingest is emptied so a retry re-sends every
    ///   byte instead of trusting what may not be on disk.
    pub fn commit(
        mut self,
        size: u64,
        expected: Option<&Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let labels = validate_labels(labels)?;
        let digest = self.final_digest(expected)?;
        let actual = self.offset;
        if size > 0 && size != actual {
            return Err(Error::FailedPrecondition(format!(
                "ingest {:?}: commit size {size} does not match the {actual} bytes written",
                self.reference
            )));
        }
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::FailedPrecondition(format!(
                "ingest {:?}: unexpected commit digest {digest}, expected {expected}",
                self.reference
            )));
        }
        let store = self.store.clone();
        let ns = self.scope.namespace().to_owned();
        let key = digest.to_string();
        // Held until the record is committed: GC's blob cleanup takes it exclusively, so the
        // file cannot vanish between publishing it and recording it.
        let _files = store
            .inner
            .blob_files
            .read()
            .map_err(|_| Error::Unavailable("blob file lock poisoned".into()))?;
        if db::exists(&store.db().read()?.open_table(BLOBS)?, &ns, &key)? {
            self.discard_ingest(&key)?;
            return Err(Error::already_exists("blob", key));
        }
        if let Data::Shared { digest, size } = &self.data {
            // Adopting a file that is already published: it must still be there now that the
            // lock keeps the sweep out.
            let path = store.layout().blob(digest);
            if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(*size) {
                return Err(Error::FailedPrecondition(format!(
                    "ingest {:?}: blob {digest} is no longer on disk; write its bytes instead",
                    self.reference
                )));
            }
        }
        if let Data::File(file) = &self.data {
            let path = self.data_path();
            fsutil::make_read_only(file, &path)?;
            if let Err(e) = fsutil::sync_file(file, &path) {
                // After a failed fsync the page cache may hold bytes the disk lost: drop them
                // all so the retry writes and syncs again.
                let _ = file.set_len(0);
                return Err(e);
            }
            failpoint!("content.commit.before_rename");
            let target = store.layout().blob(&digest);
            std::fs::rename(&path, &target).map_err(|e| Error::io("rename", &path, e))?;
            failpoint!("content.commit.after_rename");
            fsutil::sync_dir(&store.layout().blob_dir(digest.algorithm()))?;
            failpoint!("content.commit.after_dir_sync");
        }
        let txn = store.db().write()?;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            if db::exists(&blobs, &ns, &key)? {
                drop(blobs);
                txn.abort()?;
                self.discard_ingest(&key)?;
                return Err(Error::already_exists("blob", key));
            }
            let now = Timestamp::now();
            let rec = BlobRecord {
                size: actual,
                created_at: now,
                updated_at: now,
                labels,
            };
            db::put(&mut blobs, BLOBS_TABLE, &ns, &key, &rec)?;
        }
        txn.touch(Node::new(Kind::Content, &ns, &key));
        namespaces::ensure(&txn, &ns)?;
        txn.open_table(INGESTS)?
            .remove((ns.as_str(), self.reference.as_str()))?;
        leases::detach(&txn, &self.scope, "ingests", &self.reference)?;
        leases::attach(&txn, &self.scope, "content", &key)?;
        txn.commit()?;
        failpoint!("content.commit.after_db");
        // The directory is empty now; if this fails it is an orphan for reconcile.
        if let Err(e) = fsutil::remove_dir_all(&store.layout().ingest_dir(self.id)) {
            tracing::warn!(error = %e, "leftover ingest directory");
        }
        Ok(digest)
    }

    /// The digest to commit under: the running hash, or a re-hash when `expected` uses
    /// another algorithm than the writer was opened with.
    fn final_digest(&mut self, expected: Option<&Digest>) -> Result<Digest> {
        let current = self.digest();
        match expected {
            Some(e) if e.algorithm() != current.algorithm() => {
                let path = self.data_path();
                let mut h = e.algorithm().hasher();
                match &self.data {
                    Data::Shared { .. } => Ok(current),
                    Data::File(_) => {
                        let mut f = fsutil::open_read(&path)?.ok_or_else(|| {
                            Error::not_found("ingest data", path.display().to_string())
                        })?;
                        fsutil::read_chunks(&mut f, &path, |c| h.update(c))?;
                        Ok(h.finish())
                    }
                }
            }
            _ => Ok(current),
        }
    }

    /// Deletes the ingest record and directory (the blob exists already).
    /// Deletes the ingest record and directory because the namespace has the blob already;
    /// the scope's lease takes the blob instead, as it would have after a commit.
    fn discard_ingest(&self, key: &str) -> Result<()> {
        let txn = self.store.db().write()?;
        txn.open_table(INGESTS)?
            .remove((self.scope.namespace(), self.reference.as_str()))?;
        leases::detach(&txn, &self.scope, "ingests", &self.reference)?;
        leases::attach(&txn, &self.scope, "content", key)?;
        txn.commit()?;
        fsutil::remove_dir_all(&self.store.layout().ingest_dir(self.id))
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let file = self.materialize().map_err(io::Error::other)?;
        let n = file.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.offset += n as u64;
        self.updated_at = Timestamp::now();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.data {
            Data::File(f) => f.flush(),
            Data::Shared { .. } => Ok(()),
        }
    }
}

/// The expected blob, if it is already on disk with the expected size (0 = any): a writer for
/// it starts complete, as containerd's shared writer does.
///
/// A blob some namespace records is trusted as it is. A file no record names is an orphan
/// (say, from a crash between a commit's rename and its transaction): it is adopted only when
/// `verify_orphan` is set and re-hashing it gives its name.
pub(crate) fn shareable_blob(
    store: &Store,
    expected: Option<&Digest>,
    total: u64,
    verify_orphan: bool,
) -> Result<Option<(Digest, u64)>> {
    let Some(expected) = expected else {
        return Ok(None);
    };
    let path = store.layout().blob(expected);
    let size = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && (total == 0 || m.len() == total) => m.len(),
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if recorded_anywhere(store, expected)? {
        return Ok(Some((expected.clone(), size)));
    }
    if !verify_orphan {
        return Ok(None);
    }
    let Some(mut file) = fsutil::open_read(&path)? else {
        return Ok(None);
    };
    let mut h = expected.algorithm().hasher();
    let len = fsutil::read_chunks(&mut file, &path, |c| h.update(c))?;
    Ok((len == size && h.finish() == *expected).then(|| (expected.clone(), size)))
}

/// Whether any namespace records `digest`.
fn recorded_anywhere(store: &Store, digest: &Digest) -> Result<bool> {
    let txn = store.db().read()?;
    let blobs = txn.open_table(BLOBS)?;
    let key = digest.to_string();
    for ns in txn.open_table(crate::db::NAMESPACES)?.iter()? {
        if db::exists(&blobs, ns?.0.value(), &key)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lock_ref(store: &Store, namespace: &str, reference: &str) -> Result<OpenGuard> {
    let key = (namespace.to_owned(), reference.to_owned());
    let mut open = store
        .inner
        .open_writers
        .lock()
        .map_err(|_| Error::Unavailable("writer table lock poisoned".into()))?;
    if let Some(since) = open.get(&key) {
        return Err(Error::Unavailable(format!(
            "ref {reference:?} locked for writing since {since}"
        )));
    }
    open.insert(key.clone(), Timestamp::now());
    Ok(OpenGuard {
        store: store.clone(),
        key,
    })
}
