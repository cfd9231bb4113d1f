//! Live drift of served models. For every registry model whose package carries a reference profile, a sampled copy
//! of each request's inputs and outputs goes, without ever blocking, to a bounded buffer (a full buffer drops the
//! sample and counts it); a background task gathers the rows into tumbling windows per model version and, when a
//! window is full, tests every feature and output against the reference with `ferry_monitor::drift` (Evidently's
//! tests and verdicts). The latest window of each model is served at `/api/v1/models/{name}/monitoring` and as
//! `ferry_drift_score` / `ferry_drift_detected` on `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_monitor::drift::{Column, ColumnDrift, Histograms, column_report, dataset_drift};
use ferry_package::{ColumnKind, Profile};
use ferry_types::{ModelSignature, NamedTensor, TensorData};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::mpsc;

/// How often the background task folds the buffered samples into windows.
pub(crate) const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// How live drift is watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftWatchConfig {
    /// Share of requests copied for drift (0 to 1).
    pub sample_rate: f64,
    /// Rows per window.
    pub window_rows: usize,
    /// Samples waiting for the background task; past this, new ones are dropped.
    pub buffer: usize,
    /// Share of drifted columns at which the whole window counts as drifted.
    pub drift_share: f64,
}

impl Default for DriftWatchConfig {
    fn default() -> Self {
        Self { sample_rate: 1.0, window_rows: 1000, buffer: 10_000, drift_share: 0.5 }
    }
}

/// Where a reference column's values come from in a request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    /// Input or output tensor name.
    tensor: String,
    /// Column of a `[N, k]` tensor; `None` for `[N]` or `[N, 1]`.
    index: Option<usize>,
    /// Whether it is an output (prediction drift) rather than an input.
    output: bool,
}

#[derive(Debug)]
struct ReferenceColumn {
    name: String,
    source: Source,
    reference: Column,
}

/// What one served version is compared with.
#[derive(Debug)]
pub struct Reference {
    version: u64,
    columns: Vec<ReferenceColumn>,
    /// Requests seen, for this model's sampling.
    seen: AtomicU64,
}

impl Reference {
    /// Maps a package's profile onto the model's tensors: features in feed order onto one `[N, k]` input (or one
    /// input per feature, by name); output columns `name` or `name[j]` onto the outputs.
    #[must_use]
    pub fn from_profile(version: u64, signature: &ModelSignature, features: &[String], profile: Profile) -> Self {
        let matrix = match signature.inputs.as_slice() {
            // As `ferry pack` mapped the CSV: one `[N, k]` input (k fixed) takes the features in order.
            [single] if single.shape.len() == 2 && single.shape[1] > 0 => Some(single.name.clone()),
            _ => None,
        };
        let float32 = |tensor: &str, output: bool| {
            let specs = if output { &signature.outputs } else { &signature.inputs };
            specs.iter().any(|t| t.name == tensor && t.datatype == ferry_types::DataType::Fp32)
        };
        let mut columns = Vec::new();
        for (j, f) in profile.features.into_iter().enumerate() {
            let position = features.iter().position(|n| *n == f.name).unwrap_or(j);
            let source = match &matrix {
                Some(input) => Source { tensor: input.clone(), index: Some(position), output: false },
                None => Source { tensor: f.name.clone(), index: None, output: false },
            };
            let reference = column_of(f.kind, f.sample, f.category_sample, float32(&source.tensor, false));
            columns.push(ReferenceColumn { name: f.name.clone(), source, reference });
        }
        for o in profile.outputs {
            let source = match o.name.strip_suffix(']').and_then(|s| s.split_once('[')) {
                Some((tensor, j)) => match j.parse() {
                    Ok(j) => Source { tensor: tensor.to_owned(), index: Some(j), output: true },
                    Err(_) => continue,
                },
                None => Source { tensor: o.name.clone(), index: None, output: true },
            };
            let reference = column_of(o.kind, o.sample, o.category_sample, float32(&source.tensor, true));
            columns.push(ReferenceColumn { name: o.name.clone(), source, reference });
        }
        Self { version, columns, seen: AtomicU64::new(0) }
    }
}

