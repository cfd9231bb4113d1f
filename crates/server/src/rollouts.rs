//! Canary rollouts, driven by the server: a candidate takes a growing share of a model's traffic through its
//! deployment, and at the end of every interval `ferry_rollout::canary` judges it against the primary on what this
//! replica counted since the step began (the experiment of the deployment's revision). A harmful candidate is
//! rolled back at once (the deployment is removed, the serving alias's version takes all traffic, an alert fires);
//! a healthy one advances, and after the last step below 100% it is promoted (the serving alias moves to it).
//!
//! The state lives in the registry, so a restart or another replica carries the rollout on; every transition is an
//! event of the model and is audited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_rollout::canary::{ArmStats, Canary, CanaryConfig, Judgement, Observation, Phase};
use ferry_rollout::{DeploymentSpec, VariantSpec};
use ferry_types::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::deploy::{AliasMove, RegistryContext};
use crate::performance::ArmTotals;
use crate::{ApiError, AppState};

/// How often the controller looks for rollouts due a judgement.
pub const TICK: Duration = Duration::from_millis(200);

/// A rollout as stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    /// Model name.
    pub model: String,
    /// The version serving before (the serving alias's).
    pub primary: u64,
    /// The version rolled out.
    pub candidate: u64,
    /// Length of an interval, milliseconds.
    pub interval_ms: u64,
    /// When the next judgement is due (Unix milliseconds).
    pub next_judgement_ms: i64,
    /// When it started.
    pub started_at_ms: i64,
    /// The deployment revision of the current step: counts of another revision are not this step's.
    #[serde(default)]
    pub revision: u64,
    /// The state machine.
    #[schema(value_type = Object)]
    pub canary: Canary,
    /// Every judgement and manual action, oldest first (at most the last 200).
    pub history: Vec<Step>,
    /// For an ended rollout: whether its end has been applied (the serving alias moved on promotion, the deployment
    /// removed). An end is stored before it is applied, so that one interrupted half-way (a failed registry write,
    /// a crash) is applied again by the next tick of any replica instead of being judged again.
    #[serde(default = "applied_before_this_field")]
    pub applied: bool,
    /// While a replica judges an interval: until when its claim holds (Unix milliseconds; 0 when none). A person's
    /// action on any replica waits for it, so that a judgement and an action never interleave.
    #[serde(default)]
    pub judging_until_ms: i64,
    /// The candidate's counts over the whole fleet at the last judgement of this step, with the step's deployment
    /// revision: the next judgement's guards see only the interval since. Stored, so that whichever replica judges
    /// next (or this one after a restart) knows it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub interval_mark: Option<(u64, ArmTotals)>,
}

/// How long a judgement's claim holds at most (a judgement takes milliseconds; a stalled registry must not lock a
/// rollout for ever).
const JUDGING_LEASE_MS: i64 = 30_000;

/// Rollouts stored before `applied` existed were applied as they ended.
fn applied_before_this_field() -> bool {
    true
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who: `ferry` for the judge, else the key that acted.
    pub actor: String,
    /// The judgement (a manual action's has no metrics).
    pub judgement: Judgement,
}

/// What starts a rollout.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The candidate: an alias or a version number.
    pub candidate: String,
    /// The candidate's share at each step, in percent, ending at 100 (default 5, 25, 50, 100).
    #[serde(default)]
    pub steps: Option<Vec<f64>>,
    /// Length of an interval (`10m`, `30s`; default 1m, at least 100ms).
    #[serde(default)]
    pub interval: Option<String>,
    /// Failed guard checks that roll back (default 5).
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Guard: highest candidate error share in an interval.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Guard: highest candidate p99 latency in an interval, milliseconds.
    #[serde(default)]
    pub max_latency_p99_ms: Option<f64>,
    /// Harm allowed in error share (default 0.005).
    #[serde(default)]
    pub error_tolerance: Option<f64>,
    /// Harm allowed in latency, as a ratio (default 0.1).
    #[serde(default)]
    pub latency_tolerance: Option<f64>,
    /// Requests each arm needs in a step before the comparison counts (default 100).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// Intervals a step may stay inconclusive before pausing (default 10).
    #[serde(default)]
    pub max_step_intervals: Option<u32>,
    /// Harm allowed in the feedback loss: misclassified share for a classifier (default 0.01), or mean absolute
    /// error as a ratio of the primary's for a regressor.
    #[serde(default)]
    pub quality_tolerance: Option<f64>,
    /// Rows with ground truth each arm needs in a step before their quality is compared (default 50).
    #[serde(default)]
    pub min_labelled: Option<u64>,
    /// Prediction drift allowed either way, when the model's predictions are tallied: a predicted class's share
    /// (default 0.1), or a regressor's mean prediction in standard deviations of the primary's.
    #[serde(default)]
    pub drift_tolerance: Option<f64>,
}

