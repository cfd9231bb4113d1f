//! A loaded model version: its instances on their own threads, the queue in front of them, and request validation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use ferry_engine::{Engine, EngineOptions, error_chain};
use ferry_types::{ModelSignature, NamedTensor, Tensor};
use tokio::sync::oneshot;

use crate::loader::{EngineKind, EngineSettings, choose_engine};
use crate::pool::{Blueprint, Pool};
use crate::scheduler::{Batching, Job, RunObserver};
use crate::stats::StatsSnapshot;
use crate::{ModelConfig, ModelSource, ResolvedModelConfig, ServingError};

/// A request to one model version, already decoded from the wire.
#[derive(Debug)]
pub struct InferRequest {
    /// Inputs, in any order.
    pub inputs: Vec<NamedTensor>,
    /// Outputs wanted, in the order wanted; empty means every output in model order.
    pub outputs: Vec<String>,
    /// Give up if no instance has started the request within this time.
    pub timeout: Option<Duration>,
    /// The request's id: shown to the model's [`RunObserver`] with the request's rows (monitoring keeps predictions
    /// under it) and handed back in [`InferResponse::id`].
    pub id: Option<String>,
    /// Whether the observer sees it: false for a copy of another version's traffic (a shadow), which would only
    /// skew what monitoring keeps of this version.
    pub observed: bool,
}

/// The outputs of one request, and where its time went.
#[derive(Debug)]
pub struct InferResponse {
    /// Outputs, in the order requested.
    pub outputs: Vec<NamedTensor>,
    /// Time waiting in the queue for an instance.
    pub queue: Duration,
    /// Time in the instance (stacking, engine run, splitting), shared by the requests of one batch.
    pub compute: Duration,
    /// The request's id, as given.
    pub id: Option<String>,
}

/// One version of one model, loaded, warmed up and ready.
pub struct LoadedModel {
    name: String,
    version: u64,
    signature: ModelSignature,
    engine: EngineKind,
    config: ResolvedModelConfig,
    load_time: Duration,
    sender: Option<Sender<Job>>,
    pool: Arc<Pool>,
    batching: bool,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("name", &self.name).field("version", &self.version).finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Loads the version's first instances (`instances`, at least one), runs one warm-up inference on each, and
    /// starts their threads; the autoscaler adds and stops instances from then on.
    ///
    /// Blocking: call it off the async runtime.
    ///
    /// # Errors
    /// [`ServingError::Config`] for invalid settings, [`ServingError::Load`] when the engine refuses the model or
    /// the warm-up fails; the message names the model, the engine and the cause (an unsupported operator, say);
    /// [`ServingError::NoInstance`] when the memory budget has no room for it.
    pub fn load(source: &ModelSource, defaults: &ModelConfig, settings: &EngineSettings) -> Result<Self, ServingError> {
        let started = Instant::now();
        let name = source.name.to_string();
        let load_err = |message: String| ServingError::Load { name: name.clone(), path: source.path.clone(), message };
        let config = source.config.or(defaults).resolve().map_err(&load_err)?;
        let (engine, why) = choose_engine(config.engine, settings).map_err(|e| load_err(error_chain(&e)))?;
        let (sender, pool) = Self::assemble(source, engine, &config, settings);
        let mut instances = Vec::with_capacity(config.instances);
        for _ in 0..config.instances {
            instances.push(pool.admit_and_load()?);
        }
        let mut model = Self::start(&name, source.version.get(), engine, config.clone(), instances, sender, pool)?;
        model.load_time = started.elapsed();
        if config.oversubscribed {
            tracing::warn!(model = %source.name, max_instances = config.scaling.max,
                intra_op_threads = config.intra_op_threads,
                "max_instances × intra_op_threads exceed the cores; inference threads will compete");
        }
        tracing::info!(model = %source.name, version = source.version.get(), engine = engine.name(), why = %why,
            instances = config.instances, min_instances = config.scaling.min, max_instances = config.scaling.max,
            intra_op_threads = config.intra_op_threads, dynamic_batching = model.batching,
            load_ms = model.load_time.as_millis(), "model loaded");
        Ok(model)
    }

