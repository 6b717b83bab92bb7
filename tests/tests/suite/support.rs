//! Helpers shared by the suites.

use std::collections::BTreeMap;
use std::io::Write;

use strata_store::content::WriterOptions;
use strata_store::{Digest, Scope, Store, StoreOptions};
use tempfile::TempDir;

/// A store in a fresh temporary directory, removed when dropped.
pub struct TestStore {
    pub store: Store,
    pub dir: TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), small_options()).expect("open store");
        TestStore { store, dir }
    }

    /// Closes the store and opens it again on the same root.
    pub fn reopen(self) -> TestStore {
        let TestStore { store, dir } = self;
        drop(store);
        let store = Store::open(dir.path(), small_options()).expect("reopen store");
        TestStore { store, dir }
    }
}

pub fn small_options() -> StoreOptions {
    let mut o = StoreOptions::default();
    o.cache_size = 4 << 20;
    o
}

pub fn scope(ns: &str) -> Scope {
    Scope::new(ns).expect("valid namespace")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Writes `data` under `reference` and commits it with `labels`, returning the digest.
pub fn put_blob(
    store: &Store,
    scope: &Scope,
    reference: &str,
    data: &[u8],
    lbls: BTreeMap<String, String>,
) -> Digest {
    let mut w = store
        .content()
        .writer(scope, reference, WriterOptions::default())
        .expect("open writer");
    w.write_all(data).expect("write");
    w.commit(data.len() as u64, None, lbls).expect("commit")
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(strata_store::Algorithm::Sha256, data)
}

/// Deterministic pseudo-random bytes (the fixture library's generator).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    strata_tests::fixture::noise(seed, len)
}

/// The snapshotter `name` on `store`. Overlay needs root and the overlay module: where it is
/// missing this returns `None` (the caller skips), unless `STRATA_REQUIRE_OVERLAY=1` (as in CI),
/// where a missing capability fails the test instead of letting it pass by not running.
pub fn snapshotter(store: &Store, name: &str) -> Option<strata_snapshotter::Snapshotter> {
    match strata_snapshotter::Snapshotter::open(store, name) {
        Ok(s) => Some(s),
        Err(e)
            if name == "overlay"
                && std::env::var("STRATA_REQUIRE_OVERLAY").as_deref() != Ok("1") =>
        {
            eprintln!("skipping overlay: {e}");
            None
        }
        Err(e) => panic!("snapshotter {name} unavailable: {e}"),
    }
}

/// Whether the interop tool `tool` (skopeo, umoci) is on PATH. Without it: a failure under
/// `STRATA_REQUIRE_INTEROP=1` (as in CI), else a skip (false) with a message.
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if !found {
        let msg = format!(
            "{tool} is not on PATH; run scripts/install-test-deps.sh to install skopeo and umoci"
        );
        assert!(
            std::env::var("STRATA_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("skipping: {msg}");
    }
    found
}

/// Runs the ignored test `test` of this test binary alone in a child process, with `envs`
/// set: how the crash tests get a process they can kill at a failpoint.
pub fn run_child_test(test: &str, envs: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn child")
}

/// Asserts that a child of [`run_child_test`] died of SIGKILL, as a failpoint armed with
/// `return(kill)` makes it.
pub fn assert_killed_at(out: &std::process::Output, failpoint: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "child for {failpoint} was not killed at the failpoint: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
