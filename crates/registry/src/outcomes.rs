//! Predictions kept for ground-truth feedback: what a monitored model answered (per request id and row), joined with
//! the true label or value when the client sends it, minutes or days later; kept for the configured retention.

use std::collections::HashSet;

use sqlx::Row;

use crate::spool::Spooled;
use crate::{Registry, RegistryError};

/// Rows per transaction when draining the spool on demand.
const DRAIN_ROWS: usize = 20_000;

/// The SQLite connection that writes kept predictions, opened on first use.
///
/// Its commits do not wait for the disk (`synchronous = NORMAL` in WAL mode: the log is synced at the next
/// checkpoint, or by the next registry write, whose connections stay `FULL`). Kept predictions are telemetry written
/// every 100 ms; a power loss or kernel crash (not a crash of ferry) may lose the last moments' rows, whose
/// feedback then counts as unmatched. The sync per commit was a quarter of the database's work per kept row (perf,
/// 2026-12-05).
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) path: std::path::PathBuf,
    pub(crate) conn: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// Where the serving process appends predictions before they are indexed (see [`crate::spool`]).
    pub(crate) spool: crate::spool::Spool,
}

impl Kept {
    /// Rows per INSERT statement: fewer statements to run, each still quick to bind (7 parameters a row).
    const ROWS_PER_STATEMENT: usize = 64;

    fn open(path: &std::path::Path) -> Result<rusqlite::Connection, RegistryError> {
        let fail =
            |e: rusqlite::Error| RegistryError::Io(format!("cannot open {} to keep predictions: {e}", path.display()));
        // One thread at a time uses it (behind `conn`'s mutex): SQLite's own locking would be wasted.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(fail)?;
        // The registry's other connections write too (in WAL mode, one writer at a time): wait for them.
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(fail)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768;")
            .map_err(fail)?;
        Ok(conn)
    }

    pub(crate) fn new(path: std::path::PathBuf) -> Self {
        let mut spool = path.clone().into_os_string();
        spool.push(".kept-predictions");
        Self { spool: crate::spool::Spool::new(spool.into()), path, conn: std::sync::Mutex::new(None) }
    }

    fn insert(db: &mut rusqlite::Connection, rows: &[OutcomeRow<'_>]) -> rusqlite::Result<u64> {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let new = Self::insert_in(&tx, rows)?;
        tx.commit()?;
        Ok(new)
    }

    fn insert_in(tx: &rusqlite::Transaction<'_>, rows: &[OutcomeRow<'_>]) -> rusqlite::Result<u64> {
        let mut new = 0;
        for chunk in rows.chunks(Self::ROWS_PER_STATEMENT) {
            let mut insert = tx.prepare_cached(&Self::insert_sql(chunk.len()))?;
            for (i, o) in chunk.iter().enumerate() {
                let at = i * 7;
                insert.raw_bind_parameter(at + 1, o.model)?;
                insert.raw_bind_parameter(at + 2, o.request_id)?;
                insert.raw_bind_parameter(at + 3, to_i64(o.row))?;
                insert.raw_bind_parameter(at + 4, to_i64(o.version))?;
                insert.raw_bind_parameter(at + 5, o.at)?;
                insert.raw_bind_parameter(at + 6, o.predicted)?;
                insert.raw_bind_parameter(at + 7, proba_text(o.proba))?;
            }
            new += u64::try_from(insert.raw_execute()?).unwrap_or(0);
        }
        Ok(new)
    }

