//! Live model quality from ground truth. For every registry model it serves, ferry keeps what it needs of each
//! prediction (request id and row, version, predicted class or value, class probabilities, time) in the registry
//! database; `POST /api/v1/models/{name}/feedback` joins the true labels or values that arrive minutes or days later.
//! Per version, over the feedback window, the live metrics are scikit-learn's (`ferry_monitor::metrics`), reported
//! beside the package's validation metrics (the baseline) and the relative change; each joined pair also feeds the
//! concept-drift detectors (DDM, ADWIN, Page-Hinkley with river's defaults) on the per-prediction error stream.
//!
//! Capture is off the hot path like drift's: the model's instance thread appends a few numbers per row of each engine
//! run to a bounded buffer (one lock per run; a full buffer drops and counts), and a background writer takes the
//! buffer on a timer and writes it in batches. The instance thread also gives a request without an id a fresh one,
//! which the response returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_monitor::concept::{Adwin, Ddm, DriftDetector, DriftState, PageHinkley};
use ferry_monitor::{Probabilities, classification_metrics, regression_metrics};
use ferry_package::{PredictionOutputs, Task};
use ferry_registry::{Labelled, Outcome, OutcomeRow, Registry, Truth};
use ferry_serving::{ObservedRequest, ObservedRun};
use ferry_types::{NamedTensor, TensorData};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::ApiError;

/// How feedback is kept and read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityConfig {
    /// Live metrics cover the predictions made within this window.
    pub window: Duration,
    /// Predictions older than this are deleted (feedback for them is then unmatched).
    pub retention: Duration,
    /// Prediction rows waiting to be written; past this they are dropped and counted.
    pub buffer: usize,
    /// Live quality counts (for alerts) only over at least this many feedback pairs.
    pub min_rows: u64,
    /// SQLite registries: bytes of kept predictions spooled and not yet indexed; past this they are dropped and
    /// counted.
    pub spool_bytes: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(86_400),
            retention: Duration::from_secs(30 * 86_400),
            buffer: 10_000,
            min_rows: 100,
            spool_bytes: 1 << 30,
        }
    }
}

/// What one served version's predictions are read from, and its baseline.
#[derive(Debug, Clone)]
pub struct QualityTarget {
    /// The served version.
    pub version: u64,
    /// Which outputs carry the prediction.
    pub outputs: PredictionOutputs,
    /// The package's validation metrics, if it has them.
    pub baseline: BTreeMap<String, f64>,
    /// Set when the model's predictions stop being kept for good (it is being deleted): a request that looked this
    /// target up before keeps nothing.
    pub(crate) retired: Arc<AtomicBool>,
}

/// One item of a feedback batch.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The `id` of the inference request (the client's, or the one ferry returned).
    pub request_id: String,
    /// Row of a batched request (default 0).
    #[serde(default)]
    pub row: u64,
    /// The true class id (classification).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub label: Option<serde_json::Number>,
    /// The true value (regression).
    #[serde(default)]
    pub value: Option<f64>,
    /// When the truth was observed: Unix milliseconds or an RFC 3339 time (default now).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<serde_json::Value>,
}

/// What a feedback batch did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedbackReport {
    /// Items in the batch.
    pub received: usize,
    /// Items joined to a kept prediction.
    pub matched: usize,
    /// Items whose request id and row match no kept prediction (unknown, expired, or not written yet).
    pub unmatched: usize,
    /// Matched items that already had a truth (resent or corrected): stored, not fed to the detectors again.
    pub repeated: usize,
    /// The first 100 unmatched request ids.
    pub unmatched_ids: Vec<String>,
}

/// Largest feedback batch.
pub const MAX_FEEDBACK_ITEMS: usize = 10_000;

/// One concept-drift detector's state on a version's error stream.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorStatus {
    /// `ddm`, `adwin` or `page_hinkley`.
    pub detector: &'static str,
    /// The state after the latest error.
    pub state: DriftState,
    /// Drifts detected so far.
    pub detections: u64,
    /// Stream index (0-based) of the latest detection.
    pub last_detection_index: Option<u64>,
    /// When it was detected (milliseconds since the epoch).
    pub last_detection_ms: Option<i64>,
}

/// The detectors of one version.
struct Detectors {
    /// Errors fed so far.
    seen: u64,
    running: Vec<(Box<dyn DriftDetector>, DetectorStatus)>,
}

impl Detectors {
    fn new(task: Task) -> Self {
        let status = |detector| DetectorStatus {
            detector,
            state: DriftState::Stable,
            detections: 0,
            last_detection_index: None,
            last_detection_ms: None,
        };
        let mut running: Vec<(Box<dyn DriftDetector>, DetectorStatus)> = Vec::new();
        // DDM models a Bernoulli error rate: it only applies to 0/1 errors.
        if task == Task::Classification {
            running.push((Box::new(Ddm::new(ferry_monitor::concept::DdmConfig::default())), status("ddm")));
        }
        running.push((Box::new(Adwin::new(ferry_monitor::concept::AdwinConfig::default())), status("adwin")));
        running.push((
            Box::new(PageHinkley::new(ferry_monitor::concept::PageHinkleyConfig::default())),
            status("page_hinkley"),
        ));
        Self { seen: 0, running }
    }

    fn update(&mut self, error: f64, now: i64) {
        for (detector, status) in &mut self.running {
            status.state = detector.update(error);
            if status.state == DriftState::Drift {
                status.detections += 1;
                status.last_detection_index = Some(self.seen);
                status.last_detection_ms = Some(now);
            }
        }
        self.seen += 1;
    }
}

/// Live quality of one version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionQuality {
    /// The version.
    pub version: u64,
    /// Prediction pairs (with truth) in the window.
    pub rows: usize,
    /// First and last prediction time of the pairs (milliseconds since the epoch).
    pub from_ms: Option<i64>,
    /// See `from_ms`.
    pub to_ms: Option<i64>,
    /// The live metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Why metrics could not be computed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The package's validation metrics.
    pub baseline: BTreeMap<String, f64>,
    /// `(live − baseline) / |baseline|` per metric that has both.
    pub change: BTreeMap<String, f64>,
    /// Concept-drift detectors on this version's error stream, in feedback order.
    pub concept_drift: Vec<DetectorStatus>,
    /// Errors fed to the detectors.
    pub errors_seen: u64,
}

/// Live quality of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelQuality {
    /// `classification` or `regression`.
    pub task: &'static str,
    /// The version being served.
    pub serving_version: u64,
    /// Length of the window, in seconds.
    pub window_seconds: u64,
    /// Start of the window (milliseconds since the epoch).
    pub window_start_ms: i64,
    /// Feedback items joined since start-up.
    pub feedback_matched: u64,
    /// Feedback items that matched no prediction since start-up.
    pub feedback_unmatched: u64,
    /// Per version with feedback in the window, and the served one.
    pub versions: Vec<VersionQuality>,
}

/// Predictions captured since the writer last took them, column by column. A request appends under a short lock and,
/// once the columns have grown, without allocating: the writer swaps them for the ones it has just written, emptied
/// with their capacity kept. (Values per request and row, allocated on a serving thread and freed on the writer's,
/// cost the allocator on both sides, and a channel's slots as much again.)
#[derive(Default)]
struct Captures {
    requests: Vec<CapturedRequest>,
    /// Model names (`CapturedRequest::model` indexes them): a few per server.
    models: Vec<String>,
    /// Request ids, end to end.
    ids: String,
    /// One prediction per row.
    predicted: Vec<f64>,
    /// Class probabilities, row-major.
    proba: Vec<f64>,
}

