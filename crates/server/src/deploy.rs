//! Serving from the registry: every model whose serving alias (`production` by default) points at a version is
//! loaded; moving the alias loads the new version in the background, warms it up, and swaps it in atomically, so no
//! request fails or is dropped during the change. A version that fails to load never takes over: the alias moves
//! back to where it was, and the old version keeps serving.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_package::MODEL_PATH;
use ferry_registry::{AliasRecord, AliasUpdate, Registry, Selector, VersionRecord};
use ferry_serving::{LoadedModel, ModelSource};
use ferry_types::{ErrorKind, ModelName, ModelVersion};
use futures::StreamExt;
use sha2::Digest;

use crate::{ApiError, AppState};

/// A registry and how this server serves from it.
#[derive(Debug)]
pub struct RegistryContext {
    /// The registry.
    pub registry: Registry,
    /// The alias whose versions are served.
    pub serve_alias: String,
    /// Largest package upload in bytes.
    pub max_package_bytes: u64,
    /// Active API keys.
    pub keys: crate::KeyCache,
    /// Public keys (hex) whose package signatures are trusted.
    pub trusted_signers: Vec<String>,
    /// Refuse packages that are not signed by a trusted key.
    pub require_signature: bool,
    /// Per-key request counting.
    pub limiter: crate::UsageLimiter,
    /// Prediction logging, when configured.
    pub prediction_log: Option<std::sync::Arc<crate::PredictionLog>>,
    /// Keyless management requests, summarised in the audit log.
    pub keyless_failures: crate::auth::FailureCounter,
    /// Limits for keys without their own.
    pub default_limits: crate::DefaultLimits,
    /// Whether inference without a key is allowed (as the anonymous predictor).
    pub allow_anonymous_inference: bool,
    /// Live drift of the served versions against their packages' reference profiles, when on.
    pub drift_watch: Option<Arc<crate::DriftWatch>>,
    /// Predictions kept for ground-truth feedback and the live quality computed from it, when on.
    pub quality_watch: Option<Arc<crate::QualityWatch>>,
    /// Alert rules and their receivers, when configured.
    pub alerting: Option<Arc<crate::Alerting>>,
    /// One lock per model, so that alias moves on one model are applied in order.
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The version of each model the watchers watch (its primary).
    watched: parking_lot::Mutex<HashMap<String, u64>>,
    /// Canary rollouts' judge (call its `tick` periodically).
    pub rollouts: crate::rollouts::Controller,
    /// Models unloaded by hand (repository API): reconciling leaves them unloaded until they are loaded again.
    held: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// When reconciling a model last failed, so that a broken version is not fetched and loaded every few seconds.
    failed: parking_lot::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long reconciling leaves a model alone after it failed to follow the registry.
const RETRY_FAILED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An alias move, as the management API asks for it.
#[derive(Debug, Clone, Copy)]
pub struct AliasMove<'a> {
    /// Model name.
    pub name: &'a str,
    /// Alias name.
    pub alias: &'a str,
    /// Target version.
    pub version: u64,
    /// The condition for racing callers.
    pub update: AliasUpdate,
    /// Who moves it.
    pub actor: &'a str,
    /// For the serving alias: wait until the new version serves (or failed and was undone).
    pub wait: bool,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// This version is now served (newly or already).
    Serving(u64),
    /// The model has no serving alias; nothing of it is served.
    NotServed,
}

impl RegistryContext {
    /// Serves `registry`'s `serve_alias` versions.
    #[must_use]
    pub fn new(registry: Registry, serve_alias: String, max_package_bytes: u64) -> Self {
        Self {
            registry,
            serve_alias,
            max_package_bytes,
            keys: crate::KeyCache::default(),
            trusted_signers: Vec::new(),
            require_signature: false,
            limiter: crate::UsageLimiter::default(),
            keyless_failures: crate::auth::FailureCounter::default(),
            prediction_log: None,
            default_limits: crate::DefaultLimits::default(),
            allow_anonymous_inference: false,
            drift_watch: None,
            quality_watch: None,
            alerting: None,
            locks: parking_lot::Mutex::default(),
            watched: parking_lot::Mutex::default(),
            rollouts: crate::rollouts::Controller::default(),
            held: parking_lot::Mutex::default(),
            failed: parking_lot::Mutex::default(),
        }
    }

