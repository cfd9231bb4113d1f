//! Route table: one module per resource.

mod oip;

use axum::Router;
use axum::http::{Method, Uri};
use ferry_types::ErrorKind;

use crate::{ApiError, AppState};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(oip::routes())
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::new(ErrorKind::NotFound, format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::new(ErrorKind::InvalidInput, format!("{method} is not allowed on {}", uri.path()))
        })
        .with_state(state)
}
