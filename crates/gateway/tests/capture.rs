//! Enrollment and capture over the router and a real archive: a device enrolls once
//! with its token, captures with its credential and gets a receipt that verifies; every
//! bad request gets its own problem and stores nothing (invariant I9).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use support::*;
use vellum_archive::ports::{AuditStore as _, DeviceStore as _, LogStore as _};
use vellum_protocol::ids::{DeviceId, Epoch, RecordId, UnixMillis};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::Receipt;
use vellum_protocol::seal::BodyDigest;

#[tokio::test]
async fn a_token_enrolls_one_device_once_before_it_expires() {
    let f = fixture().await;
    let key = DeviceKey::generate();
    let token_text = token(&f, 1, 60_000).await;
    let (status, content_type, body) = enroll(&f, &token_text, DEVICE, &key).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::CREATED, "application/json")
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["device_id"], DEVICE);
    assert_eq!(answer["custodian"], "officer@agency.example");
    let credential = answer["credential"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(credential).unwrap().len(), 32);

    // Spent: refused even for another device id.
    let reused = enroll(&f, &token_text, DEMO_DEVICE, &DeviceKey::generate()).await;
    assert_problem(&reused, StatusCode::CONFLICT);
    assert!(reused.2.contains("used already"), "{}", reused.2);
    let expired = token(&f, 2, -1).await;
    assert_problem(&enroll(&f, &expired, DEVICE, &key).await, StatusCode::GONE);
    let unknown = URL_SAFE_NO_PAD.encode([3u8; 32]);
    assert_problem(
        &enroll(&f, &unknown, DEVICE, &key).await,
        StatusCode::UNAUTHORIZED,
    );
    let fresh = token(&f, 4, 60_000).await;
    assert_problem(
        &enroll(&f, &fresh, "not-a-uuid", &key).await,
        StatusCode::BAD_REQUEST,
    );
    assert_problem(&enroll(&f, &fresh, DEVICE, &key).await, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_capture_is_answered_with_a_receipt_that_verifies() {
    let f = fixture().await;
    let (key, credential) = enrolled_device(&f).await;
    let submission = submission_of(&key, DeviceId::parse(DEVICE).unwrap(), 1);
    let framed = frame(
        submission.header.as_bytes(),
        submission.body.sealed().unwrap().as_bytes(),
    );

    let (status, _, text) = capture(&f, Some(&credential), framed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let receipt = Receipt::parse(text.as_bytes()).unwrap();
    let id = submission.header.fields().record_id;
    let verified = receipt
        .verify(&f.log_key, &id, &submission.header.digest())
        .unwrap();
    // Leaf 0 is the device's enrollment.
    assert_eq!(verified.index, 1);
    let stored = f.gateway.archive().record(id).await.unwrap().unwrap();
    assert_eq!(f.gateway.archive().body(&stored).await.unwrap(), submission.body);

    // A retry gets the same receipt.
    let (status, _, again) = capture(&f, Some(&credential), framed).await;
    assert_eq!((status, again), (StatusCode::OK, text));
}

#[tokio::test]
async fn bad_captures_are_refused_and_change_nothing() {
    bad_captures_are_refused(vellum_gateway::DEFAULT_STREAM_OVER_BYTES).await;
}

/// The same refusals when every capture is streamed to the blob store.
#[tokio::test]
async fn bad_streamed_captures_are_refused_and_change_nothing() {
    bad_captures_are_refused(0).await;
}

async fn bad_captures_are_refused(stream_over_bytes: usize) {
    // Devices cached for 200 ms: a revocation made in the database, not through this
    // gateway, is seen once that has passed.
    let f = fixture_with(vellum_gateway::Limits {
        max_capture_bytes: 64 * 1024,
        stream_over_bytes,
        device_cache: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let (key, credential) = enrolled_device(&f).await;
    let device_id = DeviceId::parse(DEVICE).unwrap();
    let good = submission_of(&key, device_id, 1);
    let body = good.body.sealed().unwrap().as_bytes();
    let archived = frame(good.header.as_bytes(), body);
    assert_eq!(capture(&f, Some(&credential), archived).await.0, StatusCode::OK);

    let other_key = DeviceKey::generate();
    let record = |n: u64| RecordId::new_v7(1_800_000_000_000 + n);
    let plaintext = b"this is not an age file";
    let plain_digest = BodyDigest {
        sha256: Sha256::digest(plaintext).into(),
        len: plaintext.len() as u64,
    };
    let wrong_digest = BodyDigest {
        sha256: [7; 32],
        len: body.len() as u64,
    };
    let other_body = vellum_protocol::seal::seal(
        &[vellum_protocol::seal::Identity::generate().to_public()],
        b"other",
    )
    .unwrap();
    let rival = signed_header(
        &key,
        device_id,
        good.header.fields().record_id,
        other_body.digest(),
    );
    let cases: Vec<(&str, Option<&str>, Vec<u8>, StatusCode)> = vec![
        (
            "no credential",
            None,
            frame(good.header.as_bytes(), body),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown credential",
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            frame(good.header.as_bytes(), body),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "malformed header",
            Some(&credential),
            frame(b"VLH\x01garbage", body),
            StatusCode::BAD_REQUEST,
        ),
        (
            "truncated frame",
            Some(&credential),
            vec![0, 0],
            StatusCode::BAD_REQUEST,
        ),
        (
            "signed by another key",
            Some(&credential),
            frame(
                &signed_header(&other_key, device_id, record(1), good.body.digest()),
                body,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "another device's header",
            Some(&credential),
            frame(
                &signed_header(
                    &key,
                    DeviceId::parse(DEMO_DEVICE).unwrap(),
                    record(2),
                    good.body.digest(),
                ),
                body,
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "body digest mismatch",
            Some(&credential),
            frame(&signed_header(&key, device_id, record(3), wrong_digest), body),
            StatusCode::BAD_REQUEST,
        ),
        (
            "body length mismatch",
            Some(&credential),
            frame(
                &signed_header(
                    &key,
                    device_id,
                    record(6),
                    BodyDigest {
                        len: body.len() as u64 + 1,
                        ..good.body.digest()
                    },
                ),
                body,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "keyring epoch that is not current",
            Some(&credential),
            frame(
                &signed_header_in(&key, device_id, record(7), good.body.digest(), Epoch(2)),
                body,
            ),
            StatusCode::CONFLICT,
        ),
        (
            "body not an age file",
            Some(&credential),
            frame(
                &signed_header(&key, device_id, record(4), plain_digest),
                plaintext,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "record id replayed with other bytes",
            Some(&credential),
            frame(&rival, other_body.as_bytes()),
            StatusCode::CONFLICT,
        ),
        (
            "over the size limit",
            Some(&credential),
            frame(
                &signed_header(&key, device_id, record(5), good.body.digest()),
                &vec![0; 70_000],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, credential, framed, status) in cases {
        let answer = capture(&f, credential, framed).await;
        assert_eq!(answer.0, status, "{what}: {}", answer.2);
        assert_problem(&answer, status);
    }
    assert_eq!(
        f.gateway.archive().log_store().log_size().await.unwrap(),
        2,
        "a refused capture was stored (the leaves: the enrollment, the good capture)"
    );
    assert_eq!(unfinished_uploads(&f), 0);

    // A device captures only for the custodian it was enrolled for.
    let elsewhere = token_for(&f, 0x61, 60_000, "other@agency.example").await;
    let other_device = "0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a02";
    let (status, _, enrolled) = enroll(&f, &elsewhere, other_device, &other_key).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    let other_credential = serde_json::from_str::<serde_json::Value>(&enrolled).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign = submission_of(&other_key, DeviceId::parse(other_device).unwrap(), 7);
    let answer = capture(
        &f,
        Some(&other_credential),
        frame(
            foreign.header.as_bytes(),
            foreign.body.sealed().unwrap().as_bytes(),
        ),
    )
    .await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    assert!(answer.2.contains("custodian"), "{}", answer.2);

    // A device revoked in the database can no longer capture once the gateway's
    // device cache has expired.
    f.gateway
        .archive()
        .log_store()
        .revoke(&device_id, UnixMillis(1))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let late = submission_of(&key, device_id, 9);
    let answer = capture(
        &f,
        Some(&credential),
        frame(late.header.as_bytes(), late.body.sealed().unwrap().as_bytes()),
    )
    .await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    // The two enrollments and the one good capture: nothing refused was stored.
    assert_eq!(f.gateway.archive().log_store().log_size().await.unwrap(), 3);
}

#[tokio::test]
async fn a_device_revoked_by_an_administrator_is_refused_at_once() {
    // A device cache of a minute holds the device after its first capture; only the
    // revocation through the gateway dropping it can refuse the next capture.
    let f = fixture_with(vellum_gateway::Limits {
        device_cache: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let (key, credential) = enrolled_device(&f).await;
    let device_id = DeviceId::parse(DEVICE).unwrap();
    let first = submission_of(&key, device_id, 1);
    let answer = capture(
        &f,
        Some(&credential),
        frame(first.header.as_bytes(), first.body.sealed().unwrap().as_bytes()),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    let (_, admin) = person(&f, "admin", vellum_archive::ports::Role::Admin, 3).await;
    let path = format!("/v1/admin/devices/{DEVICE}/revoke");
    let revoked = call(&f, "POST", &path, &admin, None).await;
    assert_eq!(revoked.0, StatusCode::NO_CONTENT, "{}", revoked.2);
    let second = submission_of(&key, device_id, 2);
    let answer = capture(
        &f,
        Some(&credential),
        frame(second.header.as_bytes(), second.body.sealed().unwrap().as_bytes()),
    )
    .await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    assert_eq!(
        f.gateway.archive().log_store().log_size().await.unwrap(),
        3,
        "the enrollment, the capture and the revocation's audit leaf"
    );
}

#[tokio::test]
async fn a_device_rotates_its_credential_and_the_old_one_stops_working() {
    // With a device cache of a minute, the old credential stops working at once only
    // because the rotation drops it from the cache.
    let f = fixture_with(vellum_gateway::Limits {
        device_cache: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let (key, old) = enrolled_device(&f).await;
    let device_id = DeviceId::parse(DEVICE).unwrap();
    let hash = |text: &str| -> [u8; 32] {
        let bytes = URL_SAFE_NO_PAD.decode(text).unwrap_or_default();
        Sha256::digest(&bytes).into()
    };
    // A rotation signed by `signer` over `signed_current` (the credential presented,
    // unless told otherwise), at `at`.
    let signed = |signer: &DeviceKey, credential: &str, signed_current: &str, new: &str, at: u64| {
        let rotation = vellum_protocol::keys::Rotation {
            device_id,
            current: hash(signed_current),
            next: hash(new),
            at: UnixMillis(at),
            nonce: [0x42; 16],
        };
        let body = serde_json::json!({
            "credential": new,
            "at": at,
            "nonce": URL_SAFE_NO_PAD.encode([0x42u8; 16]),
            "signature": URL_SAFE_NO_PAD.encode(rotation.sign(signer)),
        });
        Request::post("/v1/devices/credential")
            .header(header::AUTHORIZATION, format!("Bearer {credential}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let rotate = |credential: &str, new: &str| signed(&key, credential, credential, new, now_ms());
    let new = URL_SAFE_NO_PAD.encode([0x77u8; 32]);
    let stranger = DeviceKey::generate();
    let bearer_only = Request::post("/v1/devices/credential")
        .header(header::AUTHORIZATION, format!("Bearer {old}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::json!({ "credential": new }).to_string()))
        .unwrap();
    for (what, request, status) in [
        ("not 32 bytes", rotate(&old, "AAAA"), StatusCode::BAD_REQUEST),
        ("the same credential", rotate(&old, &old), StatusCode::BAD_REQUEST),
        ("no credential", rotate("nope", &new), StatusCode::UNAUTHORIZED),
        (
            "the bearer credential alone",
            bearer_only,
            StatusCode::BAD_REQUEST,
        ),
        (
            "another key's signature",
            signed(&stranger, &old, &old, &new, now_ms()),
            StatusCode::FORBIDDEN,
        ),
        (
            "signed over another credential",
            signed(&key, &old, &new, &new, now_ms()),
            StatusCode::FORBIDDEN,
        ),
        (
            "an hour old",
            signed(&key, &old, &old, &new, now_ms() - 3_600_000),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer = send(&f.app, request).await;
        assert_eq!(answer.0, status, "{what}: {}", answer.2);
        assert_problem(&answer, status);
    }
    // Nothing of the refused attempts changed the credential.
    let (status, _, body) = send(&f.app, rotate(&old, &new)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Enrollment and rotation are leaves of the log.
    let trail = f
        .gateway
        .archive()
        .log_store()
        .audit_of(DEVICE, 0, 100)
        .await
        .unwrap();
    let actions: Vec<&str> = trail.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(actions, ["device.enroll", "device.credential"]);

    let record = submission_of(&key, device_id, 1);
    let framed = frame(record.header.as_bytes(), record.body.sealed().unwrap().as_bytes());
    assert_problem(
        &capture(&f, Some(&old), framed.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(capture(&f, Some(&new), framed).await.0, StatusCode::OK);
    // The old credential cannot rotate again either.
    let again = URL_SAFE_NO_PAD.encode([0x78u8; 32]);
    assert_problem(
        &send(&f.app, rotate(&old, &again)).await,
        StatusCode::UNAUTHORIZED,
    );
}

/// A device archives only under the retention class its enrollment bound it to: a
/// capture naming another class is refused and stores nothing. A device enrolled
/// before bindings existed, with nothing archived, is bound by its first capture.
#[tokio::test]
async fn a_device_archives_only_under_its_bound_retention_class() {
    // Bindings changed in the database are seen at the next capture (no device cache).
    let f = fixture_with(vellum_gateway::Limits {
        device_cache: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await;
    let (key, credential) = enrolled_device(&f).await;
    let device_id = DeviceId::parse(DEVICE).unwrap();
    let store = f.gateway.archive().log_store();
    let in_class = |n: u64, class: &str| {
        let body = vellum_protocol::seal::seal(
            &[vellum_protocol::seal::Identity::generate().to_public()],
            b"sealed on the device",
        )
        .unwrap();
        let fields = vellum_protocol::header::HeaderFields {
            record_id: RecordId::new_v7(1_764_150_000_000 + n),
            device_id,
            custodian: vellum_protocol::ids::Custodian::new("officer@agency.example").unwrap(),
            channel: vellum_protocol::ids::Channel::new("signal").unwrap(),
            captured_at: UnixMillis(1_764_150_000_000),
            epoch: Epoch(1),
            retention: vellum_protocol::ids::RetentionClass::new(class).unwrap(),
            body: body.digest(),
            tokens: Vec::new(),
        };
        frame(fields.sign(&key).unwrap().as_bytes(), body.as_bytes())
    };
    // The enrollment token named finra-6y (the fixture's bundle class).
    let size = store.log_size().await.unwrap();
    let answer = capture(&f, Some(&credential), in_class(1, "permanent")).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    assert!(answer.2.contains("finra-6y, not permanent"), "{}", answer.2);
    assert_eq!(
        store.log_size().await.unwrap(),
        size,
        "a refused capture was stored"
    );
    assert_eq!(
        capture(&f, Some(&credential), in_class(2, "finra-6y")).await.0,
        StatusCode::OK
    );

    // Rebound by an administrator: the new class is taken, the old one refused.
    let permanent = vellum_protocol::ids::RetentionClass::new("permanent").unwrap();
    assert!(
        store
            .bind_retention(&device_id, std::slice::from_ref(&permanent))
            .await
            .unwrap()
    );
    let answer = capture(&f, Some(&credential), in_class(3, "finra-6y")).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    assert_eq!(
        capture(&f, Some(&credential), in_class(4, "permanent")).await.0,
        StatusCode::OK
    );

    // A device with no binding (enrolled before bindings, nothing archived yet): its
    // first capture binds it, audited, and then holds it to that class.
    let db = rusqlite::Connection::open(f._dir.path().join("meta.db")).unwrap();
    db.execute("DELETE FROM device_retention", []).unwrap();
    drop(db);
    let other = DeviceKey::generate();
    let token = token_for(&f, 0x61, 60_000, "officer@agency.example").await;
    let second = "0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a09";
    let (status, _, body) = enroll(&f, &token, second, &other).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second_credential = serde_json::from_str::<serde_json::Value>(&body).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = rusqlite::Connection::open(f._dir.path().join("meta.db")).unwrap();
    db.execute("DELETE FROM device_retention", []).unwrap();
    drop(db);
    let second_id = DeviceId::parse(second).unwrap();
    let in_second = |n: u64, class: &str| {
        let body = vellum_protocol::seal::seal(
            &[vellum_protocol::seal::Identity::generate().to_public()],
            b"sealed on the device",
        )
        .unwrap();
        let mut fields = vellum_protocol::header::UnverifiedHeader::parse(&signed_header(
            &other,
            second_id,
            RecordId::new_v7(1_764_160_000_000 + n),
            body.digest(),
        ))
        .unwrap()
        .archived_fields()
        .clone();
        fields.retention = vellum_protocol::ids::RetentionClass::new(class).unwrap();
        frame(fields.sign(&other).unwrap().as_bytes(), body.as_bytes())
    };
    assert_eq!(
        capture(&f, Some(&second_credential), in_second(1, "permanent"))
            .await
            .0,
        StatusCode::OK
    );
    assert_problem(
        &capture(&f, Some(&second_credential), in_second(2, "finra-6y")).await,
        StatusCode::FORBIDDEN,
    );
    let trail = store.audit_of(second, 0, 100).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(actions, ["device.enroll", "device.retention"]);
    assert!(
        trail[1].1.detail.contains("first capture"),
        "{}",
        trail[1].1.detail
    );
}
