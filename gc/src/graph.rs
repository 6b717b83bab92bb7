//! The collector's graph of one read transaction: every object interned as a `u32`, every
//! reference in one compressed adjacency array, and the roots.
//!
//! At 100 000 image sets a store holds a million records. A graph keyed by string nodes
//! spent most of the mark allocating, hashing and freeing them; here each object's name is
//! copied once into one arena and everything else is indices:
//! - [`Nodes`]: kind, namespace and key of each id, and the table from name to id;
//! - [`Graph`]: per id, its references (CSR: `offsets[id]..offsets[id + 1]` in `edges`),
//!   each with the [`Via`] that says how it is followed; the roots, why each is one.
//!
//! Objects are interned when their record is read *or* when something references them, so
//! references need no second pass. An id interned only as a target has no record
//! ([`Nodes::exists`] is false): the traversal never enters it (containerd ignores references
//! to missing objects), and it is never swept.
//!
//! The rules (which records are roots, which labels are edges, how flat propagates) are
//! containerd's, as described in `mark.rs`; [`crate::mark::follow`] decides every step.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use strata_snapshotter::gc::{SnapshotItem, scan_snapshots, snapshot_count};
use strata_store::Timestamp;
use strata_store::gcscan::{self, LabelRefs};

use crate::error::{Error, Result};
use crate::mark::{self, Target, Via};
use crate::node::{Kind, Node};

/// An object's index in one [`Graph`].
pub(crate) type Id = u32;

/// The names of the graph's objects.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    /// Per id, everything but the key's bytes: one array, so a lookup that finds an id
    /// touches one entry here and its key in `keys` (the table is probed at random; at a
    /// million objects each separate array would be one more cache miss).
    meta: Vec<Meta>,
    /// Every key, back to back.
    keys: String,
    namespaces: Vec<Box<str>>,
    ns_ids: FxHashMap<Box<str>, u32>,
    /// Ids, hashed by name.
    table: HashTable<Id>,
    /// Reused to build `<snapshotter>/<key>` names without allocating.
    scratch: String,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Hash of the name: compared before the key, and what the table rehashes by.
    hash: u64,
    /// The key is `keys[start..start + len]`.
    start: u64,
    len: u32,
    ns: u32,
    kind: Kind,
    /// Has a record (was read, not only referenced).
    exists: bool,
}

fn hash(kind: Kind, ns: u32, key: &str) -> u64 {
    FxBuildHasher.hash_one((kind, ns, key))
}

fn too_many() -> Error {
    Error::Graph(
        "more than 4 294 967 295 objects, namespaces or label keys, or a name of 4 GiB".into(),
    )
}

impl Nodes {
    /// How many ids there are (objects with a record and referenced ones).
    pub(crate) fn len(&self) -> usize {
        self.meta.len()
    }

    pub(crate) fn kind(&self, id: Id) -> Kind {
        self.meta[id as usize].kind
    }

    pub(crate) fn ns(&self, id: Id) -> &str {
        &self.namespaces[self.meta[id as usize].ns as usize]
    }

    pub(crate) fn key(&self, id: Id) -> &str {
        let m = &self.meta[id as usize];
        // `start` came from a `usize` length of `keys` (`intern`).
        let start = m.start as usize;
        &self.keys[start..start + m.len as usize]
    }

    /// Whether the object has a record (was read, not only referenced).
    pub(crate) fn exists(&self, id: Id) -> bool {
        self.meta[id as usize].exists
    }

    /// The object as a [`Node`].
    pub(crate) fn node(&self, id: Id) -> Node {
        Node::new(self.kind(id), self.ns(id), self.key(id))
    }

