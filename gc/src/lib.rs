//! strata-gc: containerd's garbage collection over strata's store.
//!
//! This crate holds the read-only half: [`mark`] reads one consistent view of every record
//! (one redb read transaction) and computes what is reachable from the roots, following
//! containerd's GC labels exactly. Nothing is deleted here.
// Tests may unwrap and panic; the library itself may not.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

mod error;
pub mod mark;
pub mod node;

pub use error::{Error, Result};
pub use mark::{Marked, mark, tricolor};
pub use node::{Kind, Node};
