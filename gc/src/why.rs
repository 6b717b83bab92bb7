//! `why`: which roots keep an object, and by which references.
//!
//! The graph of one read transaction is traced from every root as the mark does; then a
//! backward search from the object finds every root that reaches it and, for each, one
//! shortest path root → … → object, each step saying which reference it follows (a label,
//! a parent, an image target, a lease) and, for leases and images, when they expire.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;
use strata_snapshotter::gc::snapshot_records;
use strata_store::gcview::View;
use strata_store::{Digest, Store, Timestamp};

use crate::error::Result;
use crate::mark::{Graph, LABEL_EXPIRE, LABEL_ROOT, label_ref, tricolor};
use crate::node::{Kind, Node, Typed};

/// Most paths reported for one object (one per root).
const MAX_PATHS: usize = 64;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The object at this step.
    pub node: Node,
    /// Reached flat (only its own data kept, not what its labels reference).
    pub flat: bool,
    /// How the previous step references this one (`None` for the root): a label key,
    /// `target`, `parent`, `snapshot`, `expected`, `lease`, or `back reference <label>`.
    pub via: Option<String>,
    /// For a lease or image with `containerd.io/gc.expire`: when it expires.
    pub expires: Option<String>,
}

/// The answer for one object.
#[derive(Debug, Clone, Serialize)]
pub struct Why {
    /// The object asked about.
    pub object: Node,
    /// Whether it has a record.
    pub exists: bool,
    /// Whether a collection now would keep it.
    pub kept: bool,
    /// For the root of each path, why it is a root (`live lease`, `image`, `container`,
    /// `gc.root label`, `unexpired ingest`).
    pub paths: Vec<WhyPath>,
}

/// One root and the path from it.
#[derive(Debug, Clone, Serialize)]
pub struct WhyPath {
    /// Why the first step is a root.
    pub root: String,
    /// Root first, the object last.
    pub steps: Vec<Step>,
}

/// Why `object` is kept, as of now.
///
/// # Errors
/// Corrupt records; database errors.
pub fn why(store: &Store, object: &Node) -> Result<Why> {
    why_at(store, object, Timestamp::now())
}

/// [`why`] judged by the clock `now`.
///
/// # Errors
/// As [`why`].
pub fn why_at(store: &Store, object: &Node, now: Timestamp) -> Result<Why> {
    let txn = store.db().read()?;
    let view = View::new(&txn)?;
    let snapshots = snapshot_records(&txn)?;
    let graph = Graph::build(&view, &snapshots, now);
    let exists = graph.exists(object);

    // Forward trace from every root, recording each typed node's referrers.
    let mut referrers: HashMap<Typed<Node>, Vec<Typed<Node>>> = HashMap::new();
    let reachable = tricolor(graph.roots.clone(), |n| {
        let out = graph.refs(n);
        for m in &out {
            referrers.entry(m.clone()).or_default().push(n.clone());
        }
        Ok::<_, crate::Error>(out)
    })?;
    let kept = reachable.contains(object);
    let roots: HashSet<&Typed<Node>> = graph.roots.iter().collect();

    // Backward breadth-first search: `toward[n]` is n's next step toward the object.
    let mut toward: HashMap<Typed<Node>, Option<Typed<Node>>> = HashMap::new();
    let mut queue = VecDeque::new();
    for flat in [false, true] {
        let t = Typed {
            node: object.clone(),
            flat,
        };
        if referrers.contains_key(&t) || roots.contains(&t) {
            toward.insert(t.clone(), None);
            queue.push_back(t);
        }
    }
    let mut found: Vec<Typed<Node>> = Vec::new();
    while let Some(n) = queue.pop_front() {
        if roots.contains(&n) {
            found.push(n.clone());
        }
        for r in referrers.get(&n).into_iter().flatten() {
            if !toward.contains_key(r) {
                toward.insert(r.clone(), Some(n.clone()));
                queue.push_back(r.clone());
            }
        }
    }
    found.sort_by(|a, b| a.node.cmp(&b.node));
    found.dedup();

    let paths = found
        .into_iter()
        .take(MAX_PATHS)
        .map(|root| {
            let mut steps = Vec::new();
            let mut prev: Option<Typed<Node>> = None;
            let mut cur = Some(root.clone());
            while let Some(n) = cur {
                steps.push(Step {
                    node: n.node.clone(),
                    flat: n.flat,
                    via: prev.as_ref().map(|p| edge_reason(&graph, &p.node, &n.node)),
                    expires: expiry(&graph, &n.node),
                });
                cur = toward.get(&n).cloned().flatten();
                prev = Some(n);
            }
            WhyPath {
                root: root_reason(&graph, &root.node),
                steps,
            }
        })
        .collect();
    Ok(Why {
        object: object.clone(),
        exists,
        kept,
        paths,
    })
}

