//! Counters shared by every simulated subscriber, cheap enough to bump once per frame.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies and connect times are recorded in µs; anything over an hour is clamped (a live feed
/// that late is "never arrived" anyway).
const HIST_MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

#[derive(Default)]
pub(crate) struct Counters {
    pub attempts_done: AtomicU64,
    pub connects_ok: AtomicU64,
    /// Subscribers currently open.
    pub open: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub deltas: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Frames of a type this generator does not know (`status`, `pong`, other servers' extras).
    pub other_frames: AtomicU64,
    /// Text frames that are not JSON objects with a string `type`.
    pub unparsable: AtomicU64,
    /// Deltas whose `seq` skipped ahead, and how many seqs were never received as a delta
    /// within an epoch: those gaps plus the jumps of resync and reconnect snapshots.
    pub gap_events: AtomicU64,
    pub missing_seqs: AtomicU64,
    /// Deltas whose `seq` did not advance (duplicate or reordered).
    pub out_of_order: AtomicU64,
    /// Snapshots after the first one on a live connection (the server gave up streaming to it).
    pub resyncs: AtomicU64,
    /// Snapshots (or deltas) of another epoch than the subscriber's: how many seqs it missed
    /// cannot be told.
    pub epoch_changes: AtomicU64,
    /// Snapshots and deltas whose `checksum` agrees / disagrees with the table the subscriber
    /// folded (frames without one, or after a gap until the next snapshot, are in neither).
    pub checksums_verified: AtomicU64,
    pub checksum_mismatches: AtomicU64,
    /// With `--reconnect`: connections made again after one ended, resumes the server answered
    /// with a snapshot instead of a replay, and the seqs those snapshots skipped.
    pub reconnects: AtomicU64,
    pub reconnect_snapshots: AtomicU64,
    pub missed_on_reconnect: AtomicU64,
    /// The lowest and highest last `seq` of the subscribers when the run ended.
    pub final_seq_min: AtomicU64,
    pub final_seq_max: AtomicU64,
}

/// State of one load test, shared by the generator threads and the reporter.
pub(crate) struct Shared {
    pub c: Counters,
    /// Latency is only recorded once every subscriber is connected (see `Loadtest::begin_steady`).
    pub steady: AtomicBool,
    failures: Mutex<BTreeMap<String, u64>>,
    disconnects: Mutex<BTreeMap<String, u64>>,
    reconnect_failures: Mutex<BTreeMap<String, u64>>,
    /// One histogram per generator thread, so the per-frame lock is never contended.
    latency: Vec<Mutex<Histogram<u64>>>,
    read_latency: Vec<Mutex<Histogram<u64>>>,
    connect: Vec<Mutex<Histogram<u64>>>,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, reason: String) {
    *map.lock().expect("stats lock").entry(reason).or_default() += 1;
}

fn merged(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut all = histogram();
    for shard in shards {
        all.add(&*shard.lock().expect("stats lock"))
            .expect("histograms share bounds");
    }
    all
}

impl Shared {
    pub fn new(threads: usize) -> Self {
        let shards = || (0..threads).map(|_| Mutex::new(histogram())).collect();
        let c = Counters {
            final_seq_min: AtomicU64::new(u64::MAX),
            ..Counters::default()
        };
        Self {
            c,
            steady: AtomicBool::new(false),
            failures: Mutex::default(),
            disconnects: Mutex::default(),
            reconnect_failures: Mutex::default(),
            latency: shards(),
            read_latency: shards(),
            connect: shards(),
        }
    }

    pub fn connected(&self, shard: usize, took: Duration) {
        self.c.connects_ok.fetch_add(1, Relaxed);
        self.c.open.fetch_add(1, Relaxed);
        self.c.attempts_done.fetch_add(1, Relaxed);
        self.connect[shard]
            .lock()
            .expect("stats lock")
            .saturating_record(took.as_micros() as u64);
    }

    pub fn failed(&self, reason: String) {
        bump(&self.failures, reason);
        self.c.attempts_done.fetch_add(1, Relaxed);
    }

    pub fn disconnected(&self, reason: String) {
        bump(&self.disconnects, reason);
    }

    pub fn closed(&self) {
        self.c.open.fetch_sub(1, Relaxed);
    }

    pub fn reconnected(&self) {
        self.c.reconnects.fetch_add(1, Relaxed);
        self.c.open.fetch_add(1, Relaxed);
    }

    pub fn reconnect_failed(&self, reason: String) {
        bump(&self.reconnect_failures, reason);
    }

    /// A subscriber's last `seq` when the run ended (none if it never had data).
    pub fn final_seq(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.c.final_seq_min.fetch_min(seq, Relaxed);
            self.c.final_seq_max.fetch_max(seq, Relaxed);
        }
    }

    pub fn reconnect_failures(&self) -> BTreeMap<String, u64> {
        self.reconnect_failures.lock().expect("stats lock").clone()
    }

    /// Publish → arrival at this host (kernel receive time), and publish → read by the generator.
    pub fn latency(&self, shard: usize, arrived_us: u64, read_us: u64) {
        self.latency[shard]
            .lock()
            .expect("stats lock")
            .saturating_record(arrived_us.max(1));
        self.read_latency[shard]
            .lock()
            .expect("stats lock")
            .saturating_record(read_us.max(1));
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().expect("stats lock").clone()
    }

    pub fn disconnects(&self) -> BTreeMap<String, u64> {
        self.disconnects.lock().expect("stats lock").clone()
    }

    pub fn latency_summary(&self) -> Percentiles {
        Percentiles::of(&merged(&self.latency))
    }

    pub fn read_latency_summary(&self) -> Percentiles {
        Percentiles::of(&merged(&self.read_latency))
    }

    pub fn connect_summary(&self) -> Percentiles {
        Percentiles::of(&merged(&self.connect))
    }
}

/// Percentiles of a histogram of µs, reported in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}
