//! The PostgreSQL backend. A commit is durable when PostgreSQL acknowledges it
//! (`synchronous_commit` on, the server default).
//!
//! **One sequencer per database.** Opening a store takes a PostgreSQL session advisory
//! lock on a connection of its own and holds it for the store's lifetime; a second
//! process opening the same database waits (up to the time it is given) and takes over
//! as soon as the holder's connection closes, which PostgreSQL notices when the holder
//! exits or dies. Independently of the lock, the database refuses leaves that are not
//! consecutive, so even a holder that lost its lock unawares cannot fork the log.
//!
//! sqlx is pinned to 0.8, which sets `TCP_NODELAY` on its sockets: 0.9.0 dropped it
//! (upstream issue #4335, fixed after the release), which stalls every multi-row insert
//! over TCP by about 40 ms (Nagle's algorithm meeting delayed ACKs).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use crate::error::StoreError;
use crate::sql::{SqlStore, sql_store};

/// The PostgreSQL metadata store.
pub type PgStore = SqlStore<sqlx::Postgres>;

// PostgreSQL hands out identity values at insert, not at commit: serialise audit
// appends so that a reader paging by id never skips one that commits late.
sql_store!(sqlx::Postgres, Some("LOCK TABLE audit_events IN EXCLUSIVE MODE"));

/// The advisory lock key of the sequencer ("vellum" in ASCII).
const SEQUENCER_LOCK: i64 = 0x7665_6c6c_756d;
/// How long [`PgStore::open`] waits for another sequencer to let go.
pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(10);

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`), applies migrations and becomes
    /// the database's sequencer, waiting up to [`DEFAULT_LEASE_WAIT`] for another to
    /// let go.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_waiting(url, DEFAULT_LEASE_WAIT).await
    }

    /// [`PgStore::open`], waiting up to `wait` for the sequencer lock (a standby
    /// gives a long wait and takes over when the active process goes away).
    pub async fn open_waiting(url: &str, wait: Duration) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
        crate::migrate::run(crate::migrate::POSTGRES, &pool).await?;
        let lease = acquire_lease(&options, wait).await?;
        Ok(Self {
            pool,
            lease: Some(std::sync::Arc::new(tokio::sync::Mutex::new(lease))),
        })
    }
}

/// Takes the sequencer lock on a connection of its own, polling until `wait` is over.
async fn acquire_lease(options: &PgConnectOptions, wait: Duration) -> Result<PgConnection, StoreError> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SEQUENCER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| StoreError::backend("take the sequencer lock", e))?;
        if held {
            return Ok(conn);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Locked(
                "the PostgreSQL database (another vellum sequences it)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
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
