//! Transport-neutral error kinds with stable codes.

use serde::Serialize;

/// What kind of failure an error is, independent of the transport that reports it.
///
/// The server maps each kind to an HTTP status and a gRPC code in one exhaustive table, so adding a variant forces a
/// decision there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named model, version or resource does not exist.
    NotFound,
    /// The caller sent something malformed or inconsistent with the model.
    InvalidInput,
    /// The request is larger than a configured limit.
    PayloadTooLarge,
    /// No valid credentials were presented.
    Unauthenticated,
    /// Credentials are valid but do not allow this action.
    PermissionDenied,
    /// The caller exceeded a rate limit or quota.
    RateLimited,
    /// The server is at capacity (a full queue); retrying later may succeed.
    Overloaded,
    /// The server or model is not ready (loading, draining).
    Unavailable,
    /// The request's deadline passed before it could be served.
    Timeout,
    /// The request conflicts with the current state (a duplicate, a resource in use).
    Conflict,
    /// A fault of ferry itself; details go to the log, not to the caller.
    Internal,
}

impl ErrorKind {
    /// A stable snake_case code for logs, metrics and API consumers.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidInput => "invalid_input",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::Internal => "internal",
        }
    }
}

/// Errors that know which [`ErrorKind`] they are.
pub trait HasErrorKind {
    /// The transport-neutral kind of this error.
    fn kind(&self) -> ErrorKind;
}
