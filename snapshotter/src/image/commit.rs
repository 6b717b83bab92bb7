//! Committing a container's snapshot as a new image (moby's `docker commit` on containerd).
//!
//! The active snapshot's changes against its parent become a layer blob (labelled
//! `containerd.io/uncompressed`); a config adds its diffID and a history entry to the base
//! image's; a manifest names the config and every layer (with `containerd.io/gc.ref.content.*`
//! labels); the image record points at the manifest; and the new layer is unpacked so the
//! image's top chain ID exists as a committed snapshot (the config gets
//! `containerd.io/gc.ref.snapshot.<snapshotter>`). It all happens under a lease that expires
//! in an hour, released at the end. An empty diff adds no layer, only a history entry marked
//! `empty_layer`.
//!
//! Reproducible: the layer tar is deterministic, and the config's `created` defaults to the
//! newest modification time among the snapshot's own files (not the wall clock), so committing
//! the same content twice gives the same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_store::content::WriterOptions;
use strata_store::images::{self, Image};
use strata_store::leases::Lease;
use strata_store::{Algorithm, Digest, ErrorKind, Scope, Store, Timestamp};

use super::import::{read_json, unique_id, write_blob};
use super::oci::{self, Config, Descriptor, History, Manifest, RootFs};
use super::unpack::{self, LABEL_UNCOMPRESSED};
use crate::layer::{Compression, DiffOptions, DiffSource, write_diff};
use crate::{Error, Result, Snapshotter};

/// What [`commit`] records beyond the changes.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The image the snapshot was prepared from. `None`: the image whose unpacked top chain ID
    /// is the snapshot's parent, or an image from scratch when the snapshot has no parent.
    pub base: Option<String>,
    /// History `author` (and the config's `author`).
    pub author: Option<String>,
    /// History `comment`.
    pub comment: Option<String>,
    /// History `created_by` (the command that made the changes).
    pub created_by: Option<String>,
    /// The config's `created` time; default: the newest modification time among the
    /// snapshot's own files.
    pub created: Option<Timestamp>,
    /// Layer compression (gzip by default).
    pub compression: Option<Compression>,
}

/// What a commit stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Committed {
    /// The image record.
    pub image: Image,
    /// The config blob.
    pub config: Digest,
    /// The new layer, or `None` for an empty diff.
    pub layer: Option<Descriptor>,
    /// The image's top chain ID, committed in the snapshotter.
    pub chain_id: Digest,
}

/// Commits the active snapshot `key` of `sn` as image `name` of the scope's namespace.
///
/// # Errors
/// NotFound (the snapshot, the base image); FailedPrecondition when `key` is not active or no
/// base image can be found for its parent (pass [`CommitOptions::base`]); the content store's
/// and snapshotter's errors.
pub fn commit(
    store: &Store,
    sn: &Snapshotter,
    scope: &Scope,
    key: &str,
    name: &str,
    options: &CommitOptions,
) -> Result<Committed> {
    let ns = scope.namespace();
    let info = sn.stat(ns, key)?;
    if info.kind != crate::Kind::Active {
        return Err(strata_store::Error::FailedPrecondition(format!(
            "snapshot {key:?} is {}; only an active snapshot can be committed as an image",
            info.kind
        ))
        .into());
    }
    let base = match &options.base {
        Some(b) => Some(base_image(store, ns, b)?),
        None => match &info.parent {
            None => None,
            Some(parent) => Some(find_base(store, sn, ns, parent)?),
        },
    };

    let lease_id = unique_id("commit");
    let (k, v) = Lease::expire_label(Duration::from_secs(3600));
    store
        .leases()
        .create(ns, &lease_id, BTreeMap::from([(k, v)]))?;
    let leased = scope.clone().with_lease(lease_id.clone());
    let result = commit_leased(store, sn, &leased, key, name, base, options);
    let released = store.leases().delete(ns, &lease_id);
    let committed = result?;
    released?;
    Ok(committed)
}

/// The base image's manifest and config.
struct Base {
    manifest: Manifest,
    config: Config,
}

fn base_image(store: &Store, ns: &str, name: &str) -> Result<Base> {
    let (_, manifest) = unpack::resolve_manifest(store, ns, name)?;
    let config: Config = read_json(store, ns, &manifest.config)?;
    Ok(Base { manifest, config })
}

