//! Image store conformance (reference section 10): TestImagesList and
//! TestImagesCreateUpdateDelete, plus update/delete errors, timestamps and filters.

use std::collections::{BTreeMap, BTreeSet};

use strata_store::images::{Descriptor, Image};
use strata_store::{Digest, ErrorKind, Timestamp};

use crate::support::{TestStore, labels, scope, sha256};

const NS: &str = "images";

fn digest_of(s: &str) -> Digest {
    sha256(s.as_bytes())
}

fn names(images: &[Image]) -> BTreeSet<String> {
    images.iter().map(|i| i.name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn images_list() {
    let ts = TestStore::new();
    let s = scope(NS);
    let mut testset = BTreeMap::new();
    for i in 0..4 {
        let id = format!("image-{i}");
        // One image with another media type so ByMediaType selects a proper subset.
        let media_type = if i == 3 {
            "text/plain"
        } else {
            "application/vnd.containerd.test"
        };
        let mut img = Image::new(
            id.clone(),
            Descriptor {
                media_type: media_type.to_owned(),
                digest: digest_of(&id),
                size: 10,
                annotations: labels(&[("foo", "bar")]),
            },
        );
        img.labels = labels(&[
            ("namelabel", &id),
            ("even", &(i % 2 == 0).to_string()),
            ("odd", &(i % 2 != 0).to_string()),
        ]);
        let pre = Timestamp::now();
        let created = ts.store.images().create(&s, img.clone()).expect("create");
        assert!(created.created_at >= pre, "created_at set at creation");
        assert_eq!(
            created.created_at, created.updated_at,
            "equal timestamps on create"
        );
        img.created_at = created.created_at;
        img.updated_at = created.updated_at;
        assert_eq!(created, img);
        testset.insert(id, img);
    }

    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "FullSet",
            &[],
            &["image-0", "image-1", "image-2", "image-3"],
        ),
        (
            "FullSetFiltered",
            &["labels.even==true", "labels.odd==true"],
            &["image-0", "image-1", "image-2", "image-3"],
        ),
        ("Even", &["labels.even==true"], &["image-0", "image-2"]),
        ("Odd", &["labels.odd==true"], &["image-1", "image-3"]),
        ("ByName", &["name==image-0"], &["image-0"]),
        (
            "ByNameLabelEven",
            &["labels.namelabel==image-0,labels.even==true"],
            &["image-0"],
        ),
        (
            "ByMediaType",
            &["target.mediatype~=application/vnd.*"],
            &["image-0", "image-1", "image-2"],
        ),
    ];
    for (name, filters, expected) in cases {
        let results = ts.store.images().list(NS, filters).expect("list");
        assert!(!results.is_empty(), "{name}: all cases return something");
        assert_eq!(names(&results), set(expected), "case {name}");
        for r in &results {
            assert_eq!(
                r, &testset[&r.name],
                "{name}: listed image equals created one"
            );
        }
    }
    // More filter fields.
    let by_digest = format!("target.digest=={}", digest_of("image-2"));
    assert_eq!(
        names(&ts.store.images().list(NS, &[by_digest]).expect("list")),
        set(&["image-2"])
    );
    assert_eq!(
        names(
            &ts.store
                .images()
                .list(NS, &["annotations.foo==bar"])
                .expect("list")
        )
        .len(),
        4
    );
    let err = ts
        .store
        .images()
        .list(NS, &["name==image-0,"])
        .expect_err("bad filter");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // Delete everything; a second delete is NotFound.
    for id in testset.keys() {
        ts.store.images().delete(&s, id).expect("delete");
        let err = ts.store.images().delete(&s, id).expect_err("second delete");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    assert!(
        ts.store
            .images()
            .list::<&str>(NS, &[])
            .expect("list")
            .is_empty()
    );
}

fn base(name: &str) -> Image {
    let mut img = Image::new(
        name,
        Descriptor {
            media_type: "application/vnd.oci.blab".to_owned(),
            digest: digest_of(&format!("{name}-10")),
            size: 10,
            annotations: labels(&[("foo", "bar"), ("baz", "boo")]),
        },
    );
    img.labels = labels(&[("foo", "bar"), ("baz", "boo")]);
    img
}

/// An update input; the target digest follows the target size, as in containerd's test.
fn input(
    name: &str,
    lbls: &[(&str, &str)],
    media_type: &str,
    size: u64,
    annotations: &[(&str, &str)],
) -> Image {
    let mut img = Image::new(
        name,
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest_of(&format!("{name}-{size}")),
            size,
            annotations: labels(annotations),
        },
    );
    img.labels = labels(lbls);
    img
}

enum Outcome {
    /// The update succeeds with these labels and this target.
    Updated(BTreeMap<String, String>, Descriptor),
    /// The update fails with this kind and leaves the image as created.
    Fails(ErrorKind),
}

