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
use vellum_archive::blob::s3::{RetentionPeriod, S3BlobStore, S3Config};
use vellum_archive::ports::{
    AccountStore, AuditEvent, AuditStore, BlobLocator, BlobPut, BlobStore, CommitBatch, DeviceStore,
    KeyStore, LogStore, Sequencing, SessionStore, StoredRecord,
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
        self.submission_in("finra-6y", record_id, len, fill)
    }

    /// A capture in a given retention class.
    pub fn submission_in(&self, class: &str, record_id: RecordId, len: usize, fill: u8) -> Submission {
        self.submission_with(record_id, len, fill, |f| {
            f.retention = RetentionClass::new(class).unwrap()
        })
    }

    /// A capture whose header fields `edit` changes before signing.
    pub fn submission_with(
        &self,
        record_id: RecordId,
        len: usize,
        fill: u8,
        edit: impl FnOnce(&mut HeaderFields),
    ) -> Submission {
        let body = seal::seal(&[self.auditor.to_public()], &vec![fill; len]).unwrap();
        let mut fields = HeaderFields {
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
        edit(&mut fields);
        let signed = fields.sign(&self.device).unwrap();
        let header = UnverifiedHeader::parse(signed.as_bytes())
            .unwrap()
            .verify(&self.device.public())
            .unwrap();
        Submission {
            header,
            body: body.into(),
        }
    }
}

pub fn log_signer() -> NoteSigner {
    NoteSigner::from_seed("log.test.example", [7; 32]).unwrap()
}

/// Stores that tests can open again on the same data (a restart).
pub trait Backend: Send + Sync {
    type Log: LogStore
        + AuditStore
        + DeviceStore
        + AccountStore
        + SessionStore
        + KeyStore
        + vellum_archive::search::RecordSearch
        + Clone;
    type Blobs: BlobStore;

    fn open_log(&self) -> impl std::future::Future<Output = Result<Self::Log, StoreError>> + Send;

    fn open_blobs(&self) -> Self::Blobs;

    /// The blob store of a second gateway on the same deployment.
    fn open_second_blobs(&self) -> Self::Blobs;

    fn open(&self) -> impl std::future::Future<Output = (Self::Log, Self::Blobs)> + Send {
        async { (self.open_log().await.unwrap(), self.open_blobs()) }
    }

    /// Damages the stored bytes of a blob, or, where storage is WORM, writes other
    /// bytes over its key.
    fn corrupt(&self, locator: &BlobLocator) -> Corruption;

    /// Everything the blob store holds, committed or not, sorted.
    fn blob_listing(&self) -> Vec<String>;

    /// Marks the database as migrated by a newer program.
    fn add_future_migration(&self) -> impl std::future::Future<Output = ()> + Send;

    /// Runs one statement directly on the database, past the store.
    fn sql(&self, statement: &str) -> impl std::future::Future<Output = Result<(), String>> + Send;

    /// Tries to rewrite or delete rows of the log directly in the database; returns
    /// the outcome of each attempt (all must fail).
    fn tamper_with_log(&self) -> impl std::future::Future<Output = Vec<Result<(), String>>> + Send;
}

/// What a corruption attempt managed.
#[derive(Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The stored bytes are damaged.
    Damaged,
    /// The store keeps the original (WORM); other bytes were written as a new version.
    Superseded,
}

/// Direct changes to rows that the database must refuse.
pub const TAMPERING: [&str; 6] = [
    "DELETE FROM log_leaves WHERE idx = 0",
    "UPDATE log_leaves SET hashes = entry WHERE idx = 0",
    "UPDATE checkpoints SET note = 'forged'",
    "DELETE FROM checkpoints",
    "UPDATE records SET received_at = 0",
    "DELETE FROM audit_events",
];

