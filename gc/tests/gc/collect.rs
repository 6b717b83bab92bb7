//! Full collections against real stores: sweep, cleanup, reconcile, dry run.
//!
//! - containerd's TestMetadataCollector end to end, with the files checked on disk;
//! - removal of each kind (expired leases with their resource rows, expired images, expired
//!   ingests with their directories, snapshot chains without a phantom child left);
//! - shared layers between images (user-pain 21, 26) and between leases (27);
//! - a property test over random object graphs: the dry run predicts the collection exactly,
//!   nothing reachable (computed here by a BFS over the generated model) is removed, and
//!   records and files agree afterwards;
//! - orphans and missing data; an orphan that cannot be removed (a mount point, user-pain 24);
//! - collections racing writers (images made on an unreferenced blob, snapshots prepared on a
//!   parent whose referent goes).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use proptest::prelude::*;
use redb::ReadableTable;
use strata_gc::{Node, Report, collect, collect_at, dry_run, dry_run_at};
use strata_store::content::WriterOptions;
use strata_store::{Algorithm, Digest, ErrorKind, Store, Timestamp};

use crate::support::{
    Fx, HOUR, MountGuard, ago, bind_mount, c, digest_of, fx, g, i, image_record, l, later,
    metadata_collector_store, s, scope, strs, x,
};

// ---------------------------------------------------------------------------------------------
// Checks.

impl Fx {
    fn has_blob(&self, ns: &str, d: &Digest) -> bool {
        match self.store.content().info(ns, d) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => panic!("info {d}: {e}"),
        }
    }

    fn has_snapshot(&self, ns: &str, key: &str) -> bool {
        match self.sn.stat(ns, key) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => panic!("stat {key}: {e}"),
        }
    }

    /// Collects now, checking what every collection must leave: no failure, no record
    /// without its data, and a dry run afterwards with nothing to do.
    fn collect(&self) -> Report {
        let report = collect(&self.store).unwrap();
        self.check_clean(&report);
        report
    }

    fn check_clean(&self, report: &Report) {
        assert!(report.files.failed.is_empty(), "{:?}", report.files.failed);
        assert!(
            report.files.missing.is_empty(),
            "{:?}",
            report.files.missing
        );
        let mut sorted = report.removed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, report.removed, "removed is sorted, no duplicates");
        let again = dry_run(&self.store).unwrap();
        assert!(
            again.orphans.is_empty(),
            "orphans left: {:?}",
            again.orphans
        );
    }

    /// Every snapshot directory and blob file on disk (to compare before and after).
    fn files_on_disk(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for dir in [
            self.store.layout().blob_dir(Algorithm::Sha256),
            self.sn.root().to_owned(),
        ] {
            for e in std::fs::read_dir(&dir).unwrap() {
                out.insert(e.unwrap().path());
            }
        }
        out
    }
}

fn sorted(nodes: impl IntoIterator<Item = Node>) -> Vec<Node> {
    let mut v: Vec<Node> = nodes.into_iter().collect();
    v.sort();
    v
}

