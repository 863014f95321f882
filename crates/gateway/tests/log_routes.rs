//! The gateway's read routes over a real archive (SQLite and a blob folder): log,
//! keyring and health. What they serve verifies with the log or organisation key
//! alone, and bad requests get problems.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::http::StatusCode;
use support::*;
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::Receipt;
use vellum_tlog::checkpoint;
use vellum_tlog::proof::{ConsistencyProof, TlogProof};

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture().await;
    assert_eq!(get(&f.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&f.app, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_keyring_served_is_the_one_the_organisation_signed() {
    let f = fixture().await;
    let (status, content_type, note) = get(&f.app, "/v1/keyring").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(note, f.gateway.keyring().note());
    let now = f.gateway.keyring().statement().valid_from;
    let verified = vellum_protocol::keyring::verify(note.as_bytes(), &f.org_key, None, now).unwrap();
    assert_eq!(verified.statement().epoch.0, 1);
    // The log key did not sign it, so a client pinning that key instead refuses it.
    assert!(vellum_protocol::keyring::verify(note.as_bytes(), &f.log_key, None, now).is_err());
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
        // Beyond the largest position the stores index: refused as such.
        (
            "/v1/log/proof/inclusion?index=0&size=18446744073709551615",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/records", StatusCode::METHOD_NOT_ALLOWED),
        ("/heapdump", StatusCode::NOT_FOUND),
        ("/actuator/env", StatusCode::NOT_FOUND),
    ] {
        assert_problem(&get(&f.app, uri).await, status);
    }
}
