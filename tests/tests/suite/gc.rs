//! The garbage collector under faults and concurrent unpacks.
//!
//! - kill -9 at `gc.sweep.before_commit`, `gc.sweep.after_commit` and
//!   `gc.cleanup.after_remove` (a child re-runs this binary with the failpoint armed
//!   `return(kill)`), then the parent reopens and collects: no record without its data, no
//!   orphan left, everything reachable intact (user-pain 12);
//! - `gc.sweep.before_commit` armed with `return` (in a child, so no other test of this binary
//!   sees the armed point): the collection fails, every record and file is still there, and the
//!   next collection in the same process succeeds;
//! - collections looping on another thread while an image sharing layers with a deleted one is
//!   imported and unpacked (user-pain 18): the unpack succeeds and its chain mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use strata_gc::{Kind as NodeKind, Node, collect, dry_run};
use strata_snapshotter::image::import::{ImportOptions, import};
use strata_snapshotter::image::oci;
use strata_snapshotter::image::unpack::unpack;
use strata_snapshotter::{Kind, Snapshotter};
use strata_store::{Digest, ErrorKind, Store, Timestamp};
use strata_tests::fixture::{self, Entry, Image, ImageBuilder, Layer, OciLayout};

use crate::snapshots::{Mounted, Work};
use crate::support::{
    assert_killed_at, labels, put_blob, run_child_test, scope, small_options, snapshotter,
};

const CHILD_FAILPOINT: &str = "STRATA_GC_FAILPOINT";
const CHILD_ACTION: &str = "STRATA_GC_ACTION";
const CHILD_ROOT: &str = "STRATA_GC_ROOT";
const CHILD_DONE: &str = "strata-gc-child-done";
const NS: &str = "gc";

// ---------------------------------------------------------------------------------------------
// A store with live data and garbage of every kind.

/// What [`seed`] made.
struct Seeded {
    /// Kept: the image's manifest, config, layer; a leased blob.
    kept_blobs: Vec<Digest>,
    /// Kept: `keep-base` <- `keep-top` (held by the config's gc.ref.snapshot label).
    kept_snapshots: Vec<&'static str>,
    /// The records a collection removes.
    garbage: BTreeSet<Node>,
}

/// The paths of cleanup's orphans.
fn paths(orphans: &[strata_gc::cleanup::Orphan]) -> BTreeSet<PathBuf> {
    orphans.iter().map(|o| o.path.clone()).collect()
}

fn content(d: &Digest) -> Node {
    Node::new(NodeKind::Content, NS, d.to_string())
}

fn snap(key: &str) -> Node {
    Node::snapshot(NS, "native", key)
}

fn committed(sn: &Snapshotter, key: &str, parent: Option<&str>, lbls: BTreeMap<String, String>) {
    let s = scope(NS);
    let active = format!("{key}-active");
    sn.prepare(&s, &active, parent, BTreeMap::new())
        .expect("prepare");
    let dir = sn.files(NS, &active).expect("files");
    std::fs::write(dir.join(key), key).expect("write");
    sn.commit(&s, key, &active, lbls).expect("commit");
}

