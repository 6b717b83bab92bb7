//! The state of one fsck pass, and what every check uses to add to it: a problem, a problem
//! with its planned repair, an unreadable path, a corrupt record, a progress tick.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use strata_store::Store;

use super::plan::{Action, Planned};
use super::{FsckReport, Problem, ProblemKind, Progress};
use crate::{Error, Result};

/// One pass of [`super::fsck`]. The checks add problems in the order they find them (so the
/// report goes phase by phase) and plan the repair of each repairable one; the repair
/// applies the plan and notes on each problem what it did.
pub(super) struct Run<'a, 'p> {
    /// The store checked.
    pub(super) store: &'a Store,
    /// What was found so far; returned by [`super::fsck`].
    pub(super) report: FsckReport,
    /// The repairs planned, one per repairable problem; applied only with a repair.
    pub(super) plan: Vec<Planned>,
    /// Problems a repair attempt has already noted (repaired or not).
    pub(super) settled: HashSet<usize>,
    /// The caller's progress callback.
    pub(super) progress: &'p mut dyn FnMut(Progress),
}

impl<'a, 'p> Run<'a, 'p> {
    /// A pass over `store` with nothing found yet.
    pub(super) fn new(store: &'a Store, progress: &'p mut dyn FnMut(Progress)) -> Self {
        Run {
            store,
            report: FsckReport::default(),
            plan: Vec::new(),
            settled: HashSet::new(),
            progress,
        }
    }
}

impl Run<'_, '_> {
    /// Adds a problem, not repaired; returns its index in [`FsckReport::problems`].
    pub(super) fn problem(&mut self, kind: ProblemKind, object: String, detail: String) -> usize {
        self.report.problems.push(Problem {
            kind,
            object,
            detail,
            repaired: false,
        });
        self.report.problems.len() - 1
    }

    /// Adds a problem and plans `action` to repair it.
    pub(super) fn planned(
        &mut self,
        kind: ProblemKind,
        object: String,
        detail: String,
        action: Action,
    ) {
        let problem = self.problem(kind, object, detail);
        self.plan.push(Planned { problem, action });
    }

    /// Adds an `unreadable` problem: `path` could not be read (`what` says how it was tried).
    pub(super) fn unreadable(&mut self, path: &Path, what: &str, e: &io::Error) {
        self.problem(
            ProblemKind::Unreadable,
            path.display().to_string(),
            format!("cannot {what}: {e}"),
        );
    }

    /// Tells the caller how far `phase` is.
    pub(super) fn tick(&mut self, phase: &'static str, done: u64, total: u64) {
        (self.progress)(Progress { phase, done, total });
    }

    /// Reports a corrupt record and returns `None`, or passes any other error on. `skipped`
    /// names the checks that cannot run without the records that failed to decode.
    pub(super) fn corrupt<T>(&mut self, got: Result<T>, skipped: &str) -> Result<Option<T>> {
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let Some((table, key, reason)) = as_corrupt(&e) else {
                    return Err(e);
                };
                let (object, detail) = (
                    format!("record {table} {key}"),
                    format!("{reason}; skipped: {skipped}"),
                );
                self.problem(ProblemKind::CorruptRecord, object, detail);
                Ok(None)
            }
        }
    }
}

/// A database error as this crate's error.
pub(super) fn db_err(e: impl Into<strata_store::Error>) -> Error {
    Error::Store(e.into())
}

/// The store error inside `e` when it is a corrupt record: `(table, key, reason)`.
fn as_corrupt(e: &Error) -> Option<(&'static str, &str, &str)> {
    let store = match e {
        Error::Store(s) => s,
        Error::Snapshotter(strata_snapshotter::Error::Store(s)) => s,
        _ => return None,
    };
    match store {
        strata_store::Error::Corrupt { table, key, reason } => Some((table, key, reason)),
        _ => None,
    }
}

/// Whether anything is at `path` (a symlink counts; it is not followed).
pub(super) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
