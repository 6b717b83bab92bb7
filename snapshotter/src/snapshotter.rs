//! [`Snapshotter`]: snapshot records in the store's database, directories through a backend.
//!
//! # Durability
//! - **prepare/view**: the directory is built under `new-<id>`, synced, renamed to `<id>`
//!   (parent directory synced), and only then does the transaction inserting the record
//!   commit. A crash leaves at worst an unrecorded directory.
//! - **commit**: the snapshot's filesystem is synced (`syncfs`), then one transaction turns the
//!   active record into a committed one (same directory).
//! - **remove**: the transaction deleting the record commits first; the directory is then
//!   renamed to `rm-<id>` and deleted. A crash leaves at worst an unrecorded directory.
//!
//! Unrecorded directories (`new-*`, `rm-*`, or an `<id>` no record names) are orphans for
//! reconcile; no record ever names a directory that is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::ReadableTable;
use strata_store::db::{SNAPSHOT_CHILDREN, SNAPSHOTS, WriteTxn};
use strata_store::filters::Filter;
use strata_store::identifiers::{apply_label_path, validate_labels};
use strata_store::object::Node;
use strata_store::{Scope, Store, Timestamp, codec, failpoint, leases, namespaces};

use crate::backend::native::Native;
use crate::backend::overlay::Overlay;
use crate::backend::{Backend, Mount, fs, fs_dir, mount};
use crate::snapshot::{Info, Kind, SnapshotRecord, Usage};
use crate::{Error, Result};

/// Every failpoint of the snapshotter, in the order operations reach them.
pub const FAILPOINTS: &[&str] = &[
    "snapshot.prepare.before_rename",
    "snapshot.prepare.after_rename",
    "snapshot.prepare.after_db",
    "snapshot.commit.before_db",
    "snapshot.commit.after_db",
    "snapshot.remove.after_db",
    "unpack.after_prepare",
    "unpack.after_apply",
    "unpack.after_commit",
    "unpack.before_config_label",
];

/// Label naming the snapshot a prepare is meant to become (containerd's remote-snapshotter
/// protocol): if it exists already, the prepare is AlreadyExists and the lease takes it.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

const TABLE: &str = "snapshots";

/// Parent chains deeper than this are treated as a corrupt (cyclic) database.
const MAX_CHAIN: usize = 10_000;

fn not_found(key: &str) -> Error {
    strata_store::Error::NotFound {
        kind: "snapshot",
        id: key.to_owned(),
    }
    .into()
}

fn already_exists(key: &str) -> Error {
    strata_store::Error::AlreadyExists {
        kind: "snapshot",
        id: key.to_owned(),
    }
    .into()
}

fn store_err(e: impl Into<strata_store::Error>) -> Error {
    Error::Store(e.into())
}

/// A named snapshotter (`overlay` or `native`) over one store.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    store: Store,
    name: &'static str,
    root: PathBuf,
    backend: std::sync::Arc<dyn Backend>,
    /// Overlay in a user namespace: markers live in `user.overlay.*` xattrs.
    userxattr: bool,
}

impl Snapshotter {
    /// The snapshotter called `name`: `overlay` or `native`.
    ///
    /// # Errors
    /// InvalidArgument for another name; the errors of [`Snapshotter::overlay`].
    pub fn open(store: &Store, name: &str) -> Result<Snapshotter> {
        match name {
            "overlay" => Snapshotter::overlay(store),
            "native" => Snapshotter::native(store),
            other => Err(strata_store::Error::InvalidArgument(format!(
                "unknown snapshotter {other:?}: use overlay or native"
            ))
            .into()),
        }
    }

