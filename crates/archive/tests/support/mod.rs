//! Test support: fresh backends, submissions and fault-injecting stores.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vellum_archive::StoreError;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::ports::{
    AuditEvent, AuditStore, BlobLocator, BlobPut, BlobStore, CommitBatch, LogStore, StoredRecord,
};
use vellum_archive::postgres::PgStore;
use vellum_archive::sqlite::SqliteStore;
use vellum_archive::{Archive, Submission};
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::seal::{self, BodyDigest, Identity};
use vellum_tlog::Hash;
use vellum_tlog::note::NoteSigner;
use vellum_tlog::tree::NodeId;

/// The capture side of a test: a device and the recipient it seals to.
pub struct Capturer {
    pub device: DeviceKey,
    pub auditor: Identity,
    counter: AtomicU64,
}

impl Default for Capturer {
    fn default() -> Self {
        Self {
            device: DeviceKey::generate(),
            auditor: Identity::generate(),
            counter: AtomicU64::new(0),
        }
    }
}

impl Capturer {
    /// A fresh capture with a unique record id and a `len`-byte plaintext.
    pub fn submission(&self, len: usize) -> Submission {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = RecordId::new_v7(1_764_150_000_000 + n);
        self.submission_for(id, len, n as u8)
    }

    /// A capture for a given record id; `fill` varies the content.
    pub fn submission_for(&self, record_id: RecordId, len: usize, fill: u8) -> Submission {
        let body = seal::seal(&[self.auditor.to_public()], &vec![fill; len]).unwrap();
        let fields = HeaderFields {
            record_id,
            device_id: DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap(),
            custodian: Custodian::new("j.doe@agency.example").unwrap(),
            channel: Channel::new("signal").unwrap(),
            captured_at: UnixMillis(1_764_150_000_000),
            epoch: Epoch(1),
            retention: RetentionClass::new("finra-6y").unwrap(),
            body: body.digest(),
            tokens: vec![],
        };
        let signed = fields.sign(&self.device).unwrap();
        let header = UnverifiedHeader::parse(signed.as_bytes())
            .unwrap()
            .verify(&self.device.public())
            .unwrap();
        Submission { header, body }
    }
}

pub fn log_signer() -> NoteSigner {
    NoteSigner::from_seed("log.test.example", [7; 32]).unwrap()
}

/// Stores that tests can open again on the same data (a restart).
pub trait Backend: Send + Sync {
    type Log: LogStore + AuditStore + Clone;
    type Blobs: BlobStore;

    fn open_log(&self) -> impl std::future::Future<Output = Result<Self::Log, StoreError>> + Send;

    fn open_blobs(&self) -> Self::Blobs;

    fn open(&self) -> impl std::future::Future<Output = (Self::Log, Self::Blobs)> + Send {
        async { (self.open_log().await.unwrap(), self.open_blobs()) }
    }

    /// Damages the stored bytes of a blob.
    fn corrupt(&self, locator: &BlobLocator) -> impl std::future::Future<Output = ()> + Send;

    /// Marks the database as migrated by a newer program.
    fn add_future_migration(&self) -> impl std::future::Future<Output = ()> + Send;

    /// Tries to rewrite a log row directly in the database; must fail.
    fn tamper_with_log(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// SQLite + local folder in a temporary directory.
pub struct SqliteLocal {
    pub dir: tempfile::TempDir,
}

impl SqliteLocal {
    pub async fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("meta.db").display())
    }
}

impl Backend for SqliteLocal {
    type Log = SqliteStore;
    type Blobs = LocalBlobStore;

