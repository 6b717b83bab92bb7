//! The mark phase: roots and edges exactly as containerd's metadata GC
//! (`core/metadata/gc.go` `scanRoots` and `references`, `pkg/gc` `Tricolor`).

// Fx hashing: the graph holds a node per record (a million at 100 000 sets), and SipHash
// showed up in profiles; nothing here is keyed by untrusted input an attacker could collide.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::hash::Hash;

use strata_snapshotter::gc::{SnapshotEntry, snapshot_records};
use strata_store::gcview::View;
use strata_store::{Store, Timestamp};

use crate::error::Result;
use crate::node::{Kind, Node, Typed};

/// Label prefix making content or a snapshot a root (value not parsed).
pub const LABEL_ROOT: &str = "containerd.io/gc.root";
/// Expiry of a lease or an image, RFC 3339.
pub const LABEL_EXPIRE: &str = "containerd.io/gc.expire";
/// Makes a lease flat.
pub const LABEL_FLAT: &str = "containerd.io/gc.flat";
/// Prefix of reference labels.
pub const LABEL_REF: &str = "containerd.io/gc.ref.";
/// Prefix of back-reference labels.
pub const LABEL_BREF: &str = "containerd.io/gc.bref.";
/// Prefix of conditional snapshot references.
pub const LABEL_COND_SNAPSHOT: &str = "containerd.io/gc.cond.snapshot";
/// The `usedat` value of a snapshot, RFC 3339.
pub const LABEL_USEDAT: &str = "containerd.io/gc.cond.value-usedat";

/// The result of a mark.
#[derive(Debug, Clone)]
pub struct Marked {
    /// Every node reachable from a root (flat variants masked to their plain node).
    pub reachable: HashSet<Node>,
    /// Every collectible object: leases, snapshots, ingests, blobs, images, sorted.
    pub all: Vec<Node>,
    /// When the mark began (before its read transaction was opened).
    pub started_at: Timestamp,
    /// The clock the mark judged expiry and conditions by.
    pub now: Timestamp,
    /// Edges the labels of *other* objects add (back references, conditional references
    /// that held), by referrer: what the sweep's final trace follows besides a record's own.
    pub back_refs: HashMap<Node, Vec<Node>>,
    /// Reachable nodes reached only flat (their label references were not followed).
    pub flat_only: HashSet<Node>,
    /// The earliest expiry still ahead of `now` (a lease's or image's `gc.expire`, an
    /// unleased ingest's): when a collection would next find something new to remove
    /// without any write.
    pub next_expiry: Option<Timestamp>,
}

impl Marked {
    /// Whether the mark followed every reference of `n` (reached it, and not only flat).
    pub fn expanded(&self, n: &Node) -> bool {
        self.reachable.contains(n) && !self.flat_only.contains(n)
    }

    /// What a sweep would remove: every node of `all` not reachable, sorted.
    pub fn unreachable(&self) -> Vec<Node> {
        let mut out: Vec<Node> = self
            .all
            .iter()
            .filter(|n| !self.reachable.contains(*n))
            .cloned()
            .collect();
        out.sort();
        out
    }
}

/// containerd's `Tricolor`: depth-first from `roots`, calling `refs` once per distinct typed
/// node (so a node reached both flat and normal is expanded twice); returns the reachable
/// nodes with the flat flag masked away.
///
/// # Errors
/// The first error `refs` returns.
pub fn tricolor<T, E, F>(roots: Vec<Typed<T>>, refs: F) -> Result<std::collections::HashSet<T>, E>
where
    T: Clone + Eq + Hash,
    F: FnMut(&Typed<T>) -> Result<Vec<Typed<T>>, E>,
{
    Ok(trace(roots, refs)?.into_iter().map(|t| t.node).collect())
}

/// [`tricolor`] with the crate's fast hash set.
pub(crate) fn reach<T, E, F>(roots: Vec<Typed<T>>, refs: F) -> Result<HashSet<T>, E>
where
    T: Clone + Eq + Hash,
    F: FnMut(&Typed<T>) -> Result<Vec<Typed<T>>, E>,
{
    Ok(trace(roots, refs)?.into_iter().map(|t| t.node).collect())
}

