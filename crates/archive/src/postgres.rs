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

sql_store!(sqlx::Postgres);

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
