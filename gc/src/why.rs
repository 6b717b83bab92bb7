//! `why`: which roots keep an object, and by which references.
//!
//! The graph of one read transaction is traced from every root as the mark does; then a
//! backward depth-first search from the object enumerates every path root → … → object that
//! the traversal follows (no object twice on a path), each step saying which reference it
//! follows (a label, a parent, an image target, a lease) and, for leases and images, when
//! they expire. A path may pass through other roots (a lease holding an image that keeps a
//! layer); each root on the way starts a path of its own. At most [`MAX_PATHS`] are returned,
//! and [`Why::truncated`] says when there were more.

use std::path::{Component, Path};

use serde::Serialize;
use strata_snapshotter::gc::snapshot_records;
use strata_store::gcview::View;
use strata_store::{Digest, Store, Timestamp};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::Result;
use crate::graph::{Graph, Id, Root, bit};
use crate::mark::Via;
use crate::node::{Kind, Node, Typed};

/// Most paths reported for one object.
pub const MAX_PATHS: usize = 64;

/// Most steps the search for paths takes before it stops and reports [`Why::truncated`].
const SEARCH_STEPS: usize = 1_000_000;

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
    /// How many roots keep it (each has at least one path in `paths`, unless there are
    /// more than [`MAX_PATHS`] roots).
    pub roots: usize,
    /// Every path from a root to the object, by root, then shortest first: a shortest path
    /// from every root first, then the others.
    pub paths: Vec<WhyPath>,
    /// There may be more paths than `paths` (more than [`MAX_PATHS`], or the search stopped
    /// after a million steps).
    pub truncated: bool,
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
    let graph = Graph::read(&txn, now)?;
    let Some(target) = graph.nodes.get(object).filter(|&id| graph.nodes.exists(id)) else {
        return Ok(Why {
            object: object.clone(),
            exists: false,
            kept: false,
            roots: 0,
            paths: Vec::new(),
            truncated: false,
        });
    };
    let mut state = vec![0u8; graph.nodes.len()];
    graph.walk(graph.root_starts(), &mut state, |_, _| {});
    let kept = state[target as usize] != 0;

    // Who references each typed node the roots reach, and by which reference.
    let mut referrers: FxHashMap<Typed<Id>, Vec<(Typed<Id>, Via)>> = FxHashMap::default();
    for id in graph.nodes.ids() {
        for flat in [false, true] {
            if state[id as usize] & bit(flat) == 0 {
                continue;
            }
            for e in graph.edges(id) {
                if let Some(to_flat) = graph.step(id, flat, e)
                    && state[e.to as usize] & bit(to_flat) != 0
                {
                    referrers
                        .entry(Typed {
                            node: e.to,
                            flat: to_flat,
                        })
                        .or_default()
                        .push((Typed { node: id, flat }, e.via));
                }
            }
        }
    }
    let roots: FxHashMap<Id, Root> = graph.roots.iter().rev().copied().collect();
    let is_root = |t: Typed<Id>| !t.flat && roots.contains_key(&t.node);

    // Backward depth-first search over simple paths. `path[i]` references `path[i - 1]` by
    // `path[i].via` (`path[0]` is the object); `path[i].next` is the next referrer to try.
    struct Frame {
        node: Typed<Id>,
        via: Option<Via>,
        next: usize,
    }
    // Every root that reaches the object, with a shortest path from each, comes first, so
    // a truncated answer still names every root (up to MAX_PATHS of them).
    let mut found = shortest_paths(target, &state, &referrers, is_root);
    let roots_keeping = found.len();
    found.sort_by_cached_key(|p| graph.nodes.node(p[0].0.node));
    let mut truncated = found.len() > MAX_PATHS;
    found.truncate(MAX_PATHS);
    let mut budget = SEARCH_STEPS;
    let mut on_path: FxHashSet<Typed<Id>> = FxHashSet::default();
    let mut emit = |path: &[Frame], truncated: &mut bool| {
        let p: Vec<(Typed<Id>, Option<Via>)> = path.iter().rev().map(|f| (f.node, f.via)).collect();
        if found.contains(&p) {
            return;
        }
        if found.len() == MAX_PATHS {
            *truncated = true;
        } else {
            found.push(p);
        }
    };
    'search: for flat in [false, true] {
        let start = Typed { node: target, flat };
        if state[target as usize] & bit(flat) == 0 {
            continue;
        }
        let mut path = vec![Frame {
            node: start,
            via: None,
            next: 0,
        }];
        on_path.insert(start);
        if is_root(start) {
            emit(&path, &mut truncated);
        }
        while let Some(top) = path.last_mut() {
            let next = referrers.get(&top.node).and_then(|r| r.get(top.next));
            top.next += 1;
            match next {
                Some(&(r, via)) if !on_path.contains(&r) => {
                    // Simple paths can be exponentially many (back references make cycles):
                    // the search is bounded, and says so.
                    budget -= 1;
                    if budget == 0 {
                        truncated = true;
                        break 'search;
                    }
                    path.push(Frame {
                        node: r,
                        via: Some(via),
                        next: 0,
                    });
                    on_path.insert(r);
                    if is_root(r) {
                        emit(&path, &mut truncated);
                        if truncated {
                            break 'search;
                        }
                    }
                }
                Some(_) => {}
                None => {
                    on_path.remove(&top.node);
                    path.pop();
                }
            }
        }
    }
    found.sort_by_cached_key(|p| (graph.nodes.node(p[0].0.node), p.len()));

    let paths = found
        .into_iter()
        .map(|p| {
            // Root first: each step's reason is how the step before references it, which
            // the step before carries as its `via`.
            let steps = p
                .iter()
                .enumerate()
                .map(|(k, &(n, _))| Step {
                    node: graph.nodes.node(n.node),
                    flat: n.flat,
                    via: (k > 0).then(|| {
                        let (from, via) = p[k - 1];
                        via.map_or_else(String::new, |v| via_reason(&graph, from.node, v))
                    }),
                    expires: graph.expires.get(&n.node).map(|e| e.to_string()),
                })
                .collect();
            WhyPath {
                root: roots
                    .get(&p[0].0.node)
                    .map_or_else(String::new, |r| root_reason(&graph, *r)),
                steps,
            }
        })
        .collect();
    Ok(Why {
        object: object.clone(),
        exists: true,
        kept,
        roots: roots_keeping,
        paths,
        truncated,
    })
}

