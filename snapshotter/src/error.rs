//! The snapshotter's error type.

use std::io;
use std::path::PathBuf;

use strata_store::ErrorKind;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in snapshots, layers and images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the metadata store (NotFound, AlreadyExists, ... keep their kinds).
    #[error(transparent)]
    Store(#[from] strata_store::Error),
    /// A layer is malformed or hostile (path escape, bad compression, truncated tar, ...).
    /// Nothing was written outside the extraction directory.
    #[error("invalid layer: {0}")]
    InvalidLayer(String),
    /// A layer's uncompressed digest is not the diffID its image config names.
    #[error("layer diffID mismatch: the config names {expected}, the layer hashes to {actual}")]
    DiffIdMismatch {
        /// The diffID from the image config.
        expected: String,
        /// The digest of the uncompressed layer.
        actual: String,
    },
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Mounting or unmounting failed.
    #[error("mount {target}: {reason}")]
    Mount {
        /// The mount point.
        target: String,
        /// What the kernel said.
        reason: String,
    },
}

impl Error {
    /// The class of this error, with the store's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::InvalidLayer(_) | Error::DiffIdMismatch { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Mount { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_layer(reason: impl Into<String>) -> Self {
        Error::InvalidLayer(reason.into())
    }
}