/// The traversal of [`tricolor`], returning every typed node seen (flat flag kept).
fn trace<T, E, F>(roots: Vec<Typed<T>>, mut refs: F) -> Result<HashSet<Typed<T>>, E>
where
    T: Clone + Eq + Hash,
    F: FnMut(&Typed<T>) -> Result<Vec<Typed<T>>, E>,
{
    let mut seen: HashSet<Typed<T>> = HashSet::default();
    let mut grays: Vec<Typed<T>> = roots;
    while let Some(node) = grays.pop() {
        if seen.contains(&node) {
            continue;
        }
        for next in refs(&node)? {
            if !seen.contains(&next) {
                grays.push(next);
            }
        }
        seen.insert(node);
    }
    Ok(seen)
}

/// Marks `store` as of `now` (the clock for lease, image and ingest expiry and conditional
/// references), reading everything from ONE read transaction.
///
/// # Errors
/// A corrupt record (naming its table and key); database errors.
pub fn mark(store: &Store, now: Timestamp) -> Result<Marked> {
    let started_at = Timestamp::now();
    let txn = store.db().read()?;
    let view = View::new(&txn)?;
    let snapshots = snapshot_records(&txn)?;
    mark_in(&view, &snapshots, started_at, now)
}

/// Marks the records of one read transaction, already read (see [`mark`]).
pub(crate) fn mark_in(
    view: &View<'_>,
    snapshots: &[SnapshotEntry],
    started_at: Timestamp,
    now: Timestamp,
) -> Result<Marked> {
    let graph = Graph::build(view, snapshots, now);
    let seen = trace(graph.roots.clone(), |n| {
        Ok::<_, crate::Error>(graph.refs(n))
    })?;
    let mut reachable = HashSet::with_capacity_and_hasher(seen.len(), Default::default());
    let mut flat = Vec::new();
    for t in seen {
        if t.flat {
            flat.push(t.node);
        } else {
            reachable.insert(t.node);
        }
    }
    let flat_only: HashSet<Node> = flat
        .into_iter()
        .filter(|n| !reachable.contains(n))
        .collect();
    reachable.extend(flat_only.iter().cloned());
    let all = graph.all();
    Ok(Marked {
        reachable,
        all,
        started_at,
        now,
        next_expiry: next_expiry(view, now),
        back_refs: graph.back_refs,
        flat_only,
    })
}

pub(crate) type Labels = std::collections::BTreeMap<String, String>;

/// The in-memory graph of one view.
pub(crate) struct Graph<'v> {
    /// Labels of every labelled object (content, snapshots, images, containers).
    pub(crate) labels: HashMap<Node, &'v Labels>,
    /// Objects without labels to follow: leases and ingests.
    pub(crate) others: HashSet<Node>,
    /// Image -> target digest.
    pub(crate) image_targets: HashMap<Node, String>,
    /// Snapshot -> parent snapshot node.
    pub(crate) parents: HashMap<Node, Node>,
    /// Ingest -> expected content node.
    pub(crate) expected: HashMap<Node, Node>,
    /// Container -> its snapshot node.
    pub(crate) container_snapshot: HashMap<Node, Node>,
    /// Every lease's labels (leases are not in `labels`: their labels reference nothing).
    pub(crate) lease_labels: HashMap<Node, &'v Labels>,
    /// Live lease -> what it holds (flat for a flat lease; ingests always normal).
    pub(crate) lease_resources: HashMap<Node, Vec<Typed<Node>>>,
    /// Extra edges: back-refs and conditional refs that hold.
    pub(crate) back_refs: HashMap<Node, Vec<Node>>,
    pub(crate) roots: Vec<Typed<Node>>,
}

