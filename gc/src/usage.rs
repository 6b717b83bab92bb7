//! `du`: disk usage per image, namespace or lease, unique and shared, adding up to what the
//! store holds on disk.
//!
//! The unit of accounting is a *physical item*: a blob file (shared by every namespace that
//! records its digest), a snapshot directory, or an ingest directory. Each item's bytes are
//! counted once. An owner keeps an item when:
//! - **namespace**: one of its records names it;
//! - **image** or **lease**: the mark's references lead from it to the item (an image's
//!   target, its manifest's layers and config, the config's unpacked snapshot chain; a
//!   lease's resources and what they reference).
//!
//! An item kept by one owner is that owner's *unique* bytes; by several, it is *shared* (each
//! of them shows it, the totals count it once); by none, *unattributed* (containers, `gc.root`
//! objects, garbage the next collection removes, orphans). So
//! `total = Σ unique + shared + unattributed + database`, exactly.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;
use strata_snapshotter::gc::{disk_usage, snapshot_records};
use strata_store::gcview::View;
use strata_store::{Store, Timestamp};

use crate::error::Result;
use crate::graph::{Graph, Id};
use crate::node::{Kind, Node};

/// What to account usage by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Each image (`<namespace>/<name>`).
    Image,
    /// Each namespace.
    Namespace,
    /// Each lease (`<namespace>/<id>`).
    Lease,
}

/// Usage of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The image, namespace or lease.
    pub owner: String,
    /// Bytes only this owner keeps.
    pub unique_bytes: u64,
    /// Bytes this owner keeps together with others.
    pub shared_bytes: u64,
    /// Physical items (blob files, snapshot and ingest directories) it keeps.
    pub objects: usize,
}

/// Usage of the whole store.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    /// What the rows are.
    pub by: By,
    /// One row per owner, by name.
    pub rows: Vec<UsageRow>,
    /// Bytes of items several owners keep, counted once.
    pub shared_bytes: u64,
    /// Bytes of items no owner keeps.
    pub unattributed_bytes: u64,
    /// Size of `meta.redb`.
    pub database_bytes: u64,
    /// Everything: the sum of the rows' unique bytes, shared, unattributed and database.
    pub total_bytes: u64,
}

/// A physical item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Blob(String),
    Snapshot(String, u64),
    Ingest(u64),
    /// A file or directory no record names.
    Orphan(PathBuf),
}

