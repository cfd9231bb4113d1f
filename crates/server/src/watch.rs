//! Live drift of served models. For every registry model whose package carries a reference profile, the model's
//! instance thread copies the watched columns of each engine run's inputs and outputs (the sampled requests' rows,
//! stacked) into the version's tumbling window (a short lock and one append of (column, value) pairs per run, not per
//! request: the copy is the only cost serving pays); a full window goes to an evaluator thread of its own, which
//! sorts the pairs into columns and tests every feature and output against the reference with
//! `ferry_monitor::drift` (Evidently's tests and verdicts). When the evaluator is
//! behind, a bounded number of full windows wait and further ones are dropped and their samples counted: a request
//! never waits for the tests. The latest window of each model is served at `/api/v1/models/{name}/monitoring` and as
//! `ferry_drift_score` / `ferry_drift_detected` on `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_monitor::drift::{Column, ColumnDrift, Histograms, PreparedReference, column_report_against, dataset_drift};
use ferry_package::{ColumnKind, Profile};
use ferry_serving::ObservedRun;
use ferry_types::{ModelSignature, NamedTensor, TensorData};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

/// How often background writers (the feedback writer) drain their buffers: a wake-up per request (a cross-thread
/// futex call) cost more than the copy itself.
pub(crate) const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// How live drift is watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftWatchConfig {
    /// Share of requests copied for drift (0 to 1).
    pub sample_rate: f64,
    /// Rows per window.
    pub window_rows: usize,
    /// Rows of full windows waiting for the evaluator (at least one window); past this, full windows are dropped.
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
    /// Cleaned and sorted once: every window is tested against it.
    reference: PreparedReference,
}

/// What one served version is compared with.
pub struct Reference {
    version: u64,
    columns: Vec<ReferenceColumn>,
    /// The columns grouped by the tensor they come from, so that a request looks each tensor up once.
    tensors: Vec<TensorColumns>,
    /// Requests seen, for this model's sampling.
    seen: AtomicU64,
    /// The window filling now.
    window: Mutex<Filling>,
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
        let window = Mutex::new(Filling::default());
        let mut tensors: Vec<TensorColumns> = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let (name, output) = (&c.source.tensor, c.source.output);
            match tensors.iter_mut().find(|t| t.tensor == *name && t.output == output) {
                Some(t) => t.columns.push((i, c.source.index)),
                None => {
                    tensors.push(TensorColumns { tensor: name.clone(), output, columns: vec![(i, c.source.index)] })
                }
            }
        }
        Self { version, columns, tensors, seen: AtomicU64::new(0), window }
    }
}

