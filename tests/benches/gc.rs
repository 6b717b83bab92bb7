//! strata-gc benchmarks: containerd's `BenchmarkGarbageCollect` on strata, a collection that
//! removes half the store, and the latency of `prepare` while collections run. The figures
//! and the commands that produced them are in `docs/benchmarks.md`; `scripts/bench-gc.sh`
//! runs this and prints the tables.
//!
//! A **set** is what containerd's benchmark builds per unit: one blob (a 512-byte file and its
//! record), one image whose target is that blob, a chain of 7 committed snapshots
//! (`native` snapshotter: empty `<id>/fs` directories) and one container whose snapshot is the
//! top of the chain. Everything is reachable, so a collection has nothing to delete. Stores
//! are filled with `strata_store::bulk` and `strata_snapshotter::bulk` (large transactions,
//! no fsync), not the public API, which would take hours for 100 000 sets.
//!
//! Parts (each printed as `strata-bench-gc: ...` lines with `key=value` figures):
//! - `collect/<N>_sets` (criterion): `strata_gc::collect` on N live sets, repeated on the same
//!   store. Criterion times the whole call; every call's `Report` phases (mark, sweep = how
//!   long the sweep's write transaction was held, cleanup) are kept and printed as medians and
//!   maxima once the size is done.
//! - `garbage/<N>` (one-shot, not criterion): N sets of which half have no image and no
//!   container, so one collection removes N/2 blobs, 7·N/2 snapshots and their files. A
//!   collection can only do that once per population, so each run builds a fresh store and
//!   times one `collect`; `STRATA_BENCH_GC_GARBAGE_RUNS` runs per size (default 3, 1 at 100 000
//!   sets and above).
//! - `prepare/<N>` (not criterion): on the N-set store of `collect` (or a fresh one), one
//!   thread loops `prepare` (native, on the top of a random set's chain, under a lease) and
//!   `remove`, timing each prepare: first for a baseline window without collections, then while
//!   the main thread runs `STRATA_BENCH_GC_PREPARE_COLLECTS` collections back to back. p50,
//!   p99 and max of both windows are printed.
//!
//! A criterion filter (`cargo bench -p strata-tests --bench gc -- <filter>`) selects the
//! criterion cases as usual; `garbage/<N>` and `prepare/<N>` run when their id contains the
//! filter (a plain substring match), so `-- collect/` runs only criterion's part. `--list` runs
//! nothing; `--test` runs each part once on small stores.
//!
//! Environment (the defaults are the documented configuration):
//! `STRATA_BENCH_DIR` (parent of the scratch stores, default `/var/tmp`; a real disk, not
//! tmpfs), `STRATA_BENCH_GC_SETS` (comma-separated sizes, default `10,100,1000,10000,100000`),
//! `STRATA_BENCH_GC_GARBAGE_RUNS`, `STRATA_BENCH_GC_PREPARE_SETS` (100000),
//! `STRATA_BENCH_GC_PREPARE_SECS` (baseline window, 10), `STRATA_BENCH_GC_PREPARE_COLLECTS` (5).

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use strata_snapshotter::Snapshotter;
use strata_snapshotter::bulk::Loader;
use strata_store::bulk::unique_bytes;
use strata_store::containers::Container;
use strata_store::images::{Descriptor, Image};
use strata_store::{Scope, Store, StoreOptions};
use strata_tests::bench::peak_rss;
use tempfile::TempDir;

/// The namespace every set lives in.
const NS: &str = "bench";
/// Directories only: the native backend needs no mounts for committed snapshots.
const SNAPSHOTTER: &str = "native";
/// Snapshots per set, as in containerd's benchmark.
const CHAIN: usize = 7;
/// Bytes of each set's blob.
const BLOB_BYTES: usize = 512;
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DEFAULT_SETS: &[usize] = &[10, 100, 1_000, 10_000, 100_000];
const LEASE: &str = "bench-prepare";

fn main() {
    let args = BenchArgs::parse();
    let small = args.test;
    let sizes = env_sizes(
        "STRATA_BENCH_GC_SETS",
        if small { &[10, 100] } else { DEFAULT_SETS },
    );
    let prepare_sets = env_usize(
        "STRATA_BENCH_GC_PREPARE_SETS",
        if small { 100 } else { 100_000 },
    );
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();

    let mut kept = None;
    collect_group(&mut c, &sizes, prepare_sets, &mut kept);
    c.final_summary();
    if args.list {
        return;
    }
    let id = format!("prepare/{prepare_sets}");
    if args.selects(&id) {
        let population = kept
            .take()
            .unwrap_or_else(|| Population::new("prepare", prepare_sets, 0));
        prepare_latency(&population, small);
        population.retire();
    }
    if let Some(p) = kept.take() {
        p.retire();
    }
    for &sets in &sizes {
        if args.selects(&format!("garbage/{sets}")) {
            garbage(sets, small);
        }
    }
    println!("strata-bench-gc: at exit: {}", peak_rss());
    remove_retired();
}

