//! The gRPC front end: `inference.GRPCInferenceService` on tonic, byte-compatible with KServe's
//! `grpc_predict_v2.proto` and Triton's extensions for statistics and the model repository.

use std::future::Future;
use std::time::Duration;

use ferry_auth::{Access, Permission};
use ferry_protocol::grpc::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use ferry_protocol::grpc::{decode_model_infer, encode_model_infer, pb};
use ferry_serving::InferRequest;
use ferry_types::{ErrorKind, TensorSpec};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

use crate::{ApiError, AppState, EXTENSIONS};

/// The gRPC status code of each error kind. Exhaustive on purpose: a new kind must be decided here.
#[must_use]
pub const fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::PayloadTooLarge | ErrorKind::RateLimited => Code::ResourceExhausted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Overloaded | ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Conflict => Code::AlreadyExists,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(code_of(e.kind()), e.message().to_owned())
    }
}

fn status(e: impl Into<ApiError>) -> Status {
    Status::from(e.into())
}

/// Parses the `grpc-timeout` header (`<digits><unit>`, unit one of H M S m u n).
fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn version_arg(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn tensor_meta(specs: &[TensorSpec]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| pb::model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: s.datatype.as_str().to_owned(),
            shape: s.shape.clone(),
        })
        .collect()
}

/// The service, over the same state as the HTTP routes.
#[derive(Debug, Clone)]
pub struct GrpcService {
    state: AppState,
}

