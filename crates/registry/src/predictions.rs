//! Logged predictions, by data subject: kept for the configured retention, erased on request.

use serde::Serialize;
use sqlx::Row;

use crate::{Registry, RegistryError};

/// One logged prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PredictionRecord {
    /// Unique id.
    pub id: String,
    /// Model name.
    pub model: String,
    /// Version that answered.
    pub version: u64,
    /// The data subject, from the configured header.
    pub subject: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// The inputs as Open Inference Protocol JSON tensors (redacted ones without data).
    pub request: String,
    /// The outputs, likewise.
    pub response: String,
}

impl Registry {
    /// Stores logged predictions.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_predictions(&self, records: &[PredictionRecord]) -> Result<(), RegistryError> {
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO predictions (id, model, version, subject, at, request, response) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&r.id)
            .bind(&r.model)
            .bind(i64::try_from(r.version).unwrap_or(i64::MAX))
            .bind(&r.subject)
            .bind(r.at)
            .bind(&r.request)
            .bind(&r.response)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every logged prediction about `subject`, oldest first (a data-subject access request).
    ///
    /// # Errors
    /// Database errors.
    pub async fn subject_predictions(&self, subject: &str) -> Result<Vec<PredictionRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, model, version, subject, at, request, response FROM predictions WHERE subject = $1 \
             ORDER BY at, id",
        )
        .bind(subject)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PredictionRecord {
                    id: r.try_get("id")?,
                    model: r.try_get("model")?,
                    version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    subject: r.try_get("subject")?,
                    at: r.try_get("at")?,
                    request: r.try_get("request")?,
                    response: r.try_get("response")?,
                })
            })
            .collect()
    }

    /// Erases every logged prediction about `subject`; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn erase_subject(&self, subject: &str) -> Result<u64, RegistryError> {
        let _writer = self.sqlite_writer().await;
        Ok(sqlx::query("DELETE FROM predictions WHERE subject = $1")
            .bind(subject)
            .execute(&self.db)
            .await?
            .rows_affected())
    }

    /// Deletes predictions logged before `before` (Unix ms); returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn expire_predictions(&self, before: i64) -> Result<u64, RegistryError> {
        let _writer = self.sqlite_writer().await;
        Ok(sqlx::query("DELETE FROM predictions WHERE at < $1").bind(before).execute(&self.db).await?.rows_affected())
    }
}