    async fn open_log(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.url()).await
    }

    fn open_blobs(&self) -> LocalBlobStore {
        LocalBlobStore::open(&self.dir.path().join("blobs")).unwrap()
    }

    async fn corrupt(&self, locator: &BlobLocator) {
        SqliteLocal::corrupt_in(self.dir.path(), locator);
    }

    async fn add_future_migration(&self) {
        let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    async fn tamper_with_log(&self) -> Result<(), String> {
        let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
        let outcome = sqlx::query("UPDATE log_leaves SET entry = x'00' WHERE idx = 0")
            .execute(&pool)
            .await;
        pool.close().await;
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// PostgreSQL (a fresh database per test) + local folder.
pub struct PostgresLocal {
    pub url: String,
    pub dir: tempfile::TempDir,
}

/// The server to create test databases on; `scripts/test` sets it.
pub fn postgres_admin_url() -> String {
    std::env::var("VELLUM_TEST_POSTGRES").expect(
        "VELLUM_TEST_POSTGRES is not set: the PostgreSQL conformance tests need a server \
         (scripts/test starts one and sets it, e.g. postgres://postgres@127.0.0.1:5432/postgres)",
    )
}

impl PostgresLocal {
    pub async fn new() -> Self {
        let admin_url = postgres_admin_url();
        let name = format!(
            "vellum_test_{}",
            RecordId::new_v7(0).to_string().replace('-', "")[16..].to_owned()
        );
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Self {
            url: format!("{base}/{name}"),
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for PostgresLocal {
    type Log = PgStore;
    type Blobs = LocalBlobStore;

    async fn open_log(&self) -> Result<PgStore, StoreError> {
        PgStore::open(&self.url).await
    }

    fn open_blobs(&self) -> LocalBlobStore {
        LocalBlobStore::open(&self.dir.path().join("blobs")).unwrap()
    }

    async fn corrupt(&self, locator: &BlobLocator) {
        SqliteLocal::corrupt_in(self.dir.path(), locator);
    }

    async fn add_future_migration(&self) {
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', true, '\\x00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    async fn tamper_with_log(&self) -> Result<(), String> {
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        let outcome = sqlx::query("DELETE FROM log_leaves WHERE idx = 0")
            .execute(&pool)
            .await;
        pool.close().await;
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }
}

impl SqliteLocal {
    fn corrupt_in(dir: &std::path::Path, locator: &BlobLocator) {
        use std::os::unix::fs::FileExt as _;
        let (segment, offset) = locator.0.split_once('/').unwrap();
        let path = dir
            .join("blobs")
            .join(format!("{:08}.seg", segment.parse::<u32>().unwrap()));
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(b"X", offset.parse::<u64>().unwrap() + 44 + 100)
            .unwrap();
    }
}

/// A blob store that fails its next `put` when told to.
pub struct FlakyBlobs<B> {
    pub inner: B,
    pub fail_next: Arc<AtomicBool>,
}

impl<B: BlobStore> BlobStore for FlakyBlobs<B> {
    async fn put(&self, blobs: &[BlobPut<'_>]) -> Result<Vec<BlobLocator>, StoreError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::backend(
                "put",
                std::io::Error::other("injected blob failure"),
            ));
        }
        self.inner.put(blobs).await
    }

    async fn get(&self, locator: &BlobLocator, expected: &BodyDigest) -> Result<Vec<u8>, StoreError> {
        self.inner.get(locator, expected).await
    }
}

/// A log store whose next commit fails before writing, or writes and then reports failure.
#[derive(Clone)]
pub struct FlakyLog<L> {
    pub inner: L,
    pub fail_before: Arc<AtomicBool>,
    pub fail_after: Arc<AtomicBool>,
}

impl<L: LogStore> LogStore for FlakyLog<L> {
    async fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        if self.fail_before.swap(false, Ordering::SeqCst) {
            return Err(StoreError::backend(
                "commit",
                std::io::Error::other("injected failure before commit"),
            ));
        }
        self.inner.commit(batch).await?;
        if self.fail_after.swap(false, Ordering::SeqCst) {
            return Err(StoreError::backend(
                "commit",
                std::io::Error::other("injected failure after commit"),
            ));
        }
        Ok(())
    }
    async fn log_size(&self) -> Result<u64, StoreError> {
        self.inner.log_size().await
    }
    async fn records(&self, ids: &[RecordId]) -> Result<Vec<StoredRecord>, StoreError> {
        self.inner.records(ids).await
    }
    async fn hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        self.inner.hashes(ids).await
    }
    async fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.entry(index).await
    }
    async fn checkpoint_at_least(&self, size: u64) -> Result<Option<(u64, String)>, StoreError> {
        self.inner.checkpoint_at_least(size).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.inner.latest_checkpoint().await
    }
}

pub fn audit_event(n: u64) -> AuditEvent {
    AuditEvent {
        at: UnixMillis(1_764_150_000_000 + n),
        actor: format!("account-{n}"),
        action: "record.fetch".into(),
        subject: format!("record-{n}"),
        detail: "{}".into(),
    }
}

pub async fn open_archive<L: LogStore, B: BlobStore>(log: L, blobs: B) -> Archive<L, B> {
    Archive::open(log, blobs, log_signer()).await.unwrap()
}
