//! The crate's one error type.
//!
//! Kinds mirror containerd's error classes (NotFound, AlreadyExists, InvalidArgument,
//! FailedPrecondition, Unavailable, NotImplemented) so callers and the CLI can act on them,
//! plus what a storage engine adds: a busy store, a damaged database, a corrupt record and
//! I/O errors that name their path. Every message names the object it is about.

use std::io;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object does not exist (in this namespace).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What was looked for: "blob", "image", "lease", ...
        kind: &'static str,
        /// Its name, digest or key.
        id: String,
    },
    /// The named object exists already.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// What was created: "blob", "image", "lease", ...
        kind: &'static str,
        /// Its name, digest or key.
        id: String,
    },
    /// The request itself is malformed; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is well formed but the store is not in a state that allows it.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The object is in use by someone else right now; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request names a feature this store does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// Another `Store` (in this or another process) holds the root's `LOCK`.
    #[error("store {} is busy: locked by process {}", root.display(), pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    StoreBusy {
        /// The root that is locked.
        root: PathBuf,
        /// The holder's pid as it wrote it into `LOCK`, when readable.
        pid: Option<u32>,
    },
    /// `meta.redb` cannot be opened because its bytes are damaged or it is not a redb file.
    #[error(
        "metadata database {} is damaged: {detail}; the store was not opened and nothing was changed. \
         Move the file aside (mv {p} {p}.damaged) to start with empty metadata, or restore it from a backup",
        path.display(), p = path.display()
    )]
    DatabaseDamaged {
        /// Path of the database file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The database was written by a newer strata with a schema this build cannot read.
    #[error("metadata database {} has schema version {found}; this build reads up to {supported}: upgrade strata", path.display())]
    SchemaTooNew {
        /// Path of the database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// One record cannot be decoded. The rest of the store stays usable.
    #[error("corrupt record in table {table} at key {key}: {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// The record's key, rendered for people.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "rename", "fsync", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// redb failed below the level of a single record.
    #[error("metadata database error: {0}")]
    Db(#[from] redb::Error),
    /// A failpoint (feature `failpoints`) injected this error.
    #[error("failpoint {0} injected an error")]
    Injected(&'static str),
}

/// The class of an [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AlreadyExists`].
    AlreadyExists,
    /// See [`Error::InvalidArgument`].
    InvalidArgument,
    /// See [`Error::FailedPrecondition`].
    FailedPrecondition,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::NotImplemented`].
    NotImplemented,
    /// See [`Error::StoreBusy`].
    StoreBusy,
    /// A damaged database file, a too-new schema or a corrupt record.
    Corrupt,
    /// File-system or database I/O, or an injected fault.
    Io,
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::NotImplemented(_) => ErrorKind::NotImplemented,
            Error::StoreBusy { .. } => ErrorKind::StoreBusy,
            Error::DatabaseDamaged { .. } | Error::SchemaTooNew { .. } | Error::Corrupt { .. } => {
                ErrorKind::Corrupt
            }
            Error::Io { .. } | Error::Db(_) | Error::Injected(_) => ErrorKind::Io,
        }
    }

    /// NotFound for the object `kind` named `id`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// AlreadyExists for the object `kind` named `id`.
    pub fn already_exists(kind: &'static str, id: impl Into<String>) -> Self {
        Error::AlreadyExists {
            kind,
            id: id.into(),
        }
    }

    /// An I/O error of operation `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

// redb reports through several error enums; all of them are "the database failed", so they
// funnel into `Error::Db`.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::DatabaseError
);