    /// Every id, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = Id> + use<> {
        // Ids are dense and below u32::MAX (`intern` refuses more).
        (0..self.meta.len()).map(|i| i as Id)
    }

    /// The names of the namespaces seen.
    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(|n| &**n)
    }

    /// The id of `node`, if the graph has it (with a record or as a target).
    pub(crate) fn get(&self, node: &Node) -> Option<Id> {
        self.lookup(node.kind, &node.ns, &node.key)
    }

    pub(crate) fn lookup(&self, kind: Kind, ns: &str, key: &str) -> Option<Id> {
        let ns = *self.ns_ids.get(ns)?;
        let h = hash(kind, ns, key);
        self.table
            .find(h, |&id| self.is(id, h, kind, ns, key))
            .copied()
    }

    fn is(&self, id: Id, h: u64, kind: Kind, ns: u32, key: &str) -> bool {
        let m = &self.meta[id as usize];
        m.hash == h && m.kind == kind && m.ns == ns && self.key(id) == key
    }

    fn ns_id(&mut self, ns: &str) -> Result<u32> {
        if let Some(&id) = self.ns_ids.get(ns) {
            return Ok(id);
        }
        let id = u32::try_from(self.namespaces.len()).map_err(|_| too_many())?;
        self.namespaces.push(ns.into());
        self.ns_ids.insert(ns.into(), id);
        Ok(id)
    }

    /// The id of `(kind, ns, key)`, interning it (without a record) if new.
    fn intern(&mut self, kind: Kind, ns: &str, key: &str) -> Result<Id> {
        let ns = self.ns_id(ns)?;
        let h = hash(kind, ns, key);
        if let Some(&id) = self.table.find(h, |&id| self.is(id, h, kind, ns, key)) {
            return Ok(id);
        }
        let id = Id::try_from(self.meta.len()).map_err(|_| too_many())?;
        let start = u64::try_from(self.keys.len()).map_err(|_| too_many())?;
        let len = u32::try_from(key.len()).map_err(|_| too_many())?;
        if id == Id::MAX {
            return Err(too_many());
        }
        self.keys.push_str(key);
        self.meta.push(Meta {
            hash: h,
            start,
            len,
            ns,
            kind,
            exists: false,
        });
        let meta = &self.meta;
        self.table
            .insert_unique(h, id, |&other| meta[other as usize].hash);
        Ok(id)
    }

    /// The id of snapshot `<snapshotter>/<key>` in `ns`, interning it if new.
    fn intern_snapshot(&mut self, ns: &str, snapshotter: &str, key: &str) -> Result<Id> {
        let mut name = std::mem::take(&mut self.scratch);
        name.clear();
        name.push_str(snapshotter);
        name.push('/');
        name.push_str(key);
        let id = self.intern(Kind::Snapshot, ns, &name);
        self.scratch = name;
        id
    }

    fn intern_target(&mut self, ns: &str, t: &Target<'_>) -> Result<Id> {
        match t.snapshotter {
            Some(sn) => self.intern_snapshot(ns, sn, t.key),
            None => self.intern(t.kind, ns, t.key),
        }
    }

    /// Interns an object that has a record.
    fn record(&mut self, kind: Kind, ns: &str, key: &str) -> Result<Id> {
        let id = self.intern(kind, ns, key)?;
        self.meta[id as usize].exists = true;
        Ok(id)
    }

    /// Interns a snapshot that has a record.
    fn record_snapshot(&mut self, ns: &str, snapshotter: &str, key: &str) -> Result<Id> {
        let id = self.intern_snapshot(ns, snapshotter, key)?;
        self.meta[id as usize].exists = true;
        Ok(id)
    }
}

/// One reference: its target and how it is followed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) to: Id,
    pub(crate) via: Via,
}

/// Why a root is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// A lease that has not expired.
    Lease,
    /// An image that has not expired.
    Image,
    /// An ingest before its expiry.
    Ingest,
    /// Content or a snapshot with this `gc.root` label (an index into [`Graph::label`]).
    Label(u32),
    /// A container (always a root).
    Container,
}

/// The graph of one read transaction.
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) nodes: Nodes,
    /// CSR: the edges of `id` are `edges[offsets[id]..offsets[id + 1]]`.
    offsets: Vec<usize>,
    edges: Vec<Edge>,
    /// Every root with why it is one, in the order the tables are scanned.
    pub(crate) roots: Vec<(Id, Root)>,
    /// Label keys the vias and roots name, by index.
    labels: Vec<Box<str>>,
    /// The raw `gc.expire` value of each lease and image that has one.
    pub(crate) expires: FxHashMap<Id, Box<str>>,
    /// The earliest lease or image expiry, or unleased ingest expiry, not before `now`.
    pub(crate) next_expiry: Option<Timestamp>,
}

/// Reached normally (every reference followed).
pub(crate) const NORMAL: u8 = 1;
/// Reached flat.
pub(crate) const FLAT: u8 = 2;

/// The state bit of a typed node.
pub(crate) fn bit(flat: bool) -> u8 {
    if flat { FLAT } else { NORMAL }
}

