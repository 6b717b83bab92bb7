//! kill -9 at every content and snapshot failpoint.
//!
//! Each case re-runs this test binary as a child that arms one failpoint with
//! `return(kill)` (the child sends itself SIGKILL there, so no destructor or flush runs) and
//! performs a workload that reaches it. The parent checks the child died by SIGKILL, reopens
//! the root and checks:
//! - every blob record has its complete file (size and digest match);
//! - every file under `content/blobs` holds exactly the bytes its name says (nothing
//!   half-published);
//! - the interrupted ingest resumes at the bytes on disk, and finishing it commits the blob.
//!
//! Snapshot failpoints run for the native snapshotter (always) and overlay (where it mounts).
//! After reopening: every snapshot record names an existing directory, the interrupted
//! operation either happened or did not, the directories no record names are exactly the one
//! orphan that failpoint's window leaves (reclaiming them is the garbage collector's), and the
//! snapshotter keeps working next to the orphan.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use strata_snapshotter::{Kind, Snapshotter};
use strata_store::content::WriterOptions;
use strata_store::{Digest, ErrorKind, Store};

use crate::snapshots::{Mounted, Work, unrecorded_dirs};
use crate::support::{
    TestStore, assert_killed_at, bytes, labels, put_blob, run_child_test, scope, sha256,
    small_options, snapshotter,
};

const CHILD_FAILPOINT: &str = "STRATA_CRASH_FAILPOINT";
const CHILD_ROOT: &str = "STRATA_CRASH_ROOT";
const CHILD_SNAPSHOTTER: &str = "STRATA_CRASH_SNAPSHOTTER";
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
    if failpoint.starts_with("snapshot.") {
        snapshot_child(&store, &failpoint);
        // Reaching this line means the failpoint was never hit.
        std::process::exit(3);
    }
    if failpoint.starts_with("unpack.") {
        unpack_child(&store, &failpoint, Path::new(&root));
        std::process::exit(3);
    }
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
    run_child_with(failpoint, root, &[]);
}

