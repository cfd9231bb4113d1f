//! Shared server state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_serving::ModelRepository;

use crate::deploy::RegistryContext;

/// Limits the HTTP front end enforces before anything is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Largest request body in bytes; larger ones get 413.
    pub max_request_bytes: usize,
    /// Requests handled at once over HTTP; more get 503 at once (health checks are exempt).
    pub max_concurrent_requests: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_request_bytes: 64 * 1024 * 1024, max_concurrent_requests: 4096 }
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
    registry: Option<Arc<RegistryContext>>,
    concurrency: Arc<tokio::sync::Semaphore>,
    metrics: crate::metrics::Metrics,
}

impl AppState {
    /// State over `repository`; not ready until [`AppState::set_ready`].
    #[must_use]
    pub fn new(repository: Arc<ModelRepository>, limits: ServerLimits) -> Self {
        Self::with_registry(repository, limits, None)
    }

    /// State over `repository` that also serves and manages the models of a registry.
    #[must_use]
    pub fn with_registry(
        repository: Arc<ModelRepository>,
        limits: ServerLimits,
        registry: Option<RegistryContext>,
    ) -> Self {
        let registry = registry.map(Arc::new);
        let concurrency = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
        let metrics = crate::metrics::Metrics::default();
        Self {
            inner: Arc::new(Inner {
                repository,
                ready: AtomicBool::new(false),
                limits,
                registry,
                concurrency,
                metrics,
            }),
        }
    }

    /// The registry, if this server has one.
    #[must_use]
    pub fn registry_context(&self) -> Option<&Arc<RegistryContext>> {
        self.inner.registry.as_ref()
    }

    /// The shared repository handle.
    #[must_use]
    pub fn repository_arc(&self) -> Arc<ModelRepository> {
        self.inner.repository.clone()
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

    /// Loads (or reloads) every version of `name` from the catalog, off the async runtime; a registry model loads
    /// the version its serving alias points at.
    ///
    /// # Errors
    /// Unknown model (404) or its load error (400).
    pub async fn load_model(&self, name: &str) -> Result<(), crate::ApiError> {
        if !self.inner.repository.in_catalog(name)
            && let Some(ctx) = self.registry_context()
        {
            // 404 for a model the registry does not have either, rather than a silent no-op.
            ctx.registry.get_model(name).await?;
            ctx.hold(name, false);
            return ctx.sync_model(self, name).await.map(drop);
        }
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
        if !self.inner.repository.in_catalog(name)
            && let Some(ctx) = self.registry_context()
        {
            // A registry model stays unloaded until it is loaded again, whatever reconciling would do.
            ctx.hold(name, true);
        }
        tokio::task::spawn_blocking(move || drop(removed));
        Ok(())
    }

    /// Every known model version: the catalog's, the registry's and whatever is loaded.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn index(&self) -> Result<Vec<ferry_serving::IndexEntry>, crate::ApiError> {
        let mut entries = self.inner.repository.index();
        if let Some(ctx) = self.registry_context() {
            for model in ctx.registry.list_models().await? {
                for v in ctx.registry.list_versions(&model.name).await? {
                    if entries.iter().any(|e| e.name == v.model && e.version == v.version) {
                        continue;
                    }
                    let reason = if v.aliases.contains(&ctx.serve_alias) {
                        "unloaded".to_owned()
                    } else {
                        format!("not the {:?} version", ctx.serve_alias)
                    };
                    entries.push(ferry_serving::IndexEntry { name: v.model, version: v.version, ready: false, reason });
                }
            }
            entries.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        }
        Ok(entries)
    }

    /// Appends an audit record for a management action and its outcome (no-op without a registry). A failure to
    /// audit is logged, not returned: the action already happened.
    pub async fn audit<T>(
        &self,
        access: &ferry_auth::Access,
        action: &str,
        target: &str,
        result: &Result<T, crate::ApiError>,
    ) {
        let Some(ctx) = self.registry_context() else { return };
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {}", e.message()),
        };
        if let Err(e) = ctx.registry.audit(&access.actor, action, target, &outcome).await {
            tracing::error!(error = %e, action, target, "could not append to the audit log");
        }
    }

    /// The Prometheus metrics.
    #[must_use]
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// The permits of the concurrency limit.
    #[must_use]
    pub fn concurrency(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.concurrency
    }

    /// Request limits.
    #[must_use]
    pub fn limits(&self) -> ServerLimits {
        self.inner.limits
    }
}