/// The reference columns one tensor feeds: (column, index in a `[N, k]` tensor).
#[derive(Debug)]
struct TensorColumns {
    tensor: String,
    output: bool,
    columns: Vec<(usize, Option<usize>)>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("version", &self.version)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// The reference column; values bound for a float32 tensor are rounded as the model receives them, so that a CSV's
/// `5.2` and a request's float32 5.2 are one value (they would otherwise differ in the 8th digit).
fn column_of(kind: ColumnKind, numbers: Vec<f64>, labels: Vec<String>, float32: bool) -> PreparedReference {
    match kind {
        ColumnKind::Numerical => {
            #[allow(clippy::cast_possible_truncation)]
            let numbers: Vec<f64> =
                if float32 { numbers.into_iter().map(|x| f64::from(x as f32)).collect() } else { numbers };
            PreparedReference::new(&Column::Numerical(numbers))
        }
        ColumnKind::Categorical => PreparedReference::new(&Column::Categorical(labels)),
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

/// A window filling up, inside its version's [`Reference`].
///
/// Its values are (reference column, value) pairs in arrival order, not a vector per column: a run appends all of its
/// values in one place (where a vector per column had it write one cache line per column), and the evaluator sorts
/// them into columns. A column's values keep their order.
#[derive(Default, Clone)]
struct Filling {
    /// Values of numerical columns.
    numbers: Vec<(usize, f64)>,
    /// Values of categorical columns (converted when tested).
    cells: Vec<(usize, Cell)>,
    rows: usize,
    /// Requests whose rows are in it.
    samples: u64,
    started_at: i64,
    ended_at: i64,
}

enum Values {
    Numbers(Vec<f64>),
    Cells(Vec<Cell>),
}

impl Filling {
    /// The values of each of `columns`, in arrival order: numbers for a numerical column, cells for a categorical one.
    fn into_columns(self, columns: &[ReferenceColumn]) -> Vec<Values> {
        let mut values: Vec<Values> = columns
            .iter()
            .map(|c| match c.reference.kind() {
                ferry_monitor::drift::ColumnKind::Numerical => Values::Numbers(Vec::with_capacity(self.rows)),
                ferry_monitor::drift::ColumnKind::Categorical => Values::Cells(Vec::new()),
            })
            .collect();
        for (column, x) in self.numbers {
            if let Some(Values::Numbers(v)) = values.get_mut(column) {
                v.push(x);
            }
        }
        for (column, c) in self.cells {
            if let Some(Values::Cells(v)) = values.get_mut(column) {
                v.push(c);
            }
        }
        values
    }

    fn number(&mut self, column: usize, x: f64) {
        self.numbers.push((column, x));
    }

    fn cell(&mut self, column: usize, c: Cell) {
        self.cells.push((column, c));
    }
}

#[derive(Debug, Clone)]
enum Cell {
    Number(f64),
    Text(String),
}

/// A full window on its way to the evaluator thread.
struct Closed {
    model: String,
    reference: Arc<Reference>,
    window: Filling,
}

/// The live drift watcher.
pub struct DriftWatch {
    config: DriftWatchConfig,
    /// Full windows waiting for the evaluator; when it is behind, a new full window is dropped and its samples
    /// counted.
    evaluator: std::sync::mpsc::SyncSender<Closed>,
    dropped: AtomicU64,
    /// By model name; looked up on every request, so with a fast hash (the names are the operator's, not a client's).
    references: RwLock<foldhash::HashMap<String, Arc<Reference>>>,
    status: RwLock<HashMap<String, ModelDrift>>,
}

impl std::fmt::Debug for DriftWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftWatch").field("config", &self.config).finish_non_exhaustive()
    }
}

impl DriftWatch {
    /// Starts the evaluator thread; it ends when the watch is dropped.
    ///
    /// # Panics
    /// When the operating system refuses a new thread.
    #[must_use]
    pub fn start(config: DriftWatchConfig) -> Arc<Self> {
        // The buffer bounds the rows waiting: whole windows, at least one.
        let pending = (config.buffer / config.window_rows.max(1)).max(1);
        let (evaluator, windows) = std::sync::mpsc::sync_channel::<Closed>(pending);
        let watch = Arc::new(Self {
            config,
            evaluator,
            dropped: AtomicU64::new(0),
            references: RwLock::default(),
            status: RwLock::default(),
        });
        let weak = Arc::downgrade(&watch);
        // Requests fill windows themselves (a lock held for one request's copy); only full windows travel, to one
        // thread of its own that sorts and tests them, off the async threads.
        std::thread::Builder::new()
            .name("ferry-drift".into())
            .spawn(move || {
                idle_priority();
                while let Ok(closed) = windows.recv() {
                    let Some(watch) = weak.upgrade() else { break };
                    // A bug in one window's tests must not end drift monitoring for every model.
                    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watch.evaluate(closed)));
                    if evaluated.is_err() {
                        tracing::error!("drift evaluation panicked; the window is skipped");
                    }
                }
            })
            .expect("spawning the drift evaluator thread");
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

    /// What `model` at `version` is compared with, when it is watched (a map lookup).
    #[must_use]
    pub fn watching(&self, model: &str, version: u64) -> Option<Arc<Reference>> {
        self.references.read().get(model).filter(|r| r.version == version).cloned()
    }

