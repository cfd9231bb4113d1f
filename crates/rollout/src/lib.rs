//! Safe change for ferry: pure decisions, no I/O (the server executes them, the registry keeps them).
//!
//! - [`split`]: deployments — which versions of a model answer, with which weights — and the routing of one request
//!   (override, sticky key, weighted random).

pub mod split;

pub use split::{Choice, DeploymentSpec, Split, SplitError, VariantSpec};