    /// Holds `name`'s changes (alias moves, deployments) off while the caller checks and changes something.
    pub(crate) async fn lock_model(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_for(name).lock_owned().await
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(name.to_owned()).or_default().clone()
    }

    /// Makes what is served of `name` match its serving alias: loads and swaps in the version it points at, or
    /// unloads the model when it has no such alias.
    ///
    /// # Errors
    /// Registry errors, or the load error of the version (the previous version, if any, keeps serving).
    pub async fn sync_model(&self, state: &AppState, name: &str) -> Result<Synced, ApiError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        self.sync_locked(state, name).await
    }

    /// [`RegistryContext::sync_model`] for a caller that holds the model's lock.
    async fn sync_locked(&self, state: &AppState, name: &str) -> Result<Synced, ApiError> {
        if state.repository().in_catalog(name) {
            // Served from a file or model repository: the registry never touches it.
            return Ok(Synced::NotServed);
        }
        let aliases = self.registry.aliases_of(name).await?;
        let deployment = self.registry.deployment(name).await?;
        let revision = deployment.as_ref().map(|d| d.revision);
        let split = match deployment {
            Some(d) => match self.split_of(name, &d.spec, &aliases).await {
                Ok(split) => Some(split),
                // Checked when it was set; something changed under it since (for example a replica of another
                // release). Serving the serving alias beats serving nothing.
                Err(e) => {
                    tracing::error!(
                        model = name,
                        error = e.message(),
                        "the deployment no longer resolves; serving \
                        the serving alias instead: fix or delete the deployment"
                    );
                    None
                }
            },
            None => None,
        };
        let target = match &split {
            Some(s) => Some(s.primary()),
            None => aliases.get(&self.serve_alias).copied(),
        };
        let Some(version) = target else {
            self.unwatch(name);
            state.metrics().performance.retain(name, None);
            state.metrics().performance.experiment_starts(name, None, &[]);
            state.metrics().shadows.forget(name);
            if let Ok(removed) = state.repository().unload(name) {
                tracing::info!(model = name, alias = %self.serve_alias, "no serving alias any more; unloaded");
                tokio::task::spawn_blocking(move || drop(removed));
            }
            return Ok(Synced::NotServed);
        };
        let repository = state.repository();
        let mut wanted = split.as_ref().map_or_else(|| vec![version], ferry_rollout::Split::versions);
        wanted.sort_unstable();
        let watched = self.drift_watch.is_none() && self.quality_watch.is_none()
            || self.watched.lock().get(name) == Some(&version);
        let experiment = split.as_ref().map(|_| revision).unwrap_or_default();
        if watched && repository.versions_of(name) == wanted && repository.split(name).as_deref() == split.as_ref() {
            state.metrics().performance.experiment_starts(name, experiment, &wanted);
            return Ok(Synced::Serving(version));
        }
        // Versions already serving keep running; the others are loaded and warmed up before anything changes.
        let mut models = Vec::with_capacity(wanted.len());
        let mut primary = None;
        for &v in &wanted {
            if let Some(model) = repository.loaded(name, v) {
                models.push(model);
                continue;
            }
            match self.load_version(state, name, v).await {
                Ok((model, record, profile)) => {
                    models.push(Arc::new(model));
                    if v == version {
                        primary = Some((record, profile));
                    }
                }
                Err(e) => {
                    // Their instance threads are joined off the async threads.
                    tokio::task::spawn_blocking(move || drop(models));
                    return Err(e);
                }
            }
        }
        // Drift and live quality watch the primary: what they need is read before anything changes, and a failure
        // to read it only leaves the primary unwatched.
        let watch_inputs = if self.watched.lock().get(name) == Some(&version) {
            None
        } else if let Some(p) = primary {
            Some(Some(p))
        } else {
            match self.registry.resolve(name, &Selector::Version(version)).await {
                Ok(record) => match self.materialize(&record).await {
                    Ok((_, profile)) => Some(Some((record, profile))),
                    Err(e) => {
                        tracing::warn!(model = name, version, error = e.message(), "not watched: package unreadable");
                        Some(None)
                    }
                },
                Err(e) => {
                    tracing::warn!(model = name, version, error = %e, "not watched: version unreadable");
                    Some(None)
                }
            }
        };
        let described = split.as_ref().map(|s| {
            s.variants.iter().map(|v| format!("{}=v{}:{}bp", v.target, v.version, v.weight_bp)).collect::<Vec<_>>()
        });
        let old = repository.deploy(name, models, split);
        let previous: Vec<u64> = old.iter().map(|m| m.version()).collect();
        tokio::task::spawn_blocking(move || drop(old));
        match watch_inputs {
            Some(Some((record, profile))) => self.watch(name, version, &record, profile),
            Some(None) => self.unwatch(name),
            None => {}
        }
        state.metrics().performance.retain_versions(name, &wanted);
        state.metrics().performance.experiment_starts(name, experiment, &wanted);
        tracing::info!(model = name, version, ?previous, split = ?described, alias = %self.serve_alias, "now serving");
        Ok(Synced::Serving(version))
    }

    /// The deployment `spec` of `name` with its targets resolved: aliases through `aliases`, numbers to versions
    /// that exist.
    async fn split_of(
        &self,
        name: &str,
        spec: &str,
        aliases: &std::collections::BTreeMap<String, u64>,
    ) -> Result<ferry_rollout::Split, ApiError> {
        let spec: ferry_rollout::DeploymentSpec = serde_json::from_str(spec)
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored deployment of {name:?}: {e}")))?;
        let versions: Vec<u64> = self.registry.list_versions(name).await?.iter().map(|v| v.version).collect();
        ferry_rollout::Split::resolve(name, &spec, |target| resolve_target(target, aliases, &versions))
            .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))
    }

    /// Loads one version from the registry (not yet serving).
    async fn load_version(
        &self,
        state: &AppState,
        name: &str,
        version: u64,
    ) -> Result<(LoadedModel, VersionRecord, Option<ferry_package::Profile>), ApiError> {
        let record = self.registry.resolve(name, &Selector::Version(version)).await?;
        let (model, profile) = self.materialize(&record).await?;
        let source = ModelSource {
            name: ModelName::new(name).map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?,
            version: ModelVersion::new(version).map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?,
            path: PathBuf::from(format!("{name}/{version}/{MODEL_PATH}")),
            bytes: Some(model),
            config: ferry_serving::ModelConfig::default(),
            expected_signature: Some(record.manifest.signature.clone()),
        };
        let (defaults, engines) = state.repository().load_settings();
        let loaded = tokio::task::spawn_blocking(move || LoadedModel::load(&source, &defaults, &engines))
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("model loading panicked: {e}")))??;
        // Its runs feed the watchers, which take what they watch of each (the version they watch, the model kept).
        if self.drift_watch.is_some() || self.quality_watch.is_some() {
            loaded.set_observer(Some(Arc::new(crate::observed::ModelObserver {
                name: name.to_owned(),
                version,
                drift: self.drift_watch.clone(),
                quality: self.quality_watch.clone(),
            })));
        }
        Ok((loaded, record, profile))
    }

    /// Stops the drift and quality watchers of `name`.
    fn unwatch(&self, name: &str) {
        if let Some(watch) = &self.drift_watch {
            watch.unregister(name);
        }
        if let Some(quality) = &self.quality_watch {
            quality.unregister(name);
        }
        self.watched.lock().remove(name);
    }

    /// Stops keeping `name`'s predictions for feedback and throws away those not yet written, before the registry
    /// deletes the model with the rest of them: none lands after the delete. [`Self::sync_model`] watches the model
    /// again if it still exists.
    pub(crate) async fn stop_keeping_predictions(&self, name: &str) {
        if let Some(quality) = &self.quality_watch {
            quality.forget(name).await;
        }
        self.watched.lock().remove(name);
    }

    /// Points the drift and quality watchers at `version` of `name`.
    fn watch(&self, name: &str, version: u64, record: &VersionRecord, profile: Option<ferry_package::Profile>) {
        if let Some(watch) = &self.drift_watch {
            match profile {
                Some(profile) => {
                    let reference = crate::watch::Reference::from_profile(
                        version,
                        &record.manifest.signature,
                        &record.manifest.features,
                        profile,
                    );
                    watch.register(name, reference);
                }
                None => watch.unregister(name),
            }
        }
        if let Some(quality) = &self.quality_watch {
            let task = record.manifest.validation.as_ref().map(|v| v.task);
            match ferry_package::PredictionOutputs::of(&record.manifest.signature, task) {
                Ok(outputs) => quality.register(
                    name,
                    crate::quality::QualityTarget {
                        version,
                        outputs,
                        baseline: record.manifest.validation.as_ref().map(|v| v.metrics.clone()).unwrap_or_default(),
                        retired: Arc::default(),
                    },
                ),
                Err(why) => {
                    tracing::info!(model = name, version, why, "no live quality: no output to join feedback to");
                    quality.unregister(name);
                }
            }
        }
        self.watched.lock().insert(name.to_owned(), version);
    }

    /// Sets `name`'s deployment and serves it: the versions it names are loaded and warmed up before the split
    /// takes effect. When they cannot be served, the previous deployment (or none) is put back and the error
    /// returned, so a bad deployment never takes traffic.
    ///
    /// # Errors
    /// A malformed spec or a target that does not resolve (400), an unknown model (404), registry and load errors.
    pub async fn set_deployment(
        &self,
        state: &AppState,
        name: &str,
        spec: &ferry_rollout::DeploymentSpec,
        actor: &str,
    ) -> Result<ferry_registry::DeploymentRecord, ApiError> {
        if state.repository().in_catalog(name) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("model {name:?} is served from a file or model repository, not from the registry"),
            ));
        }
        spec.weights_bp().map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
        let text = serde_json::to_string(spec)
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("deployment to JSON: {e}")))?;
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        self.registry.get_model(name).await?;
        self.hold(name, false);
        let aliases = self.registry.aliases_of(name).await?;
        let split = self.split_of(name, &text, &aliases).await?;
        let detail = split
            .variants
            .iter()
            .map(|v| format!("{} (v{}) {}%", v.target, v.version, f64::from(v.weight_bp) / 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        let before = self.registry.deployment(name).await?;
        let record = self.registry.set_deployment(name, &text, &detail, actor).await?;
        if let Err(e) = self.sync_locked(state, name).await {
            let undo = match &before {
                Some(b) => self
                    .registry
                    .set_deployment(name, &b.spec, "restored: the new one could not serve", "ferry")
                    .await
                    .map(drop),
                None => self.registry.delete_deployment(name, "ferry").await,
            };
            if let Err(u) = undo {
                tracing::error!(model = name, error = %u, "could not restore the previous deployment");
            }
            if let Err(again) = self.sync_locked(state, name).await {
                tracing::error!(model = name, error = again.message(), "re-sync after a deployment undo failed");
            }
            return Err(ApiError::new(
                e.kind(),
                format!("the deployment of {name:?} cannot be served, so the previous one stays: {}", e.message()),
            ));
        }
        Ok(record)
    }

    /// Removes `name`'s deployment: its serving alias takes all of its traffic again.
    ///
    /// # Errors
    /// 404 when it has none; registry and load errors.
    pub async fn delete_deployment(&self, state: &AppState, name: &str, actor: &str) -> Result<(), ApiError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let before = self.registry.deployment(name).await?;
        self.registry.delete_deployment(name, actor).await?;
        if let Err(e) = self.sync_locked(state, name).await {
            if let Some(b) = before
                && let Err(u) = self
                    .registry
                    .set_deployment(
                        name,
                        &b.spec,
                        "restored: the serving alias could not \
                    serve",
                        "ferry",
                    )
                    .await
            {
                tracing::error!(model = name, error = %u, "could not restore the deployment");
            }
            if let Err(again) = self.sync_locked(state, name).await {
                tracing::error!(model = name, error = again.message(), "re-sync after a deployment undo failed");
            }
            return Err(ApiError::new(
                e.kind(),
                format!("the deployment of {name:?} stays: its serving alias cannot serve: {}", e.message()),
            ));
        }
        Ok(())
    }

    /// Keeps `name` unloaded (or lets it be served again) whatever the registry says, until the next explicit load.
    pub fn hold(&self, name: &str, held: bool) {
        if held {
            self.held.lock().insert(name.to_owned());
        } else {
            self.held.lock().remove(name);
        }
    }

    /// Whether `name`'s deployment routes traffic through `alias`.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn deployment_uses(&self, name: &str, alias: &str) -> Result<bool, ApiError> {
        let Some(record) = self.registry.deployment(name).await? else { return Ok(false) };
        let spec: ferry_rollout::DeploymentSpec = serde_json::from_str(&record.spec)
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored deployment of {name:?}: {e}")))?;
        Ok(spec.variants.iter().any(|v| v.target == alias))
    }

    /// Whether `name`'s deployment names version `version` by number.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn deployment_names_version(&self, name: &str, version: u64) -> Result<bool, ApiError> {
        let Some(record) = self.registry.deployment(name).await? else { return Ok(false) };
        let spec: ferry_rollout::DeploymentSpec = serde_json::from_str(&record.spec)
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored deployment of {name:?}: {e}")))?;
        Ok(spec.variants.iter().any(|v| {
            let t = v.target.trim();
            t.strip_prefix('v').unwrap_or(t).parse::<u64>() == Ok(version)
        }))
    }

    /// Loads every model that has a serving alias (at start-up).
    ///
    /// # Errors
    /// The first model that fails, by name.
    pub async fn sync_all(&self, state: &AppState) -> Result<usize, ApiError> {
        let mut served: Vec<String> =
            self.registry.models_with_alias(&self.serve_alias).await?.into_iter().map(|(name, _)| name).collect();
        // A model with a deployment serves even without its serving alias.
        served.extend(self.registry.deployments().await?.into_iter().map(|d| d.model));
        served.sort();
        served.dedup();
        for name in &served {
            if state.repository().in_catalog(name) {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!("model {name:?} is both in the registry and given as a file or model repository"),
                ));
            }
            self.sync_model(state, name)
                .await
                .map_err(|e| ApiError::new(e.kind(), format!("registry model {name:?}: {}", e.message())))?;
        }
        Ok(served.len())
    }

    /// Brings what this replica serves in line with the registry: aliases and deployments that another replica
    /// sharing the registry changed, models it deleted. Failures are logged; what serves keeps serving.
    pub async fn reconcile(&self, state: &AppState) {
        let listed = async {
            let mut names: Vec<String> =
                self.registry.models_with_alias(&self.serve_alias).await?.into_iter().map(|(name, _)| name).collect();
            names.extend(self.registry.deployments().await?.into_iter().map(|d| d.model));
            Ok::<_, ferry_registry::RegistryError>(names)
        };
        let mut names = match listed.await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the registry to reconcile; serving what serves");
                return;
            }
        };
        let repository = state.repository();
        names.extend(repository.summaries().into_iter().map(|s| s.name).filter(|n| !repository.in_catalog(n)));
        names.sort();
        names.dedup();
        let now = std::time::Instant::now();
        for name in names.iter().filter(|n| !repository.in_catalog(n)) {
            if self.held.lock().contains(name)
                || self.failed.lock().get(name).is_some_and(|at| now.duration_since(*at) < RETRY_FAILED_AFTER)
            {
                continue;
            }
            match self.sync_model(state, name).await {
                Ok(_) => drop(self.failed.lock().remove(name)),
                Err(e) => {
                    tracing::warn!(model = %name, error = e.message(), "could not follow the registry's change; \
                        retrying in a minute");
                    self.failed.lock().insert(name.clone(), now);
                }
            }
        }
    }

    /// Moves an alias; when it is the serving alias, the version it now points at is loaded and swapped in. If that
    /// version cannot be served, the alias is moved back (or removed, if it is new) and the load error returned.
    ///
    /// With `wait` false the load happens in the background and its failure is only logged (and undone).
    ///
    /// # Errors
    /// Registry errors, and with `wait`, the load error.
    pub async fn move_alias(
        self: &Arc<Self>,
        state: &AppState,
        request: AliasMove<'_>,
    ) -> Result<AliasRecord, ApiError> {
        let AliasMove { name, alias, version, update, actor, wait } = request;
        if alias == self.serve_alias && state.repository().in_catalog(name) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("model {name:?} is served from a file or model repository, not from the registry"),
            ));
        }
        // Moves of one model's serving alias, their loads and their undos happen one at a time, in order; the
        // model's deployment cannot change between the check below and the move.
        let guard = self.lock_for(name).lock_owned().await;
        if alias != self.serve_alias && !self.deployment_uses(name, alias).await? {
            return Ok(self.registry.set_alias(name, alias, version, update, actor).await?);
        }
        let record = self.registry.set_alias(name, alias, version, update, actor).await?;
        self.hold(name, false);
        let (ctx, state2, record2) = (self.clone(), state.clone(), record.clone());
        let apply = async move {
            let _guard = guard;
            match ctx.sync_locked(&state2, &record2.model).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    ctx.undo_alias(&record2).await;
                    // Serve what the alias points at now (the previous version, normally already loaded).
                    if let Err(again) = ctx.sync_locked(&state2, &record2.model).await {
                        tracing::error!(model = %record2.model, error = again.message(), "re-sync after an undo failed");
                    }
                    Err(ApiError::new(
                        e.kind(),
                        format!(
                            "version {} of {:?} cannot be served, so {} stays where it was: {}",
                            record2.version,
                            record2.model,
                            record2.alias,
                            e.message()
                        ),
                    ))
                }
            }
        };
        if wait {
            apply.await?;
        } else {
            let name = name.to_owned();
            tokio::spawn(async move {
                if let Err(e) = apply.await {
                    tracing::error!(model = %name, error = e.message(), "alias move undone");
                }
            });
        }
        Ok(record)
    }

    async fn undo_alias(&self, record: &AliasRecord) {
        let actor = "ferry (automatic: the new version failed to load)";
        let undone = match record.previous {
            Some(p) => self
                .registry
                .set_alias(&record.model, &record.alias, p, AliasUpdate::IfVersion(record.version), actor)
                .await
                .map(drop),
            None => self.registry.delete_alias(&record.model, &record.alias, actor).await,
        };
        let outcome = match &undone {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        let target = format!(
            "model/{}/alias/{} -> {:?} (version {} failed to load)",
            record.model, record.alias, record.previous, record.version
        );
        if let Err(e) = self.registry.audit("ferry", "undo_alias", &target, &outcome).await {
            tracing::error!(error = %e, "could not audit an alias undo");
        }
        if let Err(e) = undone {
            tracing::error!(model = %record.model, alias = %record.alias, error = %e, "could not undo the alias move");
        }
    }

    /// The model file of a version, in memory: the package is fetched from the artifact store (decrypted there
    /// when it is stored encrypted), its digest checked, and `model.onnx` taken out and checked against the
    /// manifest. Nothing of it is written to disk, so an encrypted package never exists in plaintext outside
    /// this process.
    async fn materialize(
        &self,
        record: &VersionRecord,
    ) -> Result<(Arc<[u8]>, Option<ferry_package::Profile>), ApiError> {
        let (_, mut stream) = self.registry.artifacts().open(&record.digest).await?;
        let mut package = Vec::with_capacity(usize::try_from(record.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            package.extend_from_slice(&chunk?);
        }
        let has_profile = record.manifest.file(ferry_package::PROFILE_PATH).is_some();
        let expected = record.digest.clone();
        // Hashing and untarring a large package is CPU work: off the async threads.
        let (model, profile) = tokio::task::spawn_blocking(move || {
            let digest = hex::encode(sha2::Sha256::digest(&package));
            if digest != expected {
                return Err(ferry_package::PackageError::Malformed(format!("it reads back as {digest}")));
            }
            let whole = package.len() as u64;
            let model = ferry_package::read_file_from(package.as_slice(), MODEL_PATH, whole)?;
            let profile = if has_profile {
                Some(ferry_package::read_file_from(package.as_slice(), ferry_package::PROFILE_PATH, whole)?)
            } else {
                None
            };
            Ok::<_, ferry_package::PackageError>((model, profile))
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("reading the package panicked: {e}")))?
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("stored package {}: {e}", record.digest)))?;
        // A profile that does not parse only costs drift watching, never serving.
        let profile = profile.and_then(|bytes| match serde_json::from_slice::<ferry_package::Profile>(&bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(digest = %record.digest, error = %e, "the package's profile is unreadable; no drift watch");
                None
            }
        });
        Ok((model.into(), profile))
    }
}

/// A deployment target: an alias of the model, or the number of one of its versions.
fn resolve_target(
    target: &str,
    aliases: &std::collections::BTreeMap<String, u64>,
    versions: &[u64],
) -> Result<u64, String> {
    if let Some(&v) = aliases.get(target) {
        return Ok(v);
    }
    match target.strip_prefix('v').unwrap_or(target).parse::<u64>() {
        Ok(v) if versions.contains(&v) => Ok(v),
        Ok(v) => Err(format!("the model has no version {v}")),
        Err(_) => Err("no such alias".into()),
    }
}