/// The judge: this replica's id among those publishing their counts, when it last published each model's, and one
/// lock per model so that a person's action and a judgement never interleave on this replica (across replicas the
/// judging claim does that).
#[derive(Debug)]
pub struct Controller {
    /// Fresh per process: a replica that restarts publishes under a new id, and its old counts still count.
    replica: String,
    /// Per model: when this replica last published its counts, and what it wrote.
    published: parking_lot::Mutex<HashMap<String, Published>>,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// When a replica last published a model's counts, and what: (revision, since, rows).
type Published = (std::time::Instant, (u64, i64, Vec<(u64, String)>));

impl Default for Controller {
    fn default() -> Self {
        Self {
            replica: crate::quality::fresh_request_id(),
            published: parking_lot::Mutex::default(),
            locks: parking_lot::Mutex::default(),
        }
    }
}

/// The whole fleet's counts of one deployment revision.
#[derive(Debug, Default)]
pub struct FleetCounts {
    /// Per version, every replica's counts summed.
    pub arms: HashMap<u64, ArmTotals>,
    /// Since when the earliest replica counted (Unix milliseconds), when any did.
    pub since_ms: Option<i64>,
    /// How many replicas published counts.
    pub replicas: usize,
}

/// How often a replica publishes its counts of an experiment or a running rollout (and always just before it judges
/// one, or a reader asks).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl Controller {
    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(name.to_owned()).or_default().clone()
    }
}

/// `now` plus `ms`, saturating (an interval is at most 30 days, but stored states are not trusted).
fn after(now: i64, ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidInput, message)
}

fn arm(t: &ArmTotals) -> ArmStats {
    let (sum, sq) = t.log_latency_sums();
    ArmStats {
        requests: t.requests,
        // For a canary a refusal counts: both arms get the same clients, so a version refusing what the other
        // answers is what differs.
        errors: t.errors + t.rejected,
        log_latency_sum: sum,
        log_latency_sq_sum: sq,
        answered: t.answered,
        latency_p99: t.quantile(0.99),
        ..ArmStats::default()
    }
}

impl Rollout {
    fn state_text(&self) -> Result<String, ApiError> {
        serde_json::to_string(self).map_err(|e| ApiError::new(ErrorKind::Internal, format!("rollout to JSON: {e}")))
    }

    fn record(&mut self, actor: &str, judgement: Judgement) {
        self.history.push(Step { at_ms: crate::quality::now_ms(), actor: actor.to_owned(), judgement });
        if self.history.len() > 200 {
            self.history.remove(0);
        }
    }

    /// The deployment for the candidate's current share.
    fn deployment(&self) -> DeploymentSpec {
        let w = f64::from(self.canary.weight_bp()) / 100.0;
        DeploymentSpec {
            variants: vec![
                VariantSpec { target: self.primary.to_string(), weight: 100.0 - w },
                VariantSpec { target: self.candidate.to_string(), weight: w },
            ],
            sticky_header: None,
            shadow: None,
        }
    }
}

