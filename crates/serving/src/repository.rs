//! Every loaded model and version, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_types::ModelVersion;
use parking_lot::RwLock;

use crate::{LoadedModel, ServingError};

/// A model's name and its loaded versions, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Model name.
    pub name: String,
    /// Loaded versions, ascending.
    pub versions: Vec<u64>,
}

/// The loaded models. Lookups take a read lock for a map access only; requests then run on the model's own `Arc`.
#[derive(Debug, Default)]
pub struct ModelRepository {
    models: RwLock<BTreeMap<String, BTreeMap<u64, Arc<LoadedModel>>>>,
}

impl ModelRepository {
    /// An empty repository.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a loaded version, replacing the same version if it was loaded before.
    pub fn insert(&self, model: LoadedModel) {
        let model = Arc::new(model);
        self.models.write().entry(model.name().to_owned()).or_default().insert(model.version(), model);
    }

    /// The requested version, or the highest loaded version when `version` is `None`.
    ///
    /// # Errors
    /// [`ServingError::ModelNotFound`] or [`ServingError::VersionNotFound`].
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ServingError> {
        let models = self.models.read();
        let versions = models.get(name).ok_or_else(|| ServingError::ModelNotFound { name: name.to_owned() })?;
        let not_found =
            || ServingError::VersionNotFound { name: name.to_owned(), version: version.unwrap_or("").to_owned() };
        match version {
            None => versions.values().next_back().cloned().ok_or_else(not_found),
            Some(v) => {
                let v: ModelVersion = v.parse().map_err(|_| not_found())?;
                versions.get(&v.get()).cloned().ok_or_else(not_found)
            }
        }
    }

    /// Names and versions of every loaded model.
    #[must_use]
    pub fn summaries(&self) -> Vec<ModelSummary> {
        self.models
            .read()
            .iter()
            .map(|(name, versions)| ModelSummary { name: name.clone(), versions: versions.keys().copied().collect() })
            .collect()
    }

    /// Removes every model, returning them so the caller decides where their threads are joined.
    pub fn take_all(&self) -> Vec<Arc<LoadedModel>> {
        std::mem::take(&mut *self.models.write()).into_values().flat_map(BTreeMap::into_values).collect()
    }
}
