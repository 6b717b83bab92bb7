//! The `snapshots` check: snapshot records against their directories, their parents'
//! records and the `snapshot_children` index. Directories are compared with the ids recorded
//! in a transaction begun after the listing, and with the ids being created meanwhile (the
//! watched set), so a snapshot being prepared is never an orphan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use strata_snapshotter::gc as sgc;

use super::ProblemKind;
use super::listing::Listing;
use super::plan::Action;
use super::records::{ChildRow, Records, SnapKey};
use super::run::{Run, exists};
use crate::Result;

impl Run<'_, '_> {
    /// Guarantees: each record's directory exists (else `missing_data`, confirmed by a later
    /// transaction) and its parent record exists (else `dangling_parent`); each
    /// `snapshot_children` row names two records, the child naming that parent (else
    /// `phantom_child`), and each parent link has its row (else `missing_child_link`); each
    /// listed directory belongs to a record or to a snapshot being created now (else
    /// `orphan`).
    pub(super) fn check_snapshots(
        &mut self,
        records: &Records,
        listing: &Listing,
        watched: &HashSet<u64>,
    ) -> Result<()> {
        let keys = &records.snapshot_keys;
        let rows: BTreeSet<&ChildRow> = records.children.iter().collect();
        let total = records.snapshots.as_ref().map_or(0, Vec::len) + listing.snapshots.len();
        let total = total as u64;
        let mut done = 0u64;
        self.tick("snapshots", 0, total);

        // Phantom rows need only keys (always readable); a child's parent needs its record.
        let parents: Option<HashMap<SnapKey, Option<&str>>> = records.snapshots.as_ref().map(|s| {
            s.iter()
                .map(|e| {
                    let k = (e.ns.clone(), e.snapshotter.clone(), e.key.clone());
                    (k, e.parent.as_deref())
                })
                .collect()
        });
        for row in &records.children {
            let pk = (row.ns.clone(), row.sn.clone(), row.parent.clone());
            let ck = (row.ns.clone(), row.sn.clone(), row.child.clone());
            let reason = if !keys.contains(&pk) && !keys.contains(&ck) {
                Some("neither the parent nor the child has a record".to_owned())
            } else if !keys.contains(&pk) {
                Some("the parent has no record".to_owned())
            } else if !keys.contains(&ck) {
                Some("the child has no record".to_owned())
            } else {
                match parents.as_ref().and_then(|p| p.get(&ck)) {
                    Some(Some(p)) if *p == row.parent => None,
                    Some(Some(p)) => Some(format!("the child's parent is {p:?}")),
                    Some(None) => Some("the child has no parent".to_owned()),
                    None => None,
                }
            };
            if let Some(reason) = reason {
                self.planned(
                    ProblemKind::PhantomChild,
                    format!(
                        "snapshot_children {}/{}/{} -> {}",
                        row.ns, row.sn, row.parent, row.child
                    ),
                    format!("{reason}; the row keeps the parent from being removed"),
                    Action::PhantomChild(row.clone()),
                );
            }
        }

        let Some(snaps) = &records.snapshots else {
            // Without decoded records no directory can be matched to its record.
            return Ok(());
        };
        let mut ids: HashMap<&str, HashSet<u64>> = HashMap::new();
        let mut missing = Vec::new();
        for e in snaps {
            ids.entry(e.snapshotter.as_str()).or_default().insert(e.id);
            self.report.checked.snapshots += 1;
            let object = format!(
                "snapshot {}/{}/{} (id {})",
                e.ns, e.snapshotter, e.key, e.id
            );
            if let Some(p) = &e.parent {
                let pk = (e.ns.clone(), e.snapshotter.clone(), p.clone());
                if !keys.contains(&pk) {
                    self.problem(
                        ProblemKind::DanglingParent,
                        object.clone(),
                        format!("its parent {p:?} has no record"),
                    );
                } else {
                    let row = ChildRow {
                        ns: e.ns.clone(),
                        sn: e.snapshotter.clone(),
                        parent: p.clone(),
                        child: e.key.clone(),
                    };
                    if !rows.contains(&row) {
                        self.planned(
                            ProblemKind::MissingChildLink,
                            object.clone(),
                            format!(
                                "no snapshot_children row links it to its parent {p:?}, so \
                                 the parent could be removed under it"
                            ),
                            Action::AddChildLink(row),
                        );
                    }
                }
            }
            let dir = self
                .store
                .snapshot_root(&e.snapshotter)
                .join(e.id.to_string());
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    self.problem(
                        ProblemKind::MissingData,
                        object,
                        format!("{} is not a directory", dir.display()),
                    );
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(e),
                Err(err) => self.unreadable(&dir, "stat the snapshot directory", &err),
            }
            done += 1;
            self.tick("snapshots", done, total);
        }
        if !missing.is_empty() {
            // Remove deletes the record before the directory: confirm the record is still
            // there (same id) in a transaction begun after the stat.
            let fresh = self.store.db().read()?;
            let now: HashMap<SnapKey, u64> = sgc::snapshot_records(&fresh)?
                .into_iter()
                .map(|e| ((e.ns, e.snapshotter, e.key), e.id))
                .collect();
            for e in missing {
                let k = (e.ns.clone(), e.snapshotter.clone(), e.key.clone());
                let dir = self
                    .store
                    .snapshot_root(&e.snapshotter)
                    .join(e.id.to_string());
                if now.get(&k) != Some(&e.id) || exists(&dir) {
                    continue;
                }
                self.planned(
                    ProblemKind::MissingData,
                    format!(
                        "snapshot {}/{}/{} (id {})",
                        e.ns, e.snapshotter, e.key, e.id
                    ),
                    format!("{} does not exist", dir.display()),
                    Action::MissingSnapshot {
                        ns: e.ns.clone(),
                        sn: e.snapshotter.clone(),
                        key: e.key.clone(),
                        id: e.id,
                    },
                );
            }
        }

