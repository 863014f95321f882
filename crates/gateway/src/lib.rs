//! Vellum's HTTP gateway: the routes capture clients, auditors and witnesses call.
//!
//! The gateway holds an [`Archive`] over whatever storage the binary chose and serves
//! it through [`router`]. It sees only what capture clients sealed and signed: it
//! checks structure and signatures, stores ciphertext, and answers with proofs.
//!
//! ```no_run
//! # async fn serve(
//! #     archive: vellum_archive::Archive<vellum_archive::sqlite::SqliteStore, vellum_archive::blob::local::LocalBlobStore>,
//! #     keyring: vellum_protocol::keyring::VerifiedKeyring,
//! # ) -> std::io::Result<()> {
//! use std::sync::Arc;
//!
//! vellum_gateway::server::harden_process()?;
//! let auth = vellum_gateway::auth::Auth::ephemeral("vellum").expect("random key");
//! let app = vellum_gateway::router(Arc::new(vellum_gateway::Gateway::new(archive, keyring, auth)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! vellum_gateway::server::serve(listener, app, None, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
//!
//! Every error is an RFC 9457 problem ([`problem`]); nothing internal is ever sent.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod cases;
mod device;
pub mod problem;
mod reads;
mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use vellum_archive::Archive;
use vellum_archive::ports::{BlobStore, LogStore};
use vellum_protocol::keyring::VerifiedKeyring;

use crate::auth::{Auth, LoginLimits};
use crate::problem::ApiError;

pub use routes::{
    Access, POLICIES, RECORD_MEDIA_TYPE, documented_only, openapi, policy, router, starting_keyring,
};

/// Login attempts a minute from one address, by default.
pub const DEFAULT_LOGINS_PER_ADDRESS: u32 = 30;
/// Login attempts a minute for one account name, by default.
pub const DEFAULT_LOGINS_PER_ACCOUNT: u32 = 10;

/// The largest capture (framed header and sealed body) taken by default: 2 GiB.
pub const DEFAULT_MAX_CAPTURE_BYTES: usize = 2 << 30;

/// Captures larger than this are streamed to the blob store by default: 1 MiB.
pub const DEFAULT_STREAM_OVER_BYTES: usize = 1 << 20;

/// The limits every request is held to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest capture (framed header and sealed body), in bytes.
    pub max_capture_bytes: usize,
    /// Captures up to this size are read whole, checked in memory and stored with
    /// their batch; larger ones are streamed to the blob store as they arrive.
    pub stream_over_bytes: usize,
    /// How many requests run at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// How long a request may wait for its turn before it gets 503.
    pub queue_timeout: Duration,
    /// How long a request may take, reading its body included, before it gets 408.
    pub request_timeout: Duration,
    /// How many capture bytes may be held in memory at once, across requests; a
    /// capture waits (up to the queue timeout) for its share, then gets 503. A
    /// streamed capture counts as the most its upload holds at once, and 1 MiB more
    /// (3 MiB for a blob folder). The budget is never smaller than one capture of the
    /// largest size needs.
    pub max_buffered_bytes: usize,
    /// How long a device's credential lookup is reused before the database is asked
    /// again: the longest a revocation or rotation made elsewhere (another gateway,
    /// the database) goes unseen here. Zero asks the database on every request.
    pub device_cache: Duration,
    /// The longest capture-time range, in days, of a case scope that names no
    /// custodian or participant: a wider one is the whole archive in substance.
    pub max_scope_days: u32,
    /// Sealed bodies sent at once, in all; more wait up to the queue timeout, then get
    /// 503. Each holds about a megabyte, whatever the body's size.
    pub max_concurrent_reads: usize,
    /// Sealed bodies one account is sent at once; more get 429.
    pub max_reads_per_account: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_capture_bytes: DEFAULT_MAX_CAPTURE_BYTES,
            stream_over_bytes: DEFAULT_STREAM_OVER_BYTES,
            max_concurrent_requests: 1024,
            queue_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_buffered_bytes: 1 << 30,
            device_cache: Duration::from_secs(1),
            max_scope_days: cases::DEFAULT_MAX_SCOPE_DAYS,
            max_concurrent_reads: 64,
            max_reads_per_account: 4,
        }
    }
}

/// What every route shares: the archive, the keyring it publishes and the limits.
#[derive(Debug)]
pub struct Gateway<L, B> {
    archive: Archive<L, B>,
    keyring: std::sync::RwLock<Arc<VerifiedKeyring>>,
    /// Verifies keyring statements published at runtime (none: publishing is off).
    org_key: Option<vellum_tlog::note::NoteVerifier>,
    limits: Limits,
    /// The buffered-bytes budget, in KiB permits.
    body_budget: Semaphore,
    /// Its size in KiB: no reservation asks for more.
    body_budget_kib: usize,
    auth: Auth,
    login_limits: LoginLimits,
    oidc: Option<crate::auth::oidc::Oidc>,
    devices: device::DeviceCache,
    reads: reads::ReadBudget,
}