impl GrpcService {
    /// The caller's access from the `authorization` metadata, checked for `permission` (and `model`'s scope).
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        permission: Permission,
        model: Option<&str>,
    ) -> Result<Access, Status> {
        let headers = request.metadata().clone().into_headers();
        let access = crate::auth::authenticate(&self.state, &headers, permission).await.map_err(Status::from)?;
        let checked = match model {
            Some(m) => access.require_on(permission, m),
            None => access.require(permission),
        };
        if let Err(e) = checked {
            if permission != Permission::Infer {
                let target = format!("grpc {}", model.unwrap_or("-"));
                crate::auth::audit_failure(&self.state, &access.actor, &target, "denied").await;
            }
            return Err(Status::from(crate::ApiError::from(e)));
        }
        Ok(access)
    }

    fn not_ready() -> Status {
        Status::unavailable("the server is not ready: models are still loading, or it is shutting down")
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.authorize(&request, Permission::Infer, Some(&request.get_ref().name)).await?;
        let r = request.into_inner();
        let ready = self.state.is_ready() && self.state.repository().get(&r.name, version_arg(&r.version)).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        self.authorize(&request, Permission::Infer, None).await?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "ferry".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.authorize(&request, Permission::Infer, Some(&request.get_ref().name)).await?;
        let r = request.into_inner();
        let model = self.state.repository().get(&r.name, version_arg(&r.version)).map_err(status)?;
        let versions = if r.version.is_empty() {
            self.state.repository().versions_of(&r.name).iter().map(u64::to_string).collect()
        } else {
            vec![model.version().to_string()]
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.name().to_owned(),
            versions,
            platform: model.engine().platform().to_owned(),
            inputs: tensor_meta(&model.signature().inputs),
            outputs: tensor_meta(&model.signature().outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        if !self.state.is_ready() {
            return Err(Self::not_ready());
        }
        self.authorize(&request, Permission::Infer, Some(&request.get_ref().model_name)).await?;
        let deadline = grpc_timeout(&request);
        let log = self.state.registry_context().and_then(|c| c.prediction_log.clone());
        let subject = log
            .as_ref()
            .and_then(|l| request.metadata().get(l.subject_header.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let (model, shadow, variant) = match version_arg(&r.model_version) {
            Some(v) => (self.state.repository().get(&r.model_name, Some(v)).map_err(status)?, None, None),
            // Without a version, the model's deployment picks one (as over HTTP, from the same headers).
            None => {
                let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let override_to = text(ferry_rollout::split::OVERRIDE_HEADER);
                let routed = self
                    .state
                    .repository()
                    .route(&r.model_name, override_to.as_deref(), |header| text(&header.to_ascii_lowercase()))
                    .map_err(status)?;
                (routed.model, routed.shadow, routed.variant.map(|(target, _)| target))
            }
        };
        // Only a version the deployment chose counts in its experiment arm.
        let routed = variant.is_some();
        let decoded = decode_model_infer(r).map_err(status)?;
        let outputs = decoded.outputs.into_iter().map(|o| o.name).collect();
        // The tighter of the protocol's `timeout` parameter and the call's deadline.
        let timeout = match (decoded.timeout, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let started = std::time::Instant::now();
        let log = log.filter(|l| l.wants(model.name()));
        let logged_inputs = log.as_ref().map(|_| decoded.inputs.clone());
        // As over HTTP: a request drawn for the deployment's shadow keeps a copy of its inputs, when there is room.
        let shadow = shadow.and_then(|m| self.state.metrics().shadows.admit(m)).map(|a| (a, decoded.inputs.clone()));
        // As over HTTP: a monitored model's instance keeps its predictions under the request's (or a fresh) id, and a
        // routed request counts them in its version's arm.
        let inference =
            model.infer(InferRequest { inputs: decoded.inputs, outputs, timeout, id: decoded.id, observed: true });
        let (result, arm) = crate::meanwhile(inference, || {
            let quality = self.state.registry_context()?.quality_watch.as_ref()?;
            let target = routed.then(|| quality.target(model.name()))??;
            Some((target, self.state.metrics().performance.arm_recorder(model.name(), model.version())))
        })
        .await;
        let (metrics, elapsed) = (self.state.metrics(), started.elapsed());
        match &result {
            Ok(r) => {
                metrics.observe(
                    model.name(),
                    model.version(),
                    "grpc",
                    routed,
                    "OK",
                    Some((r.queue, r.compute)),
                    elapsed,
                );
            }
            Err(e) => {
                let code = format!("{:?}", code_of(ferry_types::HasErrorKind::kind(e)));
                metrics.observe(model.name(), model.version(), "grpc", routed, &code, None, elapsed);
            }
        }
        let mut response = result.map_err(status)?;
        if let (Some(log), Some(inputs)) = (&log, &logged_inputs) {
            log.record(model.name(), model.version(), subject, inputs, &response.outputs);
        }
        if let Some((admitted, inputs)) = shadow {
            self.state.metrics().shadows.run(admitted, inputs, response.outputs.clone());
        }
        if let Some((target, arm)) = &arm {
            crate::quality::tally_arm(target, &response.outputs, arm);
        }
        let request_id = response.id.take();
        let mut answer =
            Response::new(encode_model_infer(model.name(), &model.version().to_string(), request_id, response.outputs));
        // The variant that answered, as the HTTP response header says it.
        if let Some(value) = variant.and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_str()).ok()) {
            answer.metadata_mut().insert(ferry_rollout::split::OVERRIDE_HEADER, value);
        }
        Ok(answer)
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let access = self.authorize(&request, Permission::Infer, None).await?;
        let r = request.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        if let Some(n) = name {
            access.require_on(Permission::Infer, n).map_err(|e| Status::from(crate::ApiError::from(e)))?;
        }
        let models: Vec<_> = crate::routes::stats::select(&self.state, name, version_arg(&r.version))
            .map_err(Status::from)?
            .into_iter()
            .filter(|m| access.covers(m.name()))
            .collect();
        let model_stats = models.iter().map(|m| crate::routes::stats::to_proto(m)).collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let access = self.authorize(&request, Permission::Read, None).await?;
        let ready_only = request.into_inner().ready;
        let models = self
            .state
            .index()
            .await
            .map_err(Status::from)?
            .into_iter()
            .filter(|e| access.covers(&e.name))
            .filter(|e| !ready_only || e.ready)
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.to_string(),
                state: if e.ready { "READY" } else { "UNAVAILABLE" }.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let access = self.authorize(&request, Permission::Deploy, Some(&request.get_ref().model_name)).await?;
        let name = request.into_inner().model_name;
        let result = self.state.load_model(&name).await;
        self.state.audit(&access, "load", &format!("model/{name}"), &result).await;
        result.map_err(Status::from)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let access = self.authorize(&request, Permission::Deploy, Some(&request.get_ref().model_name)).await?;
        let name = request.into_inner().model_name;
        let result = self.state.unload_model(&name).await;
        self.state.audit(&access, "unload", &format!("model/{name}"), &result).await;
        result.map_err(Status::from)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// tonic refuses a message over `max_decoding_message_size` with OUT_OF_RANGE; the protocol (and Triton) say
/// RESOURCE_EXHAUSTED, which is what clients retry or report as "too large". Rewrites exactly that case.
fn too_large_is_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", tonic::codegen::http::HeaderValue::from_static("8"));
    }
    response
}

/// Serves gRPC on `listener` until `shutdown` resolves, then drains in-flight calls.
///
/// # Errors
/// The transport's error.
pub async fn serve_grpc(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), tonic::transport::Error> {
    let limit = state.limits().max_request_bytes;
    let service = GrpcInferenceServiceServer::new(GrpcService { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted::<tonic::body::Body>))
        .add_service(service)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}