struct CapturedRequest {
    model: usize,
    id: std::ops::Range<usize>,
    version: u64,
    /// Unix milliseconds.
    at: i64,
    predicted: std::ops::Range<usize>,
    /// Where its probabilities start, and the number of classes (0: none kept).
    proba: (usize, usize),
}

impl Captures {
    /// Rows waiting (bounded by the config's `buffer`).
    fn rows(&self) -> usize {
        self.predicted.len()
    }

    /// Appends one request's predictions, `rows` of a run's `predicted` (and of its probabilities, `[rows, k]`
    /// row-major), converted to `f64` straight into the columns: no copy per request on the way.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        model: &str,
        id: &str,
        version: u64,
        at: i64,
        predicted: &TensorData,
        rows: std::ops::Range<usize>,
        proba: Option<(&TensorData, usize)>,
    ) {
        let model = match self.models.iter().position(|m| m == model) {
            Some(i) => i,
            None => {
                self.models.push(model.to_owned());
                self.models.len() - 1
            }
        };
        let ids = self.ids.len();
        self.ids.push_str(id);
        let first = self.predicted.len();
        extend_numbers(&mut self.predicted, predicted, rows.clone());
        let proba = match proba {
            Some((values, classes)) => {
                let start = self.proba.len();
                extend_numbers(&mut self.proba, values, rows.start * classes..rows.end * classes);
                (start, classes)
            }
            None => (0, 0),
        };
        self.requests.push(CapturedRequest {
            model,
            id: ids..self.ids.len(),
            version,
            at,
            predicted: first..self.predicted.len(),
            proba,
        });
    }

    /// The rows to keep: a NaN or infinite prediction has nothing to compare a truth with.
    fn outcome_rows(&self) -> impl Iterator<Item = OutcomeRow<'_>> {
        self.requests.iter().flat_map(move |r| {
            let model = self.models.get(r.model).map_or("", String::as_str);
            let request_id = self.ids.get(r.id.clone()).unwrap_or("");
            let predicted = self.predicted.get(r.predicted.clone()).unwrap_or(&[]);
            predicted.iter().enumerate().filter(|(_, p)| p.is_finite()).map(move |(row, &p)| {
                let (start, k) = r.proba;
                OutcomeRow {
                    model,
                    request_id,
                    row: row as u64,
                    version: r.version,
                    at: r.at,
                    predicted: p,
                    proba: (k > 0).then(|| self.proba.get(start + row * k..start + (row + 1) * k)).flatten(),
                }
            })
        })
    }

    /// Drops `model`'s requests (their values stay in the columns, unread, until the writer clears them).
    fn forget(&mut self, model: &str) {
        if let Some(i) = self.models.iter().position(|m| m == model) {
            self.requests.retain(|r| r.model != i);
        }
    }

    /// Whether any of `model`'s requests waits here.
    fn holds(&self, model: &str) -> bool {
        self.models.iter().position(|m| m == model).is_some_and(|i| self.requests.iter().any(|r| r.model == i))
    }

    fn clear(&mut self) {
        self.requests.clear();
        self.models.clear();
        self.ids.clear();
        self.predicted.clear();
        self.proba.clear();
    }
}

/// What writes the kept predictions: threads (SQLite: the spool's writer and its indexer) or a task (PostgreSQL).
enum Writer {
    Threads(Vec<std::thread::JoinHandle<()>>),
    Task(tokio::task::JoinHandle<()>),
}

/// The capture buffer the serving path fills and the writer empties.
#[derive(Default)]
struct Pending {
    captures: Mutex<Captures>,
    /// Set when the watch is dropped: the writer writes what is left and ends.
    closed: std::sync::atomic::AtomicBool,
    /// Rows the writer dropped (the spool at its size limit).
    dropped: AtomicU64,
    /// Held by the writer from taking the buffer until its rows are written, so that [`QualityWatch::forget`] finds
    /// every row either still in the buffer or already in the registry.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Counts {
    matched: AtomicU64,
    unmatched: AtomicU64,
}

/// The live-quality watcher.
pub struct QualityWatch {
    config: QualityConfig,
    registry: Registry,
    pending: Arc<Pending>,
    /// The writer, until `close` waits for it.
    writer: Mutex<Option<Writer>>,
    dropped: AtomicU64,
    /// By model name; looked up on every request, so with a fast hash (the names are the operator's, not a client's).
    targets: RwLock<foldhash::HashMap<String, Arc<QualityTarget>>>,
    detectors: Mutex<HashMap<(String, u64), Detectors>>,
    counts: RwLock<HashMap<String, Arc<Counts>>>,
    /// The latest computed quality per model, for alerts and `/metrics`.
    latest: RwLock<HashMap<String, ModelQuality>>,
}

impl std::fmt::Debug for QualityWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualityWatch").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for QualityWatch {
    fn drop(&mut self) {
        self.pending.closed.store(true, Ordering::Release);
    }
}

/// Rows per transaction of kept predictions.
const WRITE_ROWS: usize = 5_000;

/// Rows per transaction of the background indexer: a few milliseconds holding the registry's write lock.
const INDEX_ROWS: usize = 2_000;
/// ... and on a busy machine, where the niced indexer runs slowly while it holds the lock.
const INDEX_ROWS_BUSY: usize = 200;

/// The background indexer waits while the machine's CPUs are at least this busy (its own work included), unless half
/// the spool's limit waits.
const INDEX_WHILE_BUSY_BELOW: f64 = 0.8;

/// How busy the machine's CPUs are, from `/proc/stat` (Linux): the busier of the last second or so and the last
/// 100 ms or so.
///
/// The second: over 100 ms alone the clock ticks are too few, and a load near the threshold let the indexer in and out
/// many times a second (measured at 8 connections, 2026-12-06). The 100 ms: over the second alone, a load that began
/// after a quiet moment counted as busy only once it filled most of the second, and the indexer ran into the first
/// half second of every burst (2.1 to 2.5 µs of indexing per request in the paired monitoring bench, which loads
/// each server in 2 s slices; measured 2026-12-07).
#[derive(Default)]
struct CpuUse {
    /// (when, busy ticks, all ticks), oldest first.
    readings: std::collections::VecDeque<(std::time::Instant, u64, u64)>,
}

/// The long and the short window of [`CpuUse`].
const CPU_WINDOWS: [Duration; 2] = [Duration::from_secs(1), Duration::from_millis(100)];

impl CpuUse {
    /// The share of CPU time spent on any work, the indexer's own and the host's steal included; `None` on the first
    /// call or where `/proc/stat` cannot be read.
    ///
    /// The indexer's own work counts: left out, as it was until 2026-12-07, a pass that slowed the serving threads
    /// lowered their share below the threshold and let the next pass in, and the niced indexer kept itself running
    /// through a load (3 to 5 ticks of 10 its own, the rest at a 60-70% share; measured at 8 connections).
    fn busy_share(&mut self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        self.record(std::time::Instant::now(), total.saturating_sub(idle), total)
    }

