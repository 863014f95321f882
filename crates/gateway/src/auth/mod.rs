//! People: passwords, second factors, sessions and who may call what.
//!
//! - [`password`]: Argon2id PHC strings, the password rules, one-time passwords.
//! - [`totp`]: RFC 6238 codes.
//! - [`jwt`]: EdDSA access tokens.
//! - [`Auth`]: the gateway's settings and the bounded pool of lowest-priority threads
//!   that runs Argon2 off the async runtime, so a flood of logins queues there and
//!   takes only CPU that captures leave idle.
//! - [`Person`]: an authenticated person, as the authorization layer admits them.

pub mod admin;
pub mod jwt;
pub mod oidc;
pub mod password;
pub mod totp;
pub mod totp_seal;

use std::time::Duration;

use sha2::Digest as _;
use tokio::sync::Semaphore;
use vellum_archive::ports::{Role, SessionStore};

use crate::problem::ApiError;
use jwt::{JwtKeys, Scope};

/// Password computations a second by default, for the whole gateway: each costs
/// about 20 ms of one core and 19 MiB, so this bounds what a flood of logins can
/// take from captures to a fraction of one core.
pub const DEFAULT_HASHES_PER_SECOND: u32 = 5;

/// How long a refresh token lives by default: 12 hours (a session unused this long
/// ends).
pub const DEFAULT_REFRESH_SECS: u64 = 12 * 3600;

/// How long a session lasts at most by default, however active: 24 hours.
pub const DEFAULT_SESSION_SECS: u64 = 24 * 3600;

/// A genuine, current known-device token, before the account is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownDevice {
    account_id: [u8; 16],
    binding: [u8; 8],
    /// Keys this token's own rate limit.
    budget: [u8; 16],
}

impl KnownDevice {
    /// Whether the token still vouches for `account`: the same account, with the
    /// password hash and second factor it was issued under.
    pub fn holds_for(&self, account: &vellum_archive::ports::Account) -> bool {
        self.account_id == account.account_id && self.binding == device_binding(account)
    }
}

/// What ties a known-device token to an account's credentials: 8 bytes of SHA-256
/// over the password hash and the confirmed TOTP secret (if any). A new password, a reset
/// second factor or a rehash gives another binding, voiding earlier tokens.
pub fn device_binding(account: &vellum_archive::ports::Account) -> [u8; 8] {
    let mut hash = sha2::Sha256::new();
    hash.update(b"vellum known-device binding v1\0");
    hash.update(account.password_phc.as_bytes());
    hash.update([0]);
    // Only a confirmed second factor: issuing a secret that is never confirmed
    // changes nothing.
    if let Some(secret) = account.totp_secret.as_ref().filter(|_| account.totp_enabled) {
        hash.update(secret.as_slice());
    }
    let digest = hash.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// How long a known-device token is good: 90 days. A successful password sign-in
/// gets one; presented at a later sign-in to the same account, it exempts that
/// attempt from the account's lock and per-account rate limit (never from the
/// per-address limit or the gateway-wide cap on password work), so whoever floods an
/// account with wrong passwords cannot lock out its owner on a device they used before.
pub const KNOWN_DEVICE_SECS: u64 = 90 * 86_400;

/// What the dummy hash (for unknown usernames) is of.
const DUMMY_PASSWORD: &str = "an unknown account has no password";

/// Failed logins before the account is locked for a while.
pub const LOCK_AFTER: u32 = 5;
/// The first lock lasts this long; each further failure doubles it.
pub const FIRST_LOCK_SECS: u64 = 30;
/// No lock lasts longer than this.
pub const MAX_LOCK_SECS: u64 = 15 * 60;

/// How long an account is locked after `failures` consecutive failed logins: nothing
/// before [`LOCK_AFTER`], then 30 s doubling per failure up to 15 minutes. Someone who
/// knows a username can renew a lock with one wrong guess whenever it ends, so the lock
/// never holds off the owner on a device that signed in before (see
/// [`KNOWN_DEVICE_SECS`]), and the local `vellum admin user` commands are never locked.
pub fn lock_duration(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(LOCK_AFTER)?;
    let secs = FIRST_LOCK_SECS.saturating_mul(1u64 << over.min(20));
    Some(Duration::from_secs(secs.min(MAX_LOCK_SECS)))
}

/// Threads that run Argon2 at the lowest CPU priority (nice 19), so password work
/// takes only the CPU that captures leave idle: a flood of logins slows logins, not
/// ingest. Jobs wait in a bounded queue.
struct PasswordWorkers {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for PasswordWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordWorkers").finish_non_exhaustive()
    }
}