/// The reference column; values bound for a float32 tensor are rounded as the model receives them, so that a CSV's
/// `5.2` and a request's float32 5.2 are one value (they would otherwise differ in the 8th digit).
fn column_of(kind: ColumnKind, numbers: Vec<f64>, labels: Vec<String>, float32: bool) -> Column {
    match kind {
        #[allow(clippy::cast_possible_truncation)]
        ColumnKind::Numerical if float32 => {
            Column::Numerical(numbers.into_iter().map(|x| f64::from(x as f32)).collect())
        }
        ColumnKind::Numerical => Column::Numerical(numbers),
        ColumnKind::Categorical => Column::Categorical(labels),
    }
}

/// One column's verdict in a window.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnStatus {
    /// Feature or output column.
    pub column: String,
    /// `feature` (data drift) or `output` (prediction drift).
    pub role: &'static str,
    /// Test, score, threshold, verdict.
    #[serde(flatten)]
    pub drift: ColumnDrift,
    /// Reference and current shares per bin.
    pub histograms: Histograms,
}

/// A completed window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowDrift {
    /// The model version it covers.
    pub version: u64,
    /// Rows in the window.
    pub rows: usize,
    /// First and last sample time (milliseconds since the epoch).
    pub started_at_ms: i64,
    /// See `started_at_ms`.
    pub ended_at_ms: i64,
    /// Per column.
    pub columns: Vec<ColumnStatus>,
    /// Share of columns that drifted.
    pub drifted_share: f64,
    /// Whether the share reached the configured drift share.
    pub dataset_drift: bool,
}

/// What the monitoring endpoint reports for a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelDrift {
    /// Model name.
    pub model: String,
    /// The version being watched.
    pub version: u64,
    /// Rows per window.
    pub window_rows: usize,
    /// Rows gathered in the window that is filling now.
    pub rows_in_window: usize,
    /// Windows completed for this version.
    pub windows_completed: u64,
    /// Samples dropped because the buffer was full (all models).
    pub samples_dropped: u64,
    /// The last completed window, if any.
    pub latest: Option<WindowDrift>,
}

struct Sample {
    model: String,
    version: u64,
    at: i64,
    inputs: Vec<NamedTensor>,
    outputs: Vec<NamedTensor>,
}

/// A window filling up.
struct Filling {
    version: u64,
    values: Vec<Vec<Cell>>,
    rows: usize,
    started_at: i64,
    ended_at: i64,
}

#[derive(Debug, Clone)]
enum Cell {
    Number(f64),
    Text(String),
}

/// The live drift watcher.
pub struct DriftWatch {
    config: DriftWatchConfig,
    tx: mpsc::Sender<Sample>,
    dropped: AtomicU64,
    references: RwLock<HashMap<String, Arc<Reference>>>,
    status: RwLock<HashMap<String, ModelDrift>>,
}

impl std::fmt::Debug for DriftWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftWatch").field("config", &self.config).finish_non_exhaustive()
    }
}

