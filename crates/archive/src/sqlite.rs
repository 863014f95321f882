//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`, so a
//! commit is durable (the WAL is fsynced) when it returns.
//!
//! Reads, the audit trail and migrations go through an sqlx pool. The sequencing
//! transaction runs on a connection of its own through rusqlite, on tokio's blocking
//! threads: a batch is written by one call that steps cached prepared statements row
//! by row, where sqlx would build, parse and bind a new multi-row statement per batch
//! and hop to its worker thread for every statement. Both use the same SQLite library.
//! `BEGIN IMMEDIATE` takes SQLite's write lock before the transaction reads anything,
//! so the size it reads stays true until it commits, whichever process holds the file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use vellum_protocol::ids::RecordId;
use vellum_tlog::Hash;
use vellum_tlog::tree::NodeId;

use crate::error::StoreError;
use crate::ports::{CommitBatch, Sequencing, StoredRecord};
use crate::sql::{
    BatchRows, IndexColumns, RecordColumns, hashes_from_rows, node_location, sql_store, to_u64,
};

/// How long a writer waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite metadata store. Clones share its pool and its writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    writer: Writer,
}

// SQLite runs one writer at a time, so audit ids commit in order without a lock.
crate::keys::sql_keys! {
    store: SqliteStore,
}

crate::accounts::sql_accounts! {
    store: SqliteStore,
    row: sqlx::sqlite::SqliteRow,
}

crate::search::sql_search! {
    store: SqliteStore,
    db: sqlx::Sqlite,
}

sql_store! {
    store: SqliteStore,
    db: sqlx::Sqlite,
    conn: sqlx::SqliteConnection,
    sequencing: SqliteSequencing,
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
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The append path rewrites the right edge of each b-tree every batch; 16 MiB
            // of page cache a connection holds those pages. A larger cache and mmap
            // reads made no difference to throughput, only to the gateway's memory.
            .pragma("cache_size", "-16384")
            .pragma("mmap_size", "0")
            .pragma("wal_autocheckpoint", "4000");
        let path = options.get_filename().to_owned();
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(StoreError::Config(
                "the SQLite archive must be a file, not an in-memory database".into(),
            ));
        }
        create_private(&path)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::backend("open SQLite database", e))?;
        crate::migrate::run(crate::migrate::SQLITE, &pool).await?;
        let indexed = Self::backfill_search_index(&pool).await?;
        if indexed > 0 {
            tracing::info!(
                records = indexed,
                "indexed records archived before the search index"
            );
        }
        let writer = Writer::open(path).await?;
        Ok(Self { pool, writer })
    }

    async fn begin_sequencing(&self) -> Result<SqliteSequencing, StoreError> {
        let turn = self.writer.turn.clone().lock_owned().await;
        let (size, generation) = self
            .writer
            .run("begin a sequencing transaction", None, |writer| {
                // A transaction left open by a cancelled caller is abandoned here.
                if !writer.conn.is_autocommit() {
                    writer.conn.execute_batch("ROLLBACK")?;
                }
                writer.generation += 1;
                writer.conn.execute_batch("BEGIN IMMEDIATE")?;
                let size: i64 = writer
                    .conn
                    .prepare_cached(crate::sql::LOG_SIZE)?
                    .query_row([], |r| r.get(0))?;
                Ok((size, writer.generation))
            })
            .await?;
        Ok(SqliteSequencing {
            writer: self.writer.clone(),
            generation,
            size: to_u64(size, "log size")?,
            open: true,
            _turn: turn,
        })
    }
}

/// The connection that sequences, used on blocking threads.
#[derive(Debug, Clone)]
struct Writer {
    conn: Arc<Mutex<WriterConn>>,
    /// One sequencing transaction at a time among the store's clones.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The writer connection and the number of the newest transaction begun on it. A call
/// made for an older transaction (queued by a caller that was cancelled meanwhile)
/// finds another number and does nothing.
#[derive(Debug)]
struct WriterConn {
    conn: Connection,
    generation: u64,
}

impl Writer {
    async fn open(path: PathBuf) -> Result<Self, StoreError> {
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // `journal_mode=WAL` is a property of the file, set by the pool; the rest
            // belongs to each connection.
            conn.execute_batch(
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA cache_size = -16384; PRAGMA mmap_size = 0; \
                 PRAGMA wal_autocheckpoint = 4000;",
            )?;
            Ok::<_, rusqlite::Error>(conn)
        })
        .await
        .map_err(|e| StoreError::backend("open SQLite writer", e))?
        .map_err(|e| StoreError::backend("open SQLite writer", e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(WriterConn { conn, generation: 0 })),
            turn: Arc::default(),
        })
    }

    /// The connection, whatever a panicking call left behind: every transaction
    /// either begins by rolling back what is open or checks its own number.
    fn lock(&self) -> MutexGuard<'_, WriterConn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection on a blocking thread, within transaction
    /// `generation` if one is given (refused if that transaction is no longer the
    /// open one); `op` names the call in errors.
    async fn run<R, F>(&self, op: &'static str, generation: Option<u64>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriterConn) -> Result<R, Failure> + Send + 'static,
    {
        let writer = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock();
            if let Some(generation) = generation
                && (conn.generation != generation || conn.conn.is_autocommit())
            {
                return Err(Failure::Store(StoreError::Integrity(
                    "the sequencing transaction was abandoned".into(),
                )));
            }
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::backend(op, e))?
        .map_err(|failure| match failure {
            Failure::Sqlite(e) => StoreError::backend(op, e),
            Failure::Store(e) => e,
        })
    }
}

