//! A model version's instances while it serves: more under queue pressure, fewer when the load falls, none after an
//! idle period with `min_instances = 0` (the next request starts one: a cold start), all within a server-wide memory
//! budget that stops the least recently used idle versions' instances to make room, as KServe ModelMesh does.
//!
//! Every instance is a thread that owns its engine and takes jobs from the version's one queue, so adding one is
//! starting a thread and stopping one is telling it to leave between batches; the queue, and so the requests in
//! it, never change hands.
//!
//! Locks: the budget's before a pool's, never the other way round.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ferry_engine::{Engine, EngineOptions, error_chain};
use ferry_rollout::autoscale::{Autoscaler, Observation, ScalePolicy};
use parking_lot::Mutex;

use crate::loader::{EngineKind, EngineSettings, load_instance, signature_mismatch};
use crate::scheduler::{Batching, Job, ObserverSlot, run_instance};
use crate::stats::ModelStats;
use crate::{ModelSource, ServingError};

/// The clock every pool measures idleness and cooldowns on.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now() -> Duration {
    ORIGIN.elapsed()
}

/// One instance loads at a time, so that the growth of the resident set during a load is that load's.
static LOADS: Mutex<()> = Mutex::new(());

/// The process's resident set, from `/proc/self/status`; 0 where that file does not exist.
#[must_use]
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// What the process's Rust allocator needs to hand freed memory back to the system; set once by the binary that
/// chose the allocator (see [`set_allocator_release`]).
static ALLOCATOR_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers how the global allocator returns this thread's freed memory to the system (mimalloc's `mi_collect`,
/// say); called on an instance's thread as it ends. Later calls are ignored.
pub fn set_allocator_release(release: fn()) {
    let _first = ALLOCATOR_RELEASE.set(release);
}

/// Hands back what an ending instance thread's allocator heap keeps (the engine has been dropped on this thread).
fn release_thread_memory() {
    if let Some(release) = ALLOCATOR_RELEASE.get() {
        release();
    }
}

/// Hands memory freed by stopped instances back to the system: the engines allocate through the C library's
/// `malloc`, whose free lists would otherwise keep it, and the ended threads' Rust allocator heaps were abandoned
/// with blocks in them that other threads freed since (answers sent, inputs dropped); the allocator's forced
/// collection on this thread frees such abandoned segments and purges its arenas at once instead of at its next
/// allocation. Called after their threads are joined, so that every free has happened.
#[cfg_attr(
    all(target_os = "linux", target_env = "gnu"),
    expect(unsafe_code, reason = "malloc_trim is a C function; no safe binding exists")
)]
fn release_memory() {
    // Not during a load, whose measure of what it added would shrink by what the trim gives back.
    let _no_load_measuring = LOADS.lock();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's own arenas under their locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
    release_thread_memory();
}

/// How much memory the instances of every loaded version may take together; versions register themselves when they
/// load. Cheap to clone: clones share one budget.
#[derive(Clone, Default)]
pub struct MemoryBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Default)]
struct BudgetInner {
    limit: Option<u64>,
    pools: Mutex<Vec<Weak<Pool>>>,
    evictions: AtomicU64,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget").field("limit", &self.inner.limit).finish_non_exhaustive()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, or none.
    #[must_use]
    pub fn new(limit: Option<u64>) -> Self {
        Self { inner: Arc::new(BudgetInner { limit, ..BudgetInner::default() }) }
    }

    /// The limit in bytes, if there is one.
    #[must_use]
    pub fn limit(&self) -> Option<u64> {
        self.inner.limit
    }