    /// The version's queue and its (empty) pool of instances.
    fn assemble(
        source: &ModelSource,
        kind: EngineKind,
        config: &ResolvedModelConfig,
        settings: &EngineSettings,
    ) -> (Sender<Job>, Arc<Pool>) {
        let (sender, receiver) = crossbeam_channel::bounded(config.max_queue_size);
        let blueprint = Blueprint {
            source: source.clone(),
            kind,
            options: EngineOptions { intra_op_threads: config.intra_op_threads },
            settings: settings.clone(),
            batching: Batching {
                enabled: config.dynamic_batching,
                cap: config.batch_rows_cap,
                delay: config.max_queue_delay,
                preferred: config.preferred_batch_sizes.clone(),
            },
            policy: config.scaling.clone(),
        };
        let pool = Pool::new(source.name.as_str(), source.version.get(), blueprint, receiver, Arc::default());
        (sender, pool)
    }

    /// Starts one thread per ready engine instance behind the pool's queue.
    fn start(
        name: &str,
        version: u64,
        engine: EngineKind,
        config: ResolvedModelConfig,
        instances: Vec<Box<dyn Engine>>,
        sender: Sender<Job>,
        pool: Arc<Pool>,
    ) -> Result<Self, ServingError> {
        let signature = instances
            .first()
            .map(|i| i.signature().clone())
            .ok_or_else(|| ServingError::NoInstance { name: name.to_owned(), message: "no instance loaded".into() })?;
        let batching = config.dynamic_batching && signature.batchable();
        // Batching needs a variable first dimension everywhere; the blueprint learns whether the model has one.
        pool.set_batching(batching);
        // Each instance was counted in the budget when it loaded.
        for instance in instances {
            pool.spawn(Some(instance))?;
        }
        Ok(Self {
            name: name.to_owned(),
            version,
            signature,
            engine,
            config,
            load_time: Duration::ZERO,
            sender: Some(sender),
            pool,
            batching,
        })
    }

    /// Model name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version number.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Inputs and outputs.
    #[must_use]
    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// The engine serving it.
    #[must_use]
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// Effective settings.
    #[must_use]
    pub fn config(&self) -> &ResolvedModelConfig {
        &self.config
    }

    /// Shows every later engine run of this version to `observer` (replacing any), or to none.
    pub fn set_observer(&self, observer: Option<Arc<dyn RunObserver>>) {
        *self.pool.observer.write() = observer;
    }

