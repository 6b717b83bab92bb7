//! The content store: content-addressed blobs shared on disk across namespaces, recorded
//! per namespace, and resumable ingests.
//!
//! # Durability
//! A blob becomes visible only through its record, and its record is written only after its
//! bytes are durable at their final path:
//!
//! 1. the ingest's `data` is written, made read-only and `fsync`ed;
//! 2. it is renamed to `content/blobs/<alg>/<hex>` and that directory is `fsync`ed;
//! 3. one transaction inserts the blob record and deletes the ingest record.
//!
//! A crash leaves at worst a blob file or an ingest directory that no record names (an
//! orphan), never a record whose bytes are missing or partial. Deleting a record leaves its
//! file for the garbage collector. `docs/crash-consistency.md` walks every failpoint.

mod reader;
mod writer;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{self, BLOBS, INGESTS};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_lookup};
use crate::identifiers::apply_label_path;
use crate::leases;
use crate::object::{Kind, Node};
use crate::store::{Scope, Store};
use crate::timestamp::Timestamp;
use crate::{failpoint, fsutil};
use redb::ReadableTable;

pub use reader::BlobReader;
pub use writer::{Writer, WriterOptions};

pub(crate) const BLOBS_TABLE: &str = "blobs";
pub(crate) const INGESTS_TABLE: &str = "ingests";

/// What the store knows of a committed blob in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When this namespace committed it.
    pub created_at: Timestamp,
    /// Last label update.
    pub updated_at: Timestamp,
    /// Its labels in this namespace.
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for BlobInfo {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        match path {
            ["digest"] => Some(self.digest.to_string().into()),
            ["labels", rest @ ..] => label_lookup(&self.labels, rest),
            _ => None,
        }
    }
}

/// The state of an in-flight write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestStatus {
    /// The writer's ref.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Bytes written so far (on disk, or held by this process's open writer).
    pub offset: u64,
    /// Expected total size, 0 when unknown.
    pub total: u64,
    /// Expected digest, if the writer was opened with one.
    pub expected: Option<Digest>,
    /// When the ingest began.
    pub started_at: Timestamp,
    /// Last write (the data file's mtime).
    pub updated_at: Timestamp,
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        match path {
            ["ref"] => Some(self.reference.as_str().into()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    pub(crate) size: u64,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
    pub(crate) labels: BTreeMap<String, String>,
}

/// An ingest: `content/ingest/<id>/data` holds its bytes. The record may exist before the
/// directory (a crash between the two leaves a record whose data is empty, which resumes at
/// offset 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IngestRecord {
    pub(crate) id: u64,
    pub(crate) expected: Option<Digest>,
    pub(crate) total: u64,
    pub(crate) started_at: Timestamp,
    /// Set when no lease holds the ingest: GC keeps it until then.
    pub(crate) expires_at: Option<Timestamp>,
}

fn blob_info(digest: Digest, r: BlobRecord) -> BlobInfo {
    BlobInfo {
        digest,
        size: r.size,
        created_at: r.created_at,
        updated_at: r.updated_at,
        labels: r.labels,
    }
}

/// Content operations; see [`Store::content`].
#[derive(Debug)]
pub struct ContentStore<'a> {
    pub(crate) store: &'a Store,
}