impl Graph {
    /// Reads every record of `txn` into a graph, judging expiry and conditions by `now`.
    ///
    /// # Errors
    /// Corrupt records (naming their table and key); database errors.
    pub(crate) fn read(txn: &redb::ReadTransaction, now: Timestamp) -> Result<Graph> {
        let records = gcscan::record_count(txn)? + snapshot_count(txn)?;
        let mut b = Builder::new(now, usize::try_from(records).unwrap_or(usize::MAX));
        gcscan::scan_blobs(txn, |r| b.blob(r))?;
        scan_snapshots(txn, |r| b.snapshot(r))?;
        gcscan::scan_images(txn, |r| b.image(r))?;
        gcscan::scan_containers(txn, |r| b.container(r))?;
        gcscan::scan_ingests(txn, |r| b.ingest(r))?;
        gcscan::scan_leases(txn, |r| b.lease(r))?;
        gcscan::scan_lease_resources(txn, |r| b.lease_resource(r))?;
        b.finish()
    }

    /// The references of `id`.
    pub(crate) fn edges(&self, id: Id) -> &[Edge] {
        let i = id as usize;
        &self.edges[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The label key a via or root names.
    pub(crate) fn label(&self, i: u32) -> &str {
        &self.labels[i as usize]
    }

    /// Where `(from, flat)` leads by `e`: `Some(target reached flat?)`, or `None` when the
    /// reference is not followed or its target has no record.
    pub(crate) fn step(&self, from: Id, flat: bool, e: &Edge) -> Option<bool> {
        if !self.nodes.exists(e.to) {
            return None;
        }
        mark::follow(self.nodes.kind(from), flat, e.via)
    }

    /// Depth-first from `starts` (typed nodes), setting [`NORMAL`] / [`FLAT`] bits in `state`
    /// (one byte per id) for every typed node reached; calls `visit` once per typed node
    /// newly reached. Typed nodes already set in `state` are not entered again.
    pub(crate) fn walk(
        &self,
        starts: impl IntoIterator<Item = (Id, bool)>,
        state: &mut [u8],
        mut visit: impl FnMut(Id, bool),
    ) {
        let mut stack: Vec<(Id, bool)> = starts.into_iter().collect();
        while let Some((id, flat)) = stack.pop() {
            let seen = &mut state[id as usize];
            if *seen & bit(flat) != 0 {
                continue;
            }
            *seen |= bit(flat);
            visit(id, flat);
            for e in self.edges(id) {
                if let Some(to_flat) = self.step(id, flat, e)
                    && state[e.to as usize] & bit(to_flat) == 0
                {
                    stack.push((e.to, to_flat));
                }
            }
        }
    }

    /// The roots as typed nodes (always normal).
    pub(crate) fn root_starts(&self) -> impl Iterator<Item = (Id, bool)> + '_ {
        self.roots.iter().map(|&(id, _)| (id, false))
    }
}

/// A conditional reference waiting for every snapshot's `usedat` value.
struct Conditional {
    referrer: Id,
    label: u32,
    target: Id,
    conditions: Box<str>,
}

/// Collects the graph while the tables are scanned.
struct Builder {
    now: Timestamp,
    nodes: Nodes,
    /// `(from, edge)` in scan order; sorted into CSR at the end.
    pending: Vec<(Id, Edge)>,
    roots: Vec<(Id, Root)>,
    labels: Vec<Box<str>>,
    label_ids: FxHashMap<Box<str>, u32>,
    expires: FxHashMap<Id, Box<str>>,
    next_expiry: Option<Timestamp>,
    usedat: FxHashMap<Id, Timestamp>,
    conditionals: Vec<Conditional>,
    /// Live leases: whether each is flat.
    live_leases: FxHashMap<Id, bool>,
}

/// What a record's labels may contribute besides plain references.
#[derive(Clone, Copy)]
struct LabelRules {
    /// A `gc.root` label makes it a root (content, snapshots).
    root: bool,
    /// Its `gc.bref.*` labels add edges from the referrer.
    back_refs: bool,
    /// Its `gc.cond.snapshot*` labels are conditional references (images, content).
    conditional: bool,
}

impl Builder {
    /// A builder sized for about `records` objects (as many ids and references, names of
    /// about 40 bytes), so the name table never grows and rehashes during the scan.
    fn new(now: Timestamp, records: usize) -> Builder {
        // A damaged length must not turn into a huge allocation: capped, the table grows.
        let records = records.min(1 << 24);
        let mut nodes = Nodes::default();
        nodes.meta.reserve(records);
        nodes.keys.reserve(records * 40);
        nodes.table.reserve(records, |_| 0);
        Builder {
            now,
            nodes,
            pending: Vec::with_capacity(records),
            roots: Vec::new(),
            labels: Vec::new(),
            label_ids: FxHashMap::default(),
            expires: FxHashMap::default(),
            next_expiry: None,
            usedat: FxHashMap::default(),
            conditionals: Vec::new(),
            live_leases: FxHashMap::default(),
        }
    }