/// Why a writer call failed.
enum Failure {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// A sequencing transaction on SQLite: `BEGIN IMMEDIATE` on the writer connection.
#[derive(Debug)]
pub struct SqliteSequencing {
    writer: Writer,
    /// This transaction's number on the writer connection.
    generation: u64,
    size: u64,
    /// Not yet committed: rolled back on drop.
    open: bool,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for SqliteSequencing {
    fn drop(&mut self) {
        // Rolling back writes nothing to disk; it is done here, before the next
        // transaction's turn, so the write lock is never held by an abandoned one.
        if self.open {
            let conn = self.writer.lock();
            if conn.generation == self.generation && !conn.conn.is_autocommit() {
                let _ = conn.conn.execute_batch("ROLLBACK");
            }
        }
    }
}

impl Sequencing for SqliteSequencing {
    fn size(&self) -> u64 {
        self.size
    }

    async fn hashes(&mut self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        let mut rows: Vec<i64> = ids.iter().map(|id| node_location(id).0).collect();
        rows.sort_unstable();
        rows.dedup();
        let found = self
            .writer
            .run("read tree nodes", Some(self.generation), move |writer| {
                let mut query = writer
                    .conn
                    .prepare_cached("SELECT hashes FROM log_leaves WHERE idx = ?1")?;
                let mut found = HashMap::with_capacity(rows.len());
                for row in rows {
                    if let Some(hashes) = query.query_row([row], |r| r.get(0)).optional()? {
                        found.insert(row, hashes);
                    }
                }
                Ok(found)
            })
            .await?;
        hashes_from_rows(ids, &found)
    }

    async fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        let found: Option<(i64, String)> = self
            .writer
            .run("read checkpoint", Some(self.generation), |writer| {
                let mut query = writer.conn.prepare_cached(crate::sql::LATEST_CHECKPOINT)?;
                Ok(query.query_row([0], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
            })
            .await?;
        found
            .map(|(size, note)| Ok((to_u64(size, "size")?, note)))
            .transpose()
    }

    async fn records(&mut self, ids: &[RecordId]) -> Result<Vec<StoredRecord>, StoreError> {
        let ids = ids.to_vec();
        self.writer
            .run("read records", Some(self.generation), move |writer| {
                let mut query = writer.conn.prepare_cached(
                    "SELECT record_id, leaf_index, header, received_at, blob FROM records WHERE record_id = ?1",
                )?;
                let mut out = Vec::new();
                for id in ids {
                    let columns = query
                        .query_row([id.as_bytes().as_slice()], |r| {
                            Ok(RecordColumns {
                                record_id: r.get(0)?,
                                leaf_index: r.get(1)?,
                                header: r.get(2)?,
                                received_at: r.get(3)?,
                                blob: r.get(4)?,
                            })
                        })
                        .optional()?;
                    if let Some(columns) = columns {
                        out.push(columns.into_record()?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn commit(mut self, batch: CommitBatch) -> Result<(), StoreError> {
        self.writer
            .run("write batch", Some(self.generation), move |writer| {
                let conn = &writer.conn;
                let rows = BatchRows::new(&batch)?;
                let mut insert = conn.prepare_cached(
                    "INSERT INTO records (record_id, leaf_index, header, received_at, blob) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (r, leaf, received) in &rows.records {
                    insert.execute(rusqlite::params![
                        r.record_id.as_bytes().as_slice(),
                        leaf,
                        r.header,
                        received,
                        r.blob.0,
                    ])?;
                }
                let mut index = conn.prepare_cached(
                    "INSERT INTO record_index (leaf_index, custodian, device_id, channel, retention, \
                     epoch, captured_at, received_at, body_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut token = conn.prepare_cached(
                    "INSERT INTO record_tokens (token, captured_at, leaf_index, custodian) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (r, leaf, received) in &rows.records {
                    let f = IndexColumns::of(&r.fields)?;
                    index.execute(rusqlite::params![
                        leaf,
                        f.custodian,
                        f.device_id,
                        f.channel,
                        f.retention,
                        f.epoch,
                        f.captured_at,
                        received,
                        f.body_len,
                    ])?;
                    for t in &r.fields.tokens {
                        token.execute(rusqlite::params![t.0.as_slice(), f.captured_at, leaf, f.custodian])?;
                    }
                }
                let mut insert =
                    conn.prepare_cached("INSERT INTO log_leaves (idx, entry, hashes) VALUES (?1, ?2, ?3)")?;
                for (l, index) in &rows.leaves {
                    insert.execute(rusqlite::params![index, l.entry, l.hashes])?;
                }
                let mut insert = conn.prepare_cached(
                    "INSERT INTO audit_events (leaf_index, at, actor, action, subject, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (event, leaf, at) in &rows.audits {
                    insert.execute(rusqlite::params![
                        leaf,
                        at,
                        event.actor,
                        event.action,
                        event.subject,
                        event.detail,
                    ])?;
                }
                conn.prepare_cached("INSERT INTO checkpoints (size, note) VALUES (?1, ?2)")?
                    .execute(rusqlite::params![rows.size, batch.checkpoint])?;
                conn.execute_batch("COMMIT")?;
                Ok(())
            })
            .await?;
        self.open = false;
        Ok(())
    }
}

/// Creates the database file for its owner only (0600) when it does not exist yet;
/// SQLite gives its WAL and shared-memory files the same mode. An existing file is
/// left as it is: `vellum serve` refuses one that others may read.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::backend("create the SQLite database file", e)),
    }
}
