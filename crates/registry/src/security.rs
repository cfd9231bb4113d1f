//! Keys and the audit log in the registry database.

use ferry_auth::{AuditRecord, ChainBreak, GENESIS_HASH, KeyInfo, Role, Scope, generate_key, hash_key, key_id};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::now_ms;
use crate::{Registry, RegistryError};

/// How many times an audit append retries when another writer took the same sequence number.
const APPEND_ATTEMPTS: usize = 20;

/// A key's own abuse limits; `None` means the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per second.
    pub rate_per_second: Option<u32>,
    /// Requests per UTC day.
    pub daily_quota: Option<u64>,
}

impl Registry {
    /// Creates a key and returns it (the only time it is ever visible) with its description.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_key(
        &self,
        name: &str,
        role: Role,
        scopes: &[Scope],
        limits: KeyLimits,
        created_by: &str,
    ) -> Result<(String, KeyInfo), RegistryError> {
        let key = generate_key().map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let info = self.insert_key(&key, name, role, scopes, limits, created_by).await?;
        Ok((key, info))
    }

    /// Stores a key given from outside (the first admin key from `FERRY_ADMIN_KEY`).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a key too short to be safe; database errors.
    pub async fn insert_key(
        &self,
        key: &str,
        name: &str,
        role: Role,
        scopes: &[Scope],
        limits: KeyLimits,
        created_by: &str,
    ) -> Result<KeyInfo, RegistryError> {
        if key.len() < 32 {
            return Err(RegistryError::Invalid("an API key must be at least 32 characters long".into()));
        }
        let hash = hash_key(key);
        let info = KeyInfo {
            id: key_id(&hash),
            name: name.to_owned(),
            role,
            scopes: scopes.to_vec(),
            created_at: now_ms(),
            created_by: created_by.to_owned(),
            revoked_at: None,
            rate_per_second: limits.rate_per_second,
            daily_quota: limits.daily_quota,
        };
        let scopes_json = serde_json::to_string(&info.scopes).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO api_keys (id, hash, name, role, scopes, created_at, created_by, rate_per_second, daily_quota) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&info.id)
        .bind(&hash)
        .bind(name)
        .bind(role.as_str())
        .bind(scopes_json)
        .bind(info.created_at)
        .bind(created_by)
        .bind(limits.rate_per_second.map(i64::from))
        .bind(limits.daily_quota.and_then(|q| i64::try_from(q).ok()))
        .execute(&self.db)
        .await?;
        Ok(info)
    }

    /// Every key (revoked ones too), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, name, role, scopes, created_at, created_by, revoked_at, rate_per_second, daily_quota \
             FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(key_info).collect()
    }

    /// Hash → description of every key that is not revoked (what the server caches for authentication).
    ///
    /// # Errors
    /// Database errors.
    pub async fn active_keys(&self) -> Result<Vec<(String, KeyInfo)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT hash, id, name, role, scopes, created_at, created_by, revoked_at, rate_per_second, daily_quota \
             FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("hash")?, key_info(r)?))).collect()
    }

    /// Revokes a key by id.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown or already revoked key.
    pub async fn revoke_key(&self, id: &str) -> Result<(), RegistryError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.db)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(RegistryError::NotFound(format!("no active key {id:?}")));
        }
        Ok(())
    }

    /// Whether any key exists yet (a fresh data directory has none).
    ///
    /// # Errors
    /// Database errors.
    pub async fn has_keys(&self) -> Result<bool, RegistryError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_keys").fetch_one(&self.db).await?.try_get("n")?;
        Ok(n > 0)
    }

    /// Appends one record to the audit chain.
    ///
    /// # Errors
    /// Database errors, or [`RegistryError::Conflict`] if other writers kept taking the next position.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> Result<AuditRecord, RegistryError> {
        let _serial = self.write_lock.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            match self.try_append(actor, action, target, outcome).await {
                Ok(record) => return Ok(record),
                Err(RegistryError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict("the audit log is too busy; the action was not recorded".into()))
    }

    async fn try_append(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> Result<AuditRecord, RegistryError> {
        let mut tx = self.db.begin().await?;
        let head = sqlx::query("SELECT count, last_hash FROM audit_head WHERE id = 1").fetch_optional(&mut *tx).await?;
        let (count, prev): (i64, String) = match head {
            Some(r) => (r.try_get("count")?, r.try_get("last_hash")?),
            None => (0, GENESIS_HASH.to_owned()),
        };
        let seq = count + 1;
        let at = now_ms();
        let hash = AuditRecord::compute_hash(seq, at, actor, action, target, outcome, &prev);
        sqlx::query(
            "INSERT INTO audit (seq, at, actor, action, target, outcome, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(seq)
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        if count == 0 {
            sqlx::query("INSERT INTO audit_head (id, count, last_hash) VALUES (1, $1, $2)")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE audit_head SET count = $1, last_hash = $2 WHERE id = 1 AND count = $3")
                .bind(seq)
                .bind(&hash)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(AuditRecord {
            seq,
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            prev_hash: prev,
            hash,
        })
    }

    /// Audit records in chain order, from `after` (exclusive), at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, outcome, prev_hash, hash FROM audit WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Verifies the whole audit chain and its head: the number of records, or where the chain breaks.
    ///
    /// # Errors
    /// Database errors.
    pub async fn verify_audit(&self) -> Result<Result<i64, ChainBreak>, RegistryError> {
        let records = self.audit_records(0, i64::MAX).await?;
        let head = sqlx::query("SELECT count, last_hash FROM audit_head WHERE id = 1").fetch_optional(&self.db).await?;
        let head: Option<(i64, String)> =
            head.map(|r| Ok::<_, sqlx::Error>((r.try_get("count")?, r.try_get("last_hash")?))).transpose()?;
        let head = head.unwrap_or((0, GENESIS_HASH.to_owned()));
        Ok(ferry_auth::verify_chain(&records, Some((head.0, head.1.as_str()))).map(|()| head.0))
    }
}

fn key_info(r: &AnyRow) -> Result<KeyInfo, RegistryError> {
    let role: String = r.try_get("role")?;
    let scopes: String = r.try_get("scopes")?;
    Ok(KeyInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role.parse().map_err(|e: ferry_auth::AuthError| RegistryError::Invalid(e.to_string()))?,
        scopes: serde_json::from_str(&scopes).map_err(|e| RegistryError::Invalid(format!("stored scopes: {e}")))?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        revoked_at: r.try_get("revoked_at")?,
        rate_per_second: r.try_get::<Option<i64>, _>("rate_per_second")?.and_then(|v| u32::try_from(v).ok()),
        daily_quota: r.try_get::<Option<i64>, _>("daily_quota")?.and_then(|v| u64::try_from(v).ok()),
    })
}
