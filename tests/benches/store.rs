//! strata-store benchmarks: what one blob commit costs and where that time goes, ingest
//! throughput against `sha256sum`, and metadata reads with 100 000 blobs and 10 000 images in
//! one namespace. The figures and the commands that produced them are in `docs/benchmarks.md`.
//!
//! Groups (filter with `cargo bench -p strata-tests --bench store -- <group>/`):
//! - `scale/`: reads on a store populated once per process through the public API;
//! - `primitive/`: the steps of the commit protocol done with std and redb alone;
//! - `ingest/`, `ingest_phases/`: blobs through writer open, write and commit;
//! - `limit/`: `sha256sum`, in-process sha256 and write+fsync of the same sizes.
//!
//! Environment (the defaults are the documented configuration):
//! `STRATA_BENCH_DIR` (parent of the scratch stores, default `/var/tmp`, which must be a real
//! disk rather than tmpfs for fsync to mean anything), `STRATA_BENCH_BLOBS` (100000),
//! `STRATA_BENCH_IMAGES` (10000), `STRATA_BENCH_THREADS` (population threads, 4).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use redb::TableDefinition;
use strata_store::content::WriterOptions;
use strata_store::images::{Descriptor, Image};
use strata_store::{Algorithm, Digest, Scope, Store, StoreOptions};
use strata_tests::bench::peak_rss;
use tempfile::TempDir;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The namespace every benchmark works in.
const NS: &str = "bench";
/// Write size per `write` call: containerd copies content with a 1 MiB buffer.
const CHUNK: usize = MIB;
/// The sizes the issue asks for, with their criterion settings: slow cases get the minimum
/// sample count and flat sampling so a 256 MiB case stays near 20 s.
const SIZES: [Size; 3] = [
    Size::new("1KiB", KIB, 20, 5),
    Size::new("1MiB", MIB, 20, 5),
    Size::new("256MiB", 256 * MIB, 10, 20),
];

#[derive(Clone, Copy)]
struct Size {
    label: &'static str,
    bytes: usize,
    samples: usize,
    seconds: u64,
}

impl Size {
    const fn new(label: &'static str, bytes: usize, samples: usize, seconds: u64) -> Size {
        Size {
            label,
            bytes,
            samples,
            seconds,
        }
    }