/// Every object whose key is `text` in namespace `ns` (or any namespace): a digest names a
/// blob, otherwise an image, lease, ingest or snapshot (`<snapshotter>/<key>` or a bare key
/// in any snapshotter) of that name. An absolute path inside the store names the object whose
/// data it is in: `content/blobs/<alg>/<hex>` a blob, `content/ingest/<id>/...` an ingest,
/// `snapshots/<snapshotter>/<id>/...` a snapshot (any file below the directory too).
///
/// # Errors
/// Corrupt records; database errors.
pub fn resolve(store: &Store, ns: Option<&str>, text: &str) -> Result<Vec<Node>> {
    let txn = store.db().read()?;
    let view = View::new(&txn)?;
    let snapshots = snapshot_records(&txn)?;
    let in_ns = |n: &str| ns.is_none_or(|want| want == n);
    let mut out = Vec::new();
    match data_of(store, text) {
        Some(Data::Blob(digest)) => out.extend(
            view.blobs
                .iter()
                .filter(|b| in_ns(&b.ns) && b.digest.to_string() == digest)
                .map(|b| Node::new(Kind::Content, &b.ns, &digest)),
        ),
        Some(Data::Ingest(id)) => out.extend(
            view.ingests
                .iter()
                .filter(|i| in_ns(&i.ns) && i.id == id)
                .map(|i| Node::new(Kind::Ingest, &i.ns, &i.reference)),
        ),
        Some(Data::Snapshot(sn, id)) => out.extend(
            snapshots
                .iter()
                .filter(|s| in_ns(&s.ns) && s.snapshotter == sn && s.id == id)
                .map(|s| Node::snapshot(&s.ns, &s.snapshotter, &s.key)),
        ),
        None => {}
    }
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

/// A path root first: each object with the reference by which it names the next one (`None`
/// for the object asked about, last).
type RootPath = Vec<(Typed<Id>, Option<Via>)>;

/// For every root (by `is_root`) that reaches `target`, one shortest path from it: a
/// backward breadth-first search over `referrers` from the reached variants of `target`.
fn shortest_paths(
    target: Id,
    state: &[u8],
    referrers: &FxHashMap<Typed<Id>, Vec<(Typed<Id>, Via)>>,
    is_root: impl Fn(Typed<Id>) -> bool,
) -> Vec<RootPath> {
    // `toward[n]`: n's next step toward the target, and the reference leading there.
    let mut toward: FxHashMap<Typed<Id>, Option<(Typed<Id>, Via)>> = FxHashMap::default();
    let mut queue = std::collections::VecDeque::new();
    for flat in [false, true] {
        if state[target as usize] & bit(flat) != 0 {
            let t = Typed { node: target, flat };
            toward.insert(t, None);
            queue.push_back(t);
        }
    }
    let mut out = Vec::new();
    while let Some(n) = queue.pop_front() {
        if is_root(n) {
            let mut path = Vec::new();
            let mut cur = Some(n);
            while let Some(c) = cur {
                let next = toward.get(&c).copied().flatten();
                path.push((c, next.map(|(_, via)| via)));
                cur = next.map(|(to, _)| to);
            }
            out.push(path);
        }
        for &(r, via) in referrers.get(&n).into_iter().flatten() {
            toward.entry(r).or_insert_with(|| {
                queue.push_back(r);
                Some((n, via))
            });
        }
    }
    out
}

/// Whose data a path inside the store is.
#[derive(Debug, PartialEq, Eq)]
enum Data {
    /// A blob file: its digest.
    Blob(String),
    /// An ingest directory: its id.
    Ingest(u64),
    /// A snapshot directory: its snapshotter and id.
    Snapshot(String, u64),
}

/// The object whose data the absolute path `text` is in, if it lies inside `store`'s root
/// (as given, or with symbolic links resolved).
fn data_of(store: &Store, text: &str) -> Option<Data> {
    let path = Path::new(text);
    // `..` would make the path's text name another object than the file it reaches.
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let root = store.layout().root();
    let roots = [Some(root.to_path_buf()), std::fs::canonicalize(root).ok()];
    let paths = [Some(path.to_path_buf()), std::fs::canonicalize(path).ok()];
    roots
        .iter()
        .flatten()
        .flat_map(|r| paths.iter().flatten().map(move |p| (r, p)))
        .find_map(|(r, p)| data_in(p.strip_prefix(r).ok()?))
}

/// [`data_of`] for a path relative to the store's root.
fn data_in(rest: &Path) -> Option<Data> {
    let parts: Vec<&str> = rest
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        ["content", "blobs", alg, hex, ..] => {
            let digest = format!("{alg}:{hex}");
            Digest::check(&digest).ok()?;
            Some(Data::Blob(digest))
        }
        ["content", "ingest", id, ..] => Some(Data::Ingest(canonical(id)?)),
        ["snapshots", sn, id, ..] => Some(Data::Snapshot((*sn).to_owned(), canonical(id)?)),
        _ => None,
    }
}

