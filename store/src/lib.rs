//! strata-store: the transactional metadata store of strata.
//!
//! One [`Store`] owns a root directory: `meta.redb` (every record, one redb database),
//! content-addressed blobs under `content/blobs`, resumable ingests under `content/ingest`,
//! and a `LOCK` so one process at a time owns the root. Semantics follow containerd's
//! metadata store (namespaces, labels, filters, content, images, leases, containers); the
//! durability protocol is stricter: data is synced and renamed into place, its directory
//! synced, and only then is the transaction that names it committed.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::io::Write;
//! use strata_store::{Scope, Store, StoreOptions, content::WriterOptions};
//!
//! # fn main() -> strata_store::Result<()> {
//! let store = Store::open("/var/lib/strata", StoreOptions::default())?;
//! let scope = Scope::new("default")?;
//! let mut w = store.content().writer(&scope, "my-ref", WriterOptions::default())?;
//! w.write_all(b"hello").map_err(|e| strata_store::Error::InvalidArgument(e.to_string()))?;
//! let digest = w.commit(5, None, BTreeMap::new())?;
//! assert_eq!(store.content().info("default", &digest)?.size, 5);
//! # Ok(()) }
//! ```
// Tests may unwrap and panic; the library itself may not.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

#[cfg(feature = "bulk")]
pub mod bulk;
pub mod codec;
pub mod containers;
pub mod content;
pub mod db;
pub mod digest;
mod error;
pub mod failpoint;
pub mod filters;
mod fsutil;
pub mod gcscan;
pub mod gcview;
pub mod identifiers;
pub mod images;
pub mod leases;
mod lock;
pub mod namespaces;
pub mod object;
mod seal;
mod store;
pub mod timestamp;

pub use digest::{Algorithm, Digest};
pub use error::{Error, ErrorKind, Result};
pub use store::{InFlightId, Layout, Scope, Store, StoreOptions};
pub use timestamp::Timestamp;
