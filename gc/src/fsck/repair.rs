//! The `repair` phase: applies the plan the checks made, without deleting anything. Records
//! go before files, as in every deletion: one write transaction under the blob-file lock
//! re-checks each fix against the records as they are now and removes or adds the records,
//! `records.json` lists them durably before it commits, and only then are files moved into
//! the quarantine directory. A crash therefore leaves orphans, never a record without its
//! data.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use redb::ReadableTable;
use strata_snapshotter::gc as sgc;
use strata_store::db::{BLOBS, LEASE_RESOURCES, LEASES, SNAPSHOT_CHILDREN};

use super::json::Json;
use super::plan::{Action, Planned};
use super::quarantine::{make_quarantine, quarantine_move, write_durable};
use super::record_fixes::{
    remove_blob_record, remove_blob_records, remove_missing_snapshot, still_phantom,
};
use super::records::recorded_digests;
use super::records_json::{RecordLog, child_json};
use super::run::{Run, db_err, exists};
use crate::Result;

impl Run<'_, '_> {
    /// Notes what the repair of `problem` did: sets `repaired` and appends `; repair: <note>`
    /// to its detail (nothing when `note` is empty).
    fn mark(&mut self, problem: usize, repaired: bool, note: &str) {
        self.settled.insert(problem);
        if let Some(p) = self.report.problems.get_mut(problem) {
            p.repaired = repaired;
            if !note.is_empty() {
                p.detail = format!("{}; repair: {note}", p.detail);
            }
        }
    }

    /// Applies the plan. Order: unmount; then, holding the blob-file lock, one write
    /// transaction removes (or adds) records, after `records.json` lists them durably; after
    /// its commit the files are moved (records go before files, as in every deletion, so a
    /// crash leaves orphans, never a record without its data); last the orphan directories.
    pub(super) fn repair(&mut self) {
        let mut plan = std::mem::take(&mut self.plan);
        plan.sort_by_key(|p| p.action.rank());
        let total = plan.len() as u64;
        self.tick("repair", 0, total);

        let mut in_txn = Vec::new();
        let mut dirs = Vec::new();
        for p in plan {
            match p.action {
                Action::Unmount(path) => match strata_snapshotter::backend::mount::unmount(&path) {
                    Ok(()) => self.mark(p.problem, true, "unmounted"),
                    Err(e) => self.mark(p.problem, false, &format!("failed: {e}")),
                },
                Action::OrphanDir { path, rel } => dirs.push((p.problem, path, rel)),
                action => in_txn.push(Planned {
                    problem: p.problem,
                    action,
                }),
            }
        }
        let needs_quarantine = !dirs.is_empty() || !in_txn.is_empty();
        let quarantine = if needs_quarantine {
            match make_quarantine(self.store.layout().root()) {
                Ok(q) => Some(q),
                Err(e) => {
                    let note = format!("failed: cannot create the quarantine directory: {e}");
                    for problem in in_txn
                        .iter()
                        .map(|p| p.problem)
                        .chain(dirs.iter().map(|d| d.0))
                    {
                        self.mark(problem, false, &note);
                    }
                    None
                }
            }
        } else {
            None
        };
        let Some(q) = quarantine else {
            self.tick("repair", total, total);
            return;
        };
        self.report.quarantine = Some(q.clone());

        if !in_txn.is_empty() {
            let pending: Vec<usize> = in_txn.iter().map(|p| p.problem).collect();
            if let Err(e) = self.repair_records(&q, in_txn) {
                let note = format!("failed: {e}");
                for problem in pending {
                    if !self.settled.contains(&problem) {
                        self.mark(problem, false, &note);
                    }
                }
            }
        }
        for (problem, path, rel) in dirs {
            if !exists(&path) {
                self.mark(problem, true, "gone meanwhile");
                continue;
            }
            match quarantine_move(&path, &q.join(&rel)) {
                Ok(()) => self.mark(
                    problem,
                    true,
                    &format!("moved to {}", q.join(&rel).display()),
                ),
                Err(e) => self.mark(problem, false, &format!("failed: {e}")),
            }
        }
        self.tick("repair", total, total);
        // Leave no empty quarantine behind when nothing needed one after all.
        let _ = fs::remove_dir(&q);
        if !q.exists() {
            self.report.quarantine = None;
        }
    }