    /// Runs `work` on this connection (opened on first use; reopened after an error), under the registry's write
    /// lock, which the caller holds when `work` writes.
    fn with_conn<T>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if conn.is_none() {
            *conn = Some(Self::open(&self.path)?);
        }
        let Some(db) = conn.as_mut() else {
            return Err(RegistryError::Io("the prediction writer has no connection".into()));
        };
        let done = work(db);
        if done.is_err() {
            // A connection in an unknown state is reopened on the next batch.
            *conn = None;
        }
        done
    }

    /// One indexing pass: moves up to `max_rows` spooled rows into `outcomes`, with the position, in one
    /// transaction.
    fn index(
        &self,
        db: &mut rusqlite::Connection,
        max_rows: usize,
    ) -> Result<(u64, bool, crate::spool::Position), RegistryError> {
        let fail = |e: rusqlite::Error| RegistryError::Io(format!("registry database: indexing kept predictions: {e}"));
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(fail)?;
        let from = Self::indexed_to(&tx).map_err(fail)?;
        let batch = self.spool.read(from, max_rows)?;
        if batch.next == from {
            self.spool.remove_before(from);
            return Ok((0, false, from));
        }
        // A NaN or infinite prediction has nothing to compare a truth with.
        let rows: Vec<OutcomeRow<'_>> =
            batch.rows.iter().filter(|o| o.predicted.is_finite()).map(Outcome::as_row).collect();
        Self::insert_in(&tx, &rows).map_err(fail)?;
        tx.execute(
            "INSERT INTO outcome_spool (id, segment, offset_bytes) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET segment = excluded.segment, offset_bytes = excluded.offset_bytes",
            (to_i64(batch.next.segment), to_i64(batch.next.offset)),
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        self.spool.remove_before(batch.next);
        Ok((batch.rows.len() as u64, batch.more, batch.next))
    }

    /// Where indexing has come to in the spool, as stored in the database.
    fn indexed_to(db: &rusqlite::Connection) -> rusqlite::Result<crate::spool::Position> {
        let stored: Option<(i64, i64)> = db
            .query_row("SELECT segment, offset_bytes FROM outcome_spool WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        Ok(stored.map_or_else(crate::spool::Position::default, |(segment, offset)| crate::spool::Position {
            segment: u64::try_from(segment).unwrap_or(0),
            offset: u64::try_from(offset).unwrap_or(0),
        }))
    }

    /// The spooled predictions of `model` that `wanted` names (request id, row), found by reading the spool past
    /// where indexing has come to, without moving that position. The caller holds the indexing lock, so that the
    /// position stays put while the spool is read.
    fn spooled_named(&self, model: &str, wanted: &HashSet<(&str, u64)>) -> Result<Vec<Outcome>, RegistryError> {
        let fail = |e: rusqlite::Error| RegistryError::Io(format!("registry database: reading kept predictions: {e}"));
        let mut at = self.with_conn(|db| Self::indexed_to(db).map_err(fail))?;
        let mut found = Vec::new();
        loop {
            let batch = self.spool.read(at, DRAIN_ROWS)?;
            found.extend(batch.rows.into_iter().filter(|o| {
                o.model == model && o.predicted.is_finite() && wanted.contains(&(o.request_id.as_str(), o.row))
            }));
            if !batch.more || batch.next == at {
                return Ok(found);
            }
            at = batch.next;
        }
    }

    /// The INSERT of `rows` rows (at most two texts are prepared: the full chunk and the last one).
    fn insert_sql(rows: usize) -> String {
        let mut sql =
            String::from("INSERT INTO outcomes (model, request_id, row_index, version, at, predicted, proba) VALUES ");
        for i in 0..rows {
            sql.push_str(if i == 0 { "(?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?)" });
        }
        sql.push_str(" ON CONFLICT (model, request_id, row_index) DO NOTHING");
        sql
    }
}

/// One prediction row to keep, borrowing what the server captured (see [`Registry::insert_outcomes_blocking`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutcomeRow<'a> {
    /// Model name.
    pub model: &'a str,
    /// The request's id.
    pub request_id: &'a str,
    /// Row of the request's batch.
    pub row: u64,
    /// Version that answered.
    pub version: u64,
    /// Unix milliseconds.
    pub at: i64,
    /// The predicted class id or value.
    pub predicted: f64,
    /// Class probabilities, column j being class j.
    pub proba: Option<&'a [f64]>,
}

impl OutcomeRow<'_> {
    /// The row as an owned prediction.
    #[must_use]
    pub fn to_outcome(&self) -> Outcome {
        Outcome {
            model: self.model.to_owned(),
            request_id: self.request_id.to_owned(),
            row: self.row,
            version: self.version,
            at: self.at,
            predicted: self.predicted,
            proba: self.proba.map(<[f64]>::to_vec),
        }
    }
}

impl Outcome {
    /// This prediction as a row to insert.
    #[must_use]
    pub fn as_row(&self) -> OutcomeRow<'_> {
        OutcomeRow {
            model: &self.model,
            request_id: &self.request_id,
            row: self.row,
            version: self.version,
            at: self.at,
            predicted: self.predicted,
            proba: self.proba.as_deref(),
        }
    }
}

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