fn seed(store: &Store) -> Seeded {
    let sn = Snapshotter::native(store).expect("native");
    let s = scope(NS);
    // Live: an image whose config holds a snapshot chain, and a leased blob.
    committed(&sn, "keep-base", None, BTreeMap::new());
    committed(&sn, "keep-top", Some("keep-base"), BTreeMap::new());
    let layer = put_blob(store, &s, "layer", b"kept layer", labels(&[]));
    let config = put_blob(
        store,
        &s,
        "config",
        b"kept config",
        labels(&[("containerd.io/gc.ref.snapshot.native", "keep-top")]),
    );
    let manifest = put_blob(
        store,
        &s,
        "manifest",
        b"kept manifest",
        labels(&[
            ("containerd.io/gc.ref.content.config", &config.to_string()),
            ("containerd.io/gc.ref.content.l.0", &layer.to_string()),
        ]),
    );
    store
        .images()
        .create(
            &s,
            strata_store::images::Image::new(
                "keep",
                strata_store::images::Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: manifest.clone(),
                    size: 13,
                    annotations: BTreeMap::new(),
                },
            ),
        )
        .expect("image");
    store
        .leases()
        .create(NS, "held", BTreeMap::new())
        .expect("lease");
    let leased = put_blob(
        store,
        &s.clone().with_lease("held"),
        "leased",
        b"leased blob",
        labels(&[]),
    );

    // Garbage: unreferenced blobs, an unreferenced chain with an active child, an expired
    // lease with a blob and an ingest.
    let mut garbage = BTreeSet::new();
    for n in 0..5 {
        let d = put_blob(
            store,
            &s,
            &format!("junk-{n}"),
            format!("junk blob {n}").as_bytes(),
            labels(&[]),
        );
        garbage.insert(content(&d));
    }
    committed(&sn, "junk-base", None, BTreeMap::new());
    committed(&sn, "junk-top", Some("junk-base"), BTreeMap::new());
    sn.prepare(&s, "junk-active", Some("junk-base"), BTreeMap::new())
        .expect("prepare");
    garbage.extend([snap("junk-base"), snap("junk-top"), snap("junk-active")]);
    let expired = Timestamp::now().0 - 3_600_000_000_000;
    store
        .leases()
        .create(
            NS,
            "old",
            labels(&[("containerd.io/gc.expire", &Timestamp(expired).to_rfc3339())]),
        )
        .expect("lease");
    let old = s.clone().with_lease("old");
    let d = put_blob(store, &old, "old-blob", b"old lease blob", labels(&[]));
    garbage.insert(content(&d));
    {
        use std::io::Write;
        let mut w = store
            .content()
            .writer(
                &old,
                "old-ingest",
                strata_store::content::WriterOptions::default(),
            )
            .expect("writer");
        w.write_all(b"half an ingest").expect("write");
    }
    garbage.insert(Node::new(NodeKind::Ingest, NS, "old-ingest"));
    garbage.insert(Node::new(NodeKind::Lease, NS, "old"));
    Seeded {
        kept_blobs: vec![manifest, config, layer, leased],
        kept_snapshots: vec!["keep-base", "keep-top"],
        garbage,
    }
}

/// Every record (as text) and every file of the store: blobs, ingests, snapshot directories.
/// Seeds a store at `root` and closes it; returns the seed and the listing of records and
/// files, for a child process to work on next.
fn seed_closed(root: &std::path::Path) -> (Seeded, (BTreeSet<String>, BTreeSet<PathBuf>)) {
    let store = Store::open(root, small_options()).expect("open");
    let seeded = seed(&store);
    let before = listing(&store);
    (seeded, before)
}

fn listing(store: &Store) -> (BTreeSet<String>, BTreeSet<PathBuf>) {
    let sn = Snapshotter::native(store).expect("native");
    let mut records = BTreeSet::new();
    for ns in store.namespaces().list().expect("namespaces") {
        let n = &ns.name;
        for b in store.content().list::<&str>(n, &[]).expect("blobs") {
            records.insert(format!("blob {n} {} {:?}", b.digest, b.labels));
        }
        for st in store
            .content()
            .list_statuses::<&str>(n, &[])
            .expect("ingests")
        {
            records.insert(format!("ingest {n} {} {}", st.reference, st.offset));
        }
        for i in store.images().list::<&str>(n, &[]).expect("images") {
            records.insert(format!("image {n} {} {}", i.name, i.target.digest));
        }
        for l in store.leases().list::<&str>(n, &[]).expect("leases") {
            let res = store.leases().resources(n, &l.id).expect("resources");
            records.insert(format!("lease {n} {} {res:?}", l.id));
        }
        for i in sn.list::<&str>(n, &[]).expect("snapshots") {
            records.insert(format!(
                "snapshot {n} {} {:?} {:?}",
                i.name, i.parent, i.kind
            ));
        }
    }
    let layout = store.layout();
    let mut files = BTreeSet::new();
    for dir in [
        layout.blob_dir(strata_store::Algorithm::Sha256),
        layout.ingest_root(),
        sn.root().to_owned(),
    ] {
        for e in std::fs::read_dir(&dir).expect("read dir") {
            files.insert(e.expect("entry").path());
        }
    }
    (records, files)
}