impl ContentStore<'_> {
    /// Opens a writer for `reference`, resuming an existing ingest at the bytes on disk.
    ///
    /// With `options.expected` set: if this namespace has the blob already, the scope's lease
    /// gets it and the call fails with AlreadyExists; if the blob is on disk (another
    /// namespace committed it), the writer starts complete (offset = size) and a commit
    /// without writes records it here without re-sending its bytes.
    ///
    /// # Errors
    /// InvalidArgument for an empty ref; Unavailable while another writer has the ref open;
    /// AlreadyExists as above; NotFound for a scope lease that does not exist.
    pub fn writer(&self, scope: &Scope, reference: &str, options: WriterOptions) -> Result<Writer> {
        Writer::open(self.store, scope, reference, options)
    }

    /// A blob's info in this namespace.
    ///
    /// # Errors
    /// NotFound unless this namespace has a record for it.
    pub fn info(&self, namespace: &str, digest: &Digest) -> Result<BlobInfo> {
        let txn = self.store.db().read()?;
        let key = digest.to_string();
        let r: BlobRecord = db::get(&txn.open_table(BLOBS)?, BLOBS_TABLE, namespace, &key)?
            .ok_or_else(|| Error::not_found("blob", &key))?;
        Ok(blob_info(digest.clone(), r))
    }

    /// Updates labels by field paths (`labels`, `labels.<k>`); no paths replaces them all.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for another path or an oversized label.
    pub fn update(&self, namespace: &str, info: &BlobInfo, paths: &[&str]) -> Result<BlobInfo> {
        let key = info.digest.to_string();
        let txn = self.store.db().write()?;
        let updated = {
            let mut t = txn.open_table(BLOBS)?;
            let mut r: BlobRecord = db::get(&t, BLOBS_TABLE, namespace, &key)?
                .ok_or_else(|| Error::not_found("blob", &key))?;
            if paths.is_empty() {
                apply_label_path("labels", "labels", &mut r.labels, &info.labels)?;
            }
            for path in paths {
                if !apply_label_path("labels", path, &mut r.labels, &info.labels)? {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {path:?} field on blob {key}"
                    )));
                }
            }
            r.updated_at = Timestamp::now();
            db::put(&mut t, BLOBS_TABLE, namespace, &key, &r)?;
            r
        };
        txn.touch(Node::new(Kind::Content, namespace, &key));
        txn.commit()?;
        Ok(blob_info(info.digest.clone(), updated))
    }

    /// The blobs of a namespace matching `filters` (fields `digest`, `labels.*`; several
    /// filters are OR'd), read in one transaction.
    ///
    /// # Errors
    /// InvalidArgument for a bad filter; Corrupt for an undecodable record.
    pub fn list<S: AsRef<str>>(&self, namespace: &str, filters: &[S]) -> Result<Vec<BlobInfo>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read()?;
        let mut out = Vec::new();
        for (key, r) in db::list::<BlobRecord>(&txn.open_table(BLOBS)?, BLOBS_TABLE, namespace)? {
            let digest: Digest = key.parse().map_err(|_| Error::Corrupt {
                table: BLOBS_TABLE,
                key: db::NsKey(namespace, &key).to_string(),
                reason: "key is not a digest".into(),
            })?;
            let info = blob_info(digest, r);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Opens a blob of this namespace for reading.
    ///
    /// # Errors
    /// NotFound unless this namespace records it; Corrupt when recorded but its file is
    /// missing.
    pub fn reader(&self, namespace: &str, digest: &Digest) -> Result<BlobReader> {
        let info = self.info(namespace, digest)?;
        BlobReader::open(&self.store.layout().blob(digest), digest, info.size)
    }

    /// Removes this namespace's record of a blob (and the scope lease's reference to it).
    /// The file stays until garbage collection finds no namespace using it.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&self, scope: &Scope, digest: &Digest) -> Result<()> {
        let key = digest.to_string();
        let txn = self.store.db().write()?;
        if txn
            .open_table(BLOBS)?
            .remove((scope.namespace(), key.as_str()))?
            .is_none()
        {
            return Err(Error::not_found("blob", &key));
        }
        leases::detach(&txn, scope, "content", &key)?;
        txn.deleted();
        txn.commit()?;
        failpoint!("content.delete.after_db");
        Ok(())
    }

    /// The status of one ingest, read from its record and the bytes on disk.
    ///
    /// # Errors
    /// NotFound.
    pub fn status(&self, namespace: &str, reference: &str) -> Result<IngestStatus> {
        let txn = self.store.db().read()?;
        let r: IngestRecord = db::get(
            &txn.open_table(INGESTS)?,
            INGESTS_TABLE,
            namespace,
            reference,
        )?
        .ok_or_else(|| Error::not_found("ingest", reference))?;
        Ok(self.status_of(reference, &r))
    }

    /// Every ingest of a namespace matching `filters` (field `ref`).
    pub fn list_statuses<S: AsRef<str>>(
        &self,
        namespace: &str,
        filters: &[S],
    ) -> Result<Vec<IngestStatus>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read()?;
        Ok(
            db::list::<IngestRecord>(&txn.open_table(INGESTS)?, INGESTS_TABLE, namespace)?
                .into_iter()
                .map(|(reference, r)| self.status_of(&reference, &r))
                .filter(|s| filter.matches(s))
                .collect(),
        )
    }

    fn status_of(&self, reference: &str, r: &IngestRecord) -> IngestStatus {
        let layout = self.store.layout();
        let meta = std::fs::metadata(layout.ingest_dir(r.id).join("data")).ok();
        // No bytes written yet, and the expected blob is recorded: a writer would start
        // complete (shared), so report it that way. (Orphans are not re-hashed for a status.)
        let shared = match meta {
            None => writer::shareable_blob(self.store, r.expected.as_ref(), r.total, false)
                .ok()
                .flatten(),
            Some(_) => None,
        };
        IngestStatus {
            reference: reference.to_owned(),
            offset: shared
                .as_ref()
                .map_or_else(|| meta.as_ref().map_or(0, std::fs::Metadata::len), |s| s.1),
            total: shared.as_ref().map_or(r.total, |s| s.1),
            expected: r.expected.clone(),
            started_at: r.started_at,
            updated_at: meta
                .and_then(|m| m.modified().ok())
                .map_or(r.started_at, writer::timestamp_of),
        }
    }

    /// Files under `content/` that no record names: blob files no namespace records, and
    /// ingest directories no ingest record names. A crash between publishing and recording
    /// leaves these (see `docs/crash-consistency.md`); deleting a record leaves its blob file
    /// for the garbage collector. Reconcile reclaims them; until then they are only listed.
    ///
    /// The directories are listed before the records are read, so a finished object is
    /// never reported; one whose file is in place but whose record has not committed yet is.
    /// Meant for a store nobody writes to meanwhile (tests, a stopped node); while writers
    /// run, `strata_gc::orphans` tells objects being created from orphans.
    pub fn orphans(&self) -> Result<Vec<std::path::PathBuf>> {
        let layout = self.store.layout();
        let mut listed = Vec::new();
        for alg in crate::Algorithm::ALL {
            let dir = layout.blob_dir(alg);
            for entry in
                std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?
            {
                let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
                let name = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                listed.push((true, name, entry.path()));
            }
        }
        let dir = layout.ingest_root();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            listed.push((false, name, entry.path()));
        }
        let txn = self.store.db().read()?;
        let mut blobs = std::collections::HashSet::new();
        for item in txn.open_table(BLOBS)?.iter()? {
            blobs.insert(item?.0.value().1.to_owned());
        }
        let mut ingests = std::collections::HashSet::new();
        for item in txn.open_table(INGESTS)?.iter()? {
            let (k, v) = item?;
            let (ns, reference) = k.value();
            let r: IngestRecord =
                crate::codec::decode(INGESTS_TABLE, &db::NsKey(ns, reference), v.value())?;
            ingests.insert(r.id.to_string());
        }
        drop(txn);
        let mut out: Vec<std::path::PathBuf> = listed
            .into_iter()
            .filter(|(blob, name, _)| {
                if *blob {
                    !blobs.contains(name)
                } else {
                    !ingests.contains(name)
                }
            })
            .map(|(_, _, path)| path)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Abandons an ingest: its record goes, then its directory.
    ///
    /// # Errors
    /// NotFound; Unavailable while a writer in this process has it open.
    pub fn abort(&self, scope: &Scope, reference: &str) -> Result<()> {
        let ns = scope.namespace();
        if writer::is_open(self.store, ns, reference) {
            return Err(Error::Unavailable(format!(
                "ingest {reference:?} has an open writer"
            )));
        }
        let txn = self.store.db().write()?;
        let id = {
            let mut t = txn.open_table(INGESTS)?;
            let r: IngestRecord = db::get(&t, INGESTS_TABLE, ns, reference)?
                .ok_or_else(|| Error::not_found("ingest", reference))?;
            t.remove((ns, reference))?;
            r.id
        };
        leases::detach(&txn, scope, "ingests", reference)?;
        txn.commit()?;
        failpoint!("content.abort.after_db");
        fsutil::remove_dir_all(&self.store.layout().ingest_dir(id))
    }
}