    /// Bytes the running instances of every version hold, as measured when each loaded.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.live_pools(&self.inner.pools.lock()).iter().map(|p| p.memory_bytes()).sum()
    }

    /// Instances stopped to make room for others, since the server started.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    fn register(&self, pool: &Arc<Pool>) {
        let mut pools = self.inner.pools.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    fn live_pools(&self, pools: &[Weak<Pool>]) -> Vec<Arc<Pool>> {
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    /// Counts one more instance of `pool` if `wanted(instances now)` still holds, first stopping idle instances of
    /// the least recently used other versions when the budget has no room. Returns whether it counted one.
    fn admit(&self, pool: &Pool, wanted: impl Fn(usize) -> bool) -> Result<bool, ServingError> {
        let pools = self.inner.pools.lock();
        if !wanted(pool.live.load(Ordering::SeqCst)) {
            return Ok(false);
        }
        if let Err(used) = self.make_room(&pools, pool, pool.footprint()) {
            let limit = self.inner.limit.unwrap_or(0);
            return Err(ServingError::NoInstance {
                name: pool.name.clone(),
                message: format!(
                    "the memory budget of {} MiB has {} MiB taken by busy or pinned (min_instances) models and an \
                     instance needs about {} MiB",
                    limit >> 20,
                    used >> 20,
                    pool.footprint().div_ceil(1 << 20)
                ),
            });
        }
        pool.live.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// After `pool` measured what an instance really takes (the estimate before its first load is the file's
    /// size), stops idle instances of other versions until the running ones fit again, as far as they can.
    fn settle(&self, pool: &Pool) {
        let pools = self.inner.pools.lock();
        let _fits = self.make_room(&pools, pool, 0).is_ok();
    }

    /// Stops idle instances of the versions other than `pool`, least recently used first and never below their
    /// `min_instances`, until `need` more bytes fit. Errs with the bytes still in use when they cannot.
    fn make_room(&self, pools: &[Weak<Pool>], pool: &Pool, need: u64) -> Result<(), u64> {
        let Some(limit) = self.inner.limit else { return Ok(()) };
        let all = self.live_pools(pools);
        let mut used: u64 = all.iter().map(|p| p.memory_bytes()).sum();
        if used + need <= limit {
            return Ok(());
        }
        let mut idle: Vec<&Arc<Pool>> =
            all.iter().filter(|p| !std::ptr::eq(p.as_ref(), pool) && p.in_flight.load(Ordering::SeqCst) == 0).collect();
        // Stop nothing unless stopping enough is possible: a stop that does not make room only costs a cold start.
        let evictable: u64 =
            idle.iter().map(|p| p.footprint() * p.instances().saturating_sub(p.blueprint.policy.min) as u64).sum();
        if used.saturating_sub(evictable) + need > limit {
            return Err(used);
        }
        idle.sort_by_key(|p| p.last_request.load(Ordering::Relaxed));
        for victim in idle {
            while used + need > limit && victim.stop_one(victim.blueprint.policy.min) {
                used = used.saturating_sub(victim.footprint());
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                victim.stats.evicted();
                tracing::info!(model = %victim.name, version = victim.version, for_model = %pool.name,
                    "memory budget: stopped an idle instance to make room");
            }
        }
        if used + need > limit { Err(used) } else { Ok(()) }
    }
}

/// What it takes to start another instance of a version.
pub(crate) struct Blueprint {
    pub(crate) source: ModelSource,
    pub(crate) kind: EngineKind,
    pub(crate) options: EngineOptions,
    pub(crate) settings: EngineSettings,
    pub(crate) batching: Batching,
    pub(crate) policy: ScalePolicy,
}

/// A version's instances and the queue they serve.
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) version: u64,
    blueprint: Blueprint,
    /// Whether the model allows stacking requests (known once the first instance has loaded).
    batchable: AtomicBool,
    jobs: Receiver<Job>,
    pub(crate) stats: Arc<ModelStats>,
    budget: MemoryBudget,
    /// Instances running or starting that were not told to stop.
    live: AtomicUsize,
    /// Requests accepted and not yet answered.
    in_flight: AtomicUsize,
    /// When the last request arrived, on [`now`]'s clock, in milliseconds.
    last_request: AtomicU64,
    /// Bytes one instance holds: the most a load of it grew the resident set, at least the model's size.
    footprint: AtomicU64,
    /// What the instances show their runs to (monitoring).
    pub(crate) observer: ObserverSlot,
    state: Mutex<PoolState>,
}

struct Worker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct PoolState {
    running: Vec<Worker>,
    stopping: Vec<JoinHandle<()>>,
    scaler: Autoscaler,
    /// Queue-wait totals (count, nanoseconds) at the previous autoscaler look.
    waits_seen: (u64, u64),
    started: usize,
}