/// Whether `records` (a [`listing`]) holds the record of `n`.
fn recorded(records: &BTreeSet<String>, n: &Node) -> bool {
    let key = match n.kind {
        NodeKind::Snapshot => n.key.strip_prefix("native/").unwrap_or(&n.key),
        _ => &n.key,
    };
    let kind = match n.kind {
        NodeKind::Content => "blob",
        NodeKind::Snapshot => "snapshot",
        NodeKind::Image => "image",
        NodeKind::Lease => "lease",
        NodeKind::Ingest => "ingest",
        NodeKind::Container => "container",
    };
    let prefix = format!("{kind} {} {key} ", n.ns);
    records.iter().any(|r| r.starts_with(&prefix))
}

/// The live data of [`seed`] is all there, records and bytes.
fn check_kept(store: &Store, seeded: &Seeded) {
    let sn = Snapshotter::native(store).expect("native");
    for d in &seeded.kept_blobs {
        let info = store
            .content()
            .info(NS, d)
            .unwrap_or_else(|e| panic!("kept blob {d}: {e}"));
        let bytes = std::fs::read(store.layout().blob(d)).expect("kept blob file");
        assert_eq!(bytes.len() as u64, info.size);
        assert_eq!(Digest::of(d.algorithm(), &bytes), *d, "bytes of {d}");
    }
    for key in &seeded.kept_snapshots {
        let info = sn.stat(NS, key).expect("kept snapshot");
        assert_eq!(info.kind, Kind::Committed);
        let files = sn.files(NS, key).expect("files");
        assert_eq!(
            std::fs::read(files.join(key)).expect("file"),
            key.as_bytes()
        );
    }
    assert_eq!(
        sn.stat(NS, "keep-top").expect("top").parent.as_deref(),
        Some("keep-base")
    );
    store.images().get(NS, "keep").expect("image kept");
    store.leases().get(NS, "held").expect("lease kept");
}

/// Collects after a crash or failure and checks the end state: nothing missing, nothing
/// orphaned, nothing garbage recorded, the live data intact. Returns the report.
fn collect_and_check(store: &Store, seeded: &Seeded) -> strata_gc::Report {
    let report = collect(store).expect("collect after reopen");
    assert!(
        report.files.missing.is_empty(),
        "{:?}",
        report.files.missing
    );
    assert!(report.files.failed.is_empty(), "{:?}", report.files.failed);
    let plan = dry_run(store).expect("dry run");
    assert!(plan.remove.is_empty(), "{:?}", plan.remove);
    assert!(plan.orphans.is_empty(), "{:?}", plan.orphans);
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    check_kept(store, seeded);
    let (records, files) = listing(store);
    for n in &seeded.garbage {
        assert!(
            !recorded(&records, n),
            "garbage {n} still recorded: {records:?}"
        );
    }
    // What is left on disk is exactly the live data: 4 blobs, 2 snapshot directories.
    assert_eq!(files.len(), 6, "{files:?}");
    report
}