impl PasswordWorkers {
    fn start(threads: usize) -> Result<Self, String> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(threads * 4);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("vellum-password-{i}"))
                .spawn(move || {
                    // Linux keeps the nice value per thread: this lowers only this one.
                    if let Err(e) = rustix::process::setpriority_process(None, 19) {
                        tracing::warn!(error = %e, "password worker keeps normal priority");
                    }
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the gateway is gone
                        }
                    }
                })
                .map_err(|e| format!("password worker: {e}"))?;
        }
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.try_send(job).map_err(|_| ApiError::Busy)?;
        result.await.map_err(|_| ApiError::Internal)
    }
}

/// The gateway's settings for people.
#[derive(Debug)]
pub struct Auth {
    jwt: JwtKeys,
    refresh_secs: u64,
    session_secs: u64,
    password_work: Semaphore,
    workers: PasswordWorkers,
    /// Password computations a second, for the whole gateway.
    hash_rate: governor::DefaultDirectRateLimiter,
    queue_timeout: Duration,
    /// The Argon2id parameters new hashes get; older, weaker ones are redone at sign-in.
    cost: password::Cost,
    /// Verified against when the username is unknown, so that takes as long.
    dummy_phc: String,
    /// Signs known-device tokens.
    device_key: zeroize::Zeroizing<[u8; 32]>,
    /// Seals TOTP secrets at rest.
    totp_keys: totp_seal::TotpKeys,
}