/// Every object whose key is `text` in namespace `ns` (or any namespace): a digest names a
/// blob, otherwise an image, lease, ingest or snapshot (`<snapshotter>/<key>` or a bare key
/// in any snapshotter) of that name.
///
/// # Errors
/// Corrupt records; database errors.
pub fn resolve(store: &Store, ns: Option<&str>, text: &str) -> Result<Vec<Node>> {
    let txn = store.db().read()?;
    let view = View::new(&txn)?;
    let snapshots = snapshot_records(&txn)?;
    let in_ns = |n: &str| ns.is_none_or(|want| want == n);
    let mut out = Vec::new();
    if text.parse::<Digest>().is_ok() {
        out.extend(
            view.blobs
                .iter()
                .filter(|b| in_ns(&b.ns) && b.digest.to_string() == text)
                .map(|b| Node::new(Kind::Content, &b.ns, text)),
        );
    }
    out.extend(
        view.images
            .iter()
            .filter(|i| in_ns(&i.ns) && i.name == text)
            .map(|i| Node::new(Kind::Image, &i.ns, &i.name)),
    );
    out.extend(
        view.leases
            .iter()
            .filter(|l| in_ns(&l.ns) && l.id == text)
            .map(|l| Node::new(Kind::Lease, &l.ns, &l.id)),
    );
    out.extend(
        view.ingests
            .iter()
            .filter(|i| in_ns(&i.ns) && i.reference == text)
            .map(|i| Node::new(Kind::Ingest, &i.ns, &i.reference)),
    );
    out.extend(
        snapshots
            .iter()
            .filter(|s| {
                in_ns(&s.ns) && (s.key == text || format!("{}/{}", s.snapshotter, s.key) == text)
            })
            .map(|s| Node::snapshot(&s.ns, &s.snapshotter, &s.key)),
    );
    out.sort();
    out.dedup();
    Ok(out)
}

fn expiry(graph: &Graph<'_>, n: &Node) -> Option<String> {
    match n.kind {
        Kind::Lease => graph
            .lease_labels
            .get(n)
            .and_then(|l| l.get(LABEL_EXPIRE).cloned()),
        Kind::Image => graph
            .labels
            .get(n)
            .and_then(|l| l.get(LABEL_EXPIRE).cloned()),
        _ => None,
    }
}

fn root_reason(graph: &Graph<'_>, n: &Node) -> String {
    match n.kind {
        Kind::Lease => "live lease".into(),
        Kind::Image => "image".into(),
        Kind::Container => "container".into(),
        Kind::Ingest => "unexpired ingest".into(),
        Kind::Content | Kind::Snapshot => {
            let label = graph
                .labels
                .get(n)
                .and_then(|l| l.keys().find(|k| k.starts_with(LABEL_ROOT)).cloned());
            format!("{} label", label.unwrap_or_else(|| LABEL_ROOT.into()))
        }
    }
}

/// How `from` references `to`.
fn edge_reason(graph: &Graph<'_>, from: &Node, to: &Node) -> String {
    if graph
        .lease_resources
        .get(from)
        .is_some_and(|held| held.iter().any(|t| &t.node == to))
    {
        return "lease".into();
    }
    if graph.parents.get(from) == Some(to) {
        return "parent".into();
    }
    if from.kind == Kind::Image
        && graph
            .image_targets
            .get(from)
            .is_some_and(|d| to.kind == Kind::Content && &to.key == d)
    {
        return "target".into();
    }
    if graph.expected.get(from) == Some(to) {
        return "expected".into();
    }
    if graph.container_snapshot.get(from) == Some(to) {
        return "snapshot".into();
    }
    if let Some(labels) = graph.labels.get(from)
        && let Some((k, _)) = labels
            .iter()
            .find(|(k, v)| label_ref(&from.ns, k, v).as_ref() == Some(to))
    {
        return k.clone();
    }
    if let Some(labels) = graph.labels.get(to)
        && let Some((k, _)) = labels
            .iter()
            .find(|(k, v)| crate::mark::back_ref(&to.ns, k, v).as_ref() == Some(from))
    {
        return format!("back reference {k}");
    }
    "conditional reference".into()
}
