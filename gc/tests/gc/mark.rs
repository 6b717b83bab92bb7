//! The mark phase against real stores: containerd's gc_test.go cases, exact sets.

use std::collections::{BTreeSet, HashMap, HashSet};

use strata_gc::node::Typed;
use strata_gc::{Kind, Marked, Node, mark, tricolor};
use strata_store::Timestamp;
use strata_store::content::WriterOptions;

use crate::support::{
    Fx, ago, c, ct, digest_of, fx, g, i, l, later, metadata_collector_store, s, x,
};

impl Fx {
    fn mark(&self) -> Marked {
        mark(&self.store, Timestamp::now()).unwrap()
    }
}

fn set(nodes: impl IntoIterator<Item = Node>) -> BTreeSet<Node> {
    nodes.into_iter().collect()
}

fn reachable(m: &Marked) -> BTreeSet<Node> {
    m.reachable().into_iter().collect()
}

/// Asserts exact kept (reachable) and removed (unreachable) sets, and that they partition
/// `all` plus containers.
fn check(m: &Marked, kept: BTreeSet<Node>, removed: BTreeSet<Node>) {
    assert_eq!(reachable(m), kept, "reachable");
    assert_eq!(set(m.unreachable()), removed, "unreachable");
    let mut u = m.unreachable();
    u.dedup();
    assert_eq!(u, m.unreachable(), "sorted, no duplicates");
    let everything: BTreeSet<Node> = m.all().into_iter().collect();
    let expect: BTreeSet<Node> = kept
        .iter()
        .filter(|n| n.kind != Kind::Container)
        .chain(removed.iter())
        .cloned()
        .collect();
    assert_eq!(everything, expect, "all");
}

#[test]
fn tricolor_graph() {
    let edges: HashMap<char, Vec<char>> = [
        ('A', vec!['B']),
        ('B', vec!['A']),
        ('C', vec!['D', 'F', 'B']),
        ('E', vec!['F', 'G']),
        ('F', vec!['H']),
    ]
    .into_iter()
    .collect();
    let roots = vec![Typed::normal('A'), Typed::normal('C')];
    let got = tricolor(roots, |n: &Typed<char>| {
        Ok::<_, ()>(
            edges
                .get(&n.node)
                .map(|v| v.iter().copied().map(Typed::normal).collect())
                .unwrap_or_default(),
        )
    })
    .unwrap();
    let want: HashSet<char> = "ABCDFH".chars().collect();
    assert_eq!(got, want);
}

#[test]
fn tricolor_expands_flat_and_normal_separately_and_masks_flat() {
    // 1 -> 2 only when normal; 1 reached flat first, then normal via 3.
    let mut expanded = Vec::new();
    let roots = vec![Typed::normal(3), Typed::flat(1)];
    let got = tricolor(roots, |n: &Typed<u8>| {
        expanded.push(*n);
        Ok::<_, ()>(match (n.node, n.flat) {
            (1, false) => vec![Typed::normal(2)],
            (3, _) => vec![Typed::normal(1)],
            _ => vec![],
        })
    })
    .unwrap();
    assert_eq!(got, [1, 2, 3].into_iter().collect());
    assert_eq!(expanded.iter().filter(|t| t.node == 1).count(), 2);
}

#[test]
fn empty_store_marks_nothing() {
    let f = fx();
    let m = f.mark();
    check(&m, set([]), set([]));
    assert!(m.started_at <= Timestamp::now());
}