    /// The blob and record repairs: one write transaction under the blob-file lock, then the
    /// blob file moves.
    fn repair_records(&mut self, q: &Path, actions: Vec<Planned>) -> Result<()> {
        let store = self.store;
        let _files = store.blob_files_exclusive()?;
        let txn = store.db().write()?;
        let recorded = recorded_digests(&txn.open_table(BLOBS).map_err(db_err)?)?;
        let mut log = RecordLog::default();
        // (problem, note) settled in the transaction; applied once it commits.
        let mut settled: Vec<(usize, bool, String)> = Vec::new();
        // Files to move after the commit.
        let mut moves: Vec<Move> = Vec::new();

        for p in actions {
            let problem = p.problem;
            match p.action {
                Action::CorruptBlob {
                    digest,
                    path,
                    inode,
                } => {
                    let now = fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
                    if now.ok() != Some(inode) {
                        self.mark(
                            problem,
                            false,
                            "the file changed while checking; run fsck again",
                        );
                        continue;
                    }
                    let n = remove_blob_records(&txn, &digest.to_string(), &mut log)?;
                    let to = q
                        .join("blobs")
                        .join(digest.algorithm().name())
                        .join(digest.hex());
                    moves.push(Move {
                        problem,
                        from: path,
                        to,
                        records: Some(n),
                    });
                }
                Action::BlobRecord { ns, digest } => {
                    if remove_blob_record(&txn, &ns, &digest, &mut log)? {
                        settled.push((problem, true, "removed the record (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the record changed meanwhile");
                    }
                }
                Action::OrphanBlob { alg, name, path } => {
                    if recorded.contains(&format!("{}:{name}", alg.name())) {
                        self.mark(problem, false, "a record names it now; left in place");
                        continue;
                    }
                    let to = q.join("blobs").join(alg.name()).join(&name);
                    moves.push(Move {
                        problem,
                        from: path,
                        to,
                        records: None,
                    });
                }
                Action::PhantomChild(row) => {
                    if still_phantom(&txn, &row)? {
                        txn.open_table(SNAPSHOT_CHILDREN)
                            .map_err(db_err)?
                            .remove((
                                row.ns.as_str(),
                                row.sn.as_str(),
                                row.parent.as_str(),
                                row.child.as_str(),
                            ))
                            .map_err(db_err)?;
                        log.removed.push(child_json(&row));
                        settled.push((problem, true, "removed the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the row changed meanwhile");
                    }
                }
                Action::AddChildLink(row) => {
                    let child = sgc::current_snapshot(&txn, &row.ns, &row.sn, &row.child)?;
                    let parent = sgc::current_snapshot(&txn, &row.ns, &row.sn, &row.parent)?;
                    if parent.is_some()
                        && child.is_some_and(|c| c.parent.as_ref() == Some(&row.parent))
                    {
                        txn.open_table(SNAPSHOT_CHILDREN)
                            .map_err(db_err)?
                            .insert(
                                (
                                    row.ns.as_str(),
                                    row.sn.as_str(),
                                    row.parent.as_str(),
                                    row.child.as_str(),
                                ),
                                (),
                            )
                            .map_err(db_err)?;
                        log.added.push(child_json(&row));
                        settled.push((problem, true, "added the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the records changed meanwhile");
                    }
                }
                Action::LeaseResource(row) => {
                    let lease = txn
                        .open_table(LEASES)
                        .map_err(db_err)?
                        .get((row.ns.as_str(), row.lease.as_str()))
                        .map_err(db_err)?
                        .is_some();
                    let removed = !lease
                        && txn
                            .open_table(LEASE_RESOURCES)
                            .map_err(db_err)?
                            .remove((
                                row.ns.as_str(),
                                row.lease.as_str(),
                                row.kind.as_str(),
                                row.id.as_str(),
                            ))
                            .map_err(db_err)?
                            .is_some();
                    if removed {
                        log.removed.push(Json::obj(vec![
                            ("table", Json::str("lease_resources")),
                            ("namespace", Json::str(&row.ns)),
                            ("lease", Json::str(&row.lease)),
                            ("type", Json::str(&row.kind)),
                            ("id", Json::str(&row.id)),
                        ]));
                        settled.push((problem, true, "removed the row (records.json)".into()));
                    } else {
                        self.mark(problem, false, "the lease or row changed meanwhile");
                    }
                }
                Action::MissingSnapshot { ns, sn, key, id } => {
                    let note = remove_missing_snapshot(store, &txn, &ns, &sn, &key, id, &mut log)?;
                    match note {
                        Ok(n) => settled.push((problem, true, n)),
                        Err(n) => self.mark(problem, false, &n),
                    }
                }
                Action::Unmount(_) | Action::OrphanDir { .. } => {}
            }
        }

        let changed = !log.removed.is_empty() || !log.added.is_empty();
        let mut committed = !changed;
        if changed {
            // Durable before the commit: a crash after it must not lose what was removed.
            let records = q.join("records.json");
            match write_durable(&records, log.render().as_bytes()) {
                Err(e) => {
                    txn.abort()?;
                    let note = format!("failed: cannot write {}: {e}", records.display());
                    for (problem, _, _) in &settled {
                        self.mark(*problem, false, &note);
                    }
                    settled.clear();
                }
                Ok(()) => match txn.commit() {
                    Ok(()) => committed = true,
                    Err(e) => {
                        let _ = fs::remove_file(&records);
                        let note = format!("failed: commit: {e}");
                        for (problem, _, _) in &settled {
                            self.mark(*problem, false, &note);
                        }
                        settled.clear();
                    }
                },
            }
        } else {
            txn.abort()?;
        }

        for (problem, done, note) in settled {
            self.mark(problem, done, &note);
        }
        for m in moves {
            if m.records.is_some() && !committed {
                // Its records are still there: moving the file would leave them without data.
                continue;
            }
            let removed = m
                .records
                .map(|n| format!("removed {n} record(s) (records.json); "))
                .unwrap_or_default();
            match quarantine_move(&m.from, &m.to) {
                Ok(()) => {
                    let note = format!("{removed}moved to {}", m.to.display());
                    self.mark(m.problem, true, &note);
                }
                Err(e) => {
                    let note = format!("{removed}moving the file failed: {e}");
                    self.mark(m.problem, false, &note);
                }
            }
        }
        Ok(())
    }
}

/// A file a repair moves into quarantine once the repair transaction has committed.
#[derive(Debug)]
struct Move {
    problem: usize,
    from: PathBuf,
    to: PathBuf,
    /// For a corrupt blob, how many records were removed (it moves only if they were).
    records: Option<usize>,
}
