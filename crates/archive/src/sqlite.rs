//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`, so a
//! commit is durable (the WAL is fsynced) when it returns.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::sql::{SqlStore, sql_store};

/// The SQLite metadata store.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

// `BEGIN IMMEDIATE` takes SQLite's write lock before the transaction reads anything,
// so the size it reads stays true until it commits. SQLite runs one writer at a time,
// so audit ids commit in order without a lock of their own.
sql_store! {
    db: sqlx::Sqlite,
    conn: sqlx::SqliteConnection,
    begin: "BEGIN IMMEDIATE",
    lock: None,
    audit_lock: None,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path/to/file.db`)
    /// and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // The append path rewrites the right edge of each b-tree every batch; keep
            // the hot pages in memory and read the rest through mmap, not read(2).
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456")
            .pragma("wal_autocheckpoint", "4000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::backend("open SQLite database", e))?;
        crate::migrate::run(crate::migrate::SQLITE, &pool).await?;
        Ok(Self { pool })
    }
}
