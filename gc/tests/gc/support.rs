//! The fixture every module shares: a store with the native snapshotter in a temporary
//! directory, a builder for each kind of record, shorthands for the collector's nodes, and a
//! bind mount that is undone on drop.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use strata_gc::{Kind, Node};
use strata_snapshotter::Snapshotter;
use strata_store::containers::Container;
use strata_store::content::WriterOptions;
use strata_store::images::{Descriptor, Image};
use strata_store::leases::Resource;
use strata_store::{Algorithm, Digest, Scope, Store, StoreOptions, Timestamp};

/// An hour in nanoseconds (a [`Timestamp`]'s unit).
pub const HOUR: i64 = 3_600_000_000_000;

/// A store and its native snapshotter. The directory is the last field: it is removed after
/// the store is closed.
pub struct Fx {
    pub store: Store,
    pub sn: Snapshotter,
    pub tmp: tempfile::TempDir,
}

/// A fresh store (with a small database cache: many run at once in this binary).
pub fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::default();
    opts.cache_size = 4 << 20;
    let store = Store::open(tmp.path(), opts).unwrap();
    let sn = Snapshotter::native(&store).unwrap();
    Fx { store, sn, tmp }
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Borrows labels built as owned strings, for the builders below.
pub fn strs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `h` hours ago, as a label value.
pub fn ago(h: i64) -> String {
    Timestamp(Timestamp::now().0 - h * HOUR).to_rfc3339()
}

/// `h` hours from now, as a label value.
pub fn later(h: i64) -> String {
    Timestamp(Timestamp::now().0 + h * HOUR).to_rfc3339()
}

pub fn scope(ns: &str, lease: Option<&str>) -> Scope {
    let s = Scope::new(ns).unwrap();
    match lease {
        Some(l) => s.with_lease(l),
        None => s,
    }
}

pub fn digest_of(data: impl AsRef<[u8]>) -> Digest {
    Digest::of(Algorithm::Sha256, data.as_ref())
}

/// A digest as a label value.
pub fn x(d: &Digest) -> String {
    d.to_string()
}

/// An image record on the manifest `target`.
pub fn image_record(name: impl Into<String>, target: &Digest, l: &[(&str, &str)]) -> Image {
    let mut img = Image::new(
        name,
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.clone(),
            size: 1,
            annotations: BTreeMap::new(),
        },
    );
    img.labels = labels(l);
    img
}

impl Fx {
    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn blob(&self, ns: &str, data: &str, l: &[(&str, &str)]) -> Digest {
        self.blob_leased(ns, None, data, l)
    }

    /// Unlabelled blobs holding `data`, in order.
    pub fn blobs<const N: usize>(&self, ns: &str, data: [&str; N]) -> [Digest; N] {
        data.map(|d| self.blob(ns, d, &[]))
    }

    pub fn blob_leased(
        &self,
        ns: &str,
        lease: Option<&str>,
        data: &str,
        l: &[(&str, &str)],
    ) -> Digest {
        let mut w = self
            .store
            .content()
            .writer(
                &scope(ns, lease),
                &format!("w-{data}"),
                WriterOptions::default(),
            )
            .unwrap();
        w.write_all(data.as_bytes()).unwrap();
        w.commit(data.len() as u64, None, labels(l)).unwrap()
    }

    /// An ingest holding `data`, left open (its writer dropped).
    pub fn ingest(&self, ns: &str, lease: Option<&str>, reference: &str, data: &str) {
        self.ingest_with(ns, lease, reference, WriterOptions::default(), data);
    }

    /// An ingest opened with `opts`, holding `data`, left open.
    pub fn ingest_with(
        &self,
        ns: &str,
        lease: Option<&str>,
        reference: &str,
        opts: WriterOptions,
        data: &str,
    ) {
        let mut w = self
            .store
            .content()
            .writer(&scope(ns, lease), reference, opts)
            .unwrap();
        w.write_all(data.as_bytes()).unwrap();
        drop(w);
    }

    pub fn image(
        &self,
        ns: &str,
        lease: Option<&str>,
        name: &str,
        target: &Digest,
        l: &[(&str, &str)],
    ) {
        self.store
            .images()
            .create(&scope(ns, lease), image_record(name, target, l))
            .unwrap();
    }

    pub fn lease(&self, ns: &str, id: &str, l: &[(&str, &str)]) {
        self.store.leases().create(ns, id, labels(l)).unwrap();
    }

    /// Adds the resource `kind`/`id` to `lease`.
    pub fn add(&self, ns: &str, lease: &str, kind: &str, id: &str) {
        self.store
            .leases()
            .add_resource(ns, lease, &Resource::new(kind, id))
            .unwrap();
    }

    /// A committed snapshot `name` on `parent`, holding the file `name`.
    pub fn committed(
        &self,
        ns: &str,
        lease: Option<&str>,
        name: &str,
        parent: Option<&str>,
        l: &[(&str, &str)],
    ) {
        let s = scope(ns, lease);
        let key = format!("{name}-active");
        self.sn.prepare(&s, &key, parent, BTreeMap::new()).unwrap();
        std::fs::write(self.sn.files(ns, &key).unwrap().join(name), name).unwrap();
        self.sn.commit(&s, name, &key, labels(l)).unwrap();
    }

    pub fn active(
        &self,
        ns: &str,
        lease: Option<&str>,
        key: &str,
        parent: Option<&str>,
        l: &[(&str, &str)],
    ) {
        self.sn
            .prepare(&scope(ns, lease), key, parent, labels(l))
            .unwrap();
    }