impl<'v> Graph<'v> {
    pub(crate) fn build(
        view: &'v View<'_>,
        snapshots: &'v [SnapshotEntry],
        now: Timestamp,
    ) -> Graph<'v> {
        let mut g = Graph {
            lease_resources: HashMap::default(),
            lease_labels: HashMap::default(),
            labels: HashMap::default(),
            others: HashSet::default(),
            image_targets: HashMap::default(),
            parents: HashMap::default(),
            expected: HashMap::default(),
            container_snapshot: HashMap::default(),
            back_refs: HashMap::default(),
            roots: Vec::new(),
        };
        // Every object first, so roots and edges can be checked for existence.
        for b in &view.blobs {
            g.labels.insert(
                Node::new(Kind::Content, &b.ns, b.digest.to_string()),
                &b.labels,
            );
        }
        for s in snapshots {
            let n = Node::snapshot(&s.ns, &s.snapshotter, &s.key);
            if let Some(p) = &s.parent {
                g.parents
                    .insert(n.clone(), Node::snapshot(&s.ns, &s.snapshotter, p));
            }
            g.labels.insert(n, &s.labels);
        }
        for i in &view.images {
            let n = Node::new(Kind::Image, &i.ns, &i.name);
            g.image_targets.insert(n.clone(), i.target.to_string());
            g.labels.insert(n, &i.labels);
        }
        for c in &view.containers {
            let n = Node::new(Kind::Container, &c.ns, &c.id);
            if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
                g.container_snapshot.insert(
                    n.clone(),
                    Node::snapshot(&c.ns, &c.snapshotter, &c.snapshot_key),
                );
            }
            g.labels.insert(n, &c.labels);
        }
        for i in &view.ingests {
            let n = Node::new(Kind::Ingest, &i.ns, &i.reference);
            if let Some(d) = &i.expected {
                g.expected
                    .insert(n.clone(), Node::new(Kind::Content, &i.ns, d.to_string()));
            }
            g.others.insert(n);
        }
        for l in &view.leases {
            let n = Node::new(Kind::Lease, &l.ns, &l.id);
            g.lease_labels.insert(n.clone(), &l.labels);
            g.others.insert(n);
        }

        // Roots, in containerd's scan order.
        let mut roots: Vec<Typed<Node>> = Vec::new();
        let mut conditional: Vec<(Node, &'v Labels)> = Vec::new();
        let mut brefs: Vec<(Node, &'v Labels)> = Vec::new();
        // 1. Live leases; what they hold are their edges (containerd emits those as roots
        // directly: the reachable set is the same, and `why` can name the lease).
        for l in &view.leases {
            if expired(&l.labels, now) {
                continue;
            }
            let n = Node::new(Kind::Lease, &l.ns, &l.id);
            roots.push(Typed::normal(n.clone()));
            g.lease_resources
                .insert(n, lease_edges(&l.ns, &l.labels, &l.resources));
        }
        // 2. Images unless expired; expired ones record their back-refs.
        for i in &view.images {
            let n = Node::new(Kind::Image, &i.ns, &i.name);
            if expired(&i.labels, now) {
                brefs.push((n.clone(), &i.labels));
            } else {
                roots.push(Typed::normal(n.clone()));
            }
            conditional.push((n, &i.labels));
        }
        // 3. Ingests whose expiry is not before now.
        for i in &view.ingests {
            if i.expires_at.is_some_and(|e| e >= now) {
                roots.push(Typed::normal(Node::new(Kind::Ingest, &i.ns, &i.reference)));
            }
        }
        // 4. Content with a gc.root label.
        for b in &view.blobs {
            let n = Node::new(Kind::Content, &b.ns, b.digest.to_string());
            if has_root_label(&b.labels) {
                roots.push(Typed::normal(n.clone()));
            }
            brefs.push((n.clone(), &b.labels));
            conditional.push((n, &b.labels));
        }
        // 5. Every container.
        for c in &view.containers {
            let n = Node::new(Kind::Container, &c.ns, &c.id);
            roots.push(Typed::normal(n.clone()));
            brefs.push((n, &c.labels));
        }
        // 6. Snapshots with a gc.root label; their usedat values.
        let mut usedat: HashMap<Node, Timestamp> = HashMap::default();
        for s in snapshots {
            let n = Node::snapshot(&s.ns, &s.snapshotter, &s.key);
            if has_root_label(&s.labels) {
                roots.push(Typed::normal(n.clone()));
            }
            if let Some(t) = s
                .labels
                .get(LABEL_USEDAT)
                .and_then(|v| Timestamp::parse_rfc3339(v))
            {
                usedat.insert(n.clone(), t);
            }
            brefs.push((n, &s.labels));
        }

        for (object, labels) in brefs {
            for (k, v) in labels {
                if let Some(referrer) = back_ref(&object.ns, k, v) {
                    g.back_refs
                        .entry(referrer)
                        .or_default()
                        .push(object.clone());
                }
            }
        }
        // Conditional references that hold become edges referrer -> snapshot.
        for (referrer, labels) in conditional {
            for (k, v) in labels {
                let Some((target, holds)) = cond_ref(&referrer.ns, k, v, &usedat, now) else {
                    continue;
                };
                if holds {
                    g.back_refs
                        .entry(referrer.clone())
                        .or_default()
                        .push(target);
                }
            }
        }
        g.roots = roots.into_iter().filter(|r| g.exists(&r.node)).collect();
        g
    }

    pub(crate) fn exists(&self, n: &Node) -> bool {
        self.labels.contains_key(n) || self.others.contains(n)
    }

    /// Every collectible object (containers are never collected), sorted.
    pub(crate) fn all(&self) -> Vec<Node> {
        // Unsorted: sorting a million nodes costs more than the rest; callers sort what
        // they print.
        self.labels
            .keys()
            .chain(self.others.iter())
            .filter(|n| n.kind != Kind::Container)
            .cloned()
            .collect()
    }

    /// containerd's `references`: back-refs, then the type's own edges; dead edges dropped.
    pub(crate) fn refs(&self, t: &Typed<Node>) -> Vec<Typed<Node>> {
        let n = &t.node;
        let own = match n.kind {
            Kind::Snapshot => self.parents.get(n).cloned(),
            Kind::Image => self
                .image_targets
                .get(n)
                .map(|d| Node::new(Kind::Content, &n.ns, d)),
            Kind::Ingest => self.expected.get(n).cloned(),
            Kind::Container => self.container_snapshot.get(n).cloned(),
            Kind::Content | Kind::Lease => None,
        };
        let record = Record {
            own,
            labels: self.labels.get(n).copied(),
            lease: self.lease_resources.get(n).map(Vec::as_slice),
        };
        let back = self.back_refs.get(n).map(Vec::as_slice);
        let mut out = edges(t, &record, back);
        out.retain(|r| self.exists(&r.node));
        out
    }
}

