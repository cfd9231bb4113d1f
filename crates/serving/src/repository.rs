//! Every loaded model and version, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_types::ModelVersion;
use parking_lot::RwLock;

use ferry_rollout::Split;

use crate::{EngineSettings, LoadedModel, ModelConfig, ModelSource, ServingError};

/// A model's name and its loaded versions, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Model name.
    pub name: String,
    /// Loaded versions, ascending.
    pub versions: Vec<u64>,
}

/// One entry of the repository index: a known model version and whether it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Loaded and ready.
    pub ready: bool,
    /// Why it is not ready (unloaded, or the load error).
    pub reason: String,
}

/// Where models can be (re)loaded from: the sources, server-wide defaults and engine settings.
#[derive(Debug, Default)]
struct Catalog {
    sources: Vec<ModelSource>,
    defaults: ModelConfig,
    engines: EngineSettings,
    failures: BTreeMap<(String, u64), String>,
}

/// The loaded models. Lookups take a read lock for a map access only; requests then run on the model's own `Arc`.
#[derive(Debug, Default)]
pub struct ModelRepository {
    models: RwLock<BTreeMap<String, BTreeMap<u64, Arc<LoadedModel>>>>,
    /// Traffic splits of models with a deployment. Written only under the `models` write lock and read under its
    /// read lock, so a request sees a split and the versions it names together.
    splits: RwLock<BTreeMap<String, Arc<Split>>>,
    catalog: RwLock<Catalog>,
}

