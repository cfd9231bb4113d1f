//! Serving errors.

use std::path::PathBuf;

use ferry_engine::EngineError;
use ferry_types::{ErrorKind, HasErrorKind};

/// What went wrong loading a model or serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// No model of this name is loaded.
    #[error("model {name:?} is not found")]
    ModelNotFound {
        /// Requested name.
        name: String,
    },
    /// The model exists but not this version.
    #[error("model {name:?} has no version {version}")]
    VersionNotFound {
        /// Model name.
        name: String,
        /// Requested version text.
        version: String,
    },
    /// The request does not fit the model's signature.
    #[error("{message}")]
    InvalidInput {
        /// Precise description, naming the input or output.
        message: String,
    },
    /// The model's queue is full.
    #[error("model {name:?} is overloaded: {queued} requests are already waiting; retry later")]
    Overloaded {
        /// Model name.
        name: String,
        /// Queue capacity.
        queued: usize,
    },
    /// The request's timeout passed while it waited.
    #[error("the request timed out after waiting {waited_ms} ms in the queue of model {name:?}")]
    Timeout {
        /// Model name.
        name: String,
        /// Milliseconds waited.
        waited_ms: u128,
    },
    /// The model is being unloaded or the server is stopping.
    #[error("model {name:?} is unloading")]
    Unloading {
        /// Model name.
        name: String,
    },
    /// The version has no instance running (it scaled to zero or was evicted) and none could start.
    #[error("model {name:?} has no instance running and cannot start one: {message}")]
    NoInstance {
        /// Model name.
        name: String,
        /// Why (the memory budget is taken by busy models, or the instance failed to load).
        message: String,
    },
    /// The engine failed.
    #[error("model {name:?}: {source}")]
    Engine {
        /// Model name.
        name: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A settings file is invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model could not be found, read or configured.
    #[error("cannot load model {name:?} from {path}: {message}")]
    Load {
        /// Model name.
        name: String,
        /// Model file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl HasErrorKind for ServingError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ModelNotFound { .. } | Self::VersionNotFound { .. } => ErrorKind::NotFound,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::Overloaded { .. } => ErrorKind::Overloaded,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Unloading { .. } | Self::NoInstance { .. } => ErrorKind::Unavailable,
            Self::Engine { source, .. } => source.kind(),
            Self::Config { .. } | Self::Load { .. } => ErrorKind::InvalidInput,
        }
    }
}
