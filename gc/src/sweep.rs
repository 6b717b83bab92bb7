//! The sweep: one write transaction that removes the records the mark found unreachable,
//! except those a write since the mark made reachable again.
//!
//! The mark ran on a read transaction while writers kept going. Every commit since then
//! handed the objects it created or changed to the database's tracker
//! ([`strata_store::db::Db::read_tracked`]); the sweep takes that set with the write lock held
//! (so no commit is in flight) and traces from it through the records *as they are now*,
//! using point reads. What that late trace reaches is kept. So:
//! - an object created during the mark is never removed: it was not in the mark's `all`;
//! - an old object that gained a reference during the mark (a new image naming an old blob,
//!   a lease taking it, a snapshot prepared on an old parent) is reached by the late trace.
//!
//! The transaction either commits every removal or none: a failure leaves every record.

use rustc_hash::FxHashSet as HashSet;
use std::time::{Duration, Instant};

use strata_snapshotter::gc::{current_snapshot, remove_snapshots};
use strata_store::gcview::Current;
use strata_store::{Store, failpoint};

use crate::error::Result;
use crate::mark::{
    LABEL_USEDAT, Labels, Marked, Record, condition_holds, conditional, edges, expired,
    lease_edges, reach,
};
use crate::node::{Kind, Node, Typed};

/// What one sweep did.
#[derive(Debug, Clone)]
pub(crate) struct Swept {
    /// Records removed, sorted.
    pub(crate) removed: Vec<Node>,
    /// Unreachable in the mark but kept because a write during the mark reached them.
    pub(crate) kept_late: usize,
    /// How long the write transaction was held (from its start to its commit).
    pub(crate) hold: Duration,
}

/// Removes what `marked` found unreachable and no write since has reached.
///
/// # Errors
/// Database errors and corrupt records; nothing is removed then.
pub(crate) fn sweep(store: &Store, marked: &Marked) -> Result<Swept> {
    // Everything that does not need the current records is computed before the lock.
    let doomed = marked.unreachable();
    let txn = store.db().write()?;
    let started = Instant::now();
    let touched = store.db().take_touched()?;
    let cur = Current::new(&txn);
    let late = late_trace(&cur, &txn, marked, touched)?;
    let (gone, kept): (Vec<Node>, Vec<Node>) = doomed.into_iter().partition(|n| !late.contains(n));
    let kept_late = kept.len();
    let mut removed = Vec::with_capacity(gone.len());
    let (snapshots, others): (Vec<Node>, Vec<Node>) =
        gone.into_iter().partition(|n| n.kind == Kind::Snapshot);
    for n in others {
        if remove(&cur, &n)? {
            removed.push(n);
        }
    }
    let keys: Vec<(&str, &str, &str)> = snapshots
        .iter()
        .filter_map(|n| {
            n.key
                .split_once('/')
                .map(|(sn, key)| (n.ns.as_str(), sn, key))
        })
        .collect();
    let existed = remove_snapshots(&txn, &keys)?;
    removed.extend(
        snapshots
            .into_iter()
            .zip(existed)
            .filter_map(|(n, e)| e.then_some(n)),
    );
    removed.sort();
    failpoint!("gc.sweep.before_commit");
    txn.commit()?;
    let hold = started.elapsed();
    failpoint!("gc.sweep.after_commit");
    Ok(Swept {
        removed,
        kept_late,
        hold,
    })
}

/// Everything reachable from `touched` through the current records (and the back edges the
/// mark recorded).
fn late_trace(
    cur: &Current<'_, '_>,
    txn: &strata_store::db::WriteTxn<'_>,
    marked: &Marked,
    touched: std::collections::HashSet<Node>,
) -> Result<HashSet<Node>> {
    // A touched node is expanded through its current record even if the mark expanded it:
    // its references may have changed. An untouched node the mark expanded normally has the
    // same references now, all of them already reachable.
    let roots: Vec<Typed<Node>> = touched.iter().cloned().map(Typed::normal).collect();
    if roots.is_empty() {
        return Ok(HashSet::default());
    }
    reach(roots, |t| {
        if marked.expanded(&t.node) && !touched.contains(&t.node) {
            return Ok(Vec::new());
        }
        current_refs(cur, txn, marked, t)
    })
}

