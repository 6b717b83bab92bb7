//! Exporting images as an OCI image layout tar archive, blobs byte-identical.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use strata_store::Store;

use super::import::read_json;
use super::oci::{self, Descriptor, Index, Manifest};
use crate::{Error, Result};

/// Writes the images `names` of namespace `ns` as an OCI layout tar to `out`: `oci-layout`,
/// `index.json` (each image's target, annotated with its name as containerd and skopeo read
/// it), and every blob they reach, each once, with its stored bytes.
///
/// The archive is deterministic: sorted entries, zero times, root ownership.
///
/// # Errors
/// NotFound for a missing image; InvalidArgument when a manifest of the host platform misses
/// a blob; I/O errors on `out`.
pub fn export(store: &Store, ns: &str, names: &[&str], out: impl Write) -> Result<()> {
    let mut manifests = Vec::new();
    let mut blobs: BTreeMap<String, Descriptor> = BTreeMap::new();
    for name in names {
        let image = store.images().get(ns, name)?;
        let top = Descriptor {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.clone(),
            size: image.target.size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        collect(store, ns, &top, &mut blobs)?;
        let mut annotations = image.target.annotations.clone();
        annotations.insert(oci::ANNOTATION_CONTAINERD_NAME.to_owned(), name.to_string());
        annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), ref_name(name));
        manifests.push(Descriptor { annotations, ..top });
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.to_owned()),
        manifests,
        annotations: BTreeMap::new(),
    };
    let index_json = serde_json::to_vec(&index)
        .map_err(|e| strata_store::Error::InvalidArgument(e.to_string()))?;

    let mut tar = tar::Builder::new(out);
    let mut dirs = BTreeSet::new();
    append_dir(&mut tar, "blobs/")?;
    for d in blobs.values() {
        let dir = format!("blobs/{}/", d.digest.algorithm().name());
        if dirs.insert(dir.clone()) {
            append_dir(&mut tar, &dir)?;
        }
        let reader = store.content().reader(ns, &d.digest)?;
        let size = reader.size();
        append_file(
            &mut tar,
            &format!("blobs/{}/{}", d.digest.algorithm().name(), d.digest.hex()),
            size,
            reader,
        )?;
    }
    append_file(
        &mut tar,
        "index.json",
        index_json.len() as u64,
        index_json.as_slice(),
    )?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_file(&mut tar, "oci-layout", layout.len() as u64, &layout[..])?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io("write archive", "export", e))
}

/// The tag part of a reference (`docker.io/library/x:1` -> `1`), as skopeo's `oci:` transport
/// and containerd's exporter write it; the whole name when there is no tag.
fn ref_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) if !name.contains('@') => tag.to_owned(),
        _ => name.to_owned(),
    }
}

fn collect(
    store: &Store,
    ns: &str,
    d: &Descriptor,
    blobs: &mut BTreeMap<String, Descriptor>,
) -> Result<()> {
    if blobs.contains_key(&d.digest.to_string()) {
        return Ok(());
    }
    if oci::is_index(&d.media_type) {
        let index: Index = read_json(store, ns, d)?;
        for m in &index.manifests {
            // Another platform's manifest may never have been pulled; skip what is absent.
            if store.content().info(ns, &m.digest).is_ok() {
                collect(store, ns, m, blobs)?;
            }
        }
    } else if oci::is_manifest(&d.media_type) {
        let manifest: Manifest = read_json(store, ns, d)?;
        for child in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if store.content().info(ns, &child.digest).is_err() {
                return Err(strata_store::Error::InvalidArgument(format!(
                    "image content incomplete: manifest {} names blob {} which is not stored",
                    d.digest, child.digest
                ))
                .into());
            }
            blobs.insert(child.digest.to_string(), child.clone());
        }
    }
    blobs.insert(d.digest.to_string(), d.clone());
    Ok(())
}

fn header(path: &str, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn append_dir(tar: &mut tar::Builder<impl Write>, path: &str) -> Result<()> {
    tar.append(&header(path, 0, true), std::io::empty())
        .map_err(|e| Error::io("write archive", path, e))
}

fn append_file(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    tar.append(&header(path, size, false), data)
        .map_err(|e| Error::io("write archive", path, e))
}
