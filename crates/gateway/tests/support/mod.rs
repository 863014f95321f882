//! Test support: a gateway over a real archive (SQLite and a blob folder), requests
//! through the router, and signed submissions.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::ports::{
    AccountStore as _, DeviceStore as _, NewAccount, NewSession, Role, SecretHash, SessionStore as _,
};
use vellum_archive::sqlite::SqliteStore;
use vellum_archive::{Archive, Submission};
use vellum_gateway::RECORD_MEDIA_TYPE;
use vellum_gateway::auth::jwt::Scope;
use vellum_gateway::auth::password;
use vellum_gateway::{Gateway, router};
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keyring::{KeyringStatement, VerifiedKeyring};
use vellum_protocol::keys::{DeviceKey, generate_note_signer};
use vellum_protocol::seal::{self, BodyDigest, Identity, Recipient};
use vellum_tlog::note::{NoteSigner, NoteVerifier};

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub app: axum::Router,
    pub gateway: Arc<Gateway<SqliteStore, LocalBlobStore>>,
    pub log_key: NoteVerifier,
    pub org_key: NoteVerifier,
    /// The organisation key that signed the fixture's keyring.
    pub org: NoteSigner,
}

/// An organisation key and the epoch-1 keyring statement it signed, valid for a day
/// around now.
pub fn keyring() -> (NoteSigner, VerifiedKeyring) {
    let org = generate_note_signer("org.vellum.invalid").unwrap();
    let now = UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let statement = KeyringStatement {
        epoch: Epoch(1),
        archive: Identity::generate().to_public(),
        escrow: Identity::generate().to_public(),
        valid_from: UnixMillis(now.0 - 3_600_000),
        valid_until: UnixMillis(now.0 + 86_400_000),
    };
    let note = statement.sign(&org).unwrap();
    let verified = vellum_protocol::keyring::verify(note.as_bytes(), &org.verifier(), None, now).unwrap();
    (org, verified)
}

pub async fn fixture() -> Fixture {
    fixture_limited(vellum_gateway::DEFAULT_MAX_CAPTURE_BYTES).await
}

/// A fixture whose gateway takes captures of at most `limit` bytes.
pub async fn fixture_limited(limit: usize) -> Fixture {
    fixture_with(vellum_gateway::Limits {
        max_capture_bytes: limit,
        ..Default::default()
    })
    .await
}

/// A fixture whose gateway holds requests to `limits`.
pub async fn fixture_with(limits: vellum_gateway::Limits) -> Fixture {
    fixture_built(limits, |g| g).await
}

/// A fixture whose gateway `customize` finishes.
pub async fn fixture_built(
    limits: vellum_gateway::Limits,
    customize: impl FnOnce(Gateway<SqliteStore, LocalBlobStore>) -> Gateway<SqliteStore, LocalBlobStore>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let log = SqliteStore::open(&url).await.unwrap();
    let blobs = LocalBlobStore::open(&dir.path().join("blobs")).unwrap();
    let signer = generate_note_signer("test.vellum.invalid").unwrap();
    let log_key = signer.verifier();
    let (org, keyring) = keyring();
    let gateway = Arc::new(customize(
        Gateway::new(
            Archive::open(log, blobs, signer).await.unwrap(),
            keyring,
            // Tests sign in far faster than the production default allows.
            vellum_gateway::auth::Auth::ephemeral("test")
                .unwrap()
                .with_hashes_per_second(100_000),
        )
        .with_limits(limits)
        // …and more often than the per-address and per-account limits allow.
        .with_login_limits(1000, 1000)
        .with_org_key(org.verifier()),
    ));
    Fixture {
        _dir: dir,
        app: router(gateway.clone()),
        gateway,
        log_key,
        org_key: org.verifier(),
        org,
    }
}

pub const DEMO_DEVICE: &str = "0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00";

/// A record of device `device_id`, sealed and signed.
pub fn submission_of(device: &DeviceKey, device_id: DeviceId, n: u64) -> Submission {
    let recipient = Identity::generate().to_public();
    let body = seal::seal(&[recipient], b"sealed on the device").unwrap();
    let header = signed_header(
        device,
        device_id,
        RecordId::new_v7(1_764_150_000_000 + n),
        body.digest(),
    );
    let header = UnverifiedHeader::parse(&header)
        .unwrap()
        .verify(&device.public())
        .unwrap();
    Submission {
        header,
        body: body.into(),
    }
}

/// A record of the demo device.
pub fn submission(device: &DeviceKey, n: u64) -> Submission {
    submission_of(device, DeviceId::parse(DEMO_DEVICE).unwrap(), n)
}

/// Header bytes for a body with digest `body`, signed by `device`.
pub fn signed_header(
    device: &DeviceKey,
    device_id: DeviceId,
    record_id: RecordId,
    body: BodyDigest,
) -> Vec<u8> {
    signed_header_in(device, device_id, record_id, body, Epoch(1))
}

/// Header bytes as [`signed_header`], claiming keyring epoch `epoch`.
pub fn signed_header_in(
    device: &DeviceKey,
    device_id: DeviceId,
    record_id: RecordId,
    body: BodyDigest,
    epoch: Epoch,
) -> Vec<u8> {
    let fields = HeaderFields {
        record_id,
        device_id,
        custodian: Custodian::new("officer@agency.example").unwrap(),
        channel: Channel::new("signal").unwrap(),
        captured_at: UnixMillis(1_764_150_000_000),
        epoch,
        retention: RetentionClass::new("finra-6y").unwrap(),
        body,
        tokens: Vec::new(),
    };
    fields.sign(device).unwrap().as_bytes().to_vec()
}