    /// Adds one engine run of `model` at `version` (its requests' inputs and outputs, stacked), answered at `at`
    /// (Unix ms), to the version's window when the version is watched: a lock and a copy per run, on the model's
    /// instance thread. Never waits for the tests: a full window goes to the evaluator, or is dropped and counted when
    /// the evaluator is behind.
    ///
    /// Sampling is deterministic per model: a request is taken whenever the model's request count crosses a multiple
    /// of 1/rate, so a run gives the rows of its first few requests, as many as its count crossed.
    pub fn observe_run(&self, model: &str, version: u64, run: &ObservedRun<'_>, at: i64) {
        let Some(reference) = self.watching(model, version) else { return };
        let taken = if self.config.sample_rate >= 1.0 {
            run.requests.len()
        } else {
            let n = run.requests.len() as u64;
            let seen = reference.seen.fetch_add(n, Ordering::Relaxed);
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let crossed =
                ((seen + n) as f64 * self.config.sample_rate).floor() - (seen as f64 * self.config.sample_rate).floor();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let crossed = crossed.max(0.0) as usize;
            crossed.min(run.requests.len())
        };
        if taken == 0 {
            return;
        }
        let total: usize = run.requests.iter().map(|r| r.rows).sum();
        let rows: usize = run.requests[..taken].iter().map(|r| r.rows).sum();
        let full = {
            let mut window = reference.window.lock();
            if window.rows == 0 {
                window.started_at = at;
            }
            // Each tensor on its own: an output the client did not ask for leaves only its columns short.
            for group in &reference.tensors {
                let tensors = if group.output { run.outputs } else { run.inputs };
                if let Some(t) = tensors.iter().find(|t| t.name == group.tensor) {
                    copy_columns(&mut window, &reference.columns, t, &group.columns, total, rows);
                }
            }
            window.rows += rows;
            window.samples += taken as u64;
            window.ended_at = at;
            if window.rows < self.config.window_rows {
                return;
            }
            std::mem::take(&mut *window)
        };
        let samples = full.samples;
        let closed = Closed { model: model.to_owned(), reference, window: full };
        if self.evaluator.try_send(closed).is_err() {
            self.dropped.fetch_add(samples, Ordering::Relaxed);
        }
    }

    /// The monitoring state of `model`, if it is watched.
    #[must_use]
    pub fn status(&self, model: &str) -> Option<ModelDrift> {
        let mut s = self.status.read().get(model).cloned()?;
        s.samples_dropped = self.dropped.load(Ordering::Relaxed);
        if let Some(reference) = self.references.read().get(model).filter(|r| r.version == s.version) {
            s.rows_in_window = reference.window.lock().rows;
        }
        Some(s)
    }

    /// Every watched model's state.
    #[must_use]
    pub fn all(&self) -> Vec<ModelDrift> {
        let names: Vec<String> = self.status.read().keys().cloned().collect();
        let mut all: Vec<ModelDrift> = names.iter().filter_map(|m| self.status(m)).collect();
        all.sort_by(|a, b| a.model.cmp(&b.model));
        all
    }

    /// Samples dropped because the evaluator was behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Tests a full window and publishes the result.
    fn evaluate(&self, Closed { model, reference, window }: Closed) {
        let mut columns = Vec::with_capacity(reference.columns.len());
        let (rows, started_at, ended_at) = (window.rows, window.started_at, window.ended_at);
        for (column, values) in reference.columns.iter().zip(window.into_columns(&reference.columns)) {
            let current = match values {
                Values::Numbers(v) => Column::Numerical(v),
                Values::Cells(cells) => Column::Categorical(
                    cells
                        .into_iter()
                        .map(|c| match c {
                            Cell::Text(s) => s,
                            Cell::Number(x) => label_of(x),
                        })
                        .collect(),
                ),
            };
            let Ok((drift, hist)) = column_report_against(&column.reference, &current, None, None) else {
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
            version: reference.version,
            rows,
            started_at_ms: started_at,
            ended_at_ms: ended_at,
            columns,
            drifted_share: share,
            dataset_drift: drifted,
        };
        tracing::info!(model = %model, version = reference.version, rows, drifted_share = share,
            dataset_drift = drifted, "drift window evaluated");
        if let Some(s) = self.status.write().get_mut(&model)
            && s.version == reference.version
        {
            s.windows_completed += 1;
            s.latest = Some(result);
        }
    }
}

/// Puts the calling thread (the evaluator) in Linux's idle scheduling class: it runs only on a core that would
/// otherwise idle, so drift tests never take a core from serving. When serving saturates the machine, full windows
/// wait in the bounded queue and beyond it are dropped and counted: monitoring never slows a request.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
            tracing::warn!(error = ?e, "the drift evaluator runs at normal priority");
        }
    }
}