/// A fresh metadata database.
pub trait MetaFixture: Send + Sync {
    type Log: LogStore
        + AuditStore
        + DeviceStore
        + AccountStore
        + SessionStore
        + KeyStore
        + vellum_archive::search::RecordSearch
        + Clone;
    fn open_log(&self) -> impl std::future::Future<Output = Result<Self::Log, StoreError>> + Send;
    fn sql(&self, statement: &str) -> impl std::future::Future<Output = Result<(), String>> + Send;
    const FUTURE_MIGRATION: &'static str;
}

/// A fresh blob store.
pub trait BlobFixture: Send + Sync {
    type Blobs: BlobStore;
    fn open_blobs(&self) -> Self::Blobs;
    fn open_second_blobs(&self) -> Self::Blobs;
    fn corrupt(&self, locator: &BlobLocator) -> Corruption;
    /// Everything the store holds, committed or not, sorted: what a failed upload
    /// must not change.
    fn listing(&self) -> Vec<String>;
}

/// One metadata backend with one blob backend.
pub struct Combo<M, B> {
    pub meta: M,
    pub blobs: B,
}

impl<M: MetaFixture, B: BlobFixture> Backend for Combo<M, B> {
    type Log = M::Log;
    type Blobs = B::Blobs;

    fn open_log(&self) -> impl std::future::Future<Output = Result<M::Log, StoreError>> + Send {
        self.meta.open_log()
    }

    fn open_blobs(&self) -> B::Blobs {
        self.blobs.open_blobs()
    }

    fn open_second_blobs(&self) -> B::Blobs {
        self.blobs.open_second_blobs()
    }

    fn corrupt(&self, locator: &BlobLocator) -> Corruption {
        self.blobs.corrupt(locator)
    }

    fn blob_listing(&self) -> Vec<String> {
        self.blobs.listing()
    }

    async fn add_future_migration(&self) {
        self.meta.sql(M::FUTURE_MIGRATION).await.unwrap();
    }

    async fn sql(&self, statement: &str) -> Result<(), String> {
        self.meta.sql(statement).await
    }

    async fn tamper_with_log(&self) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::new();
        for statement in TAMPERING {
            outcomes.push(self.meta.sql(statement).await);
        }
        outcomes
    }
}

/// SQLite in a temporary directory.
pub struct SqliteMeta {
    dir: tempfile::TempDir,
}

impl SqliteMeta {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("meta.db").display())
    }
}

impl MetaFixture for SqliteMeta {
    type Log = SqliteStore;
    const FUTURE_MIGRATION: &'static str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
        execution_time) VALUES (9999, 'from the future', 1, x'00', 0)";

    async fn open_log(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.url()).await
    }

    async fn sql(&self, statement: &str) -> Result<(), String> {
        let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
        let outcome = sqlx::query(statement).execute(&pool).await;
        pool.close().await;
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A fresh database on the PostgreSQL test server.
pub struct PgMeta {
    pub url: String,
}

/// The server to create test databases on; `scripts/test` sets it.
pub fn postgres_admin_url() -> String {
    std::env::var("VELLUM_TEST_POSTGRES").expect(
        "VELLUM_TEST_POSTGRES is not set: the PostgreSQL conformance tests need a server \
         (scripts/test starts one and sets it, e.g. postgres://postgres@127.0.0.1:5432/postgres)",
    )
}

/// A name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    let id = RecordId::new_v7(0).to_string().replace('-', "");
    format!("{prefix}{}", &id[16..])
}

impl PgMeta {
    pub async fn new() -> Self {
        let admin_url = postgres_admin_url();
        let name = unique_name("vellum_test_");
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
        }
    }
}

