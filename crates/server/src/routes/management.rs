//! The management API under `/api/v1`: models, versions (upload, download, delete), aliases and the history of
//! each model, described by the OpenAPI document at `/api/v1/openapi.json` (generated from these handlers).
//!
//! Every handler names the permission it needs in its signature (`Authorized<ToRead>`, `Authorized<ToDeploy>`) and
//! checks the key's model scopes; every change is appended to the audit log with its outcome.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_registry::{AliasRecord, AliasUpdate, Event, ModelRecord, Selector, VersionRecord};
use ferry_serving::{EngineChoice, open_engine, signature_mismatch};
use ferry_types::{ErrorKind, ModelName};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Authorized, ToDeploy, ToRead};
use crate::deploy::{AliasMove, RegistryContext};
use crate::{ApiError, AppState};

/// The OpenAPI document of the management API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry management API",
        description = "Models, immutable versions, aliases and their history in the ferry registry. Every call needs \
                       `Authorization: Bearer <key>` with a role that allows it. Errors are \
                       `{\"error\": message}` with 400 (bad input), 401 (no valid key), 403 (role or scope), 404 (unknown model, version or alias), 409 \
                       (conflict with the current state), 413 (package over the upload limit)."
    ),
    paths(
        list_models,
        get_model,
        delete_model,
        list_versions,
        upload_version,
        get_version,
        delete_version,
        download_version,
        list_aliases,
        get_alias,
        set_alias,
        delete_alias,
        list_events,
        crate::routes::deployments::get_deployment,
        crate::routes::deployments::put_deployment,
        crate::routes::deployments::delete_deployment,
        crate::routes::deployments::get_experiment,
        crate::routes::deployments::get_rollout,
        crate::routes::deployments::start_rollout,
        crate::routes::deployments::act_on_rollout,
        crate::routes::monitoring::model_monitoring,
        crate::routes::monitoring::post_feedback,
        crate::routes::monitoring::list_alerts,
        crate::routes::keys::create_key,
        crate::routes::keys::list_keys,
        crate::routes::keys::revoke_key,
        crate::routes::keys::list_audit,
        crate::routes::keys::verify_audit,
        crate::routes::keys::subject_records,
        crate::routes::keys::erase_subject
    ),
    components(schemas(crate::quality::FeedbackItem, crate::quality::FeedbackReport, ModelRecord, VersionRecord, AliasRecord, Event, SetAlias, ErrorResponse, AliasTarget,
        crate::routes::keys::NewKey, crate::routes::keys::CreatedKey, crate::routes::keys::AuditVerdict,
        ferry_auth::KeyInfo, ferry_auth::Role, ferry_auth::Scope, ferry_auth::AuditRecord,
        crate::routes::keys::Erased, ferry_registry::PredictionRecord,
        crate::routes::deployments::DeploymentView, crate::routes::deployments::ExperimentView,
        crate::routes::deployments::ExperimentArm, crate::routes::deployments::ArmComparison,
        crate::rollouts::Rollout, crate::rollouts::Step, crate::rollouts::StartRollout,
        ferry_rollout::canary::Judgement, ferry_rollout::canary::MetricCheck, ferry_rollout::sequential::Comparison, ferry_rollout::DeploymentSpec, ferry_rollout::VariantSpec,
        ferry_rollout::split::Variant, ferry_rollout::split::ShadowSpec, ferry_rollout::split::Shadow)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "models"), (name = "versions"), (name = "aliases"), (name = "deployments"), (name = "keys"), (name = "audit"), (name = "subjects"))
)]
pub struct ManagementApi;

/// Declares the bearer-key scheme every management call uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("fry_…").build()),
        );
    }
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong, precisely.
    pub error: String,
}

/// `PUT …/aliases/{alias}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// The version the alias should point at.
    pub version: u64,
    /// Only move the alias if it points at this version now (compare-and-set); 409 otherwise.
    #[serde(default)]
    pub if_version: Option<u64>,
    /// Only create the alias; 409 if it exists.
    #[serde(default)]
    pub create_only: bool,
}