    /// Applies this size's sample count, time budget and throughput to `group`.
    fn configure(self, group: &mut BenchmarkGroup<'_, WallTime>) {
        group
            .sample_size(self.samples)
            .measurement_time(Duration::from_secs(self.seconds))
            .throughput(Throughput::Bytes(self.bytes as u64))
            .sampling_mode(if self.bytes >= MIB {
                SamplingMode::Flat
            } else {
                SamplingMode::Auto
            });
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();
    // Scale runs first so the peak RSS it reports is not the 256 MiB ingest buffer's.
    let population = OnceCell::new();
    scale(&mut c, &population);
    if population.get().is_some() {
        println!("strata-bench: after scale: {}", peak_rss());
    }
    let scratch = OnceCell::new();
    primitives(&mut c, &scratch);
    let ingest_store = OnceCell::new();
    ingest(&mut c, &ingest_store);
    ingest_phases(&mut c, &ingest_store);
    limits(&mut c, &scratch);
    c.final_summary();
    println!("strata-bench: at exit: {}", peak_rss());
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh directory under `STRATA_BENCH_DIR`, removed when dropped.
fn scratch_dir(name: &str) -> TempDir {
    let parent =
        std::env::var_os("STRATA_BENCH_DIR").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix(&format!("strata-bench-{name}-"))
        .tempdir_in(&parent)
        .expect("create scratch directory");
    println!("strata-bench: {name} directory {}", dir.path().display());
    dir
}

/// A store in its own scratch directory. Field order matters: the store (its lock, and the
/// seal it writes on close) must go before the directory is removed.
struct BenchStore {
    store: Store,
    scope: Scope,
    _dir: TempDir,
}

impl BenchStore {
    fn new(name: &str) -> BenchStore {
        let dir = scratch_dir(name);
        BenchStore {
            store: Store::open(dir.path(), StoreOptions::default()).expect("open store"),
            scope: Scope::new(NS).expect("namespace"),
            _dir: dir,
        }
    }
}

/// Wall time of each step of one blob ingest.
#[derive(Default, Clone, Copy)]
struct Phases {
    open: Duration,
    write: Duration,
    commit: Duration,
}

impl Phases {
    fn total(self) -> Duration {
        self.open + self.write + self.commit
    }
}

/// One blob through the public API as a client pulling an image does it: open a writer that
/// names the expected digest and size, write in `CHUNK`s, commit checking both.
fn ingest_blob(
    b: &BenchStore,
    reference: &str,
    data: &[u8],
    digest: &Digest,
    labels: BTreeMap<String, String>,
) -> Phases {
    let options = WriterOptions {
        expected: Some(digest.clone()),
        total: data.len() as u64,
    };
    let t0 = Instant::now();
    let mut w = b
        .store
        .content()
        .writer(&b.scope, reference, options)
        .expect("open writer");
    let t1 = Instant::now();
    for chunk in data.chunks(CHUNK) {
        w.write_all(chunk).expect("write");
    }
    let t2 = Instant::now();
    w.commit(data.len() as u64, Some(digest), labels)
        .expect("commit");
    let t3 = Instant::now();
    Phases {
        open: t1 - t0,
        write: t2 - t1,
        commit: t3 - t2,
    }
}

/// Bytes for a stream of distinct blobs of one size: every blob must be new, or commit
/// would answer AlreadyExists instead of doing the work being measured.
struct Source {
    buf: Vec<u8>,
}

/// Numbers blobs across every `Source` of the process: two sources of one size writing to
/// the same store must not produce the same bytes.
static BLOB_SEQ: AtomicU64 = AtomicU64::new(0);

impl Source {
    fn new(size: usize) -> Source {
        // Arbitrary non-zero bytes; nothing in the path compresses or dedups them.
        let buf = (0..size)
            .map(|i| (i.wrapping_mul(31) % 251) as u8)
            .collect();
        Source { buf }
    }

    /// Turns the buffer into the next blob (its first bytes count up) and returns a fresh ref
    /// and the blob's digest. Hashing here keeps it out of the timed section.
    fn next_blob(&mut self) -> (String, Digest) {
        let seq = BLOB_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = seq.to_le_bytes();
        let n = tag.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&tag[..n]);
        let reference = format!("ingest-{}-{seq}", self.buf.len());
        (reference, Digest::of(Algorithm::Sha256, &self.buf))
    }
}

/// A small deterministic generator for random picks (no `rand` dependency in this crate).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// scale/: 100 000 blobs and 10 000 images in one namespace

/// Blob `i` of the population carries `shard = i % SHARDS`, so `labels.shard==N` selects 1%.
const SHARDS: usize = 100;
/// Image `i` is named under team `i % TEAMS`, so `name~=team-NN/` selects 1%.
const TEAMS: usize = 100;

struct Population {
    bench: BenchStore,
    blobs: Vec<Digest>,
    images: Vec<String>,
}

/// The 128-byte body of population blob `i` (small, as the issue asks, and distinct).
fn small_body(i: usize) -> Vec<u8> {
    let line = format!("strata bench blob {i:010}\n");
    line.bytes().cycle().take(128).collect()
}

fn image_name(i: usize) -> String {
    format!("registry.example/team-{:02}/app-{i:05}:latest", i % TEAMS)
}

/// Runs `work(i)` for `i in 0..n` on `threads` threads (i interleaved), returning results in
/// order of `i`. Writers on different refs run concurrently; redb serializes only their
/// transactions, so file writes and fsyncs of one thread overlap another's commit.
fn parallel<T: Send>(n: usize, threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let work = &work;
    let mut parts: Vec<Vec<(usize, T)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads).map(|i| (i, work(i))).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("population thread"))
            .collect()
    });
    let mut all: Vec<(usize, T)> = parts.iter_mut().flat_map(std::mem::take).collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

