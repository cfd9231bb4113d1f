//! Safe change for ferry: pure decisions, no I/O (the server executes them, the registry keeps them).
//!
//! - [`split`]: deployments — which versions of a model answer, with which weights — and the routing of one request
//!   (override, sticky key, weighted random);
//! - [`canary`]: the canary's state machine and its two-layer judge (Flagger's guards, always-valid comparisons);
//! - [`sequential`]: always-valid comparisons of two arms (GrowthBook's sequential test, mSPRT) and the
//!   sample-ratio-mismatch check, for A/B results and canary analysis;
//! - [`autoscale`]: how many instances a model version runs (queue pressure, cooldowns, scale to zero).

pub mod autoscale;
pub mod canary;
pub mod sequential;
pub mod split;

pub use split::{Choice, DeploymentSpec, Split, SplitError, VariantSpec};