/// An alias and its version.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasTarget {
    /// Alias name.
    pub alias: String,
    /// Version it points at.
    pub version: u64,
}

/// Query of `PUT …/aliases/{alias}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AliasQuery {
    /// For the serving alias: answer only once the new version serves (or failed to load, in which case the alias
    /// is moved back and the error returned). Default true.
    #[serde(default)]
    pub wait: Option<bool>,
}

pub(crate) fn routes() -> Router<AppState> {
    management_routes()
        .merge(crate::routes::keys::routes())
        .merge(crate::routes::monitoring::routes())
        .merge(crate::routes::deployments::routes())
}

fn management_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{name}", get(get_model).delete(delete_model))
        .route("/api/v1/models/{name}/versions", get(list_versions).post(upload_version))
        .route("/api/v1/models/{name}/versions/{version}", get(get_version).delete(delete_version))
        .route("/api/v1/models/{name}/versions/{version}/package", get(download_version))
        .route("/api/v1/models/{name}/aliases", get(list_aliases))
        .route("/api/v1/models/{name}/aliases/{alias}", get(get_alias).put(set_alias).delete(delete_alias))
        .route("/api/v1/models/{name}/events", get(list_events))
}

/// The API's description; like everything but health, only for key holders (any role).
async fn openapi(_caller: Authorized<ToRead>) -> Response {
    let json = ManagementApi::openapi().to_pretty_json().unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
}

pub(crate) fn registry(state: &AppState) -> Result<&Arc<RegistryContext>, ApiError> {
    state.registry_context().ok_or_else(|| ApiError::new(ErrorKind::NotFound, "this server has no model registry"))
}

/// Refuses a package whose signature does not verify, and (with trusted signers or `require_signature`) one that
/// is unsigned or signed by a key not on the list.
fn check_package_signature(package: &std::path::Path, trusted: &[String], required: bool) -> Result<(), String> {
    match ferry_package::check_signature(package).map_err(|e| e.to_string())? {
        None if required => Err("the package is not signed, and this server requires signed packages".into()),
        None => Ok(()),
        Some(sig) if trusted.contains(&sig.public_key) => Ok(()),
        Some(sig) if required || !trusted.is_empty() => {
            Err(format!("the package is signed by key {}, which this server does not trust", sig.public_key))
        }
        Some(_) => Ok(()),
    }
}

pub(crate) fn model_name(name: &str) -> Result<ModelName, ApiError> {
    ModelName::new(name).map_err(|e| ApiError::new(ErrorKind::InvalidInput, format!("model name: {e}")))
}

fn version_number(version: &str) -> Result<u64, ApiError> {
    version
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidInput, format!("version {version:?} is not a positive integer")))
}

#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, description = "Every model", body = [ModelRecord])))]
async fn list_models(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
) -> Result<Json<Vec<ModelRecord>>, ApiError> {
    let models = registry(&state)?.registry.list_models().await?;
    Ok(Json(models.into_iter().filter(|m| auth.access.covers(&m.name)).collect()))
}

#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelRecord), (status = 404, body = ErrorResponse)))]
async fn get_model(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelRecord>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    Ok(Json(registry(&state)?.registry.get_model(name.as_str()).await?))
}

#[utoipa::path(delete, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 204, description = "Deleted with every version and alias; unloaded if served"),
        (status = 404, body = ErrorResponse)))]
