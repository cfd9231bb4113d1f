//! A model's deployment: `GET`, `PUT` and `DELETE /api/v1/models/{name}/deployment`. A deployment splits the
//! model's traffic between versions named by alias or number; the server loads every version it names before the
//! split takes effect, so a change never fails a request. Every change is audited and is an event of the model.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ferry_rollout::{DeploymentSpec, split::Variant};
use ferry_types::ErrorKind;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Authorized, ToDeploy, ToRead};
use crate::routes::management::{model_name, registry};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models/{name}/deployment", get(get_deployment).put(put_deployment).delete(delete_deployment))
        .route("/api/v1/models/{name}/experiments/{id}", get(get_experiment))
        .route("/api/v1/models/{name}/rollout", get(get_rollout).post(start_rollout))
        .route("/api/v1/models/{name}/rollout/{action}", axum::routing::post(act_on_rollout))
}

#[utoipa::path(get, path = "/api/v1/models/{name}/rollout", tag = "deployments",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "The rollout: versions, phase, step, judgements", body = crate::rollouts::Rollout),
        (status = 404, body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn get_rollout(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::rollouts::Rollout>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    Ok(Json(crate::rollouts::load(registry(&state)?, name.as_str()).await?))
}

#[utoipa::path(post, path = "/api/v1/models/{name}/rollout", tag = "deployments",
    params(("name" = String, Path, description = "Model name")),
    request_body = crate::rollouts::StartRollout,
    responses((status = 200, description = "Started: the candidate serves its first step's share", body = crate::rollouts::Rollout),
        (status = 400, description = "Bad steps, interval or limits; a candidate that cannot serve", body = crate::routes::management::ErrorResponse),
        (status = 404, body = crate::routes::management::ErrorResponse),
        (status = 409, description = "A rollout is running, or the model has a deployment", body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn start_rollout(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<crate::rollouts::Rollout>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let request: crate::rollouts::StartRollout = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, format!("rollout body: {e}")))?;
    let result = crate::rollouts::start(&state, name.as_str(), &request, &auth.access.actor).await;
    state
        .audit(&auth.access, "start_rollout", &format!("model/{name}/rollout -> {}", request.candidate), &result)
        .await;
    Ok(Json(result?))
}

#[utoipa::path(post, path = "/api/v1/models/{name}/rollout/{action}", tag = "deployments",
    params(("name" = String, Path, description = "Model name"),
        ("action" = String, Path, description = "`pause`, `resume`, `promote` or `abort`")),
    responses((status = 200, body = crate::rollouts::Rollout),
        (status = 400, description = "Unknown action", body = crate::routes::management::ErrorResponse),
        (status = 404, body = crate::routes::management::ErrorResponse),
        (status = 409, description = "The rollout has ended", body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn act_on_rollout(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<crate::rollouts::Rollout>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let result = crate::rollouts::act(&state, name.as_str(), &action, &auth.access.actor).await;
    state.audit(&auth.access, &format!("rollout_{action}"), &format!("model/{name}/rollout"), &result).await;
    Ok(Json(result?))
}

/// One arm of an experiment, on this replica since the deployment revision took effect.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExperimentArm {
    /// The variant's target.
    target: String,
    /// Its version.
    version: u64,
    /// Its share, in basis points.
    weight_bp: u32,
    /// Requests it answered or failed.
    requests: u64,
    /// Failed by the server.
    errors: u64,
    /// `errors / requests`.
    error_rate: Option<f64>,
    /// Latency quantiles of its requests, seconds (interpolated in ferry's latency buckets).
    latency_p50: Option<f64>,
    /// See `latency_p50`.
    latency_p90: Option<f64>,
    /// See `latency_p50`.
    latency_p99: Option<f64>,
    /// Its predictions whose ground truth has arrived (monitored models; counted over every replica).
    labelled: u64,
    /// `accuracy` (a classifier) or `mean_absolute_error` (a regressor), over `labelled`, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    quality_metric: Option<&'static str>,
    /// Its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<f64>,
    /// A 95% confidence interval of it (Wilson's for accuracy, the normal one for the error), for this look.
    #[serde(skip_serializing_if = "Option::is_none")]
    quality_interval: Option<[f64; 2]>,
}

/// One arm's feedback figure and its 95% interval: accuracy (Wilson's, over the effective number of rows: a request's
/// rows are not independent, so they count as the variance over requests says they do) or mean absolute error
/// (normal, with requests as the units).
#[allow(clippy::cast_precision_loss)]
fn arm_quality(
    loss: ferry_rollout::canary::QualityLoss,
    sums: &ferry_rollout::canary::LossSums,
) -> (&'static str, f64, [f64; 2]) {
    const Z: f64 = 1.959_963_984_540_054;
    let arm = sums.arm();
    let variance_of_mean = arm.variance / arm.n.max(1.0);
    match loss {
        ferry_rollout::canary::QualityLoss::Misclassified => {
            let p = 1.0 - arm.mean;
            // All right or all wrong: no spread to go by, so count the requests (the fewest units it can be).
            let n = if variance_of_mean > 0.0 {
                (p * (1.0 - p) / variance_of_mean).min(sums.rows as f64)
            } else {
                sums.requests as f64
            }
            .max(1.0);
            let centre = (p + Z * Z / (2.0 * n)) / (1.0 + Z * Z / n);
            let half = Z / (1.0 + Z * Z / n) * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt();
            ("accuracy", p, [(centre - half).max(0.0), (centre + half).min(1.0)])
        }
        ferry_rollout::canary::QualityLoss::AbsoluteError => {
            let half = Z * variance_of_mean.sqrt();
            ("mean_absolute_error", arm.mean, [(arm.mean - half).max(0.0), arm.mean + half])
        }
    }
}

/// A candidate compared with the primary on one metric.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ArmComparison {
    /// The candidate's target.
    target: String,
    /// `error_rate` (difference of shares), `latency_ratio` (ratio of geometric means), or from ground truth
    /// `misclassified` (difference of shares) or `absolute_error` (difference of means).
    metric: &'static str,
    /// Candidate against primary: a difference for error rates, a ratio for latency.
    estimate: f64,
    /// Always-valid confidence interval (95% over all the comparisons together).
    lower: f64,
    /// See `lower`.
    upper: f64,
    /// Always-valid p-value of "no difference".
    p_value: f64,
    /// `primary better`, `candidate better` or `not yet known` (lower is better for both metrics).
    verdict: &'static str,
}

/// An A/B experiment: a deployment revision with its arms, their comparisons and a sample-ratio check.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExperimentView {
    /// Model name.
    model: String,
    /// The experiment: the deployment revision.
    id: u64,
    /// When the earliest replica started counting it (Unix milliseconds).
    since_ms: i64,
    /// How many replicas' counts are summed: this one's as they are now, and every other's as last published (when
    /// they change, at most once a second), including processes that have since stopped, whose requests still
    /// count; 1 for a server without a registry.
    replicas: usize,
    /// Primary first.
    arms: Vec<ExperimentArm>,
    /// Each candidate against the primary, per metric (GrowthBook's sequential test, valid at every look).
    comparisons: Vec<ArmComparison>,
    /// Always-valid p-value that the requests split as the weights say (Dirichlet-multinomial Bayes factor,
    /// k = 100); under 0.001 the comparison cannot be trusted.
    sample_ratio_p_value: Option<f64>,
    /// Whether `sample_ratio_p_value` is under 0.001.
    sample_ratio_mismatch: bool,
    /// Fewer than 100 requests in some arm: figures are shown, verdicts are not yet worth much.
    too_few_requests: bool,
}