/// What one record contributes to its node's edges.
pub(crate) struct Record<'a> {
    /// The type's own edge: a snapshot's parent, an image's target, an ingest's expected
    /// blob, a container's snapshot.
    pub(crate) own: Option<Node>,
    /// Its labels, if it has any.
    pub(crate) labels: Option<&'a Labels>,
    /// For a live lease, what it holds.
    pub(crate) lease: Option<&'a [Typed<Node>]>,
}

/// containerd's `references` for one node given its record and the back-edges other labels
/// add: back-refs first, then the own edge (flat keeps the flag), then label refs (not for
/// flat nodes, ingests or leases). Existence is the caller's to check.
pub(crate) fn edges(
    t: &Typed<Node>,
    record: &Record<'_>,
    back: Option<&[Node]>,
) -> Vec<Typed<Node>> {
    let n = &t.node;
    let mut out: Vec<Typed<Node>> = Vec::new();
    if !t.flat
        && let Some(back) = back
    {
        out.extend(back.iter().cloned().map(Typed::normal));
    }
    if let Some(own) = &record.own {
        let flat = match n.kind {
            Kind::Snapshot | Kind::Image => t.flat,
            _ => false,
        };
        out.push(Typed {
            node: own.clone(),
            flat,
        });
    }
    if let Some(held) = record.lease {
        out.extend(held.iter().cloned());
    }
    let follow_labels = match n.kind {
        Kind::Content | Kind::Snapshot | Kind::Image => !t.flat,
        Kind::Container => true,
        Kind::Ingest | Kind::Lease => false,
    };
    if follow_labels && let Some(labels) = record.labels {
        for (k, v) in labels {
            if let Some(target) = label_ref(&n.ns, k, v) {
                out.push(Typed::normal(target));
            }
        }
    }
    out
}