    /// Requests waiting for an instance.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::len)
    }

    /// Whether queued requests are stacked into one engine run.
    #[must_use]
    pub fn dynamic_batching(&self) -> bool {
        self.batching
    }

    /// Statistics since the model was loaded.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.pool.stats.snapshot()
    }

    /// Instances running or starting now.
    #[must_use]
    pub fn instances(&self) -> usize {
        self.pool.instances()
    }

    /// Bytes its running instances hold, as measured when each loaded.
    #[must_use]
    pub fn memory_bytes(&self) -> u64 {
        self.pool.memory_bytes()
    }

    /// One look of the autoscaler: adds or stops an instance when the load asks for it. Blocking only briefly
    /// (instances load on their own threads).
    pub fn autoscale(&self) {
        self.pool.autoscale();
    }

    /// How long loading and warm-up took.
    #[must_use]
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Validates the request against the signature, queues it for a free instance and waits for the result.
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] naming the input or output at fault, [`ServingError::Overloaded`] when the
    /// queue is full, [`ServingError::Timeout`] when the request waited past its timeout, and engine errors.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the result; the instance still runs a request it already took.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, ServingError> {
        let arrived = Instant::now();
        let result = self.infer_inner(request).await;
        self.pool.stats.request_done(result.is_ok(), arrived.elapsed());
        result
    }

    async fn infer_inner(&self, request: InferRequest) -> Result<InferResponse, ServingError> {
        let (inputs, outputs) = self.validate(request.inputs, request.outputs)?;
        let _in_flight = self.pool.enter()?;
        let (reply, result) = oneshot::channel();
        let enqueued = Instant::now();
        let deadline = request.timeout.map(|t| enqueued + t);
        let job = Job { inputs, outputs, enqueued, deadline, id: request.id, observed: request.observed, reply };
        let sender = self.sender.as_ref().ok_or_else(|| ServingError::Unloading { name: self.name.clone() })?;
        sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                ServingError::Overloaded { name: self.name.clone(), queued: self.config.max_queue_size }
            }
            TrySendError::Disconnected(_) => ServingError::Unloading { name: self.name.clone() },
        })?;
        self.pool.queued();
        let (outputs, timing, id) = result.await.map_err(|_| ServingError::Unloading { name: self.name.clone() })??;
        Ok(InferResponse { outputs, queue: timing.queue, compute: timing.compute, id })
    }

    /// Checks names, datatypes, shapes and batch size; returns the inputs in model order and the output names.
    fn validate(
        &self,
        mut given: Vec<NamedTensor>,
        outputs: Vec<String>,
    ) -> Result<(Vec<NamedTensor>, Vec<String>), ServingError> {
        let invalid = |message: String| ServingError::InvalidInput { message };
        for t in &given {
            if self.signature.input(&t.name).is_none() {
                return Err(invalid(format!(
                    "model {:?} has no input {:?}; its inputs are {:?}",
                    self.name,
                    t.name,
                    names(&self.signature.inputs)
                )));
            }
        }
        let mut ordered = Vec::with_capacity(self.signature.inputs.len());
        for spec in &self.signature.inputs {
            let ix = given.iter().position(|t| t.name == spec.name).ok_or_else(|| {
                invalid(format!(
                    "input {:?} is missing; model {:?} needs {:?}",
                    spec.name,
                    self.name,
                    names(&self.signature.inputs)
                ))
            })?;
            let t = given.swap_remove(ix);
            if given.iter().any(|other| other.name == spec.name) {
                return Err(invalid(format!("input {:?} is given more than once", spec.name)));
            }
            if t.tensor.datatype() != spec.datatype {
                return Err(invalid(format!(
                    "input {:?} must be {}, got {}",
                    spec.name,
                    spec.datatype,
                    t.tensor.datatype()
                )));
            }
            if !spec.accepts_shape(t.tensor.shape()) {
                return Err(invalid(format!(
                    "input {:?} has shape {:?} but the model expects {:?} (-1 = any size)",
                    spec.name,
                    t.tensor.shape(),
                    spec.shape
                )));
            }
            check_limits(&t, &self.config).map_err(invalid)?;
            if let (Some(max), true, Some(&batch)) =
                (self.config.max_batch_size, spec.has_dynamic_batch(), t.tensor.shape().first())
                && batch > max
            {
                return Err(invalid(format!(
                    "input {:?} has a batch of {batch}, more than max_batch_size {max}",
                    spec.name
                )));
            }
            ordered.push(t);
        }
        let outputs = if outputs.is_empty() {
            self.signature.outputs.iter().map(|o| o.name.clone()).collect()
        } else {
            for name in &outputs {
                if self.signature.output(name).is_none() {
                    return Err(invalid(format!(
                        "model {:?} has no output {name:?}; its outputs are {:?}",
                        self.name,
                        names(&self.signature.outputs)
                    )));
                }
            }
            outputs
        };
        Ok((ordered, outputs))
    }
}

