//! The `blobs` check: every blob file a record names exists, hashes to its own name and has
//! the size every record gives it; every file under `content/blobs/<alg>/` is named by a
//! record. Blob keys are read without decoding, so a corrupt record still leaves the files
//! checked.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_store::db::BLOBS;
use strata_store::{Algorithm, Digest};

use super::listing::Entry;
use super::plan::Action;
use super::records::{Records, recorded_digests};
use super::run::{Run, db_err, exists};
use super::{ProblemKind, Progress};
use crate::Result;

/// Blob files are hashed in chunks of this size.
const CHUNK: usize = 1 << 20;

impl Run<'_, '_> {
    /// Guarantees, for the records of the read transaction: each named file exists (else
    /// `missing_data`, confirmed by a later transaction that still has the record), hashes to
    /// its name and has each record's size (else `corrupt_blob`); and each listed file that no
    /// record names, confirmed under the blob-file lock, is an `orphan`.
    pub(super) fn check_blobs(
        &mut self,
        records: &Records,
        files: &[(Algorithm, Entry)],
    ) -> Result<()> {
        let layout = self.store.layout().clone();
        // Namespaces recording each digest.
        let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        let mut recorded_names: HashSet<&str> = HashSet::new();
        for (ns, d) in &records.blob_keys {
            recorded_names.insert(d.as_str());
            match d.parse::<Digest>() {
                Ok(digest) => by_digest.entry(digest).or_default().push(ns.clone()),
                Err(e) => {
                    self.problem(
                        ProblemKind::CorruptRecord,
                        format!("record blobs {ns}/{d}"),
                        format!("key is not a digest: {e}"),
                    );
                }
            }
        }

        let mut to_hash = Vec::new();
        let mut missing = Vec::new();
        let mut total = 0u64;
        for (digest, namespaces) in &by_digest {
            let path = layout.blob(digest);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    total = total.saturating_add(m.len());
                    to_hash.push((digest, namespaces, path));
                }
                Ok(m) => self.planned(
                    ProblemKind::CorruptBlob,
                    format!("blob {digest}"),
                    format!("{} is not a regular file", path.display()),
                    Action::CorruptBlob {
                        digest: digest.clone(),
                        inode: (m.dev(), m.ino()),
                        path,
                    },
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push((digest, namespaces)),
                Err(e) => self.unreadable(&path, "stat the blob file", &e),
            }
        }

        self.tick("blobs", 0, total);
        let mut done = 0u64;
        let mut buf = vec![0u8; CHUNK];
        for (digest, namespaces, path) in to_hash {
            let mut on_chunk = |n: u64| {
                done = done.saturating_add(n);
                (self.progress)(Progress {
                    phase: "blobs",
                    done,
                    total,
                });
            };
            let hashed = hash_file(&path, digest.algorithm(), &mut buf, &mut on_chunk);
            let (actual, len, inode) = match hashed {
                Ok(h) => h,
                Err(e) => {
                    self.unreadable(&path, "read the blob file", &e);
                    continue;
                }
            };
            self.report.checked.blobs += 1;
            self.report.checked.bytes += len;
            if actual != *digest {
                self.planned(
                    ProblemKind::CorruptBlob,
                    format!("blob {digest}"),
                    format!(
                        "content hashes to {actual} ({len} bytes); recorded in namespace(s) {}",
                        namespaces.join(", ")
                    ),
                    Action::CorruptBlob {
                        digest: digest.clone(),
                        path,
                        inode,
                    },
                );
                continue;
            }
            let Some(sizes) = &records.blob_sizes else {
                continue;
            };
            for ns in namespaces {
                let key = (ns.clone(), digest.to_string());
                if let Some(&size) = sizes.get(&key)
                    && size != len
                {
                    self.planned(
                        ProblemKind::CorruptBlob,
                        format!("blob {digest} in namespace {ns}"),
                        format!(
                            "recorded size {size}, the file holds {len} bytes (and matches \
                             its digest, so the record is wrong)"
                        ),
                        Action::BlobRecord {
                            ns: ns.clone(),
                            digest: digest.to_string(),
                        },
                    );
                }
            }
        }
        self.tick("blobs", done, total);

        if !missing.is_empty() {
            // A record deleted since the transaction (its file may go with the next
            // collection) is not a problem: confirm with a transaction begun after the stat.
            let fresh = self.store.db().read()?;
            let table = fresh.open_table(BLOBS).map_err(db_err)?;
            for (digest, namespaces) in missing {
                let path = layout.blob(digest);
                let key = digest.to_string();
                let mut still = Vec::new();
                for ns in namespaces {
                    if table
                        .get((ns.as_str(), key.as_str()))
                        .map_err(db_err)?
                        .is_some()
                    {
                        still.push(ns.as_str());
                    }
                }
                if !still.is_empty() && !exists(&path) {
                    self.problem(
                        ProblemKind::MissingData,
                        format!("blob {digest}"),
                        format!(
                            "{} does not exist; recorded in namespace(s) {}; fetch the blob \
                             again to restore it",
                            path.display(),
                            still.join(", ")
                        ),
                    );
                }
            }
        }

        let candidates: Vec<&(Algorithm, Entry)> = files
            .iter()
            .filter(|(alg, e)| {
                !recorded_names.contains(format!("{}:{}", alg.name(), e.name).as_str())
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        // A commit holds the shared side of this lock from publishing its file to committing
        // its record: under the exclusive side, a fresh transaction sees every published file's
        // record.
        let _files = self.store.blob_files_exclusive()?;
        let now_recorded = {
            let fresh = self.store.db().read()?;
            let table = fresh.open_table(BLOBS).map_err(db_err)?;
            recorded_digests(&table)?
        };
        for (alg, e) in candidates {
            let name = format!("{}:{}", alg.name(), e.name);
            if now_recorded.contains(&name) || !exists(&e.path) {
                continue;
            }
            let detail = if name.parse::<Digest>().is_ok() {
                "no blob record names this file".to_owned()
            } else {
                "not a blob file name; no blob record names it".to_owned()
            };
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                detail,
                Action::OrphanBlob {
                    alg: *alg,
                    name: e.name.clone(),
                    path: e.path.clone(),
                },
            );
        }
        Ok(())
    }
}

/// Hashes `path` in chunks of `buf`'s size: `(digest, length, (dev, inode))`.
fn hash_file(
    path: &Path,
    alg: Algorithm,
    buf: &mut [u8],
    on_chunk: &mut dyn FnMut(u64),
) -> io::Result<(Digest, u64, (u64, u64))> {
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut hasher = alg.hasher();
    let mut len = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        len += n as u64;
        on_chunk(n as u64);
    }
    Ok((hasher.finish(), len, (meta.dev(), meta.ino())))
}
