//! gcctl end to end: each test runs the real binary on a store root in its own temporary
//! directory, and checks stdout, stderr and the exit status (0 ok, 2 error).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// A temporary directory holding the store root (`root/`) and input files.
struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A file in the temporary directory holding `data`.
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).expect("write input file");
        path
    }

    /// `gcctl --root <root> ARGS` with none of gcctl's environment variables inherited.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("gcctl").expect("gcctl binary");
        c.env_remove("STRATA_ROOT")
            .env_remove("STRATA_NAMESPACE")
            .env_remove("RUST_LOG")
            .arg("--root")
            .arg(self.root())
            .args(args);
        c
    }

    /// Runs and asserts exit 0 and nothing on stderr; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run gcctl");
        ok_stdout(args, &out)
    }

    /// Runs with `data` on stdin (a pipe) and asserts success; returns stdout.
    fn ok_stdin(&self, args: &[&str], data: &[u8]) -> String {
        let out = self
            .cmd(args)
            .write_stdin(data.to_vec())
            .output()
            .expect("run gcctl");
        ok_stdout(args, &out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: bad JSON {e}: {stdout}"))
    }

    /// Runs and asserts exit 2, an empty stdout and a `gcctl: ` error; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run gcctl");
        error_stderr(args, &out)
    }

    fn fails_stdin(&self, args: &[&str], data: &[u8]) -> String {
        let out = self
            .cmd(args)
            .write_stdin(data.to_vec())
            .output()
            .expect("run gcctl");
        error_stderr(args, &out)
    }
}

fn ok_stdout(args: &[&str], out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn error_stderr(args: &[&str], out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed on error: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

/// Deterministic pseudo-random bytes (xorshift64*); different seeds give different bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    // Not `seed | 1`: that maps 2n and 2n+1 to the same stream.
    let mut x = (seed << 1) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn strings(v: &Value, field: &str) -> BTreeSet<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| item[field].as_str().expect("a string field").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn ingest_then_ls_and_get_return_the_exact_bytes() {
    let env = Env::new();
    let data = random_bytes(1, 3 << 20);
    let digest = sha256(&data);

    let printed = env.ok_stdin(
        &["content", "ingest", "r1", "--label", "team=storage"],
        &data,
    );
    assert_eq!(printed.trim(), digest);

    let list = env.json(&["content", "ls"]);
    let blobs = list.as_array().expect("array");
    assert_eq!(blobs.len(), 1, "{list}");
    assert_eq!(blobs[0]["digest"], digest.as_str());
    assert_eq!(blobs[0]["size"], data.len());
    assert_eq!(blobs[0]["labels"]["team"], "storage");

    let table = env.ok(&["content", "ls"]);
    assert!(table.starts_with("DIGEST"), "{table}");
    assert!(
        table.contains(&digest) && table.contains("team=storage"),
        "{table}"
    );

    let info = env.json(&["content", "info", &digest]);
    assert_eq!(info["size"], data.len());

    let out = env
        .cmd(&["content", "get", &digest])
        .output()
        .expect("run gcctl");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "content get returned different bytes");

    // Nothing left in flight.
    assert_eq!(env.json(&["content", "active"]), serde_json::json!([]));
}

#[test]
fn ingest_with_wrong_digest_fails_names_both_and_adds_nothing() {
    let env = Env::new();
    let data = random_bytes(2, 1 << 20);
    let digest = sha256(&data);

    let err = env.fails_stdin(
        &["content", "ingest", "r2", "--expected-digest", ZERO_DIGEST],
        &data,
    );
    assert!(err.starts_with("gcctl: "), "{err}");
    assert!(err.contains(ZERO_DIGEST) && err.contains(&digest), "{err}");
    assert_eq!(env.json(&["content", "ls"]), serde_json::json!([]));

    // The ingest is kept for a retry, with its bytes; a retry with the right digest resumes
    // it (stdin's start matches what it holds) and commits.
    let active = env.json(&["content", "active"]);
    assert_eq!(strings(&active, "ref"), set(&["r2"]));
    assert_eq!(active[0]["offset"], data.len());
    assert_eq!(active[0]["expected"], ZERO_DIGEST);

    let printed = env.ok_stdin(
        &["content", "ingest", "r2", "--expected-digest", &digest],
        &data,
    );
    assert_eq!(printed.trim(), digest);
    assert_eq!(
        strings(&env.json(&["content", "ls"]), "digest"),
        set(&[&digest])
    );
    assert_eq!(env.json(&["content", "active"]), serde_json::json!([]));
}

#[test]
fn ingest_size_mismatch_and_abort() {
    let env = Env::new();
    let data = random_bytes(3, 1000);

    let err = env.fails_stdin(&["content", "ingest", "r", "--expected-size", "999"], &data);
    assert!(err.contains("999") && err.contains("1000"), "{err}");
    assert_eq!(env.json(&["content", "ls"]), serde_json::json!([]));

    // A pipe cannot be rewound, so different bytes for a held ingest are refused, naming it.
    let other = random_bytes(4, 1000);
    let err = env.fails_stdin(&["content", "ingest", "r"], &other);
    assert!(
        err.contains("\"r\"") && err.contains("content abort r"),
        "{err}"
    );

    // A regular file can: the ingest restarts from its first byte.
    let path = env.file("other", &other);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcctl"))
        .arg("--root")
        .arg(env.root())
        .args(["content", "ingest", "r"])
        .stdin(File::open(&path).expect("open input"))
        .output()
        .expect("run gcctl");
    assert_eq!(
        ok_stdout(&["content", "ingest", "r"], &out).trim(),
        sha256(&other)
    );

    env.fails_stdin(&["content", "ingest", "s", "--expected-size", "1"], &data);
    assert_eq!(env.ok(&["content", "abort", "s"]).trim(), "s");
    assert_eq!(env.json(&["content", "active"]), serde_json::json!([]));
    let err = env.fails(&["content", "abort", "s"]);
    assert!(err.contains("ingest \"s\" not found"), "{err}");
}

#[test]
fn a_root_held_by_another_process_is_refused_naming_its_pid() {
    let env = Env::new();
    let store = strata_store::Store::open(env.root(), strata_store::StoreOptions::default())
        .expect("open store in the test process");
    let err = env.fails(&["info"]);
    let pid = std::process::id().to_string();
    assert!(err.contains(&pid), "pid {pid} not named: {err}");
    assert!(err.contains("busy"), "{err}");
    drop(store);
    env.ok(&["info"]);
}

/// Fills the store with some records, closes it, and overwrites 4 KiB at `at(len)`.
fn damaged_store(at: impl Fn(u64) -> u64) -> Env {
    let env = Env::new();
    let mut digests = Vec::new();
    for i in 0..5 {
        let data = random_bytes(10 + i, 5000 * (usize::try_from(i).unwrap_or(0) + 1));
        digests.push(env.ok_stdin(&["content", "ingest", &format!("r{i}")], &data));
    }
    for (i, d) in digests.iter().enumerate() {
        env.ok(&[
            "images",
            "create",
            &format!("registry.example/app{i}:1"),
            "--target",
            d.trim(),
            "--media-type",
            MANIFEST,
            "--size",
            "5000",
            "--label",
            "k=v",
        ]);
    }
    env.ok(&["leases", "create", "--id", "l1"]);
    let meta = env.root().join("meta.redb");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&meta)
        .expect("open meta.redb");
    let len = f.metadata().expect("stat meta.redb").len();
    f.seek(SeekFrom::Start(at(len))).expect("seek");
    f.write_all(&[0xAB; 4096]).expect("overwrite");
    f.sync_all().expect("sync");
    env
}