fn run_child_with(failpoint: &str, root: &Path, envs: &[(&str, &str)]) {
    let mut all: Vec<(&str, &std::ffi::OsStr)> = vec![
        (CHILD_FAILPOINT, failpoint.as_ref()),
        (CHILD_ROOT, root.as_os_str()),
    ];
    all.extend(envs.iter().map(|(k, v)| (*k, v.as_ref())));
    let out = run_child_test("crash::crash_child", &all);
    assert_killed_at(&out, failpoint);
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
    let orphans = store.content().orphans().expect("orphans");
    assert!(
        orphans.contains(&store.layout().blob(&sha256(&payload()))),
        "the unrecorded blob file is listed as orphaned: {orphans:?}"
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
    for name in strata_snapshotter::FAILPOINTS {
        for backend in ["native", "overlay"] {
            let case = if name.starts_with("unpack.") {
                format!("unpack_crash_at(\"{backend}\", \"{name}\")")
            } else {
                format!("snap_crash_at(\"{backend}\", \"{name}\")")
            };
            assert!(
                source.contains(&case),
                "no kill -9 case for {name} on {backend}"
            );
        }
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

// ---------------------------------------------------------------------------------------------
// Snapshots.

/// The child's snapshot workload: a committed `base` (holding `/base`), then the operation
/// the failpoint interrupts: prepare `child` on `base`; commit `work` (holding `/written`) as
/// `done`; remove `victim` (holding `/victim`).
fn snapshot_child(store: &Store, failpoint: &str) {
    let backend = std::env::var(CHILD_SNAPSHOTTER).expect("snapshotter for the child");
    let sn = Snapshotter::open(store, &backend).expect("child snapshotter");
    let s = scope(NS);
    let write = |key: &str, file: &str| {
        let dir = sn.files(NS, key).expect("files");
        std::fs::write(dir.join(file), file).expect("write into the snapshot");
    };
    sn.prepare(&s, "base-a", None, labels(&[]))
        .expect("prepare base");
    write("base-a", "base");
    sn.commit(&s, "base", "base-a", labels(&[]))
        .expect("commit base");
    if failpoint.starts_with("snapshot.commit.") {
        sn.prepare(&s, "work", Some("base"), labels(&[]))
            .expect("prepare work");
        write("work", "written");
    } else if failpoint.starts_with("snapshot.remove.") {
        sn.prepare(&s, "victim", Some("base"), labels(&[]))
            .expect("prepare victim");
        write("victim", "victim");
    }
    fail::cfg(failpoint, "return(kill)").expect("arm failpoint");
    if failpoint.starts_with("snapshot.prepare.") {
        let _ = sn.prepare(&s, "child", Some("base"), labels(&[("k", "v")]));
    } else if failpoint.starts_with("snapshot.commit.") {
        let _ = sn.commit(&s, "done", "work", labels(&[("k", "v")]));
    } else if failpoint.starts_with("snapshot.remove.") {
        let _ = sn.remove(&s, "victim");
    }
}

/// A root after a child was killed at a snapshot failpoint, reopened.
struct SnapCrash {
    _dir: tempfile::TempDir,
    store: Store,
    sn: Snapshotter,
    /// Entries of `snapshots/<sn>/` that no record names.
    left: Vec<String>,
}

impl SnapCrash {
    fn kind(&self, key: &str) -> Option<Kind> {
        match self.sn.stat(NS, key) {
            Ok(info) => Some(info.kind),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("stat {key}: {e}"),
        }
    }

    /// The single unrecorded entry, which must be named `<prefix><id>`; returns its path.
    fn single_orphan(&self, prefix: &str) -> std::path::PathBuf {
        assert_eq!(self.left.len(), 1, "exactly one orphan: {:?}", self.left);
        let name = &self.left[0];
        let id = name
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("orphan {name:?} should start with {prefix:?}"));
        assert!(
            id.parse::<u64>().is_ok(),
            "orphan {name:?} is named by an id"
        );
        self.sn.root().join(name)
    }

    /// The snapshotter keeps working next to what the crash left: a new layer on `base`
    /// mounts, commits and goes away, and the orphans are unchanged (no id collides).
    fn still_works(&self) {
        let s = scope(NS);
        let work = Work::new();
        let m = self
            .sn
            .prepare(&s, "after-crash", Some("base"), labels(&[]))
            .expect("prepare after the crash");
        {
            let g = Mounted::new(&m, work.mountpoint("after-crash"));
            assert_eq!(std::fs::read(g.path().join("base")).expect("base"), b"base");
            std::fs::write(g.path().join("new"), "new").expect("write");
        }
        self.sn
            .commit(&s, "after-crash-c", "after-crash", labels(&[]))
            .expect("commit after the crash");
        self.sn.remove(&s, "after-crash-c").expect("remove");
        assert_eq!(unrecorded_dirs(&self.store, &self.sn), self.left);
    }
}

/// Runs the snapshot workload for `failpoint` on `backend` in a child killed there, reopens
/// the root and checks what always holds. `None` when overlay cannot mount on this host.
fn snap_crash_at(backend: &str, failpoint: &str) -> Option<SnapCrash> {
    if backend == "overlay" {
        let probe = TestStore::new();
        snapshotter(&probe.store, "overlay")?;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    run_child_with(failpoint, dir.path(), &[(CHILD_SNAPSHOTTER, backend)]);
    let store = Store::open(dir.path(), small_options()).expect("reopen after kill -9");
    check_invariants(&store);
    let sn = Snapshotter::open(&store, backend).expect("snapshotter after reopen");
    // Every record names an existing directory (checked while listing the orphans).
    let left = unrecorded_dirs(&store, &sn);
    // The library lists the same leftovers (for `gcctl info`) as this test's own walk.
    let listed: Vec<String> = sn
        .orphans()
        .expect("orphans")
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut expected = left.clone();
    expected.sort();
    assert_eq!(listed, expected, "Snapshotter::orphans");
    let base = sn.stat(NS, "base").expect("base survives");
    assert_eq!(base.kind, Kind::Committed);
    let base_files = sn.files(NS, "base").expect("base files");
    assert_eq!(
        std::fs::read(base_files.join("base")).expect("base"),
        b"base"
    );
    eprintln!("{backend} {failpoint}: unrecorded {left:?}");
    Some(SnapCrash {
        _dir: dir,
        store,
        sn,
        left,
    })
}

/// Killed while the new directory is still `new-<id>`: no record; the staging directory is
/// the orphan.
fn check_prepare_before_rename(c: &SnapCrash) {
    assert_eq!(c.kind("child"), None, "no record before the transaction");
    let orphan = c.single_orphan("new-");
    assert!(orphan.join("fs").is_dir(), "the staged tree is complete");
    if c.sn.name() == "native" {
        assert_eq!(
            std::fs::read(orphan.join("fs/base")).expect("copied parent"),
            b"base"
        );
    } else {
        assert!(orphan.join("work").is_dir());
    }
    c.still_works();
}

/// Killed after the rename into `<id>`, before the record: the `<id>` directory is the
/// orphan.
fn check_prepare_after_rename(c: &SnapCrash) {
    assert_eq!(c.kind("child"), None, "no record before the transaction");
    let orphan = c.single_orphan("");
    assert!(orphan.join("fs").is_dir());
    if c.sn.name() == "native" {
        assert_eq!(
            std::fs::read(orphan.join("fs/base")).expect("copied parent"),
            b"base"
        );
    }
    c.still_works();
}

/// Killed after the transaction: the snapshot exists, complete and mountable; no orphan.
fn check_prepare_after_db(c: &SnapCrash) {
    let info = c.sn.stat(NS, "child").expect("recorded");
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert_eq!(info.labels, labels(&[("k", "v")]));
    assert_eq!(c.left, Vec::<String>::new());
    let work = Work::new();
    let m = c.sn.mounts(NS, "child").expect("mounts");
    {
        let g = Mounted::new(&m, work.mountpoint("child"));
        assert_eq!(std::fs::read(g.path().join("base")).expect("base"), b"base");
        std::fs::write(g.path().join("more"), "more").expect("write");
    }
    c.sn.commit(&scope(NS), "child-c", "child", labels(&[]))
        .expect("commit the recovered snapshot");
    c.still_works();
}

/// Killed before the commit transaction: `work` is still active with what was written;
/// `done` does not exist; the commit can be retried.
fn check_commit_before_db(c: &SnapCrash) {
    assert_eq!(
        c.kind("work"),
        Some(Kind::Active),
        "the key is still active"
    );
    assert_eq!(c.kind("done"), None);
    assert_eq!(c.left, Vec::<String>::new());
    let files = c.sn.files(NS, "work").expect("files");
    assert_eq!(
        std::fs::read(files.join("written")).expect("written"),
        b"written"
    );
    c.sn.commit(&scope(NS), "done", "work", labels(&[]))
        .expect("retried commit");
    assert_eq!(c.kind("done"), Some(Kind::Committed));
    c.still_works();
}

/// Killed after the commit transaction: `done` is committed (same directory, usage
/// recorded) and `work` is gone; no orphan.
fn check_commit_after_db(c: &SnapCrash) {
    assert_eq!(c.kind("work"), None, "the key is gone");
    let info = c.sn.stat(NS, "done").expect("committed");
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert_eq!(info.labels, labels(&[("k", "v")]));
    assert_eq!(c.left, Vec::<String>::new());
    let files = c.sn.files(NS, "done").expect("files");
    assert_eq!(
        std::fs::read(files.join("written")).expect("written"),
        b"written"
    );
    let usage = c.sn.usage(NS, "done").expect("usage");
    assert!(usage.inodes >= 2, "usage recorded at commit: {usage:?}");
    c.still_works();
}

/// Killed after the remove transaction, before the directory was renamed `rm-<id>`: the
/// record is gone and the victim's `<id>` directory is the orphan.
fn check_remove_after_db(c: &SnapCrash) {
    assert_eq!(c.kind("victim"), None, "the remove committed");
    let orphan = c.single_orphan("");
    assert_eq!(
        std::fs::read(orphan.join("fs/victim")).expect("the victim's files"),
        b"victim"
    );
    c.still_works();
}

#[test]
fn kill_native_snapshot_prepare_before_rename() {
    if let Some(c) = snap_crash_at("native", "snapshot.prepare.before_rename") {
        check_prepare_before_rename(&c);
    }
}

#[test]
fn kill_overlay_snapshot_prepare_before_rename() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.prepare.before_rename") {
        check_prepare_before_rename(&c);
    }
}

#[test]
fn kill_native_snapshot_prepare_after_rename() {
    if let Some(c) = snap_crash_at("native", "snapshot.prepare.after_rename") {
        check_prepare_after_rename(&c);
    }
}

#[test]
fn kill_overlay_snapshot_prepare_after_rename() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.prepare.after_rename") {
        check_prepare_after_rename(&c);
    }
}