/// Create `base(name)`, update with `input` and `paths`, check the outcome, then delete.
fn create_update_delete(name: &str, update: &Image, paths: &[&str], outcome: Outcome) {
    let ts = TestStore::new();
    let s = scope(NS);
    let original = base(name);
    let pre = Timestamp::now();
    let created = ts
        .store
        .images()
        .create(&s, original.clone())
        .expect("create");
    let post = Timestamp::now();
    assert!(
        pre <= created.created_at && created.created_at <= post,
        "{name}: created_at"
    );
    assert_eq!(
        created.created_at, created.updated_at,
        "{name}: equal on create"
    );
    assert_eq!(created.labels, original.labels, "{name}");
    assert_eq!(created.target, original.target, "{name}");

    let pre = Timestamp::now();
    let result = ts.store.images().update(&s, update, paths);
    let post = Timestamp::now();
    match outcome {
        Outcome::Updated(lbls, target) => {
            let updated = result.unwrap_or_else(|e| panic!("{name}: update failed: {e}"));
            assert_eq!(updated.name, name);
            assert_eq!(updated.labels, lbls, "{name}: labels");
            assert_eq!(updated.target, target, "{name}: target");
            assert_eq!(
                updated.created_at, created.created_at,
                "{name}: created_at kept"
            );
            assert!(
                updated.updated_at > updated.created_at,
                "{name}: updated_at after created_at"
            );
            assert!(
                pre <= updated.updated_at && updated.updated_at <= post,
                "{name}: updated_at"
            );
            assert_eq!(
                ts.store.images().get(NS, name).expect("get"),
                updated,
                "{name}: get"
            );
        }
        Outcome::Fails(kind) => {
            let err = result.expect_err("update must fail");
            assert_eq!(err.kind(), kind, "{name}: {err}");
            assert_eq!(
                ts.store.images().get(NS, name).expect("get"),
                created,
                "{name}: unchanged"
            );
        }
    }
    ts.store.images().delete(&s, name).expect("delete");
    assert_eq!(
        ts.store.images().get(NS, name).expect_err("deleted").kind(),
        ErrorKind::NotFound
    );
}

const BLAB: &str = "application/vnd.oci.blab";

#[test]
fn create_update_delete_touch() {
    let name = "Touch";
    let update = input(
        name,
        &[("foo", "bar"), ("baz", "boo")],
        BLAB,
        10,
        &[("foo", "bar")],
    );
    let expected_target = update.target.clone();
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Updated(labels(&[("foo", "bar"), ("baz", "boo")]), expected_target),
    );
}

#[test]
fn create_no_target() {
    let ts = TestStore::new();
    let s = scope(NS);
    // The closest to an empty descriptor: no media type and size zero.
    let mut img = Image::new(
        "NoTarget",
        Descriptor {
            media_type: String::new(),
            digest: digest_of("NoTarget-0"),
            size: 0,
            annotations: BTreeMap::new(),
        },
    );
    img.labels = labels(&[("foo", "bar"), ("baz", "boo")]);
    let err = ts.store.images().create(&s, img).expect_err("no target");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        ts.store
            .images()
            .get(NS, "NoTarget")
            .expect_err("not created")
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn create_update_delete_replace_labels() {
    let name = "ReplaceLabels";
    let update = input(
        name,
        &[("for", "bar"), ("boo", "boo")],
        BLAB,
        10,
        &[("foo", "bar")],
    );
    let target = update.target.clone();
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Updated(labels(&[("for", "bar"), ("boo", "boo")]), target),
    );
}

#[test]
fn create_update_delete_replace_labels_field_path() {
    let name = "ReplaceLabelsFieldPath";
    let update = input(
        name,
        &[("for", "bar"), ("boo", "boo")],
        "application/vnd.oci.blab+ignored",
        10,
        &[("not", "bar"), ("new", "boo")],
    );
    create_update_delete(
        name,
        &update,
        &["labels"],
        Outcome::Updated(labels(&[("for", "bar"), ("boo", "boo")]), base(name).target),
    );
}

#[test]
fn create_update_delete_replace_labels_annotations_field_path() {
    let name = "ReplaceLabelsAnnotationsFieldPath";
    let update = input(
        name,
        &[("for", "bar"), ("boo", "boo")],
        "application/vnd.oci.blab+ignored",
        10,
        &[("foo", "boo")],
    );
    let mut target = base(name).target;
    target.annotations = labels(&[("foo", "boo")]);
    create_update_delete(
        name,
        &update,
        &["annotations", "labels"],
        Outcome::Updated(labels(&[("for", "bar"), ("boo", "boo")]), target),
    );
}

