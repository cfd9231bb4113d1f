//! Prediction logging for models that opt in: the inputs and outputs of each answered request, with the data subject
//! named by a configurable header, kept for a retention period and erasable per subject.
//!
//! Off the hot path: the handler only copies what is logged into a bounded channel (dropping and counting when it is
//! full, never blocking a request); a background task batches the records into the registry database, and another
//! deletes expired ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_protocol::encode_infer_response;
use ferry_registry::{PredictionRecord, Registry};
use ferry_types::NamedTensor;
use serde_json::Value;
use tokio::sync::mpsc;

/// What is logged and for how long.
#[derive(Debug, Clone)]
pub struct PredictionLogConfig {
    /// Models whose predictions are logged (`*` for all).
    pub models: Vec<String>,
    /// The request header naming the data subject.
    pub subject_header: String,
    /// Tensor names whose values are never stored (shape and datatype are).
    pub redact: Vec<String>,
    /// How long records are kept.
    pub retention: Duration,
}

/// The running log.
#[derive(Debug)]
pub struct PredictionLog {
    models: HashSet<String>,
    all: bool,
    /// The subject header, lowercase.
    pub subject_header: String,
    redact: HashSet<String>,
    tx: mpsc::Sender<PredictionRecord>,
    dropped: AtomicU64,
}

/// Records waiting to be written; past this, new ones are dropped (and counted).
const BUFFER: usize = 10_000;

impl PredictionLog {
    /// Starts the writer and the retention task on the current runtime.
    #[must_use]
    pub fn start(config: PredictionLogConfig, registry: Registry) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<PredictionRecord>(BUFFER);
        let writer = registry.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                if let Err(e) = writer.insert_predictions(&batch).await {
                    tracing::error!(error = %e, records = batch.len(), "could not store logged predictions");
                }
                batch.clear();
            }
        });
        let retention = config.retention;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60).min(retention.max(Duration::from_secs(1))));
            loop {
                tick.tick().await;
                let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match registry.expire_predictions(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "expired logged predictions past their retention"),
                    Err(e) => tracing::warn!(error = %e, "could not expire logged predictions"),
                }
            }
        });
        Arc::new(Self {
            all: config.models.iter().any(|m| m == "*"),
            models: config.models.into_iter().collect(),
            subject_header: config.subject_header.to_ascii_lowercase(),
            redact: config.redact.into_iter().collect(),
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether `model`'s predictions are logged.
    #[must_use]
    pub fn wants(&self, model: &str) -> bool {
        self.all || self.models.contains(model)
    }

    /// Records dropped because the buffer was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one prediction (never blocks).
    pub fn record(
        &self,
        model: &str,
        version: u64,
        subject: Option<String>,
        inputs: &[NamedTensor],
        outputs: &[NamedTensor],
    ) {
        let record = PredictionRecord {
            id: format!("{:016x}{:08x}", now_ms(), crate::predlog::random_u32()),
            model: model.to_owned(),
            version,
            subject,
            at: now_ms(),
            request: self.encode(model, inputs),
            response: self.encode(model, outputs),
        };
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tensors as Open Inference Protocol JSON, with redacted ones reduced to name, datatype and shape.
    fn encode(&self, model: &str, tensors: &[NamedTensor]) -> String {
        let pairs: Vec<(NamedTensor, bool)> = tensors.iter().map(|t| (t.clone(), false)).collect();
        let Ok(encoded) = encode_infer_response(model, "", None, &pairs) else { return "[]".into() };
        let mut value: Value = serde_json::from_slice(&encoded.body).unwrap_or(Value::Null);
        let mut list = value.get_mut("outputs").map(Value::take).unwrap_or(Value::Array(vec![]));
        if let Value::Array(items) = &mut list {
            for item in items {
                let redacted = item.get("name").and_then(Value::as_str).is_some_and(|n| self.redact.contains(n));
                if redacted && let Some(obj) = item.as_object_mut() {
                    obj.insert("data".into(), Value::String("[redacted]".into()));
                }
            }
        }
        list.to_string()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::try_from(now_ms()).unwrap_or(0));
    u32::try_from(h.finish() & 0xffff_ffff).unwrap_or(0)
}