/// Usage by `by`, read from one transaction (and the directories).
///
/// # Errors
/// Corrupt records; database and directory errors.
pub fn usage(store: &Store, by: By) -> Result<UsageReport> {
    let txn = store.db().read()?;
    let view = View::new(&txn)?;
    let snapshots = snapshot_records(&txn)?;
    let layout = store.layout();

    // Every physical item and its bytes.
    let mut bytes: HashMap<Item, u64> = HashMap::new();
    for b in &view.blobs {
        let path = layout.blob(&b.digest);
        let size = std::fs::symlink_metadata(&path).map_or(0, |m| m.blocks() * 512);
        bytes.insert(Item::Blob(b.digest.to_string()), size);
    }
    let mut snapshot_item: HashMap<Node, Item> = HashMap::new();
    for s in &snapshots {
        let item = Item::Snapshot(s.snapshotter.clone(), s.id);
        let size = s.size.unwrap_or_else(|| {
            disk_usage(&store.snapshot_root(&s.snapshotter).join(s.id.to_string()))
                .map_or(0, |u| u.size)
        });
        bytes.insert(item.clone(), size);
        snapshot_item.insert(Node::snapshot(&s.ns, &s.snapshotter, &s.key), item);
    }
    let mut ingest_item: HashMap<Node, Item> = HashMap::new();
    for i in &view.ingests {
        let item = Item::Ingest(i.id);
        let size = disk_usage(&layout.ingest_dir(i.id)).map_or(0, |u| u.size);
        bytes.insert(item.clone(), size);
        ingest_item.insert(Node::new(Kind::Ingest, &i.ns, &i.reference), item);
    }
    let dry = {
        let _pass = store.maintenance()?;
        crate::cleanup::reconcile(store, false)?
    };
    for o in &dry.removed {
        bytes.insert(Item::Orphan(o.path.clone()), o.bytes);
    }
    let item_of = |n: &Node| -> Option<Item> {
        match n.kind {
            Kind::Content => Some(Item::Blob(n.key.clone())),
            Kind::Snapshot => snapshot_item.get(n).cloned(),
            Kind::Ingest => ingest_item.get(n).cloned(),
            _ => None,
        }
    };

    // What each owner keeps.
    let mut owners: Vec<(String, HashSet<Item>)> = Vec::new();
    match by {
        By::Namespace => {
            let mut per: HashMap<String, HashSet<Item>> = view
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), HashSet::new()))
                .collect();
            for b in &view.blobs {
                per.entry(b.ns.clone())
                    .or_default()
                    .insert(Item::Blob(b.digest.to_string()));
            }
            for s in &snapshots {
                per.entry(s.ns.clone())
                    .or_default()
                    .insert(Item::Snapshot(s.snapshotter.clone(), s.id));
            }
            for i in &view.ingests {
                per.entry(i.ns.clone())
                    .or_default()
                    .insert(Item::Ingest(i.id));
            }
            owners.extend(per);
        }
        By::Image | By::Lease => {
            let graph = Graph::read(&txn, Timestamp::now())?;
            let kind = match by {
                By::Image => Kind::Image,
                _ => Kind::Lease,
            };
            let mut state = vec![0u8; graph.nodes.len()];
            let mut reached: Vec<Id> = Vec::new();
            let starts = graph
                .nodes
                .ids()
                .filter(|&id| graph.nodes.exists(id) && graph.nodes.kind(id) == kind);
            for start in starts {
                let name = format!("{}/{}", graph.nodes.ns(start), graph.nodes.key(start));
                graph.walk([(start, false)], &mut state, |id, _| reached.push(id));
                let mut items = HashSet::new();
                for id in reached.drain(..) {
                    // Reset for the next owner: only what this walk set.
                    state[id as usize] = 0;
                    if matches!(
                        graph.nodes.kind(id),
                        Kind::Content | Kind::Snapshot | Kind::Ingest
                    ) && let Some(item) = item_of(&graph.nodes.node(id))
                    {
                        items.insert(item);
                    }
                }
                owners.push((name, items));
            }
        }
    }

    let mut count: HashMap<&Item, usize> = HashMap::new();
    for (_, items) in &owners {
        for i in items {
            *count.entry(i).or_default() += 1;
        }
    }
    let size = |i: &Item| bytes.get(i).copied().unwrap_or(0);
    let mut rows: Vec<UsageRow> = owners
        .iter()
        .map(|(owner, items)| {
            let (mut unique_bytes, mut shared_bytes) = (0, 0);
            for i in items {
                if count.get(i).copied().unwrap_or(0) > 1 {
                    shared_bytes += size(i);
                } else {
                    unique_bytes += size(i);
                }
            }
            UsageRow {
                owner: owner.clone(),
                unique_bytes,
                shared_bytes,
                objects: items.len(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.owner.cmp(&b.owner));
    let shared_bytes = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(i, _)| size(i))
        .sum();
    let unattributed_bytes = bytes
        .iter()
        .filter(|(i, _)| !count.contains_key(i))
        .map(|(_, b)| *b)
        .sum();
    let database_bytes = std::fs::metadata(layout.meta()).map_or(0, |m| m.len());
    let unique: u64 = rows.iter().map(|r| r.unique_bytes).sum();
    Ok(UsageReport {
        by,
        rows,
        shared_bytes,
        unattributed_bytes,
        database_bytes,
        total_bytes: unique + shared_bytes + unattributed_bytes + database_bytes,
    })
}