async fn delete_model(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    // Predictions still on their way to the registry would land after the delete and outlive the model.
    ctx.stop_keeping_predictions(name.as_str()).await;
    let result = ctx.registry.delete_model(name.as_str(), &auth.access.actor).await.map_err(ApiError::from);
    state.audit(&auth.access, "delete_model", &format!("model/{name}"), &result).await;
    // Unloads a deleted model; watches one that is still there (the delete failed) again.
    let synced = ctx.sync_model(&state, name.as_str()).await;
    result?;
    synced?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/models/{name}/versions", tag = "versions",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = [VersionRecord]), (status = 404, body = ErrorResponse)))]
async fn list_versions(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionRecord>>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    Ok(Json(registry(&state)?.registry.list_versions(name.as_str()).await?))
}

#[utoipa::path(post, path = "/api/v1/models/{name}/versions", tag = "versions",
    params(("name" = String, Path, description = "Model name; must equal the package's")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A .ferry package"),
    responses(
        (status = 201, description = "Registered as the next version", body = VersionRecord),
        (status = 400, description = "Not a valid package, a name mismatch, or a manifest that does not match the model", body = ErrorResponse),
        (status = 409, description = "This package is already a version of the model", body = ErrorResponse),
        (status = 413, description = "Over the upload limit", body = ErrorResponse)))]
async fn upload_version(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<VersionRecord>), ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    let limit = ctx.max_package_bytes;
    if let Some(len) = crate::body::declared_length(&headers)
        && len > limit
    {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the package is {len} bytes, over the {limit}-byte upload limit"),
        ));
    }
    let (_, engines) = state.repository().load_settings();
    let (trusted, required) = (ctx.trusted_signers.clone(), ctx.require_signature);
    // The package signature first (when configured), then the manifest must tell the truth about the model: open it
    // in an engine and compare signatures.
    let check = move |package: &std::path::Path, dir: &std::path::Path, manifest: &ferry_package::Manifest| {
        check_package_signature(package, &trusted, required)?;
        let (engine, _) = open_engine(&dir.join(ferry_package::MODEL_PATH), EngineChoice::Auto, &engines)
            .map_err(|e| format!("the model in the package does not load: {}", ferry_engine::error_chain(&e)))?;
        match signature_mismatch(&manifest.signature, engine.signature()) {
            Some(why) => Err(format!("the manifest does not describe the model it carries: {why}")),
            None => Ok(()),
        }
    };
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let result = ctx.registry.publish(&name, stream, limit, &auth.access.actor, check).await.map_err(ApiError::from);
    let target = match &result {
        Ok(r) => format!("model/{}/version/{}", r.model, r.version),
        Err(_) => format!("model/{name}"),
    };
    state.audit(&auth.access, "push", &target, &result).await;
    let record = result?;
    tracing::info!(model = %record.model, version = record.version, digest = %record.digest, "version registered");
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", tag = "versions",
    params(("name" = String, Path, description = "Model name"), ("version" = u64, Path, description = "Version")),
    responses((status = 200, body = VersionRecord), (status = 404, body = ErrorResponse)))]
async fn get_version(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionRecord>, ApiError> {
    let (name, version) = (model_name(&name)?, version_number(&version)?);
    auth.on(name.as_str()).await?;
    Ok(Json(registry(&state)?.registry.resolve(name.as_str(), &Selector::Version(version)).await?))
}

#[utoipa::path(delete, path = "/api/v1/models/{name}/versions/{version}", tag = "versions",
    params(("name" = String, Path, description = "Model name"), ("version" = u64, Path, description = "Version")),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "An alias points at it", body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
async fn delete_version(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (name, version) = (model_name(&name)?, version_number(&version)?);
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    // No deployment may start naming it between the check and the delete.
    let _changes = ctx.lock_model(name.as_str()).await;
    if ctx.deployment_names_version(name.as_str(), version).await? {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("the deployment of {name:?} routes traffic to version {version}; change or delete it first"),
        ));
    }
    let result = ctx.registry.delete_version(name.as_str(), version, &auth.access.actor).await.map_err(ApiError::from);
    state.audit(&auth.access, "delete_version", &format!("model/{name}/version/{version}"), &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/package", tag = "versions",
    params(("name" = String, Path, description = "Model name"), ("version" = u64, Path, description = "Version")),
    responses((status = 200, description = "The .ferry package; `X-Ferry-Digest` carries its SHA-256",
        content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorResponse)))]