/// How a number that reached a categorical column is written (as the profile writes integers: no ".0").
fn label_of(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { x.to_string() }
}

/// Copies, for each `(column, index)`, column `index` of the first `rows` rows of `t`, a tensor of `total` rows (or
/// the whole tensor when it is one column), into `sink`, as numbers for a numerical reference column and as cells for
/// a categorical one; a tensor of another shape adds nothing.
fn copy_columns(
    sink: &mut Filling,
    reference: &[ReferenceColumn],
    t: &NamedTensor,
    columns: &[(usize, Option<usize>)],
    total: usize,
    rows: usize,
) {
    let width = match t.tensor.shape() {
        [n] if *n == total => 1,
        [n, k] if *n == total => *k,
        _ => return,
    };
    let data = t.tensor.data();
    if data.len() < rows * width {
        return;
    }
    for &(column, index) in columns {
        let j = index.unwrap_or(0);
        let Some(kind) = reference.get(column).map(|c| c.reference.kind()).filter(|_| j < width) else { continue };
        match (kind, data) {
            // The common tensors without a type test per element (plain loops: iterator adapters cost more than the
            // copy for the usual one row).
            (ferry_monitor::drift::ColumnKind::Numerical, TensorData::Fp32(d)) => {
                for r in 0..rows {
                    sink.number(column, d.get(r * width + j).map_or(f64::NAN, |&x| f64::from(x)));
                }
            }
            (ferry_monitor::drift::ColumnKind::Numerical, TensorData::Fp64(d)) => {
                for r in 0..rows {
                    sink.number(column, d.get(r * width + j).copied().unwrap_or(f64::NAN));
                }
            }
            // Text reaching a numerical column is no number: NaN, as a CSV's would be.
            (ferry_monitor::drift::ColumnKind::Numerical, _) => {
                for r in 0..rows {
                    sink.number(column, number_at(data, r * width + j).unwrap_or(f64::NAN));
                }
            }
            (ferry_monitor::drift::ColumnKind::Categorical, _) => {
                for r in 0..rows {
                    if let Some(c) = cell(data, r * width + j) {
                        sink.cell(column, c);
                    }
                }
            }
        }
    }
}

fn cell(data: &TensorData, i: usize) -> Option<Cell> {
    match data {
        TensorData::Bytes(v) => Some(Cell::Text(String::from_utf8_lossy(v.get(i)?).into_owned())),
        _ => number_at(data, i).map(Cell::Number),
    }
}