#[test]
fn roots() {
    let f = fx();
    // ns1: gc.root content, plain content, images with and without expiry.
    let root = f.blob(
        "ns1",
        "root",
        &[("containerd.io/gc.root", "2026-01-01T00:00:00Z")],
    );
    let rootp = f.blob("ns1", "rootprefix", &[("containerd.io/gc.root.x", "1")]);
    let [plain, t1, t2, t3, t4] = f.blobs("ns1", ["plain", "t1", "t2", "t3", "t4"]);
    f.image("ns1", None, "img-live", &t1, &[]);
    f.image(
        "ns1",
        None,
        "img-future",
        &t2,
        &[("containerd.io/gc.expire", &later(1))],
    );
    f.image(
        "ns1",
        None,
        "img-expired",
        &t3,
        &[
            ("containerd.io/gc.expire", &ago(1)),
            ("containerd.io/gc.root", "x"),
        ],
    );
    f.image(
        "ns1",
        None,
        "img-badexpire",
        &t4,
        &[("containerd.io/gc.expire", "soon")],
    );
    // ns2: snapshots with and without gc.root; containers.
    f.committed(
        "ns2",
        None,
        "sroot",
        None,
        &[("containerd.io/gc.root", "x")],
    );
    f.committed("ns2", None, "splain", None, &[]);
    f.active("ns2", None, "cactive", None, &[]);
    f.container("ns2", "c1", Some("cactive"), &[]);
    f.container("ns2", "c2", None, &[]);
    // ns3: ingests: leased (nil expiry once the lease is gone), unleased (expires in 24 h).
    f.lease("ns3", "tmp", &[]);
    f.ingest("ns3", Some("tmp"), "nil", "");
    f.store.leases().delete("ns3", "tmp").unwrap();
    f.ingest("ns3", None, "future", "");
    // ns4: leases live, expired, unparseable, flat.
    let [lc, lcref] = f.blobs("ns4", ["leased", "leasedref"]);
    let fc = f.blob(
        "ns4",
        "flatc",
        &[("containerd.io/gc.ref.content", &lcref.to_string())],
    );
    let ec = f.blob("ns4", "expiredc", &[]);
    f.lease("ns4", "live", &[]);
    f.lease("ns4", "expired", &[("containerd.io/gc.expire", &ago(1))]);
    f.lease("ns4", "bad", &[("containerd.io/gc.expire", "never")]);
    f.lease("ns4", "flat", &[("containerd.io/gc.flat", "1")]);
    f.add("ns4", "live", "content", &x(&lc));
    f.add("ns4", "flat", "content", &x(&fc));
    f.add("ns4", "expired", "content", &x(&ec));
    f.add("ns4", "live", "content", &x(&digest_of("missing")));
    f.committed("ns4", Some("live"), "ls", None, &[]);
    f.ingest("ns4", Some("live"), "ling", "");
    f.image(
        "ns4",
        Some("live"),
        "limg",
        &lc,
        &[("containerd.io/gc.expire", &ago(1))],
    );

    let m = f.mark();
    check(
        &m,
        set([
            c("ns1", &root),
            c("ns1", &rootp),
            c("ns1", &t1),
            c("ns1", &t2),
            c("ns1", &t4),
            i("ns1", "img-live"),
            i("ns1", "img-future"),
            i("ns1", "img-badexpire"),
            s("ns2", "sroot"),
            s("ns2", "cactive"),
            ct("ns2", "c1"),
            ct("ns2", "c2"),
            g("ns3", "future"),
            l("ns4", "live"),
            l("ns4", "bad"),
            l("ns4", "flat"),
            c("ns4", &lc),
            c("ns4", &fc),
            s("ns4", "ls"),
            g("ns4", "ling"),
            i("ns4", "limg"),
        ]),
        set([
            c("ns1", &plain),
            c("ns1", &t3),
            i("ns1", "img-expired"),
            s("ns2", "splain"),
            g("ns3", "nil"),
            l("ns4", "expired"),
            c("ns4", &ec),
            c("ns4", &lcref),
        ]),
    );

    // 48 h later the unleased ingest has expired too.
    let later = mark(
        &f.store,
        Timestamp::now().plus(std::time::Duration::from_secs(48 * 3600)),
    )
    .unwrap();
    assert!(!later.is_reachable(&g("ns3", "future")));
    assert!(later.unreachable().contains(&g("ns3", "future")));
}