impl DriftWatch {
    /// Starts the background task on the current runtime.
    #[must_use]
    pub fn start(config: DriftWatchConfig) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<Sample>(config.buffer.max(1));
        let watch = Arc::new(Self {
            config,
            tx,
            dropped: AtomicU64::new(0),
            references: RwLock::default(),
            status: RwLock::default(),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let mut filling: HashMap<String, Filling> = HashMap::new();
            // Drained on a timer rather than woken per sample: a wake-up per request (a cross-thread futex call)
            // cost more than the copy itself.
            let mut tick = tokio::time::interval(DRAIN_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(watch) = weak.upgrade() else { break };
                loop {
                    let sample = match rx.try_recv() {
                        Ok(sample) => sample,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    };
                    if let Some(done) = watch.absorb(&mut filling, sample) {
                        let w = watch.clone();
                        // The tests sort and bin every column: off the async threads.
                        let result = tokio::task::spawn_blocking(move || w.evaluate(done)).await;
                        if let Err(e) = result {
                            tracing::error!(error = %e, "drift evaluation panicked");
                        }
                    }
                }
            }
        });
        watch
    }

    /// Watches `model` at `reference.version` (replacing what was watched of it).
    pub fn register(&self, model: &str, reference: Reference) {
        let version = reference.version;
        self.references.write().insert(model.to_owned(), Arc::new(reference));
        self.status.write().insert(
            model.to_owned(),
            ModelDrift {
                model: model.to_owned(),
                version,
                window_rows: self.config.window_rows,
                rows_in_window: 0,
                windows_completed: 0,
                samples_dropped: 0,
                latest: None,
            },
        );
    }

    /// Stops watching `model`.
    pub fn unregister(&self, model: &str) {
        self.references.write().remove(model);
        self.status.write().remove(model);
    }

    /// Whether requests to `model` at `version` are watched (cheap: a map lookup).
    #[must_use]
    pub fn wants(&self, model: &str, version: u64) -> bool {
        let references = self.references.read();
        let Some(reference) = references.get(model).filter(|r| r.version == version) else { return false };
        // Deterministic sampling per model: take a request whenever its count crosses a multiple of 1/rate.
        let n = reference.seen.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let (now, before) = ((n + 1) as f64 * self.config.sample_rate, n as f64 * self.config.sample_rate);
        now.floor() > before.floor()
    }

    /// Queues a copy of one request and its response (never blocks; a full buffer drops it and counts).
    pub fn observe(&self, model: &str, version: u64, inputs: Vec<NamedTensor>, outputs: &[NamedTensor]) {
        let sample = Sample { model: model.to_owned(), version, at: now_ms(), inputs, outputs: outputs.to_vec() };
        if self.tx.try_send(sample).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The monitoring state of `model`, if it is watched.
    #[must_use]
    pub fn status(&self, model: &str) -> Option<ModelDrift> {
        let mut s = self.status.read().get(model).cloned()?;
        s.samples_dropped = self.dropped.load(Ordering::Relaxed);
        Some(s)
    }

    /// Every watched model's state.
    #[must_use]
    pub fn all(&self) -> Vec<ModelDrift> {
        let mut all: Vec<ModelDrift> = self.status.read().values().cloned().collect();
        all.sort_by(|a, b| a.model.cmp(&b.model));
        all
    }

    /// Samples dropped because the buffer was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Adds a sample's rows to its model's window; returns the window when it is full.
    fn absorb(
        &self,
        filling: &mut HashMap<String, Filling>,
        sample: Sample,
    ) -> Option<(String, Arc<Reference>, Filling)> {
        let reference = self.references.read().get(&sample.model).cloned()?;
        if reference.version != sample.version {
            return None;
        }
        let window = filling.entry(sample.model.clone()).or_insert_with(|| Filling {
            version: reference.version,
            values: vec![Vec::new(); reference.columns.len()],
            rows: 0,
            started_at: sample.at,
            ended_at: sample.at,
        });
        if window.version != reference.version {
            *window = Filling {
                version: reference.version,
                values: vec![Vec::new(); reference.columns.len()],
                rows: 0,
                started_at: sample.at,
                ended_at: sample.at,
            };
        }
        let rows = rows_of(&sample)?;
        if window.rows == 0 {
            window.started_at = sample.at;
        }
        // Each column on its own: an output the client did not ask for leaves only that column short.
        for (column, values) in reference.columns.iter().zip(window.values.iter_mut()) {
            let tensors = if column.source.output { &sample.outputs } else { &sample.inputs };
            if let Some(cells) = tensors
                .iter()
                .find(|t| t.name == column.source.tensor)
                .and_then(|t| cells(t, column.source.index, rows))
            {
                values.extend(cells);
            }
        }
        window.rows += rows;
        window.ended_at = sample.at;
        if let Some(s) = self.status.write().get_mut(&sample.model) {
            s.rows_in_window = window.rows;
        }
        if window.rows < self.config.window_rows {
            return None;
        }
        let done = filling.remove(&sample.model)?;
        Some((sample.model, reference, done))
    }

    /// Tests a full window and publishes the result.
    fn evaluate(&self, (model, reference, window): (String, Arc<Reference>, Filling)) {
        let mut columns = Vec::with_capacity(reference.columns.len());
        for (column, values) in reference.columns.iter().zip(window.values) {
            let current = match &column.reference {
                Column::Numerical(_) => Column::Numerical(
                    values.iter().map(|c| if let Cell::Number(x) = c { *x } else { f64::NAN }).collect(),
                ),
                Column::Categorical(_) => Column::Categorical(
                    values
                        .into_iter()
                        .map(|c| match c {
                            Cell::Text(s) => s,
                            Cell::Number(x) => label_of(x),
                        })
                        .collect(),
                ),
            };
            let Ok((drift, hist)) = column_report(&column.reference, &current, None, None) else {
                continue;
            };
            columns.push(ColumnStatus {
                column: column.name.clone(),
                role: if column.source.output { "output" } else { "feature" },
                drift,
                histograms: hist,
            });
        }
        let drifts: Vec<ColumnDrift> = columns.iter().map(|c| c.drift.clone()).collect();
        let (share, drifted) = dataset_drift(&drifts, self.config.drift_share);
        let result = WindowDrift {
            version: window.version,
            rows: window.rows,
            started_at_ms: window.started_at,
            ended_at_ms: window.ended_at,
            columns,
            drifted_share: share,
            dataset_drift: drifted,
        };
        tracing::info!(model = %model, version = window.version, rows = window.rows, drifted_share = share,
            dataset_drift = drifted, "drift window evaluated");
        if let Some(s) = self.status.write().get_mut(&model)
            && s.version == window.version
        {
            s.windows_completed += 1;
            s.rows_in_window = 0;
            s.latest = Some(result);
        }
    }
}