/// Reads `name`'s rollout.
///
/// # Errors
/// 404 when it has none; registry errors.
pub async fn load(ctx: &RegistryContext, name: &str) -> Result<Rollout, ApiError> {
    let text = ctx
        .registry
        .rollout(name)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("model {name:?} has no rollout")))?;
    serde_json::from_str(&text)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored rollout of {name:?}: {e}")))
}

/// Starts rolling `request.candidate` out over `name`'s serving version.
///
/// # Errors
/// 400 for a bad request, 404 for an unknown model or candidate, 409 when a rollout is running or a deployment
/// exists; load errors of the candidate.
pub async fn start(state: &AppState, name: &str, request: &StartRollout, actor: &str) -> Result<Rollout, ApiError> {
    let ctx = state.registry_context().ok_or_else(|| bad("rollouts need the registry"))?.clone();
    let previous = ctx.registry.rollout_record(name).await?;
    if let Some((text, _)) = &previous
        && let Ok(r) = serde_json::from_str::<Rollout>(text)
        && matches!(r.canary.phase, Phase::Progressing | Phase::Paused)
    {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("a rollout of {name:?} is {:?}; abort it first", r.canary.phase),
        ));
    }
    if ctx.registry.deployment(name).await?.is_some() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("model {name:?} has a deployment; a rollout makes its own (delete it first)"),
        ));
    }
    let aliases = ctx.registry.aliases_of(name).await?;
    let primary = *aliases
        .get(&ctx.serve_alias)
        .ok_or_else(|| bad(format!("model {name:?} has no {} alias to roll out from", ctx.serve_alias)))?;
    let candidate = match aliases.get(&request.candidate) {
        Some(&v) => v,
        None => request.candidate.trim_start_matches('v').parse::<u64>().map_err(|_| {
            bad(format!("candidate {:?} is neither an alias of {name:?} nor a version number", request.candidate))
        })?,
    };
    ctx.registry.resolve(name, &ferry_registry::Selector::Version(candidate)).await?;
    if candidate == primary {
        return Err(bad(format!("version {candidate} already serves {name:?}")));
    }
    let steps_bp = match &request.steps {
        None => CanaryConfig::default().steps_bp,
        Some(steps) => steps
            .iter()
            .map(|p| {
                let bp = p * 100.0;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                (p.is_finite() && *p > 0.0 && *p <= 100.0 && (bp - bp.round()).abs() < 1e-6)
                    .then(|| bp.round() as u32)
                    .ok_or_else(|| bad(format!("step {p} is not a percentage above 0 with at most two decimals")))
            })
            .collect::<Result<_, _>>()?,
    };
    let interval = match &request.interval {
        None => Duration::from_secs(60),
        Some(text) => humantime::parse_duration(text).map_err(|e| bad(format!("interval {text:?}: {e}")))?,
    };
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(30 * 86_400) {
        return Err(bad("the interval must be between 100ms and 30 days"));
    }
    let defaults = CanaryConfig::default();
    let config = CanaryConfig {
        steps_bp,
        threshold: request.threshold.unwrap_or(defaults.threshold),
        max_error_rate: request.max_error_rate,
        max_latency_p99: request.max_latency_p99_ms.map(|ms| ms / 1000.0),
        error_tolerance: request.error_tolerance.unwrap_or(defaults.error_tolerance),
        latency_tolerance: request.latency_tolerance.unwrap_or(defaults.latency_tolerance),
        min_requests: request.min_requests.unwrap_or(defaults.min_requests),
        max_step_intervals: request.max_step_intervals.unwrap_or(defaults.max_step_intervals),
        quality_tolerance: request.quality_tolerance.unwrap_or(defaults.quality_tolerance),
        min_labelled: request.min_labelled.unwrap_or(defaults.min_labelled),
        drift_tolerance: request.drift_tolerance.unwrap_or(defaults.drift_tolerance),
        ..defaults
    };
    let canary = Canary::start(config).map_err(bad)?;
    let now = crate::quality::now_ms();
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    let mut rollout = Rollout {
        model: name.to_owned(),
        primary,
        candidate,
        interval_ms,
        next_judgement_ms: after(now, interval_ms),
        started_at_ms: now,
        revision: 0,
        canary,
        history: Vec::new(),
        applied: false,
        judging_until_ms: 0,
        interval_mark: None,
    };
    // Claim the model first: of two starts racing, on this replica or another, one wins and the other gets 409.
    let claimed =
        ctx.registry.store_rollout_if(name, previous.map(|(_, at)| at), &rollout.state_text()?, "", actor).await?;
    if !claimed {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("another rollout of {name:?} started at the same time; see GET …/rollout"),
        ));
    }
    match ctx.set_deployment(state, name, &rollout.deployment(), actor).await {
        Ok(record) => rollout.revision = record.revision,
        Err(e) => {
            // The rollout never ran: end it, saying why, so that the claim does not block the next start.
            rollout.canary.phase = Phase::RolledBack;
            let why = format!("not started: the deployment could not be made: {}", e.message());
            rollout.record(actor, manual("abort", &why, &rollout.canary));
            ctx.registry.set_rollout(name, &rollout.state_text()?, &why, actor).await?;
            return Err(e);
        }
    }
    let w = f64::from(rollout.canary.weight_bp()) / 100.0;
    let detail = format!("started: version {candidate} at {w}% beside version {primary}");
    rollout.record(actor, manual("start", &detail, &rollout.canary));
    ctx.registry.set_rollout(name, &rollout.state_text()?, &detail, actor).await?;
    Ok(rollout)
}

