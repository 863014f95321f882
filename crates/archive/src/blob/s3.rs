//! The S3-compatible blob store, for deployments at scale, with Object Lock (WORM).
//!
//! Blobs are objects named by the hex SHA-256 of their bytes
//! (`PREFIX/sha256/ab/abcdef…`); a locator also names the version written
//! (`KEY#VERSION`), and reads ask for that version. Every object is written with its own COMPLIANCE-mode
//! retention: `x-amz-object-lock-mode` and `x-amz-object-lock-retain-until-date` on the
//! `PUT` itself, so no one, root account included, can delete or overwrite that version
//! before the date. The date is the first midnight (UTC) at least the retention class's
//! period after the write, so it is never shorter than the record's retention, which
//! counts from its receipt time.
//!
//! `object_store` 0.14 has no per-request header for Object Lock, but it sends a
//! client's default headers with every request: the store keeps one client per
//! (retention class, retain-until day), built on first use. `x-amz-sdk-checksum-algorithm:
//! SHA256` goes with them, since S3 requires an integrity checksum on writes to a
//! locked bucket (and the SHA-256 checksum itself is sent by `object_store`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, HeaderMap, HeaderValue, ObjectStore as _, ObjectStoreExt as _, PutPayload,
};
use vellum_protocol::ids::RetentionClass;
use vellum_protocol::seal::BodyDigest;

use crate::error::StoreError;
use crate::ports::{BlobLocator, BlobPut, BlobStore};

const DAY_MS: u64 = 86_400_000;
/// How long a "permanent" record's blob is locked: S3 needs a date; a century is
/// longer than any system that stores it.
pub const PERMANENT_YEARS: u64 = 100;
/// Concurrent PUTs per batch.
const PARALLEL_PUTS: usize = 32;

/// How long one retention class keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionPeriod {
    /// A number of days.
    Days(u32),
    /// For ever ([`PERMANENT_YEARS`] of Object Lock).
    Permanent,
}

impl RetentionPeriod {
    fn millis(self) -> u64 {
        match self {
            RetentionPeriod::Days(days) => u64::from(days) * DAY_MS,
            RetentionPeriod::Permanent => PERMANENT_YEARS * 366 * DAY_MS,
        }
    }
}

/// Where and how to reach the bucket.
#[derive(Clone)]
pub struct S3Config {
    /// The bucket; it must have Object Lock enabled when `object_lock` is set.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// The region.
    pub region: String,
    /// An endpoint for S3-compatible services; `None` for AWS.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key (never printed).
    pub secret_access_key: String,
    /// Allow plain HTTP (loopback test servers only).
    pub allow_http: bool,
    /// Write every object with COMPLIANCE retention.
    pub object_lock: bool,
    /// The retention period of each class; a class not listed cannot be stored.
    pub retention: HashMap<RetentionClass, RetentionPeriod>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("object_lock", &self.object_lock)
            .finish_non_exhaustive()
    }
}

/// Clients with Object Lock headers, by (retention class, retain-until day).
type WriterCache = HashMap<(RetentionClass, u64), Arc<AmazonS3>>;

/// The S3 blob store.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    config: Arc<S3Config>,
    reader: Arc<AmazonS3>,
    /// Writers by (class, retain-until day): see the module docs.
    writers: Arc<Mutex<WriterCache>>,
}

fn s3_err(op: &'static str) -> impl FnOnce(object_store::Error) -> StoreError {
    move |e| StoreError::backend(op, e)
}

