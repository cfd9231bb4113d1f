//! Authentication and authorization at the edge: the `Authorized<P>` extractor puts the permission a handler needs
//! in its signature and hands it the caller's resolved [`Access`]; the key cache makes that a hash and a map lookup.
//!
//! Without a registry (in-process embedding and tests of the inference path) there are no keys and every caller is
//! unrestricted; `ferry serve` always has one.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ferry_auth::{Access, AuthError, Permission, hash_key, same_hash};
use ferry_registry::Registry;
use parking_lot::RwLock;

use crate::{ApiError, AppState};

/// How often keys are re-read from the database, so that keys created or revoked on another replica take effect.
pub const KEY_REFRESH: Duration = Duration::from_secs(5);

/// Active keys by hash, refreshed from the registry.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, Access>>,
    /// One refresh at a time, so that a slow background refresh cannot overwrite a newer one (and bring back a key
    /// revoked in between).
    refreshing: tokio::sync::Mutex<()>,
}

impl KeyCache {
    /// Re-reads every active key.
    ///
    /// # Errors
    /// Registry errors (the old cache stays).
    pub async fn refresh(&self, registry: &Registry) -> Result<(), ApiError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let fresh: HashMap<String, Access> = registry
            .active_keys()
            .await?
            .into_iter()
            .map(|(hash, info)| {
                let access = Access {
                    actor: info.id,
                    role: info.role,
                    scopes: info.scopes,
                    rate_per_second: info.rate_per_second,
                    daily_quota: info.daily_quota,
                };
                (hash, access)
            })
            .collect();
        *self.keys.write() = fresh;
        Ok(())
    }

    fn lookup(&self, key: &str) -> Option<Access> {
        let hash = hash_key(key);
        let keys = self.keys.read();
        // The map lookup finds the candidate; the constant-time comparison decides.
        keys.get_key_value(&hash).filter(|(stored, _)| same_hash(stored, &hash)).map(|(_, access)| access.clone())
    }
}

/// A permission as a type, so that it shows in a handler's signature.
pub trait Need: Send + Sync + 'static {
    /// The permission.
    const PERMISSION: Permission;
}

/// Inference, model metadata and statistics.
#[derive(Debug)]
pub struct ToInfer;
/// Reading the registry.
#[derive(Debug)]
pub struct ToRead;
/// Changing models, versions and aliases.
#[derive(Debug)]
pub struct ToDeploy;
/// Keys and the audit log.
#[derive(Debug)]
pub struct ToAdmin;

impl Need for ToInfer {
    const PERMISSION: Permission = Permission::Infer;
}
impl Need for ToRead {
    const PERMISSION: Permission = Permission::Read;
}
impl Need for ToDeploy {
    const PERMISSION: Permission = Permission::Deploy;
}
impl Need for ToAdmin {
    const PERMISSION: Permission = Permission::Admin;
}

/// A caller whose key grants `P` (model scopes are checked by the handler, which knows the model).
#[derive(Debug)]
pub struct Authorized<P: Need> {
    /// Who is calling, with what role and scopes.
    pub access: Access,
    state: AppState,
    _need: PhantomData<P>,
}

impl<P: Need> Authorized<P> {
    /// Checks the key's scopes cover `model`.
    ///
    /// # Errors
    /// 403 naming the model.
    pub async fn on(&self, model: &str) -> Result<(), ApiError> {
        let refused = self.access.require_on(P::PERMISSION, model).map_err(ApiError::from);
        if refused.is_err() && P::PERMISSION != Permission::Infer {
            // Management refusals are audited; inference ones are not, so that they cannot flood the log.
            audit_failure(
                &self.state,
                &self.access.actor,
                &format!("model/{model}"),
                "denied: out of the key's scopes",
            )
            .await;
        }
        refused
    }
}

impl<P: Need> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let access = authenticate(state, &parts.headers, P::PERMISSION).await?;
        if let Err(e) = access.require(P::PERMISSION) {
            audit_failure(state, &access.actor, parts.uri.path(), "denied").await;
            return Err(e.into());
        }
        if is_management_read(parts) {
            audit_read(state, &access.actor, parts).await;
        }
        Ok(Self { access, state: state.clone(), _need: PhantomData })
    }
}

