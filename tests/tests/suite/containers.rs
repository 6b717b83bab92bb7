//! Container record conformance (containerd's container store as far as GC needs it):
//! create/get/list with filters, identifier rules, update by field paths, delete.

use std::collections::{BTreeMap, BTreeSet};

use strata_store::containers::Container;
use strata_store::{ErrorKind, Timestamp};

use crate::support::{TestStore, labels, scope};

const NS: &str = "containers";

fn container(id: &str, image: &str, runtime: &str, lbls: &[(&str, &str)]) -> Container {
    let mut c = Container::new(id);
    c.image = image.to_owned();
    c.runtime = runtime.to_owned();
    c.snapshotter = "overlayfs".to_owned();
    c.snapshot_key = format!("{id}-snapshot");
    c.labels = labels(lbls);
    c
}

fn ids(cs: &[Container]) -> BTreeSet<String> {
    cs.iter().map(|c| c.id.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const RUNC: &str = "io.containerd.runc.v2";
const KATA: &str = "io.containerd.kata.v2";

#[test]
fn create_get_list_filters() {
    let ts = TestStore::new();
    let s = scope(NS);
    let fixture = [
        container(
            "c1",
            "docker.io/library/alpine:3.20",
            RUNC,
            &[("app", "web"), ("tier", "front")],
        ),
        container(
            "c2",
            "docker.io/library/alpine:3.20",
            KATA,
            &[("app", "db")],
        ),
        container("c3", "docker.io/library/busybox:1", RUNC, &[("app", "web")]),
        container("c4", "", RUNC, &[]),
    ];
    let mut created = BTreeMap::new();
    for c in &fixture {
        let pre = Timestamp::now();
        let got = ts.store.containers().create(&s, c.clone()).expect("create");
        let post = Timestamp::now();
        assert!(
            pre <= got.created_at && got.created_at <= post,
            "created_at set by the store"
        );
        assert_eq!(got.created_at, got.updated_at);
        let mut expected = c.clone();
        expected.created_at = got.created_at;
        expected.updated_at = got.updated_at;
        assert_eq!(got, expected);
        assert_eq!(ts.store.containers().get(NS, &c.id).expect("get"), got);
        created.insert(c.id.clone(), got);
    }

    let list = |filters: &[&str]| ids(&ts.store.containers().list(NS, filters).expect("list"));
    assert_eq!(list(&[]), set(&["c1", "c2", "c3", "c4"]));
    assert_eq!(list(&["id==c2"]), set(&["c2"]));
    assert_eq!(list(&["id==c1", "id==c3"]), set(&["c1", "c3"]));
    assert_eq!(
        list(&["image==docker.io/library/alpine:3.20"]),
        set(&["c1", "c2"])
    );
    assert_eq!(list(&["image~=busybox"]), set(&["c3"]));
    assert_eq!(
        list(&[&format!("runtime.name=={RUNC}")]),
        set(&["c1", "c3", "c4"])
    );
    assert_eq!(list(&[&format!("runtime.name=={KATA}")]), set(&["c2"]));
    assert_eq!(list(&["labels.app==web"]), set(&["c1", "c3"]));
    assert_eq!(list(&["labels.app==web,labels.tier==front"]), set(&["c1"]));
    assert_eq!(list(&["labels.tier"]), set(&["c1"]));
    assert_eq!(list(&["labels.app!=web"]), set(&["c2", "c4"]));
    assert_eq!(list(&["snapshotter==overlayfs"]).len(), 4);
    assert!(list(&["id==nope"]).is_empty());
    let err = ts
        .store
        .containers()
        .list(NS, &["labels."])
        .expect_err("bad filter");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // Listed records equal the created ones; other namespaces see nothing.
    for c in ts.store.containers().list::<&str>(NS, &[]).expect("list") {
        assert_eq!(&c, &created[&c.id]);
    }
    assert!(
        ts.store
            .containers()
            .list::<&str>("other", &[])
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        ts.store
            .containers()
            .get("other", "c1")
            .expect_err("other ns")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        ts.store
            .containers()
            .get(NS, "missing")
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn create_duplicate_is_already_exists() {
    let ts = TestStore::new();
    let s = scope(NS);
    let first = ts
        .store
        .containers()
        .create(&s, container("dup", "img:1", RUNC, &[("a", "1")]))
        .expect("create");
    let err = ts
        .store
        .containers()
        .create(&s, container("dup", "img:2", KATA, &[("b", "2")]))
        .expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        ts.store.containers().get(NS, "dup").expect("get"),
        first,
        "unchanged"
    );
    // The same id in another namespace is a different container.
    ts.store
        .containers()
        .create(&scope("other"), container("dup", "img:2", KATA, &[]))
        .expect("other ns");
}

#[test]
fn invalid_ids() {
    let ts = TestStore::new();
    let s = scope(NS);
    let too_long = "c".repeat(77);
    for id in [
        "",
        "-c",
        "c-",
        "a..b",
        "with space",
        "a/b",
        "ctr:1",
        too_long.as_str(),
    ] {
        let err = ts
            .store
            .containers()
            .create(&s, container(id, "img", RUNC, &[]))
            .expect_err("invalid id");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}");
    }
    let longest = "c".repeat(76);
    for id in ["c", "ctr-1", "ctr_1.x", "ABC123", longest.as_str()] {
        ts.store
            .containers()
            .create(&s, container(id, "img", RUNC, &[]))
            .unwrap_or_else(|e| panic!("{id:?} is valid: {e}"));
    }
    assert_eq!(
        ts.store
            .containers()
            .list::<&str>(NS, &[])
            .expect("list")
            .len(),
        5
    );
}

#[test]
fn snapshot_key_requires_snapshotter() {
    let ts = TestStore::new();
    let s = scope(NS);
    let mut c = container("needs-snapshotter", "img", RUNC, &[]);
    c.snapshotter = String::new();
    let err = ts
        .store
        .containers()
        .create(&s, c.clone())
        .expect_err("key without snapshotter");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        ts.store
            .containers()
            .get(NS, "needs-snapshotter")
            .expect_err("not created")
            .kind(),
        ErrorKind::NotFound
    );
    // A snapshotter without a key, or neither, is fine.
    c.snapshot_key = String::new();
    ts.store
        .containers()
        .create(&s, c.clone())
        .expect("no key, no snapshotter");
    c.id = "snapshotter-only".to_owned();
    c.snapshotter = "overlayfs".to_owned();
    ts.store
        .containers()
        .create(&s, c)
        .expect("snapshotter without key");
}

#[test]
fn label_limits() {
    let ts = TestStore::new();
    let s = scope(NS);
    let over = "v".repeat(4096);
    let err = ts
        .store
        .containers()
        .create(&s, container("big", "img", RUNC, &[("k", &over)]))
        .expect_err("oversized label");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let created = ts
        .store
        .containers()
        .create(&s, container("big", "img", RUNC, &[("k", "v")]))
        .expect("create");
    let mut upd = created.clone();
    upd.labels = labels(&[("k", &over)]);
    for paths in [&[][..], &["labels"][..], &["labels.k"][..]] {
        let err = ts
            .store
            .containers()
            .update(&s, &upd, paths)
            .expect_err("oversized");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{paths:?}");
        assert_eq!(
            ts.store.containers().get(NS, "big").expect("get"),
            created,
            "{paths:?}"
        );
    }
}

#[test]
fn update_labels_and_image() {
    let ts = TestStore::new();
    let s = scope(NS);
    let created = ts
        .store
        .containers()
        .create(
            &s,
            container("upd", "img:1", RUNC, &[("a", "1"), ("b", "2")]),
        )
        .expect("create");

    // Field path `labels.<k>`: only that key.
    let mut input = created.clone();
    input.labels = labels(&[("a", "changed"), ("b", "ignored"), ("c", "3")]);
    let pre = Timestamp::now();
    let u = ts
        .store
        .containers()
        .update(&s, &input, &["labels.a", "labels.c"])
        .expect("update");
    let post = Timestamp::now();
    assert_eq!(
        u.labels,
        labels(&[("a", "changed"), ("b", "2"), ("c", "3")])
    );
    assert_eq!(u.image, "img:1");
    assert_eq!(u.created_at, created.created_at);
    assert!(pre <= u.updated_at && u.updated_at <= post);

    // `labels.<k>` absent from the input removes it.
    input.labels = BTreeMap::new();
    let u = ts
        .store
        .containers()
        .update(&s, &input, &["labels.b"])
        .expect("update");
    assert_eq!(u.labels, labels(&[("a", "changed"), ("c", "3")]));

    // `labels` replaces the set.
    input.labels = labels(&[("only", "one")]);
    let u = ts
        .store
        .containers()
        .update(&s, &input, &["labels"])
        .expect("update");
    assert_eq!(u.labels, labels(&[("only", "one")]));

    // `image` replaces the image, nothing else.
    input.image = "img:2".to_owned();
    input.labels = labels(&[("not", "applied")]);
    let u = ts
        .store
        .containers()
        .update(&s, &input, &["image"])
        .expect("update image");
    assert_eq!(u.image, "img:2");
    assert_eq!(u.labels, labels(&[("only", "one")]));
    assert_eq!(u.snapshotter, created.snapshotter);
    assert_eq!(u.snapshot_key, created.snapshot_key);
    assert_eq!(u.runtime, created.runtime);
    assert_eq!(ts.store.containers().get(NS, "upd").expect("get"), u);

    // Updating a missing container is NotFound.
    let mut missing = created.clone();
    missing.id = "missing".to_owned();
    let err = ts
        .store
        .containers()
        .update(&s, &missing, &["labels"])
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn update_without_paths_replaces_labels_and_image() {
    // containerd: a full update (no field paths) replaces labels, spec, extensions, image and
    // snapshot key.
    let ts = TestStore::new();
    let s = scope(NS);
    let created = ts
        .store
        .containers()
        .create(&s, container("full", "img:1", RUNC, &[("a", "1")]))
        .expect("create");
    let mut input = created.clone();
    input.labels = labels(&[("b", "2")]);
    input.image = "img:2".to_owned();
    let u = ts
        .store
        .containers()
        .update(&s, &input, &[])
        .expect("full update");
    assert_eq!(u.labels, labels(&[("b", "2")]), "labels replaced");
    assert_eq!(u.image, "img:2", "image replaced by a full update");
    assert_eq!(u.created_at, created.created_at);
}

#[test]
fn update_unknown_path_is_invalid() {
    let ts = TestStore::new();
    let s = scope(NS);
    let created = ts
        .store
        .containers()
        .create(&s, container("u", "img", RUNC, &[("a", "1")]))
        .expect("create");
    let mut input = created.clone();
    input.runtime = KATA.to_owned();
    input.snapshotter = "native".to_owned();
    input.labels = labels(&[("a", "2")]);
    for path in [
        "runtime",
        "runtime.name",
        "snapshotter",
        "id",
        "createdat",
        "labelsx",
        "bogus",
    ] {
        let err = ts
            .store
            .containers()
            .update(&s, &input, &[path])
            .expect_err("unknown path");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
    }
    // A bad path among good ones fails the whole update.
    let err = ts
        .store
        .containers()
        .update(&s, &input, &["labels", "bogus"])
        .expect_err("mixed");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        ts.store.containers().get(NS, "u").expect("get"),
        created,
        "nothing changed"
    );
}

#[test]
fn delete() {
    let ts = TestStore::new();
    let s = scope(NS);
    ts.store
        .containers()
        .create(&s, container("gone", "img", RUNC, &[]))
        .expect("create");
    ts.store
        .containers()
        .create(&s, container("stays", "img", RUNC, &[]))
        .expect("create");
    ts.store
        .containers()
        .create(&scope("other"), container("gone", "img", RUNC, &[]))
        .expect("create");

    ts.store.containers().delete(&s, "gone").expect("delete");
    assert_eq!(
        ts.store
            .containers()
            .get(NS, "gone")
            .expect_err("deleted")
            .kind(),
        ErrorKind::NotFound
    );
    let err = ts
        .store
        .containers()
        .delete(&s, "gone")
        .expect_err("second delete");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        ids(&ts.store.containers().list::<&str>(NS, &[]).expect("list")),
        set(&["stays"])
    );
    assert!(
        ts.store.containers().get("other", "gone").is_ok(),
        "other namespace untouched"
    );

    // The id can be reused.
    ts.store
        .containers()
        .create(&s, container("gone", "img:new", RUNC, &[]))
        .expect("recreate");
    assert_eq!(
        ts.store.containers().get(NS, "gone").expect("get").image,
        "img:new"
    );
}
