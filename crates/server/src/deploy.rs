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
}

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
        }
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
        let target = self.registry.aliases_of(name).await?.get(&self.serve_alias).copied();
        let Some(version) = target else {
            if let Some(watch) = &self.drift_watch {
                watch.unregister(name);
            }
            if let Some(quality) = &self.quality_watch {
                quality.unregister(name);
            }
            state.metrics().performance.retain(name, None);
            if let Ok(removed) = state.repository().unload(name) {
                tracing::info!(model = name, alias = %self.serve_alias, "no serving alias any more; unloaded");
                tokio::task::spawn_blocking(move || drop(removed));
            }
            return Ok(Synced::NotServed);
        };
        if state.repository().versions_of(name) == [version] {
            return Ok(Synced::Serving(version));
        }
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
        // The new version is loaded and warmed up: swap it in. Requests already running on the old one finish there.
        let old = state.repository().swap(loaded);
        let previous: Vec<u64> = old.iter().map(|m| m.version()).collect();
        tokio::task::spawn_blocking(move || drop(old));
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
                    },
                ),
                Err(why) => {
                    tracing::info!(model = name, version, why, "no live quality: no output to join feedback to");
                    quality.unregister(name);
                }
            }
        }
        state.metrics().performance.retain(name, Some(version));
        tracing::info!(model = name, version, ?previous, alias = %self.serve_alias, "now serving");
        Ok(Synced::Serving(version))
    }

    /// Loads every model that has a serving alias (at start-up).
    ///
    /// # Errors
    /// The first model that fails, by name.
    pub async fn sync_all(&self, state: &AppState) -> Result<usize, ApiError> {
        let served = self.registry.models_with_alias(&self.serve_alias).await?;
        for (name, _) in &served {
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
        if alias != self.serve_alias {
            return Ok(self.registry.set_alias(name, alias, version, update, actor).await?);
        }
        // Moves of one model's serving alias, their loads and their undos happen one at a time, in order.
        let guard = self.lock_for(name).lock_owned().await;
        let record = self.registry.set_alias(name, alias, version, update, actor).await?;
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
