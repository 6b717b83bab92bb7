//! Property test: random sequences of ingest, commit, abort, truncate, delete and reopen
//! against a model of what the content store must hold.
//!
//! The model keeps, per ref, the bytes of its ingest, and per digest the committed bytes.
//! After every step the store's ingests (offsets) and blobs (digests and bytes) must equal the
//! model's. Runs a fixed number of cases (`PROPTEST_CASES` overrides it).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use proptest::prelude::*;
use strata_store::content::WriterOptions;
use strata_store::{Digest, ErrorKind};

use crate::support::{TestStore, scope, sha256};

const NS: &str = "model";
const REFS: [&str; 3] = ["ref-a", "ref-b", "ref-c"];

#[derive(Debug, Clone)]
enum Op {
    Write { r: usize, data: Vec<u8> },
    Commit { r: usize, good_digest: bool },
    Abort { r: usize },
    Truncate { r: usize },
    Delete { nth: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, prop::collection::vec(0u8..4, 0..64)).prop_map(|(r, data)| Op::Write { r, data }),
        3 => (0..3usize, prop::bool::weighted(0.8)).prop_map(|(r, good_digest)| Op::Commit { r, good_digest }),
        1 => (0..3usize).prop_map(|r| Op::Abort { r }),
        1 => (0..3usize).prop_map(|r| Op::Truncate { r }),
        1 => (0..4usize).prop_map(|nth| Op::Delete { nth }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    ingests: BTreeMap<usize, Vec<u8>>,
    blobs: BTreeMap<Digest, Vec<u8>>,
}

fn kind<T>(r: strata_store::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

fn apply(t: TestStore, model: &mut Model, op: &Op) -> TestStore {
    let s = scope(NS);
    let content = t.store.content();
    match op {
        Op::Write { r, data } => {
            let mut w = content
                .writer(&s, REFS[*r], WriterOptions::default())
                .expect("writer");
            w.write_all(data).expect("write");
            model.ingests.entry(*r).or_default().extend_from_slice(data);
        }
        Op::Commit { r, good_digest } => {
            let bytes = model.ingests.get(r).cloned().unwrap_or_default();
            let right = sha256(&bytes);
            let expected = if *good_digest {
                right.clone()
            } else {
                sha256(b"never written")
            };
            let w = content
                .writer(&s, REFS[*r], WriterOptions::default())
                .expect("writer");
            let res = w.commit(0, Some(&expected), BTreeMap::new());
            if !*good_digest {
                assert_eq!(kind(res), Some(ErrorKind::FailedPrecondition));
                // The ingest is kept for a retry (and exists now even if it did not before).
                model.ingests.entry(*r).or_default();
            } else if model.blobs.contains_key(&right) {
                assert_eq!(kind(res), Some(ErrorKind::AlreadyExists));
                model.ingests.remove(r);
            } else {
                assert_eq!(res.expect("commit"), right);
                model.ingests.remove(r);
                model.blobs.insert(right, bytes);
            }
        }
        Op::Abort { r } => {
            let res = content.abort(&s, REFS[*r]);
            if model.ingests.remove(r).is_some() {
                res.expect("abort");
            } else {
                assert_eq!(kind(res), Some(ErrorKind::NotFound));
            }
        }
        Op::Truncate { r } => {
            let mut w = content
                .writer(&s, REFS[*r], WriterOptions::default())
                .expect("writer");
            w.truncate(0).expect("truncate");
            model.ingests.insert(*r, Vec::new());
        }
        Op::Delete { nth } => {
            if let Some(d) = model.blobs.keys().nth(*nth).cloned() {
                content.delete(&s, &d).expect("delete");
                model.blobs.remove(&d);
            }
        }
        Op::Reopen => return t.reopen(),
    }
    t
}

fn check(t: &TestStore, model: &Model) {
    let content = t.store.content();
    let statuses: BTreeMap<String, u64> = content
        .list_statuses::<&str>(NS, &[])
        .expect("statuses")
        .into_iter()
        .map(|st| (st.reference, st.offset))
        .collect();
    let want: BTreeMap<String, u64> = model
        .ingests
        .iter()
        .map(|(r, b)| (REFS[*r].to_owned(), b.len() as u64))
        .collect();
    assert_eq!(statuses, want, "ingests");
    let blobs: Vec<Digest> = content
        .list::<&str>(NS, &[])
        .expect("list")
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(
        blobs,
        model.blobs.keys().cloned().collect::<Vec<_>>(),
        "blobs"
    );
    for (d, bytes) in &model.blobs {
        let mut got = Vec::new();
        content
            .reader(NS, d)
            .expect("reader")
            .read_to_end(&mut got)
            .expect("read");
        assert_eq!(&got, bytes, "bytes of {d}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn content_store_matches_model(ops in prop::collection::vec(op(), 1..30)) {
        let mut t = TestStore::new();
        let mut model = Model::default();
        for op in &ops {
            t = apply(t, &mut model, op);
            check(&t, &model);
        }
    }
}
