//! Importing images from an OCI image layout (a directory or its tar archive) or a
//! `docker save` archive.
//!
//! One streaming pass: every blob is written into the content store as it is read, checked
//! against the digest its path names; the small JSON files (`index.json`, `oci-layout`,
//! `manifest.json`) are kept in memory. Then the image graph is walked from `index.json` (or
//! built from Docker's `manifest.json`): indexes and manifests get the GC labels containerd's
//! pull writes (`containerd.io/gc.ref.content.m.<i>` on indexes, `.config` and `.l.<i>` on
//! manifests), and every named image gets a record. All of it happens under a lease that is
//! released at the end, so an interrupted import leaves nothing that outlives the lease.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use strata_store::content::WriterOptions;
use strata_store::images::{self, Image};
use strata_store::leases::Lease;
use strata_store::{Digest, ErrorKind, Scope, Store, Timestamp};

use super::oci::{self, Descriptor, Index, Manifest};
use crate::{Error, Result};

/// JSON files larger than this are not metadata; refusing them bounds memory.
const MAX_JSON: u64 = 16 << 20;

/// What [`import`] does beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Name for the image when the layout holds exactly one (overrides annotations).
    pub name: Option<String>,
}

/// What an import stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The image records created or updated.
    pub images: Vec<Image>,
    /// Blobs read from the source.
    pub blobs: usize,
    /// Bytes read from the source's blobs.
    pub bytes: u64,
}

/// Imports every image of `source` (an OCI layout directory, or a tar of one, or a
/// `docker save` tar) into the scope's namespace. `progress` is told the bytes of each blob
/// as it is stored.
///
/// # Errors
/// InvalidArgument for an archive that is not an image layout, a blob whose bytes do not match
/// its name, a layout that names a blob it lacks, or `--name` with several images; the
/// content store's errors.
pub fn import(
    store: &Store,
    scope: &Scope,
    source: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported> {
    let lease_id = unique_id("import");
    let (k, v) = Lease::expire_label(Duration::from_secs(3600));
    store
        .leases()
        .create(scope.namespace(), &lease_id, BTreeMap::from([(k, v)]))?;
    let leased = scope.clone().with_lease(lease_id.clone());
    let result = import_leased(store, &leased, &lease_id, source, options, progress);
    // Whatever happened, the records now hold what they need; the rest is garbage.
    let released = store.leases().delete(scope.namespace(), &lease_id);
    let imported = result?;
    released?;
    Ok(imported)
}

fn import_leased(
    store: &Store,
    scope: &Scope,
    lease_id: &str,
    source: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported> {
    let mut files = Files {
        prefix: lease_id.to_owned(),
        ..Files::default()
    };
    let meta = std::fs::metadata(source).map_err(|e| Error::io("stat", source, e))?;
    if meta.is_dir() {
        read_dir_layout(store, scope, source, &mut files, progress)?;
    } else {
        let f = std::fs::File::open(source).map_err(|e| Error::io("open", source, e))?;
        read_tar(store, scope, f, source, &mut files, progress)?;
    }
    let tops = if let Some(index) = files.json.get("index.json") {
        let index: Index = parse_json("index.json", index)?;
        index.manifests
    } else if let Some(manifest) = files.json.get("manifest.json") {
        docker_manifests(store, scope, manifest, &files)?
    } else {
        return Err(invalid(
            source,
            "neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
        ));
    };
    if options.name.is_some() && tops.len() != 1 {
        return Err(invalid(
            source,
            &format!(
                "--name needs exactly one image in the layout, it has {}",
                tops.len()
            ),
        ));
    }
    // Every image is checked and labelled before any record is written, so an import that
    // fails records nothing.
    for top in &tops {
        label_graph(store, scope, top)?;
    }
    let mut images = Vec::new();
    for top in &tops {
        let name = match &options.name {
            Some(n) => n.clone(),
            None => image_name(top),
        };
        images.push(put_image(store, scope, &name, top)?);
    }
    Ok(Imported {
        images,
        blobs: files.blobs,
        bytes: files.bytes,
    })
}

fn invalid(source: &Path, why: &str) -> Error {
    strata_store::Error::InvalidArgument(format!("import {}: {why}", source.display())).into()
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        strata_store::Error::InvalidArgument(format!("{what} is not valid: {e}")).into()
    })
}

/// What the pass over the source found besides blobs.
#[derive(Debug, Default)]
struct Files {
    /// Ingest refs start with this (the import's lease id), so concurrent imports of the
    /// same blobs never contend for one ref.
    prefix: String,
    /// Small JSON files by path (`index.json`, `manifest.json`, docker configs, ...).
    json: HashMap<String, Vec<u8>>,
    /// Docker-save layer files (named by path, not digest) and their digests.
    by_path: HashMap<String, Descriptor>,
    blobs: usize,
    bytes: u64,
}

