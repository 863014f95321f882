//! The keyring lifecycle end to end, over the router and a real archive: capture under
//! one epoch; add a second auditor, who reads that epoch's records; remove the first
//! auditor and rotate; capture under the next epoch; lose every auditor identity;
//! rebuild the escrow identity from M of N custodians' shares and read the records of
//! both epochs; the records officer records the recovery, which the log then holds.
//! No step gives the gateway anything it could open.

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
use sha2::{Digest as _, Sha256};
use support::*;
use vellum_archive::ports::{AccountChange, AccountStore as _, Role};
use vellum_key_escrow::{Escrow, read_share, recover_escrow, rewrap, seal_share};
use vellum_protocol::ids::{DeviceId, Epoch, RecordId, UnixMillis};
use vellum_protocol::receipt::LogEntry;
use vellum_protocol::seal::{self, Identity, SealedBody};

/// Captures `text` sealed to `epoch`'s recipient; returns its record id.
async fn capture_under(
    f: &Fixture,
    device: &vellum_protocol::keys::DeviceKey,
    credential: &str,
    epoch: (u64, &Identity),
    text: &str,
    n: u64,
) -> RecordId {
    let body = seal::seal(&[epoch.1.to_public()], text.as_bytes()).unwrap();
    let id = RecordId::new_v7(now_ms() + n);
    let header = signed_header_in(
        device,
        DeviceId::parse(DEVICE).unwrap(),
        id,
        body.digest(),
        Epoch(epoch.0),
    );
    let answer = capture(f, Some(credential), frame(&header, body.as_bytes())).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    id
}

/// The plaintext of a stored record, opened with `epoch_identity`.
async fn read(f: &Fixture, id: RecordId, epoch_identity: &Identity) -> String {
    let archive = f.gateway.archive();
    let record = archive.record(id).await.unwrap().unwrap();
    let body = archive.body(&record).await.unwrap();
    String::from_utf8(body.open(std::slice::from_ref(epoch_identity)).unwrap().to_vec()).unwrap()
}