#[test]
fn refs() {
    let f = fx();
    let ns = "refs";
    let [bad, a, b, dot, slash] = f.blobs(ns, ["bad", "a", "b", "dot", "slash"]);
    let root = f.blob(
        ns,
        "root",
        &[
            ("containerd.io/gc.root", "1"),
            ("containerd.io/gc.ref.contentbad", &x(&bad)),
            ("containerd.io/gc.ref.content", &x(&a)),
            ("containerd.io/gc.ref.content.l.0", &x(&dot)),
            ("containerd.io/gc.ref.content/any/thing", &x(&slash)),
            ("containerd.io/gc.ref.content.missing", "sha256:0000"),
            ("containerd.io/gc.ref.snapshot.native", "top"),
            ("containerd.io/gc.ref.snapshot.overlay/x", "top"),
            ("containerd.io/gc.ref.image", "refimg"),
        ],
    );
    // a -> b (chained content refs).
    let _ = b;
    let a2 = f.blob(ns, "a2", &[("containerd.io/gc.ref.content.0", &x(&b))]);
    let _ = a2;
    // Snapshot chain base <- mid <- top; top refs content `snapc` and snapshot `other`.
    let snapc = f.blob(ns, "snapc", &[]);
    f.committed(ns, None, "base", None, &[]);
    f.committed(ns, None, "mid", Some("base"), &[]);
    f.committed(
        ns,
        None,
        "top",
        Some("mid"),
        &[
            ("containerd.io/gc.ref.content.x", &x(&snapc)),
            ("containerd.io/gc.ref.snapshot.native/y", "other"),
        ],
    );
    f.committed(ns, None, "other", None, &[]);
    f.committed(ns, None, "orphan", Some("mid"), &[]);
    // An expiring image kept only by the gc.ref.image label; its target and refs followed.
    let [it, ir] = f.blobs(ns, ["imgtarget", "imgref"]);
    f.image(
        ns,
        None,
        "refimg",
        &it,
        &[
            ("containerd.io/gc.expire", &ago(1)),
            ("containerd.io/gc.ref.content.c", &x(&ir)),
        ],
    );
    // Ingest expected digest keeps the content.
    let exp = digest_of("expected");
    let expecting = WriterOptions {
        expected: Some(exp.clone()),
        ..WriterOptions::default()
    };
    f.ingest_with(ns, None, "ing", expecting, "");
    assert_eq!(f.blob(ns, "expected", &[]), exp);
    // Container: snapshot + label refs.
    let cc = f.blob(ns, "contref", &[]);
    f.active(ns, None, "crw", Some("base"), &[]);
    f.container(
        ns,
        "c",
        Some("crw"),
        &[("containerd.io/gc.ref.content/1", &x(&cc))],
    );

    let m = f.mark();
    check(
        &m,
        set([
            c(ns, &root),
            c(ns, &a),
            c(ns, &dot),
            c(ns, &slash),
            s(ns, "top"),
            s(ns, "mid"),
            s(ns, "base"),
            s(ns, "other"),
            c(ns, &snapc),
            i(ns, "refimg"),
            c(ns, &it),
            c(ns, &ir),
            g(ns, "ing"),
            c(ns, &exp),
            s(ns, "crw"),
            ct(ns, "c"),
            c(ns, &cc),
        ]),
        set([c(ns, &bad), c(ns, &b), c(ns, &a2), s(ns, "orphan")]),
    );
}

