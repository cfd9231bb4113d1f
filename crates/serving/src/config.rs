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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `auto`, `onnxruntime` or `tract`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineChoice>,
    /// Model instances at load, each on its own thread (default `min_instances`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    /// Fewest instances the autoscaler keeps (default `instances`); 0 stops every instance after
    /// `idle_unload_seconds` without requests, and the next request starts one again (a cold start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<usize>,
    /// Most instances the autoscaler starts under queue pressure (default: `min_instances`, i.e. no autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<usize>,
    /// Queued requests per instance that make the autoscaler add one (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_queue_depth: Option<usize>,
    /// Mean queue wait that makes the autoscaler add an instance, in microseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_queue_wait_microseconds: Option<u64>,
    /// Least time between an instance change and the next scale-up, in seconds (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_cooldown_seconds: Option<f64>,
    /// How long the queue must stay empty before an instance stops, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_cooldown_seconds: Option<f64>,
    /// With `min_instances = 0`: seconds without requests before the last instance stops (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_unload_seconds: Option<f64>,
    /// Threads each instance may use inside the engine (default: cores ÷ `max_instances`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// Largest batch (first dimension) one request may carry; 0 means no limit (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// Requests that may wait for an instance before new ones are refused with 503 (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<usize>,
    /// Stack queued requests into one engine run (default true; only for models whose inputs and outputs all have
    /// a variable first dimension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<bool>,
    /// How long a batch may wait for more requests once it has one, in microseconds (default 0: take what is
    /// already queued and run at once, which costs no latency and still forms batches under load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_microseconds: Option<u64>,
    /// Refuse requests with NaN or ±infinity in a floating-point input (default false).
    pub reject_non_finite: Option<bool>,
    /// Most elements one input tensor may hold (default 16,777,216).
    pub max_tensor_elements: Option<usize>,
    /// Longest BYTES element of an input, in bytes (default 1 MiB).
    pub max_string_bytes: Option<usize>,
    /// Batch sizes to close a batch at without waiting longer (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_batch_sizes: Option<Vec<usize>>,
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
            min_instances: self.min_instances.or(defaults.min_instances),
            max_instances: self.max_instances.or(defaults.max_instances),
            scale_up_queue_depth: self.scale_up_queue_depth.or(defaults.scale_up_queue_depth),
            scale_up_queue_wait_microseconds: self
                .scale_up_queue_wait_microseconds
                .or(defaults.scale_up_queue_wait_microseconds),
            scale_up_cooldown_seconds: self.scale_up_cooldown_seconds.or(defaults.scale_up_cooldown_seconds),
            scale_down_cooldown_seconds: self.scale_down_cooldown_seconds.or(defaults.scale_down_cooldown_seconds),
            idle_unload_seconds: self.idle_unload_seconds.or(defaults.idle_unload_seconds),
            intra_op_threads: self.intra_op_threads.or(defaults.intra_op_threads),
            max_batch_size: self.max_batch_size.or(defaults.max_batch_size),
            max_queue_size: self.max_queue_size.or(defaults.max_queue_size),
            dynamic_batching: self.dynamic_batching.or(defaults.dynamic_batching),
            max_queue_delay_microseconds: self.max_queue_delay_microseconds.or(defaults.max_queue_delay_microseconds),
            preferred_batch_sizes: self
                .preferred_batch_sizes
                .clone()
                .or_else(|| defaults.preferred_batch_sizes.clone()),
            reject_non_finite: self.reject_non_finite.or(defaults.reject_non_finite),
            max_tensor_elements: self.max_tensor_elements.or(defaults.max_tensor_elements),
            max_string_bytes: self.max_string_bytes.or(defaults.max_string_bytes),
        }
    }

    /// Fills in built-in defaults sized to this machine's cores and checks the values.
    ///
    /// # Errors
    /// [`ServingError::InvalidConfig`] when a value is out of range, or instances × threads exceed the cores.
    pub fn resolve(&self) -> Result<ResolvedModelConfig, String> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if let Some(n) = self.instances
            && (n == 0 || n > 64)
        {
            return Err(format!("instances must be 1 to 64, got {n}"));
        }
        let min = self.min_instances.unwrap_or_else(|| self.instances.unwrap_or(1));
        let max = self.max_instances.unwrap_or_else(|| min.max(self.instances.unwrap_or(1)));
        if max == 0 || max > 64 {
            return Err(format!("max_instances must be 1 to 64, got {max}"));
        }
        if min > max {
            return Err(format!("min_instances ({min}) is more than max_instances ({max})"));
        }
        // At least one instance at load: a model that cannot run fails there, not on its first request.
        let instances = self.instances.unwrap_or(min).clamp(min.max(1), max);
        let seconds = |key: &str, value: Option<f64>, default: f64| -> Result<std::time::Duration, String> {
            let v = value.unwrap_or(default);
            std::time::Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| *d <= std::time::Duration::from_secs(30 * 86_400))
                .ok_or_else(|| format!("{key} must be 0 to 2592000 seconds, got {v}"))
        };
        let scaling = ferry_rollout::autoscale::ScalePolicy {
            min,
            max,
            queue_depth: self.scale_up_queue_depth.unwrap_or(8).max(1),
            queue_wait: std::time::Duration::from_micros(self.scale_up_queue_wait_microseconds.unwrap_or(5_000)),
            up_cooldown: seconds("scale_up_cooldown_seconds", self.scale_up_cooldown_seconds, 5.0)?,
            down_cooldown: seconds("scale_down_cooldown_seconds", self.scale_down_cooldown_seconds, 60.0)?,
            idle_timeout: seconds("idle_unload_seconds", self.idle_unload_seconds, 300.0)?,
        };
        // Sized for the most instances, so that scaling up never oversubscribes the cores.
        let intra_op_threads = self.intra_op_threads.unwrap_or((cores / max).max(1));
        if intra_op_threads == 0 || intra_op_threads > 256 {
            return Err(format!("intra_op_threads must be 1 to 256, got {intra_op_threads}"));
        }
        let max_queue_size = self.max_queue_size.unwrap_or(1024);
        if max_queue_size == 0 {
            return Err("max_queue_size must be at least 1".into());
        }
        let max_batch_size = self.max_batch_size.filter(|&b| b > 0);
        let batch_rows_cap = max_batch_size.unwrap_or(DEFAULT_DYNAMIC_BATCH_ROWS);
        let mut preferred_batch_sizes = self.preferred_batch_sizes.clone().unwrap_or_default();
        preferred_batch_sizes.sort_unstable();
        preferred_batch_sizes.dedup();
        if let Some(&bad) = preferred_batch_sizes.iter().find(|&&p| p == 0 || p > batch_rows_cap) {
            return Err(format!("preferred_batch_sizes must be 1 to {batch_rows_cap} (the batch cap), got {bad}"));
        }
        let delay_us = self.max_queue_delay_microseconds.unwrap_or(0);
        if delay_us > 10_000_000 {
            return Err(format!("max_queue_delay_microseconds must be at most 10000000 (10 s), got {delay_us}"));
        }
        Ok(ResolvedModelConfig {
            engine: self.engine.unwrap_or_default(),
            instances,
            scaling,
            intra_op_threads,
            max_batch_size,
            max_queue_size,
            oversubscribed: max * intra_op_threads > cores,
            dynamic_batching: self.dynamic_batching.unwrap_or(true),
            max_queue_delay: std::time::Duration::from_micros(delay_us),
            preferred_batch_sizes,
            batch_rows_cap,
            reject_non_finite: self.reject_non_finite.unwrap_or(false),
            max_tensor_elements: self.max_tensor_elements.unwrap_or(16 * 1024 * 1024).max(1),
            max_string_bytes: self.max_string_bytes.unwrap_or(1024 * 1024),
        })
    }
}

