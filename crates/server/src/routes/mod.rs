//! Route table: one module per resource.

mod keys;
pub(crate) mod management;
mod oip;
mod repository;
pub(crate) mod stats;

use axum::Json;
use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use ferry_protocol::ErrorBody;
use ferry_types::ErrorKind;

use crate::{ApiError, AppState};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(oip::routes())
        .merge(stats::routes())
        .merge(repository::routes())
        .merge(management::routes())
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::new(ErrorKind::NotFound, format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            let message = format!("{method} is not allowed on {}", uri.path());
            (StatusCode::METHOD_NOT_ALLOWED, Json(ErrorBody { error: &message })).into_response()
        })
        .with_state(state)
}