#[test]
fn kill_native_snapshot_prepare_after_db() {
    if let Some(c) = snap_crash_at("native", "snapshot.prepare.after_db") {
        check_prepare_after_db(&c);
    }
}

#[test]
fn kill_overlay_snapshot_prepare_after_db() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.prepare.after_db") {
        check_prepare_after_db(&c);
    }
}

#[test]
fn kill_native_snapshot_commit_before_db() {
    if let Some(c) = snap_crash_at("native", "snapshot.commit.before_db") {
        check_commit_before_db(&c);
    }
}

#[test]
fn kill_overlay_snapshot_commit_before_db() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.commit.before_db") {
        check_commit_before_db(&c);
    }
}

#[test]
fn kill_native_snapshot_commit_after_db() {
    if let Some(c) = snap_crash_at("native", "snapshot.commit.after_db") {
        check_commit_after_db(&c);
    }
}

#[test]
fn kill_overlay_snapshot_commit_after_db() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.commit.after_db") {
        check_commit_after_db(&c);
    }
}

#[test]
fn kill_native_snapshot_remove_after_db() {
    if let Some(c) = snap_crash_at("native", "snapshot.remove.after_db") {
        check_remove_after_db(&c);
    }
}

#[test]
fn kill_overlay_snapshot_remove_after_db() {
    if let Some(c) = snap_crash_at("overlay", "snapshot.remove.after_db") {
        check_remove_after_db(&c);
    }
}

