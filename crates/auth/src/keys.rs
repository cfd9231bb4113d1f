//! API keys, roles, scopes and permissions.

use ferry_types::{ErrorKind, HasErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so that leaked keys are easy to find in logs and repositories.
pub const KEY_PREFIX: &str = "fry_";
/// Random bytes per key: 256 bits, so hashing with SHA-256 (no salt, no stretching) is safe to store.
const KEY_BYTES: usize = 32;

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Run inference.
    Infer,
    /// Read models, versions, aliases, events.
    Read,
    /// Push versions, move aliases, delete, load and unload.
    Deploy,
    /// Keys, audit log, data-subject erasure.
    Admin,
}

/// A key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read, deploy and infer.
    Deployer,
    /// Inference only.
    Predictor,
    /// Read the registry only.
    Viewer,
}

impl Role {
    /// Whether this role grants `permission`.
    #[must_use]
    pub const fn grants(self, permission: Permission) -> bool {
        match (self, permission) {
            (Self::Admin, _) | (Self::Deployer, Permission::Infer | Permission::Read | Permission::Deploy) => true,
            (Self::Predictor, Permission::Infer) | (Self::Viewer, Permission::Read) => true,
            (Self::Deployer, Permission::Admin)
            | (Self::Predictor, Permission::Read | Permission::Deploy | Permission::Admin)
            | (Self::Viewer, Permission::Infer | Permission::Deploy | Permission::Admin) => false,
        }
    }

    /// Lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Deployer => "deployer",
            Self::Predictor => "predictor",
            Self::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "deployer" => Ok(Self::Deployer),
            "predictor" => Ok(Self::Predictor),
            "viewer" => Ok(Self::Viewer),
            other => Err(AuthError::Invalid(format!(
                "role {other:?} does not exist: use admin, deployer, predictor or viewer"
            ))),
        }
    }
}

/// A model-name pattern: `*` matches any run of characters, `?` one character; everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct Scope(String);

impl Scope {
    /// Validates a pattern (model-name characters plus `*` and `?`).
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for an empty pattern or another character.
    pub fn new(pattern: impl Into<String>) -> Result<Self, AuthError> {
        let pattern = pattern.into();
        let ok = !pattern.is_empty()
            && pattern.len() <= 128
            && pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*' | '?'));
        if !ok {
            return Err(AuthError::Invalid(format!(
                "scope {pattern:?} is not a model-name pattern (letters, digits, _ - . and the wildcards * ?)"
            )));
        }
        Ok(Self(pattern))
    }

    /// Whether `name` matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    /// The pattern.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> Self {
        s.0
    }
}

/// Iterative wildcard matching with backtracking to the last `*` (linear in practice, no recursion).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A stored key's description (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Public identifier (the first characters of the key's hash), used in audit records.
    pub id: String,
    /// A human name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// Model-name patterns the key is limited to.
    pub scopes: Vec<Scope>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Who created it (a key id, or `bootstrap`).
    pub created_by: String,
    /// Unix milliseconds, if revoked.
    pub revoked_at: Option<i64>,
    /// Requests per second this key may make (burst: the same number); `None` = the server's default.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Requests per UTC day; `None` = the server's default.
    #[serde(default)]
    pub daily_quota: Option<u64>,
}

/// The resolved identity of a caller: what every handler gets, and passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The key id, or `anonymous`.
    pub actor: String,
    /// The role.
    pub role: Role,
    /// Model scopes; empty means none.
    pub scopes: Vec<Scope>,
    /// The key's own request rate limit, if any.
    pub rate_per_second: Option<u32>,
    /// The key's own daily quota, if any.
    pub daily_quota: Option<u64>,
}

impl Access {
    /// Anonymous inference, when the server allows it.
    #[must_use]
    pub fn anonymous_predictor() -> Self {
        Self {
            actor: "anonymous".into(),
            role: Role::Predictor,
            scopes: vec![Scope("*".into())],
            rate_per_second: None,
            daily_quota: None,
        }
    }

