//! Vellum's capture SDK: what runs on a device or connector.
//!
//! A [`Device`] lives in a folder of its own (see [`spool`](crate) for the layout).
//! [`Device::enroll`] spends an enrollment bundle; [`Device::capture`] verifies the
//! keyring against the pinned organisation key, seals a message document to the
//! keyring's recipients, signs its header and spools the frame durably;
//! [`Device::flush`] submits the spool and deletes a frame only once its receipt
//! verified against the pinned log key. A gateway that is down loses nothing: the
//! frames wait in the spool for the next flush.
//!
//! Nothing readable leaves the device: the gateway gets the sealed body and a header
//! of ids, times, digests and blind tokens.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod spool;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thiserror::Error;
use vellum_protocol::blind::IndexKey;
use vellum_protocol::bundle::Bundle;
use vellum_protocol::document::MessageDocument;
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keyring::{self, VerifiedKeyring};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::{Receipt, VerifiedReceipt};
use vellum_protocol::seal;
use vellum_tlog::note::NoteVerifier;
use zeroize::Zeroizing;

/// The media type of a capture frame.
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.vellum.record";

/// What went wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The device folder or a file in it.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The gateway could not be reached; spooled records wait for the next flush.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// The gateway answered with a problem.
    #[error("gateway refused ({status}): {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem's detail, or its title.
        detail: String,
    },
    /// The gateway served a keyring the pinned organisation key does not vouch for,
    /// or an older one than already accepted.
    #[error("keyring refused: {0}")]
    Keyring(#[from] keyring::KeyringError),
    /// A receipt did not verify against the pinned log key: the record stays spooled.
    #[error("receipt for {record} does not verify: {reason}")]
    BadReceipt {
        /// The record.
        record: RecordId,
        /// Why.
        reason: String,
    },
    /// Input that cannot be captured (a malformed message document, for instance).
    #[error("{0}")]
    Invalid(String),
    /// The device folder holds no enrolled device, or a damaged one.
    #[error("device state: {0}")]
    State(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `device.json`: what the device keeps between runs (mode 0600).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    gateway: String,
    org_key: String,
    log_key: String,
    index_key: String,
    device_id: String,
    device_seed: String,
    credential: String,
    /// A credential this device asked the gateway to switch to, not yet confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_credential: Option<String>,
    custodian: String,
    retention: String,
    /// The certificate authority (PEM) the gateway's TLS certificate is checked
    /// against, besides the system's, when the bundle or `--ca` gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_cert: Option<String>,
}

impl zeroize::Zeroize for State {
    fn zeroize(&mut self) {
        self.pending_credential.zeroize();
        self.index_key.zeroize();
        self.device_seed.zeroize();
        self.credential.zeroize();
    }
}

/// An enrolled capture device, opened from its folder.
pub struct Device {
    dir: PathBuf,
    gateway: String,
    org_key: NoteVerifier,
    log_key: NoteVerifier,
    index_key: IndexKey,
    device_id: DeviceId,
    key: DeviceKey,
    credential: Zeroizing<String>,
    pending_credential: Option<Zeroizing<String>>,
    custodian: Custodian,
    retention: RetentionClass,
    ca_cert: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("dir", &self.dir)
            .field("gateway", &self.gateway)
            .field("device_id", &self.device_id)
            .field("custodian", &self.custodian)
            .finish_non_exhaustive()
    }
}

/// The outcome of a flush.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Records acknowledged now, with their verified receipts.
    pub acknowledged: Vec<(RecordId, VerifiedReceipt)>,
    /// Records the gateway refused; they stay in the spool with the reason.
    pub refused: Vec<(RecordId, String)>,
    /// Records still waiting (the gateway became unreachable or failed).
    pub waiting: usize,
    /// Why the flush stopped early, if it did.
    pub stopped: Option<String>,
}

/// One record of the spool.
#[derive(Debug)]
pub struct Spooled {
    /// The record id.
    pub record: RecordId,
    /// The frame's size in bytes.
    pub bytes: u64,
    /// Why the gateway refused it, if it did.
    pub refused: Option<String>,
}

/// What `status` reports.
#[derive(Debug)]
pub struct Status {
    /// The device id.
    pub device_id: DeviceId,
    /// The custodian.
    pub custodian: Custodian,
    /// The gateway.
    pub gateway: String,
    /// The keyring epoch accepted last, if any.
    pub epoch: Option<u64>,
    /// Records in the spool, oldest first.
    pub spool: Vec<Spooled>,
    /// Receipts kept.
    pub receipts: usize,
}

