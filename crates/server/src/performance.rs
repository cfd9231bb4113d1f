//! Latency and throughput per served model version, live and against a baseline learned over a warm-up period.
//!
//! Every finished request adds to a cumulative histogram of total latency (the buckets of
//! `ferry_request_duration_seconds`) and to request and error counters: a few relaxed atomic increments. At every
//! evaluation the monitor takes a snapshot; the live figures are the difference between the newest snapshot and the
//! one a window earlier, and the baseline is the difference over the first `warmup` after the version's first
//! request. Quantiles are interpolated inside their bucket exactly as PromQL's `histogram_quantile` does, so the
//! figures equal what Prometheus computes from `/metrics` over the same interval.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

/// Upper bounds of the latency buckets, in seconds: 50 µs doubling 19 times, then +Inf.
fn bounds() -> [f64; BUCKETS - 1] {
    let mut b = [0.0; BUCKETS - 1];
    let mut x = 0.000_05;
    for v in &mut b {
        *v = x;
        x *= 2.0;
    }
    b
}

const BUCKETS: usize = 20;

/// How the live window and the baseline are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerformanceConfig {
    /// Live figures cover this much of the recent past.
    pub window: Duration,
    /// The baseline covers this long after a version's first request.
    pub warmup: Duration,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), warmup: Duration::from_secs(600) }
    }
}

/// Cumulative counts of one model version.
#[derive(Debug, Default)]
pub struct Recorder {
    buckets: [AtomicU64; BUCKETS],
    requests: AtomicU64,
    errors: AtomicU64,
    /// Answered requests' Σ ln(latency) and Σ ln(latency)², in millionths (an atomic add, not a float CAS loop):
    /// the log-latency mean and variance that A/B comparisons need.
    log_sum_micro: std::sync::atomic::AtomicI64,
    log_sq_sum_micro: std::sync::atomic::AtomicI64,
    answered: AtomicU64,
    /// Requests refused as the client's mistake (4xx): not failures of the server, but a version that refuses what
    /// another accepts is broken for a canary.
    rejected: AtomicU64,
    /// An arm's predictions (for a canary's prediction-drift comparison), when the model's outputs are known.
    predictions: Mutex<ferry_rollout::canary::PredictionTally>,
    first: std::sync::OnceLock<Instant>,
    history: Mutex<VecDeque<(Instant, Snapshot)>>,
    baseline: Mutex<Option<Figures>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    buckets: [u64; BUCKETS],
    requests: u64,
    errors: u64,
}