#[utoipa::path(get, path = "/api/v1/models/{name}/experiments/{id}", tag = "deployments",
    params(("name" = String, Path, description = "Model name"),
        ("id" = String, Path, description = "The experiment: the deployment's revision, or `current`")),
    responses((status = 200, body = ExperimentView),
        (status = 404, description = "Unknown model, no deployment, or not the revision this server serves",
            body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn get_experiment(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<ExperimentView>, ApiError> {
    use ferry_rollout::sequential::{Arm, sample_ratio_mismatch, sequential_difference};
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let not_found = |why: String| ApiError::new(ErrorKind::NotFound, why);
    let split = state
        .repository()
        .split(name.as_str())
        .ok_or_else(|| not_found(format!("model {name:?} has no deployment served here")))?;
    let no_experiment = || not_found(format!("model {name:?} has no experiment counted here yet"));
    // With a shared registry, every replica's counts of the revision; alone, this server's.
    let (experiment, counts, replicas, since_ms) = match state.registry_context().cloned() {
        Some(ctx) => {
            let (experiment, fleet) =
                ctx.rollouts.fleet_experiment(&ctx, &state, name.as_str()).await?.ok_or_else(no_experiment)?;
            let since = fleet.since_ms.unwrap_or(experiment.since_ms).min(experiment.since_ms);
            (experiment, fleet.arms, fleet.replicas.max(1), since)
        }
        None => {
            let (experiment, counts) =
                state.metrics().performance.experiment(name.as_str()).ok_or_else(no_experiment)?;
            let since = experiment.since_ms;
            (experiment, counts, 1, since)
        }
    };
    if id != "current" && id.parse::<u64>().ok() != Some(experiment.revision) {
        return Err(not_found(format!(
            "experiment {id:?} of {name:?} is not the one served here (deployment revision {})",
            experiment.revision
        )));
    }
    let totals = |v: u64| counts.get(&v).cloned().unwrap_or_default();
    // Ground truth joined since this revision took effect here, from the shared registry.
    let quality = match state.registry_context().and_then(|c| c.quality_watch.clone()) {
        Some(watch) => watch.losses(name.as_str(), since_ms).await?,
        None => None,
    };
    let losses = |v: u64| quality.as_ref().and_then(|(_, sums)| sums.get(&v).copied()).unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let arms: Vec<ExperimentArm> = split
        .variants
        .iter()
        .map(|v| {
            let t = totals(v.version);
            let labelled = losses(v.version);
            let figure = quality.as_ref().filter(|_| labelled.rows > 0).map(|(kind, _)| arm_quality(*kind, &labelled));
            ExperimentArm {
                target: v.target.clone(),
                version: v.version,
                weight_bp: v.weight_bp,
                requests: t.requests,
                errors: t.errors,
                error_rate: (t.requests > 0).then(|| t.errors as f64 / t.requests as f64),
                latency_p50: t.quantile(0.5),
                latency_p90: t.quantile(0.9),
                latency_p99: t.quantile(0.99),
                labelled: labelled.rows,
                quality_metric: figure.map(|f| f.0),
                quality: figure.map(|f| f.1),
                quality_interval: figure.map(|f| f.2),
            }
        })
        .collect();
    // α split over every comparison (Bonferroni), each valid at every look.
    let metrics = if quality.is_some() { 3 } else { 2 };
    let tests = metrics * split.variants.len().saturating_sub(1);
    #[allow(clippy::cast_precision_loss)]
    let alpha = 0.05 / tests.max(1) as f64;
    let verdict = |lower: f64, upper: f64| {
        if upper < 0.0 {
            "candidate better"
        } else if lower > 0.0 {
            "primary better"
        } else {
            "not yet known"
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let bernoulli = |t: &crate::performance::ArmTotals| {
        let p = t.errors as f64 / t.requests.max(1) as f64;
        Arm { n: t.requests as f64, mean: p, variance: p * (1.0 - p) }
    };
    #[allow(clippy::cast_precision_loss)]
    let log_latency = |t: &crate::performance::ArmTotals| {
        let (sum, sq) = t.log_latency_sums();
        Arm::from_sums(t.answered as f64, sum, sq)
    };
    let primary = totals(split.variants[0].version);
    let mut comparisons = Vec::new();
    for v in split.variants.iter().skip(1) {
        let candidate = totals(v.version);
        if let Some(c) = sequential_difference(bernoulli(&primary), bernoulli(&candidate), alpha, 5_000.0) {
            comparisons.push(ArmComparison {
                target: v.target.clone(),
                metric: "error_rate",
                estimate: c.estimate,
                lower: c.lower,
                upper: c.upper,
                p_value: c.p_value,
                verdict: verdict(c.lower, c.upper),
            });
        }
        if let Some(c) = sequential_difference(log_latency(&primary), log_latency(&candidate), alpha, 5_000.0) {
            // A difference of mean log-latencies is the log of a ratio of geometric means.
            comparisons.push(ArmComparison {
                target: v.target.clone(),
                metric: "latency_ratio",
                estimate: c.estimate.exp(),
                lower: c.lower.exp(),
                upper: c.upper.exp(),
                p_value: c.p_value,
                verdict: verdict(c.lower, c.upper),
            });
        }
        if let Some((kind, _)) = &quality {
            use ferry_rollout::canary::QualityLoss;
            // Requests are the units: a request's rows are not independent draws.
            let loss = |v: u64| losses(v).arm();
            let metric = match kind {
                QualityLoss::Misclassified => "misclassified",
                QualityLoss::AbsoluteError => "absolute_error",
            };
            if let Some(c) = sequential_difference(loss(split.variants[0].version), loss(v.version), alpha, 5_000.0) {
                comparisons.push(ArmComparison {
                    target: v.target.clone(),
                    metric,
                    estimate: c.estimate,
                    lower: c.lower,
                    upper: c.upper,
                    p_value: c.p_value,
                    verdict: verdict(c.lower, c.upper),
                });
            }
        }
    }
    let weighted: Vec<&ferry_rollout::split::Variant> = split.variants.iter().filter(|v| v.weight_bp > 0).collect();
    let observed: Vec<u64> = weighted.iter().map(|v| totals(v.version).requests).collect();
    let shares: Vec<f64> = weighted.iter().map(|v| f64::from(v.weight_bp) / 10_000.0).collect();
    let sample_ratio_p_value = (weighted.len() > 1 && observed.iter().sum::<u64>() > 0)
        .then(|| sample_ratio_mismatch(&observed, &shares, 100.0).1);
    Ok(Json(ExperimentView {
        model: name.as_str().to_owned(),
        id: experiment.revision,
        since_ms,
        replicas,
        too_few_requests: arms.iter().any(|a| a.requests < 100),
        arms,
        comparisons,
        sample_ratio_mismatch: sample_ratio_p_value.is_some_and(|p| p < 0.001),
        sample_ratio_p_value,
    }))
}

/// A deployment as stored, and as this server routes it now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeploymentView {
    /// Model name.
    model: String,
    /// What was asked for.
    spec: DeploymentSpec,
    /// 1 for the first, one more per change.
    revision: u64,
    /// Unix milliseconds.
    updated_at: i64,
    /// Who set it.
    updated_by: String,
    /// The variants as this server routes them (targets resolved to versions, weights in basis points); absent
    /// while the server does not serve the deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    serving: Option<Vec<Variant>>,
    /// Header keeping a client on one variant, lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    sticky_header: Option<String>,
    /// The shadow as this server copies to it (target resolved, share in basis points).
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<ferry_rollout::split::Shadow>,
}

fn view(state: &AppState, record: ferry_registry::DeploymentRecord) -> Result<DeploymentView, ApiError> {
    let spec: DeploymentSpec = serde_json::from_str(&record.spec)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored deployment of {:?}: {e}", record.model)))?;
    let split = state.repository().split(&record.model);
    Ok(DeploymentView {
        sticky_header: split.as_ref().and_then(|s| s.sticky_header.clone()),
        shadow: split.as_ref().and_then(|s| s.shadow.clone()),
        serving: split.map(|s| s.variants.clone()),
        model: record.model,
        spec,
        revision: record.revision,
        updated_at: record.updated_at,
        updated_by: record.updated_by,
    })
}

/// A running rollout owns the model's deployment: a person's change would be replaced at its next step and would
/// mix someone else's split into its judgement.
async fn rollout_not_running(ctx: &crate::RegistryContext, name: &str) -> Result<(), ApiError> {
    use ferry_rollout::canary::Phase;
    match crate::rollouts::load(ctx, name).await {
        Ok(r) if matches!(r.canary.phase, Phase::Progressing | Phase::Paused) => Err(ApiError::new(
            ErrorKind::Conflict,
            format!("a rollout of {name:?} owns its deployment; promote or abort it (ferry rollout) first"),
        )),
        _ => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/models/{name}/deployment", tag = "deployments",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = DeploymentView),
        (status = 404, description = "Unknown model, or it has no deployment", body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn get_deployment(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    ctx.registry.get_model(name.as_str()).await?;
    let record = ctx
        .registry
        .deployment(name.as_str())
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("model {name:?} has no deployment")))?;
    Ok(Json(view(&state, record)?))
}

#[utoipa::path(put, path = "/api/v1/models/{name}/deployment", tag = "deployments",
    params(("name" = String, Path, description = "Model name")),
    request_body = DeploymentSpec,
    responses(
        (status = 200, description = "Set and serving: every version it names is loaded and takes its share",
            body = DeploymentView),
        (status = 400, description = "Malformed, weights not adding up to 100, a target that is no alias or \
            version, or a version that cannot be served (the previous deployment stays)",
            body = crate::routes::management::ErrorResponse),
        (status = 404, body = crate::routes::management::ErrorResponse),
        (status = 409, description = "The model is served from files, not the registry",
            body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn put_deployment(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<DeploymentView>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let spec: DeploymentSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, format!("deployment body: {e}")))?;
    let ctx = registry(&state)?;
    rollout_not_running(ctx, name.as_str()).await?;
    let target = format!(
        "model/{name}/deployment -> {}",
        spec.variants.iter().map(|v| format!("{}={}", v.target, v.weight)).collect::<Vec<_>>().join(",")
    );
    let result = ctx.set_deployment(&state, name.as_str(), &spec, &auth.access.actor).await;
    state.audit(&auth.access, "set_deployment", &target, &result).await;
    Ok(Json(view(&state, result?)?))
}

#[utoipa::path(delete, path = "/api/v1/models/{name}/deployment", tag = "deployments",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 204, description = "Deleted: the serving alias takes all traffic again"),
        (status = 404, description = "Unknown model, or it has no deployment", body = crate::routes::management::ErrorResponse)))]
pub(crate) async fn delete_deployment(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    rollout_not_running(ctx, name.as_str()).await?;
    let result = ctx.delete_deployment(&state, name.as_str(), &auth.access.actor).await;
    state.audit(&auth.access, "delete_deployment", &format!("model/{name}/deployment"), &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}
