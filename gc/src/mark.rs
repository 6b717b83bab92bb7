//! The mark phase: roots and edges exactly as containerd's metadata GC
//! (`core/metadata/gc.go` `scanRoots` and `references`, `pkg/gc` `Tricolor`).

// Fx hashing: the graph holds a node per record (a million at 100 000 sets), and SipHash
// showed up in profiles; nothing here is keyed by untrusted input an attacker could collide.
use rustc_hash::FxHashSet as HashSet;
use std::hash::Hash;

use strata_store::{Store, Timestamp};

use crate::error::Result;
use crate::graph::{self, Graph, Id};
use crate::node::{Kind, Node, Typed};

/// Prefix of every label the collector reads.
pub(crate) const LABEL_PREFIX: &str = "containerd.io/gc.";

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

/// The result of a mark: the graph of one read transaction and what the roots reach.
pub struct Marked {
    pub(crate) graph: Graph,
    /// Per id: [`graph::NORMAL`] and/or [`graph::FLAT`] when reached that way.
    pub(crate) state: Vec<u8>,
    /// When the mark began (before its read transaction was opened).
    pub started_at: Timestamp,
    /// The clock the mark judged expiry and conditions by.
    pub now: Timestamp,
    /// The earliest expiry still ahead of `now` (a lease's or image's `gc.expire`, an
    /// unleased ingest's): when a collection would next find something new to remove
    /// without any write.
    pub next_expiry: Option<Timestamp>,
}

impl std::fmt::Debug for Marked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marked")
            .field("objects", &self.graph.nodes.len())
            .field("reached", &self.state.iter().filter(|s| **s != 0).count())
            .field("started_at", &self.started_at)
            .field("now", &self.now)
            .field("next_expiry", &self.next_expiry)
            .finish()
    }
}

impl Marked {
    fn state_of(&self, n: &Node) -> u8 {
        self.graph
            .nodes
            .get(n)
            .map_or(0, |id| self.state[id as usize])
    }

    /// Whether a root reaches `n` (normally or flat).
    pub fn is_reachable(&self, n: &Node) -> bool {
        self.state_of(n) != 0
    }

    /// Whether the mark followed every reference of `n` (reached it, and not only flat).
    pub fn expanded(&self, n: &Node) -> bool {
        self.state_of(n) & graph::NORMAL != 0
    }

    /// Every object a root reaches (containers included), sorted.
    pub fn reachable(&self) -> Vec<Node> {
        self.select(|g, id, s| s != 0 && g.nodes.exists(id))
    }

    /// Every collectible object (leases, snapshots, ingests, blobs, images: containers are
    /// never collected), sorted.
    pub fn all(&self) -> Vec<Node> {
        self.select(|g, id, _| collectible(g, id))
    }

    /// What a sweep would remove: every collectible object no root reaches, sorted.
    pub fn unreachable(&self) -> Vec<Node> {
        self.select(|g, id, s| s == 0 && collectible(g, id))
    }

    fn select(&self, keep: impl Fn(&Graph, Id, u8) -> bool) -> Vec<Node> {
        let mut out: Vec<Node> = self
            .graph
            .nodes
            .ids()
            .filter(|&id| keep(&self.graph, id, self.state[id as usize]))
            .map(|id| self.graph.nodes.node(id))
            .collect();
        out.sort();
        out
    }

    /// The edges the labels of *other* objects add from `n` (back references, conditional
    /// references that held): what the sweep's final trace follows besides `n`'s own record.
    pub(crate) fn back_refs(&self, n: &Node) -> Vec<Node> {
        let Some(id) = self.graph.nodes.get(n) else {
            return Vec::new();
        };
        self.graph
            .edges(id)
            .iter()
            .filter(|e| matches!(e.via, Via::BackRef(_) | Via::Cond(_)))
            .map(|e| self.graph.nodes.node(e.to))
            .collect()
    }
}

fn collectible(g: &Graph, id: Id) -> bool {
    g.nodes.exists(id) && g.nodes.kind(id) != Kind::Container
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
    mark_txn(&txn, started_at, now)
}

/// Marks the records of one read transaction (see [`mark`]).
pub(crate) fn mark_txn(
    txn: &redb::ReadTransaction,
    started_at: Timestamp,
    now: Timestamp,
) -> Result<Marked> {
    let graph = Graph::read(txn, now)?;
    let mut state = vec![0u8; graph.nodes.len()];
    graph.walk(graph.root_starts(), &mut state, |_, _| {});
    Ok(Marked {
        next_expiry: graph.next_expiry,
        graph,
        state,
        started_at,
        now,
    })
}