/// An auditor's own wrapped copies, opened with their identity: (epoch, identity).
async fn my_epochs(f: &Fixture, token: &str, me: &Identity) -> Vec<(u64, Identity)> {
    let (status, _, text) = call(f, "GET", "/v1/keys/wraps", token, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let wraps: Value = serde_json::from_str(&text).unwrap();
    wraps
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let sealed =
                SealedBody::from_bytes(STANDARD.decode(w["wrapped"].as_str().unwrap()).unwrap()).unwrap();
            let opened = sealed.open(std::slice::from_ref(me)).unwrap();
            (
                w["epoch"].as_u64().unwrap(),
                Identity::parse(std::str::from_utf8(&opened).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn records_of_every_epoch_stay_readable_through_auditor_changes_and_escrow_recovery() {
    let f = fixture().await;
    let (device, credential) = enrolled_device(&f).await;

    // The ceremony: the escrow identity split 2 of 3, each share sealed to a custodian.
    let escrow = Escrow::generate(2, 3).unwrap();
    let custodians: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let sealed_shares: Vec<Vec<u8>> = escrow
        .shares()
        .iter()
        .zip(&custodians)
        .map(|(share, c)| seal_share(share, &c.to_public()).unwrap().into_bytes())
        .collect();
    let escrow_recipient = escrow.recipient().clone();
    drop(escrow);

    // Ann, the first auditor, opens epoch 2 (the deployment's first published epoch).
    let ann_identity = Identity::generate();
    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let epoch2 = Identity::generate();
    let publish = |epoch: u64, identity: &Identity, holders: Vec<(&str, seal::Recipient)>| {
        let mut wraps: Vec<Value> = holders
            .into_iter()
            .map(|(name, to)| json!({ "holder": name, "wrapped": wrap_to(identity, &to) }))
            .collect();
        wraps.push(json!({ "holder": "escrow", "wrapped": wrap_to(identity, &escrow_recipient) }));
        json!({
            "note": vellum_protocol::keyring::KeyringStatement {
                epoch: Epoch(epoch),
                archive: identity.to_public(),
                escrow: escrow_recipient.clone(),
                valid_from: UnixMillis(now_ms() - 60_000),
                valid_until: UnixMillis(now_ms() + 86_400_000),
            }
            .sign(&f.org)
            .unwrap(),
            "wraps": wraps,
        })
    };
    let body = publish(2, &epoch2, vec![("ann", ann_identity.to_public())]);
    assert_eq!(
        call(&f, "POST", "/v1/keys/keyring", &ann, Some(body)).await.0,
        StatusCode::CREATED
    );

    // 1. Capture under epoch 2.
    let first = capture_under(
        &f,
        &device,
        &credential,
        (2, &epoch2),
        "minutes of the first meeting",
        1,
    )
    .await;

    // 2. Bo joins; Ann unwraps epoch 2 on her machine and wraps it to Bo, who reads it.
    let bo_identity = Identity::generate();
    let (_, bo) = person(&f, "bo", Role::Auditor, 2).await;
    let bo_recipient = json!({ "recipient": bo_identity.to_public().to_string() });
    assert_eq!(
        call(&f, "POST", "/v1/keys/recipient", &bo, Some(bo_recipient))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, _, listed) = call(&f, "GET", "/v1/keys/recipients", &ann, None).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let bo_listed: seal::Recipient = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["username"] == "bo")
        .and_then(|a| a["recipient"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let ann_epochs = my_epochs(&f, &ann, &ann_identity).await;
    let for_bo: Vec<Value> = ann_epochs
        .iter()
        .map(|(epoch, identity)| json!({ "epoch": epoch, "wrapped": wrap_to(identity, &bo_listed) }))
        .collect();
    let added = call(
        &f,
        "POST",
        "/v1/keys/wraps",
        &ann,
        Some(json!({ "holder": "bo", "wraps": for_bo })),
    )
    .await;
    assert_eq!(added.0, StatusCode::CREATED, "{}", added.2);
    let bo_epochs = my_epochs(&f, &bo, &bo_identity).await;
    assert_eq!(bo_epochs.len(), 1);
    assert_eq!(
        read(&f, first, &bo_epochs[0].1).await,
        "minutes of the first meeting"
    );

    // 3. Ann leaves: a rotation is due; Bo opens epoch 3 without her.
    f.gateway
        .archive()
        .log_store()
        .update_account(&[1; 16], AccountChange::Disabled(Some(UnixMillis(now_ms()))))
        .await
        .unwrap();
    let (_, _, status) = call(&f, "GET", "/v1/keys/status", &bo, None).await;
    assert!(status.contains("\"rotation_required\":true"), "{status}");
    let epoch3 = Identity::generate();
    let body = publish(3, &epoch3, vec![("bo", bo_identity.to_public())]);
    assert_eq!(
        call(&f, "POST", "/v1/keys/keyring", &bo, Some(body)).await.0,
        StatusCode::CREATED
    );
    let (_, _, status) = call(&f, "GET", "/v1/keys/status", &bo, None).await;
    assert!(status.contains("\"rotation_required\":false"), "{status}");

    // 4. Capture under epoch 3; the old epoch is refused now.
    let second = capture_under(
        &f,
        &device,
        &credential,
        (3, &epoch3),
        "minutes of the second meeting",
        2,
    )
    .await;

    // 5. Every auditor identity is lost. Custodians 1 and 3 bring their shares; the
    //    escrow identity, rebuilt in memory, opens the escrow copies of both epochs,
    //    re-wrapped to the officer who produces the records for the regulator.
    drop((ann_identity, bo_identity, bo_epochs, ann_epochs, epoch2, epoch3));
    let shares = [
        read_share(&sealed_shares[0], &custodians[..1], "custodian 1").unwrap(),
        read_share(&sealed_shares[2], &custodians[2..], "custodian 3").unwrap(),
    ];
    assert!(
        recover_escrow(&shares[..1]).is_err(),
        "one share rebuilt the escrow identity"
    );
    let recovered = recover_escrow(&shares).unwrap();
    let officer = Identity::generate();
    // The records officer fetches the escrow copies (audited); auditors may not.
    let (_, records_officer) = person(&f, "ro", Role::Approver, 5).await;
    assert_problem(
        &call(&f, "GET", "/v1/keys/escrow", &bo, None).await,
        StatusCode::FORBIDDEN,
    );
    let (status, _, copies) = call(&f, "GET", "/v1/keys/escrow", &records_officer, None).await;
    assert_eq!(status, StatusCode::OK, "{copies}");
    let copies: Value = serde_json::from_str(&copies).unwrap();
    let escrow_copies: Vec<(u64, Vec<u8>)> = copies
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["epoch"].as_u64().unwrap(),
                STANDARD.decode(c["wrapped"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        escrow_copies.iter().map(|(epoch, _)| *epoch).collect::<Vec<_>>(),
        [2, 3]
    );
    let mut by_epoch = Vec::new();
    for (_, wrapped) in &escrow_copies {
        let for_officer = rewrap(wrapped, &recovered, &[officer.to_public()], "escrow copy").unwrap();
        let opened = for_officer.open(std::slice::from_ref(&officer)).unwrap();
        by_epoch.push(Identity::parse(std::str::from_utf8(&opened).unwrap()).unwrap());
    }
    assert_eq!(
        read(&f, first, &by_epoch[0]).await,
        "minutes of the first meeting"
    );
    assert_eq!(
        read(&f, second, &by_epoch[1]).await,
        "minutes of the second meeting"
    );

    // The officer records the recovery, with why; the gateway names the epochs from
    // the digests of the copies it served, and records a copy it never served (kept
    // elsewhere) as unmatched. An escrow recipient the keyrings do not name is refused.
    let digests: Vec<String> = escrow_copies
        .iter()
        .map(|(_, wrapped)| hex::encode(Sha256::digest(wrapped)))
        .collect();
    let minute = |recipient: String, copies: &[String], reason: &str| {
        json!({
            "escrow_recipient": recipient,
            "split_id": shares[0].split_id(),
            "shares": [shares[0].index(), shares[1].index()],
            "copies": copies,
            "to": [officer.to_public().to_string()],
            "reason": reason,
        })
    };
    let escrow_recipient = recovered.to_public().to_string();
    let exam = "SEC examination 2026-17, request 4";
    let elsewhere = hex::encode([7; 32]);
    let stranger = Identity::generate().to_public().to_string();
    let refusals = [
        (
            minute(stranger.clone(), &digests, exam),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            minute(stranger, std::slice::from_ref(&elsewhere), exam),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            minute(escrow_recipient.clone(), &["not a digest".to_owned()], exam),
            StatusCode::BAD_REQUEST,
        ),
        (
            minute(escrow_recipient.clone(), &digests, " "),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, status) in refusals {
        let answer = call(
            &f,
            "POST",
            "/v1/keys/escrow/recoveries",
            &records_officer,
            Some(body),
        )
        .await;
        assert_problem(&answer, status);
    }
    let mut with_elsewhere = digests.clone();
    with_elsewhere.push(elsewhere.clone());
    let good = minute(escrow_recipient.clone(), &with_elsewhere, exam);
    assert_problem(
        &call(&f, "POST", "/v1/keys/escrow/recoveries", &bo, Some(good.clone())).await,
        StatusCode::FORBIDDEN,
    );
    let (status, _, recorded) = call(
        &f,
        "POST",
        "/v1/keys/escrow/recoveries",
        &records_officer,
        Some(good),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{recorded}");
    let recorded: Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(recorded["epochs"], json!([2, 3]));
    assert_eq!(recorded["unmatched"], json!([elsewhere]));
    // A recovery of copies kept elsewhere only: recorded, since a published keyring
    // names the escrow recipient.
    let only_elsewhere = minute(escrow_recipient, std::slice::from_ref(&elsewhere), exam);
    let (status, _, recorded) = call(
        &f,
        "POST",
        "/v1/keys/escrow/recoveries",
        &records_officer,
        Some(only_elsewhere),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{recorded}");
    assert_eq!(
        serde_json::from_str::<Value>(&recorded).unwrap()["epochs"],
        json!([])
    );

    // Every step is in the audit trail, and so in the log.
    let trail = f.gateway.archive().audit_trail(0, 1000).await.unwrap();
    let publications = trail
        .iter()
        .filter(|(_, e)| e.action == "keyring.publish")
        .count();
    assert_eq!(publications, 2);
    assert!(trail.iter().any(|(_, e)| e.action == "keys.wrap"));
    assert!(trail.iter().any(|(_, e)| e.action == "keys.escrow.fetch"));
    let recoveries: Vec<_> = trail
        .iter()
        .filter(|(_, e)| e.action == "keys.escrow.recover")
        .collect();
    assert_eq!(recoveries.len(), 2, "only the good minutes are recorded");
    let detail: Value = serde_json::from_str(&recoveries[0].1.detail).unwrap();
    assert_eq!(detail["epochs"], json!([2, 3]));
    assert_eq!(detail["unmatched"], json!([elsewhere]));
    assert_eq!(detail["reason"], exam);
    for (index, event) in &trail {
        let entry = f.gateway.archive().log_store();
        let leaf = vellum_archive::ports::LogStore::entry(entry, *index)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(LogEntry::from_bytes(&leaf).unwrap(), event.log_entry());
    }
}