impl MetaFixture for PgMeta {
    type Log = PgStore;
    const FUTURE_MIGRATION: &'static str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
        execution_time) VALUES (9999, 'from the future', true, '\\x00', 0)";

    async fn open_log(&self) -> Result<PgStore, StoreError> {
        PgStore::open(&self.url).await
    }

    async fn sql(&self, statement: &str) -> Result<(), String> {
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        let outcome = sqlx::query(statement).execute(&pool).await;
        pool.close().await;
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A local blob folder in a temporary directory.
pub struct LocalBlobs {
    dir: tempfile::TempDir,
}

impl LocalBlobs {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl BlobFixture for LocalBlobs {
    type Blobs = LocalBlobStore;

    fn open_blobs(&self) -> LocalBlobStore {
        LocalBlobStore::open(self.dir.path()).unwrap()
    }

    /// A folder is one process's: a second gateway writes its own.
    fn open_second_blobs(&self) -> LocalBlobStore {
        LocalBlobStore::open(&self.dir.path().join("second")).unwrap()
    }

    fn listing(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut folders = vec![self.dir.path().to_owned()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let len = path.metadata().unwrap().len();
                    let name = path.strip_prefix(self.dir.path()).unwrap().display();
                    names.push(format!("{name} {len}"));
                }
            }
        }
        names.sort();
        names
    }

    fn corrupt(&self, locator: &BlobLocator) -> Corruption {
        use std::os::unix::fs::FileExt as _;
        if let Some(name) = locator.0.strip_prefix("sha256/") {
            // A large blob's own file, read-only as the store left it.
            let path = self.dir.path().join("large").join(name);
            let mut permissions = path.metadata().unwrap().permissions();
            #[allow(
                clippy::permissions_set_readonly_false,
                reason = "the test damages a read-only blob"
            )]
            permissions.set_readonly(false);
            std::fs::set_permissions(&path, permissions).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.write_all_at(b"\xff", 1000).unwrap();
            return Corruption::Damaged;
        }
        let (segment, offset) = locator.0.split_once('/').unwrap();
        let path = self
            .dir
            .path()
            .join(format!("{:08}.seg", segment.parse::<u32>().unwrap()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        // Flip one byte of the blob (past the 44-byte frame header), whatever it was.
        let at = offset.parse::<u64>().unwrap() + 44 + 100;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[!byte[0]], at).unwrap();
        Corruption::Damaged
    }
}

/// A fresh Object Lock bucket on the S3 test server (`VELLUM_TEST_S3`).
pub struct S3Blobs {
    pub bucket: String,
    pub endpoint: String,
    /// Whether the store writes with Object Lock (the bucket always has it enabled).
    pub object_lock: bool,
}

/// Runs the boto3 helper (`tests/s3ctl.py`): an S3 client independent of the one under test.
pub fn s3ctl(args: &[&str]) -> String {
    let output = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3ctl.py"))
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "s3ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl S3Blobs {
    pub fn new() -> Self {
        let endpoint = std::env::var("VELLUM_TEST_S3").expect(
            "VELLUM_TEST_S3 is not set: the S3 conformance tests need an S3 server with Object Lock \
             (scripts/test starts one and sets it)",
        );
        let bucket = unique_name("vellum-test-");
        s3ctl(&["mkbucket", &bucket]);
        Self {
            bucket,
            endpoint,
            object_lock: true,
        }
    }

    /// A store that writes without Object Lock (and so uploads large blobs in parts).
    pub fn unlocked() -> Self {
        Self {
            object_lock: false,
            ..Self::new()
        }
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: self.bucket.clone(),
            prefix: "archive/".into(),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            allow_http: true,
            object_lock: self.object_lock,
            retention: [
                (
                    RetentionClass::new("finra-6y").unwrap(),
                    RetentionPeriod::Days(6 * 366),
                ),
                (
                    RetentionClass::new("permanent").unwrap(),
                    RetentionPeriod::Permanent,
                ),
            ]
            .into_iter()
            .collect(),
        }
    }
}

impl BlobFixture for S3Blobs {
    type Blobs = S3BlobStore;

    fn open_blobs(&self) -> S3BlobStore {
        S3BlobStore::new(self.config()).unwrap()
    }

    fn open_second_blobs(&self) -> S3BlobStore {
        self.open_blobs()
    }