/// A request counted in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Pool);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// A pool with no instance yet, registered with the budget.
    pub(crate) fn new(
        name: &str,
        version: u64,
        blueprint: Blueprint,
        jobs: Receiver<Job>,
        stats: Arc<ModelStats>,
    ) -> Arc<Self> {
        let model_bytes = match &blueprint.source.bytes {
            Some(bytes) => bytes.len() as u64,
            None => std::fs::metadata(&blueprint.source.path).map_or(0, |m| m.len()),
        };
        let budget = blueprint.settings.budget.clone();
        let pool = Arc::new(Self {
            name: name.to_owned(),
            version,
            blueprint,
            batchable: AtomicBool::new(false),
            jobs,
            stats,
            budget: budget.clone(),
            live: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_request: AtomicU64::new(millis(now())),
            footprint: AtomicU64::new(model_bytes.max(1)),
            observer: ObserverSlot::default(),
            state: Mutex::new(PoolState::default()),
        });
        budget.register(&pool);
        pool
    }

    /// Says whether instances may stack requests (the configured setting and the model's signature agree).
    pub(crate) fn set_batching(&self, batchable: bool) {
        self.batchable.store(batchable, Ordering::Relaxed);
    }

    /// Instances running or starting.
    pub(crate) fn instances(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Bytes one instance holds (measured at load).
    pub(crate) fn footprint(&self) -> u64 {
        self.footprint.load(Ordering::Relaxed)
    }

    /// Bytes the running instances hold.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.footprint() * self.instances() as u64
    }

    /// Loads, checks and warms up one engine instance, measuring what it adds to the resident set.
    pub(crate) fn load_engine(&self) -> Result<Box<dyn Engine>, ServingError> {
        let b = &self.blueprint;
        let load_err =
            |message: String| ServingError::Load { name: self.name.clone(), path: b.source.path.clone(), message };
        let one_at_a_time = LOADS.lock();
        let before = resident_bytes();
        let mut engine = load_instance(b.kind, b.source.model_data(), &b.options, &b.settings)
            .map_err(|e| load_err(error_chain(&e)))?;
        if let Some(why) = b.source.expected_signature.as_ref().and_then(|d| signature_mismatch(d, engine.signature()))
        {
            return Err(load_err(format!("the package's manifest does not match the model: {why}")));
        }
        crate::model::warm_up(engine.as_mut()).map_err(|e| load_err(format!("warm-up inference failed: {e}")))?;
        self.footprint.fetch_max(resident_bytes().saturating_sub(before), Ordering::Relaxed);
        drop(one_at_a_time);
        self.budget.settle(self);
        Ok(engine)
    }

    /// Counts one more instance within the budget and loads its engine, for the caller to [`Pool::spawn`] (at the
    /// version's load).
    pub(crate) fn admit_and_load(&self) -> Result<Box<dyn Engine>, ServingError> {
        self.budget.admit(self, |_| true)?;
        self.load_engine().inspect_err(|_| {
            self.live.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Counts an instance a test built by hand.
    #[cfg(test)]
    pub(crate) fn count_loaded(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts an instance thread, with `engine` or loading its own; the caller has counted it in `live`.
    pub(crate) fn spawn(self: &Arc<Self>, engine: Option<Box<dyn Engine>>) -> Result<(), ServingError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = self.state.lock();
        let index = state.started;
        let (pool, flag) = (self.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ferry-{}-{}-{index}", self.name, self.version))
            .spawn(move || pool.instance_main(&flag, engine));
        match spawned {
            Ok(handle) => {
                state.started += 1;
                state.running.push(Worker { stop, handle });
                Ok(())
            }
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                let message = format!("cannot start an instance thread: {e}");
                if self.instances() == 0 {
                    self.fail_queued(&message);
                }
                Err(ServingError::NoInstance { name: self.name.clone(), message })
            }
        }
    }

    fn instance_main(self: Arc<Self>, stop: &AtomicBool, engine: Option<Box<dyn Engine>>) {
        let served = catch_unwind(AssertUnwindSafe(|| self.serve(stop, engine)));
        let failure = match served {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("an instance thread panicked".to_owned()),
        };
        if let Some(message) = failure {
            tracing::error!(model = %self.name, version = self.version, error = %message, "an instance stopped");
            // Counted no more; if it was the last, nobody else will serve what waits.
            self.retire_self(stop);
            if self.instances() == 0 {
                self.fail_queued(&message);
            }
        }
        // The engine is dropped by now; give back what this thread's heap kept of it.
        release_thread_memory();
    }

    /// An instance's life: load its engine unless it was handed one, then serve until told to stop.
    fn serve(&self, stop: &AtomicBool, engine: Option<Box<dyn Engine>>) -> Result<(), ServingError> {
        let engine = match engine {
            Some(engine) => engine,
            None => {
                let started = Instant::now();
                let engine = self.load_engine()?;
                self.stats.instance_started(started.elapsed());
                engine
            }
        };
        let stop_now = || stop.load(Ordering::SeqCst) && (self.jobs.is_empty() || self.live.load(Ordering::SeqCst) > 0);
        let mut batching = self.blueprint.batching.clone();
        batching.enabled &= self.batchable.load(Ordering::Relaxed);
        run_instance(&self.name, engine, &self.jobs, &batching, &self.stats, &self.observer, &stop_now);
        Ok(())
    }

    /// Moves the worker that owns `stop` from running to stopping, after it failed to start.
    fn retire_self(&self, stop: &AtomicBool) {
        let mut state = self.state.lock();
        if let Some(i) = state.running.iter().position(|w| std::ptr::eq(w.stop.as_ref(), stop)) {
            let worker = state.running.swap_remove(i);
            state.stopping.push(worker.handle);
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Answers every queued request with `message`, when no instance is left to serve them.
    fn fail_queued(&self, message: &str) {
        while let Ok(job) = self.jobs.try_recv() {
            let _gone =
                job.reply.send(Err(ServingError::NoInstance { name: self.name.clone(), message: message.to_owned() }));
        }
    }

    /// Tells the newest instance to stop if more than `keep` run; it leaves after its current batch. Returns whether
    /// one was told.
    fn stop_one(&self, keep: usize) -> bool {
        let mut state = self.state.lock();
        if self.live.load(Ordering::SeqCst) <= keep {
            return false;
        }
        let Some(worker) = state.running.pop() else { return false };
        // Uncounted before told: a request that still saw it counted finds it serving the queue (the thread leaves
        // only once the queue is empty or another instance counts), and one that sees it uncounted starts another.
        self.live.fetch_sub(1, Ordering::SeqCst);
        worker.stop.store(true, Ordering::SeqCst);
        state.stopping.push(worker.handle);
        state.scaler.changed(now());
        true
    }

    /// Counts a request in flight and notes its arrival; when no instance runs, starts one (a cold start) before the
    /// request is queued.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<InFlight<'_>, ServingError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        self.last_request.store(millis(now()), Ordering::Relaxed);
        self.ensure_running()?;
        Ok(guard)
    }

    /// After queueing: the last instance may have been told to stop between [`Pool::enter`] and the queueing (it
    /// then finishes the queue, but a request queued after it left would wait forever), so start one again.
    pub(crate) fn queued(self: &Arc<Self>) {
        if let Err(e) = self.ensure_running() {
            self.fail_queued(&e.to_string());
        }
    }

    fn ensure_running(self: &Arc<Self>) -> Result<(), ServingError> {
        if self.instances() > 0 {
            return Ok(());
        }
        if self.budget.admit(self, |live| live == 0)? {
            self.stats.cold_start();
            self.state.lock().scaler.changed(now());
            tracing::info!(model = %self.name, version = self.version, "cold start: starting an instance");
            self.spawn(None)?;
        }
        Ok(())
    }

    /// One look of the autoscaler: observe, decide, act. Also joins instances that have stopped.
    pub(crate) fn autoscale(self: &Arc<Self>) {
        let finished: Vec<JoinHandle<()>> = {
            let mut state = self.state.lock();
            let (done, waiting): (Vec<_>, Vec<_>) = state.stopping.drain(..).partition(JoinHandle::is_finished);
            state.stopping = waiting;
            done
        };
        if !finished.is_empty() {
            for handle in finished {
                if handle.join().is_err() {
                    tracing::error!(model = %self.name, "an instance thread panicked");
                }
            }
            release_memory();
        }
        let target = {
            let mut state = self.state.lock();
            let waits = self.stats.queue_totals();
            let (count, nanos) = (waits.0 - state.waits_seen.0, waits.1 - state.waits_seen.1);
            state.waits_seen = waits;
            let at = now();
            let seen = Observation {
                at,
                instances: self.instances(),
                queue_depth: self.jobs.len(),
                mean_wait: (count > 0).then(|| Duration::from_nanos(nanos / count)),
                in_flight: self.in_flight.load(Ordering::SeqCst),
                idle_for: at.saturating_sub(Duration::from_millis(self.last_request.load(Ordering::Relaxed))),
            };
            state.scaler.decide(&self.blueprint.policy, &seen).map(|to| (seen.instances, to))
        };
        let Some((from, to)) = target else { return };
        if to > from {
            for _ in from..to {
                match self.budget.admit(self, |live| live < to) {
                    Ok(true) => {
                        if self.spawn(None).is_err() {
                            break;
                        }
                        self.stats.scaled(true);
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(model = %self.name, version = self.version, error = %e, "cannot scale up");
                        break;
                    }
                }
            }
        } else {
            while self.instances() > to && self.stop_one(to) {
                self.stats.scaled(false);
            }
        }
        tracing::info!(model = %self.name, version = self.version, from, to = self.instances(), "instances scaled");
    }

    /// Stops every instance and waits for them (the version is being dropped; its queue is closed).
    pub(crate) fn join_all(&self) {
        let handles: Vec<JoinHandle<()>> = {
            let mut state = self.state.lock();
            let running: Vec<JoinHandle<()>> = state.running.drain(..).map(|w| w.handle).collect();
            running.into_iter().chain(state.stopping.drain(..)).collect()
        };
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!(model = %self.name, "an instance thread panicked");
            }
        }
        release_memory();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