#[test]
fn create_update_delete_replace_label() {
    let name = "ReplaceLabel";
    let update = input(
        name,
        &[("foo", "baz"), ("baz", "bunk")],
        "application/vnd.oci.blab+ignored",
        10,
        &[("foo", "bar")],
    );
    create_update_delete(
        name,
        &update,
        &["labels.foo"],
        Outcome::Updated(labels(&[("foo", "baz"), ("baz", "boo")]), base(name).target),
    );
}

#[test]
fn create_update_delete_replace_annotation() {
    let name = "ReplaceAnnotation";
    let update = input(
        name,
        &[("foo", "baz"), ("baz", "bunk")],
        "application/vnd.oci.blab+ignored",
        10,
        &[("foo", "baz"), ("baz", "bunk")],
    );
    let mut target = base(name).target;
    target.annotations = labels(&[("foo", "baz"), ("baz", "boo")]);
    create_update_delete(
        name,
        &update,
        &["annotations.foo"],
        Outcome::Updated(labels(&[("foo", "bar"), ("baz", "boo")]), target),
    );
}

#[test]
fn create_update_delete_replace_target_type_and_annotations() {
    let name = "ReplaceTargetTypeAndAnnotations";
    let update = input(
        name,
        &[],
        "application/vnd.oci.blab+replaced",
        10,
        &[("fox", "dog")],
    );
    let target = update.target.clone();
    create_update_delete(
        name,
        &update,
        &["target"],
        Outcome::Updated(labels(&[("foo", "bar"), ("baz", "boo")]), target),
    );
}

#[test]
fn create_update_delete_replace_target_fieldpath() {
    let name = "ReplaceTargetFieldpath";
    let update = input(
        name,
        &[],
        "application/vnd.oci.blab+replaced",
        20,
        &[("fox", "dog")],
    );
    let target = update.target.clone();
    assert_ne!(
        target.digest,
        base(name).target.digest,
        "the target digest changes with the size"
    );
    create_update_delete(
        name,
        &update,
        &["target"],
        Outcome::Updated(labels(&[("foo", "bar"), ("baz", "boo")]), target),
    );
}

#[test]
fn create_update_delete_replace_target() {
    // No field paths: labels and target are both replaced (the input has no labels).
    let name = "ReplaceTarget";
    let update = input(
        name,
        &[],
        "application/vnd.oci.blab+replaced",
        20,
        &[("fox", "dog")],
    );
    let target = update.target.clone();
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Updated(BTreeMap::new(), target),
    );
}

#[test]
fn create_update_delete_empty_size() {
    let name = "EmptySize";
    let update = input(
        name,
        &[("foo", "bar"), ("baz", "boo")],
        BLAB,
        0,
        &[("foo", "bar")],
    );
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Fails(ErrorKind::InvalidArgument),
    );
}

#[test]
fn create_empty_size_on_create() {
    let ts = TestStore::new();
    let mut img = input(
        "EmptySizeOnCreate",
        &[("foo", "bar")],
        BLAB,
        0,
        &[("foo", "bar")],
    );
    img.target.size = 0;
    let err = ts
        .store
        .images()
        .create(&scope(NS), img)
        .expect_err("size 0");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let img = input("EmptyMediaTypeOnCreate", &[("foo", "bar")], "", 10, &[]);
    let err = ts
        .store
        .images()
        .create(&scope(NS), img)
        .expect_err("no media type");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        ts.store
            .images()
            .list::<&str>(NS, &[])
            .expect("list")
            .is_empty()
    );
}

#[test]
fn create_update_delete_empty_media_type() {
    let name = "EmptyMediaType";
    let update = input(name, &[("foo", "bar"), ("baz", "boo")], "", 10, &[]);
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Fails(ErrorKind::InvalidArgument),
    );
}

#[test]
fn create_update_delete_try_update_name_fail() {
    // The name selects the record: updating under another name finds nothing.
    let name = "TryUpdateNameFail";
    let update = input(
        "test should fail",
        &[("foo", "bar"), ("baz", "boo")],
        BLAB,
        10,
        &[("foo", "bar")],
    );
    create_update_delete(name, &update, &[], Outcome::Fails(ErrorKind::NotFound));
}

#[test]
fn update_unknown_field_path_is_invalid() {
    let name = "UnknownFieldPath";
    for path in [
        "name",
        "createdat",
        "target.size",
        "labelsx",
        "annotation.foo",
    ] {
        let update = input(name, &[("foo", "x")], BLAB, 10, &[]);
        create_update_delete(
            name,
            &update,
            &[path],
            Outcome::Fails(ErrorKind::InvalidArgument),
        );
    }
    // An unknown path among valid ones fails the whole update.
    let update = input(name, &[("foo", "x")], BLAB, 10, &[]);
    create_update_delete(
        name,
        &update,
        &["labels", "bogus"],
        Outcome::Fails(ErrorKind::InvalidArgument),
    );
}

