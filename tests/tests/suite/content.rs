//! Content store conformance: containerd's content testsuite (reference section 6, cases 1-14
//! under the "shared" policy), writer semantics (4.3), the namespaced metadata content store
//! (4.4), label limits (4.5) and lease bookkeeping of content (section 3).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use strata_store::content::{Writer, WriterOptions};
use strata_store::leases::Resource;
use strata_store::{Algorithm, Digest, ErrorKind, Scope, Store, Timestamp};

use crate::support::{TestStore, bytes, labels, put_blob, scope, sha256};

const NS: &str = "testsuite";
const GC_ROOT: &str = "containerd.io/gc.root";

fn open(
    store: &Store,
    s: &Scope,
    reference: &str,
    total: u64,
    expected: Option<&Digest>,
) -> Writer {
    let options = WriterOptions {
        expected: expected.cloned(),
        total,
    };
    store
        .content()
        .writer(s, reference, options)
        .unwrap_or_else(|e| panic!("open writer {reference}: {e}"))
}

fn open_err(
    store: &Store,
    s: &Scope,
    reference: &str,
    total: u64,
    expected: Option<&Digest>,
) -> ErrorKind {
    let options = WriterOptions {
        expected: expected.cloned(),
        total,
    };
    match store.content().writer(s, reference, options) {
        Ok(w) => panic!(
            "writer {reference:?} in {s:?} opened (offset {}), expected an error",
            w.status().offset
        ),
        Err(e) => e.kind(),
    }
}

/// Writes `data` in `chunk`-byte writes, as containerd's testsuite copies with small buffers.
fn write_in_chunks(w: &mut Writer, data: &[u8], chunk: usize) {
    for piece in data.chunks(chunk) {
        w.write_all(piece).expect("write");
    }
}

fn read_all(store: &Store, ns: &str, digest: &Digest) -> Vec<u8> {
    let mut r = store.content().reader(ns, digest).expect("reader");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read blob");
    out
}

fn assert_between(what: &str, t: Timestamp, lo: Timestamp, hi: Timestamp) {
    assert!(lo <= t && t <= hi, "{what} {t} not within [{lo}, {hi}]");
}

/// Checks a committed blob: info (size, labels, timestamps in the window) and its bytes.
fn check_content(
    store: &Store,
    ns: &str,
    digest: &Digest,
    data: &[u8],
    lbls: &BTreeMap<String, String>,
    lo: Timestamp,
    hi: Timestamp,
) {
    let info = store.content().info(ns, digest).expect("info");
    assert_eq!(&info.digest, digest);
    assert_eq!(info.size, data.len() as u64, "size of {digest} in {ns}");
    assert_eq!(&info.labels, lbls, "labels of {digest} in {ns}");
    assert_between("created_at", info.created_at, lo, hi);
    assert_between("updated_at", info.updated_at, lo, hi);
    let got = read_all(store, ns, digest);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes of {digest} in {ns} differ");
}

// ---------------------------------------------------------------------------------------------
// Case 1: Writer

#[test]
fn writer() {
    let ts = TestStore::new();
    let s = scope(NS);
    struct Case {
        reference: &'static str,
        data: Vec<u8>,
        with_size: bool,
        with_digest: bool,
        chunk: usize,
    }
    let cases = vec![
        Case {
            reference: "ref-only",
            data: bytes(1, 256),
            with_size: false,
            with_digest: false,
            chunk: 32,
        },
        Case {
            reference: "with-size",
            data: bytes(2, 256),
            with_size: true,
            with_digest: false,
            chunk: 32,
        },
        Case {
            reference: "with-digest",
            data: bytes(3, 256),
            with_size: false,
            with_digest: true,
            chunk: 32,
        },
        Case {
            reference: "with-size-and-digest",
            data: bytes(4, 256),
            with_size: true,
            with_digest: true,
            chunk: 32,
        },
        Case {
            reference: "32mib",
            data: bytes(5, 16 << 21),
            with_size: true,
            with_digest: true,
            // 32-byte writes would be a million syscalls; 1 KiB keeps it small but quick.
            chunk: 1024,
        },
    ];
    let digests: Vec<Digest> = cases.iter().map(|c| sha256(&c.data)).collect();

    // All five writers are open at the same time, on different refs.
    let mut writers: Vec<Writer> = cases
        .iter()
        .zip(&digests)
        .map(|(c, d)| {
            let total = if c.with_size { c.data.len() as u64 } else { 0 };
            let expected = c.with_digest.then_some(d);
            let w = open(&ts.store, &s, c.reference, total, expected);
            assert_eq!(w.reference(), c.reference);
            assert_eq!(w.status().offset, 0);
            assert_eq!(w.status().total, total);
            w
        })
        .collect();
    assert_eq!(
        ts.store
            .content()
            .list_statuses::<&str>(NS, &[])
            .expect("statuses")
            .len(),
        5
    );

    // Copy into all of them concurrently, with small buffers.
    std::thread::scope(|sc| {
        for (w, c) in writers.iter_mut().zip(&cases) {
            sc.spawn(move || write_in_chunks(w, &c.data, c.chunk));
        }
    });

    let root = Timestamp::now().to_rfc3339();
    let lbls = labels(&[(GC_ROOT, &root)]);
    for ((w, c), d) in writers.into_iter().zip(&cases).zip(&digests) {
        assert_eq!(w.status().offset, c.data.len() as u64, "{}", c.reference);
        assert_eq!(&w.digest(), d, "{}", c.reference);
        let pre = Timestamp::now();
        let got = w.commit(0, None, lbls.clone()).expect("commit");
        let post = Timestamp::now();
        assert_eq!(&got, d, "{}", c.reference);
        check_content(&ts.store, NS, d, &c.data, &lbls, pre, post);
        let st = ts
            .store
            .content()
            .status(NS, c.reference)
            .expect_err("ingest gone");
        assert_eq!(st.kind(), ErrorKind::NotFound);
    }
    assert!(
        ts.store
            .content()
            .list_statuses::<&str>(NS, &[])
            .expect("statuses")
            .is_empty(),
        "no ingest may remain after commits"
    );
}

// ---------------------------------------------------------------------------------------------
// Case 2: UpdateStatus

