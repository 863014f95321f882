//! The keyring lifecycle over the router: an auditor publishes the next epoch with
//! wrapped copies, fetches their own copy and opens it, wraps an epoch for a newcomer;
//! removing an auditor makes a rotation due until the next epoch is published; every
//! bad publication or wrap is refused and stores nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use support::*;
use vellum_archive::ports::{AccountChange, AccountStore as _, Role};
use vellum_protocol::ids::{DeviceId, Epoch, RecordId, UnixMillis};
use vellum_protocol::seal::{self, Identity};

async fn current_epoch(f: &Fixture) -> String {
    let (_, _, note) = get(&f.app, "/v1/keyring").await;
    note.lines().nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn auditors_publish_epochs_wrap_them_for_newcomers_and_removal_makes_rotation_due() {
    let f = fixture().await;
    let escrow = Identity::generate();
    let (ann_identity, bo_identity) = (Identity::generate(), Identity::generate());
    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (_, bo) = person(&f, "bo", Role::Auditor, 2).await;
    let (_, cy) = person(&f, "cy", Role::Approver, 3).await;
    let (_, admin) = person(&f, "root", Role::Admin, 4).await;

    // Auditors say what to wrap to.
    for (token, identity) in [(&ann, &ann_identity), (&bo, &bo_identity)] {
        let body = json!({ "recipient": identity.to_public().to_string() });
        assert_eq!(
            call(&f, "POST", "/v1/keys/recipient", token, Some(body)).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (_, _, listed) = call(&f, "GET", "/v1/keys/recipients", &ann, None).await;
    assert!(listed.contains(&bo_identity.to_public().to_string()), "{listed}");
    assert_problem(
        &call(
            &f,
            "POST",
            "/v1/keys/recipient",
            &ann,
            Some(json!({ "recipient": "AGE-SECRET-KEY-1X" })),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    // An identity backup must be sealed to a passphrase alone; the gateway keeps it as is.
    let x25519_sealed = STANDARD.encode(seal::seal(&[ann_identity.to_public()], b"x").unwrap().as_bytes());
    let refused = json!({ "recipient": ann_identity.to_public().to_string(), "identity": x25519_sealed });
    assert_problem(
        &call(&f, "POST", "/v1/keys/recipient", &ann, Some(refused)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    // A work factor below age's default would make guessing from a database copy
    // cheap: refused, naming it.
    let sealed_with = |work: u8| {
        let mut passphrase = age::scrypt::Recipient::new("a key passphrase for the test".to_owned().into());
        passphrase.set_work_factor(work);
        age::encrypt(&passphrase, ann_identity.to_secret_string().as_bytes()).unwrap()
    };
    let weak = json!({ "recipient": ann_identity.to_public().to_string(), "identity": STANDARD.encode(sealed_with(10)) });
    let answer = call(&f, "POST", "/v1/keys/recipient", &ann, Some(weak)).await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.2.contains("2^10"), "{}", answer.2);
    let backup = sealed_with(18);
    let body =
        json!({ "recipient": ann_identity.to_public().to_string(), "identity": STANDARD.encode(&backup) });
    assert_eq!(
        call(&f, "POST", "/v1/keys/recipient", &ann, Some(body)).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _, stored) = call(&f, "GET", "/v1/keys/identity", &ann, None).await;
    assert_eq!(status, StatusCode::OK);
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        STANDARD.decode(stored["identity"].as_str().unwrap()).unwrap(),
        backup
    );
    assert_problem(
        &call(&f, "GET", "/v1/keys/identity", &bo, None).await,
        StatusCode::NOT_FOUND,
    );

    // Ann publishes epoch 2, wrapped to herself and to escrow.
    let epoch2 = Identity::generate();
    let note2 = statement(&f.org, 2, &epoch2, &escrow);
    let good = json!({ "note": note2, "wraps": [
        { "holder": "ann", "wrapped": wrap_to(&epoch2, &ann_identity.to_public()) },
        { "holder": "escrow", "wrapped": wrap_to(&epoch2, &escrow.to_public()) },
    ]});
    // First, every bad variant: each refused, nothing published.
    let foreign = vellum_protocol::keys::generate_note_signer("org.vellum.invalid").unwrap();
    let two_recipients = STANDARD.encode(
        seal::seal(&[ann_identity.to_public(), bo_identity.to_public()], b"k")
            .unwrap()
            .as_bytes(),
    );
    for (bad, status) in [
        (
            json!({ "note": statement(&foreign, 2, &epoch2, &escrow), "wraps": good["wraps"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "note": note2.replace("epoch 2", "epoch 3"), "wraps": good["wraps"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "note": statement(&f.org, 4, &epoch2, &escrow), "wraps": good["wraps"] }),
            StatusCode::CONFLICT,
        ),
        (
            json!({ "note": note2, "wraps": [good["wraps"][0]] }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "note": note2, "wraps": [good["wraps"][1], { "holder": "cy", "wrapped": good["wraps"][0]["wrapped"] }] }),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({ "note": note2, "wraps": [good["wraps"][1], { "holder": "ann", "wrapped": "bm90IGFuIGFnZSBmaWxl" }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "note": note2, "wraps": [good["wraps"][1], { "holder": "ann", "wrapped": two_recipients }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = call(&f, "POST", "/v1/keys/keyring", &ann, Some(bad.clone())).await;
        assert_problem(&answer, status);
        assert_eq!(current_epoch(&f).await, "epoch 1", "{bad}");
    }
    assert_problem(
        &call(&f, "POST", "/v1/keys/keyring", &cy, Some(good.clone())).await,
        StatusCode::FORBIDDEN,
    );
    let published = call(&f, "POST", "/v1/keys/keyring", &ann, Some(good.clone())).await;
    assert_eq!(published.0, StatusCode::CREATED, "{}", published.2);
    assert_eq!(current_epoch(&f).await, "epoch 2");
    // Published once: the same again is not the next epoch; an older one is a rollback.
    assert_problem(
        &call(&f, "POST", "/v1/keys/keyring", &ann, Some(good.clone())).await,
        StatusCode::CONFLICT,
    );

    // Ann fetches her copy and opens it; Bo has none yet.
    let (_, _, wraps) = call(&f, "GET", "/v1/keys/wraps", &ann, None).await;
    let wraps: Value = serde_json::from_str(&wraps).unwrap();
    assert_eq!(wraps[0]["epoch"], 2);
    let sealed =
        seal::SealedBody::from_bytes(STANDARD.decode(wraps[0]["wrapped"].as_str().unwrap()).unwrap())
            .unwrap();
    let opened = Identity::parse(
        std::str::from_utf8(&sealed.open(std::slice::from_ref(&ann_identity)).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(opened.to_public().to_string(), epoch2.to_public().to_string());
    assert_eq!(call(&f, "GET", "/v1/keys/wraps", &bo, None).await.2, "[]");

    // Ann wraps epoch 2 for Bo. Not for an approver; not twice; not an unpublished epoch.
    let for_bo = json!({ "holder": "bo", "wraps": [{ "epoch": 2, "wrapped": wrap_to(&opened, &bo_identity.to_public()) }] });
    assert_problem(
        &call(
            &f,
            "POST",
            "/v1/keys/wraps",
            &ann,
            Some(json!({ "holder": "cy", "wraps": for_bo["wraps"] })),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    assert_problem(
        &call(&f, "POST", "/v1/keys/wraps", &ann, Some(json!({ "holder": "bo", "wraps": [{ "epoch": 7, "wrapped": for_bo["wraps"][0]["wrapped"] }] }))).await,
        StatusCode::CONFLICT,
    );
    assert_eq!(
        call(&f, "POST", "/v1/keys/wraps", &ann, Some(for_bo.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_problem(
        &call(&f, "POST", "/v1/keys/wraps", &ann, Some(for_bo)).await,
        StatusCode::CONFLICT,
    );
    let (_, _, bo_wraps) = call(&f, "GET", "/v1/keys/wraps", &bo, None).await;
    assert!(bo_wraps.contains("\"epoch\":2"), "{bo_wraps}");

    // Ann leaves: her copy is no longer served to her (her token is dead), and a
    // rotation is due until the next epoch, which she does not hold.
    let (_, _, status) = call(&f, "GET", "/v1/keys/status", &admin, None).await;
    assert!(status.contains("\"rotation_required\":false"), "{status}");
    let store = f.gateway.archive().log_store();
    store
        .update_account(&[1; 16], AccountChange::Disabled(Some(UnixMillis(now_ms()))))
        .await
        .unwrap();
    assert_problem(
        &call(&f, "GET", "/v1/keys/wraps", &ann, None).await,
        StatusCode::UNAUTHORIZED,
    );
    let (_, _, status) = call(&f, "GET", "/v1/keys/status", &bo, None).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (
            status["rotation_required"].as_bool(),
            status["removed"][0].as_str()
        ),
        (Some(true), Some("ann"))
    );
    let epoch3 = Identity::generate();
    let rotate = json!({ "note": statement(&f.org, 3, &epoch3, &escrow), "wraps": [
        { "holder": "bo", "wrapped": wrap_to(&epoch3, &bo_identity.to_public()) },
        { "holder": "escrow", "wrapped": wrap_to(&epoch3, &escrow.to_public()) },
    ]});
    assert_problem(&call(&f, "POST", "/v1/keys/keyring", &bo, Some(json!({ "note": rotate["note"], "wraps": [rotate["wraps"][1], { "holder": "ann", "wrapped": rotate["wraps"][0]["wrapped"] }] }))).await, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&f, "POST", "/v1/keys/keyring", &bo, Some(rotate)).await.0,
        StatusCode::CREATED
    );
    let (_, _, status) = call(&f, "GET", "/v1/keys/status", &admin, None).await;
    assert!(
        status.contains("\"rotation_required\":false") && status.contains("\"epoch\":3"),
        "{status}"
    );

    // Captures are sealed to epoch 3 now; epoch-2 records are refused.
    let (device, credential) = enrolled_device(&f).await;
    let body = seal::seal(&[epoch3.to_public()], b"minutes").unwrap();
    for (epoch, expected) in [(2, StatusCode::CONFLICT), (3, StatusCode::OK)] {
        let header = signed_header_in(
            &device,
            DeviceId::parse(DEVICE).unwrap(),
            RecordId::new_v7(now_ms() + epoch),
            body.digest(),
            Epoch(epoch),
        );
        let answer = capture(&f, Some(&credential), frame(&header, body.as_bytes())).await;
        assert_eq!(answer.0, expected, "epoch {epoch}: {}", answer.2);
    }
    let trail = f.gateway.archive().audit_trail(0, 1000).await.unwrap();
    for action in ["keyring.publish", "keys.wrap", "keys.recipient"] {
        assert!(trail.iter().any(|(_, e)| e.action == action), "no {action}");
    }
}

/// What a gateway starts with: the configured keyring when the store has none or it
/// is the next epoch; a newer published one; never a contradiction or a gap.
#[tokio::test]
async fn a_gateway_starts_with_the_newest_keyring_and_refuses_contradictions() {
    use vellum_archive::ports::{KeyStore as _, PublishedKeyring};
    use vellum_gateway::starting_keyring;
    use vellum_protocol::keyring::verify;

    let f = fixture().await;
    let store = f.gateway.archive().log_store();
    let escrow = Identity::generate();
    let verified = |note: &str| verify(note.as_bytes(), &f.org_key, None, UnixMillis(now_ms())).unwrap();
    let configured = f.gateway.keyring().as_ref().clone();
    // An empty store: the configured keyring is published as the first.
    let started = starting_keyring(f.gateway.archive(), &f.org_key, configured.clone())
        .await
        .unwrap();
    assert_eq!(started, configured);
    assert_eq!(store.latest_keyring().await.unwrap().unwrap().epoch, 1);
    // The same again starts; another statement for epoch 1 does not.
    assert_eq!(
        starting_keyring(f.gateway.archive(), &f.org_key, configured.clone())
            .await
            .unwrap(),
        configured
    );
    let other = verified(&statement(&f.org, 1, &Identity::generate(), &escrow));
    assert!(
        starting_keyring(f.gateway.archive(), &f.org_key, other)
            .await
            .unwrap_err()
            .contains("another statement")
    );
    // The next epoch in the file is published; a later one published elsewhere wins.
    let two = verified(&statement(&f.org, 2, &Identity::generate(), &escrow));
    assert_eq!(
        starting_keyring(f.gateway.archive(), &f.org_key, two.clone())
            .await
            .unwrap(),
        two
    );
    let three = statement(&f.org, 3, &Identity::generate(), &escrow);
    store
        .publish_keyring(
            &PublishedKeyring {
                epoch: 3,
                note: three.clone(),
                published_at: UnixMillis(now_ms()),
                published_by: "elsewhere".into(),
            },
            &[],
        )
        .await
        .unwrap();
    let started = starting_keyring(f.gateway.archive(), &f.org_key, two)
        .await
        .unwrap();
    assert_eq!(started.statement().epoch, Epoch(3));
    // A running gateway serves the newest published one, as it reads it per request.
    assert_eq!(current_epoch(&f).await, "epoch 3");
    // The escrow recipient's name is no one's username.
    assert!(!vellum_archive::ports::valid_username("escrow"));
    // A gap is refused.
    let five = verified(&statement(&f.org, 5, &Identity::generate(), &escrow));
    assert!(
        starting_keyring(f.gateway.archive(), &f.org_key, five)
            .await
            .unwrap_err()
            .contains("one at a time")
    );
    // The two keyrings published from the file are in the log, publisher `config`.
    let trail = f.gateway.archive().audit_trail(0, 100).await.unwrap();
    let from_file: Vec<&str> = trail
        .iter()
        .filter(|(_, e)| e.action == "keyring.publish" && e.actor == "config")
        .map(|(_, e)| e.subject.as_str())
        .collect();
    assert_eq!(from_file, ["1", "2"]);
}