#[test]
fn update_with_oversized_label_is_invalid() {
    let name = "OversizedLabel";
    let big = "v".repeat(4096);
    let update = input(name, &[("k", &big)], BLAB, 10, &[]);
    create_update_delete(
        name,
        &update,
        &["labels.k"],
        Outcome::Fails(ErrorKind::InvalidArgument),
    );
    create_update_delete(
        name,
        &update,
        &[],
        Outcome::Fails(ErrorKind::InvalidArgument),
    );
}

#[test]
fn create_duplicate_and_missing() {
    let ts = TestStore::new();
    let s = scope(NS);
    let created = ts.store.images().create(&s, base("dup")).expect("create");
    let mut again = base("dup");
    again.labels = labels(&[("other", "labels")]);
    let err = ts.store.images().create(&s, again).expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        ts.store.images().get(NS, "dup").expect("get"),
        created,
        "duplicate changed nothing"
    );

    let err = ts
        .store
        .images()
        .update(&s, &base("missing"), &[])
        .expect_err("update missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        ts.store
            .images()
            .get(NS, "missing")
            .expect_err("still missing")
            .kind(),
        ErrorKind::NotFound
    );
    let err = ts
        .store
        .images()
        .delete(&s, "missing")
        .expect_err("delete missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let err = ts
        .store
        .images()
        .create(&s, base(""))
        .expect_err("empty name");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let mut big = base("big-label");
    big.labels = labels(&[("k", &"v".repeat(4096))]);
    let err = ts
        .store
        .images()
        .create(&s, big)
        .expect_err("oversized label");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    ts.store.images().delete(&s, "dup").expect("delete");
    let err = ts
        .store
        .images()
        .delete(&s, "dup")
        .expect_err("delete twice");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn created_at_kept_across_updates() {
    let ts = TestStore::new();
    let s = scope(NS);
    let created = ts.store.images().create(&s, base("times")).expect("create");
    let mut last = created.updated_at;
    for i in 0..3 {
        let mut img = created.clone();
        img.labels = labels(&[("round", &i.to_string())]);
        let updated = ts
            .store
            .images()
            .update(&s, &img, &["labels"])
            .expect("update");
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at > last, "updated_at moves forward");
        last = updated.updated_at;
    }
    // Timestamps in the input are ignored.
    let mut img = created.clone();
    img.created_at = Timestamp(1);
    img.updated_at = Timestamp(2);
    let updated = ts.store.images().update(&s, &img, &[]).expect("update");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at > last);
}

#[test]
fn list_filters_name_regex_and_quoted_label() {
    let ts = TestStore::new();
    let s = scope(NS);
    let mk = |name: &str, lbls: &[(&str, &str)]| {
        let mut img = base(name);
        img.labels = labels(lbls);
        ts.store.images().create(&s, img).expect("create");
    };
    mk(
        "registry.example.com/app:1",
        &[("containerd.io/gc.root", "yes")],
    );
    mk("registry.example.com/app:2", &[("k", "v")]);
    mk(
        "docker.io/library/registry:2",
        &[("k", "v"), ("containerd.io/gc.root", "no")],
    );
    mk("localhost/reg", &[("k", "other")]);

    let list = |filters: &[&str]| names(&ts.store.images().list(NS, filters).expect("list"));
    assert_eq!(
        list(&["name~=^reg"]),
        set(&["registry.example.com/app:1", "registry.example.com/app:2"])
    );
    assert_eq!(
        list(&["name~=reg"]).len(),
        4,
        "regex is unanchored without ^"
    );
    assert_eq!(
        list(&["labels.\"k\"==v"]),
        set(&["registry.example.com/app:2", "docker.io/library/registry:2"])
    );
    assert_eq!(list(&["labels.k==v"]), list(&["labels.\"k\"==v"]));
    assert_eq!(
        list(&["labels.\"containerd.io/gc.root\""]),
        set(&["registry.example.com/app:1", "docker.io/library/registry:2"])
    );
    assert_eq!(
        list(&["labels.\"containerd.io/gc.root\"==no"]),
        set(&["docker.io/library/registry:2"])
    );
    assert_eq!(
        list(&["name~=^reg,labels.k==v"]),
        set(&["registry.example.com/app:2"])
    );
    assert_eq!(
        list(&["name~=^localhost", "labels.\"k\"==v"]),
        set(&[
            "localhost/reg",
            "registry.example.com/app:2",
            "docker.io/library/registry:2"
        ])
    );
    assert_eq!(list(&["name==\"localhost/reg\""]), set(&["localhost/reg"]));
    assert_eq!(
        list(&["labels.k!=v"]).len(),
        2,
        "!= also matches images without the label"
    );
}