/// A record written between the mark and the sweep whose conditional label references a
/// snapshot no one else keeps but that was used recently: the sweep's late trace judges the
/// condition on the records as they are then, and keeps the snapshot (containerd, which holds
/// its lock through the mark, keeps it too). Removing the image lets it go.
#[test]
fn a_conditional_reference_written_during_the_mark_keeps_its_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), small_options()).expect("open");
    let sn = Snapshotter::native(&store).expect("native");
    let used = Timestamp::now().to_rfc3339();
    committed(
        &sn,
        "cached",
        None,
        labels(&[("containerd.io/gc.cond.value-usedat", &used)]),
    );
    let s = scope(NS);
    let manifest = put_blob(
        &store,
        &s,
        "manifest",
        b"manifest",
        labels(&[("containerd.io/gc.root", "1")]),
    );
    // The failpoint registry is global to this test binary: only this thread's collection
    // writes, once.
    let me = std::thread::current().id();
    let written = std::sync::Arc::new(AtomicBool::new(false));
    let (st, sc, w) = (store.clone(), s.clone(), written.clone());
    fail::cfg_callback("gc.mark.after", move || {
        if std::thread::current().id() != me || w.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut image = strata_store::images::Image::new(
            "app",
            strata_store::images::Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: manifest.clone(),
                size: 8,
                annotations: BTreeMap::new(),
            },
        );
        image.labels.insert(
            "containerd.io/gc.cond.snapshot.native".into(),
            "usedat<1h|cached".into(),
        );
        st.images()
            .create(&sc, image)
            .expect("image during the mark");
    })
    .expect("arm failpoint");
    let report = collect(&store);
    fail::remove("gc.mark.after");
    let report = report.expect("collect");
    assert!(
        written.load(Ordering::SeqCst),
        "the write ran between mark and sweep"
    );
    assert!(report.kept_late >= 1, "{report:?}");
    assert!(!report.removed.contains(&snap("cached")), "{report:?}");
    assert!(sn.stat(NS, "cached").is_ok(), "the snapshot is kept");

    store.images().delete(&s, "app").expect("delete image");
    let report = collect(&store).expect("collect");
    assert!(report.removed.contains(&snap("cached")), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// The child.

/// The child: opens the root, arms the failpoint, collects.
#[test]
#[ignore = "child process of the gc crash tests, which run it themselves"]
fn gc_child() {
    let (Ok(failpoint), Ok(root), Ok(action)) = (
        std::env::var(CHILD_FAILPOINT),
        std::env::var(CHILD_ROOT),
        std::env::var(CHILD_ACTION),
    ) else {
        return;
    };
    let store = Store::open(&root, small_options()).expect("child open");
    if action == "kill" {
        fail::cfg(&failpoint, "return(kill)").expect("arm failpoint");
        let _ = collect(&store);
        // Reaching this line means the failpoint was never hit.
        std::process::exit(3);
    }
    // `return`: the collection fails, nothing changes; the next one in this process works.
    let before = listing(&store);
    fail::cfg(&failpoint, "return").expect("arm failpoint");
    let err = collect(&store).expect_err("the armed collection fails");
    assert!(
        err.to_string().contains(&failpoint),
        "the error names the failpoint: {err}"
    );
    assert_eq!(listing(&store), before, "nothing removed by a failed sweep");
    let err = dry_run(&store).map(|p| p.remove.len());
    assert!(err.is_ok(), "a dry run is unaffected: {err:?}");
    fail::remove(&failpoint);
    let report = collect(&store).expect("the disarmed collection succeeds");
    assert!(!report.removed.is_empty());
    println!("{CHILD_DONE} {}", report.removed.len());
}

fn run_child(failpoint: &str, action: &str, root: &Path) -> std::process::Output {
    run_child_test(
        "gc::gc_child",
        &[
            (CHILD_FAILPOINT, failpoint.as_ref()),
            (CHILD_ROOT, root.as_os_str()),
            (CHILD_ACTION, action.as_ref()),
        ],
    )
}

/// Seeds a store, kills a child collecting it at `failpoint`, reopens. Returns the root (kept
/// alive), the reopened store and what was seeded, and the listing before the crash.
fn gc_crash_at(
    failpoint: &str,
) -> (
    tempfile::TempDir,
    Store,
    Seeded,
    (BTreeSet<String>, BTreeSet<PathBuf>),
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seeded, before) = seed_closed(dir.path());
    let out = run_child(failpoint, "kill", dir.path());
    assert_killed_at(&out, failpoint);
    let store = Store::open(dir.path(), small_options()).expect("reopen after kill -9");
    (dir, store, seeded, before)
}

/// The garbage's files: every file of `before` that the end state does not keep.
fn garbage_files(before: &BTreeSet<PathBuf>, after: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    before.difference(after).cloned().collect()
}

