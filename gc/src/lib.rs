//! strata-gc: containerd's garbage collection over strata's store.
//!
//! [`collect()`] marks on one read transaction (writers keep running), sweeps in one short
//! write transaction, then removes the files no record names; [`Scheduler`] runs it in the
//! background on deletions, writes and the clock; [`dry_run`], [`why()`], [`usage`] and
//! [`fsck`] explain and check. `docs/gc.md` says how and why it is safe.
// Tests may unwrap and panic; the library itself may not.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

pub mod cleanup;
mod collect;
mod error;
pub mod fsck;
mod graph;
mod listing;
pub mod mark;
pub mod node;
pub mod scheduler;
mod sweep;
pub mod usage;
pub mod why;

pub use error::{Error, Result};

/// Every failpoint of the collector, in the order a collection reaches them
/// (`docs/crash-consistency.md` says what holds after each).
pub const FAILPOINTS: &[&str] = &[
    "gc.mark.after",
    "gc.sweep.before_commit",
    "gc.sweep.after_commit",
    "gc.cleanup.after_remove",
];
pub use collect::{
    Doomed, Plan, Report, collect, collect_at, dry_run, dry_run_at, orphans, reconcile,
};
pub use mark::{Marked, mark, tricolor};
pub use node::{Kind, Node};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use why::{Why, resolve, why, why_at};
