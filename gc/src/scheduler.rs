//! The GC scheduler: a background thread that decides when to collect.
//!
//! containerd's rules (`plugins/gc/scheduler.go`), with its defaults:
//! - the first collection runs `startup_delay` (100 ms) after start; it also reconciles what
//!   a crash left, since every collection does;
//! - a deletion (image, blob, lease, container or snapshot removed) schedules a collection
//!   when `deletion_threshold` is 0, or once that many deletions were seen; `mutation_threshold`
//!   (100) writes of any kind schedule one too;
//! - `pause_threshold` (0.02) bounds the share of time spent collecting: after a collection
//!   that took `d` on average (at least 5 ms), the next automatic one waits `d / 0.02 - d`;
//! - [`Scheduler::collect_now`] (a synchronous delete) runs one at once and waits for it.
//!
//! What containerd lacks, added here: **a clock wake-up at the next expiry**. Every commit
//! that sets an expiry (a lease's or image's `containerd.io/gc.expire`, an unleased ingest)
//! tells the scheduler, and every collection reports the earliest expiry still ahead; the
//! thread sleeps until then, so an idle store collects an expired lease without any write.
//! And no idle ticking: with nothing due the thread sleeps until an event arrives.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_store::db::Commit;
use strata_store::{Store, Timestamp};

use crate::collect::Report;
use crate::error::{Error, Result};

/// When to collect (containerd's `io.containerd.gc.v1.scheduler` settings).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Largest share of time spent collecting, clamped to `0..=0.5` (default 0.02).
    pub pause_threshold: f64,
    /// Deletions that trigger a collection; 0 means any deletion does (default 0).
    pub deletion_threshold: u64,
    /// Writes of any kind that trigger a collection; 0 disables (default 100).
    pub mutation_threshold: u64,
    /// Delay between a trigger and the collection (default 0).
    pub schedule_delay: Duration,
    /// Delay of the first collection after start (default 100 ms).
    pub startup_delay: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay: Duration::from_millis(100),
        }
    }
}

/// What the scheduler runs: a real store, or a stand-in in tests.
pub trait Collect: Send + 'static {
    /// Runs one full collection.
    ///
    /// # Errors
    /// Whatever the collection fails with.
    fn collect(&mut self) -> Result<Report>;
}

impl Collect for Store {
    fn collect(&mut self) -> Result<Report> {
        crate::collect(self)
    }
}

/// Counters of the scheduler's work so far.
#[derive(Debug, Clone, Default)]
pub struct SchedulerStats {
    /// Collections that succeeded.
    pub collections: u64,
    /// Collections that failed.
    pub failures: u64,
    /// The last successful collection's report.
    pub last: Option<Report>,
}

enum Event {
    Commit(Commit),
    Trigger(Sender<Result<Report, String>>),
    Stop,
}

/// A running scheduler; stops (and joins its thread) when dropped.
pub struct Scheduler {
    events: Sender<Event>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<SchedulerStats>>,
    store: Option<Store>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts collecting `store` in the background: every commit on it is counted from now on.
    pub fn start(store: &Store, config: SchedulerConfig) -> Scheduler {
        let mut s = Scheduler::with_collector(store.clone(), config);
        let events = s.events.clone();
        let sender = Mutex::new(events);
        store.db().set_observer(Some(Arc::new(move |c: Commit| {
            if let Ok(tx) = sender.lock() {
                let _ = tx.send(Event::Commit(c));
            }
        })));
        s.store = Some(store.clone());
        s
    }

