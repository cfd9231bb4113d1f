//! Shared server state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_serving::ModelRepository;

/// Limits the HTTP front end enforces before anything is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Largest request body in bytes; larger ones get 413.
    pub max_request_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_request_bytes: 64 * 1024 * 1024 }
    }
}

/// What every handler can reach: the loaded models, readiness and limits.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repository: Arc<ModelRepository>,
    ready: AtomicBool,
    limits: ServerLimits,
}

impl AppState {
    /// State over `repository`; not ready until [`AppState::set_ready`].
    #[must_use]
    pub fn new(repository: Arc<ModelRepository>, limits: ServerLimits) -> Self {
        Self { inner: Arc::new(Inner { repository, ready: AtomicBool::new(false), limits }) }
    }

    /// The loaded models.
    #[must_use]
    pub fn repository(&self) -> &ModelRepository {
        &self.inner.repository
    }

    /// Whether every model that should be served is loaded and warmed up.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Marks the server ready (after loading) or not (while draining).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Loads (or reloads) every version of `name` from the catalog, off the async runtime.
    ///
    /// # Errors
    /// Unknown model (404) or its load error (400).
    pub async fn load_model(&self, name: &str) -> Result<(), crate::ApiError> {
        let repository = self.inner.repository.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || repository.load(&name))
            .await
            .map_err(|e| {
                crate::ApiError::new(ferry_types::ErrorKind::Internal, format!("model loading panicked: {e}"))
            })?
            .map_err(crate::ApiError::from)
    }

    /// Unloads every version of `name`; their threads stop off the async runtime once in-flight requests finish.
    ///
    /// # Errors
    /// 404 when `name` is not loaded.
    pub async fn unload_model(&self, name: &str) -> Result<(), crate::ApiError> {
        let removed = self.inner.repository.unload(name)?;
        tokio::task::spawn_blocking(move || drop(removed));
        Ok(())
    }

    /// Request limits.
    #[must_use]
    pub fn limits(&self) -> ServerLimits {
        self.inner.limits
    }
}
