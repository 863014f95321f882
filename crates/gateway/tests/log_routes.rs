//! The gateway's log and health routes over a real archive (SQLite and a blob folder):
//! what they serve verifies with the log key alone, and bad requests get problems.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::sqlite::SqliteStore;
use vellum_archive::{Archive, Submission};
use vellum_gateway::{Gateway, router};
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::{DeviceKey, generate_note_signer};
use vellum_protocol::receipt::Receipt;
use vellum_protocol::seal::{self, Identity};
use vellum_tlog::checkpoint;
use vellum_tlog::note::NoteVerifier;
use vellum_tlog::proof::{ConsistencyProof, TlogProof};

struct Fixture {
    _dir: tempfile::TempDir,
    app: axum::Router,
    gateway: Arc<Gateway<SqliteStore, LocalBlobStore>>,
    log_key: NoteVerifier,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let log = SqliteStore::open(&url).await.unwrap();
    let blobs = LocalBlobStore::open(&dir.path().join("blobs")).unwrap();
    let signer = generate_note_signer("test.vellum.invalid").unwrap();
    let log_key = signer.verifier();
    let gateway = Arc::new(Gateway::new(Archive::open(log, blobs, signer).await.unwrap()));
    Fixture {
        _dir: dir,
        app: router(gateway.clone()),
        gateway,
        log_key,
    }
}

fn submission(device: &DeviceKey, n: u64) -> Submission {
    let recipient = Identity::generate().to_public();
    let body = seal::seal(&[recipient], b"sealed on the device").unwrap();
    let fields = HeaderFields {
        record_id: RecordId::new_v7(1_764_150_000_000 + n),
        device_id: DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap(),
        custodian: Custodian::new("officer@agency.example").unwrap(),
        channel: Channel::new("signal").unwrap(),
        captured_at: UnixMillis(1_764_150_000_000),
        epoch: Epoch(1),
        retention: RetentionClass::new("finra-6y").unwrap(),
        body: body.digest(),
        tokens: Vec::new(),
    };
    let signed = fields.sign(device).unwrap();
    let header = UnverifiedHeader::parse(signed.as_bytes())
        .unwrap()
        .verify(&device.public())
        .unwrap();
    Submission { header, body }
}

/// Status, content type and body of `GET uri`.
async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

fn assert_problem(answer: &(StatusCode, String, String), status: StatusCode) {
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

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture().await;
    assert_eq!(get(&f.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&f.app, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn served_checkpoints_and_proofs_verify_with_the_log_key_alone() {
    let f = fixture().await;
    assert_problem(&get(&f.app, "/v1/log/checkpoint").await, StatusCode::NOT_FOUND);

    let device = DeviceKey::generate();
    let first = submission(&device, 0);
    let receipt = f.gateway.archive().append(first.clone()).await.unwrap();
    let old = receipt
        .verify(
            &f.log_key,
            &first.header.fields().record_id,
            &first.header.digest(),
        )
        .unwrap()
        .checkpoint;
    for n in 1..5 {
        f.gateway.archive().append(submission(&device, n)).await.unwrap();
    }

    let (status, content_type, note) = get(&f.app, "/v1/log/checkpoint").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    let newest = checkpoint::open(note.as_bytes(), &f.log_key).unwrap();
    assert_eq!(newest.size(), 5);

    // The first record's inclusion in the newest tree: a receipt as fresh as the log.
    let (status, _, text) = get(&f.app, "/v1/log/proof/inclusion?index=0").await;
    assert_eq!(status, StatusCode::OK);
    let fresh = Receipt::parse(text.as_bytes()).unwrap();
    let verified = fresh
        .verify(
            &f.log_key,
            &first.header.fields().record_id,
            &first.header.digest(),
        )
        .unwrap();
    assert_eq!((verified.index, verified.checkpoint.size()), (0, 5));

    // Against the checkpoint the receipt carried, by size.
    let uri = format!("/v1/log/proof/inclusion?index=0&size={}", old.size());
    let (status, _, text) = get(&f.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        TlogProof::parse(text.as_bytes()).unwrap().checkpoint,
        TlogProof::parse(receipt.to_text().as_bytes()).unwrap().checkpoint
    );

    let uri = format!("/v1/log/proof/consistency?old={}&new=5", old.size());
    let (status, _, text) = get(&f.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    ConsistencyProof::parse(text.as_bytes())
        .unwrap()
        .verify(&old, &newest)
        .unwrap();
}

#[tokio::test]
async fn bad_log_requests_get_problems() {
    let f = fixture().await;
    let device = DeviceKey::generate();
    for n in 0..3 {
        f.gateway.archive().append(submission(&device, n)).await.unwrap();
    }
    for (uri, status) in [
        ("/v1/log/proof/inclusion?index=3", StatusCode::BAD_REQUEST),
        ("/v1/log/proof/inclusion?index=x", StatusCode::BAD_REQUEST),
        ("/v1/log/proof/inclusion", StatusCode::BAD_REQUEST),
        ("/v1/log/proof/inclusion?index=0&size=7", StatusCode::NOT_FOUND),
        ("/v1/log/proof/consistency?old=0&new=3", StatusCode::BAD_REQUEST),
        ("/v1/log/proof/consistency?old=3&new=2", StatusCode::BAD_REQUEST),
        ("/v1/log/proof/consistency?old=1&new=4", StatusCode::BAD_REQUEST),
        ("/heapdump", StatusCode::NOT_FOUND),
        ("/actuator/env", StatusCode::NOT_FOUND),
    ] {
        assert_problem(&get(&f.app, uri).await, status);
    }
}
