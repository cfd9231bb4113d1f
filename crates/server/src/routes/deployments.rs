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
    let result = ctx.delete_deployment(&state, name.as_str(), &auth.access.actor).await;
    state.audit(&auth.access, "delete_deployment", &format!("model/{name}/deployment"), &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}