impl Auth {
    /// Settings with these token keys; at most `parallel_hashes` Argon2 computations
    /// run at once (each takes about 19 MiB and tens of milliseconds), on threads of
    /// the lowest CPU priority, and a login waits at most `queue_timeout` for its turn
    /// before it gets 503.
    pub fn new(
        jwt: JwtKeys,
        refresh_secs: u64,
        parallel_hashes: usize,
        queue_timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            device_key: jwt.derive_key("known-device"),
            jwt,
            refresh_secs,
            session_secs: DEFAULT_SESSION_SECS.max(refresh_secs),
            password_work: Semaphore::new(parallel_hashes.max(1)),
            workers: PasswordWorkers::start(parallel_hashes.max(1))?,
            hash_rate: governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(DEFAULT_HASHES_PER_SECOND).unwrap_or(std::num::NonZeroU32::MIN),
            )),
            queue_timeout,
            cost: password::Cost::MINIMUM,
            dummy_phc: password::hash(DUMMY_PASSWORD)?,
            totp_keys: totp_seal::TotpKeys::ephemeral().map_err(|e| e.to_string())?,
        })
    }

    /// Sets the Argon2id parameters of new password hashes (at least the minimum);
    /// hashes made with weaker ones are redone at each account's next sign-in.
    pub fn with_password_cost(mut self, cost: password::Cost) -> Result<Self, String> {
        self.dummy_phc = password::hash_with(cost, DUMMY_PASSWORD)?;
        self.cost = cost;
        Ok(self)
    }

    /// The Argon2id parameters of new password hashes.
    pub fn password_cost(&self) -> password::Cost {
        self.cost
    }

    /// Settings with a random token key, for one process on its own (tokens do not
    /// survive a restart): what a gateway without configured keys uses.
    pub fn ephemeral(issuer: &str) -> Result<Self, String> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| e.to_string())?;
        let jwt = JwtKeys::new(issuer, "vellum", jwt::MAX_TTL_SECS, &seed, &[])?;
        Self::new(jwt, DEFAULT_REFRESH_SECS, 2, Duration::from_secs(10))
    }

    /// Seals TOTP secrets under these keys (by default a random key made at start,
    /// which no restart keeps: every real deployment configures `totp_key_file`).
    #[must_use]
    pub fn with_totp_keys(mut self, keys: totp_seal::TotpKeys) -> Self {
        self.totp_keys = keys;
        self
    }

    /// The keys TOTP secrets are sealed under.
    pub fn totp_keys(&self) -> &totp_seal::TotpKeys {
        &self.totp_keys
    }

    /// Sets how many password computations (logins, changes) the gateway runs a
    /// second at most; more are answered 503 at once, without computing anything.
    #[must_use]
    pub fn with_hashes_per_second(mut self, per_second: u32) -> Self {
        let rate = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
        self.hash_rate = governor::RateLimiter::direct(governor::Quota::per_second(rate));
        self
    }

    /// A known-device token for this account (see [`KNOWN_DEVICE_SECS`]), good from
    /// `now` (Unix seconds): `kd1.`, base64url(account id ‖ expiry u64 BE ‖ binding),
    /// `.`, base64url(HMAC-SHA256). The binding ([`device_binding`]) ties it to the
    /// account's current password hash and second factor: changing either voids it.
    pub fn known_device_token(&self, account: &vellum_archive::ports::Account, now: u64) -> String {
        use base64::Engine as _;
        let mut payload = account.account_id.to_vec();
        payload.extend_from_slice(&(now + KNOWN_DEVICE_SECS).to_be_bytes());
        payload.extend_from_slice(&device_binding(account));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "kd1.{}.{}",
            b64.encode(&payload),
            b64.encode(self.device_mac(&payload))
        )
    }

    /// What a known-device token claims, if it is genuine and current at `now`. Whether
    /// it still holds is [`KnownDevice::holds_for`], once the account is read.
    pub fn known_device(&self, token: &str, now: u64) -> Option<KnownDevice> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, tag) = token.strip_prefix("kd1.")?.split_once('.')?;
        let payload = b64.decode(payload).ok()?;
        let tag = b64.decode(tag).ok()?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &self.device_mac(&payload)[..],
            &tag[..],
        )) {
            return None;
        }
        let (account_id, rest) = payload.split_first_chunk::<16>()?;
        let (expiry, rest) = rest.split_first_chunk::<8>()?;
        let binding: [u8; 8] = rest.try_into().ok()?;
        if u64::from_be_bytes(*expiry) <= now {
            return None;
        }
        let key = sha2::Sha256::digest(token.as_bytes());
        let mut budget = [0u8; 16];
        budget.copy_from_slice(&key[..16]);
        Some(KnownDevice {
            account_id: *account_id,
            binding,
            budget,
        })
    }

    fn device_mac(&self, payload: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&*self.device_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// The token keys.
    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// How long refresh tokens live, in seconds.
    pub fn refresh_secs(&self) -> u64 {
        self.refresh_secs
    }

    /// Sets the longest a session lasts, however active (at least a minute).
    #[must_use]
    pub fn with_session_secs(mut self, secs: u64) -> Self {
        self.session_secs = secs.max(60);
        self
    }

    /// The longest a session lasts, in seconds.
    pub fn session_secs(&self) -> u64 {
        self.session_secs
    }

    /// Whether `password` matches `phc` (or, with `None`, takes as long as if it
    /// were checked, and is false). Runs on the password workers, bounded.
    pub async fn check_password(&self, phc: Option<&str>, password: &str) -> Result<bool, ApiError> {
        let phc = phc.unwrap_or(&self.dummy_phc).to_owned();
        let known = phc != self.dummy_phc;
        let password = zeroize::Zeroizing::new(password.to_owned());
        let ok = self.bounded(move || password::verify(&phc, &password)).await?;
        Ok(ok && known)
    }

    /// The PHC string of `password`, computed on the password workers, bounded.
    pub async fn hash_password(&self, password: &str) -> Result<String, ApiError> {
        let password = zeroize::Zeroizing::new(password.to_owned());
        let cost = self.cost;
        self.bounded(move || password::hash_with(cost, &password))
            .await?
            .map_err(|_| ApiError::Internal)
    }

    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.hash_rate.check().is_err() {
            return Err(ApiError::Busy);
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(self.queue_timeout, self.password_work.acquire()).await
        else {
            return Err(ApiError::Busy);
        };
        self.workers.run(work).await
    }
}

/// An authenticated person: a valid access token whose session is live and whose
/// account is enabled, with the account's role as it is now.
#[derive(Clone, Copy, Debug)]
pub struct Person {
    /// The account id.
    pub account_id: [u8; 16],
    /// The session.
    pub session: [u8; 16],
    /// The role now (not the one in the token).
    pub role: Role,
    /// What the token may do.
    pub scope: Scope,
}

impl Person {
    /// The account id as text (audit entries name it).
    pub fn id_text(&self) -> String {
        hex::encode(self.account_id)
    }
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized("a valid access token is required (Authorization: Bearer)".into())
}

/// The person a bearer token names, checked against the store.
pub(crate) async fn authenticate<S: SessionStore>(
    auth: &Auth,
    store: &S,
    bearer: Option<&str>,
) -> Result<Person, ApiError> {
    let token = bearer.ok_or_else(unauthorized)?;
    let claims = auth.jwt.verify(token).map_err(|_| unauthorized())?;
    let id = |text: &str| -> Result<[u8; 16], ApiError> {
        hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(unauthorized)
    };
    let (account_id, session) = (id(&claims.sub)?, id(&claims.sid)?);
    let principal = store
        .session_principal(&account_id, &session)
        .await?
        .filter(|p| p.live && p.ends_at.0 > crate::now_ms())
        .ok_or_else(unauthorized)?;
    // A role that needs a second factor, without one (promoted since the token was
    // issued): only the second-factor setup until one exists. A second factor the
    // identity provider vouched for at this session's sign-in counts.
    let needs_setup = matches!(principal.role, Role::Auditor | Role::Approver)
        && !principal.totp_enabled
        && !principal.idp_second_factor;
    Ok(Person {
        account_id,
        session,
        role: principal.role,
        scope: if needs_setup {
            Scope::MfaSetup
        } else {
            claims.scope
        },
    })
}