fn manual(action: &str, reason: &str, canary: &Canary) -> Judgement {
    Judgement {
        action: action.to_owned(),
        reason: reason.to_owned(),
        weight_bp: canary.weight_bp(),
        failed_checks: canary.failed_checks,
        metrics: Vec::new(),
    }
}

/// A person's action on a running rollout: `pause`, `resume`, `promote` or `abort`.
///
/// # Errors
/// 400 for an unknown action, 404 without a rollout, 409 when the rollout has ended.
pub async fn act(state: &AppState, name: &str, action: &str, actor: &str) -> Result<Rollout, ApiError> {
    let ctx = state.registry_context().ok_or_else(|| bad("rollouts need the registry"))?.clone();
    let lock = ctx.rollouts.lock_for(name);
    let _one_at_a_time = lock.lock().await;
    let (text, seen) = ctx
        .registry
        .rollout_record(name)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("model {name:?} has no rollout")))?;
    let mut rollout: Rollout = serde_json::from_str(&text)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored rollout of {name:?}: {e}")))?;
    let busy = || {
        ApiError::new(
            ErrorKind::Conflict,
            format!("a replica is judging the rollout of {name:?} right now; retry in a moment"),
        )
    };
    if rollout.judging_until_ms > crate::quality::now_ms() {
        return Err(busy());
    }
    let phase = rollout.canary.phase;
    if matches!(phase, Phase::Promoted | Phase::RolledBack) {
        return Err(ApiError::new(ErrorKind::Conflict, format!("the rollout of {name:?} has ended ({phase:?})")));
    }
    match action {
        "pause" => rollout.canary.phase = Phase::Paused,
        "resume" => {
            rollout.canary.phase = Phase::Progressing;
            rollout.canary.intervals_in_step = 0;
            rollout.next_judgement_ms = after(crate::quality::now_ms(), rollout.interval_ms);
        }
        "promote" => rollout.canary.phase = Phase::Promoted,
        "abort" => rollout.canary.phase = Phase::RolledBack,
        other => return Err(bad(format!("{other:?} is not a rollout action (pause, resume, promote, abort)"))),
    }
    let detail = format!("{action} by hand at {}%", f64::from(rollout.canary.weight_bp()) / 100.0);
    rollout.record(actor, manual(action, &detail, &rollout.canary));
    // Only over the state as read: a replica that claimed a judgement since then wins, and the person retries.
    if !ctx.registry.store_rollout_if(name, Some(seen), &rollout.state_text()?, &detail, actor).await? {
        return Err(busy());
    }
    if matches!(rollout.canary.phase, Phase::Promoted | Phase::RolledBack) {
        apply_end(state, &ctx, &mut rollout, actor).await?;
    }
    Ok(rollout)
}