async fn download_version(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, version) = (model_name(&name)?, version_number(&version)?);
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    let record = ctx.registry.resolve(name.as_str(), &Selector::Version(version)).await?;
    let (size, stream) = ctx.registry.artifacts().open(&record.digest).await?;
    let mut response = Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string()))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&record.digest) {
        headers.insert("x-ferry-digest", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}-{version}.ferry\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/models/{name}/aliases", tag = "aliases",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = [AliasTarget]), (status = 404, body = ErrorResponse)))]
async fn list_aliases(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AliasTarget>>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    ctx.registry.get_model(name.as_str()).await?;
    let aliases = ctx.registry.aliases_of(name.as_str()).await?;
    Ok(Json(aliases.into_iter().map(|(alias, version)| AliasTarget { alias, version }).collect()))
}

#[utoipa::path(get, path = "/api/v1/models/{name}/aliases/{alias}", tag = "aliases",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias")),
    responses((status = 200, body = VersionRecord), (status = 404, body = ErrorResponse)))]
async fn get_alias(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<VersionRecord>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let selector: Selector = alias.parse()?;
    Ok(Json(registry(&state)?.registry.resolve(name.as_str(), &selector).await?))
}

#[utoipa::path(put, path = "/api/v1/models/{name}/aliases/{alias}", tag = "aliases",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias"),
        AliasQuery),
    request_body = SetAlias,
    responses(
        (status = 200, description = "Set; for the serving alias, the version now serves (unless wait=false)",
            body = AliasRecord),
        (status = 400, description = "Bad alias name, or the version cannot be served (the alias is moved back)",
            body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The compare-and-set or create-only condition failed", body = ErrorResponse)))]
async fn set_alias(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    Query(query): Query<AliasQuery>,
    body: Bytes,
) -> Result<Json<AliasRecord>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let request: SetAlias = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, format!("alias request body: {e}")))?;
    let update = match (request.if_version, request.create_only) {
        (Some(_), true) => {
            return Err(ApiError::new(ErrorKind::InvalidInput, "if_version and create_only exclude each other"));
        }
        (Some(v), false) => AliasUpdate::IfVersion(v),
        (None, true) => AliasUpdate::CreateOnly,
        (None, false) => AliasUpdate::Always,
    };
    let ctx = registry(&state)?;
    let wait = query.wait.unwrap_or(true);
    let actor = auth.access.actor.clone();
    let target = format!("model/{name}/alias/{alias} -> {}", request.version);
    let request =
        AliasMove { name: name.as_str(), alias: &alias, version: request.version, update, actor: &actor, wait };
    let result = ctx.move_alias(&state, request).await;
    state.audit(&auth.access, "set_alias", &target, &result).await;
    let record = result?;
    Ok(Json(record))
}

#[utoipa::path(delete, path = "/api/v1/models/{name}/aliases/{alias}", tag = "aliases",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias")),
    responses((status = 204, description = "Deleted; deleting the serving alias unloads the model"),
        (status = 404, body = ErrorResponse)))]
async fn delete_alias(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    let changes = ctx.lock_model(name.as_str()).await;
    if ctx.deployment_uses(name.as_str(), &alias).await? {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("the deployment of {name:?} routes traffic to {alias:?}; change or delete the deployment first"),
        ));
    }
    let result = ctx.registry.delete_alias(name.as_str(), &alias, &auth.access.actor).await.map_err(ApiError::from);
    state.audit(&auth.access, "delete_alias", &format!("model/{name}/alias/{alias}"), &result).await;
    // Syncing takes the model's lock itself.
    drop(changes);
    result?;
    if alias == ctx.serve_alias {
        ctx.sync_model(&state, name.as_str()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/models/{name}/events", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "Who did what and when, oldest first", body = [Event])))]
async fn list_events(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    Ok(Json(registry(&state)?.registry.events(name.as_str()).await?))
}
