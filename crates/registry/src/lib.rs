//! The registry: models, their immutable versions (integers the registry assigns, never reused), aliases that
//! point at versions, and a record of who did what and when — in SQLite (the embedded default) or PostgreSQL
//! through `sqlx`, with one set of migrations; package files content-addressed by SHA-256 through `object_store`.
//!
//! Publishing is ordered so that a crash at any point leaves no half-registered version: the upload is staged in a
//! local file and verified, stored under its digest, read back and re-hashed, and only then does one database
//! transaction make the version visible. Whatever a crash leaves behind (staged files, stored blobs no version
//! references) is removed by [`Registry::clean_orphans`] at start-up.

mod artifacts;
mod deployments;
mod encryption;
mod error;
mod outcomes;
mod predictions;
pub(crate) mod security;
mod spool;
mod store;
pub mod testing;

pub use artifacts::{ArtifactStore, Rotation, Staged};
pub use deployments::{DeploymentRecord, PublishedCounts};
pub use encryption::MasterKey;
pub use error::RegistryError;
pub use outcomes::{Labelled, Outcome, OutcomeRow, Truth};
pub use predictions::PredictionRecord;
pub use security::KeyLimits;
pub use spool::Spooled;
pub use store::{
    AliasRecord, AliasUpdate, Event, ModelRecord, Registry, Selector, VersionRecord, redact as redact_url,
};
