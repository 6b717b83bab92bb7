//! Images: OCI import and export, unpack into a snapshotter, and commit of a container's
//! changes as a new image.

pub mod commit;
pub mod export;
pub mod import;
pub mod oci;
pub mod unpack;