// --- unpack ---------------------------------------------------------------------------------

const SAMPLE: &str = "docker.io/strata/sample:latest";

/// The child of the unpack cases: imports the sample image, then unpacks it with the failpoint
/// armed.
fn unpack_child(store: &Store, failpoint: &str, root: &Path) {
    use strata_snapshotter::image::{import, unpack};
    let backend = std::env::var(CHILD_SNAPSHOTTER).expect("snapshotter for the child");
    let sn = Snapshotter::open(store, &backend).expect("child snapshotter");
    let image = strata_tests::fixture::sample().expect("sample image");
    let archive = root.with_extension("sample.tar");
    strata_tests::fixture::OciLayout::new(&[&image])
        .write_archive(&archive)
        .expect("archive");
    import::import(
        store,
        &scope(NS),
        &archive,
        &import::ImportOptions::default(),
        &mut |_| {},
    )
    .expect("import");
    fail::cfg(failpoint, "return(kill)").expect("arm failpoint");
    let _ = unpack::unpack(store, &sn, &scope(NS), SAMPLE, &|_| {});
}

/// Kills an unpack at `failpoint`, reopens, checks that no record names a missing directory,
/// and that unpacking again completes. Returns the store, the snapshotter, and what the
/// interrupted unpack left (committed chain IDs, extraction snapshots).
fn unpack_crash_at(
    backend: &str,
    failpoint: &str,
) -> Option<(
    tempfile::TempDir,
    Store,
    Snapshotter,
    Vec<strata_snapshotter::Info>,
)> {
    use strata_snapshotter::image::unpack;
    if backend == "overlay" {
        let probe = TestStore::new();
        snapshotter(&probe.store, "overlay")?;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    run_child_with(failpoint, &root, &[(CHILD_SNAPSHOTTER, backend)]);
    let store = Store::open(&root, small_options()).expect("reopen after kill -9");
    check_invariants(&store);
    let sn = Snapshotter::open(&store, backend).expect("snapshotter after reopen");
    let left = unrecorded_dirs(&store, &sn);
    let before = sn.list::<&str>(NS, &[]).expect("list");
    for info in &before {
        assert!(
            sn.files(NS, &info.name).expect("files").is_dir(),
            "record {} names a missing directory",
            info.name
        );
    }
    eprintln!(
        "{backend} {failpoint}: snapshots {:?}, unrecorded {left:?}",
        before.iter().map(|i| (&i.name, i.kind)).collect::<Vec<_>>()
    );
    // The interrupted unpack does not stand in the way of the next one.
    let done =
        unpack::unpack(&store, &sn, &scope(NS), SAMPLE, &|_| {}).expect("unpack after the crash");
    assert_eq!(
        sn.stat(NS, &done.chain_id.to_string()).expect("top").kind,
        Kind::Committed
    );
    let (_, manifest) = unpack::resolve_manifest(&store, NS, SAMPLE).expect("manifest");
    let config = store
        .content()
        .info(NS, &manifest.config.digest)
        .expect("config");
    assert_eq!(
        config
            .labels
            .get(&format!("containerd.io/gc.ref.snapshot.{backend}")),
        Some(&done.chain_id.to_string())
    );
    Some((dir, store, sn, before))
}

fn extraction_keys(infos: &[strata_snapshotter::Info]) -> Vec<&str> {
    infos
        .iter()
        .filter(|i| i.name.starts_with("extract-"))
        .map(|i| i.name.as_str())
        .collect()
}

fn committed_chain_ids(infos: &[strata_snapshotter::Info]) -> usize {
    infos
        .iter()
        .filter(|i| i.kind == Kind::Committed && i.name.starts_with("sha256:"))
        .count()
}

#[test]
fn kill_native_unpack_after_prepare() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("native", "unpack.after_prepare") {
        assert_eq!(
            extraction_keys(&left).len(),
            1,
            "the prepared extraction snapshot stays (leased)"
        );
        assert_eq!(committed_chain_ids(&left), 0);
    }
}