fn populate() -> Population {
    let n_blobs = env_usize("STRATA_BENCH_BLOBS", 100_000);
    let n_images = env_usize("STRATA_BENCH_IMAGES", 10_000);
    let threads = env_usize("STRATA_BENCH_THREADS", 4).max(1);
    let bench = BenchStore::new("scale");

    let start = Instant::now();
    let blobs = parallel(n_blobs, threads, |i| {
        let body = small_body(i);
        let digest = Digest::of(Algorithm::Sha256, &body);
        let labels = BTreeMap::from([("shard".to_owned(), (i % SHARDS).to_string())]);
        ingest_blob(&bench, &format!("pop-{i}"), &body, &digest, labels);
        digest
    });
    let blob_time = start.elapsed();

    let start = Instant::now();
    let images = parallel(n_images, threads, |i| {
        let name = image_name(i);
        let target = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: blobs[i % blobs.len()].clone(),
            size: 128,
            annotations: BTreeMap::new(),
        };
        bench
            .store
            .images()
            .create(&bench.scope, Image::new(name.clone(), target))
            .expect("create image");
        name
    });
    let image_time = start.elapsed();

    let db_size = fs::metadata(bench.store.layout().meta()).map_or(0, |m| m.len());
    println!(
        "strata-bench: populated {n_blobs} blobs in {:.1} s ({:.0} blobs/s), {n_images} images in {:.1} s ({:.0} images/s), {threads} threads; meta.redb {:.1} MiB; {}",
        blob_time.as_secs_f64(),
        n_blobs as f64 / blob_time.as_secs_f64(),
        image_time.as_secs_f64(),
        n_images as f64 / image_time.as_secs_f64(),
        db_size as f64 / MIB as f64,
        peak_rss(),
    );
    check_population(&bench, n_blobs, n_images);
    Population {
        bench,
        blobs,
        images,
    }
}

/// The listings below are only meaningful if they return what they claim to select.
fn check_population(b: &BenchStore, n_blobs: usize, n_images: usize) {
    let content = b.store.content();
    let images = b.store.images();
    let none: [&str; 0] = [];
    assert_eq!(content.list(NS, &none).expect("list").len(), n_blobs);
    let sharded = content.list(NS, &[SHARD_FILTER]).expect("list").len();
    let expected = (0..n_blobs).filter(|i| i % SHARDS == 42).count();
    assert_eq!(sharded, expected);
    assert_eq!(images.list(NS, &none).expect("list").len(), n_images);
    let team = images.list(NS, &[TEAM_FILTER]).expect("list").len();
    println!(
        "strata-bench: {SHARD_FILTER:?} selects {sharded} blobs, {TEAM_FILTER:?} selects {team} images"
    );
}

const SHARD_FILTER: &str = "labels.shard==42";
const TEAM_FILTER: &str = "name~=team-42/";