/// The edges of a live lease: its resources, flat when the lease is (ingests never are).
pub(crate) fn lease_edges(
    ns: &str,
    labels: &Labels,
    resources: &[(String, String)],
) -> Vec<Typed<Node>> {
    let flat = labels.contains_key(LABEL_FLAT);
    resources
        .iter()
        .filter_map(|(kind, id)| Node::of_lease_resource(ns, kind, id))
        .map(|node| {
            let flat = flat && node.kind != Kind::Ingest;
            Typed { node, flat }
        })
        .collect()
}

/// The earliest lease or image `gc.expire`, or unleased ingest expiry, after `now`.
fn next_expiry(view: &View<'_>, now: Timestamp) -> Option<Timestamp> {
    let label = |l: &Labels| {
        l.get(LABEL_EXPIRE)
            .and_then(|v| Timestamp::parse_rfc3339(v))
    };
    view.leases
        .iter()
        .filter_map(|l| label(&l.labels))
        .chain(view.images.iter().filter_map(|i| label(&i.labels)))
        .chain(view.ingests.iter().filter_map(|i| i.expires_at))
        .filter(|t| *t >= now)
        .min()
}

pub(crate) fn expired(labels: &Labels, now: Timestamp) -> bool {
    labels
        .get(LABEL_EXPIRE)
        .and_then(|v| Timestamp::parse_rfc3339(v))
        .is_some_and(|t| t < now)
}

fn has_root_label(labels: &Labels) -> bool {
    labels.keys().any(|k| k.starts_with(LABEL_ROOT))
}

/// `name` alone, or `name` followed by `.` or `/` and anything.
fn named(rest: &str, name: &str) -> bool {
    match rest.strip_prefix(name) {
        Some("") => true,
        Some(tail) => tail.starts_with('.') || tail.starts_with('/'),
        None => false,
    }
}

/// `snapshot.<sn>[/x]` -> `<sn>`.
fn snapshotter_of(rest: &str) -> Option<&str> {
    let sn = rest.strip_prefix("snapshot.")?;
    let sn = sn.split_once('/').map_or(sn, |(s, _)| s);
    (!sn.is_empty()).then_some(sn)
}

/// Target of a `containerd.io/gc.ref.*` label.
pub fn label_ref(ns: &str, key: &str, value: &str) -> Option<Node> {
    let rest = key.strip_prefix(LABEL_REF)?;
    if value.is_empty() {
        return None;
    }
    if named(rest, "content") {
        Some(Node::new(Kind::Content, ns, value))
    } else if let Some(sn) = snapshotter_of(rest) {
        Some(Node::snapshot(ns, sn, value))
    } else if named(rest, "image") {
        Some(Node::new(Kind::Image, ns, value))
    } else {
        None
    }
}

/// The referrer named by a `containerd.io/gc.bref.*` label.
pub fn back_ref(ns: &str, key: &str, value: &str) -> Option<Node> {
    let rest = key.strip_prefix(LABEL_BREF)?;
    if value.is_empty() {
        return None;
    }
    if named(rest, "content") {
        Some(Node::new(Kind::Content, ns, value))
    } else if named(rest, "container") {
        Some(Node::new(Kind::Container, ns, value))
    } else if named(rest, "image") {
        Some(Node::new(Kind::Image, ns, value))
    } else {
        snapshotter_of(rest).map(|sn| Node::snapshot(ns, sn, value))
    }
}