impl S3BlobStore {
    /// A store for `config`; nothing is contacted until the first read or write.
    pub fn new(config: S3Config) -> Result<Self, StoreError> {
        let reader = Arc::new(build(&config, HeaderMap::new())?);
        Ok(Self {
            config: Arc::new(config),
            reader,
            writers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn key(&self, digest: &BodyDigest) -> String {
        let hex: String = digest.sha256.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}sha256/{}/{hex}", self.config.prefix, &hex[..2])
    }

    /// The client that writes blobs of `class` now, with their lock headers.
    fn writer(&self, class: &RetentionClass, now_ms: u64) -> Result<Arc<AmazonS3>, StoreError> {
        if !self.config.object_lock {
            return Ok(self.reader.clone());
        }
        let period =
            self.config.retention.get(class).ok_or_else(|| {
                StoreError::Config(format!("no retention period configured for class {class}"))
            })?;
        let until_day = (now_ms + period.millis()).div_ceil(DAY_MS);
        let mut writers = self
            .writers
            .lock()
            .map_err(|_| StoreError::Integrity("S3 client cache poisoned".into()))?;
        if let Some(client) = writers.get(&(class.clone(), until_day)) {
            return Ok(client.clone());
        }
        let mut headers = HeaderMap::new();
        let until = vellum_protocol::time::rfc3339(until_day * DAY_MS);
        headers.insert("x-amz-object-lock-mode", HeaderValue::from_static("COMPLIANCE"));
        headers.insert(
            "x-amz-object-lock-retain-until-date",
            HeaderValue::from_str(&until).map_err(|e| StoreError::Config(e.to_string()))?,
        );
        headers.insert("x-amz-sdk-checksum-algorithm", HeaderValue::from_static("SHA256"));
        let client = Arc::new(build(&self.config, headers)?);
        writers.retain(|(c, day), _| c != class || *day >= until_day.saturating_sub(1));
        writers.insert((class.clone(), until_day), client.clone());
        Ok(client)
    }
}

fn build(config: &S3Config, headers: HeaderMap) -> Result<AmazonS3, StoreError> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .with_checksum_algorithm(Checksum::SHA256)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(config.allow_http)
                .with_default_headers(headers),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    builder
        .build()
        .map_err(|e| StoreError::Config(format!("S3: {e}")))
}

impl BlobStore for S3BlobStore {
    fn accepts(&self, retention: &RetentionClass) -> bool {
        !self.config.object_lock || self.config.retention.contains_key(retention)
    }

    async fn put(&self, blobs: &[BlobPut<'_>]) -> Result<Vec<BlobLocator>, StoreError> {
        let now = crate::sequencer::now_ms();
        // Every class was checked by `accepts` before the batch formed; resolve all
        // clients before the first PUT so that no PUT starts for a batch that fails.
        let clients = blobs
            .iter()
            .map(|b| self.writer(b.retention, now))
            .collect::<Result<Vec<_>, _>>()?;
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_PUTS));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (blob, client)) in blobs.iter().zip(clients).enumerate() {
            let key = self.key(&blob.digest);
            let payload = PutPayload::from(blob.bytes.to_vec());
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let put = client
                    .put(&ObjectPath::from(key.as_str()), payload)
                    .await
                    .map_err(s3_err("put blob"))?;
                // Reads name the version written, so a later PUT to the same key (a
                // locked bucket allows it: it adds a version) can never replace this body.
                let locator = match put.version {
                    Some(version) => format!("{key}#{version}"),
                    None => key,
                };
                Ok::<_, StoreError>((i, BlobLocator(locator)))
            });
        }
        // Durable only when every PUT succeeded; one failure fails the whole batch.
        let mut locators = vec![BlobLocator(String::new()); blobs.len()];
        while let Some(outcome) = tasks.join_next().await {
            let (i, locator) = outcome.map_err(|e| StoreError::backend("put blob task", e))??;
            locators[i] = locator;
        }
        Ok(locators)
    }

    async fn get(&self, locator: &BlobLocator, expected: &BodyDigest) -> Result<Vec<u8>, StoreError> {
        let (key, version) = match locator.0.split_once('#') {
            Some((key, version)) => (key, Some(version.to_owned())),
            None => (locator.0.as_str(), None),
        };
        let options = GetOptions {
            version,
            ..GetOptions::default()
        };
        let result = self
            .reader
            .get_opts(&ObjectPath::from(key), options)
            .await
            .map_err(s3_err("get blob"))?;
        if result.meta.size != expected.len {
            return Err(StoreError::Integrity(format!(
                "blob {} has the wrong length",
                locator.0
            )));
        }
        let bytes = result.bytes().await.map_err(s3_err("read blob"))?.to_vec();
        super::verify(&bytes, expected, &locator.0)?;
        Ok(bytes)
    }
}