fn read_dir_layout(
    store: &Store,
    scope: &Scope,
    dir: &Path,
    files: &mut Files,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    for name in ["index.json", "oci-layout", "manifest.json"] {
        let path = dir.join(name);
        if path.exists() {
            files.json.insert(name.to_owned(), read_small(&path)?);
        }
    }
    let blobs = dir.join("blobs");
    for alg in ["sha256", "sha512"] {
        let alg_dir = blobs.join(alg);
        let Ok(entries) = std::fs::read_dir(&alg_dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &alg_dir, e))?;
            let rel = format!("blobs/{alg}/{}", entry.file_name().to_string_lossy());
            let path = entry.path();
            let f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let size = f.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
            ingest_entry(store, scope, &rel, size, f, files, progress)?;
        }
    }
    Ok(())
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    if buf.len() as u64 > MAX_JSON {
        return Err(strata_store::Error::InvalidArgument(format!(
            "{} is larger than {MAX_JSON} bytes",
            path.display()
        ))
        .into());
    }
    Ok(buf)
}

fn read_tar(
    store: &Store,
    scope: &Scope,
    input: impl Read,
    source: &Path,
    files: &mut Files,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut input = io::BufReader::with_capacity(1 << 20, input);
    let head = io::BufRead::fill_buf(&mut input).map_err(|e| Error::io("read", source, e))?;
    if let Some(why) = not_a_tar(head) {
        return Err(invalid(source, why));
    }
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| invalid(source, &format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| invalid(source, &format!("damaged tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| invalid(source, &format!("bad entry name: {e}")))?;
        let rel = normalize(&path);
        let size = entry
            .header()
            .size()
            .map_err(|e| invalid(source, &format!("bad entry size: {e}")))?;
        ingest_entry(store, scope, &rel, size, entry, files, progress)?;
    }
    Ok(())
}

/// Why the first bytes of a file show it is not a tar archive, if they do. A tar header block
/// is 512 bytes whose checksum field (bytes 148..156) holds octal digits.
fn not_a_tar(head: &[u8]) -> Option<&'static str> {
    match head {
        [0x1f, 0x8b, ..] => Some("it is gzip-compressed; decompress it first (gunzip)"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("it is zstd-compressed; decompress it first (unzstd)"),
        // An empty file is an empty archive: it holds no layout, which is said next.
        [] => None,
        _ if head.len() < 512 => Some("not a tar archive (shorter than one tar block)"),
        _ => {
            let cksum = head.get(148..156).unwrap_or_default();
            let octal = cksum.iter().all(|b| matches!(b, b'0'..=b'7' | b' ' | 0));
            (!octal).then_some("not a tar archive (no valid tar header)")
        }
    }
}

fn normalize(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// Stores one file of the source: a blob under `blobs/<alg>/<hex>` is checked against that
/// digest; a JSON file is kept in memory; any other file (a docker-save layer) is stored under
/// the digest of its bytes.
fn ingest_entry(
    store: &Store,
    scope: &Scope,
    rel: &str,
    size: u64,
    mut input: impl Read,
    files: &mut Files,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let expected = match rel.strip_prefix("blobs/").and_then(|r| r.split_once('/')) {
        Some((alg, hex)) => Some(format!("{alg}:{hex}").parse::<Digest>().map_err(|_| {
            strata_store::Error::InvalidArgument(format!(
                "{rel}: not a blob name (blobs/<alg>/<hex>)"
            ))
        })?),
        None => None,
    };
    if expected.is_none()
        && (rel.ends_with(".json") || rel == "oci-layout" || rel == "repositories")
    {
        if size > MAX_JSON {
            return Err(strata_store::Error::InvalidArgument(format!(
                "{rel} is larger than {MAX_JSON} bytes"
            ))
            .into());
        }
        let mut buf = Vec::new();
        input
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", rel, e))?;
        files.json.insert(rel.to_owned(), buf);
        return Ok(());
    }
    let digest = write_blob(
        store,
        scope,
        &format!("{}-{rel}", files.prefix),
        expected.as_ref(),
        size,
        &mut input,
    )?;
    files.blobs += 1;
    files.bytes += size;
    progress(size);
    if expected.is_none() {
        files.by_path.insert(
            rel.to_owned(),
            Descriptor {
                media_type: String::new(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            },
        );
    }
    Ok(())
}

/// Writes `input` as a blob (or finds the namespace has it); returns its digest.
pub(crate) fn write_blob(
    store: &Store,
    scope: &Scope,
    reference: &str,
    expected: Option<&Digest>,
    size: u64,
    input: &mut dyn Read,
) -> Result<Digest> {
    let opts = WriterOptions {
        expected: expected.cloned(),
        total: size,
    };
    let mut writer = match store.content().writer(scope, reference, opts) {
        Ok(w) => w,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            io::copy(input, &mut io::sink()).map_err(|e| Error::io("read", reference, e))?;
            return expected.cloned().ok_or_else(|| e.into());
        }
        Err(e) => return Err(e.into()),
    };
    // A writer that starts with bytes (a resumed or shared ingest) is restarted: the source is
    // read from its start.
    if writer.status().offset > 0 {
        writer.truncate(0)?;
    }
    let copied = io::copy(input, &mut writer).map_err(|e| Error::io("write blob", reference, e))?;
    if copied != size {
        return Err(strata_store::Error::InvalidArgument(format!(
            "{reference}: {copied} bytes, expected {size}"
        ))
        .into());
    }
    let written = writer.digest();
    match writer.commit(size, expected, BTreeMap::new()) {
        Ok(d) => Ok(d),
        // The namespace has these bytes already (a re-import, or docker-save's identical
        // `VERSION` files): that is the blob.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(written),
        Err(e) if e.kind() == ErrorKind::FailedPrecondition => {
            Err(strata_store::Error::InvalidArgument(format!("{reference}: {e}")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a JSON blob of this namespace.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    ns: &str,
    d: &Descriptor,
) -> Result<T> {
    if d.size > MAX_JSON {
        return Err(strata_store::Error::InvalidArgument(format!(
            "{} is larger than {MAX_JSON} bytes",
            d.digest
        ))
        .into());
    }
    let mut buf = Vec::new();
    store
        .content()
        .reader(ns, &d.digest)?
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read blob", d.digest.to_string(), e))?;
    parse_json(&d.digest.to_string(), &buf)
}

/// Labels indexes and manifests reachable from `top` with containerd's GC references, and
/// checks that every blob an image of this host's platform needs is present.
fn label_graph(store: &Store, scope: &Scope, top: &Descriptor) -> Result<()> {
    let ns = scope.namespace();
    let mut stack = vec![(top.clone(), true)];
    while let Some((d, needed)) = stack.pop() {
        if store.content().info(ns, &d.digest).is_err() {
            if needed {
                return Err(strata_store::Error::InvalidArgument(format!(
                    "the layout names blob {} ({}) but does not contain it",
                    d.digest, d.media_type
                ))
                .into());
            }
            continue;
        }
        let labels: Vec<(String, Digest)> = if oci::is_index(&d.media_type) {
            let index: Index = read_json(store, ns, &d)?;
            let host = oci::host_platform();
            for m in &index.manifests {
                // Other platforms' manifests may be absent, as in a single-platform pull.
                let wanted = m
                    .platform
                    .as_ref()
                    .is_none_or(|p| p.os == host.os && p.architecture == host.architecture);
                stack.push((m.clone(), wanted));
            }
            index
                .manifests
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        m.digest.clone(),
                    )
                })
                .collect()
        } else if oci::is_manifest(&d.media_type) {
            let manifest: Manifest = read_json(store, ns, &d)?;
            stack.push((manifest.config.clone(), needed));
            for l in &manifest.layers {
                stack.push((l.clone(), needed));
            }
            std::iter::once((
                "containerd.io/gc.ref.content.config".to_owned(),
                manifest.config.digest.clone(),
            ))
            .chain(manifest.layers.iter().enumerate().map(|(i, l)| {
                (
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    l.digest.clone(),
                )
            }))
            .collect()
        } else {
            Vec::new()
        };
        if !labels.is_empty() {
            let mut info = store.content().info(ns, &d.digest)?;
            let paths: Vec<String> = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
            for (k, v) in labels {
                info.labels.insert(k, v.to_string());
            }
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            store.content().update(ns, &info, &paths)?;
        }
    }
    Ok(())
}

/// Docker's `manifest.json` turned into schema 2 manifests stored as blobs.
fn docker_manifests(
    store: &Store,
    scope: &Scope,
    manifest_json: &[u8],
    files: &Files,
) -> Result<Vec<Descriptor>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = parse_json("manifest.json", manifest_json)?;
    let ns = scope.namespace();
    let mut out = Vec::new();
    for entry in entries {
        let config_bytes = match files.json.get(&entry.config) {
            Some(b) => b.clone(),
            None => {
                let d = blob_for_path(files, &entry.config)?;
                let mut b = Vec::new();
                store
                    .content()
                    .reader(ns, &d.digest)?
                    .read_to_end(&mut b)
                    .map_err(|e| Error::io("read", &entry.config, e))?;
                b
            }
        };
        let config_digest = write_blob(
            store,
            scope,
            &format!("{}-docker-config", files.prefix),
            Some(&Digest::of(strata_store::Algorithm::Sha256, &config_bytes)),
            config_bytes.len() as u64,
            &mut config_bytes.as_slice(),
        )?;
        let mut layers = Vec::new();
        for path in &entry.layers {
            let mut d = blob_for_path(files, path)?;
            d.size = store.content().info(ns, &d.digest)?.size;
            d.media_type = layer_media_type(store, ns, &d.digest)?.to_owned();
            layers.push(d);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::DOCKER_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: oci::DOCKER_CONFIG.to_owned(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            strata_store::Error::InvalidArgument(format!("cannot encode manifest: {e}"))
        })?;
        let digest = Digest::of(strata_store::Algorithm::Sha256, &bytes);
        write_blob(
            store,
            scope,
            &format!("{}-docker-manifest", files.prefix),
            Some(&digest),
            bytes.len() as u64,
            &mut bytes.as_slice(),
        )?;
        // `docker save <image id>` writes `"RepoTags": null`.
        let tags = match entry.repo_tags {
            Some(tags) if !tags.is_empty() => tags,
            _ => vec![format!("import@{digest}")],
        };
        for tag in tags {
            out.push(Descriptor {
                media_type: oci::DOCKER_MANIFEST.to_owned(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                annotations: BTreeMap::from([(
                    oci::ANNOTATION_CONTAINERD_NAME.to_owned(),
                    normalize_docker_name(&tag),
                )]),
                platform: None,
            });
        }
    }
    Ok(out)
}

fn blob_for_path(files: &Files, path: &str) -> Result<Descriptor> {
    if let Some(d) = files.by_path.get(path) {
        return Ok(d.clone());
    }
    // Newer docker-save archives name OCI blob paths in manifest.json.
    if let Some((alg, hex)) = path.strip_prefix("blobs/").and_then(|r| r.split_once('/'))
        && let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>()
    {
        return Ok(Descriptor {
            media_type: String::new(),
            digest,
            size: 0,
            annotations: BTreeMap::new(),
            platform: None,
        });
    }
    Err(strata_store::Error::InvalidArgument(format!(
        "manifest.json names {path}, which the archive does not contain"
    ))
    .into())
}

/// gzip, zstd or plain tar, from the first bytes of a stored layer.
fn layer_media_type(store: &Store, ns: &str, digest: &Digest) -> Result<&'static str> {
    let reader = store.content().reader(ns, digest)?;
    let mut magic = [0u8; 4];
    let n = reader.read_at(&mut magic, 0)?;
    Ok(match magic.get(..n) {
        Some([0x1f, 0x8b, ..]) => oci::DOCKER_LAYER_GZIP,
        Some([0x28, 0xb5, 0x2f, 0xfd]) => oci::MEDIA_LAYER_ZSTD,
        _ => oci::DOCKER_LAYER_TAR,
    })
}

/// `busybox:latest` -> `docker.io/library/busybox:latest`, as docker names what it saves.
fn normalize_docker_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or("");
    let has_registry =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, tag.contains('/')) {
        (true, _) => tag.to_owned(),
        (false, true) => format!("docker.io/{tag}"),
        (false, false) => format!("docker.io/library/{tag}"),
    }
}

/// The name an imported image gets: `io.containerd.image.name`, else
/// `org.opencontainers.image.ref.name`, else `import@<digest>`.
fn image_name(d: &Descriptor) -> String {
    d.annotations
        .get(oci::ANNOTATION_CONTAINERD_NAME)
        .or_else(|| d.annotations.get(oci::ANNOTATION_REF_NAME))
        .cloned()
        .unwrap_or_else(|| format!("import@{}", d.digest))
}

/// Creates the image record, or points an existing one at the new target.
fn put_image(store: &Store, scope: &Scope, name: &str, top: &Descriptor) -> Result<Image> {
    let target = images::Descriptor {
        media_type: top.media_type.clone(),
        digest: top.digest.clone(),
        size: top.size,
        annotations: top.annotations.clone(),
    };
    let image = Image::new(name, target);
    match store.images().create(scope, image.clone()) {
        Ok(i) => Ok(i),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Ok(store.images().update(scope, &image, &["target"])?)
        }
        Err(e) => Err(e.into()),
    }
}

/// A lease or ref id no other import or unpack uses at the same time.
pub(crate) fn unique_id(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{}-{n}", Timestamp::now().0, std::process::id())
}