#[test]
fn kill_between_mark_and_sweep_changes_nothing_and_the_next_collection_does_it() {
    let (_d, store, seeded, before) = gc_crash_at("gc.mark.after");
    assert_eq!(listing(&store), before, "a mark writes nothing");
    let report = collect_and_check(&store, &seeded);
    let removed: BTreeSet<Node> = report.removed.iter().cloned().collect();
    assert_eq!(removed, seeded.garbage);
}

#[test]
fn kill_before_sweep_commit_loses_the_sweep_and_the_next_collection_does_it() {
    let (_d, store, seeded, before) = gc_crash_at("gc.sweep.before_commit");
    assert_eq!(
        listing(&store),
        before,
        "the sweep's transaction never committed"
    );
    let report = collect_and_check(&store, &seeded);
    let removed: BTreeSet<Node> = report.removed.iter().cloned().collect();
    assert_eq!(removed, seeded.garbage);
    let after = listing(&store).1;
    assert_eq!(
        paths(&report.files.removed),
        garbage_files(&before.1, &after)
    );
}

#[test]
fn kill_after_sweep_commit_leaves_only_orphan_files_which_the_next_collection_removes() {
    let (_d, store, seeded, before) = gc_crash_at("gc.sweep.after_commit");
    let (records, files) = listing(&store);
    assert_eq!(files, before.1, "no file was removed before the kill");
    for n in &seeded.garbage {
        assert!(!recorded(&records, n), "the sweep committed: {n} is gone");
    }
    // No record without data even before the next collection: only orphans.
    let plan = dry_run(&store).expect("dry run");
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    assert!(plan.remove.is_empty(), "{:?}", plan.remove);
    let report = collect_and_check(&store, &seeded);
    assert!(
        report.removed.is_empty(),
        "the records went before the kill"
    );
    let after = listing(&store).1;
    let orphans = paths(&plan.orphans);
    let removed = paths(&report.files.removed);
    assert_eq!(
        orphans,
        garbage_files(&before.1, &after),
        "the dry run listed them"
    );
    assert_eq!(removed, orphans, "the next collection removed them");
}

#[test]
fn kill_during_cleanup_leaves_only_orphan_files_which_the_next_collection_removes() {
    let (_d, store, seeded, before) = gc_crash_at("gc.cleanup.after_remove");
    let (_, files) = listing(&store);
    assert_eq!(
        before.1.difference(&files).count(),
        1,
        "killed after the first removal"
    );
    let plan = dry_run(&store).expect("dry run");
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    assert!(plan.remove.is_empty(), "{:?}", plan.remove);
    assert!(!plan.orphans.is_empty());
    let report = collect_and_check(&store, &seeded);
    assert!(report.removed.is_empty());
    let removed = paths(&report.files.removed);
    let orphans = paths(&plan.orphans);
    assert_eq!(removed, orphans);
    let after = listing(&store).1;
    assert_eq!(garbage_files(&files, &after), orphans);
}

#[test]
fn a_failed_sweep_removes_nothing_and_the_next_collection_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seeded, before) = seed_closed(dir.path());
    let out = run_child("gc.sweep.before_commit", "return", dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(CHILD_DONE),
        "child: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(dir.path(), small_options()).expect("reopen");
    let (records, files) = listing(&store);
    // The child's second, disarmed, collection removed exactly the garbage.
    let expected: BTreeSet<String> = before
        .0
        .iter()
        .filter(|r| {
            !seeded
                .garbage
                .iter()
                .any(|n| recorded(&BTreeSet::from([(*r).clone()]), n))
        })
        .cloned()
        .collect();
    assert_eq!(records, expected);
    assert!(files.is_subset(&before.1));
    assert_eq!(files.len(), 6);
    collect_and_check(&store, &seeded);
}

// ---------------------------------------------------------------------------------------------
// Collections during an unpack that shares layers with a deleted image (user-pain 18).

struct UnpackFx {
    store: Store,
    sn: Snapshotter,
    dir: tempfile::TempDir,
    next: std::cell::Cell<usize>,
}