/// Applies a stored end (see [`Rollout::applied`]) and records that it is applied.
async fn apply_end(
    state: &AppState,
    ctx: &Arc<RegistryContext>,
    rollout: &mut Rollout,
    actor: &str,
) -> Result<(), ApiError> {
    finish(state, ctx, rollout, actor).await?;
    rollout.applied = true;
    ctx.registry.set_rollout(&rollout.model, &rollout.state_text()?, "", actor).await?;
    Ok(())
}

/// Applies an ended rollout: promotion moves the serving alias to the candidate, a rollback leaves it; either way
/// the rollout's deployment goes. Idempotent, so that an interrupted end can be applied again.
async fn finish(state: &AppState, ctx: &Arc<RegistryContext>, rollout: &Rollout, actor: &str) -> Result<(), ApiError> {
    let name = rollout.model.as_str();
    if rollout.canary.phase == Phase::Promoted {
        let alias = ctx.serve_alias.clone();
        let update = ferry_registry::AliasUpdate::Always;
        let request = AliasMove { name, alias: &alias, version: rollout.candidate, update, actor, wait: true };
        ctx.move_alias(state, request).await?;
    }
    match ctx.delete_deployment(state, name, actor).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Controller {
    /// Judges every rollout whose interval has ended, and publishes this replica's counts of every experiment. Errors
    /// are logged; the rollout is judged again next tick.
    pub async fn tick(&self, state: &AppState) {
        let Some(ctx) = state.registry_context().cloned() else { return };
        let all = match ctx.registry.rollouts().await {
            Ok(all) => all,
            Err(e) => {
                // The experiments' counts below are still published.
                tracing::warn!(error = %e, "could not read the rollouts");
                Vec::new()
            }
        };
        let now = crate::quality::now_ms();
        for (name, text, updated_at) in all {
            let Ok(mut rollout) = serde_json::from_str::<Rollout>(&text) else { continue };
            if matches!(rollout.canary.phase, Phase::Promoted | Phase::RolledBack) && !rollout.applied {
                // An end stored but not (wholly) applied: apply it again (it is idempotent).
                let lock = self.lock_for(&name);
                let _one_at_a_time = lock.lock().await;
                if let Err(e) = apply_end(state, &ctx, &mut rollout, "ferry (rollout)").await {
                    tracing::warn!(model = %name, error = e.message(), "applying the end of a rollout failed; retrying");
                }
                continue;
            }
            let due = rollout.canary.phase == Phase::Progressing && rollout.next_judgement_ms <= now;
            if matches!(rollout.canary.phase, Phase::Progressing | Phase::Paused) {
                self.publish(&ctx, state, &name, due).await;
            }
            if !due {
                continue;
            }
            // This step's counts only: a replica that has not yet followed the step's deployment waits for it.
            let counted = state.metrics().performance.experiment(&name).map(|(e, _)| e.revision);
            if rollout.revision != 0 && counted != Some(rollout.revision) {
                continue;
            }
            let lock = self.lock_for(&name);
            let _one_at_a_time = lock.lock().await;
            // Of several replicas, the one that claims the interval judges it; the claim moves the next judgement on,
            // so that a replica reading after it finds the rollout not due.
            rollout.next_judgement_ms = after(now, rollout.interval_ms);
            rollout.judging_until_ms = now.saturating_add(JUDGING_LEASE_MS);
            let Ok(leased) = rollout.state_text() else { continue };
            rollout.judging_until_ms = 0;
            let claimed = match ctx.registry.claim_rollout(&name, updated_at, &leased).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "could not claim a rollout judgement");
                    continue;
                }
            };
            if let Err(e) = self.judge(state, &ctx, rollout, now, claimed).await {
                tracing::warn!(model = %name, error = e.message(), "rollout judgement failed; retrying");
            }
        }
        // Every A/B experiment's counts too, so that the experiments API reports the fleet's from any replica.
        for name in state.metrics().performance.experiment_models() {
            self.publish(&ctx, state, &name, false).await;
        }
    }

    /// Publishes this replica's counts of `name`'s current deployment revision to the registry, at most once per
    /// [`PUBLISH_EVERY`] and only when they changed, unless `now` (about to judge). Runs on the controller's tick
    /// only, one model after another, so two snapshots never race. Errors are logged: the fleet sum then lags.
    async fn publish(&self, ctx: &Arc<RegistryContext>, state: &AppState, name: &str, now: bool) {
        let Some((experiment, counts)) = state.metrics().performance.experiment(name) else { return };
        let mut rows: Vec<(u64, String)> =
            counts.iter().filter_map(|(&v, t)| Some((v, serde_json::to_string(t).ok()?))).collect();
        rows.sort();
        // Counts exactly as last written (an idle model) are not written again, unless a judgement needs them.
        let mark = (experiment.revision, experiment.since_ms, rows);
        let fresh =
            self.published.lock().get(name).is_some_and(|(at, seen)| at.elapsed() < PUBLISH_EVERY || *seen == mark);
        if fresh && !now {
            return;
        }
        let rows = &mark.2;
        match ctx.registry.publish_arm_counts(name, &self.replica, experiment.revision, experiment.since_ms, rows).await
        {
            Ok(()) => drop(self.published.lock().insert(name.to_owned(), (std::time::Instant::now(), mark))),
            Err(e) => tracing::warn!(model = %name, error = %e, "could not publish a rollout's counts"),
        }
    }

    /// Every replica's published counts of `name`'s deployment `revision`, summed per version; without `except`'s.
    async fn fleet_counts(
        ctx: &Arc<RegistryContext>,
        name: &str,
        revision: u64,
        except: Option<&str>,
    ) -> Result<FleetCounts, ApiError> {
        let mut fleet = FleetCounts::default();
        let mut replicas = std::collections::HashSet::new();
        for row in ctx.registry.arm_counts(name, revision).await? {
            if except == Some(row.replica.as_str()) {
                continue;
            }
            match serde_json::from_str::<ArmTotals>(&row.totals) {
                Ok(totals) => {
                    fleet.arms.entry(row.version).or_default().merge(&totals);
                    fleet.since_ms = Some(fleet.since_ms.map_or(row.since_ms, |s| s.min(row.since_ms)));
                    replicas.insert(row.replica);
                }
                Err(e) => tracing::warn!(model = %name, error = %e, "skipping unreadable published counts"),
            }
        }
        fleet.replicas = replicas.len();
        Ok(fleet)
    }

    /// `name`'s current experiment as the whole fleet counted it: this replica's counts now, plus every other
    /// replica's last published counts of the same deployment revision. `None` when this replica counts none.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn fleet_experiment(
        &self,
        ctx: &Arc<RegistryContext>,
        state: &AppState,
        name: &str,
    ) -> Result<Option<(crate::performance::Experiment, FleetCounts)>, ApiError> {
        let Some((experiment, mine)) = state.metrics().performance.experiment(name) else { return Ok(None) };
        let mut fleet = Self::fleet_counts(ctx, name, experiment.revision, Some(&self.replica)).await?;
        for (version, totals) in &mine {
            fleet.arms.entry(*version).or_default().merge(totals);
        }
        fleet.replicas += 1;
        fleet.since_ms = Some(fleet.since_ms.map_or(experiment.since_ms, |s| s.min(experiment.since_ms)));
        Ok(Some((experiment, fleet)))
    }

    async fn judge(
        &self,
        state: &AppState,
        ctx: &Arc<RegistryContext>,
        mut rollout: Rollout,
        now: i64,
        claimed: i64,
    ) -> Result<(), ApiError> {
        let name = rollout.model.clone();
        // The whole fleet's counts since this step's deployment revision took effect (this replica's were published
        // just now; every other replica's at most a second ago).
        let Some((experiment, _)) = state.metrics().performance.experiment(&name) else { return Ok(()) };
        let revision = experiment.revision;
        let FleetCounts { arms: mut fleet, since_ms: since, .. } =
            Self::fleet_counts(ctx, &name, revision, None).await?;
        let primary = fleet.remove(&rollout.primary).unwrap_or_default();
        let candidate = fleet.remove(&rollout.candidate).unwrap_or_default();
        let last = match &rollout.interval_mark {
            Some((r, totals)) if *r == revision => totals.clone(),
            _ => ArmTotals::default(),
        };
        let interval = candidate.since(&last);
        let tallied = primary.predictions.rows > 0 || candidate.predictions.rows > 0;
        let mut observation = Observation {
            primary: arm(&primary),
            candidate: arm(&candidate),
            candidate_interval: arm(&interval),
            quality: None,
            predictions: tallied.then(|| (primary.predictions.clone(), candidate.predictions.clone())),
        };
        // Ground truth joined in the shared registry since this step's deployment took effect on the earliest
        // replica (so counted over every replica's predictions).
        let since = since.unwrap_or(experiment.since_ms);
        if let Some(quality) = &ctx.quality_watch
            && let Some((kind, sums)) = quality.losses(&name, since).await?
        {
            observation.quality = Some(kind);
            for (version, stats) in
                [(rollout.primary, &mut observation.primary), (rollout.candidate, &mut observation.candidate)]
            {
                stats.loss = sums.get(&version).copied().unwrap_or_default();
            }
        }
        let step = rollout.canary.step;
        let judgement = rollout.canary.judge(&observation);
        let action = judgement.action.clone();
        let detail =
            format!("{}: {} (candidate at {}%)", action, judgement.reason, f64::from(judgement.weight_bp) / 100.0);
        rollout.record("ferry", judgement);
        rollout.next_judgement_ms = after(now, rollout.interval_ms);
        rollout.interval_mark = (matches!(rollout.canary.phase, Phase::Progressing | Phase::Paused)
            && rollout.canary.step == step)
            .then(|| (revision, candidate.clone()));
        // A judgement that outlived its claim (a registry stalled past the lease) may have been overtaken by a
        // person's action or another replica's judgement: it then changes nothing.
        let lost = || {
            tracing::warn!(model = %name, "a rollout judgement outlived its claim; another writer came first, so it is dropped");
            Ok(())
        };
        if ctx.registry.rollout_record(&name).await?.map(|(_, at)| at) != Some(claimed) {
            return lost();
        }
        if action == "advance" {
            rollout.revision =
                ctx.set_deployment(state, &name, &rollout.deployment(), "ferry (rollout)").await?.revision;
        }
        let noteworthy = action != "wait";
        let text = rollout.state_text()?;
        if !ctx
            .registry
            .store_rollout_if(&name, Some(claimed), &text, if noteworthy { &detail } else { "" }, "ferry")
            .await?
        {
            return lost();
        }
        if action == "rollback" {
            tracing::warn!(model = %name, candidate = rollout.candidate, "rollout {detail}");
        } else if noteworthy {
            tracing::info!(model = %name, candidate = rollout.candidate, "rollout {detail}");
        }
        if noteworthy
            && let Err(e) =
                ctx.registry.audit("ferry", &format!("rollout_{action}"), &format!("model/{name}"), &detail).await
        {
            tracing::error!(error = %e, "could not audit a rollout decision");
        }
        if action == "rollback"
            && let Some(alerting) = &ctx.alerting
        {
            let summary = format!("rollout of version {} of {name} rolled back: {detail}", rollout.candidate);
            alerting.announce("rollout-rolled-back", &name, Some(rollout.candidate), "critical", &summary);
        }
        // Stored first, applied second: an end interrupted half-way is applied again by the next tick.
        if matches!(action.as_str(), "promote" | "rollback") {
            apply_end(state, ctx, &mut rollout, "ferry (rollout)").await?;
        }
        Ok(())
    }
}
