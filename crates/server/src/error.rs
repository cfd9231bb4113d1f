//! Errors as HTTP responses: one table from error kind to status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_engine::error_chain;
use ferry_types::{ErrorKind, HasErrorKind};

/// An error on its way to the caller: a kind and a message.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error of `kind` with `message` shown to the caller.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after: None }
    }

    /// Tells the caller when to retry (seconds), for 429 and 503.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The `Retry-After` seconds, if set.
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message shown to the caller.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: HasErrorKind + std::error::Error + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        let kind = e.kind();
        let message = if kind == ErrorKind::Internal {
            // The caller gets a generic message; the whole chain goes to the log.
            tracing::error!(error = %error_chain(&e), "internal error");
            "internal server error; the details are in the server log".to_owned()
        } else {
            error_chain(&e)
        };
        Self { kind, message, retry_after: None }
    }
}

/// The HTTP status of each error kind. Exhaustive on purpose: a new kind must be decided here.
#[must_use]
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        let body = serde_json::to_vec(&ferry_protocol::ErrorBody { error: &self.message }).unwrap_or_default();
        let mut response =
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self.kind, ErrorKind::Overloaded | ErrorKind::Unavailable | ErrorKind::RateLimited) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after.unwrap_or(1)));
        }
        response
    }
}
