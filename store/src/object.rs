//! Objects as the garbage collector names them: a type, a namespace and a key
//! (containerd's `gc.Node`). Write transactions report the objects they create or change
//! in these terms (see [`crate::db::WriteTxn::touch`]).

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

impl Node {
    /// The object a lease resource row `(type, id)` names: `content`, `ingests`, `images` or
    /// `snapshots/<snapshotter>`; `None` for a type the collector does not know.
    pub fn of_lease_resource(ns: &str, kind: &str, id: &str) -> Option<Node> {
        match lease_resource_kind(kind)? {
            (Kind::Snapshot, Some(sn)) => Some(Node::snapshot(ns, sn, id)),
            (kind, _) => Some(Node::new(kind, ns, id)),
        }
    }
}

/// The kind a lease resource type names, and for snapshots their snapshotter: `content`,
/// `ingests`, `images` or `snapshots/<snapshotter>`; `None` for a type the collector does not
/// know.
pub fn lease_resource_kind(kind: &str) -> Option<(Kind, Option<&str>)> {
    match kind.split_once('/') {
        None if kind == "content" => Some((Kind::Content, None)),
        None if kind == "ingests" => Some((Kind::Ingest, None)),
        None if kind == "images" => Some((Kind::Image, None)),
        Some(("snapshots", sn)) if !sn.is_empty() => Some((Kind::Snapshot, Some(sn))),
        _ => None,
    }
}
