//! Per-model statistics like Triton's statistics extension: request counts and cumulative durations per phase, and
//! inference count against execution count so that batching is visible.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A count and a cumulative duration.
#[derive(Debug, Default)]
struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    fn add(&self, times: u64, each: Duration) {
        let ns = u64::try_from(each.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(times, Ordering::Relaxed);
        self.ns.fetch_add(ns.saturating_mul(times), Ordering::Relaxed);
    }

    fn snapshot(&self) -> CountDuration {
        CountDuration { count: self.count.load(Ordering::Relaxed), ns: self.ns.load(Ordering::Relaxed) }
    }
}

/// A count and total nanoseconds, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountDuration {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

/// Statistics of one engine run size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Rows in the run.
    pub batch_size: u64,
    /// Preparing inputs (stacking requests).
    pub compute_input: CountDuration,
    /// Running the engine.
    pub compute_infer: CountDuration,
    /// Splitting outputs back to requests.
    pub compute_output: CountDuration,
}

/// A consistent-enough copy of a model's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Milliseconds since the epoch of the last request, 0 if none.
    pub last_inference_ms: u64,
    /// Rows inferred successfully.
    pub inference_count: u64,
    /// Engine runs.
    pub execution_count: u64,
    /// Successful requests, and their time from arrival to answer.
    pub success: CountDuration,
    /// Failed requests.
    pub fail: CountDuration,
    /// Time requests waited in the queue.
    pub queue: CountDuration,
    /// Preparing inputs, per request.
    pub compute_input: CountDuration,
    /// Running the engine, per request.
    pub compute_infer: CountDuration,
    /// Splitting outputs, per request.
    pub compute_output: CountDuration,
    /// Per run size, ascending.
    pub batches: Vec<BatchStats>,
    /// Instances started and stopped while serving.
    pub scaling: ScalingStats,
}

/// How a version's instances changed while it served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScalingStats {
    /// Requests that found no instance running and started one.
    pub cold_starts: u64,
    /// Instances loaded while serving (cold starts and scale-ups), and the time each took to load and warm up: what
    /// the first request of a cold start waits beyond its queue time.
    pub instance_starts: CountDuration,
    /// Instances added by the autoscaler.
    pub scale_ups: u64,
    /// Instances stopped by the autoscaler (including scaling to zero).
    pub scale_downs: u64,
    /// Instances stopped to make room in the memory budget.
    pub evictions: u64,
}

/// Live counters, updated by request handlers and instance threads.
#[derive(Debug, Default)]
pub(crate) struct ModelStats {
    last_inference_ms: AtomicU64,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    batches: Mutex<BTreeMap<u64, BatchStats>>,
    cold_starts: AtomicU64,
    instance_starts: DurationStat,
    scale_ups: AtomicU64,
    scale_downs: AtomicU64,
    evictions: AtomicU64,
}

impl ModelStats {
    pub(crate) fn cold_start(&self) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_started(&self, took: Duration) {
        self.instance_starts.add(1, took);
    }

    pub(crate) fn scaled(&self, up: bool) {
        if up { &self.scale_ups } else { &self.scale_downs }.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that left the queue and their total wait in nanoseconds.
    pub(crate) fn queue_totals(&self) -> (u64, u64) {
        let q = self.queue.snapshot();
        (q.count, q.ns)
    }

    pub(crate) fn request_done(&self, ok: bool, took: Duration) {
        let now_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        if ok { &self.success } else { &self.fail }.add(1, took);
    }

    pub(crate) fn queued(&self, waited: Duration) {
        self.queue.add(1, waited);
    }

    /// One engine run of `rows` rows serving `requests` requests.
    pub(crate) fn executed(&self, requests: u64, rows: u64, input: Duration, infer: Duration, output: Duration) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count.fetch_add(rows, Ordering::Relaxed);
        self.compute_input.add(requests, input);
        self.compute_infer.add(requests, infer);
        self.compute_output.add(requests, output);
        let mut batches = self.batches.lock();
        let b = batches.entry(rows).or_insert(BatchStats { batch_size: rows, ..BatchStats::default() });
        let add = |s: &mut CountDuration, d: Duration| {
            s.count += 1;
            s.ns = s.ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        };
        add(&mut b.compute_input, input);
        add(&mut b.compute_infer, infer);
        add(&mut b.compute_output, output);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.snapshot(),
            fail: self.fail.snapshot(),
            queue: self.queue.snapshot(),
            compute_input: self.compute_input.snapshot(),
            compute_infer: self.compute_infer.snapshot(),
            compute_output: self.compute_output.snapshot(),
            batches: self.batches.lock().values().copied().collect(),
            scaling: ScalingStats {
                cold_starts: self.cold_starts.load(Ordering::Relaxed),
                instance_starts: self.instance_starts.snapshot(),
                scale_ups: self.scale_ups.load(Ordering::Relaxed),
                scale_downs: self.scale_downs.load(Ordering::Relaxed),
                evictions: self.evictions.load(Ordering::Relaxed),
            },
        }
    }
}
