//! The statistics extension (Triton's): `GET /v2/models[/{name}[/versions/{v}]]/stats`, and its gRPC twin.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use ferry_protocol::grpc::pb;
use ferry_serving::{CountDuration, LoadedModel};
use serde_json::{Value, json};

use crate::auth::{Authorized, ToInfer, ToRead};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/models/stats", get(all))
        .route("/v2/models/{name}/stats", get(one_model))
        .route("/v2/models/{name}/versions/{version}/stats", get(one_version))
}

/// The models a statistics request names: all, every version of one, or one version.
pub(crate) fn select(
    state: &AppState,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<Arc<LoadedModel>>, ApiError> {
    let repo = state.repository();
    Ok(match (name, version) {
        (None, _) => repo
            .summaries()
            .into_iter()
            .flat_map(|s| s.versions.into_iter().map(move |v| (s.name.clone(), v)))
            .filter_map(|(n, v)| repo.get(&n, Some(&v.to_string())).ok())
            .collect(),
        (Some(n), None) => {
            repo.get(n, None)?;
            repo.versions_of(n).into_iter().filter_map(|v| repo.get(n, Some(&v.to_string())).ok()).collect()
        }
        (Some(n), Some(v)) => vec![repo.get(n, Some(v))?],
    })
}

fn duration_json(d: CountDuration) -> Value {
    json!({"count": d.count, "ns": d.ns})
}

fn to_json(m: &LoadedModel) -> Value {
    let s = m.stats();
    json!({
        "name": m.name(),
        "version": m.version().to_string(),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration_json(s.success),
            "fail": duration_json(s.fail),
            "queue": duration_json(s.queue),
            "compute_input": duration_json(s.compute_input),
            "compute_infer": duration_json(s.compute_infer),
            "compute_output": duration_json(s.compute_output),
        },
        "batch_stats": s.batches.iter().map(|b| json!({
            "batch_size": b.batch_size,
            "compute_input": duration_json(b.compute_input),
            "compute_infer": duration_json(b.compute_infer),
            "compute_output": duration_json(b.compute_output),
        })).collect::<Vec<_>>(),
    })
}

fn duration_proto(d: CountDuration) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count: d.count, ns: d.ns })
}

/// The same statistics as the gRPC message.
pub(crate) fn to_proto(m: &LoadedModel) -> pb::ModelStatistics {
    let s = m.stats();
    pb::ModelStatistics {
        name: m.name().to_owned(),
        version: m.version().to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration_proto(s.success),
            fail: duration_proto(s.fail),
            queue: duration_proto(s.queue),
            compute_input: duration_proto(s.compute_input),
            compute_infer: duration_proto(s.compute_infer),
            compute_output: duration_proto(s.compute_output),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|b| pb::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: duration_proto(b.compute_input),
                compute_infer: duration_proto(b.compute_infer),
                compute_output: duration_proto(b.compute_output),
            })
            .collect(),
    }
}

fn respond(models: &[Arc<LoadedModel>]) -> Json<Value> {
    Json(json!({"model_stats": models.iter().map(|m| to_json(m)).collect::<Vec<_>>()}))
}

async fn metrics(_auth: Authorized<ToRead>, State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = state.metrics().render(&state);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

async fn all(auth: Authorized<ToInfer>, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let models: Vec<_> = select(&state, None, None)?.into_iter().filter(|m| auth.access.covers(m.name())).collect();
    Ok(respond(&models))
}

async fn one_model(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.on(&name).await?;
    Ok(respond(&select(&state, Some(&name), None)?))
}

async fn one_version(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    auth.on(&name).await?;
    Ok(respond(&select(&state, Some(&name), Some(&version))?))
}