impl UnpackFx {
    fn new(backend: &str) -> Option<UnpackFx> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store"), small_options()).expect("open");
        let sn = snapshotter(&store, backend)?;
        Some(UnpackFx {
            store,
            sn,
            dir,
            next: std::cell::Cell::new(0),
        })
    }

    fn import(&self, images: &[&Image]) {
        let n = self.next.get();
        self.next.set(n + 1);
        let path = self.dir.path().join(format!("layout-{n}"));
        OciLayout::new(images)
            .write_dir(&path)
            .expect("write layout");
        import(
            &self.store,
            &scope(NS),
            &path,
            &ImportOptions::default(),
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("import: {e}"));
    }

    fn unpack(&self, name: &str) -> strata_snapshotter::Result<Digest> {
        unpack(&self.store, &self.sn, &scope(NS), name, &|_| {}).map(|u| u.chain_id)
    }
}

fn chain_of(image: &Image) -> Vec<Digest> {
    oci::chain_ids(&image.diff_ids())
}

/// A layer with many files, so copying or stacking it takes a while.
fn wide_layer(tag: &str, files: usize) -> Layer {
    let mut entries = vec![Entry::dir(tag)];
    for n in 0..files {
        entries.push(Entry::file(
            &format!("{tag}/f{n}"),
            fixture::noise(n as u64, 512),
        ));
    }
    Layer::new(entries)
}