    fn corrupt(&self, locator: &BlobLocator) -> Corruption {
        let key = locator
            .0
            .split_once('#')
            .map_or(locator.0.as_str(), |(key, _)| key);
        s3ctl(&["overwrite", &self.bucket, key]);
        Corruption::Superseded
    }

    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = s3ctl(&["list", &self.bucket])
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

/// A blob store that fails its next `put` when told to.
pub struct FlakyBlobs<B> {
    pub inner: B,
    pub fail_next: Arc<AtomicBool>,
    /// Calls to `put` so far.
    pub puts: Arc<AtomicU64>,
}

impl<B: BlobStore> BlobStore for FlakyBlobs<B> {
    type Upload = B::Upload;

    async fn upload(&self, digest: &BodyDigest, retention: &RetentionClass) -> Result<B::Upload, StoreError> {
        self.inner.upload(digest, retention).await
    }

    fn upload_holds(&self, len: u64) -> u64 {
        self.inner.upload_holds(len)
    }

    async fn put(&self, blobs: &[BlobPut<'_>]) -> Result<Vec<BlobLocator>, StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
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
    /// Commits wait while a test holds this.
    pub gate: Arc<tokio::sync::Mutex<()>>,
}

impl<L> FlakyLog<L> {
    pub fn new(inner: L) -> Self {
        Self {
            inner,
            fail_before: Arc::default(),
            fail_after: Arc::default(),
            gate: Arc::default(),
        }
    }
}

impl<L: LogStore> LogStore for FlakyLog<L> {
    type Sequencing = FlakySequencing<L::Sequencing>;

    async fn sequence(&self) -> Result<Self::Sequencing, StoreError> {
        drop(self.gate.lock().await);
        Ok(FlakySequencing {
            inner: self.inner.sequence().await?,
            fail_before: self.fail_before.clone(),
            fail_after: self.fail_after.clone(),
        })
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

/// The sequencing transaction of a [`FlakyLog`].
pub struct FlakySequencing<S> {
    inner: S,
    fail_before: Arc<AtomicBool>,
    fail_after: Arc<AtomicBool>,
}

impl<S: Sequencing> Sequencing for FlakySequencing<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn hashes(&mut self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        self.inner.hashes(ids).await
    }
    async fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn records(&mut self, ids: &[RecordId]) -> Result<Vec<StoredRecord>, StoreError> {
        self.inner.records(ids).await
    }
    async fn commit(self, batch: CommitBatch) -> Result<(), StoreError> {
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

type GatedArchive = Archive<FlakyLog<SqliteStore>, FlakyBlobs<LocalBlobStore>>;

/// An archive on SQLite and a folder whose commits a test can hold (`log.gate`) and
/// whose blob writes it can count, to line batches up in the pipeline.
pub struct Gated {
    pub backend: Combo<SqliteMeta, LocalBlobs>,
    pub log: FlakyLog<SqliteStore>,
    pub puts: Arc<AtomicU64>,
    pub archive: Arc<GatedArchive>,
}

impl Gated {
    pub async fn new() -> Self {
        let backend = Combo {
            meta: SqliteMeta::new(),
            blobs: LocalBlobs::new(),
        };
        let (log, blobs) = backend.open().await;
        let log = FlakyLog::new(log);
        let puts = Arc::new(AtomicU64::new(0));
        let blobs = FlakyBlobs {
            inner: blobs,
            fail_next: Arc::default(),
            puts: puts.clone(),
        };
        let archive = Arc::new(open_archive(log.clone(), blobs).await);
        Self {
            backend,
            log,
            puts,
            archive,
        }
    }

    /// Starts appending `submission` and returns once its batch's blobs are written:
    /// the batch is then with the committer, or queued right behind it.
    pub async fn start_append(
        &self,
        submission: &Submission,
    ) -> tokio::task::JoinHandle<Result<vellum_protocol::receipt::Receipt, vellum_archive::AppendError>> {
        let before = self.puts.load(Ordering::SeqCst);
        let task = tokio::spawn({
            let (archive, submission) = (self.archive.clone(), submission.clone());
            async move { archive.append(submission).await }
        });
        while self.puts.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
        task
    }
}
