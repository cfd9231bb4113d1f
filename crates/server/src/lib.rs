//! The HTTP front end: the Open Inference Protocol REST routes on axum, the error → status table, readiness and
//! graceful drain.
//!
//! [`app`] is the one constructor of the router, used by `ferry serve` and by tests alike. Handlers decode the wire
//! with `ferry-protocol` and hand typed requests to `ferry-serving`; no other crate sees HTTP types.

mod alerting;
mod auth;
mod body;
mod deploy;
mod error;
mod grpc;
mod limits;
pub mod metrics;
mod performance;
mod predlog;
mod quality;
pub mod rollouts;
pub(crate) mod routes;
mod shadow;
mod state;
mod tls;
mod watch;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use alerting::{Alerting, AlertingConfig, AlertsView, Webhook, signature as webhook_signature};
pub use auth::{Authorized, KEY_REFRESH, KeyCache, Need, ToAdmin, ToDeploy, ToInfer, ToRead, authenticate};
pub use deploy::{RegistryContext, Synced};
pub use error::{ApiError, status_of};
pub use grpc::{GrpcService, code_of, serve_grpc};
pub use limits::{DefaultLimits, UsageLimiter};
pub use performance::{PerformanceConfig, VersionPerformance};
pub use predlog::{PredictionLog, PredictionLogConfig};
pub use quality::{FeedbackItem, FeedbackReport, ModelQuality, QualityConfig, QualityWatch, fresh_request_id};
pub use routes::management::ManagementApi;
pub use shadow::{ShadowStats, Shadows};
pub use state::{AppState, ServerLimits};
pub use tls::{TlsError, TlsFiles};
pub use watch::{DriftWatch, DriftWatchConfig, ModelDrift};

/// Protocol extensions ferry implements, as `GET /v2` lists them.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "statistics", "model_repository"];

/// The router with every route, bound to `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting and waits for in-flight
/// requests to finish.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await
}

/// [`serve`] over TLS (rustls): stops accepting when `shutdown` resolves, then waits for in-flight requests.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(None);
    });
    let listener = listener.into_std()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
    axum_server::from_tcp_rustls(listener, tls)?
        .handle(handle)
        .serve(app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
}
