//! Namespace conformance (reference section 10): identifiers, create/list/get/labels, delete
//! rules, implicit creation and isolation.

use std::collections::BTreeMap;
use std::io::Write;

use strata_store::containers::Container;
use strata_store::content::WriterOptions;
use strata_store::images::{Descriptor, Image};
use strata_store::leases::Resource;
use strata_store::{ErrorKind, Scope, Store, Timestamp};

use crate::support::{TestStore, bytes, labels, put_blob, scope, sha256};

const VALID: &[&str] = &[
    "a",
    "0",
    "default",
    "k8s.io",
    "moby",
    "a-b_c.d",
    "A1",
    "a.b.c",
    "ns-01_x.y",
    "UPPER",
];

const INVALID: &[&str] = &[
    "", "-a", "a-", ".a", "a.", "_a", "a..b", "a._b", "a-.b", "a/b", "a b", " a", "a\n", "a:b",
    "a@b", "é", "ns\u{0}",
];

#[test]
fn identifier_rule() {
    let ts = TestStore::new();
    let max = "x".repeat(76);
    let too_long = "x".repeat(77);
    for name in VALID.iter().copied().chain([max.as_str()]) {
        assert!(Scope::new(name).is_ok(), "{name:?} is a valid namespace");
        ts.store
            .namespaces()
            .create(name, BTreeMap::new())
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
    }
    for name in INVALID.iter().copied().chain([too_long.as_str()]) {
        let err = Scope::new(name).expect_err("invalid scope");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name:?}");
        let err = ts
            .store
            .namespaces()
            .create(name, BTreeMap::new())
            .expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name:?}");
        assert!(
            err.to_string().contains("namespace"),
            "error names what is invalid: {err}"
        );
    }
    let names: Vec<String> = ts
        .store
        .namespaces()
        .list()
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names.len(), VALID.len() + 1);
    assert!(names.contains(&max));
    assert!(!names.contains(&too_long));
}

#[test]
fn create_get_list_labels() {
    let ts = TestStore::new();
    let ns = ts.store.namespaces();
    let pre = Timestamp::now();
    let created = ns
        .create("ns1", labels(&[("a", "1"), ("b", "2"), ("empty", "")]))
        .expect("create");
    let post = Timestamp::now();
    assert_eq!(created.name, "ns1");
    assert_eq!(
        created.labels,
        labels(&[("a", "1"), ("b", "2")]),
        "empty values are dropped"
    );
    assert!(pre <= created.created_at && created.created_at <= post);
    assert_eq!(ns.get("ns1").expect("get"), created);

    let err = ns.create("ns1", BTreeMap::new()).expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        ns.get("ns1").expect("get").labels,
        created.labels,
        "duplicate changed nothing"
    );

    ns.create("ns2", BTreeMap::new()).expect("create ns2");
    ns.create("another", BTreeMap::new())
        .expect("create another");
    let names: Vec<String> = ns
        .list()
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["another", "ns1", "ns2"], "listed by name");

    // Labels: set, change, delete with an empty value.
    let n = ns.set_label("ns1", "c", "3").expect("set c");
    assert_eq!(n.labels, labels(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let n = ns.set_label("ns1", "a", "changed").expect("change a");
    assert_eq!(n.labels.get("a").map(String::as_str), Some("changed"));
    let n = ns.set_label("ns1", "b", "").expect("delete b");
    assert_eq!(n.labels, labels(&[("a", "changed"), ("c", "3")]));
    assert_eq!(ns.get("ns1").expect("get").labels, n.labels);
    assert_eq!(ns.get("ns1").expect("get").created_at, created.created_at);
    ns.set_label("ns1", "never-set", "")
        .expect("deleting an absent label is fine");

    // Missing namespace.
    assert_eq!(
        ns.get("missing").expect_err("missing").kind(),
        ErrorKind::NotFound
    );
    let err = ns.set_label("missing", "k", "v").expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        ns.delete("missing").expect_err("missing").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn label_limits() {
    let ts = TestStore::new();
    let ns = ts.store.namespaces();
    let at_limit = "v".repeat(4095);
    let over = "v".repeat(4096);
    let err = ns
        .create("big", labels(&[("k", &over)]))
        .expect_err("too big");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        ns.get("big").expect_err("not created").kind(),
        ErrorKind::NotFound
    );
    ns.create("big", labels(&[("k", &at_limit)]))
        .expect("4096 bytes is fine");
    let err = ns.set_label("big", "k2", &over).expect_err("too big");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        ns.get("big").expect("get").labels,
        labels(&[("k", &at_limit)])
    );
}