    /// The overlay snapshotter, after checking that this host can mount overlay.
    ///
    /// # Errors
    /// [`Error::Mount`] when an overlay mount fails here (no root, no overlay module).
    pub fn overlay(store: &Store) -> Result<Snapshotter> {
        let mut options = Vec::new();
        // containerd turns the index feature off when the module has it, so that upper dirs
        // can be mounted again over other lowers.
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            options.push("index=off".to_owned());
        }
        let userxattr = crate::backend::overlay::in_user_namespace();
        if userxattr {
            options.push("userxattr".to_owned());
        }
        probe_overlay(store, &options)?;
        Snapshotter::with_backend(store, "overlay", Overlay { options }, userxattr)
    }

    /// The native snapshotter (full copies; works without overlay or root).
    pub fn native(store: &Store) -> Result<Snapshotter> {
        Snapshotter::with_backend(store, "native", Native, false)
    }

    fn with_backend(
        store: &Store,
        name: &'static str,
        backend: impl Backend + 'static,
        userxattr: bool,
    ) -> Result<Snapshotter> {
        let root = store.snapshot_root(name);
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create directory", &root, e))?;
        Ok(Snapshotter {
            store: store.clone(),
            name,
            root,
            backend: std::sync::Arc::new(backend),
            userxattr,
        })
    }

    /// `overlay` or `native`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether overlay mounts use `userxattr` (in a user namespace): layers applied into and
    /// diffed from upper dirs must then use `user.overlay.*` markers.
    pub fn userxattr(&self) -> bool {
        self.userxattr
    }

    /// `snapshots/<name>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn lease_kind(&self) -> String {
        format!("snapshots/{}", self.name)
    }

    /// Creates an active snapshot `key` on `parent` (which must be committed) and returns its
    /// mounts.
    ///
    /// # Errors
    /// InvalidArgument (empty key, bad label, parent not committed); NotFound (parent, scope
    /// lease); AlreadyExists when `key` exists, or when the `containerd.io/snapshot.ref`
    /// label names a snapshot that exists (the scope's lease then holds it).
    pub fn prepare(
        &self,
        scope: &Scope,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(scope, key, parent, labels, Kind::Active)
    }

    /// Creates a read-only view `key` of `parent` and returns its mounts. Errors as
    /// [`Snapshotter::prepare`].
    pub fn view(
        &self,
        scope: &Scope,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(scope, key, parent, labels, Kind::View)
    }

    fn create(
        &self,
        scope: &Scope,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(strata_store::Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            )
            .into());
        }
        let labels = validate_labels(labels)?;
        let ns = scope.namespace();
        let parent = parent.filter(|p| !p.is_empty());
        // Existing key or target: the lease takes it, and the caller learns it exists.
        for existing in [
            labels.get(LABEL_SNAPSHOT_REF).map(String::as_str),
            Some(key),
        ]
        .into_iter()
        .flatten()
        {
            if self.record(ns, existing)?.is_some() {
                let txn = self.store.db().write().map_err(store_err)?;
                leases::attach(&txn, scope, &self.lease_kind(), existing)?;
                txn.commit().map_err(store_err)?;
                return Err(already_exists(existing));
            }
        }
        let parents = match parent {
            None => Vec::new(),
            Some(p) => {
                let txn = self.store.db().read().map_err(store_err)?;
                let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
                let rec = get(&table, ns, self.name, p)?.ok_or_else(|| {
                    Error::from(strata_store::Error::NotFound {
                        kind: "parent snapshot",
                        id: p.to_owned(),
                    })
                })?;
                if rec.kind != Kind::Committed {
                    return Err(strata_store::Error::InvalidArgument(format!(
                        "parent snapshot {p:?} is {}, not committed",
                        rec.kind
                    ))
                    .into());
                }
                self.chain(&table, ns, Some(p))?
            }
        };
        let parent_dirs: Vec<PathBuf> = parents.iter().map(|(_, r)| self.dir(r.id)).collect();

        // In flight until this function returns: by then the record has committed or the
        // directory is gone.
        let in_flight = self.store.allocate_id()?;
        let id = in_flight.id();
        let staging = self.root.join(format!("new-{id}"));
        let dir = self.dir(id);
        // The mounts depend only on paths: computing them first means a chain that cannot be
        // mounted (over the kernel's 500 layers) is refused before anything is built.
        let mounts = self.backend.mounts(&dir, kind, &parent_dirs)?;
        let built = self
            .backend
            .create(&staging, kind, &parent_dirs)
            .and_then(|()| fs::sync_dir(&staging))
            .and_then(|()| {
                failpoint!("snapshot.prepare.before_rename");
                fs::rename_durable(&staging, &dir)
            });
        if let Err(e) = built {
            let _ = fs::remove_tree(&staging);
            return Err(e);
        }
        failpoint!("snapshot.prepare.after_rename");
        let rec = SnapshotRecord::new(id, kind, parent.map(str::to_owned), labels, None);
        let published = self.insert_new(scope, key, &rec);
        if let Err(e) = published {
            // The record never committed: the directory is ours alone to remove.
            let _ = fs::remove_tree(&dir);
            return Err(e);
        }
        failpoint!("snapshot.prepare.after_db");
        Ok(mounts)
    }

    /// The transaction that publishes a prepared snapshot, re-checking what may have changed
    /// since the directory was built.
    fn insert_new(&self, scope: &Scope, key: &str, rec: &SnapshotRecord) -> Result<()> {
        let ns = scope.namespace();
        let txn = self.store.db().write().map_err(store_err)?;
        namespaces::ensure(&txn, ns)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            if get(&table, ns, self.name, key)?.is_some() {
                return Err(already_exists(key));
            }
            if let Some(p) = &rec.parent {
                match get(&table, ns, self.name, p)? {
                    Some(parent) if parent.kind == Kind::Committed => {}
                    _ => {
                        return Err(strata_store::Error::NotFound {
                            kind: "parent snapshot",
                            id: p.clone(),
                        }
                        .into());
                    }
                }
                txn.open_table(SNAPSHOT_CHILDREN)
                    .map_err(store_err)?
                    .insert((ns, self.name, p.as_str(), key), ())
                    .map_err(store_err)?;
            }
            put(&txn, &mut table, ns, self.name, key, rec)?;
        }
        leases::attach(&txn, scope, &self.lease_kind(), key)?;
        txn.commit().map_err(store_err)?;
        Ok(())
    }

    /// Commits the active snapshot `key` as `name` (with `labels`); `key` is gone afterwards.
    ///
    /// # Errors
    /// NotFound (`key`); FailedPrecondition when `key` is a view; AlreadyExists (`name`);
    /// InvalidArgument (empty name, bad label).
    pub fn commit(
        &self,
        scope: &Scope,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.commit_inner(scope, name, key, None, labels)
    }

    /// Commits the parentless active snapshot `key` as `name` on top of the committed
    /// `parent` (containerd's rebase): how layers applied side by side are stacked in chain
    /// order afterwards. Only valid for layers whose files do not depend on the parent's, as
    /// an overlay upper dir does not.
    ///
    /// # Errors
    /// Those of [`Snapshotter::commit`]; InvalidArgument when `key` has a parent already or
    /// `parent` is not committed; NotFound for `parent`.
    pub fn commit_onto(
        &self,
        scope: &Scope,
        name: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.commit_inner(scope, name, key, Some(parent), labels)
    }

    fn commit_inner(
        &self,
        scope: &Scope,
        name: &str,
        key: &str,
        rebase: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(strata_store::Error::InvalidArgument(
                "snapshot name must not be empty".into(),
            )
            .into());
        }
        let labels = validate_labels(labels)?;
        let ns = scope.namespace();
        let rec = self.record(ns, key)?.ok_or_else(|| not_found(key))?;
        if rec.kind != Kind::Active {
            return Err(strata_store::Error::FailedPrecondition(format!(
                "snapshot {key:?} is a {}; only active snapshots can be committed",
                rec.kind
            ))
            .into());
        }
        if self.record(ns, name)?.is_some() {
            return Err(already_exists(name));
        }
        if let Some(p) = rebase
            && rec.parent.is_some()
        {
            return Err(strata_store::Error::InvalidArgument(format!(
                "snapshot {key:?} has a parent already; it cannot be committed onto {p:?}"
            ))
            .into());
        }
        let dir = self.dir(rec.id);
        let usage = fs::disk_usage(&fs_dir(&dir))?;
        // What was written into the snapshot becomes durable before the record says
        // "committed".
        fs::sync_filesystem(&dir)?;
        failpoint!("snapshot.commit.before_db");
        let txn = self.store.db().write().map_err(store_err)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let current = get(&table, ns, self.name, key)?.ok_or_else(|| not_found(key))?;
            if current.id != rec.id || current.kind != Kind::Active {
                return Err(strata_store::Error::FailedPrecondition(format!(
                    "snapshot {key:?} changed during commit"
                ))
                .into());
            }
            if get(&table, ns, self.name, name)?.is_some() {
                return Err(already_exists(name));
            }
            if let Some(p) = rebase {
                match get(&table, ns, self.name, p)? {
                    Some(parent) if parent.kind == Kind::Committed => {}
                    Some(parent) => {
                        return Err(strata_store::Error::InvalidArgument(format!(
                            "parent snapshot {p:?} is {}, not committed",
                            parent.kind
                        ))
                        .into());
                    }
                    None => {
                        return Err(strata_store::Error::NotFound {
                            kind: "parent snapshot",
                            id: p.to_owned(),
                        }
                        .into());
                    }
                }
            }
            let parent = rebase.map(str::to_owned).or_else(|| rec.parent.clone());
            let committed =
                SnapshotRecord::new(rec.id, Kind::Committed, parent.clone(), labels, Some(usage));
            table.remove((ns, self.name, key)).map_err(store_err)?;
            put(&txn, &mut table, ns, self.name, name, &committed)?;
            let mut children = txn.open_table(SNAPSHOT_CHILDREN).map_err(store_err)?;
            if let Some(p) = &rec.parent {
                children
                    .remove((ns, self.name, p.as_str(), key))
                    .map_err(store_err)?;
            }
            if let Some(p) = &parent {
                children
                    .insert((ns, self.name, p.as_str(), name), ())
                    .map_err(store_err)?;
            }
        }
        leases::detach(&txn, scope, &self.lease_kind(), key)?;
        leases::attach(&txn, scope, &self.lease_kind(), name)?;
        txn.commit().map_err(store_err)?;
        failpoint!("snapshot.commit.after_db");
        Ok(())
    }

    /// Removes snapshot `key`: its record first, then its directory.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition while it has children.
    pub fn remove(&self, scope: &Scope, key: &str) -> Result<()> {
        let ns = scope.namespace();
        let txn = self.store.db().write().map_err(store_err)?;
        let rec = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let rec = get(&table, ns, self.name, key)?.ok_or_else(|| not_found(key))?;
            let mut children = txn.open_table(SNAPSHOT_CHILDREN).map_err(store_err)?;
            if let Some(child) = first_child(&children, ns, self.name, key)? {
                return Err(strata_store::Error::FailedPrecondition(format!(
                    "cannot remove snapshot {key:?}: snapshot {child:?} is its child"
                ))
                .into());
            }
            if let Some(p) = &rec.parent {
                children
                    .remove((ns, self.name, p.as_str(), key))
                    .map_err(store_err)?;
            }
            table.remove((ns, self.name, key)).map_err(store_err)?;
            rec
        };
        leases::detach(&txn, scope, &self.lease_kind(), key)?;
        txn.deleted();
        txn.commit().map_err(store_err)?;
        failpoint!("snapshot.remove.after_db");
        // The record is gone. A directory that cannot be removed now (busy mount, EPERM) is an
        // orphan that reconcile retries; the `rm-` name marks it as garbage either way.
        let dir = self.dir(rec.id);
        let doomed = self.root.join(format!("rm-{}", rec.id));
        let removed = fs::rename_durable(&dir, &doomed).and_then(|()| fs::remove_tree(&doomed));
        if let Err(e) = removed {
            tracing::warn!(error = %e, snapshot = key, "snapshot directory left for reconcile");
        }
        Ok(())
    }

    /// A snapshot's info.
    ///
    /// # Errors
    /// NotFound.
    pub fn stat(&self, namespace: &str, key: &str) -> Result<Info> {
        Ok(self
            .record(namespace, key)?
            .ok_or_else(|| not_found(key))?
            .info(key))
    }

    /// Updates labels by field paths (`labels`, `labels.<k>`); no paths replaces them.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for another path (name, parent and kind never change).
    pub fn update(&self, namespace: &str, info: &Info, paths: &[&str]) -> Result<Info> {
        let txn = self.store.db().write().map_err(store_err)?;
        let updated = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let mut rec = get(&table, namespace, self.name, &info.name)?
                .ok_or_else(|| not_found(&info.name))?;
            if paths.is_empty() {
                apply_label_path("labels", "labels", &mut rec.labels, &info.labels)?;
            }
            for path in paths {
                if !apply_label_path("labels", path, &mut rec.labels, &info.labels)? {
                    return Err(strata_store::Error::InvalidArgument(format!(
                        "cannot update {path:?} field on snapshot {:?}",
                        info.name
                    ))
                    .into());
                }
            }
            rec.updated_at = Timestamp::now();
            put(&txn, &mut table, namespace, self.name, &info.name, &rec)?;
            rec.info(&info.name)
        };
        txn.commit().map_err(store_err)?;
        Ok(updated)
    }

    /// Disk used by the snapshot's own layer: measured now for active snapshots, as recorded
    /// at commit for committed ones.
    ///
    /// # Errors
    /// NotFound.
    pub fn usage(&self, namespace: &str, key: &str) -> Result<Usage> {
        let rec = self.record(namespace, key)?.ok_or_else(|| not_found(key))?;
        match rec.usage {
            Some(u) => Ok(u),
            None => fs::disk_usage(&fs_dir(&self.dir(rec.id))),
        }
    }

    /// The mounts of an active snapshot or a view.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition for a committed snapshot.
    pub fn mounts(&self, namespace: &str, key: &str) -> Result<Vec<Mount>> {
        let txn = self.store.db().read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let rec = get(&table, namespace, self.name, key)?.ok_or_else(|| not_found(key))?;
        if rec.kind == Kind::Committed {
            return Err(strata_store::Error::FailedPrecondition(format!(
                "snapshot {key:?} is committed; prepare or view it to mount it"
            ))
            .into());
        }
        let parents = self.chain(&table, namespace, rec.parent.as_deref())?;
        let parent_dirs: Vec<PathBuf> = parents.iter().map(|(_, r)| self.dir(r.id)).collect();
        self.backend
            .mounts(&self.dir(rec.id), rec.kind, &parent_dirs)
    }

    /// The directory holding a snapshot's own files (`<id>/fs`): where a layer is applied
    /// into an active snapshot without mounting it.
    ///
    /// # Errors
    /// NotFound.
    pub fn files(&self, namespace: &str, key: &str) -> Result<PathBuf> {
        let rec = self.record(namespace, key)?.ok_or_else(|| not_found(key))?;
        Ok(fs_dir(&self.dir(rec.id)))
    }

    /// The `fs` directories of a snapshot's parents, nearest first.
    ///
    /// # Errors
    /// NotFound.
    pub fn parent_files(&self, namespace: &str, key: &str) -> Result<Vec<PathBuf>> {
        let txn = self.store.db().read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let rec = get(&table, namespace, self.name, key)?.ok_or_else(|| not_found(key))?;
        Ok(self
            .chain(&table, namespace, rec.parent.as_deref())?
            .iter()
            .map(|(_, r)| fs_dir(&self.dir(r.id)))
            .collect())
    }

    /// The snapshots of a namespace matching `filters` (fields `kind`, `name`, `parent`,
    /// `labels.*`; several filters are OR'd), by key.
    pub fn list<S: AsRef<str>>(&self, namespace: &str, filters: &[S]) -> Result<Vec<Info>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let mut out = Vec::new();
        for item in table
            .range((namespace, self.name, "")..)
            .map_err(store_err)?
        {
            let (k, v) = item.map_err(store_err)?;
            let (kns, ksn, key) = k.value();
            if kns != namespace || ksn != self.name {
                break;
            }
            let rec: SnapshotRecord = codec::decode(TABLE, &key_display(kns, ksn, key), v.value())?;
            let info = rec.info(key);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Directories under `snapshots/<name>` that no record names; see [`orphan_dirs`].
    pub fn orphans(&self) -> Result<Vec<PathBuf>> {
        orphan_dirs(&self.store, self.name)
    }

    /// Mounts a snapshot's mount list on `target` (see [`mount::mount_all`]).
    pub fn mount(&self, namespace: &str, key: &str, target: &Path) -> Result<()> {
        mount::mount_all(&self.mounts(namespace, key)?, target)
    }

    fn record(&self, namespace: &str, key: &str) -> Result<Option<SnapshotRecord>> {
        let txn = self.store.db().read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        get(&table, namespace, self.name, key)
    }

    /// `parent` and its ancestors, nearest first.
    fn chain(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
        namespace: &str,
        parent: Option<&str>,
    ) -> Result<Vec<(String, SnapshotRecord)>> {
        let mut out: Vec<(String, SnapshotRecord)> = Vec::new();
        let mut next = parent.map(str::to_owned);
        while let Some(key) = next.take() {
            if out.len() >= MAX_CHAIN {
                return Err(corrupt(
                    namespace,
                    self.name,
                    &key,
                    "parent chain too deep (a cycle?)",
                ));
            }
            let rec = get(table, namespace, self.name, &key)?.ok_or_else(|| {
                corrupt(namespace, self.name, &key, "named as a parent but missing")
            })?;
            next.clone_from(&rec.parent);
            out.push((key, rec));
        }
        Ok(out)
    }
}