    /// A container, on the native snapshot `snapshot` if given.
    pub fn container(&self, ns: &str, id: &str, snapshot: Option<&str>, l: &[(&str, &str)]) {
        let mut c = Container::new(id);
        if let Some(key) = snapshot {
            c.snapshotter = "native".into();
            c.snapshot_key = key.into();
        }
        c.labels = labels(l);
        self.store.containers().create(&scope(ns, None), c).unwrap();
    }

    /// `snapshots/native/<id>` of a snapshot that exists.
    pub fn snap_dir(&self, ns: &str, key: &str) -> PathBuf {
        self.sn
            .files(ns, key)
            .unwrap_or_else(|e| panic!("snapshot {ns}/{key}: {e}"))
            .parent()
            .unwrap()
            .to_owned()
    }

    /// The ingest directories on disk.
    pub fn ingest_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.store.layout().ingest_root())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Where the blob `d`'s file is (or would be).
    pub fn blob_file(&self, d: &Digest) -> PathBuf {
        self.store.layout().blob(d)
    }
}

/// containerd's TestMetadataCollector store in namespace `ns`; returns blobs 1 to 10.
///
/// Blob 1 is image-1's target, blob 2 a gc.root; snapshots 1 <- 2 <- 3 <- active 4 (held by
/// container-1) and active 5 on 3. Normal lease-1: blob 5 and its ref 6, active snapshot 6 and
/// its content ref 7. Flat lease-2: blob 8 (not its ref 9); active snapshot 9 on 8 on 7 (not
/// 7's ref 10).
pub fn metadata_collector_store(f: &Fx, ns: &str) -> [Digest; 10] {
    let b1 = f.blob(ns, "1", &[]);
    let b2 = f.blob(
        ns,
        "2",
        &[("containerd.io/gc.root", "2026-01-01T00:00:00Z")],
    );
    let [b3, b4] = f.blobs(ns, ["3", "4"]);
    f.image(ns, None, "image-1", &b1, &[]);
    f.committed(ns, None, "1", None, &[]);
    f.committed(ns, None, "2", Some("1"), &[]);
    f.committed(ns, None, "3", Some("2"), &[]);
    f.active(ns, None, "4", Some("3"), &[]);
    f.container(ns, "container-1", Some("4"), &[]);
    f.active(ns, None, "5", Some("3"), &[]);
    // Normal lease: blob 5 and its ref 6, snapshot 6 and its content ref 7.
    f.lease(ns, "lease-1", &[]);
    let b6 = f.blob(ns, "6", &[]);
    let b5 = f.blob_leased(
        ns,
        Some("lease-1"),
        "5",
        &[("containerd.io/gc.ref.content.0", &x(&b6))],
    );
    let b7 = f.blob(ns, "7", &[]);
    f.active(
        ns,
        Some("lease-1"),
        "6",
        None,
        &[("containerd.io/gc.ref.content.0", &x(&b7))],
    );
    // Flat lease: blob 8 not its ref 9; snapshot 9 with parents 8, 7, not 7's ref 10.
    f.lease(
        ns,
        "lease-2",
        &[("containerd.io/gc.flat", &Timestamp::now().to_rfc3339())],
    );
    let b9 = f.blob(ns, "9", &[]);
    let b8 = f.blob_leased(
        ns,
        Some("lease-2"),
        "8",
        &[("containerd.io/gc.ref.content.0", &x(&b9))],
    );
    let b10 = f.blob(ns, "10", &[]);
    f.committed(
        ns,
        None,
        "7",
        None,
        &[("containerd.io/gc.ref.content.0", &x(&b10))],
    );
    f.committed(ns, None, "8", Some("7"), &[]);
    f.active(ns, Some("lease-2"), "9", Some("8"), &[]);
    [b1, b2, b3, b4, b5, b6, b7, b8, b9, b10]
}

pub fn c(ns: &str, d: &Digest) -> Node {
    Node::new(Kind::Content, ns, d.to_string())
}
pub fn s(ns: &str, key: &str) -> Node {
    Node::snapshot(ns, "native", key)
}
pub fn i(ns: &str, name: &str) -> Node {
    Node::new(Kind::Image, ns, name)
}
pub fn l(ns: &str, id: &str) -> Node {
    Node::new(Kind::Lease, ns, id)
}
pub fn g(ns: &str, r: &str) -> Node {
    Node::new(Kind::Ingest, ns, r)
}
pub fn ct(ns: &str, id: &str) -> Node {
    Node::new(Kind::Container, ns, id)
}

/// Bind-mounts `source` on `target`; `option` is `bind` or `rbind`.
pub fn bind_mount(source: &Path, target: &Path, option: &str) -> strata_snapshotter::Result<()> {
    let m = strata_snapshotter::Mount {
        kind: "bind".into(),
        source: source.display().to_string(),
        options: vec![option.into()],
    };
    strata_snapshotter::backend::mount::mount_all(&[m], target)
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
pub struct MountGuard(pub Option<PathBuf>);

impl MountGuard {
    /// Unmounts now, failing the test if that fails.
    pub fn release(&mut self) {
        if let Some(p) = self.0.take() {
            strata_snapshotter::backend::mount::unmount(&p).unwrap();
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = strata_snapshotter::backend::mount::unmount(&p);
        }
    }
}