/// The version a request was routed to.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The version that answers.
    pub model: Arc<LoadedModel>,
    /// With a deployment: the variant's target and why it was chosen (`override`, `sticky`, `random`).
    pub variant: Option<(String, &'static str)>,
    /// With a shadow drawn for this request: the version that gets a copy.
    pub shadow: Option<Arc<LoadedModel>>,
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

    /// The requested version, or when `version` is `None` the deployment's primary (without a deployment, the
    /// highest loaded version).
    ///
    /// # Errors
    /// [`ServingError::ModelNotFound`] or [`ServingError::VersionNotFound`].
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ServingError> {
        let models = self.models.read();
        let versions = models.get(name).ok_or_else(|| ServingError::ModelNotFound { name: name.to_owned() })?;
        let not_found =
            || ServingError::VersionNotFound { name: name.to_owned(), version: version.unwrap_or("").to_owned() };
        match version {
            None => match self.splits.read().get(name) {
                Some(split) => versions.get(&split.primary()).cloned().ok_or_else(not_found),
                None => versions.values().next_back().cloned().ok_or_else(not_found),
            },
            Some(v) => {
                let v: ModelVersion = v.parse().map_err(|_| not_found())?;
                versions.get(&v.get()).cloned().ok_or_else(not_found)
            }
        }
    }

    /// Routes a request without a version: through the model's deployment when it has one (`override_to` names a
    /// variant, `sticky_key` keeps a client on one), else to [`ModelRepository::get`]'s version.
    ///
    /// # Errors
    /// [`ServingError::ModelNotFound`], or [`ServingError::InvalidInput`] for an override that names no variant.
    pub fn route(
        &self,
        name: &str,
        override_to: Option<&str>,
        sticky_key: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Routed, ServingError> {
        let models = self.models.read();
        let versions = models.get(name).ok_or_else(|| ServingError::ModelNotFound { name: name.to_owned() })?;
        let Some(split) = self.splits.read().get(name).cloned() else {
            let model = versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| ServingError::ModelNotFound { name: name.to_owned() })?;
            return Ok(Routed { model, variant: None, shadow: None });
        };
        let key = split.sticky_header.as_deref().and_then(sticky_key);
        let choice = split
            .choose(override_to, key.as_deref(), fastrand::f64)
            .map_err(|e| ServingError::InvalidInput { message: e.to_string() })?;
        // `deploy` installs a split only with every version it names.
        let model = versions.get(&choice.version).cloned().ok_or_else(|| ServingError::VersionNotFound {
            name: name.to_owned(),
            version: choice.version.to_string(),
        })?;
        let shadow = split.mirror(choice.version, fastrand::f64).and_then(|v| versions.get(&v).cloned());
        Ok(Routed { model, variant: Some((split.variants[choice.index].target.clone(), choice.reason)), shadow })
    }

    /// Makes `models` (all of one name) the served versions of `name`, routed by `split` (or, without one, the
    /// highest version serving everything), atomically: a request sees either the old versions and split or the
    /// new ones. Versions loaded before are passed again as their `Arc`, so they keep running undisturbed. Returns
    /// the versions it removed; their in-flight requests still finish on them.
    ///
    /// # Panics
    /// Never for a `split` naming only versions among `models` (checked in debug builds).
    pub fn deploy(&self, name: &str, models: Vec<Arc<LoadedModel>>, split: Option<Split>) -> Vec<Arc<LoadedModel>> {
        let fresh: BTreeMap<u64, Arc<LoadedModel>> = models.into_iter().map(|m| (m.version(), m)).collect();
        debug_assert!(split.as_ref().is_none_or(|s| s.versions().iter().all(|v| fresh.contains_key(v))));
        let mut all = self.models.write();
        let old = all.insert(name.to_owned(), fresh);
        match split {
            Some(split) => self.splits.write().insert(name.to_owned(), Arc::new(split)),
            None => self.splits.write().remove(name),
        };
        let kept = &all[name];
        old.map(|o| o.into_values().filter(|m| !kept.values().any(|k| Arc::ptr_eq(k, m))).collect()).unwrap_or_default()
    }

    /// The traffic split of `name`, when it has a deployment.
    #[must_use]
    pub fn split(&self, name: &str) -> Option<Arc<Split>> {
        self.splits.read().get(name).cloned()
    }

    /// The loaded version `version` of `name`, if it is loaded.
    #[must_use]
    pub fn loaded(&self, name: &str, version: u64) -> Option<Arc<LoadedModel>> {
        self.models.read().get(name)?.get(&version).cloned()
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

    /// Loaded versions of `name`, ascending (empty if none).
    #[must_use]
    pub fn versions_of(&self, name: &str) -> Vec<u64> {
        self.models.read().get(name).map(|v| v.keys().copied().collect()).unwrap_or_default()
    }

    /// Sets what [`ModelRepository::load`] loads from.
    pub fn set_catalog(&self, sources: Vec<ModelSource>, defaults: ModelConfig, engines: EngineSettings) {
        *self.catalog.write() = Catalog { sources, defaults, engines, failures: BTreeMap::new() };
    }

    /// Names of every model in the catalog, in order.
    #[must_use]
    pub fn catalog_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.catalog.read().sources.iter().map(|s| s.name.to_string()).collect();
        names.dedup();
        names
    }

    /// Loads (or reloads) every version of `name` from the catalog, then swaps them in together; requests in flight
    /// finish on the versions they started on. Blocking: call it off the async runtime.
    ///
    /// # Errors
    /// [`ServingError::ModelNotFound`] when the catalog has no such model, or the first load error (nothing is
    /// swapped in then, and the error is kept for the index).
    pub fn load(&self, name: &str) -> Result<(), ServingError> {
        let (sources, defaults, engines) = {
            let catalog = self.catalog.read();
            let sources: Vec<ModelSource> =
                catalog.sources.iter().filter(|s| s.name.as_str() == name).cloned().collect();
            (sources, catalog.defaults.clone(), catalog.engines.clone())
        };
        if sources.is_empty() {
            return Err(ServingError::ModelNotFound { name: name.to_owned() });
        }
        let mut loaded = Vec::with_capacity(sources.len());
        for source in &sources {
            match LoadedModel::load(source, &defaults, &engines) {
                Ok(model) => loaded.push(Arc::new(model)),
                Err(e) => {
                    self.catalog.write().failures.insert((name.to_owned(), source.version.get()), e.to_string());
                    return Err(e);
                }
            }
        }
        let fresh: BTreeMap<u64, Arc<LoadedModel>> = loaded.into_iter().map(|m| (m.version(), m)).collect();
        let mut all = self.models.write();
        let old = all.insert(name.to_owned(), fresh);
        self.splits.write().remove(name);
        drop(all);
        self.catalog.write().failures.retain(|(n, _), _| n != name);
        // Old versions stop when their last in-flight request drops them; never join threads under the lock.
        drop(old);
        Ok(())
    }

    /// Makes `model` the one served version of its name, atomically: a request looks up either the old versions or
    /// the new one, never nothing. Returns the versions it replaced, whose in-flight requests still finish on them;
    /// the caller decides where their threads are joined.
    pub fn swap(&self, model: LoadedModel) -> Vec<Arc<LoadedModel>> {
        let model = Arc::new(model);
        let fresh = BTreeMap::from([(model.version(), model.clone())]);
        let mut all = self.models.write();
        let old = all.insert(model.name().to_owned(), fresh);
        self.splits.write().remove(model.name());
        drop(all);
        old.map(|o| o.into_values().filter(|m| !Arc::ptr_eq(m, &model)).collect()).unwrap_or_default()
    }

    /// Whether `name` comes from the catalog (files or a model repository) rather than elsewhere.
    #[must_use]
    pub fn in_catalog(&self, name: &str) -> bool {
        self.catalog.read().sources.iter().any(|s| s.name.as_str() == name)
    }

    /// The server-wide model defaults and engine settings the catalog was given.
    #[must_use]
    pub fn load_settings(&self) -> (ModelConfig, EngineSettings) {
        let catalog = self.catalog.read();
        (catalog.defaults.clone(), catalog.engines.clone())
    }

    /// Removes every version of `name`, returning them so the caller decides where their threads are joined.
    ///
    /// # Errors
    /// [`ServingError::ModelNotFound`] when `name` is not loaded.
    pub fn unload(&self, name: &str) -> Result<Vec<Arc<LoadedModel>>, ServingError> {
        let mut all = self.models.write();
        self.splits.write().remove(name);
        let removed = all.remove(name).ok_or_else(|| ServingError::ModelNotFound { name: name.to_owned() })?;
        Ok(removed.into_values().collect())
    }

    /// Every known model version: the catalog's and whatever else is loaded.
    #[must_use]
    pub fn index(&self) -> Vec<IndexEntry> {
        let models = self.models.read();
        let catalog = self.catalog.read();
        let mut entries: BTreeMap<(String, u64), IndexEntry> = BTreeMap::new();
        for s in &catalog.sources {
            let key = (s.name.to_string(), s.version.get());
            let reason = catalog.failures.get(&key).cloned().unwrap_or_else(|| "unloaded".into());
            entries.insert(key.clone(), IndexEntry { name: key.0, version: key.1, ready: false, reason });
        }
        for (name, versions) in models.iter() {
            for &version in versions.keys() {
                entries.insert(
                    (name.clone(), version),
                    IndexEntry { name: name.clone(), version, ready: true, reason: String::new() },
                );
            }
        }
        entries.into_values().collect()
    }

    /// One look of every loaded version's autoscaler (see [`LoadedModel::autoscale`]). Blocking: call it off the
    /// async runtime, every few hundred milliseconds.
    pub fn autoscale(&self) {
        let models: Vec<Arc<LoadedModel>> = self.models.read().values().flat_map(|v| v.values().cloned()).collect();
        for model in models {
            model.autoscale();
        }
    }

    /// Removes every model, returning them so the caller decides where their threads are joined.
    pub fn take_all(&self) -> Vec<Arc<LoadedModel>> {
        let mut all = self.models.write();
        self.splits.write().clear();
        std::mem::take(&mut *all).into_values().flat_map(BTreeMap::into_values).collect()
    }
}
