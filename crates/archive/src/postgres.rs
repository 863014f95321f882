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

use sqlx::QueryBuilder;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use vellum_protocol::ids::RecordId;
use vellum_tlog::Hash;
use vellum_tlog::tree::NodeId;

use crate::error::StoreError;
use crate::ports::{CommitBatch, Sequencing, StoredRecord};
use crate::sql::{ROWS_PER_STATEMENT, sql_store};

/// The PostgreSQL metadata store. Clones share its connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

// PostgreSQL hands out identity values at insert, not at commit: serialise audit
// appends so that a reader paging by id never skips one that commits late.
crate::keys::sql_keys! {
    store: PgStore,
}

crate::accounts::sql_accounts! {
    store: PgStore,
    row: sqlx::postgres::PgRow,
}

crate::search::sql_search! {
    store: PgStore,
    db: sqlx::Postgres,
}

sql_store! {
    store: PgStore,
    db: sqlx::Postgres,
    conn: sqlx::PgConnection,
    sequencing: PgSequencing,
}

/// Takes the sequencing lock for the rest of the transaction (the key is "vellum" in
/// ASCII), waiting at most 30 s: a gateway stuck behind a holder that hangs fails its
/// batch (its clients retry) instead of hanging with it.
const SEQUENCER_LOCK: &str = "SET LOCAL lock_timeout = '30s'; SELECT pg_advisory_xact_lock(130177982821741)";

/// A sequencing transaction idle this long (its gateway froze mid-batch) is ended by
/// the server, which lets the lock go.
const IDLE_IN_TRANSACTION: &str = "60s";

/// A sequencing transaction on PostgreSQL: the transaction, holding the advisory
/// lock, and the log size read under it.
#[derive(Debug)]
pub struct PgSequencing {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    size: u64,
}

impl PgStore {
    async fn begin_sequencing(&self) -> Result<PgSequencing, StoreError> {
        let err = |e| StoreError::backend("begin a sequencing transaction", e);
        // READ COMMITTED whatever the server's default: each statement then takes a new
        // snapshot, so the size read after the lock sees every batch committed before
        // the lock was granted.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(err)?;
        // One round trip for both statements (a plain query string, no parameters).
        sqlx::Executor::execute(&mut *tx, SEQUENCER_LOCK)
            .await
            .map_err(err)?;
        let size = read_size(&mut tx).await?;
        Ok(PgSequencing { tx, size })
    }

    /// Connects to `url` (`postgres://user@host/db`) and applies migrations. Any number
    /// of stores, in any number of processes, may open one database and append.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::backend("connect to PostgreSQL", e))?;
        crate::migrate::run(crate::migrate::POSTGRES, &pool).await?;
        let indexed = Self::backfill_search_index(&pool).await?;
        if indexed > 0 {
            tracing::info!(
                records = indexed,
                "indexed records archived before the search index"
            );
        }
        Ok(Self { pool })
    }
}

impl Sequencing for PgSequencing {
    fn size(&self) -> u64 {
        self.size
    }

    async fn hashes(&mut self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        read_hashes(&mut self.tx, ids).await
    }

    async fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        read_checkpoint(&mut self.tx, crate::sql::LATEST_CHECKPOINT, 0).await
    }

    async fn records(&mut self, ids: &[RecordId]) -> Result<Vec<StoredRecord>, StoreError> {
        read_records(&mut self.tx, ids).await
    }

    async fn commit(mut self, batch: CommitBatch) -> Result<(), StoreError> {
        let err = |e| StoreError::backend("write batch", e);
        let rows = crate::sql::BatchRows::new(&batch)?;
        for chunk in rows.records.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::new("INSERT INTO records (record_id, leaf_index, header, received_at, blob) ");
            q.push_values(chunk, |mut b, (r, leaf, received)| {
                b.push_bind(r.record_id.as_bytes().as_slice())
                    .push_bind(*leaf)
                    .push_bind(r.header.as_slice())
                    .push_bind(*received)
                    .push_bind(r.blob.0.as_str());
            });
            q.build().execute(&mut *self.tx).await.map_err(err)?;
        }
        let search: Vec<_> = rows
            .records
            .iter()
            .map(|(r, leaf, received)| (*leaf, *received, &r.fields))
            .collect();
        write_search_rows(&mut self.tx, &search).await?;
        for chunk in rows.leaves.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::new("INSERT INTO log_leaves (idx, entry, hashes) ");
            q.push_values(chunk, |mut b, (l, index)| {
                b.push_bind(*index)
                    .push_bind(l.entry.as_slice())
                    .push_bind(l.hashes.as_slice());
            });
            q.build().execute(&mut *self.tx).await.map_err(err)?;
        }
        for chunk in rows.audits.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::new(
                "INSERT INTO audit_events (leaf_index, at, actor, action, subject, detail) ",
            );
            q.push_values(chunk, |mut b, (event, leaf, at)| {
                b.push_bind(*leaf)
                    .push_bind(*at)
                    .push_bind(event.actor.as_str())
                    .push_bind(event.action.as_str())
                    .push_bind(event.subject.as_str())
                    .push_bind(event.detail.as_str());
            });
            q.build().execute(&mut *self.tx).await.map_err(err)?;
        }
        sqlx::query("INSERT INTO checkpoints (size, note) VALUES ($1, $2)")
            .bind(rows.size)
            .bind(batch.checkpoint.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(err)?;
        self.tx
            .commit()
            .await
            .map_err(|e| StoreError::backend("commit batch", e))
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

/// Vacuums and analyses every table of the database at `url`, as autovacuum would some
/// time after a bulk load (benchmarks do it at once): the planner's statistics, the
/// rows' commit hint bits (else the first reads of each page write it back) and the
/// visibility map (else an index-only scan visits the table for every row).
pub async fn vacuum_analyze(url: &str) -> Result<(), StoreError> {
    admin(url, "VACUUM (ANALYZE)", "vacuum").await
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
