//! The collector's error type.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while collecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the metadata store (a corrupt record names its table and key).
    #[error(transparent)]
    Store(#[from] strata_store::Error),
    /// An error reading snapshot records.
    #[error(transparent)]
    Snapshotter(#[from] strata_snapshotter::Error),
    /// The store holds more objects than the collector's graph can index.
    #[error("cannot build the collection graph: {0}")]
    Graph(String),
    /// A helper thread of the collection (the directory listing) panicked.
    #[error("the collection's {0} thread panicked")]
    Panicked(&'static str),
}
