//! The metadata store: models, versions, aliases and events in SQLite or PostgreSQL, and publishing.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_package::{Manifest, PackageContents};
use ferry_types::ModelName;
use futures::Stream;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::{ArtifactStore, RegistryError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Name.
    pub name: String,
    /// From the first package's manifest.
    pub description: String,
    /// From the first package's manifest.
    pub owner: String,
    /// Highest registered version still present, if any.
    pub latest_version: Option<u64>,
    /// Number of versions.
    pub versions: u64,
    /// Alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Who registered it.
    pub created_by: String,
}

/// A registered version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionRecord {
    /// Model name.
    pub model: String,
    /// Version number, assigned by the registry.
    pub version: u64,
    /// SHA-256 of the package.
    pub digest: String,
    /// Package size in bytes.
    pub size: u64,
    /// The package manifest (see docs/package-format.md).
    #[schema(value_type = Object)]
    pub manifest: Manifest,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Who registered it.
    pub created_by: String,
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AliasRecord {
    /// Model name.
    pub model: String,
    /// Alias name.
    pub alias: String,
    /// The version it points at.
    pub version: u64,
    /// The version it pointed at before this change, if any.
    pub previous: Option<u64>,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Who set it.
    pub updated_by: String,
}

/// How an alias may be changed, for callers racing each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AliasUpdate {
    /// Set it whatever it points at now.
    #[default]
    Always,
    /// Only if the alias does not exist yet.
    CreateOnly,
    /// Only if it points at this version now (compare-and-set).
    IfVersion(u64),
}

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Model name.
    pub model: String,
    /// Version concerned, if any.
    pub version: Option<u64>,
    /// `register`, `delete_version`, `delete_model`, `set_alias`, `delete_alias`, `set_deployment`,
    /// `delete_deployment`.
    pub action: String,
    /// Details in words.
    pub detail: String,
    /// Who did it.
    pub actor: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Which version of a model: `NAME`, `NAME:3` or `NAME@production`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The highest version.
    Latest,
    /// A version number.
    Version(u64),
    /// The version an alias points at.
    Alias(String),
}

impl FromStr for Selector {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s == "latest" {
            return Ok(Self::Latest);
        }
        match s.parse::<u64>() {
            Ok(v) if v > 0 => Ok(Self::Version(v)),
            _ => {
                check_alias(s)?;
                Ok(Self::Alias(s.to_owned()))
            }
        }
    }
}