    fn label_id(&mut self, key: &str) -> Result<u32> {
        if let Some(&i) = self.label_ids.get(key) {
            return Ok(i);
        }
        let i = u32::try_from(self.labels.len()).map_err(|_| too_many())?;
        self.labels.push(key.into());
        self.label_ids.insert(key.into(), i);
        Ok(i)
    }

    fn edge(&mut self, from: Id, to: Id, via: Via) {
        self.pending.push((from, Edge { to, via }));
    }

    fn expiry_ahead(&mut self, t: Timestamp) {
        if t >= self.now && self.next_expiry.is_none_or(|n| t < n) {
            self.next_expiry = Some(t);
        }
    }

    /// Records a lease's or image's `gc.expire`; whether it has passed.
    fn expire_label(&mut self, id: Id, labels: &LabelRefs<'_>) -> bool {
        let Some(&(_, value)) = labels.iter().find(|(k, _)| *k == mark::LABEL_EXPIRE) else {
            return false;
        };
        self.expires.insert(id, value.into());
        match Timestamp::parse_rfc3339(value) {
            Some(t) => {
                self.expiry_ahead(t);
                t < self.now
            }
            None => false,
        }
    }

    fn labels(
        &mut self,
        id: Id,
        ns: &str,
        labels: &LabelRefs<'_>,
        rules: LabelRules,
    ) -> Result<()> {
        let mut rooted = false;
        for &(key, value) in labels {
            if !key.starts_with(mark::LABEL_PREFIX) {
                continue;
            }
            if rules.root && !rooted && key.starts_with(mark::LABEL_ROOT) {
                rooted = true;
                let label = self.label_id(key)?;
                self.roots.push((id, Root::Label(label)));
            }
            if let Some(t) = mark::ref_target(key, value) {
                let to = self.nodes.intern_target(ns, &t)?;
                let label = self.label_id(key)?;
                self.edge(id, to, Via::Label(label));
            }
            if rules.back_refs
                && let Some(t) = mark::back_ref_target(key, value)
            {
                let referrer = self.nodes.intern_target(ns, &t)?;
                let label = self.label_id(key)?;
                self.edge(referrer, id, Via::BackRef(label));
            }
            if rules.conditional
                && let Some((sn, target, conditions)) = mark::conditional(key, value)
            {
                let target = self.nodes.intern_snapshot(ns, sn, target)?;
                let label = self.label_id(key)?;
                self.conditionals.push(Conditional {
                    referrer: id,
                    label,
                    target,
                    conditions: conditions.into(),
                });
            }
        }
        Ok(())
    }

    fn blob(&mut self, r: gcscan::BlobItem<'_>) -> Result<()> {
        let id = self.nodes.record(Kind::Content, r.ns, r.digest)?;
        let rules = LabelRules {
            root: true,
            back_refs: true,
            conditional: true,
        };
        self.labels(id, r.ns, &r.labels, rules)
    }

    fn snapshot(&mut self, r: SnapshotItem<'_>) -> Result<()> {
        let id = self.nodes.record_snapshot(r.ns, r.snapshotter, r.key)?;
        if let Some(p) = r.parent {
            let parent = self.nodes.intern_snapshot(r.ns, r.snapshotter, p)?;
            self.edge(id, parent, Via::Own);
        }
        if let Some(t) = r
            .labels
            .iter()
            .find(|(k, _)| *k == mark::LABEL_USEDAT)
            .and_then(|(_, v)| Timestamp::parse_rfc3339(v))
        {
            self.usedat.insert(id, t);
        }
        let rules = LabelRules {
            root: true,
            back_refs: true,
            conditional: false,
        };
        self.labels(id, r.ns, &r.labels, rules)
    }

    fn image(&mut self, r: gcscan::ImageItem<'_>) -> Result<()> {
        let id = self.nodes.record(Kind::Image, r.ns, r.name)?;
        let target = self.nodes.intern(Kind::Content, r.ns, r.target)?;
        self.edge(id, target, Via::Own);
        // An expired image is no root, but its back references still count (containerd).
        let expired = self.expire_label(id, &r.labels);
        if !expired {
            self.roots.push((id, Root::Image));
        }
        let rules = LabelRules {
            root: false,
            back_refs: expired,
            conditional: true,
        };
        self.labels(id, r.ns, &r.labels, rules)
    }