/// Rows a dynamic batch may reach when the model sets no `max_batch_size`.
pub const DEFAULT_DYNAMIC_BATCH_ROWS: usize = 64;

/// Model settings with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModelConfig {
    /// The engine choice.
    pub engine: EngineChoice,
    /// Instances at load.
    pub instances: usize,
    /// Between how many instances the autoscaler moves, and when.
    pub scaling: ferry_rollout::autoscale::ScalePolicy,
    /// Threads per instance inside the engine.
    pub intra_op_threads: usize,
    /// Largest batch per request, if limited.
    pub max_batch_size: Option<usize>,
    /// Queue capacity.
    pub max_queue_size: usize,
    /// Whether instances × threads exceed the cores (allowed when set explicitly, but logged).
    pub oversubscribed: bool,
    /// Whether queued requests are stacked into one run (when the model allows it).
    pub dynamic_batching: bool,
    /// How long a batch waits for more requests.
    pub max_queue_delay: std::time::Duration,
    /// Sizes that close a batch at once, ascending.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most rows one dynamic batch may stack.
    pub batch_rows_cap: usize,
    /// Whether NaN and ±infinity inputs are refused.
    pub reject_non_finite: bool,
    /// Most elements per input tensor.
    pub max_tensor_elements: usize,
    /// Longest BYTES element.
    pub max_string_bytes: usize,
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
        let bad = ModelConfig { min_instances: Some(3), max_instances: Some(2), ..ModelConfig::default() };
        assert!(bad.resolve().expect_err("min above max").contains("min_instances (3)"));
        let bad = ModelConfig { idle_unload_seconds: Some(-1.0), ..ModelConfig::default() };
        assert!(bad.resolve().expect_err("negative").contains("idle_unload_seconds"));
    }

    #[test]
    fn instance_bounds_resolve_from_whichever_keys_are_set() {
        let r = |c: ModelConfig| c.resolve().expect("valid");
        let fixed = r(ModelConfig { instances: Some(2), ..ModelConfig::default() });
        assert_eq!((fixed.instances, fixed.scaling.min, fixed.scaling.max), (2, 2, 2));
        assert!(!fixed.scaling.scales());
        let up = r(ModelConfig { max_instances: Some(4), ..ModelConfig::default() });
        assert_eq!((up.instances, up.scaling.min, up.scaling.max), (1, 1, 4));
        assert_eq!(
            up.intra_op_threads,
            (std::thread::available_parallelism().map_or(1, std::num::NonZero::get) / 4).max(1)
        );
        let zero = r(ModelConfig { min_instances: Some(0), ..ModelConfig::default() });
        assert_eq!((zero.instances, zero.scaling.min, zero.scaling.max), (1, 0, 1), "one instance at load");
    }
}