#[test]
fn a_damaged_database_is_an_error_naming_the_file() {
    let env = damaged_store(|len| len / 2);
    let err = env.fails(&["info"]);
    assert!(err.contains("meta.redb"), "{err}");
    assert!(err.contains("damaged"), "{err}");
    // Nothing was changed: it stays refused.
    env.fails(&["content", "ls"]);
}

#[test]
fn a_damaged_database_is_detected_by_redb_alone() {
    // Without the store's clean-close seal, redb's own integrity check must still refuse the
    // midpoint overwrite. Other offsets may land in free pages and go unnoticed; they must
    // never panic.
    for (name, at) in [
        ("midpoint", (|len| len / 2) as fn(u64) -> u64),
        ("start", |_| 0),
        ("second page", |_| 4096),
        ("three quarters", |len| len / 4 * 3),
    ] {
        let env = damaged_store(at);
        let _ = std::fs::remove_file(env.root().join("meta.redb.seal"));
        let out = env.cmd(&["info"]).output().expect("run gcctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        match out.status.code() {
            Some(0) => assert_ne!(name, "midpoint", "midpoint damage went unnoticed"),
            Some(2) => assert!(stderr.contains("meta.redb"), "{name}: {stderr}"),
            other => panic!("{name}: exit {other:?}: {stderr}"),
        }
    }
}

fn create_image(env: &Env, name: &str, digest: &str, labels: &[&str]) {
    let mut args = vec![
        "images",
        "create",
        name,
        "--target",
        digest,
        "--media-type",
        MANIFEST,
        "--size",
        "42",
    ];
    for l in labels {
        args.extend(["--label", l]);
    }
    assert_eq!(env.ok(&args).trim(), name);
}