fn target(name: &str) -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        digest: sha256(name.as_bytes()),
        size: 42,
        annotations: BTreeMap::new(),
    }
}

fn container(id: &str) -> Container {
    let mut c = Container::new(id);
    c.runtime = "io.containerd.runc.v2".to_owned();
    c
}

fn delete_refused_naming(store: &Store, name: &str, kinds: &[&str]) {
    let err = store
        .namespaces()
        .delete(name)
        .expect_err("namespace is not empty");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let msg = err.to_string();
    for kind in kinds {
        assert!(msg.contains(kind), "error names remaining {kind}: {msg}");
    }
    for kind in ["images", "blobs", "containers"] {
        if !kinds.contains(&kind) {
            assert!(!msg.contains(kind), "error must not name {kind}: {msg}");
        }
    }
    assert!(
        store.namespaces().get(name).is_ok(),
        "a refused delete keeps the namespace"
    );
}

#[test]
fn delete_refused_while_objects_remain() {
    let ts = TestStore::new();
    let s = scope("busy");
    let st = &ts.store;
    st.namespaces()
        .create("busy", BTreeMap::new())
        .expect("create");

    st.images()
        .create(&s, Image::new("img", target("img")))
        .expect("image");
    delete_refused_naming(st, "busy", &["images"]);

    let d = put_blob(st, &s, "blob", &bytes(1, 10), BTreeMap::new());
    delete_refused_naming(st, "busy", &["images", "blobs"]);

    st.containers()
        .create(&s, container("ctr"))
        .expect("container");
    delete_refused_naming(st, "busy", &["images", "blobs", "containers"]);

    st.images().delete(&s, "img").expect("delete image");
    delete_refused_naming(st, "busy", &["blobs", "containers"]);
    st.content().delete(&s, &d).expect("delete blob");
    delete_refused_naming(st, "busy", &["containers"]);
    st.containers().delete(&s, "ctr").expect("delete container");

    st.namespaces()
        .delete("busy")
        .expect("empty namespace deletes");
    assert_eq!(
        st.namespaces().get("busy").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn delete_with_only_leases_and_ingests() {
    let ts = TestStore::new();
    let st = &ts.store;
    let s = scope("transient");
    st.leases()
        .create("transient", "l1", BTreeMap::new())
        .expect("lease");
    st.leases()
        .add_resource("transient", "l1", &Resource::new("ingests", "pending"))
        .expect("resource");
    let mut w = st
        .content()
        .writer(&s, "pending", WriterOptions::default())
        .expect("writer");
    w.write_all(&bytes(2, 1000)).expect("write");
    w.close();
    assert_eq!(
        st.content()
            .status("transient", "pending")
            .expect("ingest")
            .offset,
        1000
    );

    st.namespaces()
        .delete("transient")
        .expect("leases and ingests do not block deletion");

    assert_eq!(
        st.namespaces().get("transient").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    assert!(
        st.leases()
            .list::<&str>("transient", &[])
            .expect("list")
            .is_empty(),
        "leases gone"
    );
    assert!(
        st.content()
            .list_statuses::<&str>("transient", &[])
            .expect("list")
            .is_empty(),
        "ingests gone"
    );
    let err = st
        .content()
        .status("transient", "pending")
        .expect_err("ingest gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let leftovers: Vec<_> = std::fs::read_dir(st.layout().ingest_root())
        .expect("ingest root")
        .collect();
    assert!(leftovers.is_empty(), "ingest data removed: {leftovers:?}");

    // Recreating the namespace and its lease starts from nothing.
    st.leases()
        .create("transient", "l1", BTreeMap::new())
        .expect("lease again");
    assert!(
        st.leases()
            .resources("transient", "l1")
            .expect("resources")
            .is_empty()
    );
    let w = st
        .content()
        .writer(&s, "pending", WriterOptions::default())
        .expect("writer");
    assert_eq!(w.status().offset, 0);
}

#[test]
fn implicit_creation_by_first_write() {
    let ts = TestStore::new();
    let st = &ts.store;
    assert!(st.namespaces().list().expect("list").is_empty());

    put_blob(st, &scope("by-blob"), "r", b"data", BTreeMap::new());
    st.images()
        .create(&scope("by-image"), Image::new("img", target("img")))
        .expect("image");
    st.containers()
        .create(&scope("by-container"), container("c"))
        .expect("container");
    st.leases()
        .create("by-lease", "l", BTreeMap::new())
        .expect("lease");
    let w = st
        .content()
        .writer(&scope("by-ingest"), "r", WriterOptions::default())
        .expect("writer");
    w.close();

    let names: Vec<String> = st
        .namespaces()
        .list()
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(
        names,
        [
            "by-blob",
            "by-container",
            "by-image",
            "by-ingest",
            "by-lease"
        ]
    );
    for name in &names {
        let n = st.namespaces().get(name).expect("implicit namespace");
        assert!(n.labels.is_empty());
    }
    // Reads do not create namespaces.
    let _ = st.images().list::<&str>("read-only", &[]).expect("list");
    let _ = st.content().info("read-only", &sha256(b"x"));
    assert_eq!(
        st.namespaces()
            .get("read-only")
            .expect_err("not created")
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn isolation_of_same_names() {
    let ts = TestStore::new();
    let st = &ts.store;
    let a = scope("ns-a");
    let b = scope("ns-b");
    let mut img_a = Image::new("docker.io/library/alpine:3.20", target("a"));
    img_a.labels = labels(&[("owner", "a")]);
    let mut img_b = Image::new("docker.io/library/alpine:3.20", target("b"));
    img_b.labels = labels(&[("owner", "b")]);
    st.images().create(&a, img_a).expect("create in a");
    st.images().create(&b, img_b).expect("same name in b");

    let got_a = st
        .images()
        .get("ns-a", "docker.io/library/alpine:3.20")
        .expect("a");
    let got_b = st
        .images()
        .get("ns-b", "docker.io/library/alpine:3.20")
        .expect("b");
    assert_eq!(got_a.target.digest, sha256(b"a"));
    assert_eq!(got_b.target.digest, sha256(b"b"));

    st.images()
        .delete(&a, "docker.io/library/alpine:3.20")
        .expect("delete in a");
    assert_eq!(
        st.images()
            .get("ns-a", "docker.io/library/alpine:3.20")
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        st.images()
            .get("ns-b", "docker.io/library/alpine:3.20")
            .expect("b"),
        got_b
    );

    // Same lease id, same container id, same ingest ref: independent too.
    st.leases()
        .create("ns-a", "l", labels(&[("x", "a")]))
        .expect("lease a");
    st.leases()
        .create("ns-b", "l", labels(&[("x", "b")]))
        .expect("lease b");
    assert_eq!(
        st.leases().get("ns-a", "l").expect("a").labels,
        labels(&[("x", "a")])
    );
    st.containers().create(&a, container("c")).expect("c in a");
    st.containers().create(&b, container("c")).expect("c in b");
    st.containers().delete(&a, "c").expect("delete c in a");
    assert!(st.containers().get("ns-b", "c").is_ok());

    let mut wa = st
        .content()
        .writer(&a, "ref", WriterOptions::default())
        .expect("writer a");
    let mut wb = st
        .content()
        .writer(&b, "ref", WriterOptions::default())
        .expect("same ref in b");
    wa.write_all(b"aaaa").expect("write");
    wb.write_all(b"bb").expect("write");
    assert_eq!(wa.status().offset, 4);
    assert_eq!(wb.status().offset, 2);
}