pub(crate) type Labels = std::collections::BTreeMap<String, String>;

/// How a reference is followed (containerd's `references`, per edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The type's own reference: a snapshot's parent, an image's target, an ingest's
    /// expected blob, a container's snapshot.
    Own,
    /// A live lease holds it; `flat` for a flat lease (ingests never are).
    Lease { flat: bool },
    /// A `gc.ref.*` label of the referrer (index of the label key).
    Label(u32),
    /// A `gc.bref.*` label of the *target* naming the referrer.
    BackRef(u32),
    /// A `gc.cond.snapshot*` label of the referrer whose condition held.
    Cond(u32),
}

/// Whether a node of `kind` reached `flat` follows a reference `via`: `Some(flat)` of the
/// target when it does, `None` when not. The one statement of containerd's flat rules:
/// - a flat node keeps only its own reference (a snapshot its parent, an image its target),
///   which is flat in turn; every other own reference leads to a normal node;
/// - label references, back references and conditional references are followed from normal
///   content, snapshots and images only, and from containers (never flat); leases and
///   ingests have none.
pub(crate) fn follow(kind: Kind, flat: bool, via: Via) -> Option<bool> {
    match via {
        Via::Own => Some(flat && matches!(kind, Kind::Snapshot | Kind::Image)),
        Via::Lease { flat } => Some(flat),
        Via::Label(_) | Via::BackRef(_) | Via::Cond(_) => match kind {
            Kind::Content | Kind::Snapshot | Kind::Image => (!flat).then_some(false),
            Kind::Container => Some(false),
            Kind::Ingest | Kind::Lease => None,
        },
    }
}

/// What one record contributes to its node's edges (the sweep's trace of current records).
pub(crate) struct Record<'a> {
    /// The type's own edge: a snapshot's parent, an image's target, an ingest's expected
    /// blob, a container's snapshot.
    pub(crate) own: Option<Node>,
    /// Its labels, if it has any.
    pub(crate) labels: Option<&'a Labels>,
    /// For a live lease, what it holds.
    pub(crate) lease: Option<&'a [Typed<Node>]>,
}

/// The edges of `t` given its current record and the back-edges other labels add, by
/// [`follow`]. Existence is the caller's to check.
pub(crate) fn edges(t: &Typed<Node>, record: &Record<'_>, back: &[Node]) -> Vec<Typed<Node>> {
    let n = &t.node;
    let mut out: Vec<Typed<Node>> = Vec::new();
    let mut add = |node: Node, via: Via| {
        if let Some(flat) = follow(n.kind, t.flat, via) {
            out.push(Typed { node, flat });
        }
    };
    for b in back {
        add(b.clone(), Via::BackRef(0));
    }
    if let Some(own) = &record.own {
        add(own.clone(), Via::Own);
    }
    for held in record.lease.unwrap_or_default() {
        add(held.node.clone(), Via::Lease { flat: held.flat });
    }
    for (k, v) in record.labels.into_iter().flatten() {
        if let Some(target) = ref_target(k, v) {
            add(target.node(&n.ns), Via::Label(0));
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
        .filter_map(|(kind, id)| lease_resource_target(kind, id))
        .map(|t| Typed {
            flat: flat && t.kind != Kind::Ingest,
            node: t.node(ns),
        })
        .collect()
}

pub(crate) fn expired(labels: &Labels, now: Timestamp) -> bool {
    labels
        .get(LABEL_EXPIRE)
        .and_then(|v| Timestamp::parse_rfc3339(v))
        .is_some_and(|t| t < now)
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

/// An object a label or lease resource names, borrowed from it (in the namespace of the
/// record that names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    pub(crate) kind: Kind,
    /// For a snapshot, its snapshotter (the node's key is `<snapshotter>/<key>`).
    pub(crate) snapshotter: Option<&'a str>,
    pub(crate) key: &'a str,
}

impl Target<'_> {
    fn plain(kind: Kind, key: &str) -> Target<'_> {
        Target {
            kind,
            snapshotter: None,
            key,
        }
    }

    fn snapshot<'a>(snapshotter: &'a str, key: &'a str) -> Target<'a> {
        Target {
            kind: Kind::Snapshot,
            snapshotter: Some(snapshotter),
            key,
        }
    }

    /// The node in namespace `ns`.
    pub(crate) fn node(&self, ns: &str) -> Node {
        match self.snapshotter {
            Some(sn) => Node::snapshot(ns, sn, self.key),
            None => Node::new(self.kind, ns, self.key),
        }
    }
}