#[test]
fn images_create_ls_and_filters_select_like_containerd() {
    let env = Env::new();
    let d = sha256(b"manifest");
    create_image(&env, "registry.example/a", &d, &["k=v"]);
    create_image(&env, "registry.example/b", &d, &[]);
    create_image(&env, "docker.io/c", &d, &["k=v"]);
    create_image(&env, "docker.io/d", &d, &["k=w"]);

    let all = env.json(&["images", "ls"]);
    assert_eq!(all.as_array().map(Vec::len), Some(4));
    let a = all
        .as_array()
        .and_then(|v| v.iter().find(|i| i["name"] == "registry.example/a"))
        .expect("image a listed");
    assert_eq!(a["target"]["digest"], d.as_str());
    assert_eq!(a["target"]["media_type"], MANIFEST);
    assert_eq!(a["target"]["size"], 42);
    assert_eq!(a["labels"]["k"], "v");

    let names = |filters: &[&str]| {
        let mut args = vec!["images", "ls"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        strings(&env.json(&args), "name")
    };
    assert_eq!(
        names(&["name~=^reg"]),
        set(&["registry.example/a", "registry.example/b"])
    );
    assert_eq!(
        names(&["labels.\"k\"==v"]),
        set(&["registry.example/a", "docker.io/c"])
    );
    // Comma is AND, repeated --filter is OR; != also matches an absent label.
    assert_eq!(
        names(&["name~=^reg,labels.k==v"]),
        set(&["registry.example/a"])
    );
    assert_eq!(
        names(&["name==docker.io/d", "name==registry.example/b"]),
        set(&["docker.io/d", "registry.example/b"])
    );
    assert_eq!(
        names(&["labels.k!=v"]),
        set(&["registry.example/b", "docker.io/d"])
    );
    assert_eq!(names(&["labels.k"]).len(), 3);

    let table = env.ok(&["images", "ls", "--filter", "name==docker.io/c"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("TYPE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("docker.io/c ") && lines[1].contains(&d),
        "{table}"
    );
}

#[test]
fn images_tag_label_and_rm() {
    let env = Env::new();
    let d = sha256(b"m");
    create_image(&env, "src", &d, &["a=1", "b=2"]);
    assert_eq!(env.ok(&["images", "tag", "src", "dst"]).trim(), "dst");
    env.ok(&["images", "label", "dst", "a=", "c=3"]);

    let images = env.json(&["images", "ls", "--filter", "name==dst"]);
    assert_eq!(images[0]["target"]["digest"], d.as_str());
    assert_eq!(images[0]["labels"], serde_json::json!({"b": "2", "c": "3"}));

    let err = env.fails(&["images", "tag", "src", "dst"]);
    assert!(err.contains("\"dst\" already exists"), "{err}");
    env.ok(&["images", "tag", "--force", "src", "dst"]);
    let images = env.json(&["images", "ls", "--filter", "name==dst"]);
    assert_eq!(images[0]["labels"], serde_json::json!({"a": "1", "b": "2"}));

    // Removing a missing name fails naming it, after removing the others.
    let out = env
        .cmd(&["images", "rm", "src", "nope", "dst"])
        .output()
        .expect("run gcctl");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "src\ndst\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("image \"nope\" not found"));
    assert_eq!(env.json(&["images", "ls"]), serde_json::json!([]));
}

#[test]
fn namespaces_create_label_ls_and_rm() {
    let env = Env::new();
    assert_eq!(
        env.ok(&["ns", "create", "team-a", "--label", "x=1"]).trim(),
        "team-a"
    );
    env.ok(&["ns", "label", "team-a", "x=", "y=2"]);
    let list = env.json(&["ns", "ls"]);
    let ns = list
        .as_array()
        .and_then(|v| v.iter().find(|n| n["name"] == "team-a"))
        .expect("team-a listed");
    assert_eq!(ns["labels"], serde_json::json!({"y": "2"}));
    assert!(env.ok(&["ns", "ls"]).contains("y=2"));

    create_image(&env, "img", &sha256(b"x"), &[]);
    // The image went to "default"; put one in team-a with -n.
    env.ok(&[
        "-n",
        "team-a",
        "images",
        "create",
        "img",
        "--target",
        &sha256(b"x"),
        "--media-type",
        MANIFEST,
        "--size",
        "1",
    ]);
    let err = env.fails(&["ns", "rm", "team-a"]);
    assert!(err.contains("team-a") && err.contains("images"), "{err}");

    env.ok(&["-n", "team-a", "images", "rm", "img"]);
    assert_eq!(env.ok(&["ns", "rm", "team-a"]).trim(), "team-a");
    assert!(!strings(&env.json(&["ns", "ls"]), "name").contains("team-a"));
    // The default namespace kept its image.
    assert_eq!(strings(&env.json(&["images", "ls"]), "name"), set(&["img"]));

    let err = env.fails(&["ns", "create", "bad/name"]);
    assert!(err.contains("bad/name"), "{err}");
}

#[test]
fn leases_create_expire_resources_and_rm() {
    let env = Env::new();
    let id = env.ok(&[
        "leases",
        "create",
        "--id",
        "l1",
        "--expires",
        "1h",
        "--label",
        "who=me",
    ]);
    assert_eq!(id.trim(), "l1");
    let never = env.ok(&["leases", "create", "--id", "forever", "--expires", "0"]);
    assert_eq!(never.trim(), "forever");
    let generated = env.ok(&["leases", "create"]);
    let (nanos, suffix) = generated.trim().split_once('-').expect("<nanos>-<random>");
    assert!(
        nanos.parse::<u64>().is_ok() && suffix.len() == 6,
        "{generated}"
    );

    let leases = env.json(&["leases", "ls"]);
    let find = |id: &str| {
        leases
            .as_array()
            .and_then(|v| v.iter().find(|l| l["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("lease {id} not listed: {leases}"))
    };
    let l1 = find("l1");
    let expires = l1["expires_at"].as_str().expect("l1 expires");
    assert_eq!(l1["labels"]["containerd.io/gc.expire"], expires);
    assert_eq!(l1["labels"]["who"], "me");
    // One hour after creation: compare the hour digits loosely via the date-time ordering.
    let created = l1["created_at"].as_str().expect("created_at");
    assert!(expires > created, "{expires} <= {created}");
    assert!(find("forever")["expires_at"].is_null());
    assert!(
        find(generated.trim())["expires_at"].is_string(),
        "default is 24h"
    );

    let table = env.ok(&["leases", "ls", "--filter", "id==l1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("EXPIRES"), "{table}");
    assert!(lines[1].contains(&expires[..19]), "EXPIRES column: {table}");

    let d = sha256(b"c");
    env.ok(&["leases", "add", "l1", "content", &d]);
    env.ok(&["leases", "add", "l1", "images", "img"]);
    env.ok(&["leases", "add", "l1", "snapshots/overlay", "key"]);
    let resources = env.json(&["leases", "resources", "l1"]);
    assert_eq!(
        resources,
        serde_json::json!([
            {"type": "content", "id": d},
            {"type": "images", "id": "img"},
            {"type": "snapshots/overlay", "id": "key"},
        ])
    );
    env.ok(&["leases", "rm-resource", "l1", "images", "img"]);
    assert_eq!(
        env.json(&["leases", "resources", "l1"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // `ls` counts what each lease holds, and marks an expired lease.
    let listed = env.json(&["leases", "ls"]);
    let held = |id: &str| {
        listed
            .as_array()
            .and_then(|v| v.iter().find(|l| l["id"] == id))
            .map(|l| l["resources"].clone())
    };
    assert_eq!(held("l1"), Some(serde_json::json!(2)));
    assert_eq!(held("forever"), Some(serde_json::json!(0)));
    env.ok(&[
        "leases",
        "create",
        "--id",
        "gone",
        "--expires",
        "0",
        "--label",
        "containerd.io/gc.expire=2000-01-01T00:00:00Z",
    ]);
    let table = env.ok(&["leases", "ls", "--filter", "id==gone"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("RESOURCES")),
        "{table}"
    );
    assert!(table.contains("(expired)"), "{table}");
    env.ok(&["leases", "rm", "gone"]);

    let err = env.fails(&["leases", "add", "l1", "content", "not-a-digest"]);
    assert!(err.contains("not-a-digest"), "{err}");
    let err = env.fails(&["leases", "add", "nope", "images", "img"]);
    assert!(err.contains("lease \"nope\" not found"), "{err}");

    env.ok(&["leases", "rm", "l1", "forever"]);
    assert_eq!(
        strings(&env.json(&["leases", "ls"]), "id"),
        set(&[generated.trim()])
    );
}

#[test]
fn ingest_under_a_lease_adds_the_blob_to_it() {
    let env = Env::new();
    env.ok(&["leases", "create", "--id", "pull"]);
    let data = random_bytes(5, 4096);
    let digest = env.ok_stdin(&["content", "ingest", "layer", "--lease", "pull"], &data);
    assert_eq!(
        env.json(&["leases", "resources", "pull"]),
        serde_json::json!([{"type": "content", "id": digest.trim()}])
    );

    // The same bytes again under another lease: the blob exists, and still joins that lease.
    env.ok(&["leases", "create", "--id", "again"]);
    let again = env.ok_stdin(&["content", "ingest", "layer2", "--lease", "again"], &data);
    assert_eq!(again, digest);
    assert_eq!(
        env.json(&["leases", "resources", "again"]),
        serde_json::json!([{"type": "content", "id": digest.trim()}])
    );
    // Likewise with --expected-digest, which skips the upload.
    env.ok(&["leases", "create", "--id", "third"]);
    env.ok_stdin(
        &[
            "content",
            "ingest",
            "layer3",
            "--lease",
            "third",
            "--expected-digest",
            digest.trim(),
        ],
        &data,
    );
    assert_eq!(
        env.json(&["leases", "resources", "third"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let err = env.fails_stdin(&["content", "ingest", "x", "--lease", "missing"], &data);
    assert!(err.contains("lease \"missing\" not found"), "{err}");
}

#[test]
fn content_label_rm_and_namespace_isolation() {
    let env = Env::new();
    let one = random_bytes(6, 100);
    let d1 = env.ok_stdin(&["content", "ingest", "one", "-l", "a=1"], &one);
    let d1 = d1.trim();
    let d2 = env.ok_stdin(&["content", "ingest", "two"], b"two");
    let d2 = d2.trim();

    env.ok(&["content", "label", d1, "a=", "b=2"]);
    assert_eq!(
        env.json(&["content", "info", d1])["labels"],
        serde_json::json!({"b": "2"})
    );
    // Ingesting bytes the namespace has already succeeds and adds the labels given.
    let again = env.ok_stdin(&["content", "ingest", "one-again", "-l", "c=3"], &one);
    assert_eq!(again.trim(), d1);
    assert_eq!(
        env.json(&["content", "info", d1])["labels"],
        serde_json::json!({"b": "2", "c": "3"})
    );
    let filtered = env.json(&["content", "ls", "--filter", "labels.b==2"]);
    assert_eq!(strings(&filtered, "digest"), set(&[d1]));

    // Another namespace sees none of it, through -n or STRATA_NAMESPACE.
    assert_eq!(
        env.json(&["-n", "other", "content", "ls"]),
        serde_json::json!([])
    );
    let out = env
        .cmd(&["content", "ls", "--json"])
        .env("STRATA_NAMESPACE", "other")
        .output()
        .expect("run gcctl");
    assert_eq!(ok_stdout(&["content", "ls"], &out).trim(), "[]");
    let err = env.fails(&["-n", "other", "content", "get", d1]);
    assert!(err.contains(d1) && err.contains("not found"), "{err}");

    let removed = env.json(&["content", "rm", d1, d2]);
    assert_eq!(removed, serde_json::json!({"removed": [d1, d2]}));
    assert_eq!(env.json(&["content", "ls"]), serde_json::json!([]));
    let err = env.fails(&["content", "rm", d1]);
    assert!(err.contains(d1) && err.contains("not found"), "{err}");
}

#[test]
fn info_reports_root_database_and_counts() {
    let env = Env::new();
    let data = random_bytes(7, 10_000);
    let d = env.ok_stdin(&["content", "ingest", "a"], &data);
    create_image(&env, "img", d.trim(), &[]);
    env.ok(&["-n", "ns2", "leases", "create", "--id", "l"]);

    let info = env.json(&["info"]);
    let root = env.root();
    assert_eq!(info["root"], root.to_str().expect("utf-8 path"));
    assert_eq!(
        info["database"]["path"],
        root.join("meta.redb").to_str().expect("utf-8 path")
    );
    assert!(info["database"]["size"].as_u64().is_some_and(|s| s > 0));
    assert_eq!(
        info["database"]["schema_version"],
        strata_store::db::SCHEMA_VERSION
    );
    assert_eq!(
        info["blob_files"],
        serde_json::json!({"count": 1, "bytes": 10_000})
    );
    let namespaces = info["namespaces"].as_array().expect("namespaces");
    let default = namespaces
        .iter()
        .find(|n| n["name"] == "default")
        .expect("default listed");
    assert_eq!(default["blobs"], 1);
    assert_eq!(default["images"], 1);
    let ns2 = namespaces
        .iter()
        .find(|n| n["name"] == "ns2")
        .expect("ns2 listed");
    assert_eq!(ns2["leases"], 1);

    let text = env.ok(&["info"]);
    assert!(
        text.contains("meta.redb") && text.contains("schema version"),
        "{text}"
    );

    // STRATA_ROOT names the root when --root is absent.
    let out = Command::cargo_bin("gcctl")
        .expect("gcctl binary")
        .env("STRATA_ROOT", &root)
        .args(["info", "--json"])
        .output()
        .expect("run gcctl");
    let via_env: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(via_env["root"], info["root"]);
}

#[test]
fn bad_filters_and_usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        &["images", "ls", "--filter", "name==foo,"][..],
        &["content", "ls", "--filter", "labels.ns/key==v"],
        &["leases", "ls", "--filter", "labels.|foo|==x"],
    ] {
        let err = env.fails(args);
        assert!(
            err.starts_with("gcctl: invalid argument"),
            "{args:?}: {err}"
        );
    }

    for args in [
        &["frobnicate"][..],
        &["content"],
        &["content", "info"],
        &["content", "info", "sha256:abc"],
        &[
            "images",
            "create",
            "x",
            "--target",
            ZERO_DIGEST,
            "--media-type",
            "m",
        ],
        &["ns", "label", "default", "novalue"],
        &["leases", "create", "--expires", "10"],
        &["images", "ls", "--no-such-flag"],
    ] {
        let out = env.cmd(args).output().expect("run gcctl");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let help = env.ok(&["--help"]);
    assert!(
        help.contains("content") && help.contains("leases"),
        "{help}"
    );
}

#[test]
fn a_closed_stdout_pipe_is_success() {
    let env = Env::new();
    let data = random_bytes(8, 4 << 20);
    let digest = env.ok_stdin(&["content", "ingest", "big"], &data);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gcctl"))
        .arg("--root")
        .arg(env.root())
        .args(["content", "get", digest.trim()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gcctl");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).expect("read the first bytes");
    assert_eq!(head[..], data[..10]);
    // 4 MiB cannot fit in the pipe: closing it makes gcctl's next write fail with EPIPE.
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn get_detects_a_damaged_blob_file() {
    let env = Env::new();
    let data = random_bytes(9, 5000);
    let digest = env.ok_stdin(&["content", "ingest", "b"], &data);
    let hex = digest.trim().trim_start_matches("sha256:");
    let path: PathBuf = [
        env.root().as_path(),
        Path::new("content/blobs/sha256"),
        Path::new(hex),
    ]
    .iter()
    .collect();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut damaged = data.clone();
    damaged[100] ^= 0xff;
    std::fs::write(&path, &damaged).expect("damage blob");

    let out = env
        .cmd(&["content", "get", digest.trim()])
        .output()
        .expect("run gcctl");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(digest.trim()) && stderr.contains("damaged"),
        "{stderr}"
    );
}

#[test]
fn snapshots_prepare_commit_view_tree_and_mounts() {
    let env = Env::new();
    // The native snapshotter runs anywhere; the overlay one is covered by the library suite.
    let sn = ["snapshots", "--snapshotter", "native"];
    let run = |args: &[&str]| env.ok(&[&sn[..], args].concat());
    let prepared = run(&["prepare", "base-key"]);
    assert!(
        prepared.starts_with("bind ") && prepared.contains("rbind,rw"),
        "{prepared}"
    );
    assert_eq!(run(&["commit", "base", "base-key"]).trim(), "base");
    run(&["prepare", "child", "base", "--label", "team=storage"]);
    run(&["view", "look", "base"]);
    assert_eq!(
        run(&["tree"]),
        "base [committed]\n  child [active]\n  look [view]\n"
    );

    let listed: Value = serde_json::from_str(
        &env.ok(&[&sn[..], &["--json", "ls", "--filter", "kind==active"]].concat()),
    )
    .expect("json");
    assert_eq!(strings(&listed, "name"), set(&["child"]));
    assert_eq!(listed[0]["labels"]["team"], "storage");

    let target = env.dir.path().join("mnt");
    let target = target.to_str().expect("utf-8 path");
    let cmd = run(&["mounts", "look", target]);
    assert!(
        cmd.starts_with("mount --rbind ") && cmd.contains("remount,bind,ro"),
        "{cmd}"
    );
    let mounts: Value =
        serde_json::from_str(&env.ok(&[&sn[..], &["--json", "mounts", "look", target]].concat()))
            .expect("json");
    assert_eq!(mounts[0]["type"], "bind");
    assert!(
        mounts[0]["options"]
            .as_array()
            .is_some_and(|o| o.contains(&Value::from("ro")))
    );

    // A parent with children cannot go; children first, then it can.
    let out = env
        .cmd(&[&sn[..], &["rm", "base"]].concat())
        .output()
        .expect("run");
    let err = error_stderr(&["snapshots", "rm", "base"], &out);
    assert!(err.contains("base") && err.contains("child"), "{err}");
    run(&["rm", "child", "look", "base"]);
    assert_eq!(run(&["tree"]), "");
}

#[test]
fn snapshots_errors_name_the_snapshot() {
    let env = Env::new();
    let sn = ["snapshots", "--snapshotter", "native"];
    let out = env
        .cmd(&[&sn[..], &["prepare", "k", "no-such-parent"]].concat())
        .output()
        .expect("run");
    let err = error_stderr(&["snapshots", "prepare"], &out);
    assert!(err.contains("no-such-parent"), "{err}");
    env.ok(&[&sn[..], &["prepare", "k"]].concat());
    let out = env
        .cmd(&[&sn[..], &["prepare", "k"]].concat())
        .output()
        .expect("run");
    let err = error_stderr(&["snapshots", "prepare"], &out);
    assert!(
        err.contains("\"k\"") && err.contains("already exists"),
        "{err}"
    );
    let out = env
        .cmd(&["snapshots", "--snapshotter", "zfs", "ls"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn info_lists_what_no_record_names() {
    let env = Env::new();
    env.ok(&["info"]);
    let planted = [
        env.root().join("snapshots/native/new-77"),
        env.root().join("content/ingest/999"),
    ];
    for p in &planted {
        std::fs::create_dir_all(p).expect("plant orphan");
    }
    let info: Value = serde_json::from_str(&env.ok(&["--json", "info"])).expect("json");
    let listed: BTreeSet<String> = info["orphans"]
        .as_array()
        .expect("orphans array")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = planted.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(listed, want);
}

// ---- garbage collection: gc, why, du, fsck, compact, --sync, leases prune ----

const SAMPLE: &str = "docker.io/strata/sample:latest";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The repository's sample OCI archive.
fn sample_tar() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sample.tar")
}

/// The snapshotter to unpack into: overlay where it works (root and the overlay module),
/// else native, unless `STRATA_REQUIRE_OVERLAY=1` (as in CI), where overlay must work.
fn snapshotter(env: &Env) -> &'static str {
    let out = env
        .cmd(&["snapshots", "--snapshotter", "overlay", "ls"])
        .output()
        .expect("run gcctl");
    if out.status.success() {
        return "overlay";
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::env::var("STRATA_REQUIRE_OVERLAY").as_deref() != Ok("1"),
        "overlay unavailable: {stderr}"
    );
    eprintln!("overlay unavailable, using native: {stderr}");
    "native"
}

/// Names of the entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(iter) => iter
            .map(|e| {
                e.expect("read dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

impl Env {
    /// Digests (`sha256:<hex>`) of the blob files on disk.
    fn blob_files(&self) -> BTreeSet<String> {
        entries(&self.root().join("content/blobs/sha256"))
            .into_iter()
            .map(|hex| format!("sha256:{hex}"))
            .collect()
    }

    /// Snapshot directories on disk of snapshotter `sn`.
    fn snapshot_dirs(&self, sn: &str) -> BTreeSet<String> {
        entries(&self.root().join("snapshots").join(sn))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// A blob's bytes, as JSON.
    fn get_json(&self, digest: &str) -> Value {
        serde_json::from_str(&self.ok(&["content", "get", digest])).expect("JSON blob")
    }

    /// Runs with --json and asserts exit `code`; returns the JSON on stdout.
    fn json_exit(&self, args: &[&str], code: i32) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cmd(&all).output().expect("run gcctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: bad JSON {e}"))
    }
}

/// The sample image's manifest digest, its layer digests and its config digest.
struct Sample {
    manifest: String,
    layers: Vec<String>,
    config: String,
}

/// Imports the sample archive, unpacked into `sn` when given.
fn import_sample(env: &Env, sn: Option<&str>) -> Sample {
    let tar = sample_tar();
    let tar = tar.to_str().expect("utf-8 path");
    let imported = match sn {
        Some(sn) => env.json(&["import", tar, "--unpack", "--snapshotter", sn]),
        None => env.json(&["import", tar]),
    };
    let manifest = imported["imported"]["images"][0]["target"]["digest"]
        .as_str()
        .expect("imported manifest digest")
        .to_owned();
    let m = env.get_json(&manifest);
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect();
    let config = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    Sample {
        manifest,
        layers,
        config,
    }
}

/// `kind:ns/key` of each node of a JSON array of nodes.
fn nodes(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array of nodes")
        .iter()
        .map(|n| {
            format!(
                "{}:{}/{}",
                n["kind"].as_str().expect("kind"),
                n["ns"].as_str().expect("ns"),
                n["key"].as_str().expect("key")
            )
        })
        .collect()
}

/// The `path` of each entry of a JSON array.
fn paths(v: &Value) -> BTreeSet<PathBuf> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|o| PathBuf::from(o["path"].as_str().expect("path")))
        .collect()
}

#[test]
fn images_rm_sync_frees_layers_only_when_their_last_image_goes() {
    let env = Env::new();
    let sn = snapshotter(&env);
    let sample = import_sample(&env, Some(sn));
    assert_eq!(sample.layers.len(), 3);

    // A second image, "base", made of the sample's first two layers: its own config and
    // manifest (labelled like an import labels them), unpacked onto the same snapshots.
    let m = env.get_json(&sample.manifest);
    let c = env.get_json(&sample.config);
    let config2 = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": c["rootfs"]["diff_ids"].as_array().expect("diff_ids")[..2]},
    })
    .to_string();
    let config2_digest = env.ok_stdin(&["content", "ingest", "config2"], config2.as_bytes());
    let config2_digest = config2_digest.trim();
    let manifest2 = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config2_digest, "size": config2.len()},
        "layers": m["layers"].as_array().expect("layers")[..2],
    })
    .to_string();
    let config_label = format!("containerd.io/gc.ref.content.config={config2_digest}");
    let l0_label = format!("containerd.io/gc.ref.content.l.0={}", sample.layers[0]);
    let l1_label = format!("containerd.io/gc.ref.content.l.1={}", sample.layers[1]);
    let manifest2_digest = env.ok_stdin(
        &[
            "content",
            "ingest",
            "manifest2",
            "-l",
            &config_label,
            "-l",
            &l0_label,
            "-l",
            &l1_label,
        ],
        manifest2.as_bytes(),
    );
    let manifest2_digest = manifest2_digest.trim();
    env.ok(&[
        "images",
        "create",
        "base",
        "--target",
        manifest2_digest,
        "--media-type",
        MANIFEST,
        "--size",
        &manifest2.len().to_string(),
    ]);
    let unpacked = env.json(&["unpack", "base", "--snapshotter", sn]);
    let applied: Vec<&Value> = unpacked["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| &l["applied"])
        .collect();
    assert_eq!(
        applied,
        [&Value::Bool(false), &Value::Bool(false)],
        "base's layers should be the sample's snapshots: {unpacked}"
    );

    let all_blobs = set(&[
        &sample.manifest,
        &sample.config,
        &sample.layers[0],
        &sample.layers[1],
        &sample.layers[2],
        config2_digest,
        manifest2_digest,
    ]);
    assert_eq!(env.blob_files(), all_blobs);
    let dirs = env.snapshot_dirs(sn);
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    let top = format!("{sn}/{}", unpacked_top(&env, sn, SAMPLE));

    // Removing the sample frees what only it used: its manifest, config, last layer and the
    // top snapshot; the shared layers' blobs and snapshots stay.
    let out = env.json(&["images", "rm", SAMPLE, "--sync"]);
    assert_eq!(out["removed"], serde_json::json!([SAMPLE]));
    let removed: BTreeSet<String> = nodes(&out["gc"]["removed"]).into_iter().collect();
    let want: BTreeSet<String> = [
        format!("content:default/{}", sample.manifest),
        format!("content:default/{}", sample.config),
        format!("content:default/{}", sample.layers[2]),
        format!("snapshot:default/{top}"),
    ]
    .into_iter()
    .collect();
    assert_eq!(removed, want);
    assert_eq!(
        env.blob_files(),
        set(&[
            &sample.layers[0],
            &sample.layers[1],
            config2_digest,
            manifest2_digest
        ])
    );
    let left = env.snapshot_dirs(sn);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.is_subset(&dirs), "{left:?} not within {dirs:?}");
    let freed = paths(&out["gc"]["files"]["removed"]);
    assert!(
        freed.contains(&env.blob_path(&sample.layers[2])),
        "{freed:?}"
    );
    assert_eq!(
        freed.len(),
        4,
        "3 blob files and 1 snapshot directory: {freed:?}"
    );
    assert!(out["gc"]["files"]["removed"][0]["bytes"].as_u64() > Some(0));

    // Removing the last image frees the rest: every blob file and snapshot directory.
    let text = env.ok(&["images", "rm", "base", "--sync"]);
    assert!(text.starts_with("base\nremoved:"), "{text}");
    assert!(
        text.contains("content 4") && text.contains("snapshot 2"),
        "{text}"
    );
    assert_eq!(env.blob_files(), BTreeSet::new());
    assert_eq!(env.snapshot_dirs(sn), BTreeSet::new());
    assert_eq!(
        env.json(&["snapshots", "--snapshotter", sn, "ls"]),
        serde_json::json!([])
    );
}

/// The top chain ID of an unpacked image (unpacking again changes nothing).
fn unpacked_top(env: &Env, sn: &str, image: &str) -> String {
    env.json(&["unpack", image, "--snapshotter", sn])["chain_id"]
        .as_str()
        .expect("chain_id")
        .to_owned()
}

#[test]
fn gc_dry_run_lists_exactly_what_gc_removes() {
    let env = Env::new();
    let sn = snapshotter(&env);
    let sample = import_sample(&env, Some(sn));
    // Garbage of every kind: an unreferenced blob, an expired lease holding a blob, the
    // sample image's record (leaving its content and snapshots unreferenced), and orphans.
    env.ok_stdin(&["content", "ingest", "loose"], &random_bytes(20, 3000));
    env.ok(&[
        "leases",
        "create",
        "--id",
        "expired",
        "--expires",
        "0",
        "--label",
        "containerd.io/gc.expire=2000-01-01T00:00:00Z",
    ]);
    env.ok_stdin(
        &["content", "ingest", "leased", "--lease", "expired"],
        &random_bytes(24, 3000),
    );
    env.ok(&["images", "rm", SAMPLE]);
    let orphan_blob = random_bytes(26, 2000);
    std::fs::write(env.blob_path(&sha256(&orphan_blob)), &orphan_blob).expect("plant blob");
    std::fs::create_dir_all(env.root().join("snapshots").join(sn).join("777")).expect("plant dir");

    let plan = env.json(&["gc", "--dry-run"]);
    let doomed: Vec<Value> = plan["remove"]
        .as_array()
        .expect("remove")
        .iter()
        .map(|d| d["node"].clone())
        .collect();
    let doomed = nodes(&Value::Array(doomed));
    // 5 sample blobs, 3 snapshots, the loose and leased blobs, the expired lease.
    assert_eq!(doomed.len(), 11, "{doomed:#?}");
    assert!(doomed.contains(&format!("content:default/{}", sample.layers[0])));
    assert!(doomed.contains(&"lease:default/expired".to_owned()));
    let orphans = paths(&plan["orphans"]);
    assert_eq!(orphans.len(), 2, "{orphans:?}");

    let report = env.json(&["gc"]);
    assert_eq!(nodes(&report["removed"]), doomed);
    // Files: the orphans, plus the data of every removed blob and snapshot.
    let files = paths(&report["files"]["removed"]);
    assert!(orphans.is_subset(&files), "{orphans:?} not in {files:?}");
    let doomed_blobs: BTreeSet<PathBuf> = doomed
        .iter()
        .filter_map(|n| n.strip_prefix("content:default/"))
        .map(|d| env.blob_path(d))
        .collect();
    let doomed_snapshots = doomed.iter().filter(|n| n.starts_with("snapshot:")).count();
    assert_eq!(
        files.len(),
        orphans.len() + doomed_blobs.len() + doomed_snapshots
    );
    assert!(doomed_blobs.is_subset(&files), "{files:?}");

    // Nothing left for another pass.
    let again = env.json(&["gc", "--dry-run"]);
    assert_eq!(again["remove"], serde_json::json!([]));
    assert_eq!(again["orphans"], serde_json::json!([]));
    assert_eq!(env.ok(&["gc", "--dry-run"]).trim(), "nothing to remove");
}

#[test]
fn why_names_the_image_and_the_lease_that_keep_a_layer() {
    let env = Env::new();
    let sample = import_sample(&env, None);
    let layer = &sample.layers[0];
    env.ok(&["leases", "create", "--id", "hold", "--expires", "1h"]);
    env.ok(&["leases", "add", "hold", "content", layer]);

    let answers = env.json(&["why", layer]);
    assert_eq!(answers.as_array().map(Vec::len), Some(1), "{answers}");
    let w = &answers[0];
    assert_eq!(w["kept"], true);
    assert_eq!(w["object"]["key"], layer.as_str());
    let by_root: BTreeMap<String, &Value> = w["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| (p["root"].as_str().expect("root").to_owned(), p))
        .collect();
    assert_eq!(
        by_root.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["image", "live lease"])
    );
    let lease = &by_root["live lease"]["steps"];
    assert_eq!(
        nodes(&Value::Array(
            lease
                .as_array()
                .expect("steps")
                .iter()
                .map(|s| s["node"].clone())
                .collect()
        )),
        [
            "lease:default/hold".to_owned(),
            format!("content:default/{layer}")
        ]
    );
    assert!(lease[0]["expires"].is_string(), "{lease}");
    assert_eq!(lease[1]["via"], "lease");
    let image = &by_root["image"]["steps"];
    assert_eq!(image[0]["node"]["key"], SAMPLE);
    assert_eq!(image[1]["node"]["key"], sample.manifest.as_str());
    assert_eq!(image[1]["via"], "target");
    assert_eq!(image[2]["node"]["key"], layer.as_str());
    assert_eq!(image[2]["via"], "containerd.io/gc.ref.content.l.0");

    let text = env.ok(&["why", layer]);
    assert!(text.contains("kept by 2 roots"), "{text}");
    assert!(
        text.contains("lease:default/hold (live lease, expires ")
            && text.contains(&format!("-> content:default/{layer} [via lease]")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "image:default/{SAMPLE} (image) -> content:default/{} [via target] -> content:default/{layer} [via containerd.io/gc.ref.content.l.0]",
            sample.manifest
        )),
        "{text}"
    );

    let err = env.fails(&["why", "nosuch"]);
    assert_eq!(err, "gcctl: no object named nosuch in namespace default\n");
    let err = env.fails(&["-n", "other", "why", layer]);
    assert!(
        err.contains(&format!("no object named {layer} in namespace other")),
        "{err}"
    );

    env.ok(&["leases", "rm", "hold"]);
    env.ok(&["images", "rm", SAMPLE]);
    let text = env.ok(&["why", layer]);
    assert_eq!(
        text,
        format!("content:default/{layer}: not kept: would be removed by the next gc\n")
    );
    assert_eq!(env.json(&["why", layer])[0]["kept"], false);
}

#[test]
fn gc_reclaims_planted_files_no_record_names() {
    let env = Env::new();
    let sn = snapshotter(&env);
    let data = random_bytes(30, 10_000);
    let blob = env.blob_path(&sha256(&data));
    std::fs::write(&blob, &data).expect("plant blob");
    let dir = env.root().join("snapshots").join(sn).join("999");
    std::fs::create_dir_all(dir.join("fs/etc")).expect("plant dir");
    std::fs::write(dir.join("fs/etc/hostname"), random_bytes(34, 5000)).expect("plant file");
    let planted: BTreeSet<PathBuf> = [blob.clone(), dir.clone()].into_iter().collect();

    let plan = env.json(&["gc", "--dry-run"]);
    assert_eq!(plan["remove"], serde_json::json!([]));
    assert_eq!(paths(&plan["orphans"]), planted);
    let text = env.ok(&["gc", "--dry-run"]);
    assert!(
        text.contains(&blob.display().to_string()) && text.contains(&dir.display().to_string()),
        "{text}"
    );
    assert!(blob.exists() && dir.exists(), "a dry run removed something");

    let report = env.json(&["gc"]);
    assert_eq!(report["removed"], serde_json::json!([]));
    assert_eq!(paths(&report["files"]["removed"]), planted);
    assert!(!blob.exists() && !dir.exists());
    assert!(report["files"]["removed"][0]["bytes"].as_u64() >= Some(10_000));
    assert_eq!(env.ok(&["gc", "--dry-run"]).trim(), "nothing to remove");
}

#[test]
fn gc_warns_about_missing_data_and_still_succeeds() {
    let env = Env::new();
    let data = random_bytes(32, 4000);
    let digest = env.ok_stdin(&["content", "ingest", "kept"], &data);
    let digest = digest.trim();
    create_image(&env, "keeper", digest, &[]);
    std::fs::remove_file(env.blob_path(digest)).expect("remove blob file");
    let out = env.cmd(&["gc"]).output().expect("run gcctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("gcctl: warning: ") && stderr.contains(digest),
        "{stderr}"
    );
    // The record stays: it tells which image needs re-fetching.
    assert_eq!(env.json(&["content", "info", digest])["size"], 4000);
}

#[test]
fn fsck_reports_an_altered_blob_and_repair_quarantines_it() {
    let env = Env::new();
    let data = random_bytes(33, 6000);
    let digest = env.ok_stdin(&["content", "ingest", "b"], &data);
    let digest = digest.trim();
    assert!(env.ok(&["fsck"]).ends_with("clean\n"));
    let path = env.blob_path(digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut altered = data.clone();
    altered[1234] ^= 0x5a;
    std::fs::write(&path, &altered).expect("alter blob");

    let out = env.cmd(&["fsck"]).output().expect("run gcctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("corrupt_blob") && stdout.contains(digest),
        "{stdout}"
    );
    let report = env.json_exit(&["fsck"], 1);
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["problems"][0]["kind"], "corrupt_blob");
    assert!(
        report["problems"][0]["object"]
            .as_str()
            .is_some_and(|o| o.contains(digest)),
        "{report}"
    );

    let repaired = env.json(&["fsck", "--repair"]);
    assert_eq!(repaired["problems"][0]["repaired"], true, "{repaired}");
    let quarantine = PathBuf::from(repaired["quarantine"].as_str().expect("quarantine dir"));
    assert!(quarantine.starts_with(env.root().join("quarantine")));
    let moved = quarantine
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(
        std::fs::read(&moved).is_ok_and(|b| b == altered),
        "{} does not hold the altered bytes",
        moved.display()
    );
    assert!(!path.exists());

    assert!(env.ok(&["fsck"]).ends_with("clean\n"));
    assert_eq!(env.json(&["fsck"])["problems"], serde_json::json!([]));
}

#[test]
fn leases_prune_expired_removes_only_expired_leases_and_frees_their_blobs() {
    let env = Env::new();
    env.ok(&[
        "leases",
        "create",
        "--id",
        "old",
        "--expires",
        "0",
        "--label",
        "containerd.io/gc.expire=2000-01-01T00:00:00Z",
    ]);
    env.ok(&["leases", "create", "--id", "live", "--expires", "1h"]);
    env.ok(&["leases", "create", "--id", "forever", "--expires", "0"]);
    let old = env.ok_stdin(
        &["content", "ingest", "a", "--lease", "old"],
        &random_bytes(40, 8000),
    );
    let live = env.ok_stdin(
        &["content", "ingest", "b", "--lease", "live"],
        &random_bytes(42, 8000),
    );
    let (old, live) = (old.trim(), live.trim());

    let out = env.json(&["leases", "prune", "--expired"]);
    assert_eq!(out["removed"], serde_json::json!(["old"]));
    assert_eq!(
        nodes(&out["gc"]["removed"]),
        [format!("content:default/{old}")]
    );
    assert_eq!(
        paths(&out["gc"]["files"]["removed"]),
        [env.blob_path(old)].into_iter().collect()
    );
    assert_eq!(env.blob_files(), set(&[live]));
    assert_eq!(
        strings(&env.json(&["leases", "ls"]), "id"),
        set(&["live", "forever"])
    );
    assert_eq!(
        env.json(&["leases", "resources", "live"]),
        serde_json::json!([{"type": "content", "id": live}])
    );

    // Nothing expired: nothing removed, and the summary says so.
    let text = env.ok(&["leases", "prune", "--expired"]);
    assert!(text.starts_with("removed:    nothing\n"), "{text}");
    // --expired is the only criterion, and required.
    let out = env.cmd(&["leases", "prune"]).output().expect("run gcctl");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn leases_rm_sync_collects_what_the_lease_held() {
    let env = Env::new();
    env.ok(&["leases", "create", "--id", "l"]);
    let d = env.ok_stdin(
        &["content", "ingest", "x", "--lease", "l"],
        &random_bytes(44, 1000),
    );
    let out = env.json(&["leases", "rm", "l", "--sync"]);
    assert_eq!(out["removed"], serde_json::json!(["l"]));
    assert_eq!(
        nodes(&out["gc"]["removed"]),
        [format!("content:default/{}", d.trim())]
    );
    assert_eq!(env.blob_files(), BTreeSet::new());
}

#[test]
fn du_by_namespace_adds_up_to_the_total() {
    let env = Env::new();
    let sn = snapshotter(&env);
    let sample = import_sample(&env, Some(sn));
    // The same layer in a second namespace (shared), a blob only there (unique), and an
    // orphan (unattributed).
    let layer = env
        .cmd(&["content", "get", &sample.layers[1]])
        .output()
        .expect("run gcctl")
        .stdout;
    env.ok_stdin(&["-n", "ns2", "content", "ingest", "same"], &layer);
    env.ok_stdin(
        &["-n", "ns2", "content", "ingest", "own"],
        &random_bytes(50, 9000),
    );
    let orphan = random_bytes(52, 7000);
    std::fs::write(env.blob_path(&sha256(&orphan)), &orphan).expect("plant blob");

    let du = env.json(&["du", "--by", "namespace"]);
    assert_eq!(du["by"], "namespace");
    let rows = du["rows"].as_array().expect("rows");
    assert_eq!(strings(&du["rows"], "owner"), set(&["default", "ns2"]));
    let num = |v: &Value| v.as_u64().expect("a byte count");
    let unique: u64 = rows.iter().map(|r| num(&r["unique_bytes"])).sum();
    let (shared, unattributed, database, total) = (
        num(&du["shared_bytes"]),
        num(&du["unattributed_bytes"]),
        num(&du["database_bytes"]),
        num(&du["total_bytes"]),
    );
    assert_eq!(unique + shared + unattributed + database, total, "{du}");
    assert!(
        shared >= 4096 && unattributed >= 4096 && database > 0,
        "{du}"
    );
    for r in rows {
        assert!(
            num(&r["unique_bytes"]) > 0 && num(&r["shared_bytes"]) == shared,
            "{du}"
        );
    }

    let text = env.ok(&["du", "--by", "namespace"]);
    assert!(text.starts_with("NAMESPACE "), "{text}");
    // Two runs may differ by a few blocks (the filesystem settles delayed allocation), so
    // the human form is checked for its shape, the JSON above for its arithmetic.
    assert!(text.contains("\ntotal: "), "{text}");
    let by_image = env.json(&["du"]);
    assert_eq!(by_image["by"], "image");
    assert_eq!(
        strings(&by_image["rows"], "owner"),
        set(&[&format!("default/{SAMPLE}")])
    );
}

#[test]
fn compact_reports_sizes_before_and_after() {
    let env = Env::new();
    for i in 0..50 {
        create_image(&env, &format!("img{i}"), &sha256(b"m"), &["k=v"]);
    }
    let names: Vec<String> = (0..50).map(|i| format!("img{i}")).collect();
    let mut args = vec!["images", "rm"];
    args.extend(names.iter().map(String::as_str));
    env.ok(&args);
    let c = env.json(&["compact"]);
    let (before, after) = (
        c["before"].as_u64().expect("before"),
        c["after"].as_u64().expect("after"),
    );
    let on_disk = std::fs::metadata(env.root().join("meta.redb"))
        .expect("stat meta.redb")
        .len();
    assert!(
        after <= before && after == on_disk,
        "{c}, {on_disk} on disk"
    );
    let text = env.ok(&["compact"]);
    assert!(text.starts_with("meta.redb: "), "{text}");
    // The store still opens and holds what it held.
    assert_eq!(env.json(&["images", "ls"]), serde_json::json!([]));
}
