//! Route table: one module per resource.

mod deployments;
mod keys;
pub(crate) mod management;
mod monitoring;
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), concurrency_limit))
        .with_state(state)
}

/// Sheds load beyond `max_concurrent_requests` with 503 at once, rather than queueing without bound; health checks
/// always answer, so an overloaded replica is not mistaken for a dead one.
async fn concurrency_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().starts_with("/v2/health/") {
        return next.run(request).await;
    }
    match state.concurrency().clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "the server is handling its limit of {} requests at once; retry",
                state.limits().max_concurrent_requests
            ),
        )
        .into_response(),
    }
}
