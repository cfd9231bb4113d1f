//! Keys and the audit log (`/api/v1/keys`, `/api/v1/audit`): admin only, and every change audited.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use bytes::Bytes;
use ferry_auth::{AuditRecord, KeyInfo, Role, Scope};
use ferry_types::ErrorKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Authorized, ToAdmin};
use crate::routes::management::ErrorResponse;
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keys", get(list_keys).post(create_key))
        .route("/api/v1/keys/{id}", delete(revoke_key))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/audit/verify", get(verify_audit))
        .route("/api/v1/subjects/{id}", get(subject_records).delete(erase_subject))
}

/// `POST /api/v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A name to recognise the key by.
    pub name: String,
    /// admin, deployer, predictor or viewer.
    pub role: Role,
    /// Model-name patterns (`*`, `fraud-*`); default all models.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// Requests per second; default the server's.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Requests per UTC day; default the server's.
    #[serde(default)]
    pub daily_quota: Option<u64>,
}

/// A new key: the secret is in this answer and nowhere else, ever.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key; store it now.
    pub key: String,
    /// Its description.
    pub info: KeyInfo,
}

/// The result of checking the audit chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerdict {
    /// Whether every record verifies.
    pub intact: bool,
    /// Records checked.
    pub records: i64,
    /// Where and why it breaks.
    pub error: Option<String>,
}

/// Paging of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditPage {
    /// Records after this sequence number.
    pub after: Option<i64>,
    /// At most this many (default and maximum 1000).
    pub limit: Option<i64>,
}

fn ctx(state: &AppState) -> Result<&std::sync::Arc<crate::RegistryContext>, ApiError> {
    state.registry_context().ok_or_else(|| ApiError::new(ErrorKind::NotFound, "this server has no registry"))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse)))]
pub(crate) async fn create_key(
    auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    // A key can only hand out what it holds; an admin limited to some models cannot mint unscoped keys.
    if !auth.access.scopes.iter().any(|s| s.as_str() == "*") {
        return Err(ApiError::new(
            ErrorKind::PermissionDenied,
            "only an admin key scoped to every model (*) may create keys",
        ));
    }
    let request: NewKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, format!("key request body: {e}")))?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::new(ErrorKind::InvalidInput, "a key needs a name of 1 to 128 characters"));
    }
    let scopes = match request.scopes {
        Some(s) if !s.is_empty() => s,
        _ => vec![Scope::new("*").map_err(ApiError::from)?],
    };
    let ctx = ctx(&state)?;
    let limits =
        ferry_registry::KeyLimits { rate_per_second: request.rate_per_second, daily_quota: request.daily_quota };
    let result = ctx
        .registry
        .create_key(&request.name, request.role, &scopes, limits, &auth.access.actor)
        .await
        .map_err(ApiError::from);
    let target = match &result {
        Ok((_, info)) => format!("key/{} ({}, {})", info.id, info.role.as_str(), request.name),
        Err(_) => format!("key ({})", request.name),
    };
    state.audit(&auth.access, "create_key", &target, &result).await;
    let (key, info) = result?;
    ctx.keys.refresh(&ctx.registry).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key, info })))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = [KeyInfo]), (status = 403, body = ErrorResponse)))]
pub(crate) async fn list_keys(
    _auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    Ok(Json(ctx(&state)?.registry.list_keys().await?))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked, effective at once on this server"),
        (status = 404, body = ErrorResponse)))]
pub(crate) async fn revoke_key(
    auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = ctx(&state)?;
    let result = ctx.registry.revoke_key(&id).await.map_err(ApiError::from);
    state.audit(&auth.access, "revoke_key", &format!("key/{id}"), &result).await;
    result?;
    ctx.keys.refresh(&ctx.registry).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditPage),
    responses((status = 200, body = [AuditRecord]), (status = 403, body = ErrorResponse)))]
pub(crate) async fn list_audit(
    _auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
    Query(page): Query<AuditPage>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let limit = page.limit.unwrap_or(1000).clamp(1, 1000);
    Ok(Json(ctx(&state)?.registry.audit_records(page.after.unwrap_or(0), limit).await?))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerdict), (status = 403, body = ErrorResponse)))]
pub(crate) async fn verify_audit(
    _auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
) -> Result<Json<AuditVerdict>, ApiError> {
    let verdict = match ctx(&state)?.registry.verify_audit().await? {
        Ok(records) => AuditVerdict { intact: true, records, error: None },
        Err(e) => AuditVerdict { intact: false, records: e.seq - 1, error: Some(e.to_string()) },
    };
    Ok(Json(verdict))
}

/// The result of an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    /// The data subject.
    pub subject: String,
    /// Logged predictions erased.
    pub erased: u64,
}

fn subject_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::new(ErrorKind::InvalidInput, "a subject id is 1 to 256 printable characters"));
    }
    Ok(id)
}

#[utoipa::path(get, path = "/api/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Data subject id")),
    responses((status = 200, description = "Every logged prediction about the subject (an access request)",
        body = [ferry_registry::PredictionRecord]), (status = 403, body = ErrorResponse)))]
pub(crate) async fn subject_records(
    auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ferry_registry::PredictionRecord>>, ApiError> {
    let id = subject_id(&id)?;
    let result = ctx(&state)?.registry.subject_predictions(id).await.map_err(ApiError::from);
    state.audit(&auth.access, "read_subject", &format!("subject/{id}"), &result).await;
    Ok(Json(result?))
}

#[utoipa::path(delete, path = "/api/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Data subject id")),
    responses((status = 200, description = "Every logged prediction about the subject is erased", body = Erased),
        (status = 403, body = ErrorResponse)))]
pub(crate) async fn erase_subject(
    auth: Authorized<ToAdmin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Erased>, ApiError> {
    let id = subject_id(&id)?;
    let result = ctx(&state)?.registry.erase_subject(id).await.map_err(ApiError::from);
    let outcome = match &result {
        Ok(n) => format!("ok: {n} record(s) erased"),
        Err(e) => format!("failed: {}", e.message()),
    };
    if let Err(e) =
        ctx(&state)?.registry.audit(&auth.access.actor, "erase_subject", &format!("subject/{id}"), &outcome).await
    {
        tracing::error!(error = %e, "could not audit an erasure");
    }
    Ok(Json(Erased { subject: id.to_owned(), erased: result? }))
}
