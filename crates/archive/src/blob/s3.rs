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
//!
//! Large blobs ([`BlobStore::upload`]) on a bucket without Object Lock go up as a
//! multipart upload to the key their header's digest names, in parts of
//! [`PART_BYTES`], at most [`PARTS_IN_FLIGHT`] at once (so an upload holds at most
//! about their product in memory). Only its completion makes the object exist; an
//! upload given up is aborted, and S3 keeps none of its parts.
//!
//! On an Object Lock bucket an upload is gathered in memory instead and written with
//! one `PUT` at its commit, with the lock headers, like a batch's blobs: S3 takes lock
//! headers on the creation of a multipart upload too, but the S3 server these tests
//! run against ignores them there, so that path's lock could not be checked, and a
//! blob whose lock is unverified has no place in a WORM archive.
//! [`BlobStore::upload_holds`] says so, and the gateway counts the whole body against
//! its memory budget.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, HeaderMap, HeaderValue, ObjectStore as _, ObjectStoreExt as _, PutPayload,
    WriteMultipart,
};
use vellum_protocol::ids::RetentionClass;
use vellum_protocol::seal::BodyDigest;

use crate::error::StoreError;
use crate::ports::{BlobLocator, BlobPut, BlobStore, BlobUpload};

const DAY_MS: u64 = 86_400_000;
/// How long a "permanent" record's blob is locked: S3 needs a date; a century is
/// longer than any system that stores it.
pub const PERMANENT_YEARS: u64 = 100;
/// Concurrent PUTs per batch.
const PARALLEL_PUTS: usize = 32;
/// The part size of a multipart upload (S3 wants at least 5 MiB but for the last).
pub const PART_BYTES: usize = 8 << 20;
/// Parts of one upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;

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
        let hex = super::sha256_hex(digest);
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
    type Upload = S3Upload;

    async fn upload(&self, digest: &BodyDigest, retention: &RetentionClass) -> Result<S3Upload, StoreError> {
        // The record's receipt time comes after the body has arrived: the lock counts
        // from a day later than now, and an upload lasts less (`crate::Upload`).
        let client = self.writer(retention, crate::sequencer::now_ms() + UPLOAD_LOCK_MARGIN_MS)?;
        let key = self.key(digest);
        let way = if self.config.object_lock {
            Way::Whole {
                client,
                bytes: Vec::with_capacity(usize::try_from(digest.len).unwrap_or(0)),
            }
        } else {
            Way::Parts(WriteMultipart::new_with_chunk_size(
                start_multipart(client, &key).await?,
                PART_BYTES,
            ))
        };
        Ok(S3Upload { key, way: Some(way) })
    }

    fn upload_holds(&self, len: u64) -> u64 {
        match self.config.object_lock {
            true => len,
            false => ((PARTS_IN_FLIGHT + 1) * PART_BYTES) as u64,
        }
    }

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
                Ok::<_, StoreError>((i, locator(key, put.version)))
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
        let result = self.open_object(locator, expected).await?;
        let bytes = result.bytes().await.map_err(s3_err("read blob"))?.to_vec();
        super::verify(&bytes, expected, &locator.0)?;
        Ok(bytes)
    }

    async fn read_chunks(
        &self,
        locator: &BlobLocator,
        expected: &BodyDigest,
        sink: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut stream = self.open_object(locator, expected).await?.into_stream();
        let mut hashing = super::Hashing::new();
        while let Some(part) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            let part = part.map_err(s3_err("read blob"))?;
            for chunk in part.chunks(crate::ports::READ_CHUNK) {
                hashing.update(chunk);
                if sink.send(chunk.to_vec()).await.is_err() {
                    return Ok(());
                }
            }
        }
        hashing.check(expected, &locator.0)
    }
}