/// The caller's access from the `authorization` header (HTTP, or gRPC metadata turned into headers).
///
/// # Errors
/// 401 for a missing, malformed, unknown or revoked key.
pub async fn authenticate(state: &AppState, headers: &HeaderMap, permission: Permission) -> Result<Access, ApiError> {
    let Some(ctx) = state.registry_context() else {
        return Ok(Access::unrestricted("local"));
    };
    let header = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let result = match header {
        None if permission == Permission::Infer && ctx.allow_anonymous_inference => {
            let access = Access::anonymous_predictor();
            ctx.limiter.admit(&access, ctx.default_limits)?;
            return Ok(access);
        }
        None => {
            Err(AuthError::Unauthenticated("this endpoint needs an API key: send `Authorization: Bearer <key>`".into()))
        }
        Some(value) => match value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            None => Err(AuthError::Unauthenticated("the Authorization header must be `Bearer <key>`".into())),
            Some(key) => ctx
                .keys
                .lookup(key.trim())
                .ok_or_else(|| AuthError::Unauthenticated("the API key is unknown or revoked".into())),
        },
    };
    match result {
        Ok(access) => {
            ctx.limiter.admit(&access, ctx.default_limits)?;
            Ok(access)
        }
        Err(e) => {
            if permission != Permission::Infer {
                audit_failure(state, "unauthenticated", "management API", "denied: no valid key").await;
            }
            Err(e.into())
        }
    }
}

/// Failures without a valid key are summarised: at most one audit record per [`FAILURE_SUMMARY`], counting them,
/// so that a flood of keyless requests cannot flood the audit log (or hold connections waiting on it).
pub const FAILURE_SUMMARY: Duration = Duration::from_secs(10);

/// Keyless failures counted since the last summary record.
#[derive(Debug)]
pub struct FailureCounter {
    state: parking_lot::Mutex<(std::time::Instant, u64)>,
}

impl Default for FailureCounter {
    fn default() -> Self {
        let long_ago = std::time::Instant::now().checked_sub(FAILURE_SUMMARY).unwrap_or_else(std::time::Instant::now);
        Self { state: parking_lot::Mutex::new((long_ago, 0)) }
    }
}

impl FailureCounter {
    /// Counts one failure; returns how many to record now, if a summary is due.
    fn count(&self) -> Option<u64> {
        let mut s = self.state.lock();
        s.1 += 1;
        if s.0.elapsed() >= FAILURE_SUMMARY {
            let n = s.1;
            *s = (std::time::Instant::now(), 0);
            Some(n)
        } else {
            None
        }
    }
}

/// Reads of the management API (changes are audited by their handlers, with what changed).
fn is_management_read(parts: &Parts) -> bool {
    let path = parts.uri.path();
    (parts.method == axum::http::Method::GET && path.starts_with("/api/v1/"))
        || (parts.method == axum::http::Method::POST && path == "/v2/repository/index")
}

/// Records that a key read the management API: who, which path (and query), allowed.
async fn audit_read(state: &AppState, actor: &str, parts: &Parts) {
    let Some(ctx) = state.registry_context() else { return };
    let target = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    if let Err(e) = ctx.registry.audit(actor, "read", &target, "allowed").await {
        tracing::error!(error = %e, "could not audit a management read");
    }
}

pub(crate) async fn audit_failure(state: &AppState, actor: &str, target: &str, outcome: &str) {
    let Some(ctx) = state.registry_context() else { return };
    let (target, outcome) = if actor == "unauthenticated" {
        match ctx.keyless_failures.count() {
            Some(n) => (target.to_owned(), format!("{outcome} ({n} such request(s) since the last record)")),
            None => return,
        }
    } else {
        (target.to_owned(), outcome.to_owned())
    };
    if let Err(e) = ctx.registry.audit(actor, "auth_failure", &target, &outcome).await {
        tracing::error!(error = %e, "could not audit an authentication failure");
    }
}