#[test]
fn kill_overlay_unpack_after_prepare() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("overlay", "unpack.after_prepare") {
        assert!(!extraction_keys(&left).is_empty());
        assert_eq!(committed_chain_ids(&left), 0);
    }
}

#[test]
fn kill_native_unpack_after_apply() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("native", "unpack.after_apply") {
        assert_eq!(extraction_keys(&left).len(), 1);
        assert_eq!(
            committed_chain_ids(&left),
            0,
            "nothing is committed before its data is synced"
        );
    }
}

#[test]
fn kill_overlay_unpack_after_apply() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("overlay", "unpack.after_apply") {
        assert!(!extraction_keys(&left).is_empty());
        assert_eq!(committed_chain_ids(&left), 0);
    }
}

#[test]
fn kill_native_unpack_after_commit() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("native", "unpack.after_commit") {
        assert_eq!(
            committed_chain_ids(&left),
            1,
            "the first layer is committed, the rest is not"
        );
        assert!(extraction_keys(&left).is_empty());
    }
}

#[test]
fn kill_overlay_unpack_after_commit() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("overlay", "unpack.after_commit") {
        assert_eq!(committed_chain_ids(&left), 1);
    }
}

#[test]
fn kill_native_unpack_before_config_label() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("native", "unpack.before_config_label") {
        assert_eq!(committed_chain_ids(&left), 3, "every layer committed");
        assert!(extraction_keys(&left).is_empty());
    }
}

#[test]
fn kill_overlay_unpack_before_config_label() {
    if let Some((_d, _s, _sn, left)) = unpack_crash_at("overlay", "unpack.before_config_label") {
        assert_eq!(committed_chain_ids(&left), 3);
        assert!(extraction_keys(&left).is_empty());
    }
}