    fn container(&mut self, r: gcscan::ContainerItem<'_>) -> Result<()> {
        let id = self.nodes.record(Kind::Container, r.ns, r.id)?;
        if !r.snapshotter.is_empty() && !r.snapshot_key.is_empty() {
            let snapshot = self
                .nodes
                .intern_snapshot(r.ns, r.snapshotter, r.snapshot_key)?;
            self.edge(id, snapshot, Via::Own);
        }
        self.roots.push((id, Root::Container));
        let rules = LabelRules {
            root: false,
            back_refs: true,
            conditional: false,
        };
        self.labels(id, r.ns, &r.labels, rules)
    }

    fn ingest(&mut self, r: gcscan::IngestItem<'_>) -> Result<()> {
        let id = self.nodes.record(Kind::Ingest, r.ns, r.reference)?;
        if let Some(d) = r.expected {
            let blob = self.nodes.intern(Kind::Content, r.ns, d)?;
            self.edge(id, blob, Via::Own);
        }
        if let Some(e) = r.expires_at {
            self.expiry_ahead(e);
            if e >= self.now {
                self.roots.push((id, Root::Ingest));
            }
        }
        Ok(())
    }

    fn lease(&mut self, r: gcscan::LeaseItem<'_>) -> Result<()> {
        let id = self.nodes.record(Kind::Lease, r.ns, r.id)?;
        if !self.expire_label(id, &r.labels) {
            self.roots.push((id, Root::Lease));
            let flat = r.labels.iter().any(|(k, _)| *k == mark::LABEL_FLAT);
            self.live_leases.insert(id, flat);
        }
        Ok(())
    }

    fn lease_resource(&mut self, r: gcscan::LeaseResourceItem<'_>) -> Result<()> {
        // Only live leases hold anything (an expired one is no root and is swept).
        let Some(lease) = self.nodes.lookup(Kind::Lease, r.ns, r.lease) else {
            return Ok(());
        };
        let Some(&flat) = self.live_leases.get(&lease) else {
            return Ok(());
        };
        let Some(t) = mark::lease_resource_target(r.kind, r.id) else {
            return Ok(());
        };
        let to = self.nodes.intern_target(r.ns, &t)?;
        // A flat lease keeps only the objects themselves; ingests are never flat.
        let flat = flat && t.kind != Kind::Ingest;
        self.edge(lease, to, Via::Lease { flat });
        Ok(())
    }

    fn finish(mut self) -> Result<Graph> {
        for c in std::mem::take(&mut self.conditionals) {
            let Some(&used) = self.usedat.get(&c.target) else {
                continue;
            };
            if mark::condition_holds(&c.conditions, used, self.now) {
                self.edge(c.referrer, c.target, Via::Cond(c.label));
            }
        }
        let n = self.nodes.len();
        // Counting sort of the pending edges by source, keeping scan order within a source.
        let mut offsets = vec![0usize; n + 1];
        for (from, _) in &self.pending {
            offsets[*from as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let placeholder = Edge {
            to: 0,
            via: Via::Own,
        };
        let mut edges = vec![placeholder; self.pending.len()];
        for (from, e) in self.pending {
            let slot = &mut next[from as usize];
            edges[*slot] = e;
            *slot += 1;
        }
        Ok(Graph {
            nodes: self.nodes,
            offsets,
            edges,
            roots: self.roots,
            labels: self.labels,
            expires: self.expires,
            next_expiry: self.next_expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_names_each_object_once() {
        let mut n = Nodes::default();
        let a = n.intern(Kind::Content, "ns", "sha256:a").unwrap();
        let s = n.intern_snapshot("ns", "overlay", "k").unwrap();
        assert_eq!(n.intern(Kind::Content, "ns", "sha256:a").unwrap(), a);
        assert_ne!(n.intern(Kind::Content, "other", "sha256:a").unwrap(), a);
        assert_ne!(n.intern(Kind::Image, "ns", "sha256:a").unwrap(), a);
        assert_eq!(n.intern(Kind::Snapshot, "ns", "overlay/k").unwrap(), s);
        assert_eq!(n.node(s), Node::snapshot("ns", "overlay", "k"));
        assert_eq!(n.get(&Node::new(Kind::Content, "ns", "sha256:a")), Some(a));
        assert_eq!(n.get(&Node::new(Kind::Content, "nope", "sha256:a")), None);
        assert!(!n.exists(a));
        assert_eq!(n.record(Kind::Content, "ns", "sha256:a").unwrap(), a);
        assert!(n.exists(a));
        // Growing the table rehashes every name from the arena.
        let ids: Vec<Id> = (0..10_000)
            .map(|i| n.intern(Kind::Image, "ns", &format!("img-{i}")).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(n.key(*id), format!("img-{i}"));
            assert_eq!(n.lookup(Kind::Image, "ns", &format!("img-{i}")), Some(*id));
        }
    }
}
