//! Unpacking an image into a snapshotter: containerd's unpacker, with layers applied side by
//! side.
//!
//! For the host platform's manifest: read the config, compute chain IDs, skip the layers
//! whose chain ID is committed already, and for each other layer prepare an extraction
//! snapshot (`extract-<unique> <chainID>`, retried with a fresh key on AlreadyExists), apply
//! the layer blob into it, check its diffID against the config (a mismatch removes the
//! extraction snapshot), and commit it as its chain ID. Then the layer blob is labelled
//! `containerd.io/uncompressed` and the config `containerd.io/gc.ref.snapshot.<snapshotter>`.
//! Everything happens under a lease, released at the end.
//!
//! With overlay, layers are applied in parallel into their own parentless snapshots (an
//! upper dir does not depend on its lowers) and committed in chain order onto their parents.
//! A native snapshot is a copy of its parent, so native layers go one after another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_store::leases::{Lease, Resource};
use strata_store::{Digest, ErrorKind, Scope, Store, failpoint};

use super::import::read_json;
use super::oci::{self, Config, Descriptor, Index, Manifest};
use crate::layer::{ApplyOptions, WhiteoutMode, apply_layer};
use crate::{Error, LABEL_SNAPSHOT_REF, Result, Snapshotter};

/// Label recording a compressed layer's diffID on its blob.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// How many times a prepare that hits AlreadyExists is retried with a fresh key.
const PREPARE_TRIES: usize = 3;

/// Layers applied at once (decompression is the bottleneck; more threads than cores only
/// add memory).
fn apply_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
}

/// What one layer's unpack did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnpackedLayer {
    /// The layer blob.
    pub digest: Digest,
    /// Its diffID.
    pub diff_id: Digest,
    /// Its chain ID: the committed snapshot's name.
    pub chain_id: Digest,
    /// False when the snapshot existed already.
    pub applied: bool,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unpacked {
    /// The image.
    pub image: String,
    /// The top chain ID: the snapshot to prepare a container on.
    pub chain_id: Digest,
    /// Each layer, base first.
    pub layers: Vec<UnpackedLayer>,
}

/// The host platform's manifest of the image `name`.
pub fn resolve_manifest(store: &Store, ns: &str, name: &str) -> Result<(Descriptor, Manifest)> {
    let image = store.images().get(ns, name)?;
    let mut d = Descriptor {
        media_type: image.target.media_type.clone(),
        digest: image.target.digest.clone(),
        size: image.target.size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    // Indexes may nest; a few levels are plenty and bound a hostile loop.
    for _ in 0..8 {
        if oci::is_manifest(&d.media_type) {
            let manifest: Manifest = read_json(store, ns, &d)?;
            return Ok((d, manifest));
        }
        if !oci::is_index(&d.media_type) {
            return Err(strata_store::Error::InvalidArgument(format!(
                "image {name:?}: target {} has media type {:?}, neither an index nor a manifest",
                d.digest, d.media_type
            ))
            .into());
        }
        let index: Index = read_json(store, ns, &d)?;
        let host = oci::host_platform();
        d = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_none_or(|p| p.os == host.os && p.architecture == host.architecture)
            })
            .cloned()
            .ok_or_else(|| {
                Error::from(strata_store::Error::NotFound {
                    kind: "manifest for this platform",
                    id: format!("{}/{} in {name}", host.os, host.architecture),
                })
            })?;
    }
    Err(
        strata_store::Error::InvalidArgument(format!("image {name:?}: indexes nest too deeply"))
            .into(),
    )
}

