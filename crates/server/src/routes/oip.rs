//! The Open Inference Protocol (KServe v2) REST routes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_protocol::{
    INFERENCE_HEADER_CONTENT_LENGTH, ModelMetadata, ServerMetadata, TensorMetadata, decode_infer_request,
    encode_infer_response,
};
use ferry_serving::{InferRequest, LoadedModel};
use ferry_types::{ErrorKind, TensorSpec};

use crate::auth::{Authorized, ToInfer};
use crate::body::read_body;
use crate::{ApiError, AppState, EXTENSIONS};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_version_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
}

fn not_ready() -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the server is not ready: models are still loading, or it is shutting down")
}

async fn server_ready(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    if state.is_ready() { Ok(StatusCode::OK) } else { Err(not_ready()) }
}

async fn server_metadata(_auth: Authorized<ToInfer>) -> Json<ServerMetadata<'static>> {
    Json(ServerMetadata { name: "ferry", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS })
}

fn tensor_meta(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
    specs.iter().map(|s| TensorMetadata { name: &s.name, datatype: s.datatype.as_str(), shape: &s.shape }).collect()
}

fn metadata_response(model: &LoadedModel, versions: Vec<String>) -> Response {
    Json(ModelMetadata {
        name: model.name(),
        versions,
        platform: model.engine().platform(),
        inputs: tensor_meta(&model.signature().inputs),
        outputs: tensor_meta(&model.signature().outputs),
    })
    .into_response()
}

async fn model_metadata(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    auth.on(&name).await?;
    let model = state.repository().get(&name, None)?;
    let versions = state
        .repository()
        .summaries()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.versions.iter().map(u64::to_string).collect())
        .unwrap_or_default();
    Ok(metadata_response(&model, versions))
}

async fn model_version_metadata(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    auth.on(&name).await?;
    let model = state.repository().get(&name, Some(&version))?;
    Ok(metadata_response(&model, vec![model.version().to_string()]))
}

async fn model_ready(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.on(&name).await?;
    if !state.is_ready() {
        return Err(not_ready());
    }
    state.repository().get(&name, None).map(|_| StatusCode::OK).map_err(ApiError::from)
}

async fn model_version_ready(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.on(&name).await?;
    if !state.is_ready() {
        return Err(not_ready());
    }
    state.repository().get(&name, Some(&version)).map(|_| StatusCode::OK).map_err(ApiError::from)
}

async fn infer(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth.on(&name).await?;
    if !state.is_ready() {
        return Err(not_ready());
    }
    // The model's deployment, if any, picks the version: the override header, else the sticky key, else at random.
    let text = |key: &str| headers.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let override_to = text(ferry_rollout::split::OVERRIDE_HEADER);
    let routed = state.repository().route(&name, override_to.as_deref(), |header| text(header))?;
    // Only a version the deployment chose counts in its experiment arm.
    let in_arm = routed.variant.is_some();
    let mut response = observed(&state, routed.model, routed.shadow, in_arm, &headers, body).await?;
    if let Some((target, _)) = routed.variant
        && let Ok(value) = HeaderValue::from_str(&target)
    {
        response.headers_mut().insert(ferry_rollout::split::OVERRIDE_HEADER, value);
    }
    Ok(response)
}

async fn infer_version(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth.on(&name).await?;
    let model = lookup(&state, &name, Some(&version))?;
    observed(&state, model, None, false, &headers, body).await
}

fn lookup(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ApiError> {
    if !state.is_ready() {
        return Err(not_ready());
    }
    Ok(state.repository().get(name, version)?)
}

/// [`run_infer`], counted in the metrics (only for a model that exists, so that unknown names cannot grow them).
async fn observed(
    state: &AppState,
    model: Arc<LoadedModel>,
    shadow: Option<Arc<LoadedModel>>,
    routed: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = run_infer(state, model.clone(), shadow, routed, headers, body).await;
    let (metrics, elapsed) = (state.metrics(), started.elapsed());
    match &result {
        Ok((_, timing)) => {
            metrics.observe(model.name(), model.version(), "http", routed, "200", Some(*timing), elapsed)
        }
        Err(e) => {
            let code = crate::status_of(e.kind()).as_u16().to_string();
            metrics.observe(model.name(), model.version(), "http", routed, &code, None, elapsed);
        }
    }
    result.map(|(response, _)| response)
}

async fn run_infer(
    state: &AppState,
    model: Arc<LoadedModel>,
    shadow: Option<Arc<LoadedModel>>,
    routed: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Response, (std::time::Duration, std::time::Duration)), ApiError> {
    let json_len = match headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).ok_or_else(|| {
            ApiError::new(ErrorKind::InvalidInput, "Inference-Header-Content-Length must be a non-negative integer")
        })?),
    };
    let body = read_body(headers, body, state.limits().max_request_bytes).await?;
    let request = decode_infer_request(json_len, &body)?;
    drop(body);

    // Which outputs, in which order, and which of them travel as raw bytes.
    let binary_default = request.binary_data_output;
    let wanted: Vec<(String, bool)> = if request.outputs.is_empty() {
        model.signature().outputs.iter().map(|o| (o.name.clone(), binary_default)).collect()
    } else {
        request.outputs.into_iter().map(|o| (o.name, o.binary)).collect()
    };
    // Logged models keep a copy of their inputs (only they pay for it).
    let log = state.registry_context().and_then(|c| c.prediction_log.clone()).filter(|l| l.wants(model.name()));
    let logged_inputs = log.as_ref().map(|_| request.inputs.clone());
    // A request drawn for the deployment's shadow keeps a copy of its inputs, when there is room for the copy.
    let shadow = shadow.and_then(|m| state.metrics().shadows.admit(m)).map(|a| (a, request.inputs.clone()));
    // A monitored model's instance keeps its predictions for feedback (and its drift window) under the request's id;
    // without one, it makes one, which the response returns, so that the client can send the ground truth later.
    let inference = model.infer(InferRequest {
        inputs: request.inputs,
        outputs: wanted.iter().map(|(n, _)| n.clone()).collect(),
        timeout: request.timeout,
        id: request.id,
        observed: true,
    });
    // A request the deployment routed counts its predictions in its version's arm, for a canary's prediction-drift
    // comparison; what that needs is looked up while the model computes.
    let (response, arm) = crate::meanwhile(inference, || {
        let target = routed.then(|| state.registry_context()?.quality_watch.as_ref()?.target(model.name()))??;
        Some((target, state.metrics().performance.arm_recorder(model.name(), model.version())))
    })
    .await;
    let mut response = response?;
    if let Some((target, arm)) = &arm {
        crate::quality::tally_arm(target, &response.outputs, arm);
    }
    if let (Some(log), Some(inputs)) = (&log, &logged_inputs) {
        let subject = headers.get(log.subject_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned);
        log.record(model.name(), model.version(), subject, inputs, &response.outputs);
    }
    if let Some((admitted, inputs)) = shadow {
        state.metrics().shadows.run(admitted, inputs, response.outputs.clone());
    }
    let request_id = response.id.take();
    let timing = (response.queue, response.compute);
    let outputs: Vec<_> = response.outputs.into_iter().zip(wanted).map(|(t, (_, binary))| (t, binary)).collect();
    let version = model.version().to_string();
    let encoded = encode_infer_response(model.name(), &version, request_id.as_deref(), &outputs)?;
    let mut http = Response::new(Body::from(encoded.body));
    let headers = http.headers_mut();
    match encoded.json_len {
        Some(n) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok((http, timing))
}
