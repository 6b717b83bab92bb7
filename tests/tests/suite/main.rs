//! strata's integration suites, compiled into one test binary (one link step on 2 cores).
//!
//! - `content`, `leases`, `namespaces`, `images`, `containers`: conformance with
//!   containerd's semantics (reference sections 3, 4, 6 and 10);
//! - `open`: opening, locking and damaged databases;
//! - `crash`: a child process killed with SIGKILL at every content failpoint, then reopened;
//! - `model`: a property test of ingest/commit/abort/reopen against a simple model;
//! - `snapshots`: containerd's snapshotter suite for the overlay and native backends, with
//!   real mounts.

mod support;

mod commit;
mod containerd;
mod containers;
mod content;
mod crash;
mod gc;
mod images;
mod images_io;
mod leases;
mod model;
mod namespaces;
mod open;
mod snapshots;
mod unpack;
