//! The PostgreSQL backend. A commit is durable when PostgreSQL acknowledges it
//! (`synchronous_commit` on, the server default).
//!
//! **Any number of processes append; one sequences at a time.** Every batch commits
//! in a transaction that first takes a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`), then reads the log size in a statement of its own, whose
//! snapshot (READ COMMITTED) therefore includes every batch committed before the lock
//! was granted. A gateway whose batch finds the log moved (another gateway committed)
//! rebases it under the lock. The lock goes with the transaction: when a gateway dies
//! mid-batch, PostgreSQL rolls its transaction back as the connection drops and the
//! next gateway in line sequences at once. Independently of the lock, the database
//! refuses leaves that are not consecutive, so no code path can fork the log.
//!
//! sqlx is pinned to 0.8, which sets `TCP_NODELAY` on its sockets: 0.9.0 dropped it
//! (upstream issue #4335, fixed after the release), which stalls every multi-row insert
//! over TCP by about 40 ms (Nagle's algorithm meeting delayed ACKs).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::StoreError;
use crate::sql::{SqlStore, sql_store};

/// The PostgreSQL metadata store.
pub type PgStore = SqlStore<sqlx::Postgres>;

// PostgreSQL hands out identity values at insert, not at commit: serialise audit
// appends so that a reader paging by id never skips one that commits late.
sql_store! {
    db: sqlx::Postgres,
    conn: sqlx::PgConnection,
    begin: "BEGIN",
    lock: Some(SEQUENCER_LOCK),
    audit_lock: Some("LOCK TABLE audit_events IN EXCLUSIVE MODE"),
}

/// Takes the sequencing lock for the rest of the transaction (the key is "vellum" in
/// ASCII).
const SEQUENCER_LOCK: &str = "SELECT pg_advisory_xact_lock(130177982821741)";

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) and applies migrations. Any number
    /// of stores, in any number of processes, may open one database and append.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
        crate::migrate::run(crate::migrate::POSTGRES, &pool).await?;
        Ok(Self { pool })
    }
}

/// Creates a new, empty database named `name` on the server of `admin_url` and returns
/// its URL (for benchmarks and tests that need a fresh database).
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    check_database_name(name)?;
    admin(admin_url, &format!("CREATE DATABASE {name}"), "create database").await?;
    let (base, _) = admin_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .ok_or_else(|| StoreError::Config("PostgreSQL URL has no database part".into()))?;
    Ok(format!("{base}/{name}"))
}

/// Drops a database made by [`create_database`].
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    check_database_name(name)?;
    admin(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        "drop database",
    )
    .await
}

/// Runs one statement on the server of `admin_url`.
async fn admin(admin_url: &str, statement: &str, op: &'static str) -> Result<(), StoreError> {
    let pool = sqlx::PgPool::connect(admin_url)
        .await
        .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
    let outcome = sqlx::query(statement)
        .execute(&pool)
        .await
        .map_err(|e| StoreError::backend(op, e));
    pool.close().await;
    outcome.map(|_| ())
}

/// Database names are put into SQL text, so only `[a-z0-9_]` is accepted.
fn check_database_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Config(format!("invalid database name {name:?}")));
    }
    Ok(())
}
