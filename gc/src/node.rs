//! GC nodes: [`Node`] and [`Kind`] live in the store (write transactions name what they
//! touch with them); the traversal adds the flat flag.

pub use strata_store::object::{Kind, Node};

/// A node as the traversal sees it: containerd's flat variants (`type | 0x20`) are the same
/// node with `flat` set. Flat and non-flat are expanded separately; the reachable set masks
/// the flag away (it holds plain [`Node`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