/// The id a directory name spells (`12`, not `012`).
fn canonical(name: &str) -> Option<u64> {
    let id: u64 = name.parse().ok()?;
    (id.to_string() == name).then_some(id)
}

fn root_reason(graph: &Graph, root: Root) -> String {
    match root {
        Root::Lease => "live lease".into(),
        Root::Image => "image".into(),
        Root::Container => "container".into(),
        Root::Ingest => "unexpired ingest".into(),
        Root::Label(label) => format!("{} label", graph.label(label)),
    }
}

/// How `from` references the next step by `via`.
fn via_reason(graph: &Graph, from: Id, via: Via) -> String {
    match via {
        Via::Own => match graph.nodes.kind(from) {
            Kind::Snapshot => "parent",
            Kind::Image => "target",
            Kind::Ingest => "expected",
            Kind::Container => "snapshot",
            // Content and leases have no own reference.
            Kind::Content | Kind::Lease => "reference",
        }
        .into(),
        Via::Lease { .. } => "lease".into(),
        Via::Label(label) => graph.label(label).into(),
        Via::BackRef(label) => format!("back reference {}", graph.label(label)),
        Via::Cond(label) => format!("conditional reference {}", graph.label(label)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_data_they_are_in() {
        let hex = "a".repeat(64);
        let data = |p: &str| data_in(Path::new(p));
        assert_eq!(
            data(&format!("content/blobs/sha256/{hex}")),
            Some(Data::Blob(format!("sha256:{hex}")))
        );
        assert_eq!(data("content/blobs/sha256/abc"), None, "not a digest");
        assert_eq!(data("content/ingest/7/data"), Some(Data::Ingest(7)));
        assert_eq!(
            data("snapshots/overlay/1384/fs/etc/passwd"),
            Some(Data::Snapshot("overlay".into(), 1384))
        );
        assert_eq!(
            data("snapshots/overlay/01384"),
            None,
            "not an id's spelling"
        );
        assert_eq!(
            data("snapshots/overlay/new-5"),
            None,
            "not a snapshot's directory"
        );
        assert_eq!(data("snapshots/overlay"), None);
        assert_eq!(data("meta.redb"), None);
        let store = tempfile::tempdir().unwrap();
        let store = Store::open(store.path(), strata_store::StoreOptions::default()).unwrap();
        let root = store.layout().root().display().to_string();
        assert_eq!(
            data_of(&store, &format!("{root}/snapshots/native/1/fs/x")),
            Some(Data::Snapshot("native".into(), 1))
        );
        assert_eq!(
            data_of(&store, &format!("{root}/snapshots/native/1/../2/fs/x")),
            None,
            "`..` is refused, not read as the first id"
        );
        assert_eq!(data_of(&store, "snapshots/native/1"), None, "relative");
    }
}