impl S3BlobStore {
    /// The exact object version a locator names, refused unless its length is the one
    /// expected.
    async fn open_object(
        &self,
        locator: &BlobLocator,
        expected: &BodyDigest,
    ) -> Result<object_store::GetResult, StoreError> {
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
        Ok(result)
    }
}

/// How much later than its start a streamed blob's lock counts from: more than an
/// upload may last ([`crate::upload::UPLOAD_DEADLINE`]), so the lock is never shorter
/// than the retention of its record, whose receipt time follows the upload.
const UPLOAD_LOCK_MARGIN_MS: u64 = DAY_MS;

/// Creates a multipart upload on a task of its own: if the caller is gone by the time
/// S3 answers (a request cut off), the upload is aborted rather than left behind.
async fn start_multipart(
    client: Arc<AmazonS3>,
    key: &str,
) -> Result<Box<dyn object_store::MultipartUpload>, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = ObjectPath::from(key);
    tokio::spawn(async move {
        match client.put_multipart(&path).await {
            Ok(upload) => {
                if let Err(Ok(upload)) = tx.send(Ok(upload)) {
                    abort(WriteMultipart::new(upload)).await;
                }
            }
            Err(e) => drop(tx.send(Err(e))),
        }
    });
    rx.await
        .map_err(|e| StoreError::backend("start blob upload", e))?
        .map_err(s3_err("start blob upload"))
}

/// Reads name the version written, so a later PUT to the same key (a locked bucket
/// allows it: it adds a version) can never replace this body.
fn locator(key: String, version: Option<String>) -> BlobLocator {
    match version {
        Some(version) => BlobLocator(format!("{key}#{version}")),
        None => BlobLocator(key),
    }
}

/// An upload of one large blob (see the module docs). A multipart upload dropped
/// before its commit (a request cut off) is aborted in the background.
pub struct S3Upload {
    key: String,
    /// `None` once completed or aborted.
    way: Option<Way>,
}

enum Way {
    /// A multipart upload.
    Parts(WriteMultipart),
    /// Gathered, for one `PUT` with the lock headers.
    Whole { client: Arc<AmazonS3>, bytes: Vec<u8> },
}

impl fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Upload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

async fn abort(parts: WriteMultipart) {
    if let Err(e) = parts.abort().await {
        tracing::warn!(
            error = %e,
            "a blob upload could not be aborted; a lifecycle rule for incomplete uploads removes its parts"
        );
    }
}

impl BlobUpload for S3Upload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        match self.way.as_mut().ok_or_else(super::upload_finished)? {
            Way::Parts(parts) => {
                parts
                    .wait_for_capacity(PARTS_IN_FLIGHT - 1)
                    .await
                    .map_err(s3_err("upload blob part"))?;
                parts.write(chunk);
            }
            Way::Whole { bytes, .. } => bytes.extend_from_slice(chunk),
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<BlobLocator, StoreError> {
        let key = std::mem::take(&mut self.key);
        let way = self.way.take().ok_or_else(super::upload_finished)?;
        let path = ObjectPath::from(key.as_str());
        // On a task of its own, so that a request cut off meanwhile neither leaves a
        // multipart upload incomplete nor a PUT half sent; the PUT hashes its whole
        // payload (its checksum) where it runs, so it runs where blocking is allowed.
        let put = match way {
            Way::Parts(parts) => {
                tokio::spawn(async move { parts.finish().await.map_err(s3_err("complete blob upload")) })
                    .await
            }
            Way::Whole { client, bytes } => {
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    runtime
                        .block_on(client.put(&path, PutPayload::from(bytes)))
                        .map_err(s3_err("put blob"))
                })
                .await
            }
        }
        .map_err(|e| StoreError::backend("blob upload task", e))??;
        Ok(locator(key, put.version))
    }

    async fn abort(mut self) {
        if let Some(Way::Parts(parts)) = self.way.take() {
            abort(parts).await;
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(Way::Parts(parts)) = self.way.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort(parts));
        }
    }
}