#[test]
fn update_status() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(20, 256);
    let d = sha256(&data);

    let pre_start = Timestamp::now();
    let mut w = open(&ts.store, &s, "update-status", 256, Some(&d));
    let post_start = Timestamp::now();

    let st = w.status();
    assert_eq!(st.reference, "update-status");
    assert_eq!(st.total, 256);
    assert_eq!(st.offset, 0);
    assert_eq!(st.expected.as_ref(), Some(&d));
    assert_eq!(w.digest(), sha256(b""));
    assert_between("started_at", st.started_at, pre_start, post_start);
    let started_at = st.started_at;

    let mut done = 0;
    for end in [64usize, 192, 256] {
        let pre_update = Timestamp::now();
        w.write_all(&data[done..end]).expect("write");
        let post_update = Timestamp::now();
        done = end;

        let st = w.status();
        assert_eq!(st.reference, "update-status");
        assert_eq!(st.offset, end as u64);
        assert_eq!(st.total, 256);
        assert_eq!(st.started_at, started_at, "started_at must not move");
        assert_between("updated_at", st.updated_at, pre_update, post_update);
        assert_eq!(w.digest(), sha256(&data[..end]));

        // The store's view of the ingest agrees with the writer's.
        let stored = ts
            .store
            .content()
            .status(NS, "update-status")
            .expect("status");
        assert_eq!(stored.offset, end as u64);
        assert_eq!(stored.total, 256);
        assert_eq!(stored.started_at, started_at);
    }

    let root = Timestamp::now().to_rfc3339();
    let lbls = labels(&[(GC_ROOT, &root)]);
    let pre = Timestamp::now();
    assert_eq!(w.commit(256, Some(&d), lbls.clone()).expect("commit"), d);
    let post = Timestamp::now();
    check_content(&ts.store, NS, &d, &data, &lbls, pre, post);
}

// ---------------------------------------------------------------------------------------------
// Case 3: CommitExists