/// Target of a `containerd.io/gc.ref.*` label.
pub(crate) fn ref_target<'a>(key: &'a str, value: &'a str) -> Option<Target<'a>> {
    let rest = key.strip_prefix(LABEL_REF)?;
    if value.is_empty() {
        return None;
    }
    if named(rest, "content") {
        Some(Target::plain(Kind::Content, value))
    } else if let Some(sn) = snapshotter_of(rest) {
        Some(Target::snapshot(sn, value))
    } else if named(rest, "image") {
        Some(Target::plain(Kind::Image, value))
    } else {
        None
    }
}

/// The referrer a `containerd.io/gc.bref.*` label names.
pub(crate) fn back_ref_target<'a>(key: &'a str, value: &'a str) -> Option<Target<'a>> {
    let rest = key.strip_prefix(LABEL_BREF)?;
    if value.is_empty() {
        return None;
    }
    if named(rest, "content") {
        Some(Target::plain(Kind::Content, value))
    } else if named(rest, "container") {
        Some(Target::plain(Kind::Container, value))
    } else if named(rest, "image") {
        Some(Target::plain(Kind::Image, value))
    } else {
        snapshotter_of(rest).map(|sn| Target::snapshot(sn, value))
    }
}

/// The object a lease resource row `(type, id)` names: `content`, `ingests`, `images` or
/// `snapshots/<snapshotter>`; `None` for a type the collector does not know.
pub(crate) fn lease_resource_target<'a>(kind: &'a str, id: &'a str) -> Option<Target<'a>> {
    let (kind, snapshotter) = strata_store::object::lease_resource_kind(kind)?;
    Some(Target {
        kind,
        snapshotter,
        key: id,
    })
}

/// Target of a `containerd.io/gc.ref.*` label in namespace `ns`.
pub fn label_ref(ns: &str, key: &str, value: &str) -> Option<Node> {
    ref_target(key, value).map(|t| t.node(ns))
}

/// The referrer named by a `containerd.io/gc.bref.*` label in namespace `ns`.
pub fn back_ref(ns: &str, key: &str, value: &str) -> Option<Node> {
    back_ref_target(key, value).map(|t| t.node(ns))
}

/// A `containerd.io/gc.cond.snapshot[.|/]<sn>[/x]` label with value `<conditions>|<key>`:
/// `(snapshotter, key, conditions)`, or `None` when the label is not one.
pub(crate) fn conditional<'a>(key: &'a str, value: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = key.strip_prefix(LABEL_COND_SNAPSHOT)?;
    let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix('/'))?;
    let sn = rest.split_once('/').map_or(rest, |(s, _)| s);
    if sn.is_empty() {
        return None;
    }
    let (conditions, skey) = value.split_once('|')?;
    Some((sn, skey, conditions))
}

/// Whether any of the comma-separated `conditions` (`usedat<d`, `usedat>d`, Go durations)
/// holds for a snapshot last used at `used`, judged at `now`.
pub(crate) fn condition_holds(conditions: &str, used: Timestamp, now: Timestamp) -> bool {
    let age = i128::from(now.0) - i128::from(used.0);
    conditions.split(',').any(|c| {
        let Some(rest) = c.trim().strip_prefix("usedat") else {
            return false;
        };
        if let Some(d) = rest.strip_prefix('<').and_then(parse_go_duration) {
            age < d
        } else if let Some(d) = rest.strip_prefix('>').and_then(parse_go_duration) {
            age > d
        } else {
            false
        }
    })
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

    /// The target of a conditional label and whether it holds, given usedat values.
    fn cond_ref(
        ns: &str,
        key: &str,
        value: &str,
        usedat: &std::collections::HashMap<Node, Timestamp>,
        now: Timestamp,
    ) -> Option<(Node, bool)> {
        let (sn, skey, conditions) = conditional(key, value)?;
        let target = Node::snapshot(ns, sn, skey);
        let used = *usedat.get(&target)?;
        Some((target, condition_holds(conditions, used, now)))
    }

    #[test]
    fn conditions() {
        let now = Timestamp(10 * 3_600_000_000_000);
        let mut used = std::collections::HashMap::new();
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