        for stray in &listing.snapshot_strays {
            self.planned(
                ProblemKind::Orphan,
                stray.path.display().to_string(),
                "not a snapshotter directory".into(),
                Action::OrphanDir {
                    path: stray.path.clone(),
                    rel: Path::new("snapshots").join(&stray.name),
                },
            );
        }
        for (sn, e) in &listing.snapshots {
            done += 1;
            self.tick("snapshots", done, total);
            let recorded = ids.get(sn.as_str());
            let detail = match parse_snapshot_dir(&e.name) {
                SnapDir::Id(id) if recorded.is_some_and(|r| r.contains(&id)) => continue,
                SnapDir::Id(id) | SnapDir::New(id) if watched.contains(&id) => continue,
                SnapDir::Id(_) => "no snapshot record has this id".to_owned(),
                SnapDir::New(_) => "a snapshot build that never finished (new-<id>)".to_owned(),
                SnapDir::Removing(_) => {
                    "a snapshot removal that never finished (rm-<id>)".to_owned()
                }
                SnapDir::Other => "not a snapshot directory name".to_owned(),
            };
            if !exists(&e.path) {
                continue;
            }
            self.planned(
                ProblemKind::Orphan,
                e.path.display().to_string(),
                detail,
                Action::OrphanDir {
                    path: e.path.clone(),
                    rel: Path::new("snapshots").join(sn).join(&e.name),
                },
            );
        }
        self.tick("snapshots", done, total);
        Ok(())
    }
}

/// What a snapshot directory's name says.
#[derive(Debug, PartialEq, Eq)]
enum SnapDir {
    /// `<id>`: a snapshot's directory.
    Id(u64),
    /// `new-<id>`: a snapshot being built (renamed to `<id>` before its record commits).
    New(u64),
    /// `rm-<id>`: a snapshot being removed (renamed after its record was deleted).
    Removing(u64),
    /// Any other name: never a snapshot's.
    Other,
}

/// What the entry `name` of `snapshots/<sn>/` is, by its name alone.
fn parse_snapshot_dir(name: &str) -> SnapDir {
    let num = |s: &str| {
        // Only the canonical decimal form: "007" names no record's directory.
        s.parse::<u64>().ok().filter(|n| n.to_string() == s)
    };
    if let Some(id) = num(name) {
        SnapDir::Id(id)
    } else if let Some(id) = name.strip_prefix("new-").and_then(num) {
        SnapDir::New(id)
    } else if let Some(id) = name.strip_prefix("rm-").and_then(num) {
        SnapDir::Removing(id)
    } else {
        SnapDir::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_dir_names() {
        assert_eq!(parse_snapshot_dir("42"), SnapDir::Id(42));
        assert_eq!(parse_snapshot_dir("new-7"), SnapDir::New(7));
        assert_eq!(parse_snapshot_dir("rm-7"), SnapDir::Removing(7));
        assert_eq!(parse_snapshot_dir("007"), SnapDir::Other);
        assert_eq!(parse_snapshot_dir("x"), SnapDir::Other);
    }
}