#[test]
fn commit_exists() {
    let ts = TestStore::new();
    let s = scope(NS);
    let c1 = bytes(30, 1024);
    let d1 = put_blob(&ts.store, &s, "c1", &c1, BTreeMap::new());
    assert_eq!(d1, sha256(&c1));

    // Same bytes, expected digest given at commit.
    let mut w = open(&ts.store, &s, "c1-again", 0, None);
    w.write_all(&c1).expect("write");
    let err = w
        .commit(c1.len() as u64, Some(&d1), BTreeMap::new())
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // Same bytes, no expected digest.
    let mut w = open(&ts.store, &s, "c1-again-2", 0, None);
    w.write_all(&c1).expect("write");
    let err = w.commit(0, None, BTreeMap::new()).expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // AlreadyExists aborts the writer: no ingest is left behind.
    for r in ["c1-again", "c1-again-2"] {
        let err = ts
            .store
            .content()
            .status(NS, r)
            .expect_err("ingest removed");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{r}");
    }
    // Opening a writer with the digest of a blob this namespace has fails up front.
    assert_eq!(
        open_err(&ts.store, &s, "c1-third", 1024, Some(&d1)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        ts.store
            .content()
            .list::<&str>(NS, &[])
            .expect("list")
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Case 4: Resume

#[test]
fn resume() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(40, 256);
    let d = sha256(&data);

    let pre_start = Timestamp::now();
    let mut w = open(&ts.store, &s, "resume", 256, Some(&d));
    let post_start = Timestamp::now();
    w.write_all(&data[..128]).expect("write first half");
    let first = w.status();
    assert_eq!(first.offset, 128);
    assert_between("started_at", first.started_at, pre_start, post_start);
    w.close();

    // Nothing holds the ref now; the ingest is still there.
    let stored = ts
        .store
        .content()
        .status(NS, "resume")
        .expect("status after close");
    assert_eq!(stored.offset, 128);
    assert_eq!(stored.total, 256);
    assert_eq!(stored.expected.as_ref(), Some(&d));

    let mut w = open(&ts.store, &s, "resume", 256, Some(&d));
    let st = w.status();
    assert_eq!(st.reference, "resume");
    assert_eq!(st.offset, 128);
    assert_eq!(st.total, 256);
    assert_eq!(st.expected.as_ref(), Some(&d));
    assert_eq!(
        st.started_at, first.started_at,
        "started_at preserved across resume"
    );
    assert_eq!(w.digest(), sha256(&data[..128]));

    w.write_all(&data[128..]).expect("write second half");
    assert_eq!(w.status().offset, 256);
    assert_eq!(w.digest(), d);
    let pre = Timestamp::now();
    assert_eq!(w.commit(256, Some(&d), BTreeMap::new()).expect("commit"), d);
    let post = Timestamp::now();
    check_content(&ts.store, NS, &d, &data, &BTreeMap::new(), pre, post);
}

// ---------------------------------------------------------------------------------------------
// Cases 5-9: ResumeTruncate / ResumeDiscard / ResumeCopy / ResumeCopySeeker / ResumeCopyReaderAt

#[derive(Clone, Copy, Debug)]
enum Resume {
    Truncate,
    Discard,
    CopyReader,
    CopySeeker,
    CopyReaderAt,
}

/// containerd's `content.Copy` resuming from the writer's offset with a plain reader: the
/// first `offset` bytes of the source are read and thrown away.
fn copy_discarding(w: &mut Writer, mut src: impl Read) {
    let offset = w.status().offset;
    let skipped = io::copy(&mut (&mut src).take(offset), &mut io::sink()).expect("skip");
    assert_eq!(skipped, offset);
    io::copy(&mut src, w).expect("copy rest");
}

/// The same with a seekable source.
fn copy_seeking(w: &mut Writer, mut src: impl Read + Seek) {
    let offset = w.status().offset;
    assert_eq!(src.seek(SeekFrom::Start(offset)).expect("seek"), offset);
    io::copy(&mut src, w).expect("copy rest");
}

/// The same with a read-at source (a section starting at the offset).
fn copy_section(w: &mut Writer, src: &[u8]) {
    let offset = usize::try_from(w.status().offset).expect("offset fits");
    let mut section = &src[offset..];
    io::copy(&mut section, w).expect("copy section");
}

fn resume_matrix(kind: Resume, seed: u64) {
    let ts = TestStore::new();
    let s = scope(NS);
    for (i, size) in [500usize, 5000, 50000].into_iter().enumerate() {
        for (j, fraction) in [0.0f64, 0.1, 0.5, 0.9, 1.0].into_iter().enumerate() {
            let data = bytes(seed + (i * 10 + j) as u64, size);
            let d = sha256(&data);
            let prefix = (size as f64 * fraction) as usize;
            let reference = format!("{kind:?}-{size}-{fraction}");
            let case = format!("{kind:?} size {size} fraction {fraction}");

            let mut w = open(&ts.store, &s, &reference, size as u64, Some(&d));
            write_in_chunks(&mut w, &data[..prefix], 100);
            w.close();

            let mut w = open(&ts.store, &s, &reference, size as u64, Some(&d));
            assert_eq!(w.status().offset, prefix as u64, "{case}: resume offset");
            assert_eq!(w.status().total, size as u64, "{case}: total");
            assert_eq!(
                w.digest(),
                sha256(&data[..prefix]),
                "{case}: resumed digest"
            );
            match kind {
                Resume::Truncate => {
                    w.truncate(0).expect("truncate");
                    assert_eq!(w.status().offset, 0, "{case}: truncated");
                    assert_eq!(w.digest(), sha256(b""), "{case}: truncated digest");
                    w.write_all(&data).expect("rewrite");
                }
                Resume::Discard => w.write_all(&data[prefix..]).expect("append"),
                Resume::CopyReader => copy_discarding(&mut w, data.as_slice()),
                Resume::CopySeeker => copy_seeking(&mut w, Cursor::new(&data)),
                Resume::CopyReaderAt => copy_section(&mut w, &data),
            }
            assert_eq!(w.status().offset, size as u64, "{case}: final offset");
            let pre = Timestamp::now();
            let got = w.commit(size as u64, Some(&d), BTreeMap::new());
            let post = Timestamp::now();
            assert_eq!(got.expect("commit"), d, "{case}");
            check_content(&ts.store, NS, &d, &data, &BTreeMap::new(), pre, post);
        }
    }
}

#[test]
fn resume_truncate() {
    resume_matrix(Resume::Truncate, 500);
}

#[test]
fn resume_discard() {
    resume_matrix(Resume::Discard, 600);
}

#[test]
fn resume_copy() {
    resume_matrix(Resume::CopyReader, 700);
}

#[test]
fn resume_copy_seeker() {
    resume_matrix(Resume::CopySeeker, 800);
}

#[test]
fn resume_copy_reader_at() {
    resume_matrix(Resume::CopyReaderAt, 900);
}

#[test]
fn resume_after_store_reopen() {
    let ts = TestStore::new();
    let data = bytes(50, 100_000);
    let d = sha256(&data);
    let started_at;
    {
        let s = scope(NS);
        let mut w = open(&ts.store, &s, "across-reopen", data.len() as u64, Some(&d));
        write_in_chunks(&mut w, &data[..60_000], 4096);
        started_at = w.status().started_at;
    }
    let ts = ts.reopen();
    let s = scope(NS);

    // Without any writer open, the status is read from the record and the bytes on disk.
    let st = ts
        .store
        .content()
        .status(NS, "across-reopen")
        .expect("status");
    assert_eq!(st.offset, 60_000);
    assert_eq!(st.total, data.len() as u64);
    assert_eq!(st.expected.as_ref(), Some(&d));
    assert_eq!(st.started_at, started_at);
    let listed = ts
        .store
        .content()
        .list_statuses(NS, &["ref==across-reopen"])
        .expect("list");
    assert_eq!(listed.len(), 1);

    let mut w = open(&ts.store, &s, "across-reopen", data.len() as u64, Some(&d));
    assert_eq!(w.status().offset, 60_000);
    assert_eq!(w.digest(), sha256(&data[..60_000]));
    copy_discarding(&mut w, data.as_slice());
    let pre = Timestamp::now();
    assert_eq!(
        w.commit(data.len() as u64, Some(&d), BTreeMap::new())
            .expect("commit"),
        d
    );
    let post = Timestamp::now();
    check_content(&ts.store, NS, &d, &data, &BTreeMap::new(), pre, post);
}

// ---------------------------------------------------------------------------------------------
// Case 10: SmallBlob

#[test]
fn small_blob() {
    let ts = TestStore::new();
    let s = scope(NS);
    let blob = b"\x00\x01\x02\x03\x04\x05";
    let d = put_blob(&ts.store, &s, "small", blob, BTreeMap::new());
    let r = ts.store.content().reader(NS, &d).expect("reader");
    assert_eq!(r.size(), 6);
    let mut buf = [0xffu8; 7];
    let n = r.read_at(&mut buf, 0).expect("read_at");
    assert_eq!(n, 6, "a 7-byte read of a 6-byte blob returns 6 bytes");
    assert_eq!(&buf[..6], blob);
    assert_eq!(buf[6], 0xff, "nothing written past the blob");
    assert_eq!(r.read_at(&mut buf, 6).expect("read at end"), 0);
    assert_eq!(r.read_at(&mut buf, 3).expect("read in middle"), 3);
    assert_eq!(&buf[..3], &blob[3..]);
    assert_eq!(read_all(&ts.store, NS, &d), blob);
}

// ---------------------------------------------------------------------------------------------
// Case 11: Labels

#[test]
fn labels_update() {
    let ts = TestStore::new();
    let s = scope(NS);
    let root = Timestamp::now().to_rfc3339();
    let data = bytes(60, 1000);
    let initial = labels(&[("k1", "v1"), ("k2", "v2"), (GC_ROOT, &root)]);
    let pre = Timestamp::now();
    let d = put_blob(&ts.store, &s, "labels", &data, initial.clone());
    let post = Timestamp::now();
    check_content(&ts.store, NS, &d, &data, &initial, pre, post);
    let created_at = ts.store.content().info(NS, &d).expect("info").created_at;

    // Full update (no paths) replaces the label set.
    let replaced = labels(&[("k1", "newvalue"), ("k3", "v3"), (GC_ROOT, &root)]);
    let mut info = ts.store.content().info(NS, &d).expect("info");
    info.labels = replaced.clone();
    let pre = Timestamp::now();
    let updated = ts.store.content().update(NS, &info, &[]).expect("update");
    let post = Timestamp::now();
    assert_eq!(updated.labels, replaced);
    assert_eq!(updated.created_at, created_at, "created_at must not move");
    assert_between("updated_at", updated.updated_at, pre, post);
    assert_eq!(ts.store.content().info(NS, &d).expect("info"), updated);

    // Field-path update: k3 absent from the input is removed, k1 is changed, the rest stays.
    info.labels = labels(&[("k1", "final")]);
    let pre = Timestamp::now();
    let updated = ts
        .store
        .content()
        .update(NS, &info, &["labels.k3", "labels.k1"])
        .expect("update by field paths");
    let post = Timestamp::now();
    let expected = labels(&[("k1", "final"), (GC_ROOT, &root)]);
    assert_eq!(updated.labels, expected);
    assert_eq!(updated.created_at, created_at);
    assert_between("updated_at", updated.updated_at, pre, post);
    let stored = ts.store.content().info(NS, &d).expect("info");
    assert_eq!(stored.labels, expected);
    assert_eq!(stored.size, 1000);

    // `labels` as a path replaces the whole set too; an empty value means "no such label".
    info.labels = labels(&[("only", "one"), ("empty", "")]);
    let updated = ts
        .store
        .content()
        .update(NS, &info, &["labels"])
        .expect("update labels");
    assert_eq!(updated.labels, labels(&[("only", "one")]));

    // Fields other than labels cannot be updated.
    for path in ["size", "digest", "createdat", "label.x"] {
        let err = ts
            .store
            .content()
            .update(NS, &info, &[path])
            .expect_err("bad path");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
    }
    assert_eq!(
        ts.store.content().info(NS, &d).expect("info").labels,
        labels(&[("only", "one")])
    );

    // Updating a blob this namespace does not have is NotFound.
    let mut other = info.clone();
    other.digest = sha256(b"not stored");
    let err = ts
        .store
        .content()
        .update(NS, &other, &[])
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = ts
        .store
        .content()
        .update("elsewhere", &info, &[])
        .expect_err("other ns");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Case 12: CommitErrorState

#[test]
fn commit_error_state() {
    let ts = TestStore::new();
    let s = scope(NS);
    let c1 = bytes(70, 2048);
    let len = c1.len() as u64;
    let d1 = put_blob(&ts.store, &s, "c1", &c1, BTreeMap::new());
    let mut c1_more = c1.clone();
    c1_more.extend_from_slice(b"more");
    let d_more = sha256(&c1_more);
    let wrong = sha256(b"something else entirely");
    const R: &str = "commit-error-state";

    // A second writer on a ref that is open is refused with Unavailable.
    let mut w = open(&ts.store, &s, R, 0, None);
    w.write_all(&c1).expect("write c1");
    assert_eq!(open_err(&ts.store, &s, R, 0, None), ErrorKind::Unavailable);
    assert_eq!(
        open_err(&ts.store, &s, R, len, Some(&d_more)),
        ErrorKind::Unavailable
    );
    let err = w
        .commit(len, Some(&d1), BTreeMap::new())
        .expect_err("already exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // The ref is available again (commit releases it even when it fails) and starts empty.
    let mut w = open(&ts.store, &s, R, 0, None);
    assert_eq!(w.status().offset, 0, "AlreadyExists discarded the ingest");
    w.write_all(&c1).expect("write c1");
    let err = w
        .commit(len, None, BTreeMap::new())
        .expect_err("already exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // A wrong digest is a FailedPrecondition and keeps the data.
    let mut w = open(&ts.store, &s, R, 0, None);
    assert_eq!(w.status().offset, 0);
    w.write_all(&c1_more).expect("write c1+more");
    let err = w
        .commit(len + 4, Some(&wrong), BTreeMap::new())
        .expect_err("wrong digest");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    // Data persisted; a wrong size is a FailedPrecondition too.
    let w = open(&ts.store, &s, R, 0, None);
    assert_eq!(
        w.status().offset,
        len + 4,
        "ingest kept after a failed commit"
    );
    assert_eq!(w.digest(), d_more);
    let err = w
        .commit(len, None, BTreeMap::new())
        .expect_err("wrong size");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        ts.store.content().status(NS, R).expect("status").offset,
        len + 4
    );

    // The right size commits what is on disk.
    let w = open(&ts.store, &s, R, 0, None);
    assert_eq!(w.status().offset, len + 4);
    assert_eq!(
        w.commit(len + 4, None, BTreeMap::new()).expect("commit"),
        d_more
    );
    assert_eq!(read_all(&ts.store, NS, &d_more), c1_more);

    // The ref can be used again, and a commit of existing content is AlreadyExists.
    let mut w = open(&ts.store, &s, R, 0, None);
    assert_eq!(w.status().offset, 0, "a committed ingest is gone");
    w.write_all(&c1).expect("write c1");
    let err = w
        .commit(len, Some(&d1), BTreeMap::new())
        .expect_err("already exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // Truncate(0) and close, twice.
    let mut w = open(&ts.store, &s, R, 0, None);
    w.truncate(0).expect("truncate");
    w.close();
    let mut w = open(&ts.store, &s, R, 0, None);
    assert_eq!(w.status().offset, 0);
    w.truncate(0).expect("truncate again");
    w.close();
    assert_eq!(ts.store.content().status(NS, R).expect("status").offset, 0);

    let all: BTreeSet<Digest> = ts
        .store
        .content()
        .list::<&str>(NS, &[])
        .expect("list")
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(all, BTreeSet::from([d1, d_more]));
}

#[test]
fn failed_commit_keeps_ingest_for_retry() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(71, 3000);
    let d = sha256(&data);
    let mut w = open(&ts.store, &s, "retry", 0, None);
    w.write_all(&data).expect("write");
    let err = w
        .commit(2999, None, BTreeMap::new())
        .expect_err("size mismatch");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let err = ts.store.content().info(NS, &d).expect_err("not committed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let w = open(&ts.store, &s, "retry", 0, None);
    assert_eq!(w.status().offset, 3000);
    assert_eq!(
        w.commit(3000, Some(&d), BTreeMap::new())
            .expect("retry commit"),
        d
    );
}

#[test]
fn empty_ref_is_invalid() {
    let ts = TestStore::new();
    let s = scope(NS);
    assert_eq!(
        open_err(&ts.store, &s, "", 0, None),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn truncate_to_nonzero_is_an_error() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(80, 10);
    let mut w = open(&ts.store, &s, "truncate", 0, None);
    w.write_all(&data).expect("write");
    let err = w.truncate(5).expect_err("only 0 supported");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.status().offset, 10, "a refused truncate changes nothing");
    assert_eq!(w.digest(), sha256(&data));
    assert_eq!(
        w.commit(10, Some(&sha256(&data)), BTreeMap::new())
            .expect("commit"),
        sha256(&data)
    );
}

#[test]
fn truncate_zero_restarts_the_ingest() {
    let ts = TestStore::new();
    let s = scope(NS);
    let junk = bytes(81, 500);
    let data = bytes(82, 300);
    let mut w = open(&ts.store, &s, "restart", 0, None);
    w.write_all(&junk).expect("write junk");
    w.truncate(0).expect("truncate");
    assert_eq!(w.status().offset, 0);
    assert_eq!(w.digest(), sha256(b""));
    w.write_all(&data).expect("write data");
    w.close();
    let w = open(&ts.store, &s, "restart", 0, None);
    assert_eq!(
        w.status().offset,
        300,
        "only the bytes after the truncate are on disk"
    );
    assert_eq!(
        w.commit(300, Some(&sha256(&data)), BTreeMap::new())
            .expect("commit"),
        sha256(&data)
    );
    assert_eq!(read_all(&ts.store, NS, &sha256(&data)), data);
}

// ---------------------------------------------------------------------------------------------
// Abort

#[test]
fn abort() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(90, 700);
    let mut w = open(&ts.store, &s, "to-abort", 700, None);
    w.write_all(&data[..300]).expect("write");
    w.close();
    assert_eq!(
        ts.store
            .content()
            .status(NS, "to-abort")
            .expect("status")
            .offset,
        300
    );

    ts.store.content().abort(&s, "to-abort").expect("abort");
    let err = ts
        .store
        .content()
        .status(NS, "to-abort")
        .expect_err("status after abort");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        ts.store
            .content()
            .list_statuses::<&str>(NS, &[])
            .expect("list")
            .is_empty()
    );
    let err = ts
        .store
        .content()
        .abort(&s, "to-abort")
        .expect_err("second abort");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = ts
        .store
        .content()
        .abort(&s, "never-existed")
        .expect_err("unknown ref");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // The ref starts over.
    let w = open(&ts.store, &s, "to-abort", 700, None);
    assert_eq!(w.status().offset, 0);
    assert_eq!(w.digest(), sha256(b""));
}

#[test]
fn list_statuses_filters_by_ref() {
    let ts = TestStore::new();
    let s = scope(NS);
    for r in ["layer-1", "layer-2", "config-1"] {
        let mut w = open(&ts.store, &s, r, 0, None);
        w.write_all(r.as_bytes()).expect("write");
    }
    let refs = |filters: &[&str]| -> BTreeSet<String> {
        ts.store
            .content()
            .list_statuses(NS, filters)
            .expect("list statuses")
            .into_iter()
            .map(|st| st.reference)
            .collect()
    };
    assert_eq!(refs(&[]).len(), 3);
    assert_eq!(
        refs(&["ref==layer-1"]),
        BTreeSet::from(["layer-1".to_owned()])
    );
    assert_eq!(
        refs(&["ref~=^layer-"]),
        BTreeSet::from(["layer-1".to_owned(), "layer-2".to_owned()])
    );
    assert_eq!(
        refs(&["ref==config-1", "ref==layer-2"]),
        BTreeSet::from(["config-1".to_owned(), "layer-2".to_owned()])
    );
    assert!(
        ts.store
            .content()
            .list_statuses::<&str>("other", &[])
            .expect("other ns")
            .is_empty(),
        "ingests are per namespace"
    );
}

// ---------------------------------------------------------------------------------------------
// Digest algorithms

#[test]
fn sha512_writer() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(100, 4 << 20);
    let d512 = Digest::of(Algorithm::Sha512, &data);
    assert!(d512.to_string().starts_with("sha512:"));

    let mut w = open(&ts.store, &s, "sha512", data.len() as u64, Some(&d512));
    assert_eq!(
        w.digest(),
        Digest::of(Algorithm::Sha512, b""),
        "algorithm follows expected"
    );
    write_in_chunks(&mut w, &data, 1 << 16);
    assert_eq!(w.digest(), d512);
    let pre = Timestamp::now();
    assert_eq!(
        w.commit(data.len() as u64, Some(&d512), BTreeMap::new())
            .expect("commit"),
        d512
    );
    let post = Timestamp::now();
    let info = ts.store.content().info(NS, &d512).expect("info");
    assert_eq!(info.size, data.len() as u64);
    assert_between("created_at", info.created_at, pre, post);
    assert!(read_all(&ts.store, NS, &d512) == data);
    let listed = ts
        .store
        .content()
        .list(NS, &[format!("digest=={d512}")])
        .expect("list");
    assert_eq!(listed.len(), 1);
}

#[test]
fn commit_rehashes_for_expected_of_another_algorithm() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(101, 10_000);
    let d512 = Digest::of(Algorithm::Sha512, &data);
    let mut w = open(&ts.store, &s, "rehash", 0, None);
    w.write_all(&data).expect("write");
    assert_eq!(w.digest(), sha256(&data), "sha256 by default");
    assert_eq!(
        w.commit(0, Some(&d512), BTreeMap::new()).expect("commit"),
        d512
    );
    assert_eq!(
        ts.store.content().info(NS, &d512).expect("info").size,
        10_000
    );
    assert!(read_all(&ts.store, NS, &d512) == data);
}

// ---------------------------------------------------------------------------------------------
// Cases 13-14: cross-namespace sharing (policy "shared")

#[test]
fn cross_namespace_share() {
    let ts = TestStore::new();
    let ns1 = scope("share-n1");
    let ns2 = scope("share-n2");
    let data = bytes(110, 1000);
    let size = data.len() as u64;
    let t1 = Timestamp::now();
    let d = put_blob(&ts.store, &ns1, "ref-1000", &data, BTreeMap::new());

    let w = open(&ts.store, &ns2, "ref-1000", size, Some(&d));
    let t2 = Timestamp::now();
    let st = w.status();
    assert_eq!(st.reference, "ref-1000");
    assert_eq!(st.offset, size, "a shared writer starts complete");
    assert_eq!(st.total, size);
    assert_eq!(st.expected.as_ref(), Some(&d));
    assert_eq!(w.digest(), d);
    assert_between("started_at", st.started_at, t1, t2);

    // Commit without writing a byte.
    assert_eq!(
        w.commit(size, Some(&d), BTreeMap::new()).expect("commit"),
        d
    );
    let t3 = Timestamp::now();
    check_content(&ts.store, "share-n1", &d, &data, &BTreeMap::new(), t1, t3);
    check_content(&ts.store, "share-n2", &d, &data, &BTreeMap::new(), t1, t3);
    assert!(read_all(&ts.store, "share-n1", &d) == read_all(&ts.store, "share-n2", &d));

    // One blob file, no ingest left behind.
    assert!(ts.store.layout().blob(&d).is_file());
    let leftovers: Vec<_> = std::fs::read_dir(ts.store.layout().ingest_root())
        .expect("read ingest root")
        .collect();
    assert!(
        leftovers.is_empty(),
        "no ingest data for a shared commit: {leftovers:?}"
    );
    let err = ts
        .store
        .content()
        .status("share-n2", "ref-1000")
        .expect_err("ingest gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn cross_namespace_share_without_size() {
    // containerd: with a zero descriptor size the shared writer takes the blob's size, and
    // its status reports offset = total = size.
    let ts = TestStore::new();
    let ns1 = scope("share-n1");
    let ns2 = scope("share-n2");
    let data = bytes(111, 777);
    let size = data.len() as u64;
    let d = put_blob(&ts.store, &ns1, "any", &data, BTreeMap::new());

    let w = open(&ts.store, &ns2, "no-size", 0, Some(&d));
    let st = w.status();
    assert_eq!(st.offset, size, "shared writer offset");
    assert_eq!(w.digest(), d);
    assert_eq!(st.total, size, "shared writer total takes the blob's size");
    assert_eq!(w.commit(0, Some(&d), BTreeMap::new()).expect("commit"), d);
    assert_eq!(
        ts.store.content().info("share-n2", &d).expect("info").size,
        size
    );
}

#[test]
fn cross_namespace_share_size_mismatch_is_not_shared() {
    let ts = TestStore::new();
    let ns1 = scope("share-n1");
    let ns2 = scope("share-n2");
    let data = bytes(112, 600);
    let d = put_blob(&ts.store, &ns1, "any", &data, BTreeMap::new());

    // A descriptor size that differs from the blob's: not shared, the bytes must be sent.
    let mut w = open(&ts.store, &ns2, "mismatch", 601, Some(&d));
    assert_eq!(w.status().offset, 0);
    assert_eq!(w.digest(), sha256(b""));
    w.write_all(&data).expect("write");
    assert_eq!(w.commit(600, Some(&d), BTreeMap::new()).expect("commit"), d);
    assert!(read_all(&ts.store, "share-n2", &d) == data);
}

#[test]
fn cross_namespace_append() {
    let ts = TestStore::new();
    let ns1 = scope("append-n1");
    let ns2 = scope("append-n2");
    let data = bytes(120, 1000);
    let size = data.len() as u64;
    let t1 = Timestamp::now();
    let d = put_blob(&ts.store, &ns1, "ref-1000", &data, BTreeMap::new());

    let extra = b"appended bytes";
    let mut data2 = data.clone();
    data2.extend_from_slice(extra);
    let d2 = sha256(&data2);
    let size2 = data2.len() as u64;

    let mut w = open(&ts.store, &ns2, "ref-1000", size, Some(&d));
    assert_eq!(w.status().offset, size);
    assert_eq!(w.status().total, size);
    assert_eq!(w.digest(), d);
    w.write_all(extra).expect("append to shared writer");
    assert_eq!(w.status().offset, size2);
    assert_eq!(w.digest(), d2);
    assert_eq!(
        w.commit(size2, Some(&d2), BTreeMap::new()).expect("commit"),
        d2
    );
    let t3 = Timestamp::now();

    check_content(&ts.store, "append-n1", &d, &data, &BTreeMap::new(), t1, t3);
    check_content(
        &ts.store,
        "append-n2",
        &d2,
        &data2,
        &BTreeMap::new(),
        t1,
        t3,
    );
    let err = ts
        .store
        .content()
        .info("append-n2", &d)
        .expect_err("ns2 never committed d");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = ts
        .store
        .content()
        .info("append-n1", &d2)
        .expect_err("ns1 never committed d2");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn cross_namespace_share_truncate() {
    // Truncate(0) on a shared writer turns it into an ordinary, empty ingest.
    let ts = TestStore::new();
    let ns1 = scope("trunc-n1");
    let ns2 = scope("trunc-n2");
    let data = bytes(121, 400);
    let d = put_blob(&ts.store, &ns1, "any", &data, BTreeMap::new());
    let other = bytes(122, 300);

    let mut w = open(&ts.store, &ns2, "t", 400, Some(&d));
    assert_eq!(w.status().offset, 400);
    w.truncate(0).expect("truncate");
    assert_eq!(w.status().offset, 0);
    assert_eq!(w.digest(), sha256(b""));
    w.write_all(&other).expect("write");
    assert_eq!(
        w.commit(300, None, BTreeMap::new()).expect("commit"),
        sha256(&other)
    );
    assert!(read_all(&ts.store, "trunc-n2", &sha256(&other)) == other);
    assert!(
        read_all(&ts.store, "trunc-n1", &d) == data,
        "ns1's blob is untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Walk / list with filters

#[test]
fn walk_blobs() {
    let ts = TestStore::new();
    let s = scope(NS);
    let root = Timestamp::now().to_rfc3339();
    let mut all = BTreeSet::new();
    let mut rooted = BTreeSet::new();
    for i in 0..79u64 {
        let len = 1 + usize::try_from((i * 617) % 4096).expect("small");
        let data = bytes(1000 + i, len);
        let lbls = if i % 3 == 0 {
            labels(&[(GC_ROOT, &root)])
        } else {
            labels(&[("index", &i.to_string())])
        };
        let d = put_blob(&ts.store, &s, &format!("blob-{i}"), &data, lbls);
        assert!(all.insert(d.clone()), "distinct blobs");
        if i % 3 == 0 {
            rooted.insert(d);
        }
    }
    let walk = |filters: &[String]| -> BTreeSet<Digest> {
        ts.store
            .content()
            .list(NS, filters)
            .expect("list")
            .into_iter()
            .map(|i| i.digest)
            .collect()
    };
    assert_eq!(walk(&[]), all, "all 79 blobs walked");
    assert_eq!(rooted.len(), 27);

    let first = all.iter().next().expect("one").clone();
    let last = all.iter().next_back().expect("one").clone();
    assert_eq!(
        walk(&[format!("digest=={first}")]),
        BTreeSet::from([first.clone()])
    );
    assert_eq!(walk(&[format!("labels.\"{GC_ROOT}\"")]), rooted);
    assert_eq!(
        walk(&[format!("digest=={first}"), format!("digest=={last}")]),
        BTreeSet::from([first.clone(), last.clone()]),
        "several filters are OR'd"
    );
    let mut either = rooted.clone();
    either.insert(last.clone());
    either.insert(first.clone());
    assert_eq!(
        walk(&[
            format!("labels.\"{GC_ROOT}\""),
            format!("digest=={last}"),
            format!("digest=={first}")
        ]),
        either
    );
    assert_eq!(walk(&["labels.index==5".to_owned()]).len(), 1);
    assert!(walk(&["digest==sha256:nothing".to_owned()]).is_empty());
    let err = ts
        .store
        .content()
        .list(NS, &["labels.".to_owned()])
        .expect_err("bad filter");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // Infos listed carry the full record.
    for info in ts
        .store
        .content()
        .list(NS, &[format!("digest=={first}")])
        .expect("list")
    {
        assert_eq!(info, ts.store.content().info(NS, &first).expect("info"));
    }
    assert!(
        ts.store
            .content()
            .list::<&str>("other", &[])
            .expect("other ns")
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Delete and namespace isolation

#[test]
fn delete() {
    let ts = TestStore::new();
    let ns1 = scope("del-n1");
    let ns2 = scope("del-n2");
    let data = bytes(130, 2000);
    let d = put_blob(&ts.store, &ns1, "x", &data, BTreeMap::new());
    assert_eq!(put_blob(&ts.store, &ns2, "x", &data, BTreeMap::new()), d);

    ts.store.content().delete(&ns1, &d).expect("delete");
    let err = ts
        .store
        .content()
        .info("del-n1", &d)
        .expect_err("gone in ns1");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = ts
        .store
        .content()
        .reader("del-n1", &d)
        .expect_err("gone in ns1");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        ts.store
            .content()
            .list::<&str>("del-n1", &[])
            .expect("list")
            .is_empty()
    );
    let err = ts
        .store
        .content()
        .delete(&ns1, &d)
        .expect_err("second delete");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // The other namespace still has it, bytes intact.
    assert_eq!(
        ts.store
            .content()
            .info("del-n2", &d)
            .expect("ns2 info")
            .size,
        2000
    );
    assert!(read_all(&ts.store, "del-n2", &d) == data);

    // Deleting something never stored is NotFound.
    let err = ts
        .store
        .content()
        .delete(&ns2, &sha256(b"never"))
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn reader_in_other_namespace_is_not_found() {
    let ts = TestStore::new();
    let ns1 = scope("iso-n1");
    let data = bytes(140, 123);
    let d = put_blob(&ts.store, &ns1, "x", &data, BTreeMap::new());
    assert!(
        ts.store.layout().blob(&d).is_file(),
        "the bytes are on disk"
    );
    let err = ts
        .store
        .content()
        .reader("iso-n2", &d)
        .expect_err("other namespace");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = ts
        .store
        .content()
        .info("iso-n2", &d)
        .expect_err("other namespace");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(read_all(&ts.store, "iso-n1", &d) == data);
}

// ---------------------------------------------------------------------------------------------
// Label limits (4.5)

#[test]
fn label_size_limit() {
    let ts = TestStore::new();
    let s = scope(NS);
    let data = bytes(150, 64);
    let d = sha256(&data);
    let key = "k".repeat(96);
    let at_limit = "v".repeat(4096 - key.len());
    let over = "v".repeat(4097 - key.len());

    // Commit with an oversized label: InvalidArgument, nothing committed, ingest kept.
    let mut w = open(&ts.store, &s, "labelled", 0, None);
    w.write_all(&data).expect("write");
    let err = w
        .commit(64, Some(&d), labels(&[(&key, &over)]))
        .expect_err("too big");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = ts
        .store
        .content()
        .info(NS, &d)
        .expect_err("nothing committed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        ts.store
            .content()
            .status(NS, "labelled")
            .expect("ingest kept")
            .offset,
        64
    );

    // Exactly 4096 bytes of key + value is fine.
    let w = open(&ts.store, &s, "labelled", 0, None);
    let ok = labels(&[(&key, &at_limit)]);
    assert_eq!(
        w.commit(64, Some(&d), ok.clone()).expect("commit at limit"),
        d
    );
    let before = ts.store.content().info(NS, &d).expect("info");
    assert_eq!(before.labels, ok);

    // Updates with an oversized label change nothing, whichever path form is used.
    let mut info = before.clone();
    info.labels = labels(&[(&key, &over), ("small", "one")]);
    for paths in [&[][..], &["labels"][..], &[&*format!("labels.{key}")][..]] {
        let err = ts
            .store
            .content()
            .update(NS, &info, paths)
            .expect_err("too big");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{paths:?}");
        assert_eq!(
            ts.store.content().info(NS, &d).expect("info"),
            before,
            "{paths:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Content and leases (TestContentLeased, TestIngestLeased)

fn resources(store: &Store, ns: &str, lease: &str) -> Vec<Resource> {
    store
        .leases()
        .resources(ns, lease)
        .expect("lease resources")
}

#[test]
fn content_leased() {
    let ts = TestStore::new();
    ts.store
        .leases()
        .create(NS, "lease-1", BTreeMap::new())
        .expect("lease");
    let leased = scope(NS).with_lease("lease-1");
    let data = b"any content".to_vec();
    let d = sha256(&data);

    // The writer's ingest joins the lease as soon as it is opened.
    let mut w = open(&ts.store, &leased, "test-1", data.len() as u64, Some(&d));
    assert_eq!(
        resources(&ts.store, NS, "lease-1"),
        vec![Resource::new("ingests", "test-1")]
    );
    w.write_all(&data).expect("write");
    assert_eq!(
        w.commit(data.len() as u64, Some(&d), BTreeMap::new())
            .expect("commit"),
        d
    );
    // Commit replaces the ingest by the digest, in the same transaction.
    assert_eq!(
        resources(&ts.store, NS, "lease-1"),
        vec![Resource::new("content", d.to_string())]
    );

    // A writer for content this namespace already has: AlreadyExists, yet the content joins
    // the scope's lease, and no ingest is created.
    ts.store
        .leases()
        .create(NS, "lease-2", BTreeMap::new())
        .expect("lease");
    let leased2 = scope(NS).with_lease("lease-2");
    assert_eq!(
        open_err(&ts.store, &leased2, "test-2", data.len() as u64, Some(&d)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        resources(&ts.store, NS, "lease-2"),
        vec![Resource::new("content", d.to_string())]
    );
    let err = ts
        .store
        .content()
        .status(NS, "test-2")
        .expect_err("no ingest");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Deleting the content in the lease's scope drops it from the lease.
    ts.store.content().delete(&leased2, &d).expect("delete");
    assert!(resources(&ts.store, NS, "lease-2").is_empty());
}

#[test]
fn ingest_leased_abort() {
    let ts = TestStore::new();
    ts.store
        .leases()
        .create(NS, "lease-1", BTreeMap::new())
        .expect("lease");
    let leased = scope(NS).with_lease("lease-1");
    let w = open(&ts.store, &leased, "test-1", 11, None);
    assert_eq!(
        resources(&ts.store, NS, "lease-1"),
        vec![Resource::new("ingests", "test-1")]
    );
    w.close();
    ts.store.content().abort(&leased, "test-1").expect("abort");
    assert!(
        resources(&ts.store, NS, "lease-1").is_empty(),
        "abort drops the ingest from the lease"
    );
}

#[test]
fn content_leased_missing_lease_is_not_found() {
    let ts = TestStore::new();
    let missing = scope(NS).with_lease("no-such-lease");
    assert_eq!(
        open_err(&ts.store, &missing, "ref", 0, None),
        ErrorKind::NotFound
    );
    // Nothing was created and the ref is not left locked.
    let err = ts.store.content().status(NS, "ref").expect_err("no ingest");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let w = open(&ts.store, &scope(NS), "ref", 0, None);
    assert_eq!(w.status().offset, 0);
}

/// An ingest of `data`, written without a lease and closed.
fn unleased_ingest(store: &Store, reference: &str, data: &[u8]) {
    let mut w = open(store, &scope(NS), reference, 0, None);
    w.write_all(data).expect("write");
    w.close();
}

#[test]
fn resumed_ingest_joins_the_scope_lease() {
    // containerd adds the ingest to the context lease every time a writer is opened on the
    // ref (addIngestLease runs for new and existing ingest buckets alike).
    let ts = TestStore::new();
    let data = bytes(160, 100);
    unleased_ingest(&ts.store, "resumed", &data[..40]);
    ts.store
        .leases()
        .create(NS, "late", BTreeMap::new())
        .expect("lease");
    let leased = scope(NS).with_lease("late");
    let mut w = open(&ts.store, &leased, "resumed", 0, None);
    assert_eq!(w.status().offset, 40);
    assert_eq!(
        resources(&ts.store, NS, "late"),
        vec![Resource::new("ingests", "resumed")],
        "a resumed ingest joins the scope's lease"
    );
    w.write_all(&data[40..]).expect("write");
    let d = w.commit(100, None, BTreeMap::new()).expect("commit");
    assert_eq!(
        resources(&ts.store, NS, "late"),
        vec![Resource::new("content", d.to_string())]
    );
}

#[test]
fn resume_under_missing_lease_is_not_found() {
    // containerd: a context lease that does not exist fails Writer() with NotFound, whether
    // the ingest is new or resumed.
    let ts = TestStore::new();
    unleased_ingest(&ts.store, "resumed", &bytes(161, 40));
    let missing = scope(NS).with_lease("no-such-lease");
    assert_eq!(
        open_err(&ts.store, &missing, "resumed", 0, None),
        ErrorKind::NotFound,
        "resuming under a missing lease"
    );
    // The ingest itself is untouched.
    assert_eq!(
        ts.store
            .content()
            .status(NS, "resumed")
            .expect("status")
            .offset,
        40
    );
}

#[test]
fn commit_already_exists_under_lease_leases_the_content() {
    // containerd's commit adds the digest to the context lease even when the namespace has
    // the blob already (the AlreadyExists is returned after that transaction commits).
    let ts = TestStore::new();
    let data = bytes(170, 256);
    let d = put_blob(&ts.store, &scope(NS), "first", &data, BTreeMap::new());
    ts.store
        .leases()
        .create(NS, "l", BTreeMap::new())
        .expect("lease");
    let leased = scope(NS).with_lease("l");
    let mut w = open(&ts.store, &leased, "second", 0, None);
    w.write_all(&data).expect("write");
    let err = w
        .commit(256, None, BTreeMap::new())
        .expect_err("already exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        resources(&ts.store, NS, "l"),
        vec![Resource::new("content", d.to_string())],
        "ingest dropped from the lease, digest added"
    );
}