fn key_display(ns: &str, sn: &str, key: &str) -> String {
    format!("{ns}/{sn}/{key}")
}

fn corrupt(ns: &str, sn: &str, key: &str, reason: &str) -> Error {
    strata_store::Error::Corrupt {
        table: TABLE,
        key: key_display(ns, sn, key),
        reason: reason.into(),
    }
    .into()
}

fn get(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotRecord>> {
    match table.get((ns, sn, key)).map_err(store_err)? {
        None => Ok(None),
        Some(v) => Ok(Some(codec::decode(
            TABLE,
            &key_display(ns, sn, key),
            v.value(),
        )?)),
    }
}

/// Writes a snapshot record and tells `txn` it touched that snapshot (a concurrent mark must
/// keep it and its parents).
fn put(
    txn: &WriteTxn<'_>,
    table: &mut redb::Table<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
    rec: &SnapshotRecord,
) -> Result<()> {
    let bytes = codec::encode(TABLE, &key_display(ns, sn, key), rec)?;
    table
        .insert((ns, sn, key), bytes.as_slice())
        .map_err(store_err)?;
    txn.touch(Node::snapshot(ns, sn, key));
    Ok(())
}

fn first_child(
    children: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<String>> {
    match children
        .range((ns, sn, key, "")..)
        .map_err(store_err)?
        .next()
    {
        None => Ok(None),
        Some(item) => {
            let (k, _) = item.map_err(store_err)?;
            let (kns, ksn, parent, child) = k.value();
            Ok((kns == ns && ksn == sn && parent == key).then(|| child.to_owned()))
        }
    }
}

/// Mounts a one-layer overlay in the store's `tmp` to learn whether this host can.
fn probe_overlay(store: &Store, options: &[String]) -> Result<()> {
    let base = store
        .layout()
        .tmp()
        .join(format!("overlay-probe-{}", std::process::id()));
    let _ = fs::remove_tree(&base);
    let dirs = ["lower", "upper", "work", "merged"].map(|d| base.join(d));
    let result = (|| {
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
        }
        let [lower, upper, work, merged] = &dirs;
        let mut opts = vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        opts.extend(options.iter().cloned());
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: opts,
        };
        mount::mount_all(&[m], merged)?;
        mount::unmount(merged)
    })();
    let _ = fs::remove_tree(&base);
    result.map_err(|e| Error::Mount {
        target: "overlay snapshotter".into(),
        reason: format!("this host cannot mount overlay ({e}); use the native snapshotter"),
    })
}