fn current_refs(
    cur: &Current<'_, '_>,
    txn: &strata_store::db::WriteTxn<'_>,
    marked: &Marked,
    t: &Typed<Node>,
) -> Result<Vec<Typed<Node>>> {
    let n = &t.node;
    let ns = n.ns.as_str();
    let back = marked.back_refs(n);
    let lease_held;
    let (own, labels, lease) = match n.kind {
        Kind::Content => match cur.blob(ns, &n.key)? {
            None => return Ok(Vec::new()),
            Some(b) => (None, Some(b.labels), None),
        },
        Kind::Snapshot => {
            let Some((sn, key)) = n.key.split_once('/') else {
                return Ok(Vec::new());
            };
            match current_snapshot(txn, ns, sn, key)? {
                None => return Ok(Vec::new()),
                Some(s) => (
                    s.parent.map(|p| Node::snapshot(ns, sn, &p)),
                    Some(s.labels),
                    None,
                ),
            }
        }
        Kind::Image => match cur.image(ns, &n.key)? {
            None => return Ok(Vec::new()),
            Some(i) => (
                Some(Node::new(Kind::Content, ns, i.target.to_string())),
                Some(i.labels),
                None,
            ),
        },
        Kind::Ingest => match cur.ingest(ns, &n.key)? {
            None => return Ok(Vec::new()),
            Some(i) => (
                i.expected
                    .map(|d| Node::new(Kind::Content, ns, d.to_string())),
                None,
                None,
            ),
        },
        Kind::Container => match cur.container(ns, &n.key)? {
            None => return Ok(Vec::new()),
            Some(c) => (
                (!c.snapshotter.is_empty() && !c.snapshot_key.is_empty())
                    .then(|| Node::snapshot(ns, &c.snapshotter, &c.snapshot_key)),
                Some(c.labels),
                None,
            ),
        },
        Kind::Lease => match cur.lease(ns, &n.key)? {
            None => return Ok(Vec::new()),
            Some(l) if expired(&l.labels, marked.now) => return Ok(Vec::new()),
            Some(l) => {
                lease_held = lease_edges(ns, &l.labels, &l.resources);
                (None, None, Some(lease_held.as_slice()))
            }
        },
    };
    let mut back = back;
    if matches!(n.kind, Kind::Content | Kind::Image)
        && let Some(labels) = &labels
    {
        back.extend(conditionals_now(txn, ns, labels, marked.now)?);
    }
    let record = Record {
        own,
        labels: labels.as_ref(),
        lease,
    };
    Ok(edges(t, &record, &back))
}

/// The snapshots the conditional labels of a current record reference and whose condition
/// holds now (their `usedat` as it is now): a record written after the mark has its
/// conditions judged here, as containerd judges them under its lock.
fn conditionals_now(
    txn: &strata_store::db::WriteTxn<'_>,
    ns: &str,
    labels: &Labels,
    now: strata_store::Timestamp,
) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    for (k, v) in labels {
        let Some((sn, key, conditions)) = conditional(k, v) else {
            continue;
        };
        let used = current_snapshot(txn, ns, sn, key)?.and_then(|s| {
            s.labels
                .get(LABEL_USEDAT)
                .and_then(|u| strata_store::Timestamp::parse_rfc3339(u))
        });
        if used.is_some_and(|u| condition_holds(conditions, u, now)) {
            out.push(Node::snapshot(ns, sn, key));
        }
    }
    Ok(out)
}

/// Removes one record other than a snapshot; whether it was still there.
fn remove(cur: &Current<'_, '_>, n: &Node) -> Result<bool> {
    let ns = n.ns.as_str();
    Ok(match n.kind {
        Kind::Content => cur.remove_blob(ns, &n.key)?,
        Kind::Image => cur.remove_image(ns, &n.key)?,
        Kind::Lease => cur.remove_lease(ns, &n.key)?,
        Kind::Ingest => cur.remove_ingest(ns, &n.key)?.is_some(),
        // Snapshots go in one batch; containers are roots, never swept.
        Kind::Snapshot | Kind::Container => false,
    })
}
