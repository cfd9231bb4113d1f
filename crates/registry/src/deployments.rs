//! Deployments: the traffic split of a model, kept as JSON (the registry checks nothing of its content; the server
//! validates it with `ferry_rollout` before it gets here). Every change is an event of the model.

use sqlx::Row;

use crate::{Registry, RegistryError};

/// A stored deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeploymentRecord {
    /// Model name.
    pub model: String,
    /// The deployment, as JSON text.
    pub spec: String,
    /// 1 for the first, then one more per change.
    pub revision: u64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Who set it.
    pub updated_by: String,
}

fn record(row: &sqlx::any::AnyRow) -> Result<DeploymentRecord, RegistryError> {
    Ok(DeploymentRecord {
        model: row.try_get("model")?,
        spec: row.try_get("spec")?,
        revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or(0),
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

impl Registry {
    /// `name`'s deployment, if it has one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn deployment(&self, name: &str) -> Result<Option<DeploymentRecord>, RegistryError> {
        sqlx::query("SELECT model, spec, revision, updated_at, updated_by FROM deployments WHERE model = $1")
            .bind(name)
            .fetch_optional(&self.db)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    /// Every deployment.
    ///
    /// # Errors
    /// Database errors.
    pub async fn deployments(&self) -> Result<Vec<DeploymentRecord>, RegistryError> {
        sqlx::query("SELECT model, spec, revision, updated_at, updated_by FROM deployments ORDER BY model")
            .fetch_all(&self.db)
            .await?
            .iter()
            .map(record)
            .collect()
    }

    /// Sets `name`'s deployment (the model must exist), with `detail` in the model's events.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown model; database errors.
    pub async fn set_deployment(
        &self,
        name: &str,
        spec: &str,
        detail: &str,
        actor: &str,
    ) -> Result<DeploymentRecord, RegistryError> {
        self.get_model(name).await?;
        let at = crate::store::now_ms();
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(
            "INSERT INTO deployments (model, spec, revision, updated_at, updated_by) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (model) DO UPDATE SET spec = excluded.spec, revision = deployments.revision + 1, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by \
             RETURNING model, spec, revision, updated_at, updated_by",
        )
        .bind(name)
        .bind(spec)
        .bind(at)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await?;
        let record = record(&row)?;
        crate::store::event(&mut tx, name, None, "set_deployment", detail, actor, at).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Removes `name`'s deployment (its serving alias serves all of its traffic again).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when it has none; database errors.
    pub async fn delete_deployment(&self, name: &str, actor: &str) -> Result<(), RegistryError> {
        let at = crate::store::now_ms();
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let removed =
            sqlx::query("DELETE FROM deployments WHERE model = $1").bind(name).execute(&mut *tx).await?.rows_affected();
        if removed == 0 {
            return Err(RegistryError::NotFound(format!("model {name:?} has no deployment")));
        }
        crate::store::event(&mut tx, name, None, "delete_deployment", "", actor, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `name`'s rollout state (JSON), if it has one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rollout(&self, name: &str) -> Result<Option<String>, RegistryError> {
        Ok(sqlx::query_scalar("SELECT state FROM rollouts WHERE model = $1")
            .bind(name)
            .fetch_optional(&self.db)
            .await?)
    }

    /// `name`'s rollout state and its last update (Unix milliseconds), for [`Registry::store_rollout_if`].
    ///
    /// # Errors
    /// Database errors.
    pub async fn rollout_record(&self, name: &str) -> Result<Option<(String, i64)>, RegistryError> {
        let row = sqlx::query("SELECT state, updated_at FROM rollouts WHERE model = $1")
            .bind(name)
            .fetch_optional(&self.db)
            .await?;
        row.map(|r| Ok((r.try_get("state")?, r.try_get("updated_at")?))).transpose()
    }

    /// Stores `name`'s rollout `state` only if its record is still as read (`seen`: its last update, or `None` when
    /// it had none), with `detail` in the model's events when not empty: of two writers racing (two starts, a
    /// person's action and a judgement), on one replica or several, exactly one wins. Returns whether this one did.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown model; database errors.
    pub async fn store_rollout_if(
        &self,
        name: &str,
        seen: Option<i64>,
        state: &str,
        detail: &str,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        self.get_model(name).await?;
        let at = crate::store::now_ms().max(seen.unwrap_or(0).saturating_add(1));
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let written = match seen {
            None => sqlx::query(
                "INSERT INTO rollouts (model, state, updated_at) VALUES ($1, $2, $3) ON CONFLICT (model) DO NOTHING",
            )
            .bind(name)
            .bind(state)
            .bind(at)
            .execute(&mut *tx)
            .await?,
            Some(seen) => {
                sqlx::query("UPDATE rollouts SET state = $2, updated_at = $3 WHERE model = $1 AND updated_at = $4")
                    .bind(name)
                    .bind(state)
                    .bind(at)
                    .bind(seen)
                    .execute(&mut *tx)
                    .await?
            }
        };
        let won = written.rows_affected() == 1;
        if !won {
            return Ok(false);
        }
        if !detail.is_empty() {
            crate::store::event(&mut tx, name, None, "rollout", detail, actor, at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every rollout's model, state and last update (Unix milliseconds).
    ///
    /// # Errors
    /// Database errors.
    pub async fn rollouts(&self) -> Result<Vec<(String, String, i64)>, RegistryError> {
        let rows =
            sqlx::query("SELECT model, state, updated_at FROM rollouts ORDER BY model").fetch_all(&self.db).await?;
        rows.iter().map(|r| Ok((r.try_get("model")?, r.try_get("state")?, r.try_get("updated_at")?))).collect()
    }

    /// Claims `name`'s rollout for one judgement by writing `leased` (the state with its next judgement moved on):
    /// succeeds only if nobody updated it since `seen` (its `updated_at` as read), so that of several replicas one
    /// judges each interval, and a replica reading after the claim finds it not due. Returns the claim's `updated_at`
    /// (for [`Registry::store_rollout_if`] and for renewing the claim), or `None` when another writer came first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_rollout(&self, name: &str, seen: i64, leased: &str) -> Result<Option<i64>, RegistryError> {
        let now = crate::store::now_ms().max(seen.saturating_add(1));
        let _writer = self.sqlite_writer().await;
        let claimed =
            sqlx::query("UPDATE rollouts SET state = $1, updated_at = $2 WHERE model = $3 AND updated_at = $4")
                .bind(leased)
                .bind(now)
                .bind(name)
                .bind(seen)
                .execute(&self.db)
                .await?
                .rows_affected();
        Ok((claimed == 1).then_some(now))
    }

    /// Stores `name`'s rollout state, with `detail` in the model's events when it is not empty.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown model; database errors.
    pub async fn set_rollout(&self, name: &str, state: &str, detail: &str, actor: &str) -> Result<(), RegistryError> {
        self.get_model(name).await?;
        let at = crate::store::now_ms();
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO rollouts (model, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (model) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(state)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if !detail.is_empty() {
            crate::store::event(&mut tx, name, None, "rollout", detail, actor, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Publishes this `replica`'s counts of `name`'s deployment `revision` (counted since `since_ms`), one JSON text
    /// per version, replacing what it published before; rows of older revisions, of any replica, are deleted.
    ///
    /// # Errors
    /// Database errors.
    pub async fn publish_arm_counts(
        &self,
        name: &str,
        replica: &str,
        revision: u64,
        since_ms: i64,
        counts: &[(u64, String)],
    ) -> Result<(), RegistryError> {
        let at = crate::store::now_ms();
        let revision = i64::try_from(revision).unwrap_or(i64::MAX);
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM arm_counts WHERE model = $1 AND (revision < $2 OR (replica = $3 AND revision <> $2))")
            .bind(name)
            .bind(revision)
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        for (version, totals) in counts {
            sqlx::query(
                "INSERT INTO arm_counts (model, replica, version, revision, since_ms, totals, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (model, replica, version) DO UPDATE SET \
                 revision = excluded.revision, since_ms = excluded.since_ms, totals = excluded.totals, \
                 updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(replica)
            .bind(i64::try_from(*version).unwrap_or(i64::MAX))
            .bind(revision)
            .bind(since_ms)
            .bind(totals)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every replica's published counts of `name`'s deployment `revision`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn arm_counts(&self, name: &str, revision: u64) -> Result<Vec<PublishedCounts>, RegistryError> {
        let rows = sqlx::query(
            "SELECT replica, version, since_ms, totals FROM arm_counts WHERE model = $1 AND revision = $2 \
             ORDER BY replica, version",
        )
        .bind(name)
        .bind(i64::try_from(revision).unwrap_or(i64::MAX))
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                let version: i64 = r.try_get("version")?;
                Ok(PublishedCounts {
                    replica: r.try_get("replica")?,
                    version: u64::try_from(version).unwrap_or(0),
                    since_ms: r.try_get("since_ms")?,
                    totals: r.try_get("totals")?,
                })
            })
            .collect()
    }
}

/// One replica's published counts of one version (see [`Registry::publish_arm_counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCounts {
    /// The replica that counted.
    pub replica: String,
    /// The version counted.
    pub version: u64,
    /// Since when that replica counted (Unix milliseconds).
    pub since_ms: i64,
    /// The counts, as the replica serialised them.
    pub totals: String,
}