impl Snapshot {
    fn minus(&self, earlier: &Self) -> Self {
        let mut buckets = [0; BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        Self {
            buckets,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// Latency and throughput over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Requests in the interval.
    pub requests: u64,
    /// Length of the interval in seconds.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Share of requests that failed on the server's side (5xx; gRPC Internal, Unavailable, DeadlineExceeded,
    /// Unknown, DataLoss, ResourceExhausted). Client errors (4xx) are not failures.
    pub error_rate: Option<f64>,
    /// Median latency in seconds (none without requests).
    pub latency_p50_seconds: Option<f64>,
    /// 99th percentile latency in seconds.
    pub latency_p99_seconds: Option<f64>,
}

impl Figures {
    fn of(s: &Snapshot, seconds: f64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let requests = s.requests as f64;
        Self {
            requests: s.requests,
            seconds,
            throughput: if seconds > 0.0 { requests / seconds } else { 0.0 },
            #[allow(clippy::cast_precision_loss)]
            error_rate: (s.requests > 0).then(|| s.errors as f64 / requests),
            latency_p50_seconds: quantile(0.5, &s.buckets),
            latency_p99_seconds: quantile(0.99, &s.buckets),
        }
    }

    /// The figure a metric name stands for.
    #[must_use]
    pub fn get(&self, metric: &str) -> Option<f64> {
        match metric {
            "throughput" => Some(self.throughput),
            "error_rate" => self.error_rate,
            "latency_p50_seconds" => self.latency_p50_seconds,
            "latency_p99_seconds" => self.latency_p99_seconds,
            _ => None,
        }
    }
}

/// PromQL's `histogram_quantile` on non-cumulative counts: linear interpolation inside the bucket; a quantile in
/// the +Inf bucket is the largest finite bound.
fn quantile(q: f64, counts: &[u64; BUCKETS]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let bounds = bounds();
    #[allow(clippy::cast_precision_loss)]
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        if (below + c) as f64 >= rank && c > 0 {
            let Some(&upper) = bounds.get(i) else { return bounds.last().copied() };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            #[allow(clippy::cast_precision_loss)]
            return Some(lower + (upper - lower) * ((rank - below as f64) / c as f64));
        }
        below += c;
    }
    bounds.last().copied()
}

impl Recorder {
    /// Counts one finished request.
    pub fn record(&self, seconds: f64, ok: bool) {
        self.count(seconds);
        if ok {
            // A latency under a nanosecond is a clock artefact: counted as one.
            let ln = seconds.max(1e-9).ln();
            #[allow(clippy::cast_possible_truncation)]
            let (sum, sq) = ((ln * 1e6).round() as i64, (ln * ln * 1e6).round() as i64);
            self.log_sum_micro.fetch_add(sum, Ordering::Relaxed);
            self.log_sq_sum_micro.fetch_add(sq, Ordering::Relaxed);
            self.answered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a request refused as the client's mistake: in the latency and request counts, not a failure of the
    /// server, and not in the answered requests' log-latency.
    pub fn record_rejected(&self, seconds: f64) {
        self.count(seconds);
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, seconds: f64) {
        self.first.get_or_init(Instant::now);
        let bounds = bounds();
        let i = bounds.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything counted so far, for an experiment's arm.
    #[must_use]
    pub fn totals(&self) -> ArmTotals {
        let s = self.snapshot();
        ArmTotals {
            buckets: s.buckets,
            requests: s.requests,
            errors: s.errors,
            answered: self.answered.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            log_sum_micro: self.log_sum_micro.load(Ordering::Relaxed),
            log_sq_sum_micro: self.log_sq_sum_micro.load(Ordering::Relaxed),
            predictions: self.predictions.lock().clone(),
        }
    }

    /// Counts one answered request's predictions (class ids for a `classifier`, else values).
    pub fn tally(&self, predicted: &[f64], classifier: bool) {
        self.predictions.lock().add(predicted, classifier);
    }

    fn snapshot(&self) -> Snapshot {
        let mut buckets = [0; BUCKETS];
        for (b, a) in buckets.iter_mut().zip(&self.buckets) {
            *b = a.load(Ordering::Relaxed);
        }
        Snapshot {
            buckets,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A version's cumulative counts: taken when an experiment starts and again when it is read, the difference is the
/// experiment's arm. Stored (each replica publishes its own, a rollout keeps its last interval's), and summed over
/// replicas.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct ArmTotals {
    buckets: [u64; BUCKETS],
    /// Requests.
    pub requests: u64,
    /// Failed by the server.
    pub errors: u64,
    /// Answered.
    pub answered: u64,
    /// Refused as the client's mistake.
    pub rejected: u64,
    log_sum_micro: i64,
    log_sq_sum_micro: i64,
    /// The requests' predictions, when tallied.
    #[serde(default)]
    pub predictions: ferry_rollout::canary::PredictionTally,
}

impl ArmTotals {
    /// Adds another replica's counts.
    pub fn merge(&mut self, other: &Self) {
        for (b, o) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += o;
        }
        self.requests += other.requests;
        self.errors += other.errors;
        self.answered += other.answered;
        self.rejected += other.rejected;
        self.log_sum_micro = self.log_sum_micro.wrapping_add(other.log_sum_micro);
        self.log_sq_sum_micro = self.log_sq_sum_micro.wrapping_add(other.log_sq_sum_micro);
        self.predictions.merge(&other.predictions);
    }

    /// What was counted after `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut buckets = [0; BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        Self {
            buckets,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            answered: self.answered.saturating_sub(earlier.answered),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            // The atomic sums wrap (after tens of billions of requests); their difference is still right.
            log_sum_micro: self.log_sum_micro.wrapping_sub(earlier.log_sum_micro),
            log_sq_sum_micro: self.log_sq_sum_micro.wrapping_sub(earlier.log_sq_sum_micro),
            predictions: self.predictions.since(&earlier.predictions),
        }
    }

    /// Σ ln(latency) and Σ ln(latency)² of the answered requests.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn log_latency_sums(&self) -> (f64, f64) {
        (self.log_sum_micro as f64 / 1e6, self.log_sq_sum_micro as f64 / 1e6)
    }

    /// A latency quantile (seconds), interpolated in its bucket as PromQL does.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(q, &self.buckets)
    }
}

/// Live figures beside the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct VersionPerformance {
    /// Model version.
    pub version: u64,
    /// Over the live window (none before the second evaluation).
    pub live: Option<Figures>,
    /// Over the warm-up (none until the warm-up is over).
    pub baseline: Option<Figures>,
    /// `(live − baseline) / |baseline|` for throughput and the latency quantiles.
    pub change: std::collections::BTreeMap<String, f64>,
    /// Seconds of warm-up still to go (0 once the baseline is set).
    pub warmup_remaining_seconds: f64,
}

/// Every model version's recorder.
#[derive(Debug, Default)]
pub struct Performance {
    config: RwLock<PerformanceConfig>,
    recorders: RwLock<HashMap<(String, u64), Arc<Recorder>>>,
    /// Per version, only the requests the deployment routed there: an experiment's arms. A request pinned to a
    /// version (`/versions/{v}`, a smoke test, a probe) counts in the version's figures but not in its arm, where
    /// it would bias the comparison.
    arms: RwLock<HashMap<(String, u64), Arc<Recorder>>>,
    experiments: RwLock<HashMap<String, Experiment>>,
    /// Grows whenever recorders are forgotten, so that cached handles to them are taken afresh.
    generation: std::sync::atomic::AtomicU64,
}

/// Where a model's current experiment (its deployment revision) started on this replica: each arm's totals then.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The deployment revision.
    pub revision: u64,
    /// When this replica started serving it (Unix milliseconds).
    pub since_ms: i64,
    /// Each version's totals at that moment.
    pub base: HashMap<u64, ArmTotals>,
}