/// Unpacks image `name` of the scope's namespace into `sn`. `progress` is told each layer's
/// compressed size as it is done.
///
/// # Errors
/// NotFound (image, a blob, the platform's manifest); InvalidArgument (a config whose layers
/// and diffIDs disagree, a hostile or damaged layer, [`Error::DiffIdMismatch`]); the
/// snapshotter's errors. Nothing half-applied stays: a failed layer's extraction snapshot is
/// removed.
pub fn unpack(
    store: &Store,
    sn: &Snapshotter,
    scope: &Scope,
    name: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Unpacked> {
    let ns = scope.namespace();
    let (_, manifest) = resolve_manifest(store, ns, name)?;
    let config: Config = read_json(store, ns, &manifest.config)?;
    if config.rootfs.kind != "layers" && !config.rootfs.kind.is_empty() {
        return Err(strata_store::Error::InvalidArgument(format!(
            "image {name:?}: rootfs type {:?} is not \"layers\"",
            config.rootfs.kind
        ))
        .into());
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(strata_store::Error::InvalidArgument(format!(
            "image {name:?}: {} layers but {} diffIDs in its config",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        ))
        .into());
    }
    let chain = oci::chain_ids(&config.rootfs.diff_ids);
    let Some(top) = chain.last().cloned() else {
        return Err(
            strata_store::Error::InvalidArgument(format!("image {name:?} has no layers")).into(),
        );
    };

    let lease_id = super::import::unique_id("unpack");
    let (k, v) = Lease::expire_label(Duration::from_secs(24 * 3600));
    store
        .leases()
        .create(ns, &lease_id, BTreeMap::from([(k, v)]))?;
    let leased = scope.clone().with_lease(lease_id.clone());
    let job = Job {
        store,
        sn,
        scope: &leased,
        manifest: &manifest,
        diff_ids: &config.rootfs.diff_ids,
        chain: &chain,
        progress,
    };
    let result = job.run().and_then(|layers| {
        failpoint!("unpack.before_config_label");
        let mut info = store.content().info(ns, &manifest.config.digest)?;
        let key = format!("containerd.io/gc.ref.snapshot.{}", sn.name());
        info.labels.insert(key.clone(), top.to_string());
        store
            .content()
            .update(ns, &info, &[&format!("labels.{key}")])?;
        Ok(Unpacked {
            image: name.to_owned(),
            chain_id: top,
            layers,
        })
    });
    let released = store.leases().delete(ns, &lease_id);
    let unpacked = result?;
    released?;
    Ok(unpacked)
}

struct Job<'a> {
    store: &'a Store,
    sn: &'a Snapshotter,
    scope: &'a Scope,
    manifest: &'a Manifest,
    diff_ids: &'a [Digest],
    chain: &'a [Digest],
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Job<'_> {
    fn ns(&self) -> &str {
        self.scope.namespace()
    }

    /// Whether `chain_id` is committed (see [`Job::lease_chain`] for why a layer found here
    /// cannot be collected before it is built on).
    fn exists(&self, chain_id: &Digest) -> Result<bool> {
        match self.sn.stat(self.ns(), &chain_id.to_string()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The unpack's lease takes every chain ID of the image *before* looking for committed
    /// ones: a layer found committed is then built on, and a garbage collection running
    /// meanwhile must keep it. Taking it is a write a running mark is told of; if a sweep
    /// removed it before, the lookup finds it gone and the layer is applied again.
    fn lease_chain(&self) -> Result<()> {
        let Some(lease) = self.scope.lease() else {
            return Ok(());
        };
        let kind = format!("snapshots/{}", self.sn.name());
        let resources: Vec<Resource> = self
            .chain
            .iter()
            .map(|c| Resource::new(kind.clone(), c.to_string()))
            .collect();
        Ok(self
            .store
            .leases()
            .add_resources(self.ns(), lease, &resources)?)
    }

    fn run(&self) -> Result<Vec<UnpackedLayer>> {
        self.lease_chain()?;
        // The layers above the highest chain ID already committed need applying.
        let first_missing = self.first_missing()?;
        // Unpacks of images sharing layers run at once (concurrent pulls): each chain ID is
        // applied by one of them while the others wait, then find it committed. Locks are
        // taken in chain order, so two unpacks never wait for each other in a cycle.
        let keys: Vec<String> = (first_missing..self.chain.len())
            .map(|i| format!("{}/{}/{}", self.ns(), self.sn.name(), self.chain[i]))
            .collect();
        let _locks = ChainLocks::acquire(keys)?;
        let first_missing = self.first_missing()?;
        let todo: Vec<usize> = (first_missing..self.chain.len()).collect();
        let parallel = self.sn.name() == "overlay" && todo.len() > 1;
        let mut applied = vec![false; self.chain.len()];
        if parallel {
            self.run_parallel(&todo, &mut applied)?;
        } else {
            for &i in &todo {
                applied[i] = self.layer(i, true)?;
            }
        }
        Ok((0..self.chain.len())
            .map(|i| UnpackedLayer {
                digest: self.manifest.layers[i].digest.clone(),
                diff_id: self.diff_ids[i].clone(),
                chain_id: self.chain[i].clone(),
                applied: applied[i],
            })
            .collect())
    }

    /// The index of the first layer above the highest committed chain ID.
    fn first_missing(&self) -> Result<usize> {
        let mut first_missing = self.chain.len();
        while first_missing > 0 && !self.exists(&self.chain[first_missing - 1])? {
            first_missing -= 1;
        }
        Ok(first_missing)
    }

    /// Applies layers `todo` side by side (parentless), then commits them in chain order.
    fn run_parallel(&self, todo: &[usize], applied: &mut [bool]) -> Result<()> {
        let next = AtomicU64::new(0);
        let results: Vec<(usize, Result<Option<Extracted>>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..apply_threads().min(todo.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let n = usize::try_from(next.fetch_add(1, Ordering::Relaxed))
                                .unwrap_or(usize::MAX);
                            let Some(&i) = todo.get(n) else { break };
                            done.push((i, self.extract(i, None)));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let mut keys: BTreeMap<usize, Option<Extracted>> = BTreeMap::new();
        let mut failure = None;
        for (i, r) in results {
            match r {
                Ok(k) => {
                    keys.insert(i, k);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if keys.len() != todo.len() && failure.is_none() {
            failure =
                Some(strata_store::Error::Unavailable("a layer worker stopped".into()).into());
        }
        let mut committed = Ok(());
        for &i in todo {
            let Some(Some(x)) = keys.get(&i) else {
                continue;
            };
            if failure.is_some() || committed.is_err() {
                let _ = self.sn.remove(self.scope, &x.key);
                continue;
            }
            committed = self
                .inherit_dir_metadata(i, x)
                .and_then(|()| self.commit(i, &x.key, true))
                .map(|landed| applied[i] = landed);
        }
        match failure {
            Some(e) => Err(e),
            None => committed,
        }
    }

    /// Applies layer `i` on its parent and commits it; false when its chain ID existed
    /// already (or another unpack committed it first).
    fn layer(&self, i: usize, on_parent: bool) -> Result<bool> {
        let parent = if on_parent && i > 0 {
            Some(self.chain[i - 1].to_string())
        } else {
            None
        };
        match self.extract(i, parent.as_deref())? {
            None => Ok(false),
            Some(x) => self.commit(i, &x.key, false),
        }
    }

    /// Layer `i` was applied without its parents, so the directories its entries needed but
    /// it did not list were made with default metadata; in the stack they would hide the
    /// parents' (a `/tmp` losing its sticky bit). Now that the parent chain is committed, they
    /// take their metadata from it, as a sequential apply would have given them.
    fn inherit_dir_metadata(&self, i: usize, x: &Extracted) -> Result<()> {
        if i == 0 || x.implicit_dirs.is_empty() {
            return Ok(());
        }
        let parent = self.chain[i - 1].to_string();
        let mut layers = vec![self.sn.files(self.ns(), &parent)?];
        layers.extend(self.sn.parent_files(self.ns(), &parent)?);
        let target = self.sn.files(self.ns(), &x.key)?;
        for rel in &x.implicit_dirs {
            crate::backend::fs::copy_dir_metadata(&layers, rel, &target)?;
        }
        Ok(())
    }

    /// Prepares an extraction snapshot for layer `i` and applies the layer into it. `None`
    /// when the layer's chain ID turned out to exist.
    fn extract(&self, i: usize, parent: Option<&str>) -> Result<Option<Extracted>> {
        let chain_id = self.chain[i].to_string();
        let labels = BTreeMap::from([(LABEL_SNAPSHOT_REF.to_owned(), chain_id.clone())]);
        let mut tries = 0;
        let key = loop {
            let key = format!("extract-{} {chain_id}", unique());
            match self.sn.prepare(self.scope, &key, parent, labels.clone()) {
                Ok(_) => {
                    failpoint!("unpack.after_prepare");
                    break key;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if self.exists(&self.chain[i])? {
                        return Ok(None);
                    }
                    tries += 1;
                    if tries >= PREPARE_TRIES {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        match self.apply(i, &key) {
            Ok(implicit_dirs) => {
                failpoint!("unpack.after_apply");
                Ok(Some(Extracted { key, implicit_dirs }))
            }
            Err(e) => {
                let _ = self.sn.remove(self.scope, &key);
                Err(e)
            }
        }
    }

    fn apply(&self, i: usize, key: &str) -> Result<Vec<std::path::PathBuf>> {
        let ns = self.ns();
        let layer = &self.manifest.layers[i];
        let target = self.sn.files(ns, key)?;
        let whiteouts = if self.sn.name() == "overlay" {
            WhiteoutMode::Overlay {
                userxattr: self.sn.userxattr(),
            }
        } else {
            WhiteoutMode::Native
        };
        let opts = ApplyOptions {
            whiteouts,
            parents: self.sn.parent_files(ns, key)?,
        };
        let reader = self.store.content().reader(ns, &layer.digest)?;
        let applied = apply_layer(reader, &target, &opts)?;
        if applied.diff_id != self.diff_ids[i] {
            return Err(Error::DiffIdMismatch {
                expected: self.diff_ids[i].to_string(),
                actual: applied.diff_id.to_string(),
            });
        }
        (self.progress)(layer.size);
        // The blob's diffID, so later unpacks and diffs need not decompress it again.
        if layer.digest != applied.diff_id {
            let mut info = self.store.content().info(ns, &layer.digest)?;
            info.labels
                .insert(LABEL_UNCOMPRESSED.to_owned(), applied.diff_id.to_string());
            self.store
                .content()
                .update(ns, &info, &[&format!("labels.{LABEL_UNCOMPRESSED}")])?;
        }
        Ok(applied.implicit_dirs)
    }

    /// Commits extraction snapshot `key` as layer `i`'s chain ID (onto its parent when it was
    /// applied parentless). True when this snapshot became the chain ID; false when another
    /// unpack committed it first (ours is removed; theirs stands).
    fn commit(&self, i: usize, key: &str, rebase: bool) -> Result<bool> {
        let name = self.chain[i].to_string();
        let done = match (rebase, i) {
            (true, i) if i > 0 => self.sn.commit_onto(
                self.scope,
                &name,
                key,
                &self.chain[i - 1].to_string(),
                BTreeMap::new(),
            ),
            _ => self.sn.commit(self.scope, &name, key, BTreeMap::new()),
        };
        match done {
            Ok(()) => {
                failpoint!("unpack.after_commit");
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let _ = self.sn.remove(self.scope, key);
                Ok(false)
            }
            Err(e) => {
                let _ = self.sn.remove(self.scope, key);
                Err(e)
            }
        }
    }
}

/// A unique suffix for extraction keys.
fn unique() -> String {
    super::import::unique_id("k")
}

/// An applied extraction snapshot, not committed yet.
struct Extracted {
    key: String,
    /// See [`crate::layer::Applied::implicit_dirs`].
    implicit_dirs: Vec<std::path::PathBuf>,
}

/// Chain IDs being unpacked in this process, so one unpack applies a layer while the others
/// wait for it (the store's root lock keeps other processes out).
static UNPACKING: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());
static UNPACKED: std::sync::Condvar = std::sync::Condvar::new();

/// Holds the keys until dropped.
struct ChainLocks {
    keys: Vec<String>,
}

impl ChainLocks {
    /// Takes every key, in the order given, waiting while another unpack holds one.
    fn acquire(keys: Vec<String>) -> Result<ChainLocks> {
        let poisoned = || {
            Error::from(strata_store::Error::Unavailable(
                "unpack lock poisoned".into(),
            ))
        };
        let mut held = UNPACKING.lock().map_err(|_| poisoned())?;
        for key in &keys {
            while held.contains(key) {
                held = UNPACKED.wait(held).map_err(|_| poisoned())?;
            }
            held.insert(key.clone());
        }
        Ok(ChainLocks { keys })
    }
}

impl Drop for ChainLocks {
    fn drop(&mut self) {
        if let Ok(mut held) = UNPACKING.lock() {
            for key in &self.keys {
                held.remove(key);
            }
        }
        UNPACKED.notify_all();
    }
}
