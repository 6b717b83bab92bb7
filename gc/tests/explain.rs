//! why, du and compact against real stores.

use std::collections::BTreeMap;
use std::io::Write;

use strata_gc::usage::{By, usage};
use strata_gc::{Kind, Node, why};
use strata_snapshotter::Snapshotter;
use strata_store::content::WriterOptions;
use strata_store::images::{Descriptor, Image};
use strata_store::{Digest, Scope, Store, StoreOptions, Timestamp};

fn blob(store: &Store, scope: &Scope, data: &str, labels: &[(&str, &str)]) -> Digest {
    let mut w = store
        .content()
        .writer(scope, &format!("ref-{data}"), WriterOptions::default())
        .unwrap();
    w.write_all(data.as_bytes()).unwrap();
    let l = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    w.commit(data.len() as u64, None, l).unwrap()
}

fn image(store: &Store, scope: &Scope, name: &str, target: &Digest) {
    let img = Image::new(
        name,
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.clone(),
            size: 1,
            annotations: BTreeMap::new(),
        },
    );
    store.images().create(scope, img).unwrap();
}

struct Fx {
    _tmp: tempfile::TempDir,
    store: Store,
    layer: Digest,
    only_b: Digest,
}

/// Images a and b share `layer`; b also has `only_b` and a snapshot; lease "pin" (expiring)
/// holds `layer` too.
fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    let scope = Scope::new("ns").unwrap();
    let sn = Snapshotter::native(&store).unwrap();
    sn.prepare(&scope, "b-active", None, BTreeMap::new())
        .unwrap();
    std::fs::write(
        sn.files("ns", "b-active").unwrap().join("f"),
        vec![7u8; 64 << 10],
    )
    .unwrap();
    sn.commit(&scope, "b-top", "b-active", BTreeMap::new())
        .unwrap();
    let layer = blob(&store, &scope, "shared layer bytes", &[]);
    let only_b = blob(&store, &scope, "layer only b has", &[]);
    let l = layer.to_string();
    let o = only_b.to_string();
    let ma = blob(
        &store,
        &scope,
        "manifest a",
        &[("containerd.io/gc.ref.content.l.0", &l)],
    );
    let mb = blob(
        &store,
        &scope,
        "manifest b",
        &[
            ("containerd.io/gc.ref.content.l.0", &l),
            ("containerd.io/gc.ref.content.l.1", &o),
            ("containerd.io/gc.ref.snapshot.native", "b-top"),
        ],
    );
    image(&store, &scope, "a", &ma);
    image(&store, &scope, "b", &mb);
    let expire = Timestamp(Timestamp::now().0 + 3_600_000_000_000).to_rfc3339();
    store
        .leases()
        .create(
            "ns",
            "pin",
            [("containerd.io/gc.expire".to_owned(), expire.clone())].into(),
        )
        .unwrap();
    store
        .leases()
        .add_resource(
            "ns",
            "pin",
            &strata_store::leases::Resource::new("content", l.clone()),
        )
        .unwrap();
    Fx {
        _tmp: tmp,
        store,
        layer,
        only_b,
    }
}

#[test]
fn why_names_every_image_and_lease_that_keeps_a_layer() {
    let f = fx();
    let node = Node::new(Kind::Content, "ns", f.layer.to_string());
    let w = why(&f.store, &node).unwrap();
    assert!(w.exists && w.kept);
    let roots: Vec<(Node, String)> = w
        .paths
        .iter()
        .map(|p| (p.steps[0].node.clone(), p.root.clone()))
        .collect();
    assert_eq!(
        roots,
        vec![
            (Node::new(Kind::Image, "ns", "a"), "image".to_owned()),
            (Node::new(Kind::Image, "ns", "b"), "image".to_owned()),
            (Node::new(Kind::Lease, "ns", "pin"), "live lease".to_owned()),
        ]
    );
    // image -> target manifest -> layer, by the manifest's label.
    let a = &w.paths[0].steps;
    assert_eq!(a.len(), 3);
    assert_eq!(a[1].via.as_deref(), Some("target"));
    assert_eq!(
        a[2].via.as_deref(),
        Some("containerd.io/gc.ref.content.l.0")
    );
    assert_eq!(a[2].node, node);
    let pin = &w.paths[2].steps;
    assert!(pin[0].expires.is_some(), "the lease's expiry is shown");
    assert_eq!(pin[1].via.as_deref(), Some("lease"));
}

#[test]
fn why_an_unreferenced_object_is_not_kept() {
    let f = fx();
    f.store
        .images()
        .delete(&Scope::new("ns").unwrap(), "b")
        .unwrap();
    let w = why(
        &f.store,
        &Node::new(Kind::Content, "ns", f.only_b.to_string()),
    )
    .unwrap();
    assert!(w.exists);
    assert!(!w.kept);
    assert!(w.paths.is_empty());
}

#[test]
fn usage_by_image_splits_unique_and_shared_and_adds_up() {
    let f = fx();
    let report = usage(&f.store, By::Image).unwrap();
    let row = |o: &str| report.rows.iter().find(|r| r.owner == o).unwrap().clone();
    let (a, b) = (row("ns/a"), row("ns/b"));
    // a: its manifest (unique) + the shared layer; b: manifest, only_b, snapshot + shared.
    assert_eq!(a.objects, 2);
    assert_eq!(b.objects, 4);
    assert_eq!(a.shared_bytes, b.shared_bytes);
    assert!(a.shared_bytes > 0);
    assert!(b.unique_bytes >= 64 << 10, "b's snapshot is b's alone");
    let unique: u64 = report.rows.iter().map(|r| r.unique_bytes).sum();
    assert_eq!(
        unique + report.shared_bytes + report.unattributed_bytes + report.database_bytes,
        report.total_bytes
    );
    // The same store by namespace: one owner, everything unique to it.
    let by_ns = usage(&f.store, By::Namespace).unwrap();
    assert_eq!(by_ns.rows.len(), 1);
    assert_eq!(by_ns.shared_bytes, 0);
    assert_eq!(by_ns.total_bytes, report.total_bytes);
}

#[test]
fn compact_reports_sizes_and_needs_the_store_to_itself() {
    let f = fx();
    let clone = f.store.clone();
    assert!(clone.compact().is_err(), "another handle is alive");
    let store = f.store;
    let sizes = store.compact().unwrap();
    assert!(sizes.after <= sizes.before);
}
