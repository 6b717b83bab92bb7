//! GC nodes: a typed object in one namespace (containerd's `gc.Node`).

use std::fmt;

use serde::Serialize;

/// The type of a GC node. Declaration order is the sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A blob; key = digest string.
    Content,
    /// A snapshot; key = `<snapshotter>/<key>`.
    Snapshot,
    /// An image; key = its name.
    Image,
    /// A lease; key = its id.
    Lease,
    /// An ingest; key = its ref.
    Ingest,
    /// A container; key = its id. Always a root, never swept.
    Container,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Content => "content",
            Kind::Snapshot => "snapshot",
            Kind::Image => "image",
            Kind::Lease => "lease",
            Kind::Ingest => "ingest",
            Kind::Container => "container",
        })
    }
}

/// One object in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Node {
    /// Its type.
    pub kind: Kind,
    /// Its namespace.
    pub ns: String,
    /// Its key within type and namespace.
    pub key: String,
}

impl Node {
    /// A node of `kind` named `key` in `ns`.
    pub fn new(kind: Kind, ns: impl Into<String>, key: impl Into<String>) -> Node {
        Node {
            kind,
            ns: ns.into(),
            key: key.into(),
        }
    }

    /// A snapshot node: key `<snapshotter>/<key>`.
    pub fn snapshot(ns: impl Into<String>, snapshotter: &str, key: &str) -> Node {
        Node::new(Kind::Snapshot, ns, format!("{snapshotter}/{key}"))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind, self.ns, self.key)
    }
}

/// A node as the traversal sees it: containerd's flat variants (`type | 0x20`) are the same
/// node with `flat` set. Flat and non-flat are expanded separately; the reachable set masks
/// the flag away (it holds plain [`Node`]s).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Typed<T> {
    /// The node.
    pub node: T,
    /// Whether it was reached flat (keeps only itself and, for snapshots, its parents; for
    /// images, their target).
    pub flat: bool,
}

impl<T> Typed<T> {
    /// The normal (non-flat) variant.
    pub fn normal(node: T) -> Self {
        Typed { node, flat: false }
    }

    /// The flat variant.
    pub fn flat(node: T) -> Self {
        Typed { node, flat: true }
    }
}