#[test]
fn back_refs() {
    let f = fx();
    let ns = "brefs";
    let parent = f.blob(ns, "parent", &[("containerd.io/gc.root", "1")]);
    let dead = f.blob(ns, "dead", &[]);
    let by_content = f.blob(ns, "byc", &[("containerd.io/gc.bref.content", &x(&parent))]);
    let by_dead = f.blob(
        ns,
        "bydead",
        &[("containerd.io/gc.bref.content.x", &x(&dead))],
    );
    let by_cont = f.blob(ns, "bycont", &[("containerd.io/gc.bref.container/a", "c1")]);
    let by_nocont = f.blob(
        ns,
        "bynocont",
        &[("containerd.io/gc.bref.container", "nope")],
    );
    let t = f.blob(ns, "t", &[]);
    f.image(ns, None, "live", &t, &[]);
    f.image(
        ns,
        None,
        "gone",
        &t,
        &[("containerd.io/gc.expire", &ago(1))],
    );
    let by_img = f.blob(ns, "byimg", &[("containerd.io/gc.bref.image", "live")]);
    let by_gone = f.blob(ns, "bygone", &[("containerd.io/gc.bref.image.x", "gone")]);
    f.committed(ns, None, "sroot", None, &[("containerd.io/gc.root", "1")]);
    f.committed(ns, None, "splain", None, &[]);
    let by_snap = f.blob(
        ns,
        "bysnap",
        &[("containerd.io/gc.bref.snapshot.native", "sroot")],
    );
    let by_psnap = f.blob(
        ns,
        "bypsnap",
        &[("containerd.io/gc.bref.snapshot.native/z", "splain")],
    );
    // A snapshot back-referencing a container, an expired image back-referencing content.
    f.committed(
        ns,
        None,
        "sbycont",
        None,
        &[("containerd.io/gc.bref.container", "c1")],
    );
    f.image(
        ns,
        None,
        "expired-bref",
        &t,
        &[
            ("containerd.io/gc.expire", &ago(1)),
            ("containerd.io/gc.bref.content", &x(&parent)),
        ],
    );
    f.container(ns, "c1", None, &[]);

    let m = f.mark();
    check(
        &m,
        set([
            c(ns, &parent),
            c(ns, &by_content),
            c(ns, &by_cont),
            c(ns, &t),
            i(ns, "live"),
            c(ns, &by_img),
            s(ns, "sroot"),
            c(ns, &by_snap),
            s(ns, "sbycont"),
            i(ns, "expired-bref"),
            ct(ns, "c1"),
        ]),
        set([
            c(ns, &dead),
            c(ns, &by_dead),
            c(ns, &by_nocont),
            i(ns, "gone"),
            c(ns, &by_gone),
            s(ns, "splain"),
            c(ns, &by_psnap),
        ]),
    );
}

#[test]
fn conditional_refs() {
    let f = fx();
    let ns = "cond";
    f.committed(
        ns,
        None,
        "recent",
        None,
        &[("containerd.io/gc.cond.value-usedat", &ago(1))],
    );
    f.committed(
        ns,
        None,
        "stale",
        None,
        &[("containerd.io/gc.cond.value-usedat", &ago(3))],
    );
    f.committed(
        ns,
        None,
        "old",
        None,
        &[("containerd.io/gc.cond.value-usedat", &ago(3))],
    );
    f.committed(ns, None, "nousedat", None, &[]);
    f.committed(
        ns,
        None,
        "viaimage",
        None,
        &[("containerd.io/gc.cond.value-usedat", &ago(1))],
    );
    let holder = f.blob(
        ns,
        "holder",
        &[
            ("containerd.io/gc.root", "1"),
            ("containerd.io/gc.cond.snapshot.native", "usedat<2h|recent"),
            ("containerd.io/gc.cond.snapshot.native/a", "usedat<2h|stale"),
            (
                "containerd.io/gc.cond.snapshot/native/b",
                "usedat<30m,usedat>2h30m|old",
            ),
            (
                "containerd.io/gc.cond.snapshot.native/c",
                "usedat<2h|nousedat",
            ),
        ],
    );
    let unrooted = f.blob(
        ns,
        "unrooted",
        &[(
            "containerd.io/gc.cond.snapshot.native",
            "usedat<2h|viaimage",
        )],
    );
    let t = f.blob(ns, "t", &[]);
    f.image(
        ns,
        None,
        "img",
        &t,
        &[(
            "containerd.io/gc.cond.snapshot.native",
            "usedat<120m|viaimage",
        )],
    );
    let m = f.mark();
    check(
        &m,
        set([
            c(ns, &holder),
            s(ns, "recent"),
            s(ns, "old"),
            s(ns, "viaimage"),
            c(ns, &t),
            i(ns, "img"),
        ]),
        set([s(ns, "stale"), s(ns, "nousedat"), c(ns, &unrooted)]),
    );
}