/// Element `i` as a number (`None` for text, or past the end).
fn number_at(data: &TensorData, i: usize) -> Option<f64> {
    Some(match data {
        TensorData::Bool(v) => f64::from(u8::from(*v.get(i)?)),
        TensorData::Uint8(v) => f64::from(*v.get(i)?),
        TensorData::Uint16(v) => f64::from(*v.get(i)?),
        TensorData::Uint32(v) => f64::from(*v.get(i)?),
        #[allow(clippy::cast_precision_loss)]
        TensorData::Uint64(v) => *v.get(i)? as f64,
        TensorData::Int8(v) => f64::from(*v.get(i)?),
        TensorData::Int16(v) => f64::from(*v.get(i)?),
        TensorData::Int32(v) => f64::from(*v.get(i)?),
        #[allow(clippy::cast_precision_loss)]
        TensorData::Int64(v) => *v.get(i)? as f64,
        TensorData::Fp16(v) => f64::from(v.get(i)?.to_f32()),
        TensorData::Fp32(v) => f64::from(*v.get(i)?),
        TensorData::Fp64(v) => *v.get(i)?,
        TensorData::Bf16(v) => f64::from(v.get(i)?.to_f32()),
        TensorData::Bytes(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_serving::ObservedRequest;
    use ferry_types::Tensor;

    fn tensor(shape: Vec<usize>, data: TensorData) -> NamedTensor {
        NamedTensor::new("t", Tensor::new(shape, data).expect("tensor"))
    }

    fn numbers(v: &Values) -> Vec<f64> {
        match v {
            Values::Numbers(v) => v.clone(),
            Values::Cells(_) => panic!("cells"),
        }
    }

    fn reference_column(name: &str, kind: &str) -> ReferenceColumn {
        let reference = match kind {
            "numbers" => PreparedReference::new(&Column::Numerical(vec![1.0, 2.0, 3.0])),
            _ => PreparedReference::new(&Column::Categorical(vec!["a".into(), "b".into()])),
        };
        ReferenceColumn {
            name: name.into(),
            source: Source { tensor: "t".into(), index: None, output: false },
            reference,
        }
    }

    #[test]
    fn columns_are_copied_from_their_tensor_positions() {
        let columns =
            [reference_column("a", "numbers"), reference_column("b", "numbers"), reference_column("c", "cells")];
        let mut sink = Filling::default();
        let matrix = tensor(vec![2, 3], TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        copy_columns(&mut sink, &columns, &matrix, &[(0, Some(0)), (1, Some(2)), (2, Some(1))], 2, 2);
        let values = std::mem::take(&mut sink).into_columns(&columns);
        assert_eq!((numbers(&values[0]), numbers(&values[1])), (vec![1.0, 4.0], vec![3.0, 6.0]));
        let cells = match &values[2] {
            Values::Cells(c) => c.as_slice(),
            Values::Numbers(_) => panic!("numbers"),
        };
        assert!(matches!(cells, [Cell::Number(a), Cell::Number(b)] if *a == 2.0 && *b == 5.0));
        // Into the emptied window again, then other element types, a column past the tensor's width, a tensor of
        // another shape, no rows, a column that does not exist.
        copy_columns(&mut sink, &columns, &matrix, &[(0, Some(0)), (1, Some(2)), (2, Some(1))], 2, 2);
        let int64 = tensor(vec![2], TensorData::Int64(vec![7, 8]));
        copy_columns(&mut sink, &columns, &int64, &[(0, None), (1, Some(1)), (7, None)], 2, 2);
        copy_columns(&mut sink, &columns, &tensor(vec![3], TensorData::Fp64(vec![0.5; 3])), &[(0, None)], 2, 2);
        copy_columns(&mut sink, &columns, &tensor(vec![0, 3], TensorData::Fp32(Vec::new())), &[(0, Some(2))], 0, 0);
        let text = tensor(vec![1], TensorData::Bytes(vec![b"x".to_vec()]));
        copy_columns(&mut sink, &columns, &text, &[(0, None), (2, None)], 1, 1);
        let values = sink.into_columns(&columns);
        let first = numbers(&values[0]);
        assert_eq!(first[..4], [1.0, 4.0, 7.0, 8.0]);
        assert!(first[4].is_nan() && first.len() == 5, "text in a numerical column is NaN: {first:?}");
        assert_eq!(numbers(&values[1]), vec![3.0, 6.0]);
        assert!(matches!(&values[2], Values::Cells(c) if matches!(&c[2], Cell::Text(t) if t == "x")));
    }

    #[test]
    fn captured_inputs_and_the_outputs_fill_the_window_in_column_order() {
        let spec = |name: &str, datatype, shape| ferry_types::TensorSpec { name: name.into(), datatype, shape };
        let signature = ModelSignature {
            inputs: vec![spec("x", ferry_types::DataType::Fp32, vec![-1, 2])],
            outputs: vec![spec("label", ferry_types::DataType::Int64, vec![-1])],
        };
        let column = |name: &str, kind, sample: Vec<f64>, category_sample: Vec<String>| ferry_package::ColumnProfile {
            name: name.into(),
            kind,
            count: 3,
            missing: 0,
            mean: None,
            std: None,
            min: None,
            max: None,
            quantiles: Vec::new(),
            histogram: None,
            categories: None,
            categories_truncated: false,
            sample,
            category_sample,
        };
        let profile = Profile {
            rows: 3,
            features: vec![
                column("f0", ColumnKind::Numerical, vec![1.0, 2.0, 3.0], Vec::new()),
                column("f1", ColumnKind::Numerical, vec![1.0, 2.0, 3.0], Vec::new()),
            ],
            outputs: vec![column("label", ColumnKind::Categorical, Vec::new(), vec!["0".into(), "1".into()])],
        };
        let watch = DriftWatch::start(DriftWatchConfig { window_rows: 4, ..DriftWatchConfig::default() });
        watch.register("m", Reference::from_profile(7, &signature, &["f0".into(), "f1".into()], profile));
        let reference = watch.watching("m", 7).expect("watched");
        assert!(watch.watching("m", 6).is_none(), "another version is not");
        // Two requests of one row each, stacked in one run.
        let inputs =
            [NamedTensor::new("x", Tensor::new(vec![2, 2], TensorData::Fp32(vec![1.5, 2.5, 3.5, 4.5])).expect("x"))];
        let outputs = [NamedTensor::new("label", Tensor::new(vec![2], TensorData::Int64(vec![1, 0])).expect("label"))];
        let requests = [ObservedRequest { rows: 1, id: None }, ObservedRequest { rows: 1, id: Some("b") }];
        let run = ObservedRun { inputs: &inputs, outputs: &outputs, requests: &requests };
        watch.observe_run("m", 7, &run, 10);
        {
            let window = reference.window.lock();
            assert_eq!((window.rows, window.samples, window.started_at), (2, 2, 10));
            let values = window.clone().into_columns(&reference.columns);
            assert_eq!((numbers(&values[0]), numbers(&values[1])), (vec![1.5, 3.5], vec![2.5, 4.5]));
            assert!(
                matches!(&values[2], Values::Cells(c) if matches!(c.as_slice(), [Cell::Number(a), Cell::Number(b)] if *a == 1.0 && *b == 0.0))
            );
        }
        // A run of another version adds nothing; the second full run closes the window, which starts again.
        watch.observe_run("m", 6, &run, 11);
        assert_eq!(reference.window.lock().rows, 2);
        watch.observe_run("m", 7, &run, 12);
        assert_eq!(reference.window.lock().rows, 0);
    }

    #[test]
    fn a_sampled_run_gives_the_rows_of_as_many_requests_as_its_count_crossed() {
        let spec = |name: &str| ferry_types::TensorSpec {
            name: name.into(),
            datatype: ferry_types::DataType::Fp32,
            shape: vec![-1],
        };
        let signature = ModelSignature { inputs: vec![spec("x")], outputs: vec![spec("y")] };
        let column = ferry_package::ColumnProfile {
            name: "x".into(),
            kind: ColumnKind::Numerical,
            count: 3,
            missing: 0,
            mean: None,
            std: None,
            min: None,
            max: None,
            quantiles: Vec::new(),
            histogram: None,
            categories: None,
            categories_truncated: false,
            sample: vec![1.0, 2.0, 3.0],
            category_sample: Vec::new(),
        };
        let profile = Profile { rows: 3, features: vec![column], outputs: Vec::new() };
        let watch =
            DriftWatch::start(DriftWatchConfig { sample_rate: 0.5, window_rows: 100, ..DriftWatchConfig::default() });
        watch.register("m", Reference::from_profile(1, &signature, &["x".into()], profile));
        let reference = watch.watching("m", 1).expect("watched");
        // Requests of 1, 2 and 3 rows in one run; every second request is taken: the second (count 2) only, at first.
        let inputs = [NamedTensor::new(
            "x",
            Tensor::new(vec![6], TensorData::Fp32(vec![1.0, 2.0, 2.0, 3.0, 3.0, 3.0])).expect("x"),
        )];
        let requests = [1, 2, 3].map(|rows| ObservedRequest { rows, id: None });
        let run = ObservedRun { inputs: &inputs, outputs: &[], requests: &requests };
        watch.observe_run("m", 1, &run, 1);
        // One request taken: the run's first (its rows lead the stack).
        let taken = |w: &Filling| (w.rows, w.samples);
        assert_eq!(taken(&reference.window.lock()), (1, 1));
        watch.observe_run("m", 1, &run, 2);
        // Counts 4, 5, 6: two more crossings (4 and 6), so the first two requests' three rows.
        let window = reference.window.lock();
        assert_eq!(taken(&window), (4, 3));
        assert_eq!(numbers(&window.clone().into_columns(&reference.columns)[0]), vec![1.0, 1.0, 2.0, 2.0]);
    }
}
