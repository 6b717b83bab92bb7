//! The `ingests` check: directories under `content/ingest/` against the ingest records, and
//! each ingest's `data` against its expected total. An ingest record commits before its
//! directory is made, so a directory listed before the read transaction began has its record
//! in it unless the record was deleted.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use super::ProblemKind;
use super::listing::Entry;
use super::plan::Action;
use super::records::Records;
use super::run::{Run, exists};

impl Run<'_, '_> {
    /// Guarantees: each listed directory under `content/ingest` belongs to an ingest record of
    /// the read transaction (begun after the listing; a record is committed before its
    /// directory is made), else `orphan`; no ingest's `data` exceeds its non-zero expected
    /// total, else `corrupt_ingest`.
    pub(super) fn check_ingests(&mut self, records: &Records, dirs: &[Entry]) {
        let Some(ingests) = &records.ingests else {
            return;
        };
        let total = ingests.len() as u64;
        self.tick("ingests", 0, total);
        let layout = self.store.layout().clone();
        let mut ids = HashSet::new();
        for (i, ing) in ingests.iter().enumerate() {
            ids.insert(ing.id);
            self.report.checked.ingests += 1;
            let data = layout.ingest_dir(ing.id).join("data");
            let len = match fs::metadata(&data) {
                Ok(m) => m.len(),
                // No directory or no data yet: a writer that has not written.
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => {
                    self.unreadable(&data, "stat the ingest data", &e);
                    0
                }
            };
            if len > 0 {
                // The expected total is not part of the collector's view; the status carries it.
                match self.store.content().status(&ing.ns, &ing.reference) {
                    Ok(s) if s.total > 0 && len > s.total => {
                        self.problem(
                            ProblemKind::CorruptIngest,
                            format!("ingest {}/{} (id {})", ing.ns, ing.reference, ing.id),
                            format!(
                                "{} holds {len} bytes, more than the expected total {}; abort \
                                 the ingest",
                                data.display(),
                                s.total
                            ),
                        );
                    }
                    Ok(_) => {}
                    // Committed or aborted since the read transaction.
                    Err(e) if e.kind() == strata_store::ErrorKind::NotFound => {}
                    Err(e) => {
                        self.problem(
                            ProblemKind::Unreadable,
                            format!("ingest {}/{} (id {})", ing.ns, ing.reference, ing.id),
                            format!("cannot read its status: {e}"),
                        );
                    }
                }
            }
            self.tick("ingests", i as u64 + 1, total);
        }
        for e in dirs {
            if e.name.parse::<u64>().is_ok_and(|id| ids.contains(&id)) || !exists(&e.path) {
                continue;
            }
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                "no ingest record has this id".into(),
                Action::OrphanDir {
                    path: e.path.clone(),
                    rel: Path::new("ingest").join(&e.name),
                },
            );
        }
    }
}