fn scale(c: &mut Criterion, population: &OnceCell<Population>) {
    let mut g = c.benchmark_group("scale");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let none: [&str; 0] = [];

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    g.bench_function("content_info_random", |b| {
        let p = population.get_or_init(populate);
        b.iter(|| {
            let d = &p.blobs[rng.below(p.blobs.len())];
            black_box(p.bench.store.content().info(NS, d).expect("info"))
        });
    });
    g.bench_function("images_get_random", |b| {
        let p = population.get_or_init(populate);
        b.iter(|| {
            let name = &p.images[rng.below(p.images.len())];
            black_box(p.bench.store.images().get(NS, name).expect("get"))
        });
    });

    // The walks decode every record of the namespace; a handful of samples is plenty.
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let lists: [(&str, bool, &[&str]); 4] = [
        ("content_list_all", true, &none),
        ("content_list_label_1pct", true, &[SHARD_FILTER]),
        ("images_list_all", false, &none),
        ("images_list_name_regex_1pct", false, &[TEAM_FILTER]),
    ];
    for (id, content, filters) in lists {
        g.bench_function(id, |b| {
            let p = population.get_or_init(populate);
            let store = &p.bench.store;
            b.iter(|| {
                if content {
                    black_box(store.content().list(NS, filters).expect("list").len())
                } else {
                    black_box(store.images().list(NS, filters).expect("list").len())
                }
            });
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// primitive/: the commit protocol's steps with std and redb only, to explain the overhead

const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");

/// A scratch directory (for raw files) and a redb database beside the stores' ones.
struct Scratch {
    db: redb::Database,
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = scratch_dir("primitive");
        let db = redb::Database::create(dir.path().join("meta.redb")).expect("create redb");
        for sub in ["ingest", "blobs"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Scratch { db, dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// One write transaction that inserts a record the size of a blob record and commits
    /// with redb's default durability (Immediate: one `fdatasync` of the file).
    fn put_record(&self, key: &str) {
        let txn = self.db.begin_write().expect("begin_write");
        txn.open_table(RECORDS)
            .expect("open table")
            .insert((NS, key), [7u8; 100].as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
}

fn create_with(path: &Path, data: &[u8]) -> File {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
    f
}

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// Times `timed` over `iters` runs, each after an untimed `setup` whose output it takes.
fn timed_after<S, T>(
    iters: u64,
    mut setup: impl FnMut(u64) -> S,
    mut timed: impl FnMut(S) -> T,
) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let s = setup(i);
        let t = Instant::now();
        black_box(timed(s));
        total += t.elapsed();
    }
    total
}

fn primitives(c: &mut Criterion, scratch: &OnceCell<Scratch>) {
    let mut g = c.benchmark_group("primitive");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let payload = [0x5Au8; KIB];
    let mut seq = 0u64;
    let mut next = move || {
        seq += 1;
        seq
    };

    g.bench_function("redb_commit_empty", |b| {
        let s = scratch.get_or_init(Scratch::new);
        b.iter(|| {
            let txn = s.db.begin_write().expect("begin_write");
            txn.commit().expect("commit");
        });
    });
    g.bench_function("redb_commit_one_record", |b| {
        let s = scratch.get_or_init(Scratch::new);
        b.iter(|| s.put_record(&format!("key-{}", next())));
    });
    // The file is new and dirty, as an ingest's `data` is at commit; only the fsync is timed.
    g.bench_function("fsync_new_file_1KiB", |b| {
        let s = scratch.get_or_init(Scratch::new);
        let dir = s.path("ingest");
        b.iter_custom(|iters| {
            timed_after(
                iters,
                |_| create_with(&dir.join(format!("f{}", next())), &payload),
                |f| f.sync_all().expect("fsync"),
            )
        });
    });
    // A synced file has just been renamed into the directory, as at commit; only the
    // directory fsync (open + fsync, as the store does it) is timed.
    g.bench_function("fsync_dir_after_rename", |b| {
        let s = scratch.get_or_init(Scratch::new);
        let (staging, blobs) = (s.path("ingest"), s.path("blobs"));
        b.iter_custom(|iters| {
            timed_after(
                iters,
                |_| {
                    let name = format!("r{}", next());
                    create_with(&staging.join(&name), &payload)
                        .sync_all()
                        .expect("fsync");
                    fs::rename(staging.join(&name), blobs.join(&name)).expect("rename");
                },
                |()| fsync_dir(&blobs),
            )
        });
    });
    // The whole protocol of a 1 KiB blob with std and redb alone: the floor strata's
    // ingest/1KiB can be compared with.
    g.bench_function("protocol_1KiB_std_redb", |b| {
        let s = scratch.get_or_init(Scratch::new);
        b.iter(|| replay_protocol(s, next(), &payload));
    });
    g.finish();
}

/// Writer open (record transaction, ingest directory, data file), then commit (chmod,
/// fsync, rename, directory fsync, record transaction, remove the ingest directory).
fn replay_protocol(s: &Scratch, id: u64, data: &[u8]) {
    s.put_record(&format!("ingest-{id}"));
    let dir = s.path("ingest").join(format!("p{id}"));
    fs::create_dir(&dir).expect("mkdir");
    let data_path = dir.join("data");
    let f = create_with(&data_path, data);
    f.set_permissions(fs::Permissions::from_mode(0o444))
        .expect("chmod");
    f.sync_all().expect("fsync");
    let blobs = s.path("blobs");
    fs::rename(&data_path, blobs.join(format!("p{id}"))).expect("rename");
    fsync_dir(&blobs);
    s.put_record(&format!("blob-{id}"));
    fs::remove_dir_all(&dir).expect("rmdir");
}

// ---------------------------------------------------------------------------------------------
// ingest/ and ingest_phases/: blobs through the real API

fn ingest(c: &mut Criterion, store: &OnceCell<BenchStore>) {
    let mut g = c.benchmark_group("ingest");
    for size in SIZES {
        size.configure(&mut g);
        let mut source = None;
        g.bench_function(size.label, |b| {
            let bench = store.get_or_init(|| BenchStore::new("ingest"));
            let source = source.get_or_insert_with(|| Source::new(size.bytes));
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (reference, digest) = source.next_blob();
                        ingest_blob(bench, &reference, &source.buf, &digest, BTreeMap::new())
                            .total()
                    })
                    .sum()
            });
        });
    }
    g.finish();
}

/// Which phase of an ingest a bench counts.
type PhasePick = fn(Phases) -> Duration;

/// Ingests split into writer open, write and commit: each bench runs whole ingests and counts
/// one phase, so a size's phase medians add up to about its `ingest/` median. Open does not
/// depend on the size, so only 1 KiB measures it.
fn ingest_phases(c: &mut Criterion, store: &OnceCell<BenchStore>) {
    let mut g = c.benchmark_group("ingest_phases");
    let open: PhasePick = |p| p.open;
    let write: PhasePick = |p| p.write;
    let commit: PhasePick = |p| p.commit;
    for (size, phases) in [
        (
            SIZES[0],
            vec![("open", open), ("write", write), ("commit", commit)],
        ),
        (SIZES[2], vec![("write", write), ("commit", commit)]),
    ] {
        size.configure(&mut g);
        let mut source = None;
        for (phase, pick) in phases {
            g.bench_function(format!("{}_{phase}", size.label), |b| {
                let bench = store.get_or_init(|| BenchStore::new("ingest"));
                let source = source.get_or_insert_with(|| Source::new(size.bytes));
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let (reference, digest) = source.next_blob();
                            let buf = &source.buf;
                            pick(ingest_blob(
                                bench,
                                &reference,
                                buf,
                                &digest,
                                BTreeMap::new(),
                            ))
                        })
                        .sum()
                });
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// limit/: what the same bytes cost without the store

fn limits(c: &mut Criterion, scratch: &OnceCell<Scratch>) {
    let mut g = c.benchmark_group("limit");
    for size in SIZES {
        size.configure(&mut g);
        // Written and synced once, then read back so every page is cached: sha256sum then
        // reads memory, as the ingest path hashes bytes already in memory.
        let file: OnceCell<(PathBuf, Vec<u8>)> = OnceCell::new();
        let cached_file = |s: &Scratch| {
            file.get_or_init(|| {
                let data = Source::new(size.bytes).buf;
                let path = s.path(&format!("sha-{}", size.label));
                create_with(&path, &data).sync_all().expect("fsync");
                black_box(fs::read(&path).expect("read back"));
                (path, data)
            })
        };
        g.bench_function(format!("sha256sum/{}", size.label), |b| {
            let (path, _) = cached_file(scratch.get_or_init(Scratch::new));
            b.iter(|| run_sha256sum(path));
        });
        g.bench_function(format!("sha2_in_process/{}", size.label), |b| {
            let (_, data) = cached_file(scratch.get_or_init(Scratch::new));
            b.iter(|| Digest::of(Algorithm::Sha256, black_box(data)));
        });
        // The disk's part of an ingest alone, then with the hashing a writer does inline: the
        // floor for one thread that writes, hashes and syncs, with no store around it.
        for (kind, hash) in [("write_fsync", false), ("write_hash_fsync", true)] {
            g.bench_function(format!("{kind}/{}", size.label), |b| {
                let s = scratch.get_or_init(Scratch::new);
                let (_, data) = cached_file(s);
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let seq = BLOB_SEQ.fetch_add(1, Ordering::Relaxed);
                            write_new_file(&s.path(&format!("w-{seq}")), data, hash)
                        })
                        .sum()
                });
            });
        }
    }
    g.finish();
}

/// Writes `data` to a new file in `CHUNK`s, hashing each chunk after writing it when `hash`
/// (as `Writer::write` does), fsyncs it and returns the time taken.
///
/// The file is kept, as the store keeps its blobs: on this VM a page cache that grows into
/// memory never touched before costs about 1.2 ms per MiB more than one that reuses freed pages
/// (docs/benchmarks.md), and both sides of the comparison must pay the same.
fn write_new_file(path: &Path, data: &[u8], hash: bool) -> Duration {
    let start = Instant::now();
    let mut hasher = Algorithm::Sha256.hasher();
    let mut f = File::create(path).expect("create");
    for chunk in data.chunks(CHUNK) {
        f.write_all(chunk).expect("write");
        if hash {
            hasher.update(chunk);
        }
    }
    f.sync_all().expect("fsync");
    black_box(hasher.finish());
    start.elapsed()
}

/// `sha256sum FILE`, the process included: that is the cost of hashing a file with it.
fn run_sha256sum(path: &Path) -> Vec<u8> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed: {out:?}");
    out.stdout
}