fn proba_text(p: Option<&[f64]>) -> Option<String> {
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
        if self.kept.is_some() {
            let registry = self.clone();
            let outcomes = outcomes.to_vec();
            return tokio::task::spawn_blocking(move || {
                registry.insert_outcomes_blocking(&outcomes.iter().map(Outcome::as_row).collect::<Vec<_>>())
            })
            .await
            .map_err(|e| RegistryError::Io(format!("the prediction writer failed: {e}")))?;
        }
        // PostgreSQL: the whole batch as one JSON parameter of one statement, unpacked by the server. A statement
        // per row would cost a round trip per row.
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
                q: proba_text(o.proba.as_deref()),
            })
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| RegistryError::Invalid(format!("outcome rows: {e}")))?;
        // Only rows of a version the registry holds: replicas sharing the database learn of a delete late, and keep
        // predictions of a deleted model meanwhile. The version's row is locked for the statement (`FOR KEY SHARE`),
        // so that a delete under way makes it wait and then find the version gone: otherwise an insert that saw the
        // version before the delete committed could land after the delete's `DELETE FROM outcomes` and outlive it.
        // (SQLite registries have one writing process, which stops keeping a model's predictions before deleting it.)
        let sql = "INSERT INTO outcomes (model, request_id, row_index, version, at, predicted, proba) \
             SELECT x.m, x.r, x.i, x.v, x.t, x.p, x.q FROM jsonb_to_recordset($1::jsonb) \
             AS x(m TEXT, r TEXT, i BIGINT, v BIGINT, t BIGINT, p DOUBLE PRECISION, q TEXT) \
             WHERE EXISTS (SELECT 1 FROM versions WHERE model = x.m AND version = x.v FOR KEY SHARE) \
             ON CONFLICT (model, request_id, row_index) DO NOTHING";
        Ok(sqlx::query(sql).bind(rows).execute(&self.db).await?.rows_affected())
    }

    /// [`Registry::insert_outcomes`] for a thread outside the async runtime, on SQLite: one transaction of
    /// prepared inserts on a connection of its own, so that every served prediction costs the serving threads no
    /// encoding and no hop between tasks (see the `Kept` comment for the durability it trades).
    ///
    /// # Errors
    /// Database errors; [`RegistryError::Invalid`] on PostgreSQL (use the async form there).
    ///
    /// # Panics
    /// On a thread that drives an async runtime (it waits for the registry's write lock).
    pub fn insert_outcomes_blocking(&self, outcomes: &[OutcomeRow<'_>]) -> Result<u64, RegistryError> {
        let Some(kept) = &self.kept else {
            return Err(RegistryError::Invalid("the blocking prediction writer is for SQLite registries".into()));
        };
        if outcomes.is_empty() {
            return Ok(0);
        }
        // Registry writes on SQLite read then write in one transaction; one that meets a commit of this connection
        // between the two fails at once ("database is locked") instead of waiting, hence the same lock as theirs.
        let _writer = self.write_lock.blocking_lock();
        kept.with_conn(|db| {
            Kept::insert(db, outcomes)
                .map_err(|e| RegistryError::Io(format!("registry database: keeping predictions: {e}")))
        })
    }

    /// Appends predictions to the spool of an SQLite registry, for [`Registry::index_spooled_blocking`] to insert
    /// later: a few bytes per row written to a file, no database work, so that keeping every prediction costs a
    /// saturated server little. Rows are dropped and counted when the spool holds `max_bytes` not yet indexed.
    /// Once this returns, the rows survive a crash of ferry (not of the machine: the file is not synced).
    ///
    /// # Errors
    /// File errors; [`RegistryError::Invalid`] on PostgreSQL (use [`Registry::insert_outcomes`] there).
    pub fn spool_outcomes(&self, outcomes: &[OutcomeRow<'_>], max_bytes: u64) -> Result<Spooled, RegistryError> {
        let Some(kept) = &self.kept else {
            return Err(RegistryError::Invalid("the prediction spool is for SQLite registries".into()));
        };
        kept.spool.append(outcomes, max_bytes)
    }

    /// Closes the spool segment this process appends to (a later append begins a new one).
    pub fn close_spool(&self) {
        if let Some(kept) = &self.kept {
            kept.spool.close();
        }
    }

    /// Bytes of spooled predictions not yet indexed (as of this process's last pass); 0 on PostgreSQL.
    #[must_use]
    pub fn spool_backlog_bytes(&self) -> u64 {
        self.kept.as_ref().map_or(0, |k| k.spool.backlog_bytes())
    }

    /// Moves up to `max_rows` spooled predictions into the database (one transaction, under the write lock).
    /// Returns how many, and whether more are waiting. Nothing to do on PostgreSQL.
    ///
    /// # Errors
    /// File and database errors.
    ///
    /// # Panics
    /// On a thread that drives an async runtime (it waits for the registry's write lock).
    pub fn index_spooled_blocking(&self, max_rows: usize) -> Result<(u64, bool), RegistryError> {
        self.index_pass(max_rows).map(|(rows, more, _)| (rows, more))
    }

    fn index_pass(&self, max_rows: usize) -> Result<(u64, bool, crate::spool::Position), RegistryError> {
        let Some(kept) = &self.kept else { return Ok((0, false, crate::spool::Position::default())) };
        let _pass = kept.spool.indexing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _writer = self.write_lock.blocking_lock();
        kept.with_conn(|db| kept.index(db, max_rows))
    }

    /// Indexes, ahead of the rest of the spool, the spooled predictions of `model` that `items` name: what a join of
    /// ground truth needs, without waiting for the whole backlog to be indexed (about 2 µs per row: seconds after a
    /// saturated burst, where reading the spool took about 0.15 µs per row; BENCHMARKS.md). The indexer reaches them
    /// later and keeps the rows already there, truth and all (`ON CONFLICT DO NOTHING`).
    async fn index_for_join(&self, model: &str, items: &[Truth]) -> Result<(), RegistryError> {
        if self.kept.is_none() || items.is_empty() {
            return Ok(());
        }
        let registry = self.clone();
        let model = model.to_owned();
        let wanted: Vec<(String, u64)> = items.iter().map(|t| (t.request_id.clone(), t.row)).collect();
        tokio::task::spawn_blocking(move || {
            let Some(kept) = &registry.kept else { return Ok(()) };
            let _pass = kept.spool.indexing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let wanted: HashSet<(&str, u64)> = wanted.iter().map(|(id, row)| (id.as_str(), *row)).collect();
            // Read without the write lock: the registry's other writes go on meanwhile.
            let found = kept.spooled_named(&model, &wanted)?;
            if found.is_empty() {
                return Ok(());
            }
            let rows: Vec<OutcomeRow<'_>> = found.iter().map(Outcome::as_row).collect();
            let _writer = registry.write_lock.blocking_lock();
            kept.with_conn(|db| {
                Kept::insert(db, &rows)
                    .map(drop)
                    .map_err(|e| RegistryError::Io(format!("registry database: indexing kept predictions: {e}")))
            })
        })
        .await
        .map_err(|e| RegistryError::Io(format!("the prediction indexer failed: {e}")))?
    }

    /// Indexes every spooled prediction (what anything deleting kept predictions does first).
    pub(crate) async fn drain_spool(&self) -> Result<(), RegistryError> {
        if self.kept.is_none() {
            return Ok(());
        }
        let registry = self.clone();
        tokio::task::spawn_blocking(move || {
            // Up to where the spool ended when asked: appends meanwhile do not keep the caller waiting.
            let end = registry.kept.as_ref().map(|k| k.spool.end()).unwrap_or_default();
            loop {
                let (_, more, next) = registry.index_pass(DRAIN_ROWS)?;
                if !more || next >= end {
                    return Ok(());
                }
            }
        })
        .await
        .map_err(|e| RegistryError::Io(format!("the prediction indexer failed: {e}")))?
    }

    /// Indexes spooled predictions while the oldest one not yet indexed was made before `before` (Unix ms); rows
    /// are spooled in the order they were made, give or take a request's time in the buffer.
    async fn drain_spool_made_before(&self, before: i64) -> Result<(), RegistryError> {
        if self.kept.is_none() {
            return Ok(());
        }
        let registry = self.clone();
        tokio::task::spawn_blocking(move || {
            let Some(kept) = &registry.kept else { return Ok(()) };
            let fail =
                |e: rusqlite::Error| RegistryError::Io(format!("registry database: reading kept predictions: {e}"));
            loop {
                let from = kept.with_conn(|db| Kept::indexed_to(db).map_err(fail))?;
                let oldest = kept.spool.read(from, 1)?.rows.first().map(|o| o.at);
                if oldest.is_none_or(|at| at >= before) {
                    return Ok(());
                }
                let (rows, more, _) = registry.index_pass(DRAIN_ROWS)?;
                if rows == 0 && !more {
                    return Ok(());
                }
            }
        })
        .await
        .map_err(|e| RegistryError::Io(format!("the prediction indexer failed: {e}")))?
    }

    /// Joins ground truth to kept predictions of `model`, in one transaction. Returns, per item in order, the
    /// prediction it joined, or `None` when no prediction has that id and row (unknown, expired, or not yet
    /// written). A second truth for the same prediction replaces the first (a correction).
    ///
    /// # Errors
    /// Database errors.
    pub async fn join_truth(&self, model: &str, items: &[Truth]) -> Result<Vec<Option<Labelled>>, RegistryError> {
        self.index_for_join(model, items).await?;
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
    /// Spooled predictions are indexed first only while the oldest one not yet indexed was made before `before`: a
    /// backlog of younger rows is left to the background indexer, which waits while the machine is busy. Indexing
    /// all of it here, at normal priority, made a server restarted under load (whose retention pass runs at start-up)
    /// serve about 15% fewer requests for its first seconds (measured 2026-12-07, 40 MiB of backlog).
    ///
    /// # Errors
    /// Database errors.
    pub async fn expire_outcomes(&self, before: i64) -> Result<u64, RegistryError> {
        self.drain_spool_made_before(before).await?;
        let _writer = self.sqlite_writer().await;
        Ok(sqlx::query("DELETE FROM outcomes WHERE at < $1").bind(before).execute(&self.db).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArtifactStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_predictions_written_beside_feedback_joins_and_expiry_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("registry.db")), artifacts).await.expect("open");
        let outcome = |i: u64| Outcome {
            model: "m".into(),
            request_id: format!("r{i}"),
            row: 0,
            version: 1,
            at: 1_000 + i64::try_from(i).unwrap_or(0),
            predicted: 1.0,
            proba: Some(vec![0.25, 0.75]),
        };
        // The prediction writer's own connection and the pool's registry writes share the file: neither may fail
        // with "database is locked".
        let writer = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || {
                for batch in 0..50_u64 {
                    let owned: Vec<Outcome> = (batch * 20..batch * 20 + 20).map(outcome).collect();
                    let rows: Vec<OutcomeRow<'_>> = owned.iter().map(Outcome::as_row).collect();
                    assert_eq!(registry.insert_outcomes_blocking(&rows).expect("insert"), 20);
                }
            })
        };
        for i in 0..50_u64 {
            let truth = Truth { request_id: format!("r{i}"), row: 0, truth: 1.0, at: 5 };
            registry.join_truth("m", &[truth]).await.expect("join");
            registry.expire_outcomes(0).await.expect("expire");
        }
        writer.await.expect("writer");
        let joined = registry
            .join_truth("m", &[Truth { request_id: "r999".into(), row: 0, truth: 0.0, at: 6 }])
            .await
            .expect("join");
        let kept = joined[0].as_ref().expect("the last row was kept");
        assert_eq!((kept.version, kept.at, kept.proba.as_deref()), (1, 1_999, Some(&[0.25, 0.75][..])));
        assert_eq!(registry.insert_outcomes(&[outcome(3)]).await.expect("again"), 0, "a repeat keeps the first");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn feedback_finds_its_predictions_in_the_spool_without_indexing_the_backlog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("registry.db")), artifacts).await.expect("open");
        let outcome = |model: &str, i: u64| Outcome {
            model: model.into(),
            request_id: format!("r{i}"),
            row: 0,
            version: 2,
            at: 1_000 + i64::try_from(i).unwrap_or(0),
            predicted: 1.0,
            proba: Some(vec![0.25, 0.75]),
        };
        for batch in 0..3_u64 {
            let owned: Vec<Outcome> = (batch * 1_000..batch * 1_000 + 1_000).map(|i| outcome("m", i)).collect();
            let rows: Vec<OutcomeRow<'_>> = owned.iter().map(Outcome::as_row).collect();
            assert_eq!(registry.spool_outcomes(&rows, u64::MAX).expect("spool").rows, 1_000);
        }
        // The same id under another model is another prediction.
        registry.spool_outcomes(&[outcome("other", 1_500).as_row()], u64::MAX).expect("spool");
        let truth = |id: &str, row: u64| Truth { request_id: id.into(), row, truth: 1.0, at: 9 };
        let joined = registry.join_truth("m", &[truth("r1500", 0), truth("r1500", 1)]).await.expect("join");
        let kept = joined[0].as_ref().expect("found in the spool");
        assert_eq!((kept.version, kept.at, kept.proba.as_deref()), (2, 2_500, Some(&[0.25, 0.75][..])));
        assert!(joined[1].is_none(), "row 1 was never predicted");
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outcomes").fetch_one(&registry.db).await.expect("count")
        };
        assert_eq!(count().await, 1, "only the named prediction was indexed ahead of the backlog");

        let indexer = registry.clone();
        tokio::task::spawn_blocking(move || while indexer.index_spooled_blocking(700).expect("index").1 {})
            .await
            .expect("indexer");
        assert_eq!(count().await, 3_001, "the indexer took the rest, and the joined row once");
        let labelled = registry.labelled_outcomes("m", 0).await.expect("labelled");
        assert_eq!(labelled.len(), 1);
        assert_eq!((labelled[0].request_id.as_str(), labelled[0].truth), ("r1500", 1.0), "the truth survived");
        assert!(registry.labelled_outcomes("other", 0).await.expect("labelled").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expiry_leaves_a_backlog_of_younger_predictions_to_the_indexer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("registry.db")), artifacts).await.expect("open");
        let owned: Vec<Outcome> = (0..3_000_i64)
            .map(|i| Outcome {
                model: "m".into(),
                request_id: format!("r{i}"),
                row: 0,
                version: 1,
                at: 1_000 + i,
                predicted: 1.0,
                proba: None,
            })
            .collect();
        let rows: Vec<OutcomeRow<'_>> = owned.iter().map(Outcome::as_row).collect();
        assert_eq!(registry.spool_outcomes(&rows, u64::MAX).expect("spool").rows, 3_000);
        let backlog = registry.spool_backlog_bytes();
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outcomes").fetch_one(&registry.db).await.expect("count")
        };

        assert_eq!(registry.expire_outcomes(1_000).await.expect("expire"), 0);
        assert_eq!(count().await, 0, "nothing spooled was made before the cutoff, so nothing was indexed");
        assert_eq!(registry.spool_backlog_bytes(), backlog);

        assert_eq!(registry.expire_outcomes(1_500).await.expect("expire"), 500, "the rows made before 1,500");
        assert_eq!(count().await, 2_500, "indexed past the old rows (a pass's worth), the old ones deleted");
        let joined = registry
            .join_truth("m", &[Truth { request_id: "r499".into(), row: 0, truth: 1.0, at: 9 }])
            .await
            .expect("join");
        assert!(joined[0].is_none(), "an expired prediction does not come back from the spool");
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_registry_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = ArtifactStore::local(&dir.path().join("a"), &dir.path().join("s")).expect("store");
        let e = Registry::open("sqlite::memory:", artifacts).await.expect_err("in memory");
        assert!(e.to_string().contains("must be a file"), "{e}");
    }

    #[tokio::test]
    async fn kept_predictions_leave_every_pooled_sqlite_connection_syncing_fully() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts =
            ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
        let registry =
            Registry::open(&Registry::sqlite_url(&dir.path().join("registry.db")), artifacts).await.expect("open");
        let outcome = |i: u64| Outcome {
            model: "m".into(),
            request_id: format!("r{i}"),
            row: 0,
            version: 1,
            at: 1_000,
            predicted: 1.0,
            proba: None,
        };
        for i in 0..8 {
            assert_eq!(registry.insert_outcomes(&[outcome(i)]).await.expect("insert"), 1);
        }
        // Hold every connection of the pool at once: each must be back at FULL (2) for the registry's own writes.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut conn = registry.db.acquire().await.expect("connection");
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await.expect("pragma");
            assert_eq!(level, 2, "a pooled connection was left at synchronous = {level}");
            held.push(conn);
        }
    }
}
