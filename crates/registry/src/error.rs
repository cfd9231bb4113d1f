//! Registry errors, each with the kind that decides its status code.

use ferry_types::{ErrorKind, HasErrorKind};

/// What went wrong in the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such model, version or alias.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (an alias points at the version, the alias moved, …).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (bad package, bad name).
    #[error("{0}")]
    Invalid(String),
    /// The upload is larger than allowed.
    #[error("the package is larger than the {limit}-byte upload limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The database failed.
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("registry database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The artifact store failed.
    #[error("artifact store: {0}")]
    Artifacts(String),
    /// An encrypted package cannot be read: no master key, the wrong one, or the blob or its key file was altered.
    #[error("{0}")]
    Encryption(String),
    /// Local file I/O failed.
    #[error("{0}")]
    Io(String),
}

impl HasErrorKind for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            Self::Database(_) | Self::Migrate(_) | Self::Artifacts(_) | Self::Io(_) => ErrorKind::Internal,
            // The server's own configuration or storage is at fault, not the request; the message says which.
            Self::Encryption(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<object_store::Error> for RegistryError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Self::NotFound(format!("artifact {path} is missing")),
            e => Self::Artifacts(e.to_string()),
        }
    }
}