/// Rate limits on password checks: per address and per account name, so neither a
/// botnet spreading over accounts nor one address cycling through them gets far. A
/// refused attempt costs no Argon2 work.
pub struct LoginLimits {
    per_address: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    per_account: governor::DefaultKeyedRateLimiter<String>,
    /// Each known-device token's own budget (the per-account one, by token).
    per_device: governor::DefaultKeyedRateLimiter<[u8; 16]>,
    checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LoginLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimits").finish_non_exhaustive()
    }
}

impl LoginLimits {
    /// At most `per_address` attempts a minute from one address and `per_account` a
    /// minute for one account name, each allowed as a burst.
    pub fn new(per_address: u32, per_account: u32) -> Self {
        use governor::{Quota, RateLimiter};
        let quota = |n: u32| {
            Quota::per_minute(std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN))
        };
        Self {
            per_address: RateLimiter::hashmap(quota(per_address)),
            per_account: RateLimiter::hashmap(quota(per_account)),
            per_device: RateLimiter::hashmap(quota(per_account)),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts an attempt; 429 with the wait when either limit is reached.
    pub fn check(&self, address: std::net::IpAddr, username: &str) -> Result<(), ApiError> {
        self.check_address(address)?;
        self.check_account(username)
    }

    /// Counts an attempt against the account name's limit alone.
    pub fn check_account(&self, username: &str) -> Result<(), ApiError> {
        let name: String = username.to_lowercase().chars().take(128).collect();
        self.per_account.check_key(&name).map_err(too_many)
    }

    /// Counts an attempt against a known-device token's own limit.
    pub fn check_device(&self, device: &KnownDevice) -> Result<(), ApiError> {
        self.per_device.check_key(&device.budget).map_err(too_many)
    }

    /// Counts an attempt against the address's limit alone.
    pub fn check_address(&self, address: std::net::IpAddr) -> Result<(), ApiError> {
        let checks = self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks % 4096 == 4095 {
            // Forget keys that are back at full allowance, so random names cost no memory.
            self.per_address.retain_recent();
            self.per_account.retain_recent();
            self.per_device.retain_recent();
        }
        // One IPv6 host usually holds a whole /64: count the prefix, not the address.
        let address = match address {
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
            other => other,
        };
        self.per_address.check_key(&address).map_err(too_many)
    }
}

fn too_many(
    not_until: governor::NotUntil<<governor::clock::DefaultClock as governor::clock::Clock>::Instant>,
) -> ApiError {
    use governor::clock::{Clock as _, DefaultClock};
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::TooManyRequests(wait.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of this process's threads whose name starts with `prefix`.
    fn nice_of_threads(prefix: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(prefix) {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // Fields after the parenthesised name: state is field 3, nice field 19.
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                if let Some(nice) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
                    out.push(nice);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn password_work_runs_on_lowest_priority_threads() {
        let auth = Auth::ephemeral("test").expect("auth");
        let phc = password::hash("a password to check").expect("hash");
        assert!(
            auth.check_password(Some(&phc), "a password to check")
                .await
                .expect("check")
        );
        assert!(
            !auth
                .check_password(Some(&phc), "another one")
                .await
                .expect("check")
        );
        assert!(
            !auth
                .check_password(None, "a password to check")
                .await
                .expect("check")
        );
        let nice = nice_of_threads("vellum-passwor");
        assert_eq!(nice, vec![19, 19], "two workers at nice 19");
    }

    #[test]
    fn locks_grow_but_never_become_permanent() {
        assert_eq!(lock_duration(4), None);
        assert_eq!(lock_duration(5), Some(Duration::from_secs(30)));
        assert_eq!(lock_duration(6), Some(Duration::from_secs(60)));
        assert_eq!(lock_duration(9), Some(Duration::from_secs(480)));
        assert_eq!(lock_duration(10), Some(Duration::from_secs(900)));
        assert_eq!(lock_duration(u32::MAX), Some(Duration::from_secs(900)));
    }
}
