//! strata-tests: strata's integration suites and benchmarks, and the test support they share.
//!
//! The suites are compiled into one test binary, `suite` (one link step on 2 cores):
//!
//! - `content`, `leases`, `namespaces`, `images`, `containers`: conformance with
//!   containerd's semantics (reference sections 3, 4, 6 and 10);
//! - `open`: opening, locking and damaged databases;
//! - `crash`: a child process killed with SIGKILL at every content failpoint, then reopened;
//! - `model`: a property test of ingest/commit/abort/reopen against a simple model;
//! - `snapshots`: containerd's snapshotter suite for the overlay and native backends, with
//!   real mounts;
//! - `images_io`: OCI layout, OCI archive and `docker save` import and export, with skopeo
//!   and umoci as interop peers.
//!
//! This library is the support: [`fixture`] builds deterministic OCI images (layers from
//! entry lists, configs, manifests, indexes, layouts and archives); `examples/make-sample.rs`
//! writes [`fixture::sample()`] as `fixtures/sample.tar`; [`bench`] holds what the benchmarks
//! share.

pub mod bench;
pub mod fixture;
