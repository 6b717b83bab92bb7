//! The scheduler: containerd's scheduler tests (reference 2.8) against a stand-in collector,
//! and the clock wake-up against a real store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_gc::scheduler::{Collect, Scheduler, SchedulerConfig};
use strata_gc::{Report, Result};
use strata_store::Timestamp;
use strata_store::db::Commit;

use crate::support::{fx, x};

/// A collector that takes `cost` and tells the test when it ran.
struct Fake {
    cost: Duration,
    runs: mpsc::Sender<Instant>,
}

impl Collect for Fake {
    fn collect(&mut self) -> Result<Report> {
        let start = Instant::now();
        // Simulated work: the collector's own cost, not a wait for another thread.
        while start.elapsed() < self.cost {
            std::hint::spin_loop();
        }
        let _ = self.runs.send(start);
        Ok(Report {
            started_at: Timestamp::now(),
            mark: self.cost,
            sweep: Duration::ZERO,
            cleanup: Duration::ZERO,
            removed: Vec::new(),
            kept_late: 0,
            files: Default::default(),
            next_expiry: None,
        })
    }
}

impl Fake {
    /// A collector costing `cost`, and the receiving end of its runs.
    fn new(cost: Duration) -> (Fake, mpsc::Receiver<Instant>) {
        let (runs, rx) = mpsc::channel();
        (Fake { cost, runs }, rx)
    }
}

/// A scheduler around a [`Fake`] costing `cost`, configured by `f`, and the receiving end of
/// the fake's runs.
fn scheduler(
    cost: Duration,
    f: impl FnOnce(&mut SchedulerConfig),
) -> (Scheduler, mpsc::Receiver<Instant>) {
    let (fake, rx) = Fake::new(cost);
    (Scheduler::with_collector(fake, config(f)), rx)
}

fn config(f: impl FnOnce(&mut SchedulerConfig)) -> SchedulerConfig {
    let mut c = SchedulerConfig::default();
    f(&mut c);
    c
}

fn deletion() -> Commit {
    Commit {
        touched: 0,
        deletion: true,
        expires: None,
    }
}

fn mutation() -> Commit {
    Commit {
        touched: 1,
        deletion: false,
        expires: None,
    }
}

#[test]
fn startup_delay_delays_the_first_collection() {
    let started = Instant::now();
    let (_s, rx) = scheduler(Duration::ZERO, |c| {
        c.startup_delay = Duration::from_millis(20);
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first - started >= Duration::from_millis(20));
}

#[test]
fn trigger_runs_one_collection_and_returns_its_report() {
    let (s, rx) = scheduler(Duration::from_millis(1), |c| {
        c.startup_delay = Duration::from_secs(3600);
    });
    let report = s.collect_now().unwrap();
    assert_eq!(report.mark, Duration::from_millis(1));
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err(), "exactly one run");
    assert_eq!(s.stats().collections, 1);
}

#[test]
fn deletion_threshold_collects_once_at_the_threshold() {
    let (inner, rx) = Fake::new(Duration::ZERO);
    let sent = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    struct Counting {
        inner: Fake,
        sent: Arc<AtomicU64>,
        seen: Arc<Mutex<Vec<u64>>>,
    }
    impl Collect for Counting {
        fn collect(&mut self) -> Result<Report> {
            self.seen
                .lock()
                .unwrap()
                .push(self.sent.load(Ordering::SeqCst));
            self.inner.collect()
        }
    }
    let s = Scheduler::with_collector(
        Counting {
            inner,
            sent: Arc::clone(&sent),
            seen: Arc::clone(&seen),
        },
        config(|c| {
            c.startup_delay = Duration::from_secs(3600);
            c.deletion_threshold = 5;
            c.mutation_threshold = 0;
        }),
    );
    for _ in 0..5 {
        sent.fetch_add(1, Ordering::SeqCst);
        s.committed(deletion());
    }
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A stop after the run: nothing else may be pending.
    drop(s);
    assert!(rx.try_recv().is_err(), "exactly one run");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![5],
        "no run before the fifth deletion"
    );
}

#[test]
fn mutations_below_the_threshold_do_not_collect() {
    let (s, rx) = scheduler(Duration::ZERO, |c| {
        c.startup_delay = Duration::from_secs(3600);
        c.mutation_threshold = 3;
    });
    s.committed(mutation());
    s.committed(mutation());
    // A trigger is processed after the two mutations: exactly one run follows, the trigger's.
    s.collect_now().unwrap();
    s.committed(mutation());
    s.committed(mutation());
    s.committed(mutation());
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    drop(s);
    assert!(rx.try_recv().is_err());
}

#[test]
fn pause_threshold_limits_how_often_deletions_collect() {
    let (s, rx) = scheduler(Duration::from_micros(100), |c| {
        c.startup_delay = Duration::ZERO;
    });
    // A deletion every 100 µs for 15 ms: collections of 100 µs, pause 0.02 (5 ms floor).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(15) {
        s.committed(deletion());
        let next = Instant::now() + Duration::from_micros(100);
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    let runs = rx
        .try_iter()
        .filter(|t| *t - start <= Duration::from_millis(15))
        .count();
    assert!((1..=4).contains(&runs), "{runs} runs in 15 ms");
}

#[test]
fn an_idle_store_collects_an_expired_lease_at_its_expiry() {
    let f = fx();
    let scheduler = Scheduler::start(&f.store, SchedulerConfig::default());
    let expire = Timestamp(Timestamp::now().0 + 300_000_000).to_rfc3339();
    f.lease("ns", "pull", &[("containerd.io/gc.expire", &expire)]);
    let digest = f.blob_leased("ns", Some("pull"), "partial pull", &[]);
    f.add("ns", "pull", "content", &x(&digest));
    let created = Instant::now();
    // Nothing else is written from here on: only the clock can wake the collector.
    let deadline = created + Duration::from_secs(20);
    while f.store.content().info("ns", &digest).is_ok() {
        assert!(Instant::now() < deadline, "expired lease never collected");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f.store.leases().get("ns", "pull").is_err());
    // The records go at the sweep; the file at the same collection's cleanup, reported when
    // the whole collection is done.
    let lease = strata_gc::Node::new(strata_gc::Kind::Lease, "ns", "pull");
    while !scheduler
        .stats()
        .last
        .is_some_and(|r| r.removed.contains(&lease))
    {
        assert!(Instant::now() < deadline, "the collection never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!f.blob_file(&digest).exists());
    assert!(scheduler.stats().collections >= 1);
}