/// Alias names follow model-name rules but must not be all digits (they would read as versions).
fn check_alias(alias: &str) -> Result<(), RegistryError> {
    ModelName::new(alias).map_err(|e| RegistryError::Invalid(format!("alias: {e}")))?;
    if alias.bytes().all(|b| b.is_ascii_digit()) || alias == "latest" {
        return Err(RegistryError::Invalid(format!("alias {alias:?} would read as a version; pick a name")));
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> Result<i64, RegistryError> {
    i64::try_from(v).map_err(|_| RegistryError::NotFound(format!("version {v} does not exist")))
}

/// The registry: metadata in SQL, packages in the artifact store.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) db: AnyPool,
    /// Serialises writes in this process: always for audit appends (one chain), and every write on SQLite, which
    /// answers "database is locked" when two read-then-write transactions race instead of waiting.
    pub(crate) write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    artifacts: ArtifactStore,
    backend: &'static str,
    /// SQLite only: the connection that writes kept predictions.
    pub(crate) kept: Option<std::sync::Arc<crate::outcomes::Kept>>,
}

impl Registry {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), runs the migrations, and uses `artifacts`.
    ///
    /// # Errors
    /// Connection or migration errors, naming the database.
    pub async fn open(url: &str, artifacts: ArtifactStore) -> Result<Self, RegistryError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            "postgres"
        } else {
            return Err(RegistryError::Invalid(format!(
                "registry URL {url:?}: expected sqlite://PATH or postgres://USER@HOST/DB"
            )));
        };
        let sqlite = backend == "sqlite";
        let db = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Write-ahead logging: readers never wait for the writer, and a commit appends to the log
                        // (synced) instead of copying every changed page to a rollback journal first. A larger page
                        // cache keeps a batch of kept predictions from spilling to disk mid-transaction.
                        sqlx::Executor::execute(
                            &mut *conn,
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -32768;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| RegistryError::Io(format!("cannot open the registry database {}: {e}", redact(url))))?;
        MIGRATOR.run(&db).await?;
        let kept = if sqlite {
            // The file the pool opened, however the URL spelled it; an in-memory database ("") has none.
            let file: String =
                sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'").fetch_one(&db).await?;
            if file.is_empty() {
                return Err(RegistryError::Invalid(format!(
                    "registry URL {}: the SQLite registry must be a file (sqlite://PATH)",
                    redact(url)
                )));
            }
            Some(std::sync::Arc::new(crate::outcomes::Kept::new(file.into())))
        } else {
            None
        };
        Ok(Self { db, artifacts, backend, kept, write_lock: std::sync::Arc::default() })
    }

    /// An SQLite URL for a file, created when missing.
    #[must_use]
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Holds the write lock on SQLite (see `write_lock`); nothing on PostgreSQL, which orders writers itself.
    pub(crate) async fn sqlite_writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.backend == "sqlite" { Some(self.write_lock.lock().await) } else { None }
    }

    /// The artifact store.
    #[must_use]
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// Closes the database pool.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Every model, by name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_models(&self) -> Result<Vec<ModelRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT m.name, m.description, m.owner, m.created_at, m.created_by, \
             (SELECT MAX(v.version) FROM versions v WHERE v.model = m.name) AS latest, \
             (SELECT COUNT(*) FROM versions v WHERE v.model = m.name) AS n \
             FROM models m ORDER BY m.name",
        )
        .fetch_all(&self.db)
        .await?;
        let aliases =
            sqlx::query("SELECT model, alias, version FROM aliases ORDER BY model, alias").fetch_all(&self.db).await?;
        let mut by_model: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for a in aliases {
            by_model.entry(a.try_get("model")?).or_default().insert(a.try_get("alias")?, to_u64(a.try_get("version")?));
        }
        rows.iter().map(|r| model_record(r, &mut by_model)).collect()
    }

    /// One model.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`].
    pub async fn get_model(&self, name: &str) -> Result<ModelRecord, RegistryError> {
        self.list_models()
            .await?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| RegistryError::NotFound(format!("model {name:?} is not in the registry")))
    }

    /// Registers a verified, stored package as the next version of its model (creating the model on first use).
    ///
    /// # Errors
    /// [`RegistryError::Conflict`] when the model already has this exact package.
    async fn insert_version(&self, contents: &PackageContents, actor: &str) -> Result<VersionRecord, RegistryError> {
        let name = contents.manifest.name.as_str();
        let manifest_json =
            serde_json::to_string(&contents.manifest).map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))?;
        let at = now_ms();
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        if let Some(existing) = sqlx::query("SELECT version FROM versions WHERE model = $1 AND digest = $2")
            .bind(name)
            .bind(&contents.digest)
            .fetch_optional(&mut *tx)
            .await?
        {
            let v: i64 = existing.try_get("version")?;
            return Err(RegistryError::Conflict(format!(
                "this package ({}) is already version {v} of {name:?}",
                short(&contents.digest)
            )));
        }
        sqlx::query(
            "INSERT INTO models (name, description, owner, next_version, created_at, created_by) \
             VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&contents.manifest.description)
        .bind(&contents.manifest.owner)
        .bind(at)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        // The counter only grows, so a deleted version's number is never handed out again.
        let row =
            sqlx::query("UPDATE models SET next_version = next_version + 1 WHERE name = $1 RETURNING next_version")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let version: i64 = row.try_get::<i64, _>("next_version")? - 1;
        sqlx::query(
            "INSERT INTO versions (model, version, digest, size, manifest, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(name)
        .bind(version)
        .bind(&contents.digest)
        .bind(i64::try_from(contents.size).unwrap_or(i64::MAX))
        .bind(&manifest_json)
        .bind(at)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("this package is already registered for {name:?}")))?;
        event(&mut tx, name, Some(version), "register", &format!("package {}", short(&contents.digest)), actor, at)
            .await?;
        tx.commit().await?;
        Ok(VersionRecord {
            model: name.to_owned(),
            version: to_u64(version),
            digest: contents.digest.clone(),
            size: contents.size,
            manifest: contents.manifest.clone(),
            aliases: vec![],
            created_at: at,
            created_by: actor.to_owned(),
        })
    }

    /// Publishes an upload: stages `body` (at most `limit` bytes), verifies it as a package of `name`, lets `check`
    /// inspect the staged package and its unpacked files (its signature, the model's real signature against the
    /// manifest), stores it, reads it back,
    /// and only then registers it as the next version.
    ///
    /// # Errors
    /// [`RegistryError::TooLarge`], [`RegistryError::Invalid`] for a bad package or a name mismatch,
    /// [`RegistryError::Conflict`] for a package already registered, store and database errors.
    pub async fn publish<S, E, C>(
        &self,
        name: &ModelName,
        body: S,
        limit: u64,
        actor: &str,
        check: C,
    ) -> Result<VersionRecord, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
        C: FnOnce(&Path, &Path, &Manifest) -> Result<(), String> + Send + 'static,
    {
        let staged = self.artifacts.stage(body, limit).await?;
        let path = staged.path.clone();
        // Named after the staged file, which is unique, so concurrent uploads of one package never share it.
        let unpack_dir = staged.path.with_extension("unpack");
        let dir = unpack_dir.clone();
        let verified = tokio::task::spawn_blocking(move || -> Result<PackageContents, RegistryError> {
            drop(std::fs::remove_dir_all(&dir));
            std::fs::create_dir_all(&dir)
                .map_err(|e| RegistryError::Io(format!("cannot create {}: {e}", dir.display())))?;
            let result = ferry_package::verify(&path, Some(&dir), &|_| {})
                .map_err(|e| RegistryError::Invalid(e.to_string()))
                .and_then(|contents| {
                    check(&path, &dir, &contents.manifest).map_err(RegistryError::Invalid)?;
                    Ok(contents)
                });
            drop(std::fs::remove_dir_all(&dir));
            result
        })
        .await
        .map_err(|e| RegistryError::Io(format!("package verification panicked: {e}")))??;
        if verified.manifest.name != *name {
            return Err(RegistryError::Invalid(format!(
                "the package is model {:?}, but was uploaded as {:?}",
                verified.manifest.name.as_str(),
                name.as_str()
            )));
        }
        if verified.digest != staged.digest {
            return Err(RegistryError::Invalid("the package changed while it was being verified".into()));
        }
        self.artifacts.store(&staged).await?;
        let record = self.insert_version(&verified, actor).await;
        drop(staged);
        record
    }

    /// Versions of `name`, ascending.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown model.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<VersionRecord>, RegistryError> {
        self.ensure_model(name).await?;
        let rows = sqlx::query(
            "SELECT model, version, digest, size, manifest, created_at, created_by FROM versions \
             WHERE model = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(&self.db)
        .await?;
        let aliases = self.aliases_of(name).await?;
        rows.iter().map(|r| version_record(r, &aliases)).collect()
    }

    /// One version, chosen by number, alias or latest.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] naming what is missing.
    pub async fn resolve(&self, name: &str, selector: &Selector) -> Result<VersionRecord, RegistryError> {
        let version = match selector {
            Selector::Version(v) => *v,
            Selector::Latest => self
                .get_model(name)
                .await?
                .latest_version
                .ok_or_else(|| RegistryError::NotFound(format!("model {name:?} has no versions")))?,
            Selector::Alias(alias) => {
                self.ensure_model(name).await?;
                let row = sqlx::query("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
                    .bind(name)
                    .bind(alias)
                    .fetch_optional(&self.db)
                    .await?
                    .ok_or_else(|| RegistryError::NotFound(format!("model {name:?} has no alias {alias:?}")))?;
                to_u64(row.try_get("version")?)
            }
        };
        let row = sqlx::query(
            "SELECT model, version, digest, size, manifest, created_at, created_by FROM versions \
             WHERE model = $1 AND version = $2",
        )
        .bind(name)
        .bind(to_i64(version)?)
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else {
            self.ensure_model(name).await?;
            return Err(RegistryError::NotFound(format!("model {name:?} has no version {version}")));
        };
        version_record(&row, &self.aliases_of(name).await?)
    }

    /// Deletes a version no alias points at; its package is removed when no other version uses it.
    ///
    /// # Errors
    /// [`RegistryError::Conflict`] naming the aliases that point at it; [`RegistryError::NotFound`].
    pub async fn delete_version(&self, name: &str, version: u64, actor: &str) -> Result<(), RegistryError> {
        let record = self.resolve(name, &Selector::Version(version)).await?;
        if !record.aliases.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "version {version} of {name:?} is what {} point(s) at; move or delete the alias first",
                record.aliases.join(", ")
            )));
        }
        let writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM versions WHERE model = $1 AND version = $2")
            .bind(name)
            .bind(to_i64(version)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, || format!("an alias of {name:?} points at version {version}")))?;
        event(&mut tx, name, Some(to_i64(version)?), "delete_version", "", actor, now_ms()).await?;
        tx.commit().await?;
        drop(writer);
        self.drop_blob_if_unused(&record.digest).await
    }

    /// Deletes a model with every version and alias.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`].
    pub async fn delete_model(&self, name: &str, actor: &str) -> Result<(), RegistryError> {
        let versions = self.list_versions(name).await?;
        // Its spooled predictions too: indexed first, then deleted with the rest.
        self.drain_spool().await?;
        let writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM aliases WHERE model = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM deployments WHERE model = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rollouts WHERE model = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM arm_counts WHERE model = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM versions WHERE model = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM models WHERE name = $1").bind(name).execute(&mut *tx).await?;
        // A model created later under the same name must not inherit old predictions' feedback. After the versions:
        // another replica's insert of kept predictions locks its version's row, so from here on it either committed
        // (and this sees its rows) or waits for this delete and then keeps nothing (see `insert_outcomes`).
        sqlx::query("DELETE FROM outcomes WHERE model = $1").bind(name).execute(&mut *tx).await?;
        let detail = format!("{} version(s)", versions.len());
        event(&mut tx, name, None, "delete_model", &detail, actor, now_ms()).await?;
        tx.commit().await?;
        drop(writer);
        for v in versions {
            self.drop_blob_if_unused(&v.digest).await?;
        }
        Ok(())
    }

    async fn drop_blob_if_unused(&self, digest: &str) -> Result<(), RegistryError> {
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM versions WHERE digest = $1")
            .bind(digest)
            .fetch_one(&self.db)
            .await?
            .try_get("n")?;
        if users == 0 {
            self.artifacts.delete(digest).await?;
        }
        Ok(())
    }

    /// Points `alias` of `name` at `version`, under the `update` condition.
    ///
    /// # Errors
    /// [`RegistryError::Conflict`] when the condition fails (someone else moved or created the alias);
    /// [`RegistryError::NotFound`] for an unknown model or version; [`RegistryError::Invalid`] for a bad alias.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        update: AliasUpdate,
        actor: &str,
    ) -> Result<AliasRecord, RegistryError> {
        check_alias(alias)?;
        self.resolve(name, &Selector::Version(version)).await?;
        let v = to_i64(version)?;
        let at = now_ms();
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let previous: Option<i64> = sqlx::query("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("version"))
            .transpose()?;
        let upsert = |on_conflict: &'static str| {
            format!(
                "INSERT INTO aliases (model, alias, version, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (model, alias) {on_conflict}"
            )
        };
        let just_deleted = || format!("version {version} of {name:?} was just deleted");
        let affected = match update {
            AliasUpdate::Always | AliasUpdate::CreateOnly => {
                let sql = if update == AliasUpdate::Always {
                    upsert(
                        "DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at, \
                            updated_by = excluded.updated_by",
                    )
                } else {
                    upsert("DO NOTHING")
                };
                sqlx::query(&sql)
                    .bind(name)
                    .bind(alias)
                    .bind(v)
                    .bind(at)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_or(e, just_deleted))?
                    .rows_affected()
            }
            AliasUpdate::IfVersion(expected) => sqlx::query(
                "UPDATE aliases SET version = $1, updated_at = $2, updated_by = $3 \
                 WHERE model = $4 AND alias = $5 AND version = $6",
            )
            .bind(v)
            .bind(at)
            .bind(actor)
            .bind(name)
            .bind(alias)
            .bind(to_i64(expected)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, just_deleted))?
            .rows_affected(),
        };
        if affected == 0 {
            let now = previous.map_or_else(|| "does not exist".to_owned(), |p| format!("points at version {p}"));
            return Err(RegistryError::Conflict(match update {
                AliasUpdate::CreateOnly => format!("alias {alias:?} of {name:?} already exists and {now}"),
                AliasUpdate::IfVersion(e) => {
                    format!("alias {alias:?} of {name:?} {now}, not version {e}: someone moved it; re-read and retry")
                }
                AliasUpdate::Always => format!("alias {alias:?} of {name:?} could not be set"),
            }));
        }
        let detail = match previous {
            Some(p) => format!("{alias}: {p} -> {version}"),
            None => format!("{alias}: -> {version}"),
        };
        event(&mut tx, name, Some(v), "set_alias", &detail, actor, at).await?;
        tx.commit().await?;
        Ok(AliasRecord {
            model: name.to_owned(),
            alias: alias.to_owned(),
            version,
            previous: previous.map(to_u64),
            updated_at: at,
            updated_by: actor.to_owned(),
        })
    }

    /// Deletes an alias.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`].
    pub async fn delete_alias(&self, name: &str, alias: &str, actor: &str) -> Result<(), RegistryError> {
        let _writer = self.sqlite_writer().await;
        let mut tx = self.db.begin().await?;
        let done = sqlx::query("DELETE FROM aliases WHERE model = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(RegistryError::NotFound(format!("model {name:?} has no alias {alias:?}")));
        }
        event(&mut tx, name, None, "delete_alias", alias, actor, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Aliases of `name`, alias → version.
    ///
    /// # Errors
    /// Database errors.
    pub async fn aliases_of(&self, name: &str) -> Result<BTreeMap<String, u64>, RegistryError> {
        let rows = sqlx::query("SELECT alias, version FROM aliases WHERE model = $1 ORDER BY alias")
            .bind(name)
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("alias")?, to_u64(r.try_get("version")?)))).collect()
    }

    /// Every model with `alias`, as (model, version).
    ///
    /// # Errors
    /// Database errors.
    pub async fn models_with_alias(&self, alias: &str) -> Result<Vec<(String, u64)>, RegistryError> {
        let rows = sqlx::query("SELECT model, version FROM aliases WHERE alias = $1 ORDER BY model")
            .bind(alias)
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("model")?, to_u64(r.try_get("version")?)))).collect()
    }

    /// What happened to `name`, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn events(&self, name: &str) -> Result<Vec<Event>, RegistryError> {
        let rows = sqlx::query(
            "SELECT model, version, action, detail, actor, at FROM events WHERE model = $1 ORDER BY at, id",
        )
        .bind(name)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    model: r.try_get("model")?,
                    version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                    actor: r.try_get("actor")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Removes what a crash can leave: staged uploads, and stored packages no version references, both older than
    /// `grace` (so that an upload in progress on another replica sharing the store is left alone).
    ///
    /// # Errors
    /// Database or store errors.
    pub async fn clean_orphans(&self, grace: Duration) -> Result<(usize, usize), RegistryError> {
        let staged = self.artifacts.clean_staging(grace)?;
        let mut blobs = 0;
        for digest in self.artifacts.list_older_than(grace).await? {
            let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM versions WHERE digest = $1")
                .bind(&digest)
                .fetch_one(&self.db)
                .await?
                .try_get("n")?;
            if users == 0 {
                self.artifacts.delete(&digest).await?;
                blobs += 1;
            }
        }
        let keys = self.artifacts.clean_orphan_keys(grace).await?;
        if staged + blobs + keys > 0 {
            tracing::info!(staged, blobs, keys, "removed what an interrupted upload or rotation left behind");
        }
        Ok((staged, blobs))
    }

    async fn ensure_model(&self, name: &str) -> Result<(), RegistryError> {
        let found = sqlx::query("SELECT name FROM models WHERE name = $1").bind(name).fetch_optional(&self.db).await?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!("model {name:?} is not in the registry")));
        }
        Ok(())
    }
}

