//! Lease conformance (reference section 3): TestLeases, TestLeasesList, TestLeaseResource,
//! expiry labels and implicit membership of images.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strata_store::images::{Descriptor, Image};
use strata_store::leases::{LABEL_EXPIRE, LABEL_FLAT, Lease, Resource};
use strata_store::{ErrorKind, Store, Timestamp};

use crate::support::{TestStore, labels, scope, sha256};

const NS: &str = "leases";

fn ids(leases: &[Lease]) -> BTreeSet<String> {
    leases.iter().map(|l| l.id.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn leases_create_delete_list() {
    let ts = TestStore::new();
    let l = ts.store.leases();

    let pre = Timestamp::now();
    let tx1 = l.create(NS, "tx1", BTreeMap::new()).expect("create tx1");
    let post = Timestamp::now();
    assert_eq!(tx1.id, "tx1");
    assert!(
        pre <= tx1.created_at && tx1.created_at <= post,
        "created_at in window"
    );
    assert!(tx1.labels.is_empty());

    let err = l.create(NS, "tx1", BTreeMap::new()).expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let tx2 = l
        .create(NS, "tx2", labels(&[("a", "b")]))
        .expect("create tx2");

    let listed = l.list::<&str>(NS, &[]).expect("list");
    assert_eq!(
        listed,
        vec![tx1.clone(), tx2.clone()],
        "ids and created_at as created"
    );
    assert_eq!(l.get(NS, "tx1").expect("get"), tx1);
    assert_eq!(l.get(NS, "tx2").expect("get").labels, labels(&[("a", "b")]));

    // Leases are per namespace.
    assert!(l.list::<&str>("elsewhere", &[]).expect("list").is_empty());
    assert_eq!(
        l.get("elsewhere", "tx1").expect_err("other ns").kind(),
        ErrorKind::NotFound
    );
    let err = l.delete("elsewhere", "tx1").expect_err("other ns");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    l.delete(NS, "tx1").expect("delete tx1");
    let err = l.delete(NS, "tx1").expect_err("second delete");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        l.get(NS, "tx1").expect_err("deleted").kind(),
        ErrorKind::NotFound
    );
    l.delete(NS, "tx2").expect("delete tx2");
    assert!(l.list::<&str>(NS, &[]).expect("list").is_empty());

    // An id is required.
    assert!(l.create(NS, "", BTreeMap::new()).is_err(), "empty lease id");
}

#[test]
fn leases_list_filters() {
    let ts = TestStore::new();
    let l = ts.store.leases();
    // Each case below selects a different set.
    let fixture: &[(&str, &[(&str, &str)])] = &[
        ("lease1", &[("label1", "value1"), ("label3", "other")]),
        ("lease2", &[("label1", "value2"), ("label2", "")]),
        ("lease3", &[("label1", "value1"), ("label2", "something")]),
        ("lease4", &[("label2", "x"), ("label3", "y")]),
        ("lease5", &[]),
    ];
    for (id, lbls) in fixture {
        l.create(NS, id, labels(lbls)).expect("create");
    }
    // An empty value is "no such label".
    assert!(
        !l.get(NS, "lease2")
            .expect("get")
            .labels
            .contains_key("label2")
    );

    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "All",
            &[],
            &["lease1", "lease2", "lease3", "lease4", "lease5"],
        ),
        ("ID", &["id==lease1"], &["lease1"]),
        ("IDx2", &["id==lease1", "id==lease2"], &["lease1", "lease2"]),
        (
            "Label1",
            &["labels.label1"],
            &["lease1", "lease2", "lease3"],
        ),
        (
            "Label1value1",
            &["labels.label1==value1"],
            &["lease1", "lease3"],
        ),
        ("Label1value2", &["labels.label1==value2"], &["lease2"]),
        ("Label2", &["labels.label2"], &["lease3", "lease4"]),
        ("Label3", &["labels.label3"], &["lease1", "lease4"]),
    ];
    let mut seen = BTreeSet::new();
    for (name, filters, expected) in cases {
        let got = ids(&l.list(NS, filters).expect("list"));
        assert_eq!(got, set(expected), "case {name}");
        assert!(seen.insert(got), "case {name} must select a distinct set");
    }
    // A few more shapes: AND within one filter, != matching absent labels.
    assert_eq!(
        ids(&l
            .list(NS, &["labels.label1==value1,labels.label3"])
            .expect("list")),
        set(&["lease1"])
    );
    assert_eq!(
        ids(&l.list(NS, &["labels.label1!=value1"]).expect("list")),
        set(&["lease2", "lease4", "lease5"])
    );
    let err = l.list(NS, &["id=="]).expect_err("bad filter");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    for (id, _) in fixture {
        l.delete(NS, id).expect("delete");
        assert_eq!(
            l.delete(NS, id).expect_err("again").kind(),
            ErrorKind::NotFound
        );
    }
    assert!(l.list::<&str>(NS, &[]).expect("list").is_empty());
}

