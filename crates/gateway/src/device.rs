//! Device credentials: 256-bit random bearer secrets, sent as
//! `Authorization: Bearer <base64url>`, stored only as their SHA-256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use vellum_archive::StoreError;
use vellum_archive::ports::{BlobStore, Device, DeviceStore, LogStore, SecretHash};
use vellum_protocol::ids::DeviceId;

use crate::Gateway;
use crate::problem::ApiError;

/// A new random bearer secret: its text (given out once) and its hash (stored).
pub(crate) fn new_secret() -> Result<(String, SecretHash), ApiError> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|_| ApiError::Internal)?;
    let hash = SecretHash(Sha256::digest(secret).into());
    Ok((URL_SAFE_NO_PAD.encode(secret), hash))
}

/// The hash of a secret presented as text; `None` unless it is 32 bytes of base64url.
pub(crate) fn hash_secret(text: &str) -> Option<SecretHash> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    (bytes.len() == 32).then(|| SecretHash(Sha256::digest(&bytes).into()))
}

/// A device that presented a valid credential and was not revoked when it did.
#[derive(Debug)]
pub(crate) struct EnrolledDevice {
    pub(crate) device: Device,
    /// The hash of the credential it presented, to check it again later.
    pub(crate) credential: SecretHash,
}

impl<L, B> FromRequestParts<Arc<Gateway<L, B>>> for EnrolledDevice
where
    L: LogStore + DeviceStore,
    B: BlobStore,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Gateway<L, B>>) -> Result<Self, ApiError> {
        let unauthorized =
            || ApiError::Unauthorized("a device credential is required (Authorization: Bearer)".into());
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(hash_secret)
            .ok_or_else(unauthorized)?;
        let device = state.device(&credential).await?.ok_or_else(unauthorized)?;
        if device.revoked_at.is_some() {
            return Err(ApiError::Forbidden("this device was revoked".into()));
        }
        Ok(EnrolledDevice { device, credential })
    }
}

/// A 32-byte key sent as base64url.
pub(crate) fn decode_key(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// The most devices [`DeviceCache`] holds; past it, expired entries are dropped, and
/// if that is not enough, all of them.
const MAX_CACHED_DEVICES: usize = 100_000;

/// Devices that presented their credential a moment ago, by credential hash, so a
/// capture need not wait on the database to learn again what it just learned. An
/// entry is trusted for the gateway's `device_cache` limit (zero: never cached).
/// Revoking a device or rotating its credential through this gateway drops its
/// entries at once; a change made elsewhere (another gateway, `vellum admin` on the
/// database) takes effect here within that limit. Unknown credentials are never
/// cached, so a guess always costs a lookup and learns nothing new.
#[derive(Debug, Default)]
pub(crate) struct DeviceCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_credential: HashMap<SecretHash, (Device, Instant)>,
    /// Moves on at every [`DeviceCache::forget`]: a lookup that began before a forget
    /// may have read the row as it was, and must not put it back.
    generation: u64,
}

impl DeviceCache {
    /// The device holding `credential`, from the cache when its entry is younger
    /// than `ttl`, else from `store`.
    pub(crate) async fn lookup<L: DeviceStore>(
        &self,
        store: &L,
        credential: &SecretHash,
        ttl: Duration,
    ) -> Result<Option<Device>, StoreError> {
        if ttl.is_zero() {
            return store.device_by_credential(credential).await;
        }
        let now = Instant::now();
        let generation = {
            let Ok(entries) = self.entries.lock() else {
                return store.device_by_credential(credential).await;
            };
            if let Some((device, at)) = entries.by_credential.get(credential)
                && now.duration_since(*at) < ttl
            {
                return Ok(Some(device.clone()));
            }
            entries.generation
        };
        let found = store.device_by_credential(credential).await?;
        if let (Some(device), Ok(mut entries)) = (&found, self.entries.lock())
            && entries.generation == generation
        {
            let cached = &mut entries.by_credential;
            if cached.len() >= MAX_CACHED_DEVICES {
                cached.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                if cached.len() >= MAX_CACHED_DEVICES {
                    cached.clear();
                }
            }
            cached.insert(*credential, (device.clone(), now));
        }
        Ok(found)
    }