fn case_collect_during_unpack(backend: &str) {
    const ROUNDS: usize = 3;
    const MAX_COLLECTIONS: usize = 100_000;
    let Some(fx) = UnpackFx::new(backend) else {
        return;
    };
    let layers = fixture::sample_layers();
    let wide = wide_layer("wide", 300);
    let a = ImageBuilder::new("docker.io/strata/gc-a:1")
        .layer(layers[0].clone())
        .layer(layers[1].clone())
        .layer(wide.clone())
        .build()
        .expect("a");
    let b = ImageBuilder::new("docker.io/strata/gc-b:1")
        .layer(layers[0].clone())
        .layer(layers[1].clone())
        .layer(layers[2].clone())
        .build()
        .expect("b");
    fx.import(&[&a, &b]);
    fx.unpack(&b.name).expect("unpack b");
    let mut total = 0;
    for round in 0..ROUNDS {
        // A is unpacked: its chain shares B's base layers and has its own wide layer.
        if round > 0 {
            fx.import(&[&a]);
        }
        fx.unpack(&a.name).expect("unpack a");
        // C shares A's layers, all of them, and adds one. It is imported while A still holds
        // the shared chain; A is deleted as C's unpack starts, with collections looping, so
        // the chain C's unpack finds committed may become garbage under it.
        let c = ImageBuilder::new(&format!("docker.io/strata/gc-c:{round}"))
            .layer(layers[0].clone())
            .layer(layers[1].clone())
            .layer(wide.clone())
            .layer(Layer::new(vec![Entry::file(
                "round",
                format!("round {round}\n"),
            )]))
            .build()
            .expect("c");
        fx.import(&[&c]);
        let wide_node = Node::snapshot(NS, backend, &chain_of(&c)[2].to_string());
        let stop = AtomicBool::new(false);
        let (unpacked, (collections, wide_collected)) = std::thread::scope(|s| {
            let gc = s.spawn(|| {
                let (mut n, mut wide_collected) = (0, false);
                while !stop.load(Ordering::Acquire) && n < MAX_COLLECTIONS {
                    let r = collect(&fx.store).expect("collect during the unpack");
                    assert!(r.files.missing.is_empty(), "{:?}", r.files.missing);
                    wide_collected |= r.removed.contains(&wide_node);
                    n += 1;
                }
                (n, wide_collected)
            });
            fx.store
                .images()
                .delete(&scope(NS), &a.name)
                .expect("delete a");
            let unpacked = fx.unpack(&c.name);
            stop.store(true, Ordering::Release);
            (unpacked, gc.join().expect("gc thread"))
        });
        total += collections;
        eprintln!(
            "{backend} round {round}: {collections} collections; the shared wide chain was \
             {}collected during the unpack",
            if wide_collected { "" } else { "not " }
        );
        let top = unpacked.unwrap_or_else(|e| {
            panic!(
                "{backend} round {round}: unpack of an image sharing a deleted image's layers \
                 failed while collections ran ({collections} collections): {e}"
            )
        });
        let chain = chain_of(&c);
        assert_eq!(&top, chain.last().expect("layers"));
        for (i, id) in chain.iter().enumerate() {
            let info = fx
                .sn
                .stat(NS, &id.to_string())
                .unwrap_or_else(|e| panic!("round {round}: chain {i} ({id}): {e}"));
            assert_eq!(info.kind, Kind::Committed);
            let parent = i.checked_sub(1).map(|p| chain[p].to_string());
            assert_eq!(info.parent, parent, "round {round}: parent of chain {i}");
        }
        // The chain mounts, with every layer's files.
        let work = Work::new();
        let key = format!("view-{round}");
        let mounts = fx
            .sn
            .view(&scope(NS), &key, Some(&top.to_string()), BTreeMap::new())
            .expect("view of the top");
        {
            let m = Mounted::new(&mounts, work.mountpoint("view"));
            let root = m.path();
            assert_eq!(
                std::fs::read(root.join("round")).expect("top layer"),
                format!("round {round}\n").as_bytes()
            );
            assert_eq!(
                std::fs::read(root.join("wide/f7")).expect("wide layer"),
                fixture::noise(7, 512)
            );
            assert_eq!(
                std::fs::read(root.join("etc/hostname")).expect("base layer"),
                b"strata\n"
            );
        }
        fx.sn.remove(&scope(NS), &key).expect("remove view");
        // After everything settles, C and B are complete and nothing is missing.
        let r = collect(&fx.store).expect("collect");
        assert!(r.files.missing.is_empty(), "{:?}", r.files.missing);
        assert!(r.files.failed.is_empty(), "{:?}", r.files.failed);
        for id in chain.iter().chain(&chain_of(&b)) {
            fx.sn
                .stat(NS, &id.to_string())
                .unwrap_or_else(|e| panic!("round {round}: {id} collected: {e}"));
        }
        for blob in c.blobs().into_iter().chain(b.blobs()) {
            assert!(
                fx.store.content().info(NS, &blob.digest).is_ok(),
                "round {round}: blob {} of a live image",
                blob.digest
            );
        }
        // Reset: C goes, and with it the wide chain.
        fx.store
            .images()
            .delete(&scope(NS), &c.name)
            .expect("delete c");
        let r = collect(&fx.store).expect("collect");
        assert!(
            r.removed
                .contains(&Node::snapshot(NS, backend, &chain[2].to_string())),
            "round {round}: the wide chain goes with the last image using it"
        );
        assert_eq!(
            fx.sn
                .stat(NS, &chain[2].to_string())
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
    }
    eprintln!("{backend}: {total} collections ran during {ROUNDS} unpacks");
    assert!(total > 0);
}

#[test]
fn native_collect_during_unpack_sharing_layers_with_a_deleted_image() {
    case_collect_during_unpack("native");
}

#[test]
fn overlay_collect_during_unpack_sharing_layers_with_a_deleted_image() {
    case_collect_during_unpack("overlay");
}

/// Every `failpoint!` in strata-gc's sources has a kill -9 case here (a new one added to the
/// collector must get one).
#[test]
fn every_gc_failpoint_has_a_crash_case() {
    let source = include_str!("gc.rs");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gc/src");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("gc sources") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for part in text.split("failpoint!(\"").skip(1) {
            if let Some((name, _)) = part.split_once('"') {
                found.insert(name.to_owned());
            }
        }
    }
    assert!(
        found.contains("gc.sweep.after_commit"),
        "failpoints found in {}: {found:?}",
        dir.display()
    );
    for name in &found {
        assert!(
            source.contains(&format!("gc_crash_at(\"{name}\")")),
            "no kill -9 case for {name}"
        );
    }
}
