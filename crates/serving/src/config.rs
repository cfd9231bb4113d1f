//! Per-model settings: server-wide defaults, overridden by a model's own `config.toml`.

use serde::{Deserialize, Serialize};

use crate::ServingError;

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// ONNX Runtime when its library is found, else tract.
    #[default]
    Auto,
    /// ONNX Runtime, or fail.
    Onnxruntime,
    /// tract, or fail.
    Tract,
}

/// Model settings as written in `ferry.toml` (`[models]`, the defaults) or a model's `config.toml`; unset fields
/// fall back to the layer below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `auto`, `onnxruntime` or `tract`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineChoice>,
    /// Model instances, each on its own thread (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    /// Threads each instance may use inside the engine (default: cores ÷ instances, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// Largest batch (first dimension) one request may carry; 0 means no limit (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// Requests that may wait for an instance before new ones are refused with 503 (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<usize>,
}

impl ModelConfig {
    /// Reads a model's `config.toml`.
    ///
    /// # Errors
    /// [`ServingError::Config`] naming the file and the offending key.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ServingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServingError::Config { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| ServingError::Config { path: path.to_owned(), message: e.to_string() })
    }

    /// This layer's values where set, else `defaults`'.
    #[must_use]
    pub fn or(&self, defaults: &Self) -> Self {
        Self {
            engine: self.engine.or(defaults.engine),
            instances: self.instances.or(defaults.instances),
            intra_op_threads: self.intra_op_threads.or(defaults.intra_op_threads),
            max_batch_size: self.max_batch_size.or(defaults.max_batch_size),
            max_queue_size: self.max_queue_size.or(defaults.max_queue_size),
        }
    }

    /// Fills in built-in defaults sized to this machine's cores and checks the values.
    ///
    /// # Errors
    /// [`ServingError::InvalidConfig`] when a value is out of range, or instances × threads exceed the cores.
    pub fn resolve(&self) -> Result<ResolvedModelConfig, String> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let instances = self.instances.unwrap_or(1);
        if instances == 0 || instances > 64 {
            return Err(format!("instances must be 1 to 64, got {instances}"));
        }
        let intra_op_threads = self.intra_op_threads.unwrap_or((cores / instances).max(1));
        if intra_op_threads == 0 || intra_op_threads > 256 {
            return Err(format!("intra_op_threads must be 1 to 256, got {intra_op_threads}"));
        }
        let max_queue_size = self.max_queue_size.unwrap_or(1024);
        if max_queue_size == 0 {
            return Err("max_queue_size must be at least 1".into());
        }
        Ok(ResolvedModelConfig {
            engine: self.engine.unwrap_or_default(),
            instances,
            intra_op_threads,
            max_batch_size: self.max_batch_size.filter(|&b| b > 0),
            max_queue_size,
            oversubscribed: instances * intra_op_threads > cores,
        })
    }
}

/// Model settings with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedModelConfig {
    /// The engine choice.
    pub engine: EngineChoice,
    /// Instances.
    pub instances: usize,
    /// Threads per instance inside the engine.
    pub intra_op_threads: usize,
    /// Largest batch per request, if limited.
    pub max_batch_size: Option<usize>,
    /// Queue capacity.
    pub max_queue_size: usize,
    /// Whether instances × threads exceed the cores (allowed when set explicitly, but logged).
    pub oversubscribed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_within_the_cores() {
        let r = ModelConfig::default().resolve().expect("defaults are valid");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(r.engine, EngineChoice::Auto);
        assert_eq!(r.instances, 1);
        assert!(r.instances * r.intra_op_threads <= cores);
        assert!(!r.oversubscribed);
        assert_eq!(r.max_batch_size, None);
    }

    #[test]
    fn a_model_file_overrides_the_server_defaults() {
        let server = ModelConfig { engine: Some(EngineChoice::Tract), instances: Some(2), ..ModelConfig::default() };
        let model: ModelConfig = toml::from_str("instances = 1\nmax_batch_size = 8").expect("parse");
        let merged = model.or(&server);
        assert_eq!(merged.engine, Some(EngineChoice::Tract));
        assert_eq!(merged.instances, Some(1));
        assert_eq!(merged.max_batch_size, Some(8));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ModelConfig>("instance = 2").is_err());
        assert!(toml::from_str::<ModelConfig>("engine = \"gpu\"").is_err());
        assert!(ModelConfig { instances: Some(0), ..ModelConfig::default() }.resolve().is_err());
    }
}