/// The image whose config says its top chain ID (in this snapshotter) is `parent`.
fn find_base(store: &Store, sn: &Snapshotter, ns: &str, parent: &str) -> Result<Base> {
    let label = format!("containerd.io/gc.ref.snapshot.{}", sn.name());
    for image in store.images().list::<&str>(ns, &[])? {
        let Ok((_, manifest)) = unpack::resolve_manifest(store, ns, &image.name) else {
            continue;
        };
        let Ok(config_info) = store.content().info(ns, &manifest.config.digest) else {
            continue;
        };
        if config_info.labels.get(&label).map(String::as_str) == Some(parent) {
            return base_image(store, ns, &image.name);
        }
    }
    Err(strata_store::Error::FailedPrecondition(format!(
        "no image of namespace {ns:?} is unpacked to snapshot {parent:?} in {}; name the base image",
        sn.name()
    ))
    .into())
}

fn commit_leased(
    store: &Store,
    sn: &Snapshotter,
    scope: &Scope,
    key: &str,
    name: &str,
    base: Option<Base>,
    options: &CommitOptions,
) -> Result<Committed> {
    let ns = scope.namespace();
    let compression = options.compression.unwrap_or(Compression::Gzip);
    let upper = sn.files(ns, key)?;
    let lowers = sn.parent_files(ns, key)?;
    let layer = diff_into_store(store, scope, sn, &upper, &lowers, compression)?;

    let created = match options.created {
        Some(t) => t,
        None => newest_mtime(&upper)?,
    };
    let (mut config, mut layers) = match base {
        Some(b) => (b.config, b.manifest.layers),
        None => {
            let host = oci::host_platform();
            let config = Config {
                architecture: host.architecture,
                os: host.os,
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                history: Vec::new(),
                rest: serde_json::Map::new(),
            };
            (config, Vec::new())
        }
    };
    let created_text = created.to_rfc3339();
    config
        .rest
        .insert("created".into(), created_text.clone().into());
    if let Some(author) = &options.author {
        config.rest.insert("author".into(), author.clone().into());
    }
    config.history.push(History {
        created: Some(created_text),
        created_by: options.created_by.clone(),
        author: options.author.clone(),
        comment: options.comment.clone(),
        empty_layer: layer.is_none(),
    });
    if let Some((d, diff_id)) = &layer {
        config.rootfs.diff_ids.push(diff_id.clone());
        layers.push(d.clone());
    }
    let chain_id = oci::chain_ids(&config.rootfs.diff_ids).last().cloned().ok_or_else(|| {
        Error::from(strata_store::Error::FailedPrecondition(format!(
            "snapshot {key:?} has no changes and no base image: an image needs at least one layer"
        )))
    })?;

    let config_bytes = json(&config)?;
    let config_desc = put_json(
        store,
        scope,
        oci::MEDIA_CONFIG,
        &config_bytes,
        BTreeMap::new(),
    )?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config: config_desc.clone(),
        layers: layers.clone(),
        annotations: BTreeMap::new(),
    };
    let mut manifest_labels = BTreeMap::from([(
        "containerd.io/gc.ref.content.config".to_owned(),
        config_desc.digest.to_string(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.to_string(),
        );
    }
    let manifest_desc = put_json(
        store,
        scope,
        oci::MEDIA_MANIFEST,
        &json(&manifest)?,
        manifest_labels,
    )?;

    let target = images::Descriptor {
        media_type: manifest_desc.media_type.clone(),
        digest: manifest_desc.digest.clone(),
        size: manifest_desc.size,
        annotations: BTreeMap::new(),
    };
    let record = Image::new(name, target);
    let image = match store.images().create(scope, record.clone()) {
        Ok(i) => i,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            store.images().update(scope, &record, &["target"])?
        }
        Err(e) => return Err(e.into()),
    };
    // The new layer becomes a committed snapshot named by its chain ID (and the config gets
    // its gc.ref.snapshot label), exactly as if the image had been pulled.
    let unpacked = unpack::unpack(store, sn, scope, name, &|_| {})?;
    if unpacked.chain_id != chain_id {
        return Err(strata_store::Error::FailedPrecondition(format!(
            "image {name:?} unpacked to {}, expected {chain_id}",
            unpacked.chain_id
        ))
        .into());
    }
    Ok(Committed {
        image,
        config: config_desc.digest,
        layer: layer.map(|(d, _)| d),
        chain_id,
    })
}