#[test]
fn lease_resource_types() {
    let ts = TestStore::new();
    let l = ts.store.leases();
    l.create(NS, "l1", BTreeMap::new()).expect("create");
    let dgst = sha256(b"lease resource").to_string();

    let ok = |kind: &str, id: &str| {
        l.add_resource(NS, "l1", &Resource::new(kind, id))
            .unwrap_or_else(|e| panic!("add {kind} {id}: {e}"));
    };
    let fails = |kind: &str, id: &str| -> ErrorKind {
        l.add_resource(NS, "l1", &Resource::new(kind, id))
            .expect_err("resource must be refused")
            .kind()
    };

    ok("content", &dgst);
    ok("ingests", "d2UdcINOwrBTQG9kS8rySAM3eMNBSojH");
    ok("ingests", "d2UdcINOwrBTQG9kS8rySAM3eMNBSojH"); // idempotent
    ok("images", "qBUHpWBn03YaCt9cL3PPGKWoxBqTlLfu");
    ok("snapshots/overlayfs", "RstMI3X8vguKoPFkmIStZ5fQFI7F1L0o");
    ok("snapshots/native", "a-key");
    ok("content", &dgst); // idempotent

    assert_eq!(
        fails("content", "sha256:not-a-digest"),
        ErrorKind::InvalidArgument
    );
    assert_eq!(fails("content", "just-text"), ErrorKind::InvalidArgument);
    assert_eq!(
        fails("snapshots", "HMemOhlygombYhkhHhAZj5aRbDy2a3z2"),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        fails(
            "snapshots/overlayfs/type1",
            "HMemOhlygombYhkhHhAZj5aRbDy2a3z2"
        ),
        ErrorKind::InvalidArgument
    );
    assert_eq!(fails("images/extra", "name"), ErrorKind::InvalidArgument);
    assert_eq!(
        fails("leases", "xCAV3F6PddlXitbtby0Vo23Qof6RTWpG"),
        ErrorKind::NotImplemented
    );
    assert_eq!(
        fails("containers", "05O9ljptPu5Qq9kZGOacEfymBwQFM8ZH"),
        ErrorKind::NotImplemented
    );

    let err = l
        .add_resource(NS, "non-found", &Resource::new("snapshots/overlayfs", "x"))
        .expect_err("missing lease");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Listed once each, ordered content, images, ingests, snapshots/<snapshotter>.
    let listed = l.resources(NS, "l1").expect("resources");
    assert_eq!(
        listed,
        vec![
            Resource::new("content", dgst.clone()),
            Resource::new("images", "qBUHpWBn03YaCt9cL3PPGKWoxBqTlLfu"),
            Resource::new("ingests", "d2UdcINOwrBTQG9kS8rySAM3eMNBSojH"),
            Resource::new("snapshots/native", "a-key"),
            Resource::new("snapshots/overlayfs", "RstMI3X8vguKoPFkmIStZ5fQFI7F1L0o"),
        ]
    );

    // Delete one; deleting something not in the lease is fine; a missing lease is not.
    l.delete_resource(
        NS,
        "l1",
        &Resource::new("snapshots/overlayfs", "RstMI3X8vguKoPFkmIStZ5fQFI7F1L0o"),
    )
    .expect("delete resource");
    l.delete_resource(
        NS,
        "l1",
        &Resource::new("snapshots/overlayfs", "never-added"),
    )
    .expect("delete of absent resource");
    l.delete_resource(
        NS,
        "l1",
        &Resource::new("content", sha256(b"absent").to_string()),
    )
    .expect("delete of absent content");
    let err = l
        .delete_resource(NS, "non-found", &Resource::new("ingests", "x"))
        .expect_err("missing lease");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        l.resources(NS, "l1").expect("resources").len(),
        listed.len() - 1
    );
    assert_eq!(
        l.resources(NS, "non-found").expect_err("missing").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn lease_resource_type_with_extra_segment_is_invalid() {
    // containerd: `content`, `ingests` and `images` take exactly one segment; more is
    // InvalidArgument (not NotImplemented, which is for unknown types).
    let ts = TestStore::new();
    let l = ts.store.leases();
    l.create(NS, "l1", BTreeMap::new()).expect("create");
    let dgst = sha256(b"x").to_string();
    for (kind, id) in [
        ("content/extra", dgst.as_str()),
        ("ingests/extra", "ref"),
        ("images/extra", "img"),
    ] {
        let err = l
            .add_resource(NS, "l1", &Resource::new(kind, id))
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{kind}");
    }
    assert!(l.resources(NS, "l1").expect("resources").is_empty());
}

#[test]
fn lease_resources_are_per_lease_and_go_with_it() {
    let ts = TestStore::new();
    let l = ts.store.leases();
    l.create(NS, "a", BTreeMap::new()).expect("create a");
    l.create(NS, "b", BTreeMap::new()).expect("create b");
    l.create("other", "a", BTreeMap::new())
        .expect("create a in other ns");
    l.add_resource(NS, "a", &Resource::new("ingests", "ra"))
        .expect("add");
    l.add_resource(NS, "b", &Resource::new("ingests", "rb"))
        .expect("add");
    l.add_resource("other", "a", &Resource::new("images", "img"))
        .expect("add");

    assert_eq!(
        l.resources(NS, "a").expect("a"),
        vec![Resource::new("ingests", "ra")]
    );
    assert_eq!(
        l.resources(NS, "b").expect("b"),
        vec![Resource::new("ingests", "rb")]
    );
    assert_eq!(
        l.resources("other", "a").expect("other a"),
        vec![Resource::new("images", "img")]
    );

    // Deleting a lease drops its resource list; a new lease with the same id starts empty.
    l.delete(NS, "a").expect("delete");
    l.create(NS, "a", BTreeMap::new()).expect("recreate");
    assert!(l.resources(NS, "a").expect("a").is_empty());
    assert_eq!(
        l.resources(NS, "b").expect("b"),
        vec![Resource::new("ingests", "rb")]
    );
    assert_eq!(
        l.resources("other", "a").expect("other a"),
        vec![Resource::new("images", "img")]
    );
}

#[test]
fn lease_expiry_label() {
    let ts = TestStore::new();
    let l = ts.store.leases();
    let hour = Duration::from_secs(3600);

    let before = Timestamp::now();
    let (key, value) = Lease::expire_label(hour);
    let after = Timestamp::now();
    assert_eq!(key, LABEL_EXPIRE);
    assert_eq!(key, "containerd.io/gc.expire");
    let parsed = Timestamp::parse_rfc3339(&value).expect("RFC 3339 value");
    assert!(
        before.plus(hour) <= parsed && parsed <= after.plus(hour),
        "now + 1h"
    );

    let lease = l
        .create(NS, "expiring", labels(&[(&key, &value)]))
        .expect("create");
    assert_eq!(lease.expires_at(), Some(parsed));
    assert_eq!(
        l.get(NS, "expiring").expect("get").expires_at(),
        Some(parsed)
    );
    let listed = l
        .list(NS, &[format!("labels.\"{LABEL_EXPIRE}\"")])
        .expect("list");
    assert_eq!(ids(&listed), set(&["expiring"]));

    let forever = l.create(NS, "forever", BTreeMap::new()).expect("create");
    assert_eq!(forever.expires_at(), None);
    let garbage = l
        .create(NS, "garbage", labels(&[(LABEL_EXPIRE, "tomorrow-ish")]))
        .expect("an unparseable expiry is stored as is");
    assert_eq!(garbage.expires_at(), None);
    let offset = l
        .create(
            NS,
            "offset",
            labels(&[(LABEL_EXPIRE, "2030-01-01T01:00:00+01:00")]),
        )
        .expect("create");
    assert_eq!(
        offset.expires_at(),
        Timestamp::parse_rfc3339("2030-01-01T00:00:00Z")
    );

    let flat = l
        .create(NS, "flat", labels(&[(LABEL_FLAT, "1")]))
        .expect("create");
    assert_eq!(
        flat.labels.get("containerd.io/gc.flat").map(String::as_str),
        Some("1")
    );
}

#[test]
fn lease_labels_are_not_size_checked() {
    // A containerd quirk kept for compatibility: lease labels skip labels.Validate.
    let ts = TestStore::new();
    let big = "v".repeat(8192);
    let lease = ts
        .store
        .leases()
        .create(NS, "big", labels(&[("k", &big)]))
        .expect("oversized lease label accepted");
    assert_eq!(lease.labels.get("k").map(String::len), Some(8192));
}

#[test]
fn lease_create_creates_namespace() {
    let ts = TestStore::new();
    ts.store
        .leases()
        .create("fresh-ns", "l", BTreeMap::new())
        .expect("create");
    assert_eq!(
        ts.store
            .namespaces()
            .get("fresh-ns")
            .expect("namespace")
            .name,
        "fresh-ns"
    );
    let err = ts
        .store
        .leases()
        .create("bad/ns", "l", BTreeMap::new())
        .expect_err("bad ns");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

fn image(name: &str, lbls: BTreeMap<String, String>) -> Image {
    let mut img = Image::new(
        name,
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            digest: sha256(name.as_bytes()),
            size: 100,
            annotations: BTreeMap::new(),
        },
    );
    img.labels = lbls;
    img
}

fn lease_images(store: &Store, lease: &str) -> Vec<Resource> {
    store.leases().resources(NS, lease).expect("resources")
}

#[test]
fn image_joins_lease_only_with_expire_label() {
    let ts = TestStore::new();
    ts.store
        .leases()
        .create(NS, "pull", BTreeMap::new())
        .expect("lease");
    let leased = scope(NS).with_lease("pull");
    let (k, v) = Lease::expire_label(Duration::from_secs(600));

    // Without gc.expire the image is a root by itself and does not join.
    ts.store
        .images()
        .create(&leased, image("plain", BTreeMap::new()))
        .expect("create");
    assert!(lease_images(&ts.store, "pull").is_empty());

    // With gc.expire it joins the scope's lease.
    ts.store
        .images()
        .create(&leased, image("expiring", labels(&[(&k, &v)])))
        .expect("create");
    assert_eq!(
        lease_images(&ts.store, "pull"),
        vec![Resource::new("images", "expiring")]
    );

    // An update that adds gc.expire joins too.
    let mut plain = ts.store.images().get(NS, "plain").expect("get");
    plain.labels = labels(&[(&k, &v)]);
    ts.store
        .images()
        .update(&leased, &plain, &["labels"])
        .expect("update");
    assert_eq!(
        lease_images(&ts.store, "pull"),
        vec![
            Resource::new("images", "expiring"),
            Resource::new("images", "plain")
        ]
    );

    // Deleting under the lease drops the image from it.
    ts.store
        .images()
        .delete(&leased, "expiring")
        .expect("delete");
    assert_eq!(
        lease_images(&ts.store, "pull"),
        vec![Resource::new("images", "plain")]
    );

    // A missing scope lease only matters when the image would join it.
    let missing = scope(NS).with_lease("no-such-lease");
    ts.store
        .images()
        .create(&missing, image("no-expire", BTreeMap::new()))
        .expect("create");
    let err = ts
        .store
        .images()
        .create(&missing, image("with-expire", labels(&[(&k, &v)])))
        .expect_err("lease does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        ts.store
            .images()
            .get(NS, "with-expire")
            .expect_err("not created")
            .kind(),
        ErrorKind::NotFound
    );
}