    /// Full access for in-process use without authentication (tests, library embedding).
    #[must_use]
    pub fn unrestricted(actor: &str) -> Self {
        Self {
            actor: actor.into(),
            role: Role::Admin,
            scopes: vec![Scope("*".into())],
            rate_per_second: None,
            daily_quota: None,
        }
    }

    /// Whether the role grants `permission`.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`] naming the role and what it lacks.
    pub fn require(&self, permission: Permission) -> Result<(), AuthError> {
        if self.role.grants(permission) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "key {} has role {}, which may not {}",
                self.actor,
                self.role.as_str(),
                match permission {
                    Permission::Infer => "run inference",
                    Permission::Read => "read the registry",
                    Permission::Deploy => "change models, versions or aliases",
                    Permission::Admin => "administer keys, the audit log or data subjects",
                }
            )))
        }
    }

    /// Whether the key's scopes cover `model`.
    #[must_use]
    pub fn covers(&self, model: &str) -> bool {
        self.scopes.iter().any(|s| s.matches(model))
    }

    /// [`Access::require`] plus the model scope.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`].
    pub fn require_on(&self, permission: Permission, model: &str) -> Result<(), AuthError> {
        self.require(permission)?;
        if self.covers(model) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!("key {} is not scoped to model {model:?}", self.actor)))
        }
    }
}

/// Authentication and authorization failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No key, a malformed header, or an unknown or revoked key (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key without the permission or scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// A bad role, scope or key request (400).
    #[error("{0}")]
    Invalid(String),
}

impl HasErrorKind for AuthError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::Forbidden(_) => ErrorKind::PermissionDenied,
            Self::Invalid(_) => ErrorKind::InvalidInput,
        }
    }
}

/// A new random key, `fry_` + 64 hex digits.
///
/// # Errors
/// [`AuthError::Invalid`] if the system's random source fails.
pub fn generate_key() -> Result<String, AuthError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Invalid(format!("no system randomness: {e}")))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// The stored form of a key: its SHA-256, hex.
#[must_use]
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The public id of a key: the first 12 hex digits of its hash.
#[must_use]
pub fn key_id(hash: &str) -> String {
    hash.get(..12).unwrap_or(hash).to_owned()
}

/// Compares two hashes in constant time (the lookup is by hash; this guards the final comparison).
#[must_use]
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_they_say() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true]),
            (Role::Deployer, [true, true, true, false]),
            (Role::Predictor, [true, false, false, false]),
            (Role::Viewer, [false, true, false, false]),
        ];
        for (role, grants) in table {
            for (p, want) in [Infer, Read, Deploy, Admin].into_iter().zip(grants) {
                assert_eq!(role.grants(p), want, "{role:?} {p:?}");
            }
        }
    }

    #[test]
    fn scopes_match_globs() {
        let s = Scope::new("fraud-*").expect("scope");
        assert!(s.matches("fraud-v2") && s.matches("fraud-") && !s.matches("churn"));
        assert!(Scope::new("*").expect("all").matches("anything"));
        assert!(Scope::new("a?c").expect("q").matches("abc") && !Scope::new("a?c").expect("q").matches("ac"));
        assert!(Scope::new("*-prod-*").expect("mid").matches("x-prod-y"));
        assert!(Scope::new("../x").is_err() && Scope::new("").is_err());
    }

    #[test]
    fn keys_are_random_and_stored_only_as_hashes() {
        let (a, b) = (generate_key().expect("a"), generate_key().expect("b"));
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        let h = hash_key(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[4..]));
        assert!(same_hash(&h, &hash_key(&a)) && !same_hash(&h, &hash_key(&b)));
    }

    #[test]
    fn access_checks_role_then_scope() {
        let access = Access {
            actor: "k1".into(),
            role: Role::Deployer,
            scopes: vec![Scope::new("fraud-*").expect("s")],
            rate_per_second: None,
            daily_quota: None,
        };
        assert!(access.require_on(Permission::Deploy, "fraud-1").is_ok());
        assert!(
            matches!(access.require_on(Permission::Deploy, "churn"), Err(AuthError::Forbidden(m)) if m.contains("scoped"))
        );
        assert!(matches!(access.require(Permission::Admin), Err(AuthError::Forbidden(m)) if m.contains("deployer")));
    }
}