/// The abuse limits a model's config sets on one input: element count, string length, non-finite values.
fn check_limits(t: &NamedTensor, config: &ResolvedModelConfig) -> Result<(), String> {
    use ferry_types::TensorData;
    if t.tensor.len() > config.max_tensor_elements {
        return Err(format!(
            "input {:?} holds {} elements, more than max_tensor_elements {}",
            t.name,
            t.tensor.len(),
            config.max_tensor_elements
        ));
    }
    match t.tensor.data() {
        TensorData::Bytes(v) => {
            if let Some((i, s)) = v.iter().enumerate().find(|(_, s)| s.len() > config.max_string_bytes) {
                return Err(format!(
                    "input {:?} element {i} is {} bytes long, more than max_string_bytes {}",
                    t.name,
                    s.len(),
                    config.max_string_bytes
                ));
            }
        }
        data if config.reject_non_finite => {
            let bad = match data {
                TensorData::Fp32(v) => v.iter().position(|x| !x.is_finite()),
                TensorData::Fp64(v) => v.iter().position(|x| !x.is_finite()),
                TensorData::Fp16(v) => v.iter().position(|x| !x.is_finite()),
                TensorData::Bf16(v) => v.iter().position(|x| !x.is_finite()),
                _ => None,
            };
            if let Some(i) = bad {
                return Err(format!(
                    "input {:?} element {i} is NaN or infinite, and this model refuses non-finite values \
                     (reject_non_finite)",
                    t.name
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // Closing the queue ends every instance thread once it finishes what it holds.
        drop(self.sender.take());
        self.pool.join_all();
    }
}

fn names(specs: &[ferry_types::TensorSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

/// One inference on inputs of zeros (variable dimensions set to 1), so that the first real request does not pay
/// for lazy initialisation, and a model that cannot run fails at load.
pub(crate) fn warm_up(engine: &mut dyn Engine) -> Result<(), String> {
    let sig = engine.signature().clone();
    let inputs = sig
        .inputs
        .iter()
        .map(|spec| {
            let shape = spec.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1)).collect();
            Tensor::zeros(spec.datatype, shape).map(|t| NamedTensor::new(&spec.name, t)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs: Vec<String> = sig.outputs.iter().map(|o| o.name.clone()).collect();
    engine.infer(&inputs, &outputs).map(drop).map_err(|e| error_chain(&e))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use ferry_engine::EngineError;
    use ferry_types::{DataType, ModelVersion, TensorData, TensorSpec};
    use parking_lot::Mutex;

    use super::*;
    use crate::EngineChoice;

    /// An engine that answers only when the test lets it, so queue states are exact rather than timed.
    struct GatedEngine {
        signature: ModelSignature,
        gate: Arc<Mutex<mpsc::Receiver<()>>>,
        started: mpsc::Sender<()>,
        runs: Arc<Mutex<Vec<usize>>>,
    }

    impl Engine for GatedEngine {
        fn signature(&self) -> &ModelSignature {
            &self.signature
        }
        fn infer(&mut self, inputs: &[NamedTensor], _: &[String]) -> Result<Vec<NamedTensor>, EngineError> {
            self.runs.lock().push(inputs[0].tensor.shape()[0]);
            let _sent = self.started.send(());
            let _opened = self.gate.lock().recv();
            if inputs[0].tensor.data() == &TensorData::Fp32(vec![-1.0]) {
                panic!("the engine blew up");
            }
            Ok(vec![NamedTensor::new("y", inputs[0].tensor.clone())])
        }
    }

    struct Gated {
        model: Arc<LoadedModel>,
        open: mpsc::Sender<()>,
        started: mpsc::Receiver<()>,
        runs: Arc<Mutex<Vec<usize>>>,
    }

    fn gated_with(config: ModelConfig) -> Gated {
        let spec = |name: &str| TensorSpec { name: name.into(), datatype: DataType::Fp32, shape: vec![-1] };
        let (open, gate) = mpsc::channel();
        let (started, started_rx) = mpsc::channel();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let engine = GatedEngine {
            signature: ModelSignature { inputs: vec![spec("x")], outputs: vec![spec("y")] },
            gate: Arc::new(Mutex::new(gate)),
            started,
            runs: runs.clone(),
        };
        let config = ModelConfig { engine: Some(EngineChoice::Tract), ..config }.resolve().expect("config");
        let source = ModelSource {
            name: ferry_types::ModelName::new("gated").expect("name"),
            version: ModelVersion::new(1).expect("version"),
            path: "gated.onnx".into(),
            bytes: None,
            config: ModelConfig::default(),
            expected_signature: None,
        };
        let (sender, pool) = LoadedModel::assemble(&source, EngineKind::Tract, &config, &EngineSettings::default());
        pool.count_loaded();
        let model = LoadedModel::start("gated", 1, EngineKind::Tract, config, vec![Box::new(engine)], sender, pool)
            .expect("start");
        Gated { model: Arc::new(model), open, started: started_rx, runs }
    }

    fn gated(queue: usize) -> (LoadedModel, mpsc::Sender<()>, mpsc::Receiver<()>) {
        let g = gated_with(ModelConfig { max_queue_size: Some(queue), ..ModelConfig::default() });
        let model = Arc::try_unwrap(g.model).expect("sole owner");
        (model, g.open, g.started)
    }

    fn rows(values: &[f32]) -> InferRequest {
        let t = Tensor::new(vec![values.len()], TensorData::Fp32(values.to_vec())).expect("tensor");
        InferRequest {
            inputs: vec![NamedTensor::new("x", t)],
            outputs: Vec::new(),
            timeout: None,
            id: None,
            observed: true,
        }
    }

    fn spawn_infer(
        model: &Arc<LoadedModel>,
        request: InferRequest,
    ) -> tokio::task::JoinHandle<Result<InferResponse, ServingError>> {
        let m = model.clone();
        tokio::spawn(async move { m.infer(request).await })
    }

    /// What one run showed: stacked input values, stacked output values, each request's rows and id.
    type Shown = (TensorData, TensorData, Vec<(usize, Option<String>)>);

    /// Records every run shown to it.
    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<Shown>>);

    impl RunObserver for Recorder {
        fn observe(&self, run: &crate::ObservedRun<'_>) {
            let requests = run.requests.iter().map(|r| (r.rows, r.id.map(str::to_owned))).collect();
            let (input, output) = (run.inputs[0].tensor.data().clone(), run.outputs[0].tensor.data().clone());
            self.0.lock().push((input, output, requests));
        }

        fn wants_ids(&self) -> bool {
            true
        }

        fn fresh_id(&self) -> String {
            "fresh".into()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_are_stacked_up_to_the_cap_and_split_back() {
        let g = gated_with(ModelConfig { max_batch_size: Some(4), ..ModelConfig::default() });
        let recorder = Arc::new(Recorder::default());
        g.model.set_observer(Some(recorder.clone()));
        let first = spawn_infer(&g.model, rows(&[0.0]));
        wait_started(&g.started).await;
        // While the instance is busy, queue requests of 1, 2, 1 and 3 rows: 1+2+1 fill the cap of 4, 3 waits.
        let mut queued = Vec::new();
        for (i, r) in [vec![1.0], vec![2.0, 2.5], vec![3.0], vec![4.0, 4.5, 4.75]].into_iter().enumerate() {
            let request = InferRequest { id: (i != 2).then(|| format!("r{i}")), ..rows(&r) };
            let id = request.id.clone().unwrap_or_else(|| "fresh".into());
            queued.push((r.clone(), Some(id), spawn_infer(&g.model, request)));
            while g.model.queue_depth() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        for _ in 0..3 {
            g.open.send(()).expect("open");
        }
        assert!(first.await.expect("task").is_ok());
        for (sent, id, task) in queued {
            let out = task.await.expect("task").expect("infer");
            // Each request gets back exactly its own rows, and its id (a fresh one when it had none).
            assert_eq!(out.outputs[0].tensor.data(), &TensorData::Fp32(sent));
            assert_eq!(out.id, id);
        }
        assert_eq!(*g.runs.lock(), vec![1, 4, 3]);
        // The observer saw each run once, stacked, with every request's share of the rows and its id.
        let id = |s: &str| Some(s.to_owned());
        let fp32 = |v: &[f32]| TensorData::Fp32(v.to_vec());
        assert_eq!(
            *recorder.0.lock(),
            vec![
                (fp32(&[0.0]), fp32(&[0.0]), vec![(1, id("fresh"))]),
                (
                    fp32(&[1.0, 2.0, 2.5, 3.0]),
                    fp32(&[1.0, 2.0, 2.5, 3.0]),
                    vec![(1, id("r0")), (2, id("r1")), (1, id("fresh"))]
                ),
                (fp32(&[4.0, 4.5, 4.75]), fp32(&[4.0, 4.5, 4.75]), vec![(3, id("r3"))]),
            ]
        );
        let stats = g.model.stats();
        assert_eq!((stats.inference_count, stats.execution_count), (8, 3));
        assert_eq!(stats.success.count, 5);
        assert_eq!(
            stats.batches.iter().map(|b| (b.batch_size, b.compute_infer.count)).collect::<Vec<_>>(),
            vec![(1, 1), (3, 1), (4, 1)]
        );
        // A request not to be observed runs unseen, without an id made for it.
        assert!(g.open.send(()).is_ok());
        let unseen = g.model.infer(InferRequest { observed: false, ..rows(&[5.0]) }).await.expect("infer");
        assert_eq!((recorder.0.lock().len(), unseen.id), (3, None));
        g.model.set_observer(None);
        assert!(g.open.send(()).is_ok());
        let alone = g.model.infer(rows(&[5.0])).await.expect("infer");
        assert_eq!((recorder.0.lock().len(), alone.id), (3, None), "no observer: nothing shown, no id made");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_waits_up_to_the_queue_delay_for_more() {
        // A long delay: the second request, sent right after the first, joins its batch.
        let g = gated_with(ModelConfig { max_queue_delay_microseconds: Some(2_000_000), ..ModelConfig::default() });
        for _ in 0..2 {
            g.open.send(()).expect("open");
        }
        let a = spawn_infer(&g.model, rows(&[1.0]));
        let b = spawn_infer(&g.model, rows(&[2.0]));
        assert!(a.await.expect("task").is_ok() && b.await.expect("task").is_ok());
        assert_eq!(*g.runs.lock(), vec![2]);
        // Alone, a request still runs once the delay passes.
        assert!(g.model.infer(rows(&[3.0])).await.is_ok());
        assert_eq!(*g.runs.lock(), vec![2, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_preferred_size_closes_the_batch_without_waiting() {
        let g = gated_with(ModelConfig {
            max_queue_delay_microseconds: Some(10_000_000),
            preferred_batch_sizes: Some(vec![2]),
            ..ModelConfig::default()
        });
        for _ in 0..2 {
            g.open.send(()).expect("open");
        }
        // Two rows in one request reach the preferred size: it runs at once, not after 10 s.
        let done = tokio::time::timeout(Duration::from_secs(5), g.model.infer(rows(&[1.0, 2.0]))).await;
        assert!(matches!(done, Ok(Ok(_))), "the batch did not close at its preferred size");
        assert_eq!(*g.runs.lock(), vec![2]);
    }

    /// Waits, without blocking the runtime, until the instance has taken a request.
    async fn wait_started(started: &mpsc::Receiver<()>) {
        while started.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn request(x: f32, timeout: Option<Duration>) -> InferRequest {
        let t = Tensor::new(vec![1], TensorData::Fp32(vec![x])).expect("tensor");
        InferRequest { inputs: vec![NamedTensor::new("x", t)], outputs: Vec::new(), timeout, id: None, observed: true }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_recovers() {
        let (model, open, started) = gated(1);
        let model = Arc::new(model);
        let busy = tokio::spawn({
            let m = model.clone();
            async move { m.infer(request(1.0, None)).await }
        });
        wait_started(&started).await;
        let queued = tokio::spawn({
            let m = model.clone();
            async move { m.infer(request(2.0, None)).await }
        });
        // Once the queue (capacity 1) holds the second request, the third is refused without waiting.
        while model.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        let refused = model.infer(request(3.0, None)).await.expect_err("the queue is full");
        assert!(matches!(refused, ServingError::Overloaded { .. }));
        assert_eq!(refused.to_string(), "model \"gated\" is overloaded: 1 requests are already waiting; retry later");
        for _ in 0..2 {
            open.send(()).expect("open");
        }
        assert!(busy.await.expect("task").is_ok());
        assert!(queued.await.expect("task").is_ok());
        open.send(()).expect("open");
        assert!(model.infer(request(4.0, None)).await.is_ok());
    }

    #[tokio::test]
    async fn a_request_that_expires_in_the_queue_is_dropped_before_compute() {
        let (model, open, started) = gated(4);
        let model = Arc::new(model);
        let busy = tokio::spawn({
            let m = model.clone();
            async move { m.infer(request(1.0, None)).await }
        });
        wait_started(&started).await;
        let expiring = tokio::spawn({
            let m = model.clone();
            async move { m.infer(request(2.0, Some(Duration::from_millis(1)))).await }
        });
        // Let the deadline pass while the instance is still busy, then release it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        open.send(()).expect("open");
        assert!(busy.await.expect("task").is_ok());
        let err = expiring.await.expect("task").expect_err("expired");
        assert!(matches!(err, ServingError::Timeout { .. }), "{err}");
        // The expired request never reached the engine: the next `started` signal is the next request's.
        assert!(started.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_engine_panic_fails_that_request_only() {
        let (model, open, _started) = gated(4);
        open.send(()).expect("open");
        let err = model.infer(request(-1.0, None)).await.expect_err("panic");
        assert_eq!(ferry_types::HasErrorKind::kind(&err), ferry_types::ErrorKind::Internal);
        open.send(()).expect("open");
        assert!(model.infer(request(1.0, None)).await.is_ok());
    }
}

#[cfg(test)]
mod limit_tests {
    use ferry_types::{NamedTensor, Tensor, TensorData};

    use super::check_limits;
    use crate::ModelConfig;

    fn fp32(values: Vec<f32>) -> NamedTensor {
        let n = values.len();
        NamedTensor::new("x", Tensor::new(vec![1, n], TensorData::Fp32(values)).expect("tensor"))
    }

    #[test]
    fn element_string_and_non_finite_limits_name_the_input() {
        let strict = ModelConfig {
            reject_non_finite: Some(true),
            max_tensor_elements: Some(4),
            max_string_bytes: Some(3),
            ..ModelConfig::default()
        }
        .resolve()
        .expect("config");
        assert!(check_limits(&fp32(vec![1.0, 2.0]), &strict).is_ok());
        let err = check_limits(&fp32(vec![1.0, f32::NAN]), &strict).expect_err("nan");
        assert!(err.contains("element 1 is NaN or infinite") && err.contains("reject_non_finite"), "{err}");
        assert!(check_limits(&fp32(vec![f32::INFINITY]), &strict).is_err());
        let err = check_limits(&fp32(vec![0.0; 5]), &strict).expect_err("elements");
        assert!(err.contains("5 elements, more than max_tensor_elements 4"), "{err}");
        let s = NamedTensor::new(
            "s",
            Tensor::new(vec![2], TensorData::Bytes(vec![b"ok".to_vec(), b"long".to_vec()])).expect("t"),
        );
        let err = check_limits(&s, &strict).expect_err("string");
        assert!(err.contains("element 1 is 4 bytes long"), "{err}");
        // By default NaN passes (many models treat it as missing), and the limits are generous.
        let lenient = ModelConfig::default().resolve().expect("defaults");
        assert!(check_limits(&fp32(vec![f32::NAN]), &lenient).is_ok());
    }
}
