//! The model repository extension (Triton's): index, load and unload the models of the configured repository.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::auth::{Authorized, ToDeploy, ToRead};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
}

async fn index(auth: Authorized<ToRead>, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let entries: Vec<Value> = state
        .index()
        .await?
        .into_iter()
        .filter(|e| auth.access.covers(&e.name))
        .map(|e| {
            let state = if e.ready { "READY" } else { "UNAVAILABLE" };
            json!({"name": e.name, "version": e.version.to_string(), "state": state, "reason": e.reason})
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

async fn load(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.on(&name).await?;
    let result = state.load_model(&name).await;
    state.audit(&auth.access, "load", &format!("model/{name}"), &result).await;
    result?;
    Ok(Json(json!({})))
}

async fn unload(
    auth: Authorized<ToDeploy>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.on(&name).await?;
    let result = state.unload_model(&name).await;
    state.audit(&auth.access, "unload", &format!("model/{name}"), &result).await;
    result?;
    Ok(Json(json!({})))
}
