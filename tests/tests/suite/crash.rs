//! kill -9 at every content failpoint.
//!
//! Each case re-runs this test binary as a child that arms one failpoint with
//! `return(kill)` (the child sends itself SIGKILL there, so no destructor or flush runs) and
//! performs a workload that reaches it. The parent checks the child died by SIGKILL, reopens
//! the root and checks:
//! - every blob record has its complete file (size and digest match);
//! - every file under `content/blobs` holds exactly the bytes its name says (nothing
//!   half-published);
//! - the interrupted ingest resumes at the bytes on disk, and finishing it commits the blob.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use strata_store::content::WriterOptions;
use strata_store::{Digest, ErrorKind, Store};

use crate::support::{bytes, labels, put_blob, scope, sha256, small_options};

const CHILD_FAILPOINT: &str = "STRATA_CRASH_FAILPOINT";
const CHILD_ROOT: &str = "STRATA_CRASH_ROOT";
const REF: &str = "crash-ref";
const NS: &str = "crash";

fn payload() -> Vec<u8> {
    bytes(42, 300_000)
}

/// The child: arms the failpoint and runs the workload that reaches it.
#[test]
#[ignore = "child process of the crash tests, which run it themselves"]
fn crash_child() {
    let (Ok(failpoint), Ok(root)) = (std::env::var(CHILD_FAILPOINT), std::env::var(CHILD_ROOT))
    else {
        return;
    };
    let store = Store::open(&root, small_options()).expect("child open");
    let s = scope(NS);
    let data = payload();
    // Work before arming: what the failpoint's operation needs to exist.
    match failpoint.as_str() {
        "content.abort.after_db" => {
            let mut w = store
                .content()
                .writer(&s, REF, WriterOptions::default())
                .expect("writer");
            w.write_all(&data[..1000]).expect("write");
        }
        "content.delete.after_db" => {
            put_blob(&store, &s, "to-delete", &data, labels(&[]));
        }
        _ => {}
    }
    fail::cfg(&failpoint, "return(kill)").expect("arm failpoint");
    match failpoint.as_str() {
        "content.abort.after_db" => {
            let _ = store.content().abort(&s, REF);
        }
        "content.delete.after_db" => {
            let _ = store.content().delete(&s, &sha256(&data));
        }
        _ => {
            let opts = WriterOptions {
                expected: Some(sha256(&data)),
                total: data.len() as u64,
            };
            if let Ok(mut w) = store.content().writer(&s, REF, opts) {
                w.write_all(&data).expect("write");
                let _ = w.commit(
                    data.len() as u64,
                    Some(&sha256(&data)),
                    labels(&[("k", "v")]),
                );
            }
        }
    }
    // Reaching this line means the failpoint was never hit: report it with a distinct code.
    std::process::exit(3);
}

fn run_child(failpoint: &str, root: &Path) {
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "crash::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FAILPOINT, failpoint)
        .env(CHILD_ROOT, root)
        .stdin(Stdio::null())
        .output()
        .expect("spawn child");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "child for {failpoint} was not killed at the failpoint: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every record has its complete blob, and every blob file holds the bytes its name says.
fn check_invariants(store: &Store) {
    for ns in store.namespaces().list().expect("namespaces") {
        for info in store.content().list::<&str>(&ns.name, &[]).expect("list") {
            let path = store.layout().blob(&info.digest);
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("record {} without file: {e}", info.digest));
            assert_eq!(data.len() as u64, info.size, "size of {}", info.digest);
            assert_eq!(
                Digest::of(info.digest.algorithm(), &data),
                info.digest,
                "bytes of {}",
                info.digest
            );
        }
    }
    for alg in strata_store::Algorithm::ALL {
        for entry in std::fs::read_dir(store.layout().blob_dir(alg)).expect("blob dir") {
            let path = entry.expect("entry").path();
            let name = format!(
                "{}:{}",
                alg.name(),
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
            );
            let digest: Digest = name
                .parse()
                .unwrap_or_else(|_| panic!("stray file {}", path.display()));
            let data = std::fs::read(&path).expect("read blob file");
            assert_eq!(
                Digest::of(alg, &data),
                digest,
                "half-published blob {}",
                path.display()
            );
        }
    }
}