    /// Adds a reading and returns the busier share of the two windows: each since the newest earlier reading at
    /// least that window old (or the oldest, while none is). Readings older than the long window's start go.
    fn record(&mut self, now: std::time::Instant, busy: u64, total: u64) -> Option<f64> {
        self.readings.push_back((now, busy, total));
        while self.readings.get(1).is_some_and(|(at, _, _)| now.duration_since(*at) >= CPU_WINDOWS[0]) {
            self.readings.pop_front();
        }
        CPU_WINDOWS
            .iter()
            .filter_map(|window| {
                let earlier = self.readings.iter().rev().skip(1);
                let (_, busy_then, total_then) =
                    earlier.clone().find(|(at, _, _)| now.duration_since(*at) >= *window).or(earlier.last())?;
                let elapsed = total.saturating_sub(*total_then);
                (elapsed > 0).then(|| busy.saturating_sub(*busy_then) as f64 / elapsed as f64)
            })
            .reduce(f64::max)
    }
}

/// Puts the calling thread at the lowest scheduling priority (Linux: nice 19, per thread), so that it runs on CPU
/// the serving threads leave.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    #[expect(unsafe_code, reason = "setpriority and gettid are C functions; no safe binding exists in std")]
    // SAFETY: plain system calls on the calling thread's own id, no pointers.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, u32::try_from(tid).unwrap_or(0), 19) != 0 {
            tracing::debug!("could not lower the indexer's priority");
        }
    }
}

impl QualityWatch {
    /// Stops keeping predictions: the writer writes what the buffer holds and ends (within its 100 ms tick and the
    /// write). For a server that stops after its last request was answered; later captures are not written.
    pub async fn close(&self) {
        self.pending.closed.store(true, Ordering::Release);
        let writer = self.writer.lock().take();
        let ended = match writer {
            Some(Writer::Threads(threads)) => tokio::task::spawn_blocking(move || {
                // Every thread is waited for, whether or not one panicked.
                let joined: Vec<_> = threads.into_iter().map(std::thread::JoinHandle::join).collect();
                joined.iter().all(Result::is_ok)
            })
            .await
            .unwrap_or(false),
            Some(Writer::Task(task)) => task.await.is_ok(),
            None => true,
        };
        if !ended {
            tracing::error!("the writer of predictions kept for feedback panicked; its last rows are lost");
        }
    }

