//! Layers: compression detection, applying tar streams into snapshot directories, and diffs.
//!
//! [`apply_layer`] is the entry point: one streaming pass that detects gzip/zstd/plain,
//! hashes both the blob and the tar stream, and applies the tar with its own entry-by-entry
//! applier (never the `tar` crate's `unpack`), keeping every write inside the target.

mod apply;
mod compression;
mod diff;
mod path;
mod whiteout;

pub use apply::{Applied, ApplyOptions, WhiteoutMode, apply_layer};
pub use compression::Compression;
pub use diff::{DiffOptions, DiffSource, Diffed, write_diff};
