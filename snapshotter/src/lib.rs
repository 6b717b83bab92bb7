//! strata-snapshotter: snapshots on the store's one database, their overlay and native
//! backends and mounts, layer apply and diff, and image unpack and commit.
//!
//! Three concerns, three module folders: `backend/` (directories and mounts), `layer/`
//! (compression, tar apply with whiteouts, diff), `image/` (unpack, commit, OCI import and
//! export).
// Tests may unwrap and panic; the library itself may not.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

pub mod backend;
#[cfg(feature = "bulk")]
pub mod bulk;
mod error;
pub mod gc;
pub mod image;
pub mod layer;
pub mod snapshot;
mod snapshotter;

pub use backend::Mount;
pub use error::{Error, Result};
pub use snapshot::{Info, Kind, Usage};
pub use snapshotter::{FAILPOINTS, LABEL_SNAPSHOT_REF, Snapshotter, orphan_dirs};