impl<L: LogStore, B: BlobStore> Gateway<L, B> {
    /// A gateway over an opened archive, publishing `keyring` (checked by the caller
    /// against the organisation key), with default limits. Captures are taken only
    /// under the keyring's epoch.
    pub fn new(archive: Archive<L, B>, keyring: VerifiedKeyring, auth: Auth) -> Self {
        Self {
            body_budget_kib: budget_kib(&Limits::default(), &archive),
            body_budget: Semaphore::new(budget_kib(&Limits::default(), &archive)),
            archive,
            keyring: std::sync::RwLock::new(Arc::new(keyring)),
            org_key: None,
            limits: Limits::default(),
            auth,
            login_limits: LoginLimits::new(DEFAULT_LOGINS_PER_ADDRESS, DEFAULT_LOGINS_PER_ACCOUNT),
            oidc: None,
            devices: device::DeviceCache::default(),
            reads: reads::ReadBudget::new(
                Limits::default().max_concurrent_reads,
                Limits::default().max_reads_per_account,
            ),
        }
    }

    /// Offers single sign-on through this OpenID Connect provider.
    #[must_use]
    pub fn with_oidc(mut self, oidc: crate::auth::oidc::Oidc) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// The single sign-on provider, when one is configured.
    pub fn oidc(&self) -> Option<&crate::auth::oidc::Oidc> {
        self.oidc.as_ref()
    }

    /// Sets the login rate limits: attempts a minute per address and per account.
    #[must_use]
    pub fn with_login_limits(mut self, per_address: u32, per_account: u32) -> Self {
        self.login_limits = LoginLimits::new(per_address, per_account);
        self
    }

    /// Replaces the sign-in settings.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sign-in settings.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The login rate limits.
    pub(crate) fn login_limits(&self) -> &LoginLimits {
        &self.login_limits
    }

    /// Accepts keyring statements for later epochs signed by this organisation key
    /// (`POST /v1/keys/keyring`); without it, the keyring changes only at a restart.
    #[must_use]
    pub fn with_org_key(mut self, org_key: vellum_tlog::note::NoteVerifier) -> Self {
        self.org_key = Some(org_key);
        self
    }

    /// The organisation key keyrings are checked against, when publishing is on.
    pub fn org_key(&self) -> Option<&vellum_tlog::note::NoteVerifier> {
        self.org_key.as_ref()
    }

    /// Makes `keyring` the one capture clients seal to from now on, if it is newer
    /// than the one in force (a refresh racing a publication never goes back).
    pub(crate) fn set_keyring(&self, keyring: VerifiedKeyring) {
        if let Ok(mut current) = self.keyring.write()
            && keyring.statement().epoch > current.statement().epoch
        {
            *current = Arc::new(keyring);
        }
    }

    /// The keyring statement capture clients seal to now.
    pub fn keyring(&self) -> Arc<VerifiedKeyring> {
        self.keyring
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |k| k.clone())
    }

    /// Sets the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.body_budget_kib = budget_kib(&limits, &self.archive);
        self.body_budget = Semaphore::new(self.body_budget_kib);
        self.reads = reads::ReadBudget::new(limits.max_concurrent_reads, limits.max_reads_per_account);
        self.limits = limits;
        self
    }

    /// A share of the read budget for one body sent to `account`.
    pub(crate) async fn reserve_read(&self, account: [u8; 16]) -> Result<reads::ReadPermit, ApiError> {
        self.reads.acquire(account, self.limits.queue_timeout).await
    }

    /// Reserves room for a body of `bytes` in the buffered-bytes budget (all of it,
    /// for a body larger than the whole budget).
    pub(crate) async fn reserve_body(&self, bytes: usize) -> Result<SemaphorePermit<'_>, ApiError> {
        let kib =
            u32::try_from(bytes.div_ceil(1024).min(self.body_budget_kib)).map_err(|_| ApiError::Busy)?;
        match tokio::time::timeout(self.limits.queue_timeout, self.body_budget.acquire_many(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Busy),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets what the device cache holds of `device` (revoked, or its credential
    /// rotated through this gateway).
    pub(crate) fn forget_device(&self, device: &vellum_protocol::ids::DeviceId) {
        self.devices.forget(device);
    }

    /// The archive.
    pub fn archive(&self) -> &Archive<L, B> {
        &self.archive
    }
}

/// The buffered-bytes budget in KiB: room for at least one capture of the largest
/// size, whatever the settings, held whole or streamed.
fn budget_kib<L: LogStore, B: BlobStore>(limits: &Limits, archive: &Archive<L, B>) -> usize {
    let whole = limits.stream_over_bytes.min(limits.max_capture_bytes);
    let streamed = match limits.max_capture_bytes > limits.stream_over_bytes {
        true => usize::try_from(archive.upload_holds(limits.max_capture_bytes as u64)).unwrap_or(usize::MAX),
        false => 0,
    };
    let bytes = limits.max_buffered_bytes.max(whole).max(streamed);
    bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<L: LogStore + vellum_archive::ports::DeviceStore, B: BlobStore> Gateway<L, B> {
    /// The device holding `credential`, revoked or not (through the device cache).
    pub(crate) async fn device(
        &self,
        credential: &vellum_archive::ports::SecretHash,
    ) -> Result<Option<vellum_archive::ports::Device>, vellum_archive::StoreError> {
        self.devices
            .lookup(self.archive.log_store(), credential, self.limits.device_cache)
            .await
    }
}

/// The shared state handlers receive.
pub(crate) type State<L, B> = axum::extract::State<Arc<Gateway<L, B>>>;