/// Writes the snapshot's changes as a layer blob; `None` when there are none.
fn diff_into_store(
    store: &Store,
    scope: &Scope,
    sn: &Snapshotter,
    upper: &Path,
    lowers: &[PathBuf],
    compression: Compression,
) -> Result<Option<(Descriptor, Digest)>> {
    let empty_dir;
    let source = if sn.name() == "overlay" {
        DiffSource::OverlayUpper {
            upper,
            lowers,
            userxattr: sn.userxattr(),
        }
    } else {
        let lower = match lowers.first() {
            Some(l) => l.as_path(),
            None => {
                // A parentless native snapshot: everything in it is new.
                empty_dir = store.layout().tmp().join(unique_id("empty"));
                std::fs::create_dir_all(&empty_dir)
                    .map_err(|e| Error::io("create directory", &empty_dir, e))?;
                empty_dir.as_path()
            }
        };
        DiffSource::Trees { lower, upper }
    };
    let reference = unique_id("commit-layer");
    let mut writer = store
        .content()
        .writer(scope, &reference, WriterOptions::default())?;
    let opts = DiffOptions {
        compression,
        source_date_epoch: None,
    };
    let diffed = write_diff(source, &opts, &mut writer);
    let diffed = match diffed {
        Ok(d) => d,
        Err(e) => {
            drop(writer);
            let _ = store.content().abort(scope, &reference);
            return Err(e);
        }
    };
    if diffed.empty {
        drop(writer);
        store.content().abort(scope, &reference)?;
        return Ok(None);
    }
    writer
        .flush()
        .map_err(|e| Error::io("write layer", &reference, e))?;
    let labels = BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), diffed.diff_id.to_string())]);
    let digest = match writer.commit(diffed.size, Some(&diffed.digest), labels) {
        Ok(d) => d,
        // The same change committed before: the layer is already here.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => diffed.digest.clone(),
        Err(e) => return Err(e.into()),
    };
    let media_type = match compression {
        Compression::Gzip => oci::MEDIA_LAYER_GZIP,
        Compression::Zstd => oci::MEDIA_LAYER_ZSTD,
        Compression::None => oci::MEDIA_LAYER_TAR,
    };
    let d = Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size: diffed.size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    Ok(Some((d, diffed.diff_id)))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        strata_store::Error::InvalidArgument(format!("cannot encode JSON: {e}")).into()
    })
}

/// Stores a JSON document as a blob with `labels` (merged into an existing blob's labels).
fn put_json(
    store: &Store,
    scope: &Scope,
    media_type: &str,
    bytes: &[u8],
    labels: BTreeMap<String, String>,
) -> Result<Descriptor> {
    let digest = Digest::of(Algorithm::Sha256, bytes);
    write_blob(
        store,
        scope,
        &unique_id("commit-json"),
        Some(&digest),
        bytes.len() as u64,
        &mut &bytes[..],
    )?;
    if !labels.is_empty() {
        let mut info = store.content().info(scope.namespace(), &digest)?;
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        info.labels.extend(labels);
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        store.content().update(scope.namespace(), &info, &paths)?;
    }
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    })
}

/// The newest modification time (whole seconds) under `dir`, or the epoch for an empty tree.
fn newest_mtime(dir: &Path) -> Result<Timestamp> {
    let mut newest = 0i64;
    let mut stack = vec![dir.to_owned()];
    let mut first = true;
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        // The root's own time changes with every entry made in it; its entries speak for it.
        if !first {
            newest = newest.max(meta.mtime());
        }
        first = false;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&path).map_err(|e| Error::io("read directory", &path, e))?
            {
                stack.push(
                    entry
                        .map_err(|e| Error::io("read directory", &path, e))?
                        .path(),
                );
            }
        }
    }
    Ok(Timestamp(newest.saturating_mul(1_000_000_000)))
}