impl Performance {
    /// Starts counting `model`'s experiment `revision` over `versions`, unless it is already being counted; `None`
    /// ends it.
    pub fn experiment_starts(&self, model: &str, revision: Option<u64>, versions: &[u64]) {
        let Some(revision) = revision else {
            self.experiments.write().remove(model);
            return;
        };
        // The same revision over the same versions is the same experiment; an alias the deployment names may move
        // under one revision, and then the arms are new.
        let current = |e: &Experiment| {
            e.revision == revision && e.base.len() == versions.len() && versions.iter().all(|v| e.base.contains_key(v))
        };
        if self.experiments.read().get(model).is_some_and(current) {
            return;
        }
        let base = versions.iter().map(|&v| (v, self.arm_recorder(model, v).totals())).collect();
        let since_ms = crate::quality::now_ms();
        self.experiments.write().insert(model.to_owned(), Experiment { revision, since_ms, base });
    }

    /// The models with an experiment counted here.
    #[must_use]
    pub fn experiment_models(&self) -> Vec<String> {
        self.experiments.read().keys().cloned().collect()
    }

    /// `model`'s experiment: where it started, and each version's counts since.
    #[must_use]
    pub fn experiment(&self, model: &str) -> Option<(Experiment, HashMap<u64, ArmTotals>)> {
        let e = self.experiments.read().get(model).cloned()?;
        let now = e.base.iter().map(|(&v, base)| (v, self.arm_recorder(model, v).totals().since(base))).collect();
        Some((e, now))
    }

    /// Sets the window and warm-up.
    pub fn configure(&self, config: PerformanceConfig) {
        *self.config.write() = config;
    }

    /// The configured window and warm-up.
    #[must_use]
    pub fn config(&self) -> PerformanceConfig {
        *self.config.read()
    }

    /// The recorder of `model` at `version` (created on first use).
    #[must_use]
    pub fn recorder(&self, model: &str, version: u64) -> Arc<Recorder> {
        if let Some(r) = self.recorders.read().get(&(model.to_owned(), version)) {
            return r.clone();
        }
        self.recorders.write().entry((model.to_owned(), version)).or_default().clone()
    }

    /// The arm recorder of `model` at `version`: only requests the deployment routed there (created on first use).
    #[must_use]
    pub fn arm_recorder(&self, model: &str, version: u64) -> Arc<Recorder> {
        if let Some(r) = self.arms.read().get(&(model.to_owned(), version)) {
            return r.clone();
        }
        self.arms.write().entry((model.to_owned(), version)).or_default().clone()
    }

