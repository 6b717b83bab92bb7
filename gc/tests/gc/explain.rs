//! why, du and compact against real stores.

use strata_gc::usage::{By, usage};
use strata_gc::{Node, why};
use strata_store::Digest;

use crate::support::{Fx, c, fx, i, l, later, s, scope, x};

/// Images a and b share `layer` (returned first); b also has `only_b` (returned second) and a
/// snapshot; lease "pin" (expiring) holds `layer` too.
fn images() -> (Fx, Digest, Digest) {
    let f = fx();
    f.active("ns", None, "b-active", None, &[]);
    std::fs::write(
        f.sn.files("ns", "b-active").unwrap().join("f"),
        vec![7u8; 64 << 10],
    )
    .unwrap();
    f.sn.commit(&scope("ns", None), "b-top", "b-active", Default::default())
        .unwrap();
    let [layer, only_b] = f.blobs("ns", ["shared layer bytes", "layer only b has"]);
    let ma = f.blob(
        "ns",
        "manifest a",
        &[("containerd.io/gc.ref.content.l.0", &x(&layer))],
    );
    let mb = f.blob(
        "ns",
        "manifest b",
        &[
            ("containerd.io/gc.ref.content.l.0", &x(&layer)),
            ("containerd.io/gc.ref.content.l.1", &x(&only_b)),
            ("containerd.io/gc.ref.snapshot.native", "b-top"),
        ],
    );
    f.image("ns", None, "a", &ma, &[]);
    f.image("ns", None, "b", &mb, &[]);
    f.lease("ns", "pin", &[("containerd.io/gc.expire", &later(1))]);
    f.add("ns", "pin", "content", &x(&layer));
    (f, layer, only_b)
}