/// The HTTP client for `gateway`: refused for plain `http://` anywhere but this
/// machine (the credential and the enrollment token would cross the network in the
/// clear), trusting `ca_cert` (PEM) besides the system's authorities.
fn http_client(gateway: &str, ca_cert: Option<&str>) -> Result<reqwest::Client, ClientError> {
    if !secure_or_loopback(gateway) {
        return Err(ClientError::Invalid(format!(
            "the gateway {gateway} is plain http:// on another machine: credentials would cross the network \
             in the clear; use its https:// URL (for a private certificate authority, give its certificate \
             with --ca FILE or in the bundle)"
        )));
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120));
    if let Some(pem) = ca_cert {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| ClientError::Invalid(format!("the gateway's certificate authority: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Invalid(
                "the gateway's certificate authority holds no certificate".into(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| ClientError::Unreachable(e.to_string()))
}

/// Whether `gateway` is `https://`, or `http://` to this machine (a loopback address
/// or `localhost`).
pub fn secure_or_loopback(gateway: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(gateway) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match url.scheme() {
        "https" => !host.is_empty(),
        "http" => {
            bare.eq_ignore_ascii_case("localhost")
                || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Reads a gateway answer: the body on success, a refusal with the problem's detail
/// otherwise.
async fn answer(response: reqwest::Response) -> Result<String, ClientError> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    if status.is_success() {
        return Ok(text);
    }
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|p| {
            p.get("detail")
                .or_else(|| p.get("title"))
                .and_then(|d| d.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| status.to_string());
    Err(ClientError::Refused {
        status: status.as_u16(),
        detail,
    })
}

fn unreachable(e: reqwest::Error) -> ClientError {
    ClientError::Unreachable(e.without_url().to_string())
}

fn now() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

impl Device {
    /// Enrolls a new device from `bundle` into `dir` (created, mode 0700; it must not
    /// hold a device yet): generates the device key, spends the bundle's token, and
    /// keeps the credential the gateway returns.
    pub async fn enroll(bundle: &Bundle, dir: &Path) -> Result<Self, ClientError> {
        let state_path = dir.join("device.json");
        if state_path.exists() {
            return Err(ClientError::State(format!(
                "{} holds an enrolled device already",
                dir.display()
            )));
        }
        if bundle.expires_at <= now() {
            return Err(ClientError::Invalid("the enrollment bundle has expired".into()));
        }
        let created = !dir.exists();
        spool::private_dir(dir).map_err(io_err(dir))?;
        let outcome = Self::register(bundle, &state_path).await;
        if outcome.is_err() && created {
            // Leave no empty device folder behind a refused enrollment.
            let _ = std::fs::remove_dir(dir);
        }
        outcome?;
        Self::open(dir)
    }

    /// Generates the device key, spends the token and writes the device state.
    async fn register(bundle: &Bundle, state_path: &Path) -> Result<(), ClientError> {
        let key = DeviceKey::generate();
        let device_id = DeviceId::from_bytes(*RecordId::new_v7(now().0).as_bytes())
            .map_err(|e| ClientError::State(e.to_string()))?;
        let http = http_client(&bundle.gateway, bundle.ca_cert.as_deref())?;
        let request = serde_json::json!({
            "token": bundle.token.as_str(),
            "device_id": device_id.to_string(),
            "public_key": URL_SAFE_NO_PAD.encode(key.public().as_bytes()),
        });
        let response = http
            .post(format!("{}/v1/devices", bundle.gateway))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let enrolled: serde_json::Value = serde_json::from_str(&answer(response).await?)
            .map_err(|e| ClientError::Invalid(format!("enrollment answer: {e}")))?;
        let credential = enrolled["credential"]
            .as_str()
            .ok_or_else(|| ClientError::Invalid("enrollment answer has no credential".into()))?;
        let state = Zeroizing::new(State {
            gateway: bundle.gateway.clone(),
            org_key: bundle.org_key.to_string(),
            log_key: bundle.log_key.to_string(),
            index_key: URL_SAFE_NO_PAD.encode(*bundle.index_key.to_bytes()),
            device_id: device_id.to_string(),
            device_seed: URL_SAFE_NO_PAD.encode(*key.seed()),
            credential: credential.to_owned(),
            pending_credential: None,
            custodian: bundle.custodian.as_str().to_owned(),
            retention: bundle.retention.as_str().to_owned(),
            ca_cert: bundle.ca_cert.clone(),
        });
        let json = Zeroizing::new(serde_json::to_vec_pretty(&*state).unwrap_or_default());
        spool::write_atomic(state_path, &json).map_err(io_err(state_path))
    }

    /// Opens the device enrolled in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let state_path = dir.join("device.json");
        let bytes = Zeroizing::new(std::fs::read(&state_path).map_err(io_err(&state_path))?);
        let state: Zeroizing<State> =
            Zeroizing::new(serde_json::from_slice(&bytes).map_err(|e| ClientError::State(e.to_string()))?);
        let bad = |what: &str| ClientError::State(format!("{}: bad {what}", state_path.display()));
        let key_bytes = |text: &str, what: &str| -> Result<Zeroizing<[u8; 32]>, ClientError> {
            let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(text).map_err(|_| bad(what))?);
            let array: [u8; 32] = raw.as_slice().try_into().map_err(|_| bad(what))?;
            Ok(Zeroizing::new(array))
        };
        for sub in [spool::spool_dir(dir), spool::receipts_dir(dir)] {
            spool::private_dir(&sub).map_err(io_err(&sub))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            gateway: state.gateway.clone(),
            org_key: NoteVerifier::from_vkey(&state.org_key).map_err(|_| bad("org_key"))?,
            log_key: NoteVerifier::from_vkey(&state.log_key).map_err(|_| bad("log_key"))?,
            index_key: IndexKey::from_bytes(*key_bytes(&state.index_key, "index_key")?),
            device_id: DeviceId::parse(&state.device_id).map_err(|_| bad("device_id"))?,
            key: DeviceKey::from_seed(&*key_bytes(&state.device_seed, "device_seed")?),
            credential: Zeroizing::new(state.credential.clone()),
            pending_credential: state.pending_credential.clone().map(Zeroizing::new),
            custodian: Custodian::new(&state.custodian).map_err(|_| bad("custodian"))?,
            retention: RetentionClass::new(&state.retention).map_err(|_| bad("retention"))?,
            http: http_client(&state.gateway, state.ca_cert.as_deref())?,
            ca_cert: state.ca_cert.clone(),
        })
    }

    /// Writes the device state (after a credential change).
    fn save(&self) -> Result<(), ClientError> {
        let state = Zeroizing::new(State {
            gateway: self.gateway.clone(),
            org_key: self.org_key.to_string(),
            log_key: self.log_key.to_string(),
            index_key: URL_SAFE_NO_PAD.encode(*self.index_key.to_bytes()),
            device_id: self.device_id.to_string(),
            device_seed: URL_SAFE_NO_PAD.encode(*self.key.seed()),
            credential: self.credential.to_string(),
            pending_credential: self.pending_credential.as_ref().map(|c| c.to_string()),
            custodian: self.custodian.as_str().to_owned(),
            retention: self.retention.as_str().to_owned(),
            ca_cert: self.ca_cert.clone(),
        });
        let json = Zeroizing::new(serde_json::to_vec_pretty(&*state).unwrap_or_default());
        let path = self.dir.join("device.json");
        spool::write_atomic(&path, &json).map_err(io_err(&path))
    }

    async fn post_rotation(&self, next: &str) -> Result<(), ClientError> {
        let hash = |text: &str| -> Result<[u8; 32], ClientError> {
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| ClientError::State("a credential is not base64url".into()))?,
            );
            Ok(sha2::Sha256::digest(&*bytes).into())
        };
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| ClientError::State(e.to_string()))?;
        // Signed with the device key: the bearer credential alone cannot rotate itself.
        let rotation = vellum_protocol::keys::Rotation {
            device_id: self.device_id,
            current: hash(&self.credential)?,
            next: hash(next)?,
            at: now(),
            nonce,
        };
        let signature = rotation.sign(&self.key);
        let body = serde_json::json!({
            "credential": next,
            "at": rotation.at.0,
            "nonce": URL_SAFE_NO_PAD.encode(nonce),
            "signature": URL_SAFE_NO_PAD.encode(signature),
        })
        .to_string();
        let response = self
            .http
            .post(format!("{}/v1/devices/credential", self.gateway))
            .bearer_auth(self.credential.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        answer(response).await.map(drop)
    }

    /// Settles a rotation an earlier run started but did not see answered: asking
    /// again succeeds if it never arrived; a refused current credential means it did.
    async fn settle_rotation(&mut self) -> Result<(), ClientError> {
        let Some(pending) = self.pending_credential.clone() else {
            return Ok(());
        };
        match self.post_rotation(&pending).await {
            Ok(()) | Err(ClientError::Refused { status: 401, .. }) => {
                self.credential = pending;
                self.pending_credential = None;
                self.save()
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the device credential with a fresh random one. The new one is saved as
    /// pending before the gateway is asked, so a lost answer cannot lock the device
    /// out: the next rotation or flush settles it.
    pub async fn rotate_credential(&mut self) -> Result<(), ClientError> {
        self.settle_rotation().await?;
        let mut next = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(next.as_mut()).map_err(|e| ClientError::State(e.to_string()))?;
        self.pending_credential = Some(Zeroizing::new(URL_SAFE_NO_PAD.encode(*next)));
        self.save()?;
        self.settle_rotation().await
    }

    /// The device id.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The folder this device lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn accepted_keyring(&self) -> Result<Option<VerifiedKeyring>, ClientError> {
        let path = self.dir.join("keyring.note");
        match std::fs::read(&path) {
            Ok(note) => {
                // Checked against the pinned key again, at its own validity start, so a
                // tampered file is caught; expiry is judged on the fresh statement.
                let held = keyring::KeyringStatement::parse_text(
                    vellum_tlog::note::open(&note, &self.org_key)
                        .map_err(|e| ClientError::State(format!("{}: {e}", path.display())))?
                        .text(),
                )?;
                Ok(Some(keyring::verify(
                    &note,
                    &self.org_key,
                    None,
                    held.valid_from,
                )?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Fetches the gateway's keyring and accepts it only if the pinned organisation
    /// key signed it, it is valid now, and it does not roll back or contradict the
    /// one accepted before. The accepted statement becomes the new floor.
    pub async fn refresh_keyring(&self) -> Result<VerifiedKeyring, ClientError> {
        let response = self
            .http
            .get(format!("{}/v1/keyring", self.gateway))
            .send()
            .await
            .map_err(unreachable)?;
        let note = answer(response).await?;
        let held = self.accepted_keyring()?;
        let verified = keyring::verify(note.as_bytes(), &self.org_key, held.as_ref(), now())?;
        if held.as_ref() != Some(&verified) {
            let path = self.dir.join("keyring.note");
            spool::write_atomic(&path, verified.note().as_bytes()).map_err(io_err(&path))?;
        }
        Ok(verified)
    }

    /// The keyring to seal to: the gateway's, checked as [`Self::refresh_keyring`]
    /// does; or, while the gateway is unreachable, the one accepted before if it is
    /// still valid, so capture goes on offline (likewise while it answers 5xx). The
    /// flag tells whether it is fresh.
    pub async fn keyring_for_capture(&self) -> Result<(VerifiedKeyring, bool), ClientError> {
        match self.refresh_keyring().await {
            Ok(keyring) => Ok((keyring, true)),
            Err(e @ (ClientError::Unreachable(_) | ClientError::Refused { status: 500.., .. })) => {
                let path = self.dir.join("keyring.note");
                let Ok(note) = std::fs::read(&path) else {
                    return Err(e);
                };
                Ok((keyring::verify(&note, &self.org_key, None, now())?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals `document` to the keyring's recipients, signs its header and spools the
    /// frame durably. Returns the record id. Nothing is sent yet: see [`Self::flush`].
    pub fn capture(
        &self,
        keyring: &VerifiedKeyring,
        document: &MessageDocument,
    ) -> Result<RecordId, ClientError> {
        let statement = keyring.statement();
        let captured_at = now();
        let tokens = document
            .blind_tokens(&self.index_key)
            .map_err(|e| ClientError::Invalid(format!("message document: {e}")))?;
        let channel = Channel::new(&document.channel)
            .map_err(|e| ClientError::Invalid(format!("message document: {e}")))?;
        let plaintext = document
            .to_json()
            .map_err(|e| ClientError::Invalid(format!("message document: {e}")))?;
        let body = seal::seal(&[statement.archive.clone(), statement.escrow.clone()], &plaintext)
            .map_err(|e| ClientError::Invalid(format!("sealing: {e}")))?;
        let record_id = RecordId::new_v7(captured_at.0);
        let header = HeaderFields {
            record_id,
            device_id: self.device_id,
            custodian: self.custodian.clone(),
            channel,
            captured_at,
            epoch: statement.epoch,
            retention: self.retention.clone(),
            body: body.digest(),
            tokens,
        }
        .sign(&self.key)
        .map_err(|e| ClientError::Invalid(format!("header: {e}")))?;
        let path = spool::frame_path(&self.dir, &record_id);
        spool::write_atomic(&path, &spool::frame(header.as_bytes(), body.as_bytes()))
            .map_err(io_err(&path))?;
        Ok(record_id)
    }

    /// Submits every spooled record that was not refused, oldest first. A record
    /// leaves the spool only when its receipt verified and was saved. Stops at the
    /// first failure that is not about one record (the gateway is unreachable, busy
    /// or failing, or this device's credential no longer works).
    pub async fn flush(&mut self) -> Result<Flushed, ClientError> {
        self.settle_rotation().await?;
        let spooled = spool::spooled(&self.dir).map_err(io_err(&spool::spool_dir(&self.dir)))?;
        let mut flushed = Flushed::default();
        for (i, record) in spooled.iter().enumerate() {
            if spool::refusal_path(&self.dir, record).exists() {
                continue;
            }
            match self.submit(record).await {
                Ok(receipt) => flushed.acknowledged.push((*record, receipt)),
                Err(ClientError::Refused { status, detail }) if per_record(status) => {
                    let note = format!("{status}: {detail}\n");
                    let path = spool::refusal_path(&self.dir, record);
                    spool::write_atomic(&path, note.as_bytes()).map_err(io_err(&path))?;
                    flushed.refused.push((*record, note.trim_end().to_owned()));
                }
                Err(e @ (ClientError::Io { .. } | ClientError::State(_))) => return Err(e),
                Err(e) => {
                    flushed.waiting = spooled[i..]
                        .iter()
                        .filter(|r| !spool::refusal_path(&self.dir, r).exists())
                        .count();
                    flushed.stopped = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(flushed)
    }

    async fn submit(&self, record: &RecordId) -> Result<VerifiedReceipt, ClientError> {
        let path = spool::frame_path(&self.dir, record);
        let frame = std::fs::read(&path).map_err(io_err(&path))?;
        let damaged = || ClientError::State(format!("{}: damaged frame", path.display()));
        let header = spool::frame_header(&frame).ok_or_else(damaged)?;
        let header = UnverifiedHeader::parse(header)
            .ok()
            .and_then(|h| h.verify(&self.key.public()).ok())
            .ok_or_else(damaged)?;
        let response = self
            .http
            .post(format!("{}/v1/records", self.gateway))
            .bearer_auth(self.credential.as_str())
            .header(reqwest::header::CONTENT_TYPE, RECORD_MEDIA_TYPE)
            .body(frame)
            .send()
            .await
            .map_err(unreachable)?;
        let text = answer(response).await?;
        let bad = |reason: String| ClientError::BadReceipt {
            record: *record,
            reason,
        };
        let receipt = Receipt::parse(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let verified = receipt
            .verify(&self.log_key, record, &header.digest())
            .map_err(|e| bad(e.to_string()))?;
        let receipt_path = spool::receipt_path(&self.dir, record);
        spool::write_atomic(&receipt_path, text.as_bytes()).map_err(io_err(&receipt_path))?;
        spool::remove(&path).map_err(io_err(&path))?;
        Ok(verified)
    }

    /// The device and its spool.
    pub fn status(&self) -> Result<Status, ClientError> {
        let spool_dir = spool::spool_dir(&self.dir);
        let mut spool = Vec::new();
        for record in spool::spooled(&self.dir).map_err(io_err(&spool_dir))? {
            let path = spool::frame_path(&self.dir, &record);
            let bytes = std::fs::metadata(&path).map_err(io_err(&path))?.len();
            let refused = std::fs::read_to_string(spool::refusal_path(&self.dir, &record))
                .ok()
                .map(|r| r.trim_end().to_owned());
            spool.push(Spooled {
                record,
                bytes,
                refused,
            });
        }
        let receipts_dir = spool::receipts_dir(&self.dir);
        let receipts = std::fs::read_dir(&receipts_dir)
            .map_err(io_err(&receipts_dir))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".proof"))
            })
            .count();
        Ok(Status {
            device_id: self.device_id,
            custodian: self.custodian.clone(),
            gateway: self.gateway.clone(),
            epoch: self.accepted_keyring()?.map(|k| k.statement().epoch.0),
            spool,
            receipts,
        })
    }
}

/// Whether a refusal is about the record itself (it would be refused again as is),
/// as opposed to the gateway's state or this device's standing.
fn per_record(status: u16) -> bool {
    matches!(status, 400 | 409 | 413 | 422)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://archive.agency.example",
            "https://10.0.0.5:8443",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(super::secure_or_loopback(ok), "{ok}");
        }
        for refused in [
            "http://archive.agency.example",
            "http://10.0.0.5:8080",
            "http://[2001:db8::1]",
            "http://localhost.agency.example",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            assert!(!super::secure_or_loopback(refused), "{refused}");
        }
    }
}
