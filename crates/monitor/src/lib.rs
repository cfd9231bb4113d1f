//! Model monitoring for ferry: pure statistics, no I/O.
//!
//! - [`metrics`]: model-quality metrics (classification and regression), equal to scikit-learn's;
//! - [`drift`]: data and prediction drift of a column against a reference, equal to Evidently's;
//! - [`alerts`]: alert rules, their state machine and their Prometheus equivalent;
//! - [`concept`]: concept-drift detectors on an error stream (ADWIN, Page-Hinkley, DDM), equal to river's.

pub mod alerts;
pub mod concept;
pub mod drift;
mod ksstats;
pub mod metrics;

pub use metrics::{MetricsError, Probabilities, classification_metrics, regression_metrics};