/// A `containerd.io/gc.cond.snapshot[.|/]<sn>[/x]` label: its target snapshot and whether
/// its condition holds. `None` when the label is not one, or the target has no usedat value.
fn cond_ref(
    ns: &str,
    key: &str,
    value: &str,
    usedat: &HashMap<Node, Timestamp>,
    now: Timestamp,
) -> Option<(Node, bool)> {
    let rest = key.strip_prefix(LABEL_COND_SNAPSHOT)?;
    let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix('/'))?;
    let sn = rest.split_once('/').map_or(rest, |(s, _)| s);
    if sn.is_empty() {
        return None;
    }
    let (conds, skey) = value.split_once('|')?;
    let target = Node::snapshot(ns, sn, skey);
    let used = *usedat.get(&target)?;
    let age = i128::from(now.0) - i128::from(used.0);
    let holds = conds.split(',').any(|c| {
        let c = c.trim();
        let Some(rest) = c.strip_prefix("usedat") else {
            return false;
        };
        if let Some(d) = rest.strip_prefix('<').and_then(parse_go_duration) {
            age < d
        } else if let Some(d) = rest.strip_prefix('>').and_then(parse_go_duration) {
            age > d
        } else {
            false
        }
    });
    Some((target, holds))
}

/// Go's `time.ParseDuration` (`1h30m`, `1.5h`, `-2m`, `300ms`, `0`), in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    #[allow(clippy::cast_possible_truncation)]
    let nanos = total.round() as i128;
    Some(if neg { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let s = 1_000_000_000i128;
        assert_eq!(parse_go_duration("2h"), Some(7200 * s));
        assert_eq!(parse_go_duration("1h30m"), Some(5400 * s));
        assert_eq!(parse_go_duration("1.5h"), Some(5400 * s));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("-2m"), Some(-120 * s));
        assert_eq!(parse_go_duration("0"), Some(0));
        for bad in ["", "2", "h", "2d", "1h-", "."] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn label_parsing() {
        let content = |k: &str| label_ref("n", k, "d");
        assert_eq!(
            content("containerd.io/gc.ref.content"),
            Some(Node::new(Kind::Content, "n", "d"))
        );
        assert!(content("containerd.io/gc.ref.content.l.0").is_some());
        assert!(content("containerd.io/gc.ref.content/x").is_some());
        assert_eq!(content("containerd.io/gc.ref.contentbad"), None);
        assert_eq!(content("containerd.io/gc.ref.imagex"), None);
        assert_eq!(content("containerd.io/gc.ref.snapshot."), None);
        assert_eq!(content("containerd.io/gc.ref.snapshot"), None);
        assert_eq!(
            content("containerd.io/gc.ref.snapshot.overlay/x"),
            Some(Node::snapshot("n", "overlay", "d"))
        );
        assert_eq!(
            content("containerd.io/gc.ref.image/x"),
            Some(Node::new(Kind::Image, "n", "d"))
        );
        assert_eq!(label_ref("n", "containerd.io/gc.ref.content", ""), None);
        assert_eq!(
            back_ref("n", "containerd.io/gc.bref.container.x", "c"),
            Some(Node::new(Kind::Container, "n", "c"))
        );
        assert_eq!(back_ref("n", "containerd.io/gc.bref.containers", "c"), None);
        assert_eq!(
            back_ref("n", "containerd.io/gc.bref.snapshot.btrfs/1", "k"),
            Some(Node::snapshot("n", "btrfs", "k"))
        );
    }

    #[test]
    fn conditions() {
        let now = Timestamp(10 * 3_600_000_000_000);
        let mut used = HashMap::default();
        used.insert(
            Node::snapshot("n", "s", "k"),
            Timestamp(9 * 3_600_000_000_000),
        );
        let holds = |k: &str, v: &str| cond_ref("n", k, v, &used, now).map(|(_, h)| h);
        let key = "containerd.io/gc.cond.snapshot.s";
        assert_eq!(holds(key, "usedat<2h|k"), Some(true));
        assert_eq!(holds(key, "usedat<30m|k"), Some(false));
        assert_eq!(holds(key, "usedat>30m|k"), Some(true));
        assert_eq!(holds(key, "usedat<=2h|k"), Some(false));
        assert_eq!(holds(key, "other<2h,usedat<2h|k"), Some(true));
        assert_eq!(
            holds("containerd.io/gc.cond.snapshot/s/x", "usedat<2h|k"),
            Some(true)
        );
        assert_eq!(
            holds("containerd.io/gc.cond.snapshots", "usedat<2h|k"),
            None
        );
        assert_eq!(holds(key, "usedat<2h|missing"), None);
        assert_eq!(holds(key, "usedat<2h"), None);
    }
}
