//! The PostgreSQL backend. A commit is durable when PostgreSQL acknowledges it
//! (`synchronous_commit` on, the server default).
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
sql_store!(sqlx::Postgres, Some("LOCK TABLE audit_events IN EXCLUSIVE MODE"));

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) and applies migrations.
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
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .map_err(|e| StoreError::backend("create database", e))?;
    admin.close().await;
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
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .map_err(|e| StoreError::backend("drop database", e))?;
    admin.close().await;
    Ok(())
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
