//! strata-gc's integration tests, compiled into one test binary (one link step on 2 cores).
//!
//! - `mark`: the mark phase against real stores, containerd's gc_test.go cases;
//! - `collect`: full collections (sweep, cleanup, reconcile, dry run), a property test, races;
//! - `explain`: why, du and compact;
//! - `scheduler`: containerd's scheduler tests and the clock wake-up;
//! - `fsck`: each kind of damage planted by hand, found and repaired.
//!
//! `support` holds the fixture and helpers they share.

mod support;

mod collect;
mod explain;
mod fsck;
mod mark;
mod scheduler;
