//! Model monitoring for ferry: metric definitions, drift statistics and live accuracy.
//!
//! This first module, [`metrics`], holds the baseline model-quality metrics (classification and regression), defined
//! to equal scikit-learn's. The crate is pure Rust and does no I/O.

pub mod metrics;

pub use metrics::{MetricsError, Probabilities, classification_metrics, regression_metrics};
