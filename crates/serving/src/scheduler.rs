//! An instance's thread: takes requests from the model's queue, stacks compatible ones into one engine run
//! (dynamic batching), runs it, and splits the outputs back to each request.
//!
//! Batching is greedy by default: whatever is already queued when an instance becomes free is run together, which
//! adds no latency when the server is idle and forms batches by itself under load. `max_queue_delay` lets a batch
//! wait for more; a preferred size or the row cap closes it early.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use ferry_engine::{Engine, EngineError};
use ferry_types::{NamedTensor, Tensor};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::ServingError;
use crate::stats::ModelStats;

/// What a model's runs are shown to (monitoring): called on the instance's thread right after each successful engine
/// run, before its requests are answered, with the run's inputs and outputs and each request's share of the rows.
/// Copying there costs one lock and one copy per run, where copying on the async threads cost them per request; the
/// next run waits for it, so it must be quick and must never block.
pub trait RunObserver: Send + Sync {
    /// One engine run: `inputs` in model order, `outputs` as the requests asked for them, both stacked over
    /// `requests` in order.
    fn observe(&self, run: &ObservedRun<'_>);

    /// Whether requests need ids (predictions kept under them): a request without one (or with an empty one) is then
    /// given [`Self::fresh_id`] before its run, and its response returns it.
    fn wants_ids(&self) -> bool;

    /// A new unique request id.
    fn fresh_id(&self) -> String;
}

/// One engine run, as a [`RunObserver`] sees it.
#[derive(Debug)]
pub struct ObservedRun<'a> {
    /// Inputs in model order, the requests' rows stacked in order.
    pub inputs: &'a [NamedTensor],
    /// Outputs in the order asked for, stacked the same way.
    pub outputs: &'a [NamedTensor],
    /// The requests whose rows these are, in order.
    pub requests: &'a [ObservedRequest<'a>],
}

/// One request's part of an [`ObservedRun`].
#[derive(Debug, Clone, Copy)]
pub struct ObservedRequest<'a> {
    /// Its rows (along the first dimension).
    pub rows: usize,
    /// Its id, when it has one ([`crate::InferRequest::id`]).
    pub id: Option<&'a str>,
}

/// Where an instance finds its model's observer: set and cleared while it serves.
pub(crate) type ObserverSlot = RwLock<Option<std::sync::Arc<dyn RunObserver>>>;

/// Gives the jobs without an id a fresh one, when the observer wants ids.
fn settle_ids(observer: &ObserverSlot, jobs: &mut [Job]) {
    let missing = |job: &Job| job.observed && job.id.as_ref().is_none_or(String::is_empty);
    if !jobs.iter().any(missing) {
        return;
    }
    if let Some(observer) = observer.read().as_deref().filter(|o| o.wants_ids()) {
        for job in jobs.iter_mut().filter(|job| missing(job)) {
            job.id = Some(observer.fresh_id());
        }
    }
}

/// Shows a run to the observer, if any; a panic in it is logged and the run's answers go out regardless.
fn show(observer: &ObserverSlot, name: &str, run: &ObservedRun<'_>) {
    if let Some(observer) = observer.read().as_deref()
        && catch_unwind(AssertUnwindSafe(|| observer.observe(run))).is_err()
    {
        tracing::error!(model = name, "the run observer panicked; the run is not monitored");
    }
}

/// One validated request waiting for an instance.
pub(crate) struct Job {
    /// Inputs in model order.
    pub(crate) inputs: Vec<NamedTensor>,
    /// Outputs wanted.
    pub(crate) outputs: Vec<String>,
    /// When it was queued.
    pub(crate) enqueued: Instant,
    /// When it stops being worth running.
    pub(crate) deadline: Option<Instant>,
    /// The request's id, shown to the observer and handed back with the answer.
    pub(crate) id: Option<String>,
    /// Whether its run is shown to the observer ([`crate::InferRequest::observed`]).
    pub(crate) observed: bool,
    /// Where the answer goes.
    pub(crate) reply: oneshot::Sender<Result<Answer, ServingError>>,
}

/// A request's outputs, where its time went, and its id back.
pub(crate) type Answer = (Vec<NamedTensor>, Timing, Option<String>);

/// Where one request's time went in the instance thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Queued until its batch started.
    pub(crate) queue: Duration,
    /// From its batch's start to its answer.
    pub(crate) compute: Duration,
}

impl Job {
    /// Rows along the batch dimension.
    fn rows(&self) -> usize {
        self.inputs.first().and_then(|t| t.tensor.shape().first().copied()).unwrap_or(0)
    }

    /// Whether `other` can be stacked with this one: same outputs, same non-batch dimensions for every input, and both
    /// shown to the observer or neither.
    fn stacks_with(&self, other: &Self) -> bool {
        self.outputs == other.outputs
            && self.observed == other.observed
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                let (a, b) = (a.tensor.shape(), b.tensor.shape());
                a.len() == b.len() && a.get(1..) == b.get(1..)
            })
    }
}

/// How an instance forms batches.
#[derive(Debug, Clone)]
pub(crate) struct Batching {
    /// Off for models without a variable first dimension everywhere, or when configured off.
    pub(crate) enabled: bool,
    /// Most rows in one run.
    pub(crate) cap: usize,
    /// How long to wait for more once a batch has started.
    pub(crate) delay: Duration,
    /// Sizes that close a batch at once.
    pub(crate) preferred: Vec<usize>,
}