/// A capture frame: header length, header, body.
pub fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Status, content type and body of the answer to `request`.
pub async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let (status, content_type, body) = send_bytes(app, request).await;
    (status, content_type, String::from_utf8(body).unwrap())
}

/// [`send`], with the body as bytes.
pub async fn send_bytes(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body.to_vec())
}

/// Status, content type and body of `GET uri`.
pub async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub fn assert_problem(answer: &(StatusCode, String, String), status: StatusCode) {
    assert_eq!(answer.0, status, "{}", answer.2);
    assert_eq!(answer.1, "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&answer.2).unwrap();
    assert_eq!(problem["status"], status.as_u16());
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:vellum:problem:")
    );
}

pub const DEVICE: &str = "0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a01";

/// Issues an enrollment token valid for `ttl_ms` from now; returns its text.
pub async fn token(f: &Fixture, seed: u8, ttl_ms: i64) -> String {
    token_for(f, seed, ttl_ms, "officer@agency.example").await
}

/// [`token`], for a device of `custodian`.
pub async fn token_for(f: &Fixture, seed: u8, ttl_ms: i64, custodian: &str) -> String {
    let secret = [seed; 32];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let custodian = Custodian::new(custodian).unwrap();
    f.gateway
        .archive()
        .log_store()
        .add_enrollment(
            &SecretHash(Sha256::digest(secret).into()),
            &custodian,
            &RetentionClass::new("finra-6y").unwrap(),
            UnixMillis((now + ttl_ms) as u64),
        )
        .await
        .unwrap();
    URL_SAFE_NO_PAD.encode(secret)
}

pub async fn enroll(
    f: &Fixture,
    token: &str,
    device_id: &str,
    key: &DeviceKey,
) -> (StatusCode, String, String) {
    let body = serde_json::json!({
        "token": token,
        "device_id": device_id,
        "public_key": URL_SAFE_NO_PAD.encode(key.public().as_bytes()),
    });
    let request = Request::post("/v1/devices")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&f.app, request).await
}

pub async fn capture(f: &Fixture, credential: Option<&str>, frame: Vec<u8>) -> (StatusCode, String, String) {
    let mut request = Request::post("/v1/records")
        .header(header::CONTENT_TYPE, RECORD_MEDIA_TYPE)
        .header(header::CONTENT_LENGTH, frame.len());
    if let Some(credential) = credential {
        request = request.header(header::AUTHORIZATION, format!("Bearer {credential}"));
    }
    send(&f.app, request.body(Body::from(frame)).unwrap()).await
}

/// Files in the blob folder's `incoming/`: uploads begun and not committed.
pub fn unfinished_uploads(f: &Fixture) -> usize {
    std::fs::read_dir(f._dir.path().join("blobs/incoming"))
        .unwrap()
        .count()
}

/// Large blobs in the blob folder (`large/`).
pub fn large_blobs(f: &Fixture) -> usize {
    std::fs::read_dir(f._dir.path().join("blobs/large"))
        .unwrap()
        .count()
}

/// An enrolled device: its key and credential.
pub async fn enrolled_device(f: &Fixture) -> (DeviceKey, String) {
    let key = DeviceKey::generate();
    let token = token(f, 0x51, 60_000).await;
    let (status, _, body) = enroll(f, &token, DEVICE, &key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    (key, answer["credential"].as_str().unwrap().to_owned())
}

// People and keys.

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A full session (as a person with a second factor) for the account `id` of `role`,
/// and its access token.
pub async fn full_session(
    f: &Fixture,
    id: [u8; 16],
    role: Role,
    session: [u8; 16],
    refresh: SecretHash,
) -> String {
    f.gateway
        .archive()
        .log_store()
        .start_session(&NewSession {
            family_id: session,
            account_id: id,
            refresh: &refresh,
            now: UnixMillis(now_ms()),
            expires_at: UnixMillis(now_ms() + 600_000),
            ends_at: UnixMillis(now_ms() + 600_000),
            // Stands for a second factor, which auditors and approvers need (the
            // limited setup session has tests of its own).
            idp_second_factor: true,
        })
        .await
        .unwrap();
    f.gateway
        .auth()
        .jwt()
        .issue(&id, &session, role, Scope::Full, now_ms() / 1000)
        .unwrap()
}

/// An account of `role` and a full access token for it.
pub async fn person(f: &Fixture, username: &str, role: Role, n: u8) -> ([u8; 16], String) {
    let id = [n; 16];
    let account = NewAccount {
        account_id: id,
        username: username.into(),
        role,
        password_phc: password::unusable().unwrap(),
        must_change_password: false,
        external_id: None,
    };
    let store = f.gateway.archive().log_store();
    store
        .create_account(&account, UnixMillis(now_ms()))
        .await
        .unwrap();
    let token = full_session(f, id, role, [n ^ 0xff; 16], SecretHash([n; 32])).await;
    (id, token)
}

pub async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, String, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(b) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    send(&f.app, request.body(body).unwrap()).await
}

pub fn wrap_to(identity: &Identity, to: &Recipient) -> String {
    let sealed = seal::seal(std::slice::from_ref(to), identity.to_secret_string().as_bytes()).unwrap();
    STANDARD.encode(sealed.as_bytes())
}

/// A keyring statement for `epoch`, signed by `org`.
pub fn statement(
    org: &vellum_tlog::note::NoteSigner,
    epoch: u64,
    archive: &Identity,
    escrow: &Identity,
) -> String {
    KeyringStatement {
        epoch: Epoch(epoch),
        archive: archive.to_public(),
        escrow: escrow.to_public(),
        valid_from: UnixMillis(now_ms() - 60_000),
        valid_until: UnixMillis(now_ms() + 86_400_000),
    }
    .sign(org)
    .unwrap()
}
