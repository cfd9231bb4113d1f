//! Predictions kept for ground-truth feedback: what a monitored model answered (per request id and row), joined with
//! the true label or value when the client sends it, minutes or days later; kept for the configured retention.

use sqlx::Row;

use crate::{Registry, RegistryError};

/// One prediction row, as kept for feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Model name.
    pub model: String,
    /// The request's id (the client's, or the one ferry returned).
    pub request_id: String,
    /// Row of the request's batch.
    pub row: u64,
    /// Version that answered.
    pub version: u64,
    /// Unix milliseconds.
    pub at: i64,
    /// The predicted class id or value.
    pub predicted: f64,
    /// Class probabilities, column j being class j (classification models that output them).
    pub proba: Option<Vec<f64>>,
}

/// One ground-truth item.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// The request's id.
    pub request_id: String,
    /// Row of the request's batch.
    pub row: u64,
    /// The true class id or value.
    pub truth: f64,
    /// When the truth was observed (Unix milliseconds).
    pub at: i64,
}

/// A prediction joined with its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// Whether this truth is the first for the prediction (a resent or corrected one is not).
    pub first: bool,
    /// The request that predicted it (its rows are not independent of each other).
    pub request_id: String,
    /// Version that answered.
    pub version: u64,
    /// When it answered (Unix milliseconds).
    pub at: i64,
    /// The predicted class id or value.
    pub predicted: f64,
    /// Class probabilities, when kept.
    pub proba: Option<Vec<f64>>,
    /// The truth.
    pub truth: f64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn proba_text(p: Option<&Vec<f64>>) -> Option<String> {
    p.map(|v| serde_json::to_string(v).unwrap_or_else(|_| "[]".into()))
}

fn proba_of(text: Option<String>) -> Option<Vec<f64>> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Registry {
    /// Keeps predictions for feedback; a repeated (model, request id, row) keeps the first one, so that a client
    /// reusing an id cannot replace a prediction (and erase its truth). Returns how many were new.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_outcomes(&self, outcomes: &[Outcome]) -> Result<u64, RegistryError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // The whole batch as one JSON parameter of one statement: the database unpacks it (SQLite's `json_each`,
        // PostgreSQL's `jsonb_to_recordset`). A statement per row cost most of the time in the driver, and a long
        // multi-row statement binds slowly (sqlx resolves each SQLite parameter by name, a scan per parameter).
        #[derive(serde::Serialize)]
        struct Row<'a> {
            m: &'a str,
            r: &'a str,
            i: i64,
            v: i64,
            t: i64,
            p: f64,
            q: Option<String>,
        }
        let rows: Vec<Row<'_>> = outcomes
            .iter()
            .map(|o| Row {
                m: &o.model,
                r: &o.request_id,
                i: to_i64(o.row),
                v: to_i64(o.version),
                t: o.at,
                p: o.predicted,
                q: proba_text(o.proba.as_ref()),
            })
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| RegistryError::Invalid(format!("outcome rows: {e}")))?;
        let sql = if self.backend() == "sqlite" {
            "INSERT INTO outcomes (model, request_id, row_index, version, at, predicted, proba) \
             SELECT value ->> '$.m', value ->> '$.r', value ->> '$.i', value ->> '$.v', value ->> '$.t', \
             value ->> '$.p', value ->> '$.q' FROM json_each($1) WHERE true \
             ON CONFLICT (model, request_id, row_index) DO NOTHING"
        } else {
            "INSERT INTO outcomes (model, request_id, row_index, version, at, predicted, proba) \
             SELECT x.m, x.r, x.i, x.v, x.t, x.p, x.q FROM jsonb_to_recordset($1::jsonb) \
             AS x(m TEXT, r TEXT, i BIGINT, v BIGINT, t BIGINT, p DOUBLE PRECISION, q TEXT) \
             ON CONFLICT (model, request_id, row_index) DO NOTHING"
        };
        let _writer = self.sqlite_writer().await;
        let new = sqlx::query(sql).bind(rows).execute(&self.db).await?.rows_affected();
        Ok(new)
    }

    /// Joins ground truth to kept predictions of `model`, in one transaction. Returns, per item in order, the
    /// prediction it joined, or `None` when no prediction has that id and row (unknown, expired, or not yet
    /// written). A second truth for the same prediction replaces the first (a correction).
    ///
    /// # Errors
    /// Database errors.
    pub async fn join_truth(&self, model: &str, items: &[Truth]) -> Result<Vec<Option<Labelled>>, RegistryError> {
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let mut joined = Vec::with_capacity(items.len());
        for t in items {
            let before: Option<Option<f64>> = sqlx::query_scalar(
                "SELECT truth FROM outcomes WHERE model = $1 AND request_id = $2 AND row_index = $3",
            )
            .bind(model)
            .bind(&t.request_id)
            .bind(to_i64(t.row))
            .fetch_optional(&mut *tx)
            .await?;
            if before.is_none() {
                joined.push(None);
                continue;
            }
            let row = sqlx::query(
                "UPDATE outcomes SET truth = $1, feedback_at = $2 WHERE model = $3 AND request_id = $4 \
                 AND row_index = $5 RETURNING version, at, predicted, proba",
            )
            .bind(t.truth)
            .bind(t.at)
            .bind(model)
            .bind(&t.request_id)
            .bind(to_i64(t.row))
            .fetch_optional(&mut *tx)
            .await?;
            joined.push(match row {
                None => None,
                Some(r) => Some(Labelled {
                    first: before.flatten().is_none(),
                    request_id: t.request_id.clone(),
                    version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    at: r.try_get("at")?,
                    predicted: r.try_get("predicted")?,
                    proba: proba_of(r.try_get("proba")?),
                    truth: t.truth,
                }),
            });
        }
        tx.commit().await?;
        Ok(joined)
    }

    /// `model`'s predictions made at or after `since` (Unix ms) that have their truth, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn labelled_outcomes(&self, model: &str, since: i64) -> Result<Vec<Labelled>, RegistryError> {
        let rows = sqlx::query(
            "SELECT request_id, version, at, predicted, proba, truth FROM outcomes WHERE model = $1 AND at >= $2 \
             AND truth IS NOT NULL ORDER BY at, request_id, row_index",
        )
        .bind(model)
        .bind(since)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Labelled {
                    first: true,
                    request_id: r.try_get("request_id")?,
                    version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    at: r.try_get("at")?,
                    predicted: r.try_get("predicted")?,
                    proba: proba_of(r.try_get("proba")?),
                    truth: r.try_get("truth")?,
                })
            })
            .collect()
    }

    /// Deletes predictions kept for feedback made before `before` (Unix ms); returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn expire_outcomes(&self, before: i64) -> Result<u64, RegistryError> {
        let _writer = self.sqlite_writer().await;
        Ok(sqlx::query("DELETE FROM outcomes WHERE at < $1").bind(before).execute(&self.db).await?.rows_affected())
    }
}
