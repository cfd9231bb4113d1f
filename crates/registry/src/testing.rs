//! Throwaway PostgreSQL databases for tests (here so that sqlx stays inside this crate).

use sqlx::Connection;

/// The PostgreSQL server tests use; `FERRY_TEST_POSTGRES` overrides it.
#[must_use]
pub fn postgres_server() -> String {
    std::env::var("FERRY_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped (with any open connections) when this value drops.
#[derive(Debug)]
pub struct TempPostgres {
    name: String,
    /// The database's URL.
    pub url: String,
}

impl TempPostgres {
    /// Creates a fresh, uniquely named database.
    ///
    /// # Errors
    /// When the server cannot be reached: the message says where it was looked for.
    pub async fn create() -> Result<Self, String> {
        let server = postgres_server();
        let name = format!("ferry_test_{}_{:016x}", std::process::id(), crate::artifacts::random_id());
        let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .map_err(|e| format!("PostgreSQL at {server} (set FERRY_TEST_POSTGRES): {e}"))?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(|e| e.to_string())?;
        drop(conn.close().await);
        Ok(Self { url: format!("{server}/{name}"), name })
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let (server, name) = (postgres_server(), self.name.clone());
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await.ok()?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        });
        drop(dropped.join());
    }
}

/// Runs raw SQL against a registry database, bypassing the registry (tests that tamper with stored records).
///
/// # Errors
/// The database's error, as text.
pub async fn execute_raw(url: &str, sql: &str) -> Result<u64, String> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.map_err(|e| e.to_string())?;
    let done = sqlx::raw_sql(sql).execute(&mut conn).await.map_err(|e| e.to_string())?.rows_affected();
    drop(conn.close().await);
    Ok(done)
}