    /// Starts a scheduler around any collector; commits are reported with
    /// [`Scheduler::committed`].
    pub fn with_collector(collector: impl Collect, config: SchedulerConfig) -> Scheduler {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(SchedulerStats::default()));
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("strata-gc".into())
            .spawn(move || run(collector, config, &rx, &shared))
            .ok();
        Scheduler {
            events: tx,
            thread,
            stats,
            store: None,
        }
    }

    /// Reports one commit (what [`Scheduler::start`] does for every commit on its store).
    pub fn committed(&self, commit: Commit) {
        let _ = self.events.send(Event::Commit(commit));
    }

    /// Runs a collection now (after the schedule delay) and waits for its report: what a
    /// synchronous delete does.
    ///
    /// # Errors
    /// The collection's error (as Unavailable with its message), or Unavailable when the
    /// scheduler has stopped.
    pub fn collect_now(&self) -> Result<Report> {
        let (tx, rx) = mpsc::channel();
        let stopped = || {
            Error::Store(strata_store::Error::Unavailable(
                "the GC scheduler stopped".into(),
            ))
        };
        self.events
            .send(Event::Trigger(tx))
            .map_err(|_| stopped())?;
        match rx.recv() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(Error::Store(strata_store::Error::Unavailable(e))),
            Err(_) => Err(stopped()),
        }
    }

    /// Counters and the last report.
    pub fn stats(&self) -> SchedulerStats {
        match self.stats.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            store.db().set_observer(None);
        }
        let _ = self.events.send(Event::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The scheduler's state between events.
struct State {
    config: SchedulerConfig,
    mutations: u64,
    deletions: u64,
    waiters: Vec<Sender<Result<Report, String>>>,
    /// When the next collection runs, if one is due.
    next: Option<Instant>,
    /// No automatic collection before this (the pause threshold).
    not_before: Option<Instant>,
    /// The earliest known expiry still ahead.
    expiry: Option<Timestamp>,
    /// Durations of past collections, for the pause threshold.
    total: Duration,
    runs: u32,
}

impl State {
    fn schedule(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// The earliest an automatic collection may start: after the delay and the pause.
    fn automatic(&self, now: Instant) -> Instant {
        let at = now + self.config.schedule_delay;
        self.not_before.map_or(at, |nb| at.max(nb))
    }

    fn on_commit(&mut self, c: Commit, now: Instant) {
        self.mutations += 1;
        if c.deletion {
            self.deletions += 1;
        }
        if let Some(at) = c.expires {
            self.expiry = Some(self.expiry.map_or(at, |e| e.min(at)));
        }
        let cfg = &self.config;
        let due = (cfg.deletion_threshold > 0 && self.deletions >= cfg.deletion_threshold)
            || (cfg.deletion_threshold == 0 && self.deletions > 0)
            || (cfg.mutation_threshold > 0 && self.mutations >= cfg.mutation_threshold);
        if due {
            let at = self.automatic(now);
            self.schedule(at);
        }
    }

    /// When the thread must wake next: the scheduled run or the next expiry.
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let expiry = self.expiry.map(|e| {
            // Expired means strictly before the clock: wake just after.
            let ahead =
                e.0.saturating_sub(Timestamp::now().0)
                    .saturating_add(1_000_000);
            let at = now + Duration::from_nanos(u64::try_from(ahead).unwrap_or(0));
            self.not_before.map_or(at, |nb| at.max(nb))
        });
        match (self.next, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finished(&mut self, elapsed: Duration, end: Instant, next_expiry: Option<Timestamp>) {
        self.mutations = 0;
        self.deletions = 0;
        self.next = None;
        self.total += elapsed;
        self.runs += 1;
        let avg = (self.total / self.runs).max(Duration::from_millis(5));
        let pause = self.config.pause_threshold.clamp(0.0, 0.5);
        let interval = if pause > 0.0 {
            avg.div_f64(pause).saturating_sub(avg)
        } else {
            Duration::ZERO
        };
        self.not_before = Some(end + interval);
        self.expiry = next_expiry;
    }
}

fn run(
    mut collector: impl Collect,
    config: SchedulerConfig,
    events: &Receiver<Event>,
    stats: &Mutex<SchedulerStats>,
) {
    let start = Instant::now();
    let mut s = State {
        next: Some(start + config.startup_delay),
        config,
        mutations: 0,
        deletions: 0,
        waiters: Vec::new(),
        not_before: None,
        expiry: None,
        total: Duration::ZERO,
        runs: 0,
    };
    loop {
        let now = Instant::now();
        let event = match s.wake_at(now) {
            Some(at) if at <= now => None,
            Some(at) => match events.recv_timeout(at - now) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match events.recv() {
                Ok(e) => Some(e),
                Err(_) => return,
            },
        };
        let now = Instant::now();
        match event {
            Some(Event::Stop) => return,
            Some(Event::Commit(c)) => {
                s.on_commit(c, now);
                continue;
            }
            Some(Event::Trigger(w)) => {
                s.waiters.push(w);
                s.schedule(now + s.config.schedule_delay);
                continue;
            }
            None => {}
        }
        let t = Instant::now();
        let result = collector.collect();
        let end = Instant::now();
        let waiters = std::mem::take(&mut s.waiters);
        let mut st = match stats.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match result {
            Ok(report) => {
                tracing::info!(
                    mark_ms = report.mark.as_secs_f64() * 1e3,
                    sweep_ms = report.sweep.as_secs_f64() * 1e3,
                    cleanup_ms = report.cleanup.as_secs_f64() * 1e3,
                    removed = report.removed.len(),
                    bytes_freed = report.bytes_freed(),
                    "garbage collected"
                );
                s.finished(end - t, end, report.next_expiry);
                st.collections += 1;
                st.last = Some(report.clone());
                drop(st);
                for w in waiters {
                    let _ = w.send(Ok(report.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed; retrying in 1 s");
                st.failures += 1;
                drop(st);
                for w in waiters {
                    let _ = w.send(Err(e.to_string()));
                }
                s.next = Some(end + Duration::from_secs(1));
                s.not_before = Some(end + Duration::from_secs(1));
            }
        }
    }
}