/// How a number that reached a categorical column is written (as the profile writes integers: no ".0").
fn label_of(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { x.to_string() }
}

fn rows_of(sample: &Sample) -> Option<usize> {
    sample.inputs.first().and_then(|t| t.tensor.shape().first().copied())
}

/// Column `index` of the first `rows` rows (or the whole tensor when it is one column).
fn cells(t: &NamedTensor, index: Option<usize>, rows: usize) -> Option<Vec<Cell>> {
    let shape = t.tensor.shape();
    let width = match shape {
        [n] if *n == rows => 1,
        [n, k] if *n == rows => *k,
        _ => return None,
    };
    let j = index.unwrap_or(0);
    if j >= width {
        return None;
    }
    let data = t.tensor.data();
    (0..rows).map(|r| cell(data, r * width + j)).collect()
}

fn cell(data: &TensorData, i: usize) -> Option<Cell> {
    Some(match data {
        TensorData::Bool(v) => Cell::Number(f64::from(u8::from(*v.get(i)?))),
        TensorData::Uint8(v) => Cell::Number(f64::from(*v.get(i)?)),
        TensorData::Uint16(v) => Cell::Number(f64::from(*v.get(i)?)),
        TensorData::Uint32(v) => Cell::Number(f64::from(*v.get(i)?)),
        #[allow(clippy::cast_precision_loss)]
        TensorData::Uint64(v) => Cell::Number(*v.get(i)? as f64),
        TensorData::Int8(v) => Cell::Number(f64::from(*v.get(i)?)),
        TensorData::Int16(v) => Cell::Number(f64::from(*v.get(i)?)),
        TensorData::Int32(v) => Cell::Number(f64::from(*v.get(i)?)),
        #[allow(clippy::cast_precision_loss)]
        TensorData::Int64(v) => Cell::Number(*v.get(i)? as f64),
        TensorData::Fp16(v) => Cell::Number(f64::from(v.get(i)?.to_f32())),
        TensorData::Fp32(v) => Cell::Number(f64::from(*v.get(i)?)),
        TensorData::Fp64(v) => Cell::Number(*v.get(i)?),
        TensorData::Bf16(v) => Cell::Number(f64::from(v.get(i)?.to_f32())),
        TensorData::Bytes(v) => Cell::Text(String::from_utf8_lossy(v.get(i)?).into_owned()),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