    /// Forgets every version of `model` but `keep` (an unloaded version's figures and baseline are stale, and a
    /// model recreated under the same name starts again at version 1).
    pub fn retain(&self, model: &str, keep: Option<u64>) {
        self.arms.write().retain(|(m, v), _| m != model || Some(*v) == keep);
        let mut recorders = self.recorders.write();
        let before = recorders.len();
        recorders.retain(|(m, v), _| m != model || Some(*v) == keep);
        if recorders.len() != before {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Grows whenever a recorder is forgotten: handles cached before must be taken afresh.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Forgets the recorders of `model`'s versions other than `keep` (the versions a deployment serves).
    pub fn retain_versions(&self, model: &str, keep: &[u64]) {
        self.arms.write().retain(|(m, v), _| m != model || keep.contains(v));
        let mut recorders = self.recorders.write();
        let before = recorders.len();
        recorders.retain(|(m, v), _| m != model || keep.contains(v));
        if recorders.len() != before {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes a snapshot of every recorder, trims what is older than the window, and sets baselines whose warm-up is
    /// over. Called at every evaluation.
    pub fn tick(&self) {
        let config = self.config();
        let now = Instant::now();
        for recorder in self.recorders.read().values() {
            let Some(&first) = recorder.first.get() else { continue };
            let snapshot = recorder.snapshot();
            let mut history = recorder.history.lock();
            if history.is_empty() {
                // Counts were zero just before the first request: requests before the first tick are live too.
                history.push_back((first, Snapshot::default()));
            }
            history.push_back((now, snapshot));
            // Keep one snapshot at or before the window's start, so that the window is always covered.
            while history.len() > 2 && history.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= config.window) {
                history.pop_front();
            }
            drop(history);
            let mut baseline = recorder.baseline.lock();
            if baseline.is_none() && now.duration_since(first) >= config.warmup {
                *baseline = Some(Figures::of(&snapshot, now.duration_since(first).as_secs_f64()));
            }
        }
    }

    /// Live and baseline figures of `model` at `version`, as of the last evaluation.
    #[must_use]
    pub fn status(&self, model: &str, version: u64) -> Option<VersionPerformance> {
        let recorder = self.recorders.read().get(&(model.to_owned(), version)).cloned()?;
        let config = self.config();
        let history = recorder.history.lock();
        let live = match (history.front(), history.back()) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                Some(Figures::of(&s1.minus(s0), t1.duration_since(*t0).as_secs_f64()))
            }
            _ => None,
        };
        drop(history);
        let baseline = *recorder.baseline.lock();
        let mut change = std::collections::BTreeMap::new();
        if let (Some(l), Some(b)) = (&live, &baseline) {
            for metric in ["throughput", "latency_p50_seconds", "latency_p99_seconds"] {
                if let (Some(x), Some(y)) = (l.get(metric), b.get(metric))
                    && y != 0.0
                {
                    change.insert(metric.to_owned(), (x - y) / y.abs());
                }
            }
        }
        let warmup_remaining_seconds = match (baseline, recorder.first.get()) {
            (Some(_), _) => 0.0,
            (None, Some(first)) => config.warmup.saturating_sub(first.elapsed()).as_secs_f64(),
            (None, None) => config.warmup.as_secs_f64(),
        };
        Some(VersionPerformance { version, live, baseline, change, warmup_remaining_seconds })
    }

    /// Every (model, version) recorded.
    #[must_use]
    pub fn keys(&self) -> Vec<(String, u64)> {
        let mut keys: Vec<_> = self.recorders.read().keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_promql_does() {
        let mut counts = [0u64; BUCKETS];
        // 100 requests between 50 µs and 100 µs: the median sits halfway through that bucket.
        counts[1] = 100;
        let p50 = quantile(0.5, &counts).expect("p50");
        assert!((p50 - 0.000_075).abs() < 1e-12, "{p50}");
        assert_eq!(quantile(0.5, &[0; BUCKETS]), None);
        counts[BUCKETS - 1] = 10_000;
        assert_eq!(quantile(0.99, &counts), bounds().last().copied(), "+Inf answers the largest finite bound");
    }

    #[test]
    fn live_figures_cover_the_window_and_the_baseline_the_warm_up() {
        let perf = Performance::default();
        perf.configure(PerformanceConfig { window: Duration::from_secs(60), warmup: Duration::ZERO });
        let r = perf.recorder("m", 1);
        for _ in 0..99 {
            r.record(0.001, true);
        }
        r.record(0.001, false);
        perf.tick();
        assert_eq!(perf.status("m", 1).and_then(|s| s.live).map(|l| l.requests), Some(100), "from the first request");
        for _ in 0..50 {
            r.record(0.02, true);
        }
        perf.tick();
        assert_eq!(perf.status("m", 1).and_then(|s| s.live).map(|l| l.requests), Some(150), "all within the window");
        // A window shorter than the ticks: only what came since the previous one.
        perf.configure(PerformanceConfig { window: Duration::ZERO, warmup: Duration::ZERO });
        for _ in 0..50 {
            r.record(0.02, true);
        }
        perf.tick();
        let s = perf.status("m", 1).expect("status");
        let live = s.live.expect("live");
        assert_eq!(live.requests, 50);
        assert_eq!(live.error_rate, Some(0.0));
        let base = s.baseline.expect("baseline after a zero warm-up");
        assert_eq!(base.requests, 100);
        assert_eq!(base.error_rate, Some(0.01));
        assert!(live.latency_p50_seconds > base.latency_p50_seconds);
        assert!(s.change["latency_p50_seconds"] > 1.0, "{s:?}");
    }
}