/// How often an idle instance checks whether it was told to stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Serves jobs until the queue closes, or until `stop_now` says so between batches (the autoscaler or the memory
/// budget stopping this instance).
pub(crate) fn run_instance(
    name: &str,
    mut engine: Box<dyn Engine>,
    jobs: &Receiver<Job>,
    batching: &Batching,
    stats: &ModelStats,
    observer: &ObserverSlot,
    stop_now: &dyn Fn() -> bool,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None if stop_now() => return,
            None => match jobs.recv_timeout(STOP_CHECK) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        let mut batch = vec![first];
        if batching.enabled {
            let close_at = batch[0].enqueued + batching.delay;
            let mut rows = batch[0].rows();
            while rows < batching.cap && !batching.preferred.contains(&rows) {
                let next = match jobs.try_recv() {
                    Ok(job) => Some(job),
                    Err(TryRecvError::Empty) if !batching.delay.is_zero() => jobs.recv_deadline(close_at).ok(),
                    Err(_) => None,
                };
                let Some(job) = next else { break };
                if rows + job.rows() <= batching.cap && batch[0].stacks_with(&job) {
                    rows += job.rows();
                    batch.push(job);
                } else {
                    carried = Some(job);
                    break;
                }
            }
        }
        execute(name, engine.as_mut(), batch, stats, observer);
    }
}

/// Runs one engine call, turning a panic into an error so one bad request never takes an instance down.
fn guarded_infer(
    engine: &mut dyn Engine,
    inputs: &[NamedTensor],
    outputs: &[String],
) -> Result<Vec<NamedTensor>, EngineError> {
    catch_unwind(AssertUnwindSafe(|| engine.infer(inputs, outputs))).unwrap_or_else(|_| {
        Err(EngineError::Inference { engine: "engine", source: "the engine panicked on this request".into() })
    })
}

fn execute(name: &str, engine: &mut dyn Engine, batch: Vec<Job>, stats: &ModelStats, observer: &ObserverSlot) {
    let start = Instant::now();
    let mut live: Vec<Job> = batch
        .into_iter()
        .filter_map(|job| {
            stats.queued(start.duration_since(job.enqueued));
            if job.deadline.is_some_and(|d| start >= d) {
                let waited_ms = start.duration_since(job.enqueued).as_millis();
                let _gone = job.reply.send(Err(ServingError::Timeout { name: name.to_owned(), waited_ms }));
                return None;
            }
            // A caller that went away is not worth the compute.
            (!job.reply.is_closed()).then_some(job)
        })
        .collect();
    settle_ids(observer, &mut live);
    match live.len() {
        0 => {}
        1 => live.into_iter().for_each(|job| run_alone(name, engine, job, stats, observer)),
        _ => run_stacked(name, engine, live, stats, observer),
    }
}

fn run_alone(name: &str, engine: &mut dyn Engine, job: Job, stats: &ModelStats, observer: &ObserverSlot) {
    let started = Instant::now();
    let result = guarded_infer(engine, &job.inputs, &job.outputs);
    if let Ok(outputs) = &result {
        stats.executed(1, job.rows() as u64, Duration::ZERO, started.elapsed(), Duration::ZERO);
        if job.observed {
            let requests = [ObservedRequest { rows: job.rows(), id: job.id.as_deref() }];
            show(observer, name, &ObservedRun { inputs: &job.inputs, outputs, requests: &requests });
        }
    }
    let timing = Timing { queue: started.duration_since(job.enqueued), compute: started.elapsed() };
    let id = job.id;
    let _gone = job
        .reply
        .send(result.map(|o| (o, timing, id)).map_err(|source| ServingError::Engine { name: name.to_owned(), source }));
}

/// Stacks the jobs' inputs, runs once and splits the outputs back. Anything unexpected (an engine error, outputs
/// without the stacked rows) falls back to running each job alone, so one bad request only fails itself.
fn run_stacked(name: &str, engine: &mut dyn Engine, jobs: Vec<Job>, stats: &ModelStats, observer: &ObserverSlot) {
    let t0 = Instant::now();
    let rows: Vec<usize> = jobs.iter().map(Job::rows).collect();
    let total: usize = rows.iter().sum();
    let stacked: Option<Vec<NamedTensor>> = (0..jobs[0].inputs.len())
        .map(|i| {
            let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[i].tensor).collect();
            Tensor::concat(&parts).ok().map(|t| NamedTensor::new(&jobs[0].inputs[i].name, t))
        })
        .collect();
    let t1 = Instant::now();
    let split = stacked.and_then(|inputs| {
        let outputs = guarded_infer(engine, &inputs, &jobs[0].outputs).ok()?;
        let t2 = Instant::now();
        let per_output: Vec<Vec<Tensor>> =
            outputs.iter().map(|o| o.tensor.split_rows(&rows)).collect::<Result<_, _>>().ok()?;
        Some((inputs, outputs, per_output, t2))
    });
    let Some((inputs, outputs, mut per_output, t2)) = split else {
        for job in jobs {
            run_alone(name, engine, job, stats, observer);
        }
        return;
    };
    if jobs[0].observed {
        let requests: Vec<ObservedRequest<'_>> =
            jobs.iter().zip(&rows).map(|(job, &rows)| ObservedRequest { rows, id: job.id.as_deref() }).collect();
        show(observer, name, &ObservedRun { inputs: &inputs, outputs: &outputs, requests: &requests });
    }
    for (k, job) in jobs.into_iter().enumerate().rev() {
        let mine = outputs
            .iter()
            .zip(per_output.iter_mut())
            .map(|(o, parts)| NamedTensor::new(&o.name, parts.swap_remove(k)))
            .collect();
        let timing = Timing { queue: t0.duration_since(job.enqueued), compute: t0.elapsed() };
        let _gone = job.reply.send(Ok((mine, timing, job.id)));
    }
    stats.executed(rows.len() as u64, total as u64, t1 - t0, t2 - t1, t2.elapsed());
}
