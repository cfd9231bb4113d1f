//! Loaded models and how requests reach them: the engine loader (ONNX Runtime or tract, per model), model instances
//! on their own OS threads fed by a bounded queue, input validation against the model's signature, warm-up, and the
//! repository of every loaded model and version.
//!
//! This crate is the only one that names concrete engines; it knows nothing of HTTP, gRPC or the wire format.

mod config;
mod error;
mod loader;
mod model;
mod pool;
mod repository;
mod scheduler;
mod sources;
mod stats;

pub use config::{EngineChoice, ModelConfig, ResolvedModelConfig};
pub use error::ServingError;
pub use loader::{EngineKind, EngineSettings, open_engine, signature_mismatch};
pub use model::{InferRequest, InferResponse, LoadedModel};
pub use pool::{MemoryBudget, resident_bytes, set_allocator_release};
pub use repository::{IndexEntry, ModelRepository, ModelSummary, Routed};
pub use scheduler::{ObservedRequest, ObservedRun, RunObserver};
pub use sources::{ModelSource, sources_from_files, sources_from_repository};
pub use stats::{BatchStats, CountDuration, ScalingStats, StatsSnapshot};