    /// SQLite: a thread that appends the captured predictions to the registry's spool every 100 ms (about 0.1 µs of
    /// CPU per row), and one at the lowest priority that indexes the spool into the database (about 3 µs per row)
    /// while the machine's CPUs, the indexer's own work included, are less than 80% busy or half the spool's limit
    /// waits, so that a saturated server spends its CPU on requests and indexes once it has some to spare. Feedback
    /// indexes the predictions it names first; deletes index whatever is left first, and expiry what was made before
    /// its cutoff, at their own priority.
    fn start_spool(config: &QualityConfig, registry: &Registry, shared: &Arc<Pending>) -> Option<Writer> {
        let limit = config.spool_bytes;
        let (spooler, pending) = (registry.clone(), shared.clone());
        let writer = std::thread::Builder::new().name("ferry-outcomes".into()).spawn(move || {
            let mut taken = Captures::default();
            loop {
                std::thread::sleep(crate::watch::DRAIN_EVERY * 5);
                let closed = pending.closed.load(Ordering::Acquire);
                let writing = pending.writing.blocking_lock();
                // Until the buffer is found empty: writing one take may last while requests fill the next.
                loop {
                    std::mem::swap(&mut *pending.captures.lock(), &mut taken);
                    if taken.requests.is_empty() {
                        break;
                    }
                    let rows: Vec<OutcomeRow<'_>> = taken.outcome_rows().collect();
                    match spooler.spool_outcomes(&rows, limit) {
                        Ok(done) => {
                            pending.dropped.fetch_add(done.dropped, Ordering::Relaxed);
                        }
                        Err(e) => {
                            pending.dropped.fetch_add(rows.len() as u64, Ordering::Relaxed);
                            tracing::error!(error = %e, rows = rows.len(), "could not keep predictions for feedback");
                        }
                    }
                    drop(rows);
                    taken.clear();
                }
                drop(writing);
                if closed {
                    spooler.close_spool();
                    return;
                }
            }
        });
        let (indexer, pending) = (registry.clone(), shared.clone());
        let indexing = std::thread::Builder::new().name("ferry-indexer".into()).spawn(move || {
            lowest_priority();
            let mut cpu = CpuUse::default();
            loop {
                // Deferred while the machine is busy, until half the spool's limit waits (512 MiB by default, about
                // 5 million rows: 80 s of a saturated 2-core server): even at nice 19 it ran in every moment a core
                // idled between requests and cost the serving threads 3-4 us per request (caches, switches;
                // measured 2026-12-06). Feedback finds its predictions in the spool, so a backlog does not delay it;
                // deletes and expiry index what they need regardless. Half, not all: the rest is room to index into
                // while the load lasts before rows are dropped.
                let busy = cpu.busy_share().is_some_and(|share| share >= INDEX_WHILE_BUSY_BELOW);
                let more = if busy && indexer.spool_backlog_bytes() < limit / 2 {
                    false
                } else {
                    // Short passes on a busy machine: a pass holds the registry's write lock, and at nice 19 among
                    // busy threads it gets a sliver of a core, so every registry write would wait for a long one.
                    match indexer.index_spooled_blocking(if busy { INDEX_ROWS_BUSY } else { INDEX_ROWS }) {
                        Ok((_, more)) => more,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not index kept predictions (retrying)");
                            false
                        }
                    }
                };
                if pending.closed.load(Ordering::Acquire) {
                    return;
                }
                if !more {
                    std::thread::sleep(crate::watch::DRAIN_EVERY * 5);
                }
            }
        });
        match (writer, indexing) {
            (Ok(writer), Ok(indexing)) => Some(Writer::Threads(vec![writer, indexing])),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot start the threads that keep predictions for feedback");
                None
            }
        }
    }

    /// Starts the writer and the retention task on the current runtime.
    #[must_use]
    pub fn start(config: QualityConfig, registry: Registry) -> Arc<Self> {
        let pending = Arc::new(Pending::default());
        let writer = registry.clone();
        // SQLite: the spool (see `start_spool`); PostgreSQL: a task, whose writes are network round trips, one
        // statement per batch. Both take the buffer on a timer, not woken per request.
        let shared = pending.clone();
        let writer_handle = if registry.backend() == "sqlite" {
            Self::start_spool(&config, &writer, &shared)
        } else {
            Some(Writer::Task(tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::watch::DRAIN_EVERY * 5);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let closed = shared.closed.load(Ordering::Acquire);
                    let _writing = shared.writing.lock().await;
                    loop {
                        let taken = std::mem::take(&mut *shared.captures.lock());
                        if taken.requests.is_empty() {
                            break;
                        }
                        let rows: Vec<Outcome> = taken.outcome_rows().map(|r| r.to_outcome()).collect();
                        for chunk in rows.chunks(WRITE_ROWS) {
                            if let Err(e) = writer.insert_outcomes(chunk).await {
                                shared.dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                tracing::error!(error = %e, rows = chunk.len(), "could not keep predictions for feedback");
                            }
                        }
                    }
                    if closed {
                        return;
                    }
                }
            })))
        };
        let expiring = registry.clone();
        let retention = config.retention;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3_600).min(retention.max(Duration::from_secs(1))));
            loop {
                tick.tick().await;
                let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match expiring.expire_outcomes(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "expired predictions kept for feedback past their retention"),
                    Err(e) => tracing::warn!(error = %e, "could not expire predictions kept for feedback"),
                }
            }
        });
        Arc::new(Self {
            config,
            registry,
            pending,
            writer: Mutex::new(writer_handle),
            dropped: AtomicU64::new(0),
            targets: RwLock::default(),
            detectors: Mutex::default(),
            counts: RwLock::default(),
            latest: RwLock::default(),
        })
    }

    /// Keeps `model`'s predictions at `target.version` from now on.
    pub fn register(&self, model: &str, target: QualityTarget) {
        self.targets.write().insert(model.to_owned(), Arc::new(target));
    }

    /// Stops keeping `model`'s predictions and forgets its in-memory state (a model recreated under the same name
    /// starts again at version 1 and must not inherit detections or counts).
    pub fn unregister(&self, model: &str) {
        self.targets.write().remove(model);
        self.latest.write().remove(model);
        self.detectors.lock().retain(|(m, _), _| m != model);
        self.counts.write().remove(model);
    }

    /// Stops keeping `model`'s predictions for good (for a model being deleted): once this returns, every kept
    /// prediction of it is in the registry, where deleting the model reaches it, and no request still being answered
    /// adds one. Those still in the buffer are written first (the writer's next take, within about 100 ms), so that
    /// a delete that then fails loses none; when the writer does not take them within [`FORGET_WAIT`] (it ended, or
    /// its database is down), they are thrown away.
    pub async fn forget(&self, model: &str) {
        if let Some(target) = self.targets.read().get(model) {
            target.retired.store(true, Ordering::Relaxed);
        }
        self.unregister(model);
        let started = std::time::Instant::now();
        loop {
            {
                // The writer may hold rows it took from the buffer: they are in the registry once it lets go.
                let _writing = self.pending.writing.lock().await;
                let mut captures = self.pending.captures.lock();
                if !captures.holds(model) {
                    return;
                }
                if started.elapsed() >= FORGET_WAIT {
                    captures.forget(model);
                    tracing::warn!(model, "predictions kept for feedback were not written in time; thrown away");
                    return;
                }
            }
            tokio::time::sleep(crate::watch::DRAIN_EVERY).await;
        }
    }

    /// What predictions of `model` are kept by, when they are (a map lookup): every version a monitored model serves,
    /// so that a candidate in a deployment or canary has its own live quality beside the primary's.
    #[must_use]
    pub fn target(&self, model: &str) -> Option<Arc<QualityTarget>> {
        self.targets.read().get(model).cloned()
    }

    /// Per version, over the predictions made since `since_ms` whose ground truth has arrived: their loss
    /// (misclassified 0/1 for a classifier, |error| for a regressor) summed per request, for a canary's or an
    /// experiment's comparison with requests as the units. `None` when `model` is not monitored.
    ///
    /// # Errors
    /// Database errors.
    pub async fn losses(
        &self,
        model: &str,
        since_ms: i64,
    ) -> Result<Option<(ferry_rollout::canary::QualityLoss, HashMap<u64, ferry_rollout::canary::LossSums>)>, ApiError>
    {
        use ferry_rollout::canary::{LossSums, QualityLoss};
        let Some(task) = self.targets.read().get(model).map(|t| t.outputs.task) else { return Ok(None) };
        let pairs = self.registry.labelled_outcomes(model, since_ms).await?;
        let kind = match task {
            Task::Classification => QualityLoss::Misclassified,
            Task::Regression => QualityLoss::AbsoluteError,
        };
        // Per version and request: the request's rows are one unit of the comparison.
        let mut requests: HashMap<(u64, String), Vec<f64>> = HashMap::new();
        for p in pairs {
            let loss = match kind {
                QualityLoss::Misclassified => f64::from(u8::from(p.predicted != p.truth)),
                QualityLoss::AbsoluteError => (p.predicted - p.truth).abs(),
            };
            requests.entry((p.version, p.request_id)).or_default().push(loss);
        }
        let mut sums: HashMap<u64, LossSums> = HashMap::new();
        for ((version, _), losses) in requests {
            sums.entry(version).or_default().add_request(&losses);
        }
        Ok(Some((kind, sums)))
    }

    /// Whether `model` is monitored at all.
    #[must_use]
    pub fn wants_model(&self, model: &str) -> bool {
        self.targets.read().contains_key(model)
    }

    /// The served models and their targets.
    #[must_use]
    pub fn targets(&self) -> Vec<(String, Arc<QualityTarget>)> {
        let mut all: Vec<_> = self.targets.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Live quality counts only over at least this many pairs.
    #[must_use]
    pub fn min_rows(&self) -> u64 {
        self.config.min_rows
    }

    /// Prediction rows dropped because the buffer was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.pending.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of kept predictions spooled and not yet indexed (SQLite registries; 0 on PostgreSQL).
    #[must_use]
    pub fn spool_backlog_bytes(&self) -> u64 {
        self.registry.spool_backlog_bytes()
    }

    /// Keeps the predictions of one engine run of `model` at `version` (every version a monitored model serves, so
    /// that a canary's candidate is judged on its own), answered at `at` (Unix ms): the rows of each request that has
    /// an id, under that id. Called on the model's instance thread; one lock per run, never blocks (a full buffer
    /// drops the run's rows and counts them).
    pub fn observe_run(&self, model: &str, version: u64, run: &ObservedRun<'_>, at: i64) {
        if let Some(target) = self.target(model) {
            self.keep_run(&target, model, version, run, at);
        }
    }

    /// [`Self::observe_run`] with `model`'s target at hand.
    fn keep_run(&self, target: &QualityTarget, model: &str, version: u64, run: &ObservedRun<'_>, at: i64) {
        // The served version's outputs name the prediction; a client that asked for other outputs only gives nothing
        // to join to.
        let Some(predicted) = run.outputs.iter().find(|t| t.name == target.outputs.predicted) else { return };
        let values = predicted.tensor.data();
        let rows: usize = run.requests.iter().map(|r| r.rows).sum();
        if values.len() != rows
            || predicted.tensor.shape().first() != Some(&rows)
            || matches!(values, TensorData::Bytes(_))
        {
            return;
        }
        let proba = target
            .outputs
            .probabilities
            .as_ref()
            .and_then(|name| run.outputs.iter().find(|t| t.name == *name))
            .and_then(|t| match (t.tensor.shape(), t.tensor.data()) {
                (_, TensorData::Bytes(_)) => None,
                ([n, k], data) if *n == rows && *k >= 2 && data.len() == rows * *k => Some((data, *k)),
                _ => None,
            });
        // Requests without an id (or with one longer than feedback accepts, answered as is) keep nothing.
        let kept = |r: &&ObservedRequest<'_>| r.id.is_some_and(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID);
        let keeping: usize = run.requests.iter().filter(kept).map(|r| r.rows).sum();
        if keeping == 0 {
            return;
        }
        // The rows in the buffer are bounded, not the requests: one request may carry thousands of rows.
        let mut captures = self.pending.captures.lock();
        // Checked under the buffer's lock, which `forget` takes after setting it: a retired target's row is either
        // in the buffer before `forget` clears it or not added.
        if target.retired.load(Ordering::Relaxed) {
            return;
        }
        if captures.rows() + keeping > self.config.buffer {
            drop(captures);
            self.dropped.fetch_add(keeping as u64, Ordering::Relaxed);
            return;
        }
        let mut first = 0;
        for r in run.requests {
            let range = first..first + r.rows;
            first += r.rows;
            if let Some(id) = r.id.filter(|_| kept(&r)) {
                captures.push(model, id, version, at, values, range, proba);
            }
        }
    }

    /// Joins a feedback batch to `model`'s kept predictions and feeds the joined errors to the concept detectors.
    ///
    /// # Errors
    /// 400 for a malformed item (naming it), 404 when the model is not monitored, registry errors.
    pub async fn feedback(&self, model: &str, items: Vec<FeedbackItem>) -> Result<FeedbackReport, ApiError> {
        let invalid = |i: usize, why: String| {
            ApiError::new(ferry_types::ErrorKind::InvalidInput, format!("feedback item {i}: {why}"))
        };
        let target = self.targets.read().get(model).cloned().ok_or_else(|| {
            ApiError::new(
                ferry_types::ErrorKind::NotFound,
                format!("model {model:?} is not served from the registry here, so it has no predictions to join"),
            )
        })?;
        if items.len() > MAX_FEEDBACK_ITEMS {
            return Err(ApiError::new(
                ferry_types::ErrorKind::PayloadTooLarge,
                format!("{} feedback items; at most {MAX_FEEDBACK_ITEMS} per request", items.len()),
            ));
        }
        let now = now_ms();
        let mut truths = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.request_id.is_empty() || item.request_id.len() > MAX_REQUEST_ID {
                return Err(invalid(i, format!("request_id must be 1 to {MAX_REQUEST_ID} bytes")));
            }
            let truth = match (target.outputs.task, &item.label, item.value) {
                (_, Some(_), Some(_)) => return Err(invalid(i, "give either label or value, not both".into())),
                (Task::Classification, Some(label), None) => match label.as_i64() {
                    Some(l) if l.unsigned_abs() < 1 << 53 => l as f64,
                    _ => return Err(invalid(i, format!("label {label} is not an integer class id"))),
                },
                (Task::Classification, None, _) => {
                    return Err(invalid(i, format!("{model:?} is a classifier: give `label`, the true class id")));
                }
                (Task::Regression, None, Some(v)) if v.is_finite() => v,
                (Task::Regression, None, Some(v)) => return Err(invalid(i, format!("value {v} is not finite"))),
                (Task::Regression, _, None) => {
                    return Err(invalid(i, format!("{model:?} is a regressor: give `value`, the true number")));
                }
            };
            let at = match &item.timestamp {
                None => now,
                Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| {
                    invalid(i, format!("timestamp {n} must be whole Unix milliseconds or an RFC 3339 time"))
                })?,
                Some(serde_json::Value::String(s)) => humantime::parse_rfc3339_weak(s)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .ok_or_else(|| invalid(i, format!("timestamp {s:?} is not an RFC 3339 time")))?,
                Some(other) => {
                    return Err(invalid(i, format!("timestamp {other} must be Unix milliseconds or an RFC 3339 time")));
                }
            };
            truths.push(Truth { request_id: item.request_id.clone(), row: item.row, truth, at });
        }
        let joined = self.registry.join_truth(model, &truths).await?;
        let mut report =
            FeedbackReport { received: items.len(), matched: 0, unmatched: 0, repeated: 0, unmatched_ids: Vec::new() };
        {
            let mut detectors = self.detectors.lock();
            for (truth, pair) in truths.iter().zip(&joined) {
                let Some(pair) = pair else {
                    report.unmatched += 1;
                    if report.unmatched_ids.len() < 100 {
                        report.unmatched_ids.push(truth.request_id.clone());
                    }
                    continue;
                };
                report.matched += 1;
                if !pair.first {
                    // A resent batch must not feed the detectors twice.
                    report.repeated += 1;
                    continue;
                }
                let error = match target.outputs.task {
                    Task::Classification => f64::from(u8::from(pair.predicted != pair.truth)),
                    Task::Regression => (pair.predicted - pair.truth).abs(),
                };
                if !error.is_finite() {
                    continue;
                }
                detectors
                    .entry((model.to_owned(), pair.version))
                    .or_insert_with(|| Detectors::new(target.outputs.task))
                    .update(error, now);
            }
        }
        let counts = self.counts.write().entry(model.to_owned()).or_default().clone();
        counts.matched.fetch_add(report.matched as u64, Ordering::Relaxed);
        counts.unmatched.fetch_add(report.unmatched as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// Computes `model`'s live quality now (and keeps it for alerts and `/metrics`).
    ///
    /// # Errors
    /// 404 when the model is not monitored; registry errors.
    pub async fn evaluate(&self, model: &str) -> Result<ModelQuality, ApiError> {
        let target = self.targets.read().get(model).cloned().ok_or_else(|| {
            ApiError::new(ferry_types::ErrorKind::NotFound, format!("model {model:?} is not monitored"))
        })?;
        let window_ms = i64::try_from(self.config.window.as_millis()).unwrap_or(i64::MAX);
        let start = now_ms().saturating_sub(window_ms);
        let pairs = self.registry.labelled_outcomes(model, start).await?;
        let task = target.outputs.task;
        // Metrics sort and integrate every pair: off the async threads.
        let mut by_version: BTreeMap<u64, Vec<Labelled>> = BTreeMap::new();
        for p in pairs {
            by_version.entry(p.version).or_default().push(p);
        }
        by_version.entry(target.version).or_default();
        let computed = tokio::task::spawn_blocking(move || {
            by_version.into_iter().map(|(version, pairs)| (version, version_metrics(task, &pairs))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ApiError::new(ferry_types::ErrorKind::Internal, format!("metrics panicked: {e}")))?;
        let detectors = self.detectors.lock();
        let versions = computed
            .into_iter()
            .map(|(version, (rows, from_ms, to_ms, metrics))| {
                let (metrics, error) = match metrics {
                    Ok(m) => (m, None),
                    Err(e) => (BTreeMap::new(), Some(e)),
                };
                let baseline = if version == target.version { target.baseline.clone() } else { BTreeMap::new() };
                let change = relative_change(&metrics, &baseline);
                let d = detectors.get(&(model.to_owned(), version));
                VersionQuality {
                    version,
                    rows,
                    from_ms,
                    to_ms,
                    metrics,
                    error,
                    baseline,
                    change,
                    concept_drift: d.map(|d| d.running.iter().map(|(_, s)| s.clone()).collect()).unwrap_or_default(),
                    errors_seen: d.map_or(0, |d| d.seen),
                }
            })
            .collect();
        drop(detectors);
        let counts = self.counts.read().get(model).cloned().unwrap_or_default();
        let quality = ModelQuality {
            task: match task {
                Task::Classification => "classification",
                Task::Regression => "regression",
            },
            serving_version: target.version,
            window_seconds: self.config.window.as_secs(),
            window_start_ms: start,
            feedback_matched: counts.matched.load(Ordering::Relaxed),
            feedback_unmatched: counts.unmatched.load(Ordering::Relaxed),
            versions,
        };
        self.latest.write().insert(model.to_owned(), quality.clone());
        Ok(quality)
    }

    /// The latest computed quality of every model (for `/metrics` and alerts).
    #[must_use]
    pub fn latest(&self) -> Vec<(String, ModelQuality)> {
        let mut all: Vec<_> = self.latest.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Feedback counts per model: (matched, unmatched).
    #[must_use]
    pub fn feedback_counts(&self) -> Vec<(String, u64, u64)> {
        let mut all: Vec<_> = self
            .counts
            .read()
            .iter()
            .map(|(k, c)| (k.clone(), c.matched.load(Ordering::Relaxed), c.unmatched.load(Ordering::Relaxed)))
            .collect();
        all.sort();
        all
    }

    /// The window within which a concept-drift detection still counts as current.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.config.window
    }
}

type Computed = (usize, Option<i64>, Option<i64>, Result<BTreeMap<String, f64>, String>);

/// scikit-learn's metrics on one version's pairs.
fn version_metrics(task: Task, pairs: &[Labelled]) -> Computed {
    let from = pairs.first().map(|p| p.at);
    let to = pairs.last().map(|p| p.at);
    if pairs.is_empty() {
        return (0, from, to, Ok(BTreeMap::new()));
    }
    let metrics = match task {
        Task::Regression => {
            let truth: Vec<f64> = pairs.iter().map(|p| p.truth).collect();
            let predicted: Vec<f64> = pairs.iter().map(|p| p.predicted).collect();
            regression_metrics(&truth, &predicted).map_err(|e| e.to_string())
        }
        Task::Classification => {
            #[allow(clippy::cast_possible_truncation)]
            let class = |x: f64| x as i64;
            let truth: Vec<i64> = pairs.iter().map(|p| class(p.truth)).collect();
            let predicted: Vec<i64> = pairs.iter().map(|p| class(p.predicted)).collect();
            let width = pairs[0].proba.as_ref().map_or(0, Vec::len);
            // Probabilities only when every pair has them, of one width, covering every label seen.
            let covered = truth.iter().chain(&predicted).all(|&c| usize::try_from(c).is_ok_and(|c| c < width));
            let probabilities =
                (width >= 2 && covered && pairs.iter().all(|p| p.proba.as_ref().is_some_and(|v| v.len() == width)))
                    .then(|| Probabilities {
                        classes: (0..i64::try_from(width).unwrap_or(0)).collect(),
                        values: pairs.iter().flat_map(|p| p.proba.clone().unwrap_or_default()).collect(),
                    });
            match classification_metrics(&truth, &predicted, probabilities.as_ref()) {
                Ok(m) => Ok(m),
                // Probabilities a model returns unnormalised should not hide accuracy and friends.
                Err(_) if probabilities.is_some() => {
                    classification_metrics(&truth, &predicted, None).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    (pairs.len(), from, to, metrics)
}

/// `(live − baseline) / |baseline|` for every metric with both (a zero baseline has none).
pub(crate) fn relative_change(live: &BTreeMap<String, f64>, baseline: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    live.iter()
        .filter_map(|(k, v)| {
            let b = *baseline.get(k)?;
            (b != 0.0 && b.is_finite() && v.is_finite()).then(|| (k.clone(), (v - b) / b.abs()))
        })
        .collect()
}

/// A tensor's values as numbers (none for strings).
pub(crate) fn numbers(data: &TensorData) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    extend_numbers(&mut out, data, 0..data.len()).then_some(out)
}

/// Appends the values at `range` of a tensor's (within its length) as numbers; false (nothing appended) for strings.
fn extend_numbers(out: &mut Vec<f64>, data: &TensorData, range: std::ops::Range<usize>) -> bool {
    let end = range.end.min(data.len());
    let range = range.start.min(end)..end;
    #[allow(clippy::cast_precision_loss)]
    match data {
        TensorData::Bool(v) => out.extend(v[range.clone()].iter().map(|&b| f64::from(u8::from(b)))),
        TensorData::Uint8(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Uint16(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Uint32(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Uint64(v) => out.extend(v[range.clone()].iter().map(|&x| x as f64)),
        TensorData::Int8(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Int16(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Int32(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Int64(v) => out.extend(v[range.clone()].iter().map(|&x| x as f64)),
        TensorData::Fp16(v) => out.extend(v[range.clone()].iter().map(|x| f64::from(x.to_f32()))),
        TensorData::Bf16(v) => out.extend(v[range.clone()].iter().map(|x| f64::from(x.to_f32()))),
        TensorData::Fp32(v) => out.extend(v[range.clone()].iter().map(|&x| f64::from(x))),
        TensorData::Fp64(v) => out.extend_from_slice(&v[range]),
        TensorData::Bytes(_) => return false,
    }
    true
}

/// Counts a routed request's predictions in its version's arm, for a canary's prediction-drift comparison.
pub(crate) fn tally_arm(target: &QualityTarget, outputs: &[NamedTensor], arm: &crate::performance::Recorder) {
    let Some(predicted) = outputs.iter().find(|t| t.name == target.outputs.predicted) else { return };
    let rows = predicted.tensor.shape().first().copied().unwrap_or(0);
    if predicted.tensor.data().len() == rows
        && let Some(values) = numbers(predicted.tensor.data())
    {
        arm.tally(&values, target.outputs.task == Task::Classification);
    }
}

/// How long [`QualityWatch::forget`] waits for the writer to take a forgotten model's predictions.
const FORGET_WAIT: Duration = Duration::from_secs(2);

/// Longest request id kept for feedback.
const MAX_REQUEST_ID: usize = 256;

/// A fresh request id for a request that came without one: a UUIDv7 in 32 hex digits (48 bits of Unix milliseconds,
/// then 74 random bits). Time first, so that ids made one after another sort together: the predictions kept for
/// feedback are indexed by id, and random ids scattered every insert over the whole index (3× the database's work
/// per kept row, measured with SQLite, and growing with the table).
#[must_use]
pub fn fresh_request_id() -> String {
    // Drawn from a per-thread block of OS randomness: a system call per request cost more than the rest of the
    // id's work together.
    thread_local! {
        static POOL: std::cell::RefCell<([u8; 4096], usize)> = const { std::cell::RefCell::new(([0; 4096], 4096)) };
    }
    let mut bytes = [0u8; 16];
    POOL.with_borrow_mut(|(pool, used)| {
        if *used + bytes.len() > pool.len() {
            if getrandom::fill(pool).is_err() {
                // No OS randomness: time and a counter still make the id unique within this process.
                static COUNTER: AtomicU64 = AtomicU64::new(0);
                pool.fill(0);
                for chunk in pool.chunks_exact_mut(16) {
                    // Bytes 9.. are the ones the id keeps whole (the time and the version and variant bits go
                    // before them).
                    chunk[9..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes()[1..]);
                }
            }
            *used = 0;
        }
        bytes.copy_from_slice(&pool[*used..*used + 16]);
        *used += 16;
    });
    let ms = u64::try_from(now_ms()).unwrap_or(0);
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    // By hand, a byte's two digits at a time: `hex::encode` goes through a `char` iterator, and cost more than the
    // rest of the id together.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
            b += 1;
        }
        pairs
    };
    let mut text = [0u8; 32];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request's outputs, run alone, as its model's instance shows them.
    fn observe(watch: &QualityWatch, model: &str, id: &str, outputs: &[NamedTensor]) {
        let rows = outputs[0].tensor.shape().first().copied().unwrap_or(0);
        let requests = [ObservedRequest { rows, id: Some(id) }];
        watch.observe_run(model, 1, &ObservedRun { inputs: &[], outputs, requests: &requests }, now_ms());
    }

    async fn sqlite_registry(dir: &std::path::Path) -> Registry {
        let artifacts = ferry_registry::ArtifactStore::local(&dir.join("a"), &dir.join("s")).expect("store");
        Registry::open(&Registry::sqlite_url(&dir.join("r.db")), artifacts).await.expect("registry")
    }

    #[tokio::test]
    async fn a_stacked_run_keeps_each_identified_requests_rows_under_its_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = sqlite_registry(dir.path()).await;
        let watch = QualityWatch::start(QualityConfig::default(), registry.clone());
        let outputs = PredictionOutputs {
            predicted: "label".into(),
            probabilities: Some("proba".into()),
            task: Task::Classification,
        };
        watch.register("m", QualityTarget { version: 3, outputs, baseline: BTreeMap::new(), retired: Arc::default() });
        let tensor = |shape, data| ferry_types::Tensor::new(shape, data).expect("tensor");
        let proba: Vec<f32> = vec![0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4];
        let outputs = [
            NamedTensor::new("label", tensor(vec![4], TensorData::Int64(vec![0, 1, 1, 0]))),
            NamedTensor::new("proba", tensor(vec![4, 2], TensorData::Fp32(proba.clone()))),
        ];
        // Three requests stacked: one row with an id, two rows without, one row with an id.
        let requests = [
            ObservedRequest { rows: 1, id: Some("a") },
            ObservedRequest { rows: 2, id: None },
            ObservedRequest { rows: 1, id: Some("b") },
        ];
        watch.observe_run("m", 3, &ObservedRun { inputs: &[], outputs: &outputs, requests: &requests }, 50);
        watch.close().await;
        let truth = |id: &str, row| Truth { request_id: id.into(), row, truth: 1.0, at: 60 };
        let joined = registry.join_truth("m", &[truth("a", 0), truth("a", 1), truth("b", 0)]).await.expect("join");
        let kept = |j: &Option<Labelled>| j.as_ref().map(|l| (l.version, l.at, l.predicted, l.proba.clone()));
        let p = |i: usize| Some(vec![f64::from(proba[2 * i]), f64::from(proba[2 * i + 1])]);
        assert_eq!(kept(&joined[0]), Some((3, 50, 0.0, p(0))), "a's one row");
        assert_eq!(kept(&joined[1]), None, "a had one row");
        assert_eq!(kept(&joined[2]), Some((3, 50, 0.0, p(3))), "b's row is the run's fourth");
    }

    fn pair(predicted: f64, truth: f64, proba: Option<Vec<f64>>) -> Labelled {
        Labelled { first: true, request_id: String::new(), version: 1, at: 0, predicted, proba, truth }
    }

    #[test]
    fn captured_requests_come_back_as_their_rows_without_the_unusable_ones() {
        let mut c = Captures::default();
        let (fp64, fp32) = (TensorData::Fp64, TensorData::Fp32);
        c.push(
            "iris",
            "r1",
            2,
            10,
            &fp64(vec![1.0, f64::NAN, 0.0]),
            0..3,
            Some((&fp32(vec![0.1, 0.9, 0.5, 0.5, 0.8, 0.2]), 2)),
        );
        c.push("fraud", "r2", 7, 20, &TensorData::Int64(vec![5, 3]), 1..2, None);
        c.push("iris", "r3", 2, 30, &fp64(vec![f64::INFINITY]), 0..1, Some((&fp64(vec![1.0, 0.0]), 2)));
        assert_eq!(c.rows(), 5);
        let rows: Vec<Outcome> = c.outcome_rows().map(|r| r.to_outcome()).collect();
        let expected = |model: &str, id: &str, row, version, at, predicted, proba: Option<Vec<f64>>| Outcome {
            model: model.into(),
            request_id: id.into(),
            row,
            version,
            at,
            predicted,
            proba,
        };
        assert_eq!(
            rows,
            vec![
                expected("iris", "r1", 0, 2, 10, 1.0, Some(vec![f64::from(0.1f32), f64::from(0.9f32)])),
                expected("iris", "r1", 2, 2, 10, 0.0, Some(vec![f64::from(0.8f32), f64::from(0.2f32)])),
                expected("fraud", "r2", 0, 7, 20, 3.0, None),
            ]
        );
        assert_eq!(c.models, ["iris", "fraud"], "model names are kept once");
        c.clear();
        assert_eq!((c.rows(), c.outcome_rows().count()), (0, 0));
    }

    #[tokio::test]
    async fn a_full_capture_buffer_drops_and_counts_and_the_writer_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ferry_registry::ArtifactStore::local(&dir.path().join("a"), &dir.path().join("s")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("r.db")), artifacts).await.expect("registry");
        let config = QualityConfig { buffer: 3, ..QualityConfig::default() };
        let watch = QualityWatch::start(config, registry.clone());
        let outputs = PredictionOutputs { predicted: "label".into(), probabilities: None, task: Task::Regression };
        watch.register("m", QualityTarget { version: 1, outputs, baseline: BTreeMap::new(), retired: Arc::default() });
        let tensor = |rows: usize| {
            let tensor = ferry_types::Tensor::new(vec![rows], TensorData::Fp32(vec![1.5; rows])).expect("tensor");
            vec![NamedTensor::new("label", tensor)]
        };
        observe(&watch, "m", "a", &tensor(2));
        observe(&watch, "m", "b", &tensor(2)); // 4 rows > 3: dropped whole
        observe(&watch, "m", "c", &tensor(1));
        assert_eq!(watch.dropped(), 2);
        // The writer takes the buffer within a tick or two.
        let mut joined = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let truth = |id: &str, row| Truth { request_id: id.into(), row, truth: 1.0, at: 0 };
            joined = registry
                .join_truth("m", &[truth("a", 0), truth("a", 1), truth("b", 0), truth("c", 0)])
                .await
                .expect("join");
            if joined.iter().filter(|j| j.is_some()).count() == 3 {
                break;
            }
        }
        let found: Vec<bool> = joined.iter().map(Option::is_some).collect();
        assert_eq!(found, [true, true, false, true]);
        // A request of no rows adds nothing, not even to the buffer's bookkeeping.
        observe(&watch, "m", "empty", &tensor(0));
        assert_eq!((watch.pending.captures.lock().requests.len(), watch.dropped()), (0, 2));
        // Closing writes what the buffer holds before it returns.
        observe(&watch, "m", "last", &tensor(1));
        watch.close().await;
        let truth = Truth { request_id: "last".into(), row: 0, truth: 1.0, at: 0 };
        assert!(registry.join_truth("m", &[truth]).await.expect("join")[0].is_some(), "the last rows were written");
    }

    #[tokio::test]
    async fn predictions_kept_on_several_threads_are_all_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ferry_registry::ArtifactStore::local(&dir.path().join("a"), &dir.path().join("s")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("r.db")), artifacts).await.expect("registry");
        let watch = QualityWatch::start(QualityConfig::default(), registry.clone());
        let outputs = PredictionOutputs { predicted: "label".into(), probabilities: None, task: Task::Regression };
        watch.register("m", QualityTarget { version: 1, outputs, baseline: BTreeMap::new(), retired: Arc::default() });
        let label = vec![NamedTensor::new(
            "label",
            ferry_types::Tensor::new(vec![1], TensorData::Fp32(vec![2.0])).expect("tensor"),
        )];
        std::thread::scope(|threads| {
            for t in 0..3 {
                let (watch, label) = (&watch, &label);
                threads.spawn(move || {
                    for i in 0..300 {
                        observe(watch, "m", &format!("t{t}-{i}"), label);
                    }
                });
            }
        });
        watch.close().await;
        let truths: Vec<Truth> = (0..3)
            .flat_map(|t| (0..300).map(move |i| Truth { request_id: format!("t{t}-{i}"), row: 0, truth: 2.0, at: 0 }))
            .collect();
        let mut joined = 0;
        for chunk in truths.chunks(100) {
            let n = registry.join_truth("m", chunk).await.expect("join").iter().filter(|j| j.is_some()).count();
            joined += n;
        }
        assert_eq!(joined, 900, "every thread's predictions were written");
        assert_eq!(watch.dropped(), 0);
    }

    #[tokio::test]
    async fn a_forgotten_model_has_what_waited_written_first_and_keeps_nothing_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ferry_registry::ArtifactStore::local(&dir.path().join("a"), &dir.path().join("s")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("r.db")), artifacts).await.expect("registry");
        let watch = QualityWatch::start(QualityConfig::default(), registry.clone());
        let target = || QualityTarget {
            version: 1,
            outputs: PredictionOutputs { predicted: "label".into(), probabilities: None, task: Task::Regression },
            baseline: BTreeMap::new(),
            retired: Arc::default(),
        };
        watch.register("m", target());
        watch.register("n", target());
        let label = || {
            vec![NamedTensor::new(
                "label",
                ferry_types::Tensor::new(vec![1], TensorData::Fp32(vec![2.0])).expect("tensor"),
            )]
        };
        let held = watch.target("m").expect("m is kept");
        observe(&watch, "m", "a", &label());
        observe(&watch, "n", "b", &label());
        watch.forget("m").await;
        // What waited of m was written before `forget` returned, where deleting the model reaches it (and a delete
        // that fails loses nothing).
        let truth = |id: &str| Truth { request_id: id.into(), row: 0, truth: 1.0, at: 0 };
        assert!(registry.join_truth("m", &[truth("a")]).await.expect("join a")[0].is_some(), "m's row was written");
        assert!(!watch.pending.captures.lock().holds("m"));
        // m is no longer kept, not even by a request that looked its target up before.
        let late = [ObservedRequest { rows: 1, id: Some("late") }];
        watch.keep_run(&held, "m", 1, &ObservedRun { inputs: &[], outputs: &label(), requests: &late }, now_ms());
        observe(&watch, "m", "later", &label());
        assert!(watch.target("m").is_none() && !watch.wants_model("m"));
        watch.close().await;
        let m = registry.join_truth("m", &[truth("late"), truth("later")]).await.expect("join m");
        let n = registry.join_truth("n", &[truth("b")]).await.expect("join n");
        assert!(m.iter().all(Option::is_none), "nothing of m was kept after it was forgotten");
        assert!(n[0].is_some(), "the other model's prediction is kept");
        // With no writer left to take them, a forgotten model's waiting predictions are thrown away after a while.
        watch.register("m", target());
        observe(&watch, "m", "orphan", &label());
        assert!(watch.pending.captures.lock().holds("m"));
        watch.forget("m").await;
        assert!(!watch.pending.captures.lock().holds("m"), "thrown away");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_use_reads_the_machine_as_a_share_and_keeps_a_second_of_readings() {
        let mut cpu = CpuUse::default();
        assert_eq!(cpu.busy_share(), None, "one reading is no interval");
        let start = std::time::Instant::now();
        let mut shares = Vec::new();
        while start.elapsed() < Duration::from_millis(1_300) {
            std::thread::sleep(Duration::from_millis(100));
            shares.extend(cpu.busy_share());
        }
        assert!(!shares.is_empty() && shares.iter().all(|s| (0.0..=1.0).contains(s)), "{shares:?}");
        // The window slid: it starts at the newest reading at least a second before the last one.
        let last = cpu.readings.back().map(|(at, _, _)| *at).expect("readings");
        let ages: Vec<Duration> = cpu.readings.iter().map(|(at, _, _)| last.duration_since(*at)).collect();
        assert!(ages[0] >= Duration::from_secs(1) && ages[1] < Duration::from_secs(1), "{ages:?}");
    }

    #[test]
    fn cpu_use_is_busy_as_soon_as_a_load_begins_and_until_a_quiet_spell_fills_its_second() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A reading every 50 ms (10 ticks: two CPUs at 100 ticks a second), (busy, total) ticks so far.
        let mut cpu = CpuUse::default();
        let (mut busy, mut total) = (0, 0);
        let mut step = |cpu: &mut CpuUse, ms: u64, busy_ticks: u64| {
            busy += busy_ticks;
            total += 10;
            cpu.record(at(ms), busy, total)
        };
        assert_eq!(step(&mut cpu, 0, 0), None, "one reading is no interval");
        // A quiet second.
        for ms in (50..=1_000).step_by(50) {
            assert_eq!(step(&mut cpu, ms, 0), Some(0.0));
        }
        // A load begins: busy within the short window's reach, while the second is still mostly quiet.
        assert_eq!(step(&mut cpu, 1_050, 10), Some(0.5), "half the last 100 ms");
        assert_eq!(step(&mut cpu, 1_100, 10), Some(1.0), "all the last 100 ms");
        // Load for a second, then quiet: busy until the quiet part outweighs the second's.
        for ms in (1_150..=2_100).step_by(50) {
            assert_eq!(step(&mut cpu, ms, 10), Some(1.0));
        }
        let share = step(&mut cpu, 2_150, 0).expect("share");
        assert!((share - 0.95).abs() < 1e-9, "the second's share: {share}");
        // The readings kept reach back one second, no further.
        assert!(cpu.readings.len() <= 22, "{}", cpu.readings.len());
    }

    #[test]
    fn fresh_request_ids_are_uuid_v7_and_sort_by_time() {
        let first = fresh_request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ids: Vec<String> = (0..100).map(|_| fresh_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "lowercase hex: {id}");
            assert_eq!(&id[12..13], "7", "version 7: {id}");
            assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "RFC 9562 variant: {id}");
            assert!(*id > first, "made later, sorts later: {id} vs {first}");
            let ms = i64::from_str_radix(&id[..12], 16).expect("hex");
            assert!((now_ms() - ms).abs() < 60_000, "milliseconds first: {id}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn classification_pairs_get_scikit_learn_metrics_with_probabilities_when_every_pair_has_them() {
        let pairs = vec![
            pair(0.0, 0.0, Some(vec![0.9, 0.1])),
            pair(1.0, 1.0, Some(vec![0.2, 0.8])),
            pair(1.0, 0.0, Some(vec![0.4, 0.6])),
            pair(0.0, 1.0, Some(vec![0.7, 0.3])),
        ];
        let (rows, _, _, metrics) = version_metrics(Task::Classification, &pairs);
        let metrics = metrics.expect("metrics");
        assert_eq!(rows, 4);
        assert!((metrics["accuracy"] - 0.5).abs() < 1e-12);
        assert!(metrics.contains_key("roc_auc") && metrics.contains_key("log_loss"), "{metrics:?}");
        let mut partial = pairs.clone();
        partial[0].proba = None;
        let (_, _, _, metrics) = version_metrics(Task::Classification, &partial);
        let metrics = metrics.expect("metrics");
        assert!(!metrics.contains_key("roc_auc"), "{metrics:?}");
    }

    #[test]
    fn relative_change_skips_zero_baselines() {
        let live = BTreeMap::from([("accuracy".to_owned(), 0.7), ("mae".to_owned(), 1.0)]);
        let base = BTreeMap::from([("accuracy".to_owned(), 1.0), ("mae".to_owned(), 0.0)]);
        let change = relative_change(&live, &base);
        assert!((change["accuracy"] + 0.3).abs() < 1e-12);
        assert!(!change.contains_key("mae"));
    }

    #[test]
    fn detectors_count_a_shift_in_the_error_stream() {
        let mut d = Detectors::new(Task::Classification);
        for i in 0..2_000u64 {
            let error = if i < 1_000 { f64::from(u8::from(i % 20 == 0)) } else { f64::from(u8::from(i % 2 == 0)) };
            d.update(error, 0);
        }
        assert_eq!(d.seen, 2_000);
        for (_, status) in &d.running {
            assert!(status.detections >= 1, "{} saw no drift", status.detector);
            assert!(status.last_detection_index.is_some_and(|i| i >= 1_000), "{status:?}");
        }
    }
}