/// Resumes the interrupted ingest from the bytes on disk and commits it.
fn resume_and_commit(store: &Store, expect_offset: Option<u64>) {
    let data = payload();
    let opts = WriterOptions {
        expected: Some(sha256(&data)),
        total: data.len() as u64,
    };
    let mut w = store
        .content()
        .writer(&scope(NS), REF, opts)
        .expect("reopen writer");
    let offset = w.status().offset;
    if let Some(expected) = expect_offset {
        assert_eq!(offset, expected, "resume offset");
    }
    assert_eq!(
        w.digest(),
        sha256(&data[..offset as usize]),
        "resumed digest covers the bytes on disk"
    );
    w.write_all(&data[offset as usize..]).expect("write rest");
    let d = w
        .commit(data.len() as u64, Some(&sha256(&data)), BTreeMap::new())
        .expect("commit after resume");
    assert_eq!(d, sha256(&data));
    let mut got = Vec::new();
    std::io::Read::read_to_end(
        &mut store.content().reader(NS, &d).expect("reader"),
        &mut got,
    )
    .expect("read");
    assert_eq!(got, data);
}

fn crash_at(failpoint: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    run_child(failpoint, dir.path());
    let store = Store::open(dir.path(), small_options()).expect("reopen after kill -9");
    check_invariants(&store);
    (dir, store)
}

fn blob_recorded(store: &Store) -> bool {
    store.content().info(NS, &sha256(&payload())).is_ok()
}

#[test]
fn kill_after_ingest_record() {
    let (_d, store) = crash_at("content.writer.after_record");
    assert_eq!(
        store.content().status(NS, REF).expect("ingest kept").offset,
        0
    );
    resume_and_commit(&store, Some(0));
}

#[test]
fn kill_before_rename() {
    let (_d, store) = crash_at("content.commit.before_rename");
    assert!(!blob_recorded(&store));
    // The data was written and synced: the ingest resumes with every byte.
    resume_and_commit(&store, Some(payload().len() as u64));
}

#[test]
fn kill_after_rename() {
    let (_d, store) = crash_at("content.commit.after_rename");
    assert!(!blob_recorded(&store), "no record before the transaction");
    assert!(
        store.layout().blob(&sha256(&payload())).exists(),
        "the published file is an orphan until reconcile"
    );
    // The writer re-hashes the orphan, finds the expected blob, and adopts it.
    resume_and_commit(&store, Some(payload().len() as u64));
    check_invariants(&store);
}

#[test]
fn kill_after_dir_sync() {
    let (_d, store) = crash_at("content.commit.after_dir_sync");
    assert!(!blob_recorded(&store));
    resume_and_commit(&store, Some(payload().len() as u64));
}

#[test]
fn kill_after_commit_transaction() {
    let (_d, store) = crash_at("content.commit.after_db");
    let info = store
        .content()
        .info(NS, &sha256(&payload()))
        .expect("committed blob");
    assert_eq!(info.labels, labels(&[("k", "v")]));
    assert_eq!(
        store.content().status(NS, REF).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
}

#[test]
fn kill_after_abort_transaction() {
    let (_d, store) = crash_at("content.abort.after_db");
    assert_eq!(
        store.content().status(NS, REF).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    // A new writer on the same ref starts from nothing, whatever directory was left behind.
    resume_and_commit(&store, Some(0));
}

#[test]
fn kill_after_delete_transaction() {
    let (_d, store) = crash_at("content.delete.after_db");
    assert!(!blob_recorded(&store), "the delete committed");
}

#[test]
fn every_failpoint_has_a_crash_case() {
    let source = include_str!("crash.rs");
    for name in strata_store::failpoint::ALL {
        assert!(
            source.contains(&format!("crash_at(\"{name}\")")),
            "no kill -9 case for {name}"
        );
    }
}

#[test]
fn a_damaged_orphan_blob_file_is_not_adopted() {
    let t = crate::support::TestStore::new();
    let data = payload();
    let d = sha256(&data);
    // A file under the blob's name that no record names and whose bytes are wrong.
    let mut wrong = data.clone();
    wrong[10] ^= 0xff;
    std::fs::write(t.store.layout().blob(&d), &wrong).expect("plant orphan");
    let opts = WriterOptions {
        expected: Some(d.clone()),
        total: data.len() as u64,
    };
    let mut w = t
        .store
        .content()
        .writer(&scope(NS), REF, opts)
        .expect("writer");
    assert_eq!(
        w.status().offset,
        0,
        "a damaged orphan must not count as written"
    );
    w.write_all(&data).expect("write");
    w.commit(data.len() as u64, Some(&d), BTreeMap::new())
        .expect("commit replaces the orphan");
    check_invariants(&t.store);
}
