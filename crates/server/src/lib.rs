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
mod observed;
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

/// Runs `work` while `inference` is under way: `inference` is polled once first, which queues the job for the model,
/// so that the model computes while this task does `work` (bookkeeping that needs no outputs, such as making a
/// request id), instead of after the answer, where it delayed the response and, under load, left the model smaller
/// batches.
pub(crate) async fn meanwhile<F: Future, T>(inference: F, work: impl FnOnce() -> T) -> (F::Output, T) {
    let mut inference = std::pin::pin!(inference);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(inference.as_mut().poll(cx))).await;
    let done = work();
    let output = match first {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => inference.await,
    };
    (output, done)
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn meanwhile_queues_the_inference_before_the_work_and_returns_both() {
        // An "inference" that is queued on its first poll and answers once the work has run.
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let inference = {
            let polls = polls.clone();
            async move {
                polls.fetch_add(1, Ordering::SeqCst);
                rx.await.unwrap_or(0)
            }
        };
        let (answer, work) = crate::meanwhile(inference, || {
            let queued_first = polls.load(Ordering::SeqCst) == 1;
            tx.send(7).map(|()| queued_first)
        })
        .await;
        assert_eq!((answer, work), (7, Ok(true)), "the work ran after the inference was queued");
        // An inference ready at once is not polled again.
        let (answer, work) = crate::meanwhile(async { 3 }, || "done").await;
        assert_eq!((answer, work), (3, "done"));
    }
}