#[test]
fn why_names_every_image_and_lease_that_keeps_a_layer() {
    let (f, layer, _) = images();
    let node = c("ns", &layer);
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
            (i("ns", "a"), "image".to_owned()),
            (i("ns", "b"), "image".to_owned()),
            (l("ns", "pin"), "live lease".to_owned()),
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
fn why_lists_every_path_including_through_other_roots() {
    let f = fx();
    let [layer] = f.blobs("ns", ["layer"]);
    // Two labels of one manifest name the layer: two references, two paths.
    let manifest = f.blob(
        "ns",
        "manifest",
        &[
            ("containerd.io/gc.ref.content.l.0", &x(&layer)),
            ("containerd.io/gc.ref.content.l.1", &x(&layer)),
        ],
    );
    f.image("ns", None, "a", &manifest, &[]);
    // A lease holding the image is a root whose paths run through another root.
    f.lease("ns", "hold", &[]);
    f.add("ns", "hold", "images", "a");
    let w = why(&f.store, &c("ns", &layer)).unwrap();
    assert!(!w.truncated);
    let got: Vec<(String, Vec<String>)> = w
        .paths
        .iter()
        .map(|p| {
            let steps = p
                .steps
                .iter()
                .map(|s| format!("{} by {}", s.node, s.via.as_deref().unwrap_or("-")))
                .collect();
            (p.root.clone(), steps)
        })
        .collect();
    let (img, man, lay) = (
        i("ns", "a").to_string(),
        c("ns", &manifest).to_string(),
        c("ns", &layer).to_string(),
    );
    let path = |root: &str, steps: &[(&str, &str)]| {
        (
            root.to_owned(),
            steps
                .iter()
                .map(|(n, v)| format!("{n} by {v}"))
                .collect::<Vec<_>>(),
        )
    };
    let hold = l("ns", "hold").to_string();
    let l0 = "containerd.io/gc.ref.content.l.0";
    let l1 = "containerd.io/gc.ref.content.l.1";
    assert_eq!(
        got,
        vec![
            path("image", &[(&img, "-"), (&man, "target"), (&lay, l0)]),
            path("image", &[(&img, "-"), (&man, "target"), (&lay, l1)]),
            path(
                "live lease",
                &[(&hold, "-"), (&img, "lease"), (&man, "target"), (&lay, l0)]
            ),
            path(
                "live lease",
                &[(&hold, "-"), (&img, "lease"), (&man, "target"), (&lay, l1)]
            ),
        ]
    );
}

#[test]
fn why_says_when_there_are_more_paths_than_it_lists() {
    let f = fx();
    let [layer] = f.blobs("ns", ["layer"]);
    let max = strata_gc::why::MAX_PATHS;
    for n in 0..=max {
        let id = format!("lease-{n:03}");
        f.lease("ns", &id, &[]);
        f.add("ns", &id, "content", &x(&layer));
    }
    let w = why(&f.store, &c("ns", &layer)).unwrap();
    assert_eq!(w.paths.len(), max);
    assert_eq!(w.roots, max + 1);
    assert!(w.truncated);
}

#[test]
fn why_a_truncated_answer_still_names_every_root() {
    let f = fx();
    let [layer] = f.blobs("ns", ["layer"]);
    // Ten gc.root blobs, scanned before the image, each naming the layer by ten labels: a
    // hundred paths, more than are listed.
    let labels: Vec<(String, String)> = (0..10)
        .map(|l| (format!("containerd.io/gc.ref.content.l.{l}"), x(&layer)))
        .chain([("containerd.io/gc.root".to_owned(), "1".to_owned())])
        .collect();
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for n in 0..10 {
        f.blob("ns", &format!("pin {n}"), &labels);
    }
    let manifest = f.blob(
        "ns",
        "manifest",
        &[("containerd.io/gc.ref.content.l.0", &x(&layer))],
    );
    f.image("ns", None, "app", &manifest, &[]);
    let w = why(&f.store, &c("ns", &layer)).unwrap();
    assert!(w.truncated);
    assert_eq!(w.paths.len(), strata_gc::why::MAX_PATHS);
    assert_eq!(w.roots, 11);
    let listed: std::collections::BTreeSet<Node> =
        w.paths.iter().map(|p| p.steps[0].node.clone()).collect();
    assert_eq!(listed.len(), 11, "every root has a path");
    assert!(listed.contains(&i("ns", "app")));
}

#[test]
fn a_path_inside_the_store_names_the_object_whose_data_it_is() {
    let (f, layer, _) = images();
    let resolve = |p: &std::path::Path| {
        strata_gc::resolve(&f.store, Some("ns"), p.to_str().unwrap()).unwrap()
    };
    assert_eq!(resolve(&f.blob_file(&layer)), vec![c("ns", &layer)]);
    // Any file below a snapshot's directory: the question `du` leaves users with.
    let file = f.snap_dir("ns", "b-top").join("fs").join("f");
    assert!(file.exists());
    assert_eq!(resolve(&file), vec![s("ns", "b-top")]);
    // A path of the store that is no object's data, and one outside the store.
    assert!(resolve(&f.store.layout().meta()).is_empty());
    assert!(resolve(std::path::Path::new("/etc/passwd")).is_empty());
    // Another namespace sees nothing there.
    let other = strata_gc::resolve(&f.store, Some("other"), file.to_str().unwrap()).unwrap();
    assert!(other.is_empty());
}

#[test]
fn why_an_unreferenced_object_is_not_kept() {
    let (f, _, only_b) = images();
    f.store.images().delete(&scope("ns", None), "b").unwrap();
    let w = why(&f.store, &c("ns", &only_b)).unwrap();
    assert!(w.exists);
    assert!(!w.kept);
    assert!(w.paths.is_empty());
}

#[test]
fn usage_by_image_splits_unique_and_shared_and_adds_up() {
    let (f, _, _) = images();
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
    let (
        Fx {
            store,
            sn,
            tmp: _tmp,
        },
        _,
        _,
    ) = images();
    drop(sn);
    let clone = store.clone();
    assert!(clone.compact().is_err(), "another handle is alive");
    let sizes = store.compact().unwrap();
    assert!(sizes.after <= sizes.before);
}