pub(crate) async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    model: &str,
    version: Option<i64>,
    action: &str,
    detail: &str,
    actor: &str,
    at: i64,
) -> Result<(), RegistryError> {
    // Ids sort by time first, then by a counter of this process, so that one process's events within a millisecond
    // (a publish and a delete, say) keep their order, then a random part to keep them unique across replicas.
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{at:016}-{sequence:016x}-{:016x}", crate::artifacts::random_id());
    sqlx::query(
        "INSERT INTO events (id, model, version, action, detail, actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(model)
    .bind(version)
    .bind(action)
    .bind(detail)
    .bind(actor)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn model_record(
    r: &AnyRow,
    aliases: &mut BTreeMap<String, BTreeMap<String, u64>>,
) -> Result<ModelRecord, RegistryError> {
    let name: String = r.try_get("name")?;
    Ok(ModelRecord {
        aliases: aliases.remove(&name).unwrap_or_default(),
        description: r.try_get("description")?,
        owner: r.try_get("owner")?,
        latest_version: r.try_get::<Option<i64>, _>("latest")?.map(to_u64),
        versions: to_u64(r.try_get("n")?),
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        name,
    })
}

fn version_record(r: &AnyRow, aliases: &BTreeMap<String, u64>) -> Result<VersionRecord, RegistryError> {
    let version = to_u64(r.try_get("version")?);
    let manifest: String = r.try_get("manifest")?;
    Ok(VersionRecord {
        model: r.try_get("model")?,
        version,
        digest: r.try_get("digest")?,
        size: to_u64(r.try_get("size")?),
        manifest: ferry_package::parse_manifest(manifest.as_bytes())
            .map_err(|e| RegistryError::Io(format!("stored manifest of version {version}: {e}")))?,
        aliases: aliases.iter().filter(|(_, v)| **v == version).map(|(a, _)| a.clone()).collect(),
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

/// A unique or foreign-key violation means another request got there first: a conflict, not a fault.
fn conflict_or(e: sqlx::Error, message: impl FnOnce() -> String) -> RegistryError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
            RegistryError::Conflict(message())
        }
        _ => RegistryError::Database(e),
    }
}

fn short(digest: &str) -> String {
    format!("sha256:{}", digest.get(..12).unwrap_or(digest))
}

/// The URL without its password, for messages, logs and `ferry config show`.
#[must_use]
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