#[test]
fn flat_lease() {
    let f = fx();
    let ns = "flat";
    f.lease(ns, "fl", &[("containerd.io/gc.flat", "true")]);
    let r9 = f.blob(ns, "9", &[]);
    let b8 = f.blob_leased(
        ns,
        Some("fl"),
        "8",
        &[("containerd.io/gc.ref.content.0", &x(&r9))],
    );
    let [r10, r11] = f.blobs(ns, ["10", "11"]);
    f.committed(
        ns,
        None,
        "s7",
        None,
        &[("containerd.io/gc.ref.content.0", &x(&r10))],
    );
    f.committed(ns, None, "s8", Some("s7"), &[]);
    f.committed(
        ns,
        Some("fl"),
        "s9",
        Some("s8"),
        &[("containerd.io/gc.ref.content", &x(&r11))],
    );
    // Flat image: target only, not its label refs.
    let it = f.blob(ns, "it", &[("containerd.io/gc.ref.content", &x(&r9))]);
    let ir = f.blob(ns, "ir", &[]);
    f.image(
        ns,
        Some("fl"),
        "fimg",
        &it,
        &[
            ("containerd.io/gc.expire", &ago(1)),
            ("containerd.io/gc.ref.content", &x(&ir)),
        ],
    );
    let m = f.mark();
    check(
        &m,
        set([
            l(ns, "fl"),
            c(ns, &b8),
            s(ns, "s9"),
            s(ns, "s8"),
            s(ns, "s7"),
            i(ns, "fimg"),
            c(ns, &it),
        ]),
        set([c(ns, &r9), c(ns, &r10), c(ns, &r11), c(ns, &ir)]),
    );

    // Reached normally elsewhere too: then its refs are followed.
    f.container(ns, "c", Some("s8"), &[]);
    let m = f.mark();
    assert!(m.is_reachable(&c(ns, &r10)));
    assert!(!m.is_reachable(&c(ns, &r11)));
}

/// containerd's TestMetadataCollector, as far as strata's APIs go (no plugin resources).
#[test]
fn metadata_collector() {
    let f = fx();
    let ns = "test";
    let [b1, b2, b3, b4, b5, b6, b7, b8, b9, b10] = metadata_collector_store(&f, ns);
    let m = f.mark();
    check(
        &m,
        set([
            c(ns, &b1),
            c(ns, &b2),
            i(ns, "image-1"),
            s(ns, "1"),
            s(ns, "2"),
            s(ns, "3"),
            s(ns, "4"),
            ct(ns, "container-1"),
            l(ns, "lease-1"),
            c(ns, &b5),
            c(ns, &b6),
            s(ns, "6"),
            c(ns, &b7),
            l(ns, "lease-2"),
            c(ns, &b8),
            s(ns, "9"),
            s(ns, "8"),
            s(ns, "7"),
        ]),
        set([c(ns, &b3), c(ns, &b4), s(ns, "5"), c(ns, &b9), c(ns, &b10)]),
    );
}

#[test]
fn namespaces_are_separate() {
    let f = fx();
    let d1 = f.blob("a", "same", &[("containerd.io/gc.root", "1")]);
    let d2 = f.blob("b", "same", &[]);
    assert_eq!(d1, d2);
    f.blob(
        "b",
        "refs",
        &[
            ("containerd.io/gc.root", "1"),
            ("containerd.io/gc.ref.content", "x"),
        ],
    );
    let m = f.mark();
    assert!(m.is_reachable(&c("a", &d1)));
    assert_eq!(m.unreachable(), vec![c("b", &d2)]);
}

#[test]
fn corrupt_record_is_an_error_naming_table_and_key() {
    let f = fx();
    f.blob("ns", "ok", &[("containerd.io/gc.root", "1")]);
    let txn = f.store.db().write().unwrap();
    txn.open_table(strata_store::db::IMAGES)
        .unwrap()
        .insert(("ns", "broken"), [9u8, 1, 2].as_slice())
        .unwrap();
    txn.commit().unwrap();
    let msg = mark(&f.store, Timestamp::now()).unwrap_err().to_string();
    assert!(msg.contains("images") && msg.contains("ns/broken"), "{msg}");
}