// ---------------------------------------------------------------------------------------------
// Arguments and environment

/// What this binary needs of criterion's command line: the filter and the modes.
struct BenchArgs {
    filter: Option<String>,
    list: bool,
    test: bool,
}

impl BenchArgs {
    fn parse() -> BenchArgs {
        // Criterion options that take a value: their value is not the filter.
        const VALUED: &[&str] = &[
            "-c",
            "--color",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--plotting-backend",
            "--output-format",
            "--format",
        ];
        let mut out = BenchArgs {
            filter: None,
            list: false,
            test: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--list" => out.list = true,
                "--test" => out.test = true,
                v if VALUED.contains(&v) => {
                    args.next();
                }
                v if v.starts_with('-') => {}
                v => out.filter = Some(v.to_owned()),
            }
        }
        out
    }

    /// Whether a part that is not a criterion case runs: its id contains the filter.
    fn selects(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

/// A fresh directory under `STRATA_BENCH_DIR`, removed when dropped.
fn scratch_dir(name: &str) -> TempDir {
    let parent =
        std::env::var_os("STRATA_BENCH_DIR").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    tempfile::Builder::new()
        .prefix(&format!("strata-bench-gc-{name}-"))
        .tempdir_in(&parent)
        .expect("create scratch directory")
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------------------------
// Populations

/// A store of sets in its own scratch directory. Field order matters: the store (its lock,
/// and the seal it writes on close) must go before the directory is removed.
struct Population {
    store: Store,
    /// The top snapshot of each live set's chain.
    tops: Vec<String>,
    live: usize,
    garbage: usize,
    dir: TempDir,
}

impl Population {
    /// `live + garbage` sets, garbage spread evenly among them (every other set when equal).
    fn new(name: &str, live: usize, garbage: usize) -> Population {
        let dir = scratch_dir(name);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
        let total = live + garbage;
        let started = Instant::now();
        let mut loader = Loader::new(&store);
        let mut tops = Vec::with_capacity(live);
        for i in 0..total {
            // Set i is garbage when the running share of garbage steps up at i.
            let is_garbage = (i + 1) * garbage / total > i * garbage / total;
            let set = format!("set-{i:07}");
            let data = unique_bytes(i as u64, BLOB_BYTES);
            let digest = loader
                .with_store(|s| s.blob_with_file(NS, &data, BTreeMap::new()))
                .expect("blob");
            let keys: Vec<String> = (0..CHAIN).map(|l| format!("{set}/layer-{l}")).collect();
            loader
                .committed_chain(NS, SNAPSHOTTER, &keys, None)
                .expect("snapshot chain");
            if is_garbage {
                continue;
            }
            let top = keys[CHAIN - 1].clone();
            let target = Descriptor {
                media_type: MANIFEST.into(),
                digest,
                size: BLOB_BYTES as u64,
                annotations: BTreeMap::new(),
            };
            let image = Image::new(format!("registry.example/bench/{set}:latest"), target);
            let mut container = Container::new(&set);
            container.image.clone_from(&image.name);
            container.snapshotter = SNAPSHOTTER.into();
            container.snapshot_key.clone_from(&top);
            container.runtime = "io.containerd.runc.v2".into();
            loader
                .with_store(|s| {
                    s.image(NS, &image)?;
                    s.container(NS, &container)
                })
                .expect("image and container");
            tops.push(top);
        }
        let stats = loader.finish().expect("commit population");
        let seconds = started.elapsed().as_secs_f64();
        // Nothing above was synced: write it all back now, untimed, so no measurement pays
        // for the population's dirty pages (every native prepare runs a `syncfs`).
        let t = Instant::now();
        rustix::fs::sync();
        let sync_seconds = t.elapsed().as_secs_f64();
        let meta = fs::metadata(store.layout().meta()).map_or(0, |m| m.len());
        println!(
            "strata-bench-gc: populated {name} sets={total} live={live} garbage={garbage} \
             seconds={seconds:.1} sync_seconds={sync_seconds:.1} records={} transactions={} files={} \
             directories={} meta_mib={:.1} {}",
            stats.records,
            stats.transactions,
            stats.files,
            stats.directories,
            meta as f64 / f64::from(1 << 20),
            peak_rss(),
        );
        Population {
            store,
            tops,
            live,
            garbage,
            dir,
        }
    }

    /// Closes the store and leaves its directory for [`remove_retired`]: removing a tree of
    /// a million directories takes minutes on this disk, and mass deletions slow down later
    /// file creation, so no removal runs between measurements.
    fn retire(self) {
        let Population { store, dir, .. } = self;
        drop(store);
        RETIRED.lock().expect("retired list").push(dir);
    }
}

/// Scratch directories of closed stores, removed at exit.
static RETIRED: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());

/// Removes every retired store directory, printing how long that took.
fn remove_retired() {
    let dirs = std::mem::take(&mut *RETIRED.lock().expect("retired list"));
    for dir in dirs {
        let t = Instant::now();
        let path = dir.path().to_owned();
        drop(dir);
        println!(
            "strata-bench-gc: removed {} in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// One collection's figures.
#[derive(Clone, Copy)]
struct Run {
    total: Duration,
    mark: Duration,
    sweep: Duration,
    cleanup: Duration,
    records: usize,
    files: usize,
    /// Records cleanup reported as missing their data.
    missing: usize,
}

fn collect_once(store: &Store) -> Run {
    let run = collect_concurrent(store);
    assert_eq!(run.missing, 0, "records whose data is missing");
    run
}

/// One collection while another thread prepares and removes snapshots: a snapshot removed
/// between cleanup's read of the records and its check of the directory is reported as
/// missing data, so those reports are counted rather than refused.
fn collect_concurrent(store: &Store) -> Run {
    let t = Instant::now();
    let r = strata_gc::collect(store).expect("collect");
    let total = t.elapsed();
    assert!(
        r.files.failed.is_empty(),
        "cleanup failures: {:?}",
        r.files.failed
    );
    Run {
        total,
        mark: r.mark,
        sweep: r.sweep,
        cleanup: r.cleanup,
        records: r.removed.len(),
        files: r.files.removed.len(),
        missing: r.files.missing.len(),
    }
}

/// Medians and maxima of each phase over `runs`, as one line.
fn phase_summary(runs: &[Run]) -> String {
    let pick = |f: fn(&Run) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort();
        (quantile(&v, 0.5), v.last().copied().unwrap_or_default())
    };
    let mut out = format!("runs={}", runs.len());
    for (name, f) in [
        ("total", (|r: &Run| r.total) as fn(&Run) -> Duration),
        ("mark", |r: &Run| r.mark),
        ("sweep", |r: &Run| r.sweep),
        ("cleanup", |r: &Run| r.cleanup),
    ] {
        let (median, max) = pick(f);
        out.push_str(&format!(
            " {name}_median_ms={} {name}_max_ms={}",
            ms(median),
            ms(max)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// collect/: containerd's BenchmarkGarbageCollect (nothing to delete)

/// Criterion settings by size: a 100 000-set collection takes seconds, so large sizes get the
/// minimum sample count and flat sampling (one collection per sample).
fn configure(g: &mut BenchmarkGroup<'_, WallTime>, sets: usize) {
    if sets >= 10_000 {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(10))
            .sampling_mode(SamplingMode::Flat);
    } else {
        g.sample_size(20)
            .measurement_time(Duration::from_secs(5))
            .sampling_mode(SamplingMode::Auto);
    }
}

fn collect_group(
    c: &mut Criterion,
    sizes: &[usize],
    keep_sets: usize,
    kept: &mut Option<Population>,
) {
    let mut g = c.benchmark_group("collect");
    for &sets in sizes {
        configure(&mut g, sets);
        let population: OnceCell<Population> = OnceCell::new();
        let runs: RefCell<Vec<Run>> = RefCell::default();
        g.bench_function(format!("{sets}_sets"), |b| {
            let p = population.get_or_init(|| {
                let p = Population::new("collect", sets, 0);
                let first = collect_once(&p.store);
                assert_eq!(
                    (first.records, first.files),
                    (0, 0),
                    "a store of live sets has nothing to collect"
                );
                p
            });
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let run = collect_once(&p.store);
                    assert_eq!((run.records, run.files), (0, 0));
                    total += run.total;
                    runs.borrow_mut().push(run);
                }
                total
            });
        });
        if let Some(p) = population.into_inner() {
            println!(
                "strata-bench-gc: collect sets={sets} {} {}",
                phase_summary(&runs.borrow()),
                peak_rss()
            );
            if sets == keep_sets && kept.is_none() {
                *kept = Some(p);
            } else {
                p.retire();
            }
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// garbage/: half the sets unreferenced, one collection per fresh population

fn garbage(sets: usize, small: bool) {
    let default_runs = if small || sets >= 100_000 { 1 } else { 3 };
    let n = env_usize("STRATA_BENCH_GC_GARBAGE_RUNS", default_runs).max(1);
    let doomed = sets / 2;
    let mut runs = Vec::with_capacity(n);
    for i in 1..=n {
        let p = Population::new("garbage", sets - doomed, doomed);
        assert_eq!(p.tops.len(), p.live);
        let run = collect_once(&p.store);
        // Each garbage set: its blob and 7 snapshot records; its blob file and 7 directories.
        let expected = p.garbage * (1 + CHAIN);
        assert_eq!(
            (run.records, run.files),
            (expected, expected),
            "removed records and files"
        );
        let again = collect_once(&p.store);
        assert_eq!(
            (again.records, again.files),
            (0, 0),
            "a second pass finds nothing"
        );
        println!(
            "strata-bench-gc: garbage-run sets={sets} run={i} garbage_sets={doomed} records_removed={} \
             files_removed={} total_ms={} mark_ms={} sweep_ms={} cleanup_ms={}",
            run.records,
            run.files,
            ms(run.total),
            ms(run.mark),
            ms(run.sweep),
            ms(run.cleanup)
        );
        runs.push(run);
        p.retire();
    }
    println!(
        "strata-bench-gc: garbage sets={sets} garbage_sets={doomed} records_removed={} files_removed={} {}",
        runs[0].records,
        runs[0].files,
        phase_summary(&runs)
    );
}

// ---------------------------------------------------------------------------------------------
// prepare/: prepare latency with and without collections running

/// One prepare: when it started and how long it took.
type Sample = (Instant, Duration);

/// Loops prepare + remove until `stop`, timing each prepare.
fn prepare_loop(
    store: Store,
    tops: Arc<Vec<String>>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let sn = Snapshotter::native(&store).expect("native snapshotter");
    let scope = Scope::new(NS).expect("scope").with_lease(LEASE);
    let mut samples = Vec::new();
    let mut pick = 0x2545_F491_4F6C_DD1Du64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        let parent = &tops[(pick % tops.len() as u64) as usize];
        let key = format!("{prefix}-{i}");
        let t = Instant::now();
        sn.prepare(&scope, &key, Some(parent), BTreeMap::new())
            .expect("prepare");
        samples.push((t, t.elapsed()));
        sn.remove(&scope, &key).expect("remove");
        i += 1;
    }
    samples
}

fn spawn_loop(
    p: &Population,
    prefix: &'static str,
) -> (Arc<AtomicBool>, thread::JoinHandle<Vec<Sample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tops = Arc::new(p.tops.clone());
    let (store, flag) = (p.store.clone(), Arc::clone(&stop));
    let handle = thread::spawn(move || prepare_loop(store, tops, prefix, flag));
    (stop, handle)
}

fn latency_line(sets: usize, window: &str, lat: &mut [Duration], extra: &str) {
    lat.sort();
    println!(
        "strata-bench-gc: prepare sets={sets} window={window} prepares={} p50_ms={} p99_ms={} max_ms={}{extra}",
        lat.len(),
        ms(quantile(lat, 0.5)),
        ms(quantile(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
}

fn prepare_latency(p: &Population, small: bool) {
    let sets = p.live;
    p.store
        .leases()
        .create(NS, LEASE, BTreeMap::new())
        .expect("create lease");
    let secs = env_usize("STRATA_BENCH_GC_PREPARE_SECS", if small { 1 } else { 10 });
    let collects = env_usize(
        "STRATA_BENCH_GC_PREPARE_COLLECTS",
        if small { 2 } else { 5 },
    )
    .max(1);

    // Baseline: no collection.
    let (stop, handle) = spawn_loop(p, "base");
    thread::sleep(Duration::from_secs(secs as u64));
    stop.store(true, Ordering::Relaxed);
    let mut base: Vec<Duration> = handle
        .join()
        .expect("prepare thread")
        .into_iter()
        .map(|s| s.1)
        .collect();
    latency_line(sets, "baseline", &mut base, &format!(" seconds={secs}"));

    // Collections back to back while the thread prepares.
    let (stop, handle) = spawn_loop(p, "gc");
    // Let the loop reach its steady state before the first collection.
    thread::sleep(Duration::from_millis(200));
    let mut windows = Vec::with_capacity(collects);
    let mut runs = Vec::with_capacity(collects);
    for _ in 0..collects {
        let start = Instant::now();
        let run = collect_concurrent(&p.store);
        windows.push((start, start + run.total));
        runs.push(run);
    }
    stop.store(true, Ordering::Relaxed);
    let samples = handle.join().expect("prepare thread");
    // A prepare counts as "during GC" when its run overlaps a collection.
    let mut during: Vec<Duration> = samples
        .iter()
        .filter(|(t, d)| windows.iter().any(|(s, e)| *t < *e && *t + *d > *s))
        .map(|s| s.1)
        .collect();
    latency_line(
        sets,
        "during_gc",
        &mut during,
        &format!(" collects={collects}"),
    );
    println!(
        "strata-bench-gc: prepare-collects sets={sets} {} records_removed={} missing_reported={}",
        phase_summary(&runs),
        runs.iter().map(|r| r.records).sum::<usize>(),
        runs.iter().map(|r| r.missing).sum::<usize>(),
    );
}
