//! Shadow traffic: a deployment may copy a share of its requests to a shadow version. The copy runs after the
//! caller's answer is ready, on its own task; the caller only ever sees the primary's answer and latency. For every
//! copy ferry records the shadow's latency and errors and how its outputs agree with the answer the caller got:
//! for labels (integer, boolean or text outputs) the share of equal elements, for numbers the mean absolute
//! difference. Shadow copies are shed first: at most [`MAX_IN_FLIGHT`] run at once, and a copy that finds no room,
//! or the shadow's queue full, is dropped and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_serving::{InferRequest, LoadedModel};
use ferry_types::{NamedTensor, TensorData};
use parking_lot::Mutex;
use serde::Serialize;

/// Shadow copies running at once, server-wide; beyond, copies are shed.
pub const MAX_IN_FLIGHT: usize = 32;

/// What the copies to one shadow version gave, so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShadowStats {
    /// The shadow version.
    pub version: u64,
    /// Copies answered by the shadow.
    pub requests: u64,
    /// Copies the shadow failed.
    pub errors: u64,
    /// Copies dropped because the server was busy.
    pub shed: u64,
    /// Total shadow latency of answered copies, seconds.
    pub latency_seconds_sum: f64,
    /// Label elements compared, and how many were equal.
    pub labels_compared: u64,
    /// See `labels_compared`.
    pub labels_equal: u64,
    /// Number elements compared, and the sum of their absolute differences.
    pub values_compared: u64,
    /// See `values_compared`.
    pub abs_diff_sum: f64,
    /// `labels_equal / labels_compared`, when any.
    pub label_agreement: Option<f64>,
    /// `abs_diff_sum / values_compared`, when any.
    pub mean_abs_diff: Option<f64>,
    /// `latency_seconds_sum / requests`, when any.
    pub mean_latency_seconds: Option<f64>,
}

impl ShadowStats {
    fn finish(mut self) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ratio = |a: f64, n: u64| (n > 0).then(|| a / n as f64);
        #[allow(clippy::cast_precision_loss)]
        let equal = self.labels_equal as f64;
        self.label_agreement = ratio(equal, self.labels_compared);
        self.mean_abs_diff = ratio(self.abs_diff_sum, self.values_compared);
        self.mean_latency_seconds = ratio(self.latency_seconds_sum, self.requests);
        self
    }
}

/// Every shadow's statistics, by model and shadow version.
#[derive(Debug)]
pub struct Shadows {
    stats: Mutex<BTreeMap<(String, u64), ShadowStats>>,
    room: Arc<tokio::sync::Semaphore>,
}

impl Default for Shadows {
    fn default() -> Self {
        Self { stats: Mutex::default(), room: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)) }
    }
}

/// Room for one shadow copy.
pub struct Admitted {
    model: Arc<LoadedModel>,
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl Shadows {
    /// Room for a copy to `shadow`, or `None` (counted as shed) when the server or the shadow is busy.
    #[must_use]
    pub fn admit(&self, shadow: Arc<LoadedModel>) -> Option<Admitted> {
        let busy = shadow.queue_depth() >= (shadow.config().max_queue_size / 2).max(1);
        match self.room.clone().try_acquire_owned() {
            Ok(room) if !busy => Some(Admitted { model: shadow, _room: room }),
            _ => {
                self.entry(shadow.name(), shadow.version(), |s| s.shed += 1);
                None
            }
        }
    }

    /// Runs the copy on its own task and records how it compares with `answered` (the caller's outputs).
    pub fn run(self: &Arc<Self>, admitted: Admitted, inputs: Vec<NamedTensor>, answered: Vec<NamedTensor>) {
        let shadows = self.clone();
        tokio::spawn(async move {
            let Admitted { model, _room } = admitted;
            let started = Instant::now();
            let outputs = answered.iter().map(|t| t.name.clone()).collect();
            let result = model.infer(InferRequest { inputs, outputs, timeout: None, id: None, observed: false }).await;
            let elapsed = started.elapsed();
            shadows.record(&model, elapsed, result.map(|r| r.outputs), &answered);
        });
    }

    fn record(
        &self,
        model: &LoadedModel,
        elapsed: Duration,
        result: Result<Vec<NamedTensor>, ferry_serving::ServingError>,
        answered: &[NamedTensor],
    ) {
        match result {
            Err(ferry_serving::ServingError::Overloaded { .. }) => {
                self.entry(model.name(), model.version(), |s| s.shed += 1);
            }
            Err(e) => {
                tracing::debug!(model = model.name(), version = model.version(), error = %e, "shadow copy failed");
                self.entry(model.name(), model.version(), |s| s.errors += 1);
            }
            Ok(outputs) => self.entry(model.name(), model.version(), |s| {
                s.requests += 1;
                s.latency_seconds_sum += elapsed.as_secs_f64();
                for (mine, theirs) in outputs.iter().zip(answered) {
                    compare(s, mine, theirs);
                }
            }),
        }
    }

    fn entry(&self, model: &str, version: u64, change: impl FnOnce(&mut ShadowStats)) {
        let mut stats = self.stats.lock();
        let s = stats
            .entry((model.to_owned(), version))
            .or_insert_with(|| ShadowStats { version, ..ShadowStats::default() });
        change(s);
    }

    /// The shadows of `model`, by version.
    #[must_use]
    pub fn of(&self, model: &str) -> Vec<ShadowStats> {
        self.stats.lock().iter().filter(|((m, _), _)| m == model).map(|(_, s)| s.clone().finish()).collect()
    }

    /// Every model's shadows.
    #[must_use]
    pub fn all(&self) -> Vec<(String, ShadowStats)> {
        self.stats.lock().iter().map(|((m, _), s)| (m.clone(), s.clone().finish())).collect()
    }

    /// Forgets the shadows of `model` (a model deleted or recreated starts again).
    pub fn forget(&self, model: &str) {
        self.stats.lock().retain(|(m, _), _| m != model);
    }
}

/// Adds one output pair to the agreement: equal labels, or absolute differences of numbers. Outputs of another
/// shape or type are not compared.
fn compare(s: &mut ShadowStats, mine: &NamedTensor, theirs: &NamedTensor) {
    if mine.name != theirs.name || mine.tensor.shape() != theirs.tensor.shape() {
        return;
    }
    let float = |d: &TensorData| {
        matches!(d, TensorData::Fp16(_) | TensorData::Bf16(_) | TensorData::Fp32(_) | TensorData::Fp64(_))
    };
    match (mine.tensor.data(), theirs.tensor.data()) {
        (TensorData::Bytes(a), TensorData::Bytes(b)) => {
            s.labels_compared += a.len() as u64;
            s.labels_equal += a.iter().zip(b).filter(|(x, y)| x == y).count() as u64;
        }
        (a, b) => {
            let (Some(x), Some(y)) = (crate::quality::numbers(a), crate::quality::numbers(b)) else { return };
            if float(a) || float(b) {
                s.values_compared += x.len() as u64;
                s.abs_diff_sum += x.iter().zip(&y).map(|(p, q)| (p - q).abs()).sum::<f64>();
            } else {
                s.labels_compared += x.len() as u64;
                s.labels_equal += x.iter().zip(&y).filter(|(p, q)| p == q).count() as u64;
            }
        }
    }
}