/// Directories under `snapshots/<snapshotter>` that no record names: what a crash left
/// (`new-<id>` being built, `rm-<id>` being removed, or an `<id>` whose record never committed
/// or was deleted). Reconcile reclaims them; until then they are only listed. Needs no
/// backend, so it works where overlay cannot be mounted.
///
/// The directory is listed before the records are read, so a finished snapshot is never
/// reported; one being created or removed is. Meant for a store nobody writes to meanwhile
/// (tests, a stopped node); while writers run, `strata_gc::orphans` tells snapshots in flight
/// from orphans.
pub fn orphan_dirs(store: &Store, snapshotter: &str) -> Result<Vec<PathBuf>> {
    let root = store.snapshot_root(snapshotter);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &root, e)),
    };
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", &root, e))?;
        listed.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    let mut recorded = std::collections::HashSet::new();
    {
        let txn = store.db().read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        for item in table.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (ns, sn, key) = k.value();
            if sn == snapshotter {
                let rec: SnapshotRecord =
                    codec::decode(TABLE, &key_display(ns, sn, key), v.value())?;
                recorded.insert(rec.id.to_string());
            }
        }
    }
    let mut out: Vec<PathBuf> = listed
        .into_iter()
        .filter(|(name, _)| !recorded.contains(name))
        .map(|(_, path)| path)
        .collect();
    out.sort();
    Ok(out)
}