    /// Drops every entry of `device` (revoked, or its credential rotated), and keeps
    /// lookups already under way from caching what they read before the change.
    pub(crate) fn forget(&self, device: &DeviceId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.generation += 1;
            entries
                .by_credential
                .retain(|_, (cached, _)| cached.device_id != *device);
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed unwrap is a failed test"
)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;
    use vellum_archive::error::EnrollError;
    use vellum_archive::ports::NewDevice;
    use vellum_protocol::ids::{Custodian, RetentionClass, UnixMillis};
    use vellum_protocol::keys::DeviceKey;

    use super::*;

    /// A store holding one device whose first lookup waits for `release`.
    struct SlowStore {
        device: Device,
        lookups: AtomicUsize,
        started: Notify,
        release: Notify,
    }

    impl DeviceStore for SlowStore {
        async fn add_enrollment(
            &self,
            _: &SecretHash,
            _: &Custodian,
            _: &RetentionClass,
            _: UnixMillis,
        ) -> Result<(), StoreError> {
            panic!("not used")
        }
        async fn enroll(&self, _: &SecretHash, _: &NewDevice, _: UnixMillis) -> Result<Device, EnrollError> {
            panic!("not used")
        }
        async fn device_by_credential(&self, _: &SecretHash) -> Result<Option<Device>, StoreError> {
            if self.lookups.fetch_add(1, Ordering::SeqCst) == 0 {
                self.started.notify_one();
                self.release.notified().await;
            }
            Ok(Some(self.device.clone()))
        }
        async fn unaudited_bindings(&self) -> Result<Vec<(DeviceId, Vec<RetentionClass>)>, StoreError> {
            panic!("not used")
        }
        async fn binding_audited(&self, _: &DeviceId) -> Result<(), StoreError> {
            panic!("not used")
        }
        async fn rotate_credential(
            &self,
            _: &DeviceId,
            _: &SecretHash,
            _: &SecretHash,
        ) -> Result<bool, StoreError> {
            panic!("not used")
        }
        async fn revoke(&self, _: &DeviceId, _: UnixMillis) -> Result<bool, StoreError> {
            panic!("not used")
        }
        async fn bind_retention(&self, _: &DeviceId, _: &[RetentionClass]) -> Result<bool, StoreError> {
            panic!("not used")
        }
    }

    #[tokio::test]
    async fn a_lookup_under_way_when_a_device_is_forgotten_caches_nothing() {
        let store = Arc::new(SlowStore {
            device: Device {
                device_id: DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap(),
                public_key: DeviceKey::generate().public(),
                custodian: Custodian::new("someone@agency.example").unwrap(),
                enrolled_at: UnixMillis(1),
                revoked_at: None,
                retention: vec![RetentionClass::new("finra-6y").unwrap()],
            },
            lookups: AtomicUsize::new(0),
            started: Notify::new(),
            release: Notify::new(),
        });
        let cache = Arc::new(DeviceCache::default());
        let credential = SecretHash([7; 32]);
        let ttl = Duration::from_secs(60);
        // The first lookup reads the row, then the device is forgotten (revoked,
        // say) before the read returns: what it read must not be cached.
        let first = tokio::spawn({
            let (store, cache) = (store.clone(), cache.clone());
            async move { cache.lookup(store.as_ref(), &credential, ttl).await }
        });
        store.started.notified().await;
        cache.forget(&store.device.device_id);
        store.release.notify_one();
        assert!(first.await.unwrap().unwrap().is_some());
        // So the next lookup asks the store again; that one is cached.
        cache.lookup(store.as_ref(), &credential, ttl).await.unwrap();
        cache.lookup(store.as_ref(), &credential, ttl).await.unwrap();
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    }
}
