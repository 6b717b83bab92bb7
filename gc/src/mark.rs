//! The mark phase: roots and edges exactly as containerd's metadata GC
//! (`core/metadata/gc.go` `scanRoots` and `references`, `pkg/gc` `Tricolor`).

use std::collections::{HashMap, HashSet};
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
}

impl Marked {
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
pub fn tricolor<T, E, F>(roots: Vec<Typed<T>>, mut refs: F) -> Result<HashSet<T>, E>
where
    T: Clone + Eq + Hash,
    F: FnMut(&Typed<T>) -> Result<Vec<Typed<T>>, E>,
{
    let mut seen: HashSet<Typed<T>> = HashSet::new();
    let mut reachable: HashSet<T> = HashSet::new();
    let mut grays: Vec<Typed<T>> = roots;
    while let Some(node) = grays.pop() {
        if !seen.insert(node.clone()) {
            continue;
        }
        for next in refs(&node)? {
            if !seen.contains(&next) {
                grays.push(next);
            }
        }
        reachable.insert(node.node);
    }
    Ok(reachable)
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
    let graph = Graph::build(&view, &snapshots, now);
    let reachable = tricolor(graph.roots.clone(), |n| {
        Ok::<_, crate::Error>(graph.refs(n))
    })?;
    let mut all: Vec<Node> = graph
        .labels
        .keys()
        .chain(graph.others.iter())
        .filter(|n| n.kind != Kind::Container)
        .cloned()
        .collect();
    all.sort();
    Ok(Marked {
        reachable,
        all,
        started_at,
    })
}

type Labels = std::collections::BTreeMap<String, String>;

/// The in-memory graph of one view.
struct Graph<'v> {
    /// Labels of every labelled object (content, snapshots, images, containers).
    labels: HashMap<Node, &'v Labels>,
    /// Objects without labels to follow: leases and ingests.
    others: HashSet<Node>,
    /// Image -> target digest.
    image_targets: HashMap<Node, String>,
    /// Snapshot -> parent snapshot node.
    parents: HashMap<Node, Node>,
    /// Ingest -> expected content node.
    expected: HashMap<Node, Node>,
    /// Container -> its snapshot node.
    container_snapshot: HashMap<Node, Node>,
    /// Extra edges: back-refs and conditional refs that hold.
    back_refs: HashMap<Node, Vec<Node>>,
    roots: Vec<Typed<Node>>,
}

impl<'v> Graph<'v> {
    fn build(view: &'v View<'_>, snapshots: &'v [SnapshotEntry], now: Timestamp) -> Graph<'v> {
        let mut g = Graph {
            labels: HashMap::new(),
            others: HashSet::new(),
            image_targets: HashMap::new(),
            parents: HashMap::new(),
            expected: HashMap::new(),
            container_snapshot: HashMap::new(),
            back_refs: HashMap::new(),
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
            g.others.insert(Node::new(Kind::Lease, &l.ns, &l.id));
        }

        // Roots, in containerd's scan order.
        let mut roots: Vec<Typed<Node>> = Vec::new();
        let mut conditional: Vec<(Node, &'v Labels)> = Vec::new();
        let mut brefs: Vec<(Node, &'v Labels)> = Vec::new();
        // 1. Live leases and what they hold.
        for l in &view.leases {
            if expired(&l.labels, now) {
                continue;
            }
            let flat = l.labels.contains_key(LABEL_FLAT);
            let typed = |n: Node| Typed { node: n, flat };
            roots.push(Typed::normal(Node::new(Kind::Lease, &l.ns, &l.id)));
            for (kind, id) in &l.resources {
                let root = match kind.split_once('/') {
                    None if kind == "content" => typed(Node::new(Kind::Content, &l.ns, id)),
                    None if kind == "ingests" => Typed::normal(Node::new(Kind::Ingest, &l.ns, id)),
                    None if kind == "images" => typed(Node::new(Kind::Image, &l.ns, id)),
                    Some(("snapshots", sn)) => typed(Node::snapshot(&l.ns, sn, id)),
                    _ => continue,
                };
                roots.push(root);
            }
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
        let mut usedat: HashMap<Node, Timestamp> = HashMap::new();
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

    fn exists(&self, n: &Node) -> bool {
        self.labels.contains_key(n) || self.others.contains(n)
    }

    /// containerd's `references`: back-refs, then the type's own edges; dead edges dropped.
    fn refs(&self, t: &Typed<Node>) -> Vec<Typed<Node>> {
        let n = &t.node;
        let mut out: Vec<Typed<Node>> = Vec::new();
        if !t.flat
            && let Some(back) = self.back_refs.get(n)
        {
            out.extend(back.iter().cloned().map(Typed::normal));
        }
        let follow_labels = match n.kind {
            Kind::Content => !t.flat,
            Kind::Snapshot => {
                if let Some(p) = self.parents.get(n) {
                    out.push(Typed {
                        node: p.clone(),
                        flat: t.flat,
                    });
                }
                !t.flat
            }
            Kind::Image => {
                if let Some(d) = self.image_targets.get(n) {
                    out.push(Typed {
                        node: Node::new(Kind::Content, &n.ns, d),
                        flat: t.flat,
                    });
                }
                !t.flat
            }
            Kind::Ingest => {
                if let Some(e) = self.expected.get(n) {
                    out.push(Typed::normal(e.clone()));
                }
                false
            }
            Kind::Container => {
                if let Some(s) = self.container_snapshot.get(n) {
                    out.push(Typed::normal(s.clone()));
                }
                true
            }
            Kind::Lease => false,
        };
        if follow_labels && let Some(labels) = self.labels.get(n) {
            for (k, v) in labels.iter() {
                if let Some(target) = label_ref(&n.ns, k, v) {
                    out.push(Typed::normal(target));
                }
            }
        }
        out.retain(|r| self.exists(&r.node));
        out
    }
}

fn expired(labels: &Labels, now: Timestamp) -> bool {
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
        let mut used = HashMap::new();
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