fn orphan_paths(o: &[strata_gc::cleanup::Orphan]) -> BTreeSet<PathBuf> {
    o.iter().map(|o| o.path.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// 0. The first smoke test.

#[test]
fn deleting_an_image_frees_its_unique_blobs_and_snapshots() {
    let f = fx();
    let scope = scope("ns", None);
    let [shared, only_a] = f.blobs("ns", ["shared layer", "layer of a"]);
    f.sn.prepare(&scope, "a-active", None, BTreeMap::new())
        .unwrap();
    f.sn.commit(&scope, "a-top", "a-active", BTreeMap::new())
        .unwrap();
    let ma = f.blob(
        "ns",
        "manifest a",
        &[
            ("containerd.io/gc.ref.content.l.0", &shared.to_string()),
            ("containerd.io/gc.ref.content.l.1", &only_a.to_string()),
            ("containerd.io/gc.ref.snapshot.native", "a-top"),
        ],
    );
    let mb = f.blob(
        "ns",
        "manifest b",
        &[("containerd.io/gc.ref.content.l.0", &shared.to_string())],
    );
    f.image("ns", None, "a", &ma, &[]);
    f.image("ns", None, "b", &mb, &[]);

    let first = collect(&f.store).unwrap();
    assert!(first.removed.is_empty(), "{:?}", first.removed);

    f.store.images().delete(&scope, "a").unwrap();
    let plan = dry_run(&f.store).unwrap();
    let report = collect(&f.store).unwrap();
    let want = sorted([c("ns", &only_a), c("ns", &ma), s("ns", "a-top")]);
    assert_eq!(report.removed, want);
    let planned: Vec<Node> = plan.remove.iter().map(|d| d.node.clone()).collect();
    assert_eq!(planned, report.removed);
    assert!(!f.blob_file(&only_a).exists());
    assert!(!f.blob_file(&ma).exists());
    assert!(f.blob_file(&shared).exists());
    assert!(f.blob_file(&mb).exists());
    assert_eq!(report.files.removed.len(), 3, "{:?}", report.files);
    assert!(report.files.failed.is_empty());
    assert_eq!(
        report.bytes_freed(),
        report.files.removed.iter().map(|o| o.bytes).sum::<u64>()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. containerd's TestMetadataCollector, end to end.

#[test]
fn metadata_collector_end_to_end() {
    let f = fx();
    let ns = "test";
    let [b1, b2, b3, b4, b5, b6, b7, b8, b9, b10] = metadata_collector_store(&f, ns);

    let kept_blobs = [&b1, &b2, &b5, &b6, &b7, &b8];
    let kept_snaps = ["1", "2", "3", "4", "6", "7", "8", "9"];
    let removed_blobs = [&b3, &b4, &b9, &b10];
    let dir5 = f.snap_dir(ns, "5");
    let kept_dirs: Vec<PathBuf> = kept_snaps.iter().map(|k| f.snap_dir(ns, k)).collect();
    for d in removed_blobs {
        assert!(f.blob_file(d).exists());
    }
    assert!(dir5.is_dir());

    let plan = dry_run(&f.store).unwrap();
    let report = f.collect();
    let want = sorted([c(ns, &b3), c(ns, &b4), c(ns, &b9), c(ns, &b10), s(ns, "5")]);
    assert_eq!(report.removed, want, "exact removed set");
    let plan_nodes: Vec<Node> = plan.remove.iter().map(|d| d.node.clone()).collect();
    assert_eq!(plan_nodes, want, "the dry run predicted it");
    assert_eq!(report.kept_late, 0);

    // On disk: the removed blob files and snapshot directory are gone, and cleanup listed
    // exactly those.
    for d in removed_blobs {
        assert!(!f.blob_file(d).exists(), "blob file {d} removed");
        assert!(!f.has_blob(ns, d));
    }
    assert!(!dir5.exists(), "snapshot 5's directory removed");
    let mut gone: BTreeSet<PathBuf> = removed_blobs.iter().map(|d| f.blob_file(d)).collect();
    gone.insert(dir5);
    assert_eq!(orphan_paths(&report.files.removed), gone);
    assert!(report.bytes_freed() > 0);

    // The kept ones remain, records and data.
    for d in kept_blobs {
        assert!(f.has_blob(ns, d), "blob {d} kept");
        assert!(f.blob_file(d).exists(), "blob file {d} kept");
    }
    for (k, dir) in kept_snaps.iter().zip(&kept_dirs) {
        assert!(f.has_snapshot(ns, k), "snapshot {k} kept");
        assert!(dir.is_dir(), "snapshot {k}'s directory kept");
    }
    assert_eq!(
        std::fs::read(f.sn.files(ns, "7").unwrap().join("7")).unwrap(),
        b"7"
    );
    f.store.leases().get(ns, "lease-1").unwrap();
    f.store.leases().get(ns, "lease-2").unwrap();
    f.store.images().get(ns, "image-1").unwrap();

    // A second collection finds nothing.
    let again = f.collect();
    assert!(again.removed.is_empty(), "{:?}", again.removed);
    assert!(again.files.removed.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Removal per kind.

fn lease_resource_rows(store: &Store, ns: &str, lease: &str) -> usize {
    let txn = store.db().read().unwrap();
    let t = txn.open_table(strata_store::db::LEASE_RESOURCES).unwrap();
    t.iter()
        .unwrap()
        .filter(|r| {
            let (k, _) = r.as_ref().unwrap();
            let (kns, id, _, _) = k.value();
            kns == ns && id == lease
        })
        .count()
}

#[test]
fn expired_lease_is_removed_with_its_resource_rows_and_what_only_it_held() {
    let f = fx();
    let ns = "ns";
    f.lease(ns, "old", &[("containerd.io/gc.expire", &ago(1))]);
    f.lease(ns, "live", &[("containerd.io/gc.expire", &later(1))]);
    let held = f.blob_leased(ns, Some("old"), "held", &[]);
    let both = f.blob_leased(ns, Some("old"), "both", &[]);
    f.add(ns, "live", "content", &x(&both));
    f.committed(ns, Some("old"), "snap", None, &[]);
    f.ingest(ns, Some("old"), "ing", "partial");
    // A resource that never existed is a row too.
    f.add(ns, "old", "images", "no-such-image");
    assert!(lease_resource_rows(&f.store, ns, "old") >= 5);
    let ingest_dirs = f.ingest_dirs();
    assert_eq!(ingest_dirs.len(), 1);
    let snap_dir = f.snap_dir(ns, "snap");

    let report = f.collect();
    assert_eq!(
        report.removed,
        sorted([c(ns, &held), s(ns, "snap"), l(ns, "old"), g(ns, "ing"),])
    );
    assert_eq!(
        f.store.leases().get(ns, "old").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        lease_resource_rows(&f.store, ns, "old"),
        0,
        "resource rows gone"
    );
    assert_eq!(lease_resource_rows(&f.store, ns, "live"), 1);
    // A new lease under the same id starts empty.
    f.lease(ns, "old", &[]);
    assert!(f.store.leases().resources(ns, "old").unwrap().is_empty());
    assert!(!f.blob_file(&held).exists());
    assert!(f.blob_file(&both).exists() && f.has_blob(ns, &both));
    assert!(!snap_dir.exists());
    assert!(
        !ingest_dirs[0].exists(),
        "the ingest's directory is removed"
    );
    assert!(
        report.next_expiry.is_some(),
        "the live lease's expiry is ahead"
    );
}

#[test]
fn expired_image_is_removed_with_its_unique_target() {
    let f = fx();
    let ns = "ns";
    let [t_old, t_new, shared] = f.blobs(ns, ["old target", "new target", "shared"]);
    let m_old = f.blob(
        ns,
        "old manifest",
        &[("containerd.io/gc.ref.content.l.0", &x(&shared))],
    );
    let _ = t_old;
    f.image(
        ns,
        None,
        "expired",
        &m_old,
        &[
            ("containerd.io/gc.expire", &ago(1)),
            ("containerd.io/gc.root", "ignored on images"),
        ],
    );
    f.image(
        ns,
        None,
        "future",
        &t_new,
        &[
            ("containerd.io/gc.expire", &later(2)),
            ("containerd.io/gc.ref.content", &x(&shared)),
        ],
    );
    let report = f.collect();
    assert_eq!(
        report.removed,
        sorted([i(ns, "expired"), c(ns, &m_old), c(ns, &t_old)])
    );
    assert_eq!(
        f.store.images().get(ns, "expired").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    f.store.images().get(ns, "future").unwrap();
    assert!(f.has_blob(ns, &shared) && f.blob_file(&shared).exists());
    assert!(!f.blob_file(&m_old).exists());
    // Its expiry is the next one.
    let next = report.next_expiry.expect("the future image expires");
    assert!(next > Timestamp::now() && next.0 < Timestamp::now().0 + 3 * HOUR);

    // Three hours on, the other one goes too.
    let r = collect_at(&f.store, Timestamp(Timestamp::now().0 + 3 * HOUR)).unwrap();
    assert_eq!(
        r.removed,
        sorted([i(ns, "future"), c(ns, &t_new), c(ns, &shared)])
    );
}

#[test]
fn expired_unleased_ingest_is_removed_with_its_directory() {
    let f = fx();
    let ns = "ns";
    f.ingest(ns, None, "stale", "some bytes");
    let dirs = f.ingest_dirs();
    assert_eq!(dirs.len(), 1);
    // Within its 24 h it is a root.
    let now = f.collect();
    assert!(now.removed.is_empty());
    assert!(dirs[0].is_dir());
    let next = now.next_expiry.expect("the ingest's expiry");
    assert!(next.0 > Timestamp::now().0 + 23 * HOUR);
    let plan = dry_run_at(&f.store, Timestamp(Timestamp::now().0 + 48 * HOUR)).unwrap();
    assert_eq!(
        plan.remove
            .iter()
            .map(|d| d.node.clone())
            .collect::<Vec<_>>(),
        vec![g(ns, "stale")]
    );
    let r = collect_at(&f.store, Timestamp(Timestamp::now().0 + 48 * HOUR)).unwrap();
    assert_eq!(r.removed, vec![g(ns, "stale")]);
    assert!(!dirs[0].exists(), "the ingest directory is removed");
    assert_eq!(
        orphan_paths(&r.files.removed),
        BTreeSet::from([dirs[0].clone()])
    );
    assert_eq!(
        f.store.content().status(ns, "stale").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The ref can be written again from nothing.
    let w = f
        .store
        .content()
        .writer(&scope(ns, None), "stale", WriterOptions::default())
        .unwrap();
    assert_eq!(w.status().offset, 0);
}

#[test]
fn unreferenced_snapshot_chain_is_removed_children_first_without_a_phantom_child() {
    let f = fx();
    let ns = "ns";
    f.committed(ns, None, "P", None, &[]);
    f.committed(ns, None, "C", Some("P"), &[]);
    f.active(ns, None, "A", Some("C"), &[]);
    let dirs = [
        f.snap_dir(ns, "P"),
        f.snap_dir(ns, "C"),
        f.snap_dir(ns, "A"),
    ];
    let report = f.collect();
    assert_eq!(report.removed, sorted([s(ns, "P"), s(ns, "C"), s(ns, "A")]));
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    // Directories go children first.
    let order: Vec<&PathBuf> = report.files.removed.iter().map(|o| &o.path).collect();
    assert_eq!(order, vec![&dirs[2], &dirs[1], &dirs[0]], "children first");
    // No children index row is left behind.
    {
        let txn = f.store.db().read().unwrap();
        let t = txn.open_table(strata_store::db::SNAPSHOT_CHILDREN).unwrap();
        assert_eq!(t.iter().unwrap().count(), 0, "no phantom child rows");
    }
    // The same keys again: the new parent has no phantom child and can be removed.
    f.committed(ns, None, "P", None, &[]);
    f.sn.remove(&scope(ns, None), "P")
        .expect("the recreated parent has no phantom child");
    f.committed(ns, None, "P", None, &[]);
    f.committed(ns, None, "C", Some("P"), &[]);
    assert_eq!(
        f.sn.remove(&scope(ns, None), "P").unwrap_err().kind(),
        ErrorKind::FailedPrecondition,
        "a real child still blocks its parent"
    );
    f.sn.remove(&scope(ns, None), "C").unwrap();
    f.sn.remove(&scope(ns, None), "P").unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. Images sharing layers (user-pain 21, 26).

/// An "image": layer blobs, a snapshot chain (one committed snapshot per layer, named by the
/// layer list), a config holding the top snapshot, a manifest holding config and layers.
struct Built {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
    chain: Vec<String>,
}

fn build_image(f: &Fx, ns: &str, tag: &str, layers: &[&str]) -> Built {
    let mut digests = Vec::new();
    let mut chain: Vec<String> = Vec::new();
    for (n, layer) in layers.iter().enumerate() {
        let data = format!("layer {layer}");
        let d = digest_of(&data);
        if !f.has_blob(ns, &d) {
            f.blob(ns, &data, &[]);
        }
        digests.push(d);
        let name = format!("chain-{}", layers[..=n].join("-"));
        if !f.has_snapshot(ns, &name) {
            f.committed(ns, None, &name, chain.last().map(String::as_str), &[]);
        }
        chain.push(name);
    }
    let top = chain.last().unwrap().clone();
    let config = f.blob(
        ns,
        &format!("config {tag}"),
        &[("containerd.io/gc.ref.snapshot.native", &top)],
    );
    let mut ml = vec![("containerd.io/gc.ref.content.config".to_owned(), x(&config))];
    for (n, d) in digests.iter().enumerate() {
        ml.push((format!("containerd.io/gc.ref.content.l.{n}"), x(d)));
    }
    let manifest = f.blob(ns, &format!("manifest {tag}"), &strs(&ml));
    Built {
        manifest,
        config,
        layers: digests,
        chain,
    }
}

/// Asserts the image's records and files are all there.
fn assert_complete(f: &Fx, ns: &str, b: &Built) {
    for d in [&b.manifest, &b.config].into_iter().chain(&b.layers) {
        assert!(f.has_blob(ns, d), "blob {d} recorded");
        assert!(f.blob_file(d).exists(), "blob {d} on disk");
    }
    for k in &b.chain {
        assert!(f.has_snapshot(ns, k), "snapshot {k}");
        assert!(f.snap_dir(ns, k).is_dir());
    }
}

#[test]
fn deleting_a_base_image_frees_only_its_unique_data_then_the_rest() {
    let f = fx();
    let ns = "ns";
    let a = build_image(&f, ns, "a", &["base", "mid", "a-top"]);
    let b = build_image(&f, ns, "b", &["base", "mid", "b-top"]);
    f.image(ns, None, "a", &a.manifest, &[]);
    f.image(ns, None, "b", &b.manifest, &[]);
    assert!(f.collect().removed.is_empty());

    f.store.images().delete(&scope(ns, None), "a").unwrap();
    let a_top_dir = f.snap_dir(ns, &a.chain[2]);
    let r = f.collect();
    assert_eq!(
        r.removed,
        sorted([
            c(ns, &a.manifest),
            c(ns, &a.config),
            c(ns, &a.layers[2]),
            s(ns, &a.chain[2]),
        ]),
        "only A's unique data"
    );
    assert!(!a_top_dir.exists());
    assert!(!f.blob_file(&a.layers[2]).exists());
    assert_complete(&f, ns, &b);

    // Deleting B frees the rest; the shared parents are not held by any dangling child link.
    f.store.images().delete(&scope(ns, None), "b").unwrap();
    let before = f.files_on_disk();
    assert!(!before.is_empty());
    let r = f.collect();
    assert_eq!(
        r.removed,
        sorted([
            c(ns, &b.manifest),
            c(ns, &b.config),
            c(ns, &b.layers[0]),
            c(ns, &b.layers[1]),
            c(ns, &b.layers[2]),
            s(ns, &b.chain[0]),
            s(ns, &b.chain[1]),
            s(ns, &b.chain[2]),
        ])
    );
    assert!(f.files_on_disk().is_empty(), "{:?}", f.files_on_disk());
    assert!(f.sn.list::<&str>(ns, &[]).unwrap().is_empty());
    assert!(f.store.content().list::<&str>(ns, &[]).unwrap().is_empty());
}

#[test]
fn recreating_an_image_under_the_same_name_with_shared_layers_keeps_it_complete() {
    let f = fx();
    let ns = "ns";
    let old = build_image(&f, ns, "v1", &["base", "old-top"]);
    f.image(ns, None, "app", &old.manifest, &[]);
    assert!(f.collect().removed.is_empty());
    // nerdctl convert: the new content is written (unreferenced), the old image deleted, and
    // the same name created on the new manifest.
    let new = build_image(&f, ns, "v2", &["base", "new-top"]);
    f.store.images().delete(&scope(ns, None), "app").unwrap();
    f.image(ns, None, "app", &new.manifest, &[]);
    let r = f.collect();
    assert_eq!(
        r.removed,
        sorted([
            c(ns, &old.manifest),
            c(ns, &old.config),
            c(ns, &old.layers[1]),
            s(ns, &old.chain[1]),
        ])
    );
    assert_complete(&f, ns, &new);
    assert_eq!(
        f.store.images().get(ns, "app").unwrap().target.digest,
        new.manifest
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Leases never free what another lease or a root holds (user-pain 27).

#[test]
fn deleting_one_lease_never_frees_what_another_lease_or_a_root_holds() {
    let f = fx();
    let ns = "ns";
    f.lease(ns, "l1", &[]);
    f.lease(ns, "l2", &[]);
    f.lease(ns, "l3", &[]);
    let shared = f.blob_leased(ns, Some("l1"), "shared", &[]);
    f.add(ns, "l2", "content", &x(&shared));
    let only1 = f.blob_leased(ns, Some("l1"), "only l1", &[]);
    f.committed(ns, Some("l1"), "s-shared", None, &[]);
    f.add(ns, "l2", "snapshots/native", "s-shared");
    f.committed(ns, Some("l1"), "s-only1", Some("s-shared"), &[]);
    let y = f.blob_leased(ns, Some("l3"), "y", &[]);
    let root = f.blob(
        ns,
        "root",
        &[
            ("containerd.io/gc.root", "1"),
            ("containerd.io/gc.ref.content", &x(&y)),
        ],
    );
    assert!(f.collect().removed.is_empty());

    f.store.leases().delete(ns, "l1").unwrap();
    let r = f.collect();
    assert_eq!(
        r.removed,
        sorted([c(ns, &only1), s(ns, "s-only1")]),
        "what l2 and the root hold stays"
    );
    assert!(f.blob_file(&shared).exists() && f.has_snapshot(ns, "s-shared"));

    f.store.leases().delete(ns, "l3").unwrap();
    let r = f.collect();
    assert!(
        r.removed.is_empty(),
        "the root still holds y: {:?}",
        r.removed
    );
    assert!(f.blob_file(&y).exists());

    f.store.leases().delete(ns, "l2").unwrap();
    let r = f.collect();
    assert_eq!(r.removed, sorted([c(ns, &shared), s(ns, "s-shared")]));
    assert!(f.has_blob(ns, &root) && f.has_blob(ns, &y));
}

#[test]
fn a_blob_recorded_in_two_namespaces_keeps_its_file_until_both_records_go() {
    let f = fx();
    let d = f.blob("one", "same bytes", &[]);
    assert_eq!(
        f.blob("two", "same bytes", &[("containerd.io/gc.root", "1")]),
        d
    );
    let plan = dry_run(&f.store).unwrap();
    assert_eq!(plan.remove.len(), 1);
    assert_eq!(plan.remove[0].node, c("one", &d));
    assert_eq!(plan.remove[0].unique_bytes, 0, "the file stays");
    let on_disk = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(f.blob_file(&d)).unwrap().blocks() * 512
    };
    assert_eq!(
        plan.remove[0].shared_bytes, on_disk,
        "the file's bytes count as shared"
    );
    assert_eq!(plan.unique_bytes, 0);
    let r = f.collect();
    assert_eq!(r.removed, vec![c("one", &d)]);
    assert!(r.files.removed.is_empty());
    assert!(f.blob_file(&d).exists());
    let mut info = f.store.content().info("two", &d).unwrap();
    info.labels.clear();
    f.store.content().update("two", &info, &[]).unwrap();
    let r = f.collect();
    assert_eq!(r.removed, vec![c("two", &d)]);
    assert!(!f.blob_file(&d).exists());
}

// ---------------------------------------------------------------------------------------------
// 5. Property test: random graphs.

const NAMESPACES: [&str; 2] = ["pa", "pb"];

#[derive(Debug, Clone)]
struct BlobSpec {
    root: bool,
    refs: Vec<u8>,
    image_ref: Option<u8>,
}

#[derive(Debug, Clone)]
struct ImageSpec {
    target: u8,
    expired: bool,
    refs: Vec<u8>,
}

#[derive(Debug, Clone)]
struct SnapSpec {
    parent: Option<u8>,
    active: bool,
    root: bool,
    content_refs: Vec<u8>,
    snap_refs: Vec<u8>,
}

#[derive(Debug, Clone)]
struct LeaseSpec {
    expired: bool,
    flat: bool,
    blobs: Vec<u8>,
    snaps: Vec<u8>,
    images: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Space {
    blobs: Vec<BlobSpec>,
    images: Vec<ImageSpec>,
    snaps: Vec<SnapSpec>,
    leases: Vec<LeaseSpec>,
    /// (snapshot, content label ref).
    containers: Vec<(u8, Option<u8>)>,
    /// Lease index (modulo) or unleased.
    ingests: Vec<Option<u8>>,
}

fn idx(v: u8, n: usize) -> Option<usize> {
    (n > 0).then(|| usize::from(v) % n)
}

fn space() -> impl Strategy<Value = Space> {
    let blob = (
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::option::weighted(0.15, any::<u8>()),
    )
        .prop_map(|(root, refs, image_ref)| BlobSpec {
            root,
            refs,
            image_ref,
        });
    let image = (
        any::<u8>(),
        prop::bool::weighted(0.3),
        prop::collection::vec(any::<u8>(), 0..2),
    )
        .prop_map(|(target, expired, refs)| ImageSpec {
            target,
            expired,
            refs,
        });
    let snap = (
        prop::option::weighted(0.7, any::<u8>()),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
        prop::collection::vec(any::<u8>(), 0..2),
        prop::collection::vec(any::<u8>(), 0..2),
    )
        .prop_map(|(parent, active, root, content_refs, snap_refs)| SnapSpec {
            parent,
            active,
            root,
            content_refs,
            snap_refs,
        });
    let lease = (
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<u8>(), 0..2),
        prop::collection::vec(any::<u8>(), 0..2),
    )
        .prop_map(|(expired, flat, blobs, snaps, images)| LeaseSpec {
            expired,
            flat,
            blobs,
            snaps,
            images,
        });
    (
        prop::collection::vec(blob, 1..8),
        prop::collection::vec(image, 0..4),
        prop::collection::vec(snap, 0..7),
        prop::collection::vec(lease, 0..3),
        prop::collection::vec((any::<u8>(), prop::option::of(any::<u8>())), 0..2),
        prop::collection::vec(prop::option::of(any::<u8>()), 0..3),
    )
        .prop_map(
            |(blobs, images, snaps, leases, containers, ingests)| Space {
                blobs,
                images,
                snaps,
                leases,
                containers,
                ingests,
            },
        )
}

/// (digest, gc.root, content refs, image ref)
type BlobR = (Digest, bool, Vec<usize>, Option<usize>);
/// (target, expired, content refs)
type ImageR = (usize, bool, Vec<usize>);
/// (parent, active, gc.root, content refs, snapshot refs)
type SnapR = (Option<usize>, bool, bool, Vec<usize>, Vec<usize>);

/// The resolved graph of one namespace: indices made valid, names given.
#[derive(Debug, Default)]
struct Resolved {
    blobs: Vec<BlobR>,
    images: Vec<ImageR>,
    /// (parent, active, root, content refs, snapshot refs)
    snaps: Vec<SnapR>,
    leases: Vec<LeaseSpecR>,
    containers: Vec<(usize, Option<usize>)>,
    ingests: Vec<Option<usize>>,
}

#[derive(Debug)]
struct LeaseSpecR {
    expired: bool,
    flat: bool,
    blobs: Vec<usize>,
    snaps: Vec<usize>,
    images: Vec<usize>,
    ingests: Vec<usize>,
}

fn blob_data(n: usize) -> String {
    // The same bytes in both namespaces: one file shared by two records.
    format!("prop blob {n}")
}

fn resolve(sp: &Space) -> Resolved {
    let nb = sp.blobs.len();
    let mut r = Resolved::default();
    for (n, b) in sp.blobs.iter().enumerate() {
        r.blobs.push((
            digest_of(blob_data(n)),
            b.root,
            b.refs.iter().filter_map(|v| idx(*v, nb)).collect(),
            b.image_ref.and_then(|v| idx(v, sp.images.len())),
        ));
    }
    for im in &sp.images {
        r.images.push((
            idx(im.target, nb).unwrap_or(0),
            im.expired,
            im.refs.iter().filter_map(|v| idx(*v, nb)).collect(),
        ));
    }
    let ns = sp.snaps.len();
    let mut active: Vec<bool> = Vec::new();
    for (n, sn) in sp.snaps.iter().enumerate() {
        let parents: Vec<usize> = (0..n).filter(|j| !active[*j]).collect();
        let parent = sn
            .parent
            .and_then(|v| idx(v, parents.len()))
            .map(|k| parents[k]);
        active.push(sn.active);
        r.snaps.push((
            parent,
            sn.active,
            sn.root,
            sn.content_refs.iter().filter_map(|v| idx(*v, nb)).collect(),
            sn.snap_refs.iter().filter_map(|v| idx(*v, ns)).collect(),
        ));
    }
    for le in &sp.leases {
        r.leases.push(LeaseSpecR {
            expired: le.expired,
            flat: le.flat,
            blobs: le.blobs.iter().filter_map(|v| idx(*v, nb)).collect(),
            snaps: le.snaps.iter().filter_map(|v| idx(*v, ns)).collect(),
            images: le
                .images
                .iter()
                .filter_map(|v| idx(*v, sp.images.len()))
                .collect(),
            ingests: Vec::new(),
        });
    }
    for (k, ing) in sp.ingests.iter().enumerate() {
        let lease = ing.and_then(|v| idx(v, sp.leases.len()));
        if let Some(le) = lease {
            r.leases[le].ingests.push(k);
        }
        r.ingests.push(lease);
    }
    for (snap, label) in &sp.containers {
        if let Some(sidx) = idx(*snap, ns) {
            r.containers.push((sidx, label.and_then(|v| idx(v, nb))));
        }
    }
    r
}

fn snap_name(n: usize) -> String {
    format!("s{n}")
}
fn image_name(n: usize) -> String {
    format!("img{n}")
}
fn lease_name(n: usize) -> String {
    format!("lease{n}")
}
fn ingest_name(n: usize) -> String {
    format!("ing{n}")
}

/// `containerd.io/gc.ref.content.<k>` labels naming the blobs `refs`.
fn content_refs(r: &Resolved, refs: &[usize]) -> Vec<(String, String)> {
    refs.iter()
        .enumerate()
        .map(|(k, b)| {
            (
                format!("containerd.io/gc.ref.content.{k}"),
                x(&r.blobs[*b].0),
            )
        })
        .collect()
}

fn build_space(f: &Fx, ns: &str, r: &Resolved) {
    for (n, le) in r.leases.iter().enumerate() {
        let mut lbl = Vec::new();
        let exp;
        if le.expired {
            exp = ago(1);
            lbl.push(("containerd.io/gc.expire", exp.as_str()));
        }
        if le.flat {
            lbl.push(("containerd.io/gc.flat", "1"));
        }
        f.lease(ns, &lease_name(n), &lbl);
    }
    for (n, (_, root, refs, image_ref)) in r.blobs.iter().enumerate() {
        let mut lbl = content_refs(r, refs);
        if *root {
            lbl.push(("containerd.io/gc.root".into(), "1".into()));
        }
        if let Some(im) = image_ref {
            lbl.push(("containerd.io/gc.ref.image".into(), image_name(*im)));
        }
        let d = f.blob(ns, &blob_data(n), &strs(&lbl));
        assert_eq!(d, r.blobs[n].0);
    }
    for (n, (parent, active, root, crefs, srefs)) in r.snaps.iter().enumerate() {
        let mut lbl = content_refs(r, crefs);
        for (k, sref) in srefs.iter().enumerate() {
            lbl.push((
                format!("containerd.io/gc.ref.snapshot.native/{k}"),
                snap_name(*sref),
            ));
        }
        if *root {
            lbl.push(("containerd.io/gc.root".into(), "1".into()));
        }
        let parent = parent.map(snap_name);
        if *active {
            f.active(ns, None, &snap_name(n), parent.as_deref(), &strs(&lbl));
        } else {
            f.committed(ns, None, &snap_name(n), parent.as_deref(), &strs(&lbl));
        }
    }
    for (n, (target, expired, refs)) in r.images.iter().enumerate() {
        let mut lbl = content_refs(r, refs);
        if *expired {
            lbl.push(("containerd.io/gc.expire".into(), ago(1)));
        }
        f.image(ns, None, &image_name(n), &r.blobs[*target].0, &strs(&lbl));
    }
    for (n, (snap, label)) in r.containers.iter().enumerate() {
        let lbl = label.map(|b| x(&r.blobs[b].0));
        let lbl: Vec<(&str, &str)> = lbl
            .iter()
            .map(|v| ("containerd.io/gc.ref.content", v.as_str()))
            .collect();
        f.container(ns, &format!("c{n}"), Some(&snap_name(*snap)), &lbl);
    }
    for (n, lease) in r.ingests.iter().enumerate() {
        let lease = lease.map(lease_name);
        f.ingest(
            ns,
            lease.as_deref(),
            &ingest_name(n),
            &format!("ingest {n}"),
        );
    }
    for (n, le) in r.leases.iter().enumerate() {
        let id = lease_name(n);
        for b in &le.blobs {
            f.add(ns, &id, "content", &x(&r.blobs[*b].0));
        }
        for sn in &le.snaps {
            f.add(ns, &id, "snapshots/native", &snap_name(*sn));
        }
        for im in &le.images {
            f.add(ns, &id, "images", &image_name(*im));
        }
    }
}

/// Every object of the model, and those reachable from its roots (BFS over (node, flat)).
fn model_sets(ns: &str, r: &Resolved) -> (BTreeSet<Node>, BTreeSet<Node>) {
    let blob = |b: usize| c(ns, &r.blobs[b].0);
    let snap = |n: usize| s(ns, &snap_name(n));
    let image = |n: usize| i(ns, &image_name(n));
    let mut all = BTreeSet::new();
    all.extend((0..r.blobs.len()).map(blob));
    all.extend((0..r.snaps.len()).map(snap));
    all.extend((0..r.images.len()).map(image));
    all.extend((0..r.leases.len()).map(|n| l(ns, &lease_name(n))));
    all.extend((0..r.ingests.len()).map(|n| g(ns, &ingest_name(n))));

    // A "typed" node: (kind tag, index, flat). Tags: 0 blob, 1 snapshot, 2 image.
    let mut queue: VecDeque<(u8, usize, bool)> = VecDeque::new();
    let mut reach: BTreeSet<Node> = BTreeSet::new();
    for (n, le) in r.leases.iter().enumerate() {
        if le.expired {
            continue;
        }
        reach.insert(l(ns, &lease_name(n)));
        queue.extend(le.blobs.iter().map(|b| (0, *b, le.flat)));
        queue.extend(le.snaps.iter().map(|sn| (1, *sn, le.flat)));
        queue.extend(le.images.iter().map(|im| (2, *im, le.flat)));
        reach.extend(le.ingests.iter().map(|k| g(ns, &ingest_name(*k))));
    }
    for (n, lease) in r.ingests.iter().enumerate() {
        if lease.is_none() {
            reach.insert(g(ns, &ingest_name(n)));
        }
    }
    for (n, im) in r.images.iter().enumerate() {
        if !im.1 {
            queue.push_back((2, n, false));
        }
    }
    for (n, b) in r.blobs.iter().enumerate() {
        if b.1 {
            queue.push_back((0, n, false));
        }
    }
    for (n, sn) in r.snaps.iter().enumerate() {
        if sn.2 {
            queue.push_back((1, n, false));
        }
    }
    for (sn, label) in &r.containers {
        queue.push_back((1, *sn, false));
        if let Some(b) = label {
            queue.push_back((0, *b, false));
        }
    }
    let mut seen: HashSet<(u8, usize, bool)> = HashSet::new();
    while let Some(t) = queue.pop_front() {
        if !seen.insert(t) {
            continue;
        }
        let (kind, n, flat) = t;
        match kind {
            0 => {
                reach.insert(blob(n));
                if !flat {
                    let (_, _, refs, image_ref) = &r.blobs[n];
                    queue.extend(refs.iter().map(|b| (0, *b, false)));
                    queue.extend(image_ref.iter().map(|im| (2, *im, false)));
                }
            }
            1 => {
                reach.insert(snap(n));
                let (parent, _, _, crefs, srefs) = &r.snaps[n];
                queue.extend(parent.iter().map(|p| (1, *p, flat)));
                if !flat {
                    queue.extend(crefs.iter().map(|b| (0, *b, false)));
                    queue.extend(srefs.iter().map(|sn| (1, *sn, false)));
                }
            }
            _ => {
                reach.insert(image(n));
                let (target, _, refs) = &r.images[n];
                queue.push_back((0, *target, flat));
                if !flat {
                    queue.extend(refs.iter().map(|b| (0, *b, false)));
                }
            }
        }
    }
    (all, reach)
}

/// After a collection: records and files agree, both ways.
fn check_store_consistent(f: &Fx) {
    let mut recorded: HashSet<Digest> = HashSet::new();
    for ns in f.store.namespaces().list().unwrap() {
        for b in f.store.content().list::<&str>(&ns.name, &[]).unwrap() {
            let meta = std::fs::metadata(f.blob_file(&b.digest))
                .unwrap_or_else(|e| panic!("record {}/{} without file: {e}", ns.name, b.digest));
            assert_eq!(meta.len(), b.size);
            recorded.insert(b.digest);
        }
        for info in f.sn.list::<&str>(&ns.name, &[]).unwrap() {
            assert!(
                f.sn.files(&ns.name, &info.name).unwrap().is_dir(),
                "snapshot {}/{} without directory",
                ns.name,
                info.name
            );
        }
    }
    for e in std::fs::read_dir(f.store.layout().blob_dir(Algorithm::Sha256)).unwrap() {
        let name = format!("sha256:{}", e.unwrap().file_name().to_string_lossy());
        let d: Digest = name.parse().unwrap();
        assert!(recorded.contains(&d), "blob file {d} without a record");
    }
    assert!(f.store.content().orphans().unwrap().is_empty());
    assert!(f.sn.orphans().unwrap().is_empty(), "{:?}", f.sn.orphans());
}

fn run_property_case(spaces: &[Space]) {
    let f = fx();
    let mut all = BTreeSet::new();
    let mut reach = BTreeSet::new();
    for (ns, sp) in NAMESPACES.iter().zip(spaces) {
        let r = resolve(sp);
        build_space(&f, ns, &r);
        let (a, re) = model_sets(ns, &r);
        all.extend(a);
        reach.extend(re);
    }
    let now = Timestamp::now();
    let plan = dry_run_at(&f.store, now).unwrap();
    assert!(plan.orphans.is_empty(), "{:?}", plan.orphans);
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    let report = collect_at(&f.store, now).unwrap();
    let planned: Vec<Node> = plan.remove.iter().map(|d| d.node.clone()).collect();
    assert_eq!(
        planned, report.removed,
        "the dry run predicts the collection"
    );
    let removed: BTreeSet<Node> = report.removed.iter().cloned().collect();
    let wrongly: Vec<&Node> = removed.intersection(&reach).collect();
    assert!(wrongly.is_empty(), "reachable nodes removed: {wrongly:?}");
    let expected: BTreeSet<Node> = all.difference(&reach).cloned().collect();
    assert_eq!(
        removed, expected,
        "exactly the unreachable objects are removed"
    );
    assert!(
        report.files.missing.is_empty(),
        "{:?}",
        report.files.missing
    );
    assert!(report.files.failed.is_empty(), "{:?}", report.files.failed);
    check_store_consistent(&f);
    // Idempotent: nothing left to do.
    let again = dry_run_at(&f.store, now).unwrap();
    assert!(again.remove.is_empty(), "{:?}", again.remove);
    assert!(again.orphans.is_empty(), "{:?}", again.orphans);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn dry_run_equals_collection_and_nothing_reachable_is_removed(
        spaces in prop::collection::vec(space(), NAMESPACES.len())
    ) {
        run_property_case(&spaces);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Orphans and missing data.

#[test]
fn planted_orphans_are_listed_by_the_dry_run_then_removed() {
    let f = fx();
    let ns = "ns";
    let kept = f.blob(ns, "kept", &[("containerd.io/gc.root", "1")]);
    f.committed(ns, None, "kept", None, &[("containerd.io/gc.root", "1")]);
    let planted = digest_of("planted");
    let blob = f.blob_file(&planted);
    std::fs::write(&blob, "planted").unwrap();
    let snap = f.sn.root().join("987654321");
    std::fs::create_dir_all(snap.join("fs/deep")).unwrap();
    std::fs::write(snap.join("fs/deep/file"), "x").unwrap();
    let ingest = f.store.layout().ingest_root().join("987654322");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(ingest.join("data"), "half").unwrap();
    let want = BTreeSet::from([blob.clone(), snap.clone(), ingest.clone()]);

    // An id still in flight (a prepare between its directory and its record) is no orphan
    // to the collector, though the quiescent-store listing shows it.
    let in_flight = f.store.allocate_id().unwrap();
    let building = f.sn.root().join(format!("new-{}", in_flight.id()));
    std::fs::create_dir_all(&building).unwrap();
    assert!(f.sn.orphans().unwrap().contains(&building));
    let found = strata_gc::orphans(&f.store).unwrap();
    assert_eq!(orphan_paths(&found.removed), want, "orphans alone");
    assert!(found.missing.is_empty());
    drop(in_flight);
    std::fs::remove_dir(&building).unwrap();

    let plan = dry_run(&f.store).unwrap();
    assert!(plan.remove.is_empty());
    assert_eq!(orphan_paths(&plan.orphans), want, "listed first");
    assert!(plan.unique_bytes > 0);
    assert!(
        blob.exists() && snap.exists() && ingest.exists(),
        "a dry run removes nothing"
    );

    let r = f.collect();
    assert!(r.removed.is_empty());
    assert_eq!(orphan_paths(&r.files.removed), want);
    for p in &want {
        assert!(!p.exists(), "{} removed", p.display());
    }
    assert!(f.blob_file(&kept).exists() && f.snap_dir(ns, "kept").is_dir());

    // reconcile alone does the same on a fresh leftover.
    std::fs::write(&blob, "planted").unwrap();
    let cl = strata_gc::reconcile(&f.store).unwrap();
    assert_eq!(orphan_paths(&cl.removed), BTreeSet::from([blob.clone()]));
    assert!(!blob.exists());
}

#[test]
fn a_record_whose_data_is_gone_is_reported_missing_and_kept() {
    let f = fx();
    let ns = "ns";
    let d = f.blob(ns, "lost", &[("containerd.io/gc.root", "1")]);
    f.committed(ns, None, "lost", None, &[("containerd.io/gc.root", "1")]);
    let dir = f.snap_dir(ns, "lost");
    std::fs::remove_file(f.blob_file(&d)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let plan = dry_run(&f.store).unwrap();
    assert_eq!(plan.missing.len(), 2, "{:?}", plan.missing);
    let r = collect(&f.store).unwrap();
    assert!(
        r.removed.is_empty(),
        "records are never dropped for missing data"
    );
    let got: BTreeMap<String, PathBuf> = r
        .files
        .missing
        .iter()
        .map(|m| (m.object.clone(), m.path.clone()))
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            (format!("blob {ns}/{d}"), f.blob_file(&d)),
            (format!("snapshot {ns}/native/lost"), dir.clone()),
        ])
    );
    assert!(f.has_blob(ns, &d));
    assert!(f.has_snapshot(ns, "lost"));

    // Unreferenced with its data missing: the record goes, nothing fails.
    let mut info = f.store.content().info(ns, &d).unwrap();
    info.labels.clear();
    f.store.content().update(ns, &info, &[]).unwrap();
    let r = collect(&f.store).unwrap();
    assert_eq!(r.removed, vec![c(ns, &d)]);
    assert!(r.files.failed.is_empty());
    assert_eq!(
        r.files.missing.len(),
        1,
        "only the snapshot: {:?}",
        r.files.missing
    );
}

// ---------------------------------------------------------------------------------------------
// 7. An orphan that cannot be removed (user-pain 24).

fn require_mounts() -> bool {
    std::env::var("STRATA_REQUIRE_OVERLAY").as_deref() == Ok("1")
}

/// Bind-mounts `source` on `target`; false (skip) where mounts are not allowed here, unless
/// `STRATA_REQUIRE_OVERLAY=1`.
fn bind(source: &Path, target: &Path) -> bool {
    match bind_mount(source, target, "bind") {
        Ok(()) => true,
        Err(e) if !require_mounts() => {
            eprintln!("skipping: cannot bind mount here: {e}");
            false
        }
        Err(e) => panic!("bind mount (STRATA_REQUIRE_OVERLAY=1): {e}"),
    }
}

#[test]
fn an_orphan_that_cannot_be_removed_is_reported_and_the_rest_still_goes() {
    let f = fx();
    let outside = tempfile::tempdir().unwrap();
    let busy = f.sn.root().join("900000001");
    std::fs::create_dir_all(busy.join("fs/mnt")).unwrap();
    if !bind(outside.path(), &busy.join("fs/mnt")) {
        return;
    }
    let mut guard = MountGuard(Some(busy.join("fs/mnt")));
    let other = f.sn.root().join("900000002");
    std::fs::create_dir_all(other.join("fs")).unwrap();
    let planted = digest_of("orphan blob");
    std::fs::write(f.blob_file(&planted), "orphan blob").unwrap();
    // And a real record to collect.
    let unref = f.blob("ns", "unreferenced", &[]);

    let r = collect(&f.store).unwrap();
    assert_eq!(r.removed, vec![c("ns", &unref)]);
    assert_eq!(r.files.failed.len(), 1, "{:?}", r.files.failed);
    assert_eq!(r.files.failed[0].path, busy);
    assert!(!r.files.failed[0].error.is_empty());
    assert_eq!(
        orphan_paths(&r.files.removed),
        BTreeSet::from([other.clone(), f.blob_file(&planted), f.blob_file(&unref)]),
        "every other orphan is removed"
    );
    assert!(busy.exists());
    // The next pass retries and fails again while it is busy.
    let r = collect(&f.store).unwrap();
    assert_eq!(r.files.failed.len(), 1);
    guard.release();
    let r = collect(&f.store).unwrap();
    assert!(r.files.failed.is_empty(), "{:?}", r.files.failed);
    assert_eq!(
        orphan_paths(&r.files.removed),
        BTreeSet::from([busy.clone()])
    );
    assert!(!busy.exists());
    assert!(outside.path().is_dir());
}

/// Removing an orphan directory must not reach through a mount point into another file
/// system: what is mounted there is not the store's.
#[test]
fn cleanup_never_deletes_through_a_mount_point() {
    let f = fx();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "not the store's").unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::write(outside.path().join("sub/also"), "nor this").unwrap();
    let busy = f.sn.root().join("900000003");
    std::fs::create_dir_all(busy.join("fs/mnt")).unwrap();
    if !bind(outside.path(), &busy.join("fs/mnt")) {
        return;
    }
    let mut guard = MountGuard(Some(busy.join("fs/mnt")));
    let r = collect(&f.store).unwrap();
    let precious = std::fs::read(outside.path().join("precious"));
    let also = std::fs::read(outside.path().join("sub/also"));
    guard.release();
    assert_eq!(r.files.failed.len(), 1, "{:?}", r.files);
    assert_eq!(
        precious.ok().as_deref(),
        Some(&b"not the store's"[..]),
        "the mounted file system's files survive the cleanup"
    );
    assert_eq!(also.ok().as_deref(), Some(&b"nor this"[..]));
}

// ---------------------------------------------------------------------------------------------
// 8. Collections racing writers (no sleeps: handshakes over channels, bounded rounds).

/// Ballast: a root with many (dead) references, so each mark takes long enough for a
/// concurrent write to land inside it.
fn ballast(f: &Fx, ns: &str, refs: usize) {
    let labels: Vec<(String, String)> = (0..refs)
        .map(|n| {
            (
                format!("containerd.io/gc.ref.content.{n}"),
                digest_of(format!("absent {n}")).to_string(),
            )
        })
        .chain([("containerd.io/gc.root".to_owned(), "1".to_owned())])
        .collect();
    f.blob(ns, "ballast", &strs(&labels));
}

/// A thread creates images on a blob nothing else references while collections run. An image
/// whose creation returned before the collection's mark ended must keep its blob (either the
/// mark saw it or the late trace kept it). Rounds where the creation may have come after the
/// sweep are not judged. Runs until a few rounds were judged and the late trace has kept the
/// blob a few times (bounded).
#[test]
fn images_created_during_a_collection_keep_their_blob() {
    const MAX_ROUNDS: usize = 400;
    const WANT_LATE: usize = 3;
    const WANT_JUDGED: usize = 3;
    let f = fx();
    let ns = "race";
    let data = "contended blob";
    let d = f.blob(ns, data, &[]);
    ballast(&f, ns, 5_000);
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<(Timestamp, Timestamp)>();
    let mut late = 0;
    let mut judged = 0;
    let mut rounds = 0;
    std::thread::scope(|scope_| {
        let store = f.store.clone();
        let target = d.clone();
        scope_.spawn(move || {
            while let Ok(n) = go_rx.recv() {
                let before = Timestamp::now();
                let img = image_record(format!("img-{n}"), &target, &[]);
                store.images().create(&scope(ns, None), img).unwrap();
                done_tx.send((before, Timestamp::now())).unwrap();
            }
        });
        while rounds < MAX_ROUNDS && (late < WANT_LATE || judged < WANT_JUDGED || rounds < 20) {
            rounds += 1;
            go_tx.send(rounds).unwrap();
            let report = collect(&f.store).unwrap();
            let (_before, created) = done_rx.recv().unwrap();
            let removed = report.removed.contains(&c(ns, &d));
            let mark_end = report.started_at.plus(report.mark);
            if created < mark_end {
                judged += 1;
                assert!(
                    !removed,
                    "round {rounds}: image img-{rounds} was created (at {created:?}) before \
                     the mark ended ({mark_end:?}), yet its blob was removed: {report:?}"
                );
            }
            if report.kept_late > 0 {
                assert!(!removed);
                late += 1;
            }
            // Every image names a recorded blob, unless it was created after the sweep.
            if removed {
                assert!(
                    created >= mark_end,
                    "round {rounds}: blob removed under an image"
                );
                f.blob(ns, data, &[]);
            } else {
                assert!(f.has_blob(ns, &d), "round {rounds}");
                assert!(f.blob_file(&d).exists(), "round {rounds}");
            }
            f.store
                .images()
                .delete(&scope(ns, None), &format!("img-{rounds}"))
                .unwrap();
        }
        drop(go_tx);
    });
    eprintln!("{rounds} rounds, {judged} judged, late trace kept the blob {late} times");
    assert!(
        judged >= WANT_JUDGED,
        "only {judged} of {rounds} rounds created the image before the mark ended"
    );
    assert!(
        late >= WANT_LATE,
        "the late trace never had to keep the blob in {rounds} rounds"
    );
}

/// A snapshot is prepared on a parent whose only referent (a gc.root blob naming it) is
/// deleted while a collection runs. Either the prepare fails (the parent was gone first) or
/// both stay, with their directories; never a child on a missing parent.
#[test]
fn prepare_on_a_parent_whose_referent_is_deleted_concurrently() {
    const MAX_ROUNDS: usize = 300;
    const WANT_EACH: usize = 3;
    let f = fx();
    let ns = "race";
    f.lease(ns, "hold", &[]);
    ballast(&f, ns, 500);
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<Result<(), ErrorKind>>();
    let mut outcomes = BTreeMap::<String, usize>::new();
    // Collects, and no record may be left without its data.
    let collect_nothing_missing = |n: usize| {
        let r = collect(&f.store).unwrap();
        assert!(
            r.files.missing.is_empty(),
            "round {n}: {:?}",
            r.files.missing
        );
    };
    std::thread::scope(|scope_| {
        let sn = f.sn.clone();
        scope_.spawn(move || {
            while let Ok(n) = go_rx.recv() {
                let r = sn
                    .prepare(
                        &scope(ns, Some("hold")),
                        &format!("child-{n}"),
                        Some(&format!("parent-{n}")),
                        BTreeMap::new(),
                    )
                    .map(|_| ())
                    .map_err(|e| e.kind());
                done_tx.send(r).unwrap();
            }
        });
        let mut rounds = 0;
        let (mut prepared_n, mut failed_n) = (0, 0);
        while rounds < MAX_ROUNDS && (prepared_n < WANT_EACH || failed_n < WANT_EACH) {
            let n = rounds;
            rounds += 1;
            let parent = format!("parent-{n}");
            let child = format!("child-{n}");
            f.committed(ns, None, &parent, None, &[]);
            let referent = f.blob(
                ns,
                &format!("referent {n}"),
                &[
                    ("containerd.io/gc.root", "1"),
                    ("containerd.io/gc.ref.snapshot.native", &parent),
                ],
            );
            go_tx.send(n).unwrap();
            f.store
                .content()
                .delete(&scope(ns, None), &referent)
                .unwrap();
            let report = collect(&f.store).unwrap();
            let prepared = done_rx.recv().unwrap();
            if report.kept_late > 0 {
                *outcomes
                    .entry("parent kept by the late trace".into())
                    .or_default() += 1;
            }
            assert!(report.files.failed.is_empty(), "{:?}", report.files.failed);
            let child_exists = f.has_snapshot(ns, &child);
            let parent_exists = f.has_snapshot(ns, &parent);
            match prepared {
                Ok(()) => {
                    assert!(child_exists, "round {n}: prepared child recorded");
                    // The child is leased; its parent must stay with it.
                    collect_nothing_missing(n);
                    assert!(
                        f.has_snapshot(ns, &parent),
                        "round {n}: the parent of a live child was removed"
                    );
                    assert_eq!(
                        f.sn.stat(ns, &child).unwrap().parent.as_deref(),
                        Some(&*parent)
                    );
                    assert!(f.snap_dir(ns, &parent).is_dir());
                    assert!(f.snap_dir(ns, &child).is_dir());
                    assert_eq!(
                        std::fs::read(f.sn.files(ns, &child).unwrap().join(&parent)).unwrap(),
                        parent.as_bytes(),
                        "round {n}: the child sees its parent's files"
                    );
                    *outcomes.entry("prepared".into()).or_default() += 1;
                    prepared_n += 1;
                    f.sn.remove(&scope(ns, Some("hold")), &child).unwrap();
                }
                Err(kind) => {
                    assert!(!child_exists, "round {n}: failed prepare left a record");
                    assert!(
                        !parent_exists,
                        "round {n}: prepare failed ({kind:?}) but the parent is there"
                    );
                    *outcomes.entry(format!("failed {kind:?}")).or_default() += 1;
                    failed_n += 1;
                }
            }
            collect_nothing_missing(n);
            assert!(
                !f.has_snapshot(ns, &parent),
                "round {n}: unreferenced at last"
            );
            assert!(f.sn.orphans().unwrap().is_empty());
        }
        drop(go_tx);
    });
    eprintln!("outcomes: {outcomes:?}");
    assert!(
        outcomes.get("prepared").is_some_and(|n| *n > 0),
        "no prepare ever won the race in {MAX_ROUNDS} rounds: {outcomes:?}"
    );
    assert!(
        outcomes.keys().any(|k| k.starts_with("failed")),
        "no prepare ever lost the race in {MAX_ROUNDS} rounds: {outcomes:?}"
    );
}
