//! Reading request bodies within the size limit.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use ferry_types::ErrorKind;

use crate::ApiError;

/// The `Content-Length` a request declares, if any (and parseable).
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// Reads the whole body, refusing with 413 as soon as it is known to exceed `limit` bytes (from `Content-Length`
/// before reading anything, or while reading a chunked body).
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::new(ErrorKind::PayloadTooLarge, format!("the request body exceeds the limit of {limit} bytes"));
    if let Some(len) = declared_length(headers)
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else {
            ApiError::new(ErrorKind::InvalidInput, format!("could not read the request body: {e}"))
        }
    })
}
