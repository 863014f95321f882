//! One story for every backend, all four combinations of SQLite or PostgreSQL with a
//! local folder or S3 (the servers come from `VELLUM_TEST_POSTGRES` and
//! `VELLUM_TEST_S3`, which `scripts/test` sets). Each test gets a fresh database,
//! folder and bucket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failure is a failed test"
)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;
use vellum_archive::ports::{AuditStore, LogStore};
use vellum_archive::{AppendError, StoreError};
use vellum_protocol::ids::RecordId;
use vellum_protocol::receipt::{Receipt, VerifiedReceipt};
use vellum_tlog::checkpoint;
use vellum_tlog::proof::{ConsistencyProof, TlogProof};

fn check_receipt(receipt: &Receipt, submission: &vellum_archive::Submission) -> u64 {
    verify_receipt(receipt, submission).index
}

fn verify_receipt(receipt: &Receipt, submission: &vellum_archive::Submission) -> VerifiedReceipt {
    let fields = submission.header.fields();
    receipt
        .verify(
            &log_signer().verifier(),
            &fields.record_id,
            &submission.header.digest(),
        )
        .unwrap()
}

async fn append_and_read_back(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let capturer = Capturer::default();
    let submission = capturer.submission(1300);
    let receipt = archive.append(submission.clone()).await.unwrap();
    assert_eq!(check_receipt(&receipt, &submission), 0);

    let record = archive
        .record(submission.header.fields().record_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.header, submission.header.as_bytes());
    let body = archive.body(&record).await.unwrap();
    assert_eq!(body, submission.body);
    assert_eq!(
        &body.open(std::slice::from_ref(&capturer.auditor)).unwrap()[..],
        &[0u8; 1300][..]
    );
    assert_eq!(archive.receipt(&record).await.unwrap(), receipt);
    archive.close().await;
}

async fn concurrent_appends_share_batches(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = Arc::new(open_archive(log, blobs).await);
    let capturer = Capturer::default();
    let submissions: Vec<_> = (0..300).map(|_| capturer.submission(200)).collect();
    let tasks: Vec<_> = submissions
        .iter()
        .cloned()
        .map(|s| {
            let archive = archive.clone();
            tokio::spawn(async move { archive.append(s).await })
        })
        .collect();
    let mut indexes = HashSet::new();
    let mut checkpoints = HashSet::new();
    for (task, submission) in tasks.into_iter().zip(&submissions) {
        let receipt = task.await.unwrap().unwrap();
        indexes.insert(check_receipt(&receipt, submission));
        checkpoints.insert(receipt.to_text().split_once("\n\n").unwrap().1.to_owned());
    }
    assert_eq!(indexes, (0..300).collect::<HashSet<u64>>());
    assert!(
        checkpoints.len() < 300,
        "every append signed its own checkpoint: no batching"
    );
    let (size, _) = archive.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(size, 300);
    archive.close().await;
}

async fn retries_get_the_same_receipt_and_conflicts_are_refused(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = Arc::new(open_archive(log, blobs).await);
    let capturer = Capturer::default();
    let first = capturer.submission(100);
    let receipt = archive.append(first.clone()).await.unwrap();
    // More records, so the log has moved on when the retry arrives.
    for _ in 0..5 {
        archive.append(capturer.submission(100)).await.unwrap();
    }
    assert_eq!(
        archive.append(first.clone()).await.unwrap().to_text(),
        receipt.to_text()
    );

    let id = first.header.fields().record_id;
    let rival = capturer.submission_for(id, 100, 0xEE);
    assert!(matches!(archive.append(rival).await, Err(AppendError::Conflict(c)) if c == id));

    // Duplicates inside one batch: same content shares a receipt, different content conflicts.
    let fresh_id = RecordId::new_v7(1_800_000_000_000);
    let a = capturer.submission_for(fresh_id, 100, 1);
    let b = capturer.submission_for(fresh_id, 100, 2);
    let (ra, ra2, rb) = tokio::join!(
        archive.append(a.clone()),
        archive.append(a.clone()),
        archive.append(b)
    );
    let (ra, ra2) = (ra.unwrap(), ra2.unwrap());
    assert_eq!(ra.to_text(), ra2.to_text());
    assert!(matches!(rb, Err(AppendError::Conflict(_))));
    assert_eq!(
        archive.latest_checkpoint().await.unwrap().unwrap().0,
        7,
        "no duplicate leaves"
    );
    archive.close().await;
}

async fn a_restart_resumes_the_same_log(backend: impl Backend) {
    let capturer = Capturer::default();
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let early = capturer.submission(100);
    let early_receipt = archive.append(early.clone()).await.unwrap();
    for _ in 0..10 {
        archive.append(capturer.submission(100)).await.unwrap();
    }
    let (old_size, old_note) = archive.latest_checkpoint().await.unwrap().unwrap();
    archive.close().await;
    drop(archive);

    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let next = capturer.submission(100);
    let receipt = archive.append(next.clone()).await.unwrap();
    assert_eq!(check_receipt(&receipt, &next), old_size);
    assert_eq!(
        archive.append(early).await.unwrap().to_text(),
        early_receipt.to_text()
    );

    let (new_size, new_note) = archive.latest_checkpoint().await.unwrap().unwrap();
    let key = log_signer().verifier();
    let proof = ConsistencyProof {
        old: old_size,
        new: new_size,
        hashes: archive.consistency_proof(old_size, new_size).await.unwrap(),
    };
    proof
        .verify(
            &checkpoint::open(old_note.as_bytes(), &key).unwrap(),
            &checkpoint::open(new_note.as_bytes(), &key).unwrap(),
        )
        .unwrap();
    archive.close().await;
}

/// A record's body read back in chunks ([`vellum_archive::Archive::read_body`]): the
/// bytes, once every chunk arrived and the digest held.
async fn read_in_chunks<L: LogStore, B: vellum_archive::ports::BlobStore>(
    archive: &vellum_archive::Archive<L, B>,
    record: &vellum_archive::ports::StoredRecord,
) -> Result<Vec<u8>, StoreError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let collect = async move {
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            assert!(chunk.len() <= vellum_archive::ports::READ_CHUNK);
            bytes.extend_from_slice(&chunk);
        }
        bytes
    };
    let (read, bytes) = tokio::join!(archive.read_body(record, tx), collect);
    read.map(|()| bytes)
}

/// Damages a record's stored body; reading it back then fails (whole, or in chunks at
/// the end), or, on WORM storage that kept the original version (which reads name),
/// still gives the original.
async fn damage_and_read<L: LogStore, B: vellum_archive::ports::BlobStore>(
    backend: &impl Backend,
    archive: &vellum_archive::Archive<L, B>,
    record: &vellum_archive::ports::StoredRecord,
    submission: &vellum_archive::Submission,
) {
    let original = submission.body.sealed().map(|b| b.as_bytes().to_vec());
    match backend.corrupt(&record.blob) {
        Corruption::Damaged => {
            assert!(matches!(
                archive.body(record).await,
                Err(StoreError::Integrity(_))
            ));
            assert!(matches!(
                read_in_chunks(archive, record).await,
                Err(StoreError::Integrity(_))
            ));
        }
        Corruption::Superseded => {
            assert_eq!(archive.body(record).await.unwrap(), submission.body);
            if let Some(original) = original {
                assert_eq!(read_in_chunks(archive, record).await.unwrap(), original);
            }
        }
    }
}

async fn a_corrupted_blob_is_never_returned(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let submission = Capturer::default().submission(1000);
    archive.append(submission.clone()).await.unwrap();
    let record = archive
        .record(submission.header.fields().record_id)
        .await
        .unwrap()
        .unwrap();
    damage_and_read(&backend, &archive, &record, &submission).await;
    archive.close().await;
}

/// Writes `bytes` into an upload for `header`, in chunks of `chunk` bytes.
async fn upload_of<L: LogStore, B: vellum_archive::ports::BlobStore>(
    archive: &vellum_archive::Archive<L, B>,
    header: &vellum_protocol::header::VerifiedHeader,
    bytes: &[u8],
    chunk: usize,
) -> vellum_archive::Upload<B::Upload> {
    let mut upload = archive.upload(header.clone()).await.unwrap();
    for piece in bytes.chunks(chunk) {
        upload.write(piece).await.unwrap();
    }
    upload
}

async fn uploaded_bodies_are_checked_and_nothing_partial_stays(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let capturer = Capturer::default();
    // Two 8 MiB parts and a short one on S3; many buffer flushes on a folder.
    let submission = capturer.submission(17 << 20);
    let (header, sealed) = (&submission.header, submission.body.sealed().unwrap().as_bytes());
    let id = header.fields().record_id;
    let before = backend.blob_listing();

    // One byte changed on the way: refused at the end, when the digest is known.
    let mut damaged = sealed.to_vec();
    damaged[sealed.len() / 2] ^= 1;
    let upload = upload_of(&archive, header, &damaged, 300_000).await;
    assert!(matches!(upload.finish().await, Err(AppendError::BadBody(_))));
    // Cut short.
    let upload = upload_of(&archive, header, &sealed[..sealed.len() - 1], 300_000).await;
    assert!(matches!(upload.finish().await, Err(AppendError::BadBody(_))));
    // Longer than the header says: refused at the byte too many.
    let mut upload = upload_of(&archive, header, sealed, 1 << 20).await;
    assert!(matches!(upload.write(b"x").await, Err(AppendError::BadBody(_))));
    upload.abort().await;
    // Not an age file: refused from its first bytes, before they are stored.
    let mut upload = archive.upload(header.clone()).await.unwrap();
    assert!(matches!(
        upload.write(&[b'x'; 20_000]).await,
        Err(AppendError::BadBody(_))
    ));
    upload.abort().await;
    // Given up half-way.
    upload_of(&archive, header, &sealed[..sealed.len() / 2], 1 << 20)
        .await
        .abort()
        .await;
    assert_eq!(backend.blob_listing(), before, "a failed upload left something");
    assert!(archive.record(id).await.unwrap().is_none());

    // Whole: a receipt, and the body reads back.
    let uploaded = upload_of(&archive, header, sealed, 300_000)
        .await
        .finish()
        .await
        .unwrap();
    assert!(uploaded.body.sealed().is_none());
    let receipt = archive.append(uploaded).await.unwrap();
    check_receipt(&receipt, &submission);
    let record = archive.record(id).await.unwrap().unwrap();
    assert_eq!(archive.body(&record).await.unwrap(), submission.body);
    assert_eq!(read_in_chunks(&archive, &record).await.unwrap(), sealed);
    // A client retrying after a lost answer gets the same receipt.
    let again = upload_of(&archive, header, sealed, 4 << 20)
        .await
        .finish()
        .await
        .unwrap();
    assert_eq!(archive.append(again).await.unwrap().to_text(), receipt.to_text());
    // Captures held in memory still share batches with it.
    let small = capturer.submission(100);
    check_receipt(&archive.append(small.clone()).await.unwrap(), &small);

    damage_and_read(&backend, &archive, &record, &submission).await;
    archive.close().await;
}

/// A stored body handed in under another header (not what an upload makes, but the
/// fields are public) is refused, and nothing is appended.
async fn a_body_stored_for_another_header_is_refused(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let capturer = Capturer::default();
    let (first, second) = (capturer.submission(30_000), capturer.submission(30_000));
    let bytes = first.body.sealed().unwrap().as_bytes();
    let uploaded = upload_of(&archive, &first.header, bytes, 4096)
        .await
        .finish()
        .await
        .unwrap();
    let swapped = vellum_archive::Submission {
        header: second.header.clone(),
        body: uploaded.body,
    };
    assert!(matches!(
        archive.append(swapped).await,
        Err(AppendError::BadBody(_))
    ));
    assert_eq!(archive.log_store().log_size().await.unwrap(), 0);
    archive.close().await;
}

async fn failed_writes_leave_nothing_and_retries_succeed(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let fail_blob = Arc::new(AtomicBool::new(false));
    let (fail_before, fail_after) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let log = FlakyLog {
        fail_before: fail_before.clone(),
        fail_after: fail_after.clone(),
        ..FlakyLog::new(log)
    };
    let blobs = FlakyBlobs {
        inner: blobs,
        fail_next: fail_blob.clone(),
        puts: Arc::default(),
    };
    let archive = open_archive(log.clone(), blobs).await;
    let capturer = Capturer::default();
    archive.append(capturer.submission(100)).await.unwrap();

    for flag in [&fail_blob, &fail_before] {
        let size = log.log_size().await.unwrap();
        let s = capturer.submission(100);
        flag.store(true, Ordering::SeqCst);
        assert!(matches!(
            archive.append(s.clone()).await,
            Err(AppendError::Store(_))
        ));
        assert!(
            archive
                .record(s.header.fields().record_id)
                .await
                .unwrap()
                .is_none(),
            "half a record was kept"
        );
        assert_eq!(
            log.log_size().await.unwrap(),
            size,
            "a failed append changed the log"
        );
        let receipt = archive.append(s.clone()).await.unwrap();
        assert_eq!(check_receipt(&receipt, &s), size);
    }

    // A commit that landed but reported failure: the retry finds the record and gets
    // its receipt; the next new record follows it, with no fork and no gap.
    let s = capturer.submission(100);
    fail_after.store(true, Ordering::SeqCst);
    assert!(archive.append(s.clone()).await.is_err());
    assert_eq!(check_receipt(&archive.append(s.clone()).await.unwrap(), &s), 3);
    let next = capturer.submission(100);
    assert_eq!(
        check_receipt(&archive.append(next.clone()).await.unwrap(), &next),
        4
    );
    archive.close().await;
}

async fn a_newer_schema_is_refused(backend: impl Backend) {
    let (log, _blobs) = backend.open().await;
    drop(log);
    backend.add_future_migration().await;
    let refused = backend
        .open_log()
        .await
        .err()
        .expect("a database from a newer vellum was accepted");
    assert!(
        matches!(
            refused,
            StoreError::SchemaTooNew { found: 9999, known } if (2..9999).contains(&known)
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("newer than this program"));
}

async fn the_log_and_audit_trail_are_append_only(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log.clone(), blobs).await;
    archive.append(Capturer::default().submission(10)).await.unwrap();
    for n in 1..=3 {
        assert_eq!(archive.audit(audit_event(n)).await.unwrap(), n);
    }
    let events = log.audit_from(2, 10).await.unwrap();
    assert_eq!(events, vec![(2, audit_event(2)), (3, audit_event(3))]);

    // Every table now has rows, so row-level protections have something to refuse.
    for (statement, outcome) in TAMPERING.iter().zip(backend.tamper_with_log().await) {
        let refusal = outcome.expect_err(statement);
        assert!(
            refusal.contains("append-only") || refusal.contains("never rewritten"),
            "{statement}: {refusal}"
        );
    }
    assert_eq!(archive.audit_trail(0, 10).await.unwrap().len(), 3);
    assert_eq!(log.log_size().await.unwrap(), 4);
    archive.close().await;
}

/// Audit events and captures share the log: each event is a leaf committing to its
/// bytes, proved against the same signed checkpoints, from either of two gateways.
async fn audit_events_are_leaves_of_the_log(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let first = Arc::new(open_archive(log.clone(), blobs).await);
    let second = Arc::new(open_archive(backend.open_log().await.unwrap(), backend.open_second_blobs()).await);
    let capturer = Arc::new(Capturer::default());
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..8u64 {
        let gateway = if writer % 2 == 0 { &first } else { &second }.clone();
        let capturer = capturer.clone();
        tasks.spawn(async move {
            let mut audits = Vec::new();
            for n in 0..6 {
                if n % 2 == 0 {
                    let event = audit_event(writer * 100 + n);
                    audits.push((gateway.audit(event.clone()).await.unwrap(), event));
                } else {
                    gateway.append(capturer.submission(10)).await.unwrap();
                }
            }
            audits
        });
    }
    let mut expected = Vec::new();
    while let Some(audits) = tasks.join_next().await {
        expected.extend(audits.unwrap());
    }
    expected.sort_by_key(|(index, _)| *index);
    assert_eq!(log.log_size().await.unwrap(), 8 * 6);
    let trail = first.audit_trail(0, 1000).await.unwrap();
    assert_eq!(
        trail, expected,
        "the trail is every event, at the leaf it was given"
    );

    let (size, note) = first.latest_checkpoint().await.unwrap().unwrap();
    for (index, event) in &trail {
        let proof = TlogProof {
            extra: None,
            index: *index,
            hashes: first.inclusion_proof(size, *index).await.unwrap(),
            checkpoint: note.clone(),
        };
        proof
            .verify(&log_signer().verifier(), &event.log_entry().leaf_hash())
            .unwrap();
    }
    // An event whose fields were changed no longer matches its leaf.
    let mut forged = trail[0].1.clone();
    forged.detail = "{\"forged\":true}".into();
    assert_ne!(forged.log_entry(), trail[0].1.log_entry());

    // An oversized event is refused and the log does not move.
    let mut huge = audit_event(1);
    huge.detail = "x".repeat(vellum_archive::MAX_AUDIT_FIELD + 1);
    assert!(first.audit(huge).await.is_err());
    assert_eq!(log.log_size().await.unwrap(), 8 * 6);
    first.close().await;
    second.close().await;
}

/// Two gateways on one deployment append concurrently: each batch is sequenced by one
/// of them at a time, so the log has every record once, in one consistent history,
/// and a record sent to both at once gets one leaf and one receipt.
async fn two_gateways_share_one_log(backend: impl Backend) {
    let (log, blobs) = backend.open().await;
    let first = Arc::new(open_archive(log, blobs).await);
    let log = backend.open_log().await.unwrap();
    let second = Arc::new(open_archive(log, backend.open_second_blobs()).await);
    let capturer = Arc::new(Capturer::default());
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..32 {
        let gateway = if writer % 2 == 0 { &first } else { &second }.clone();
        let capturer = capturer.clone();
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..8 {
                let submission = capturer.submission(100);
                let receipt = gateway.append(submission.clone()).await.unwrap();
                seen.push(verify_receipt(&receipt, &submission));
            }
            seen
        });
    }
    for _ in 0..8 {
        let (first, second) = (first.clone(), second.clone());
        let submission = capturer.submission(100);
        tasks.spawn(async move {
            let (a, b) = tokio::join!(
                first.append(submission.clone()),
                second.append(submission.clone())
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.to_text(), b.to_text(), "one record, two receipts");
            vec![verify_receipt(&a, &submission)]
        });
    }
    let mut indexes = HashSet::new();
    let mut receipts = Vec::new();
    while let Some(seen) = tasks.join_next().await {
        for receipt in seen.unwrap() {
            assert!(
                indexes.insert(receipt.index),
                "leaf {} was handed out twice",
                receipt.index
            );
            receipts.push(receipt);
        }
    }
    let total = 32 * 8 + 8;
    assert_eq!(indexes, (0..total).collect::<HashSet<u64>>());
    let (size, note) = second.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(size, total);
    let key = log_signer().verifier();
    let newest = checkpoint::open(note.as_bytes(), &key).unwrap();
    for receipt in receipts {
        let old = receipt.checkpoint;
        let proof = ConsistencyProof {
            old: old.size(),
            new: size,
            hashes: first.consistency_proof(old.size(), size).await.unwrap(),
        };
        proof.verify(&old, &newest).unwrap();
    }
    first.close().await;
    second.close().await;
}

/// Devices: a token enrolls one device once, before it expires; the credential finds
/// the device; revocation is final; racing enrollments with one token enroll one.
async fn devices_enroll_once_and_revocation_is_final(backend: impl Backend) {
    use vellum_archive::error::EnrollError;
    use vellum_archive::ports::{DeviceStore, NewDevice, SecretHash};
    use vellum_protocol::ids::{Custodian, DeviceId, RetentionClass, UnixMillis};
    use vellum_protocol::keys::DeviceKey;

    let store = backend.open_log().await.unwrap();
    let custodian = Custodian::new("officer@agency.example").unwrap();
    let class = RetentionClass::new("finra-6y").unwrap();
    let now = UnixMillis(1_764_150_000_000);
    let device = |n: u8| NewDevice {
        device_id: DeviceId::from_bytes([n; 16]).unwrap(),
        public_key: DeviceKey::generate().public(),
        credential: SecretHash([n; 32]),
    };
    let (token, expired) = (SecretHash([0xA1; 32]), SecretHash([0xA2; 32]));
    store
        .add_enrollment(&token, &custodian, &class, UnixMillis(now.0 + 60_000))
        .await
        .unwrap();
    store
        .add_enrollment(&expired, &custodian, &class, now)
        .await
        .unwrap();

    assert!(matches!(
        store.enroll(&SecretHash([0xFF; 32]), &device(1), now).await,
        Err(EnrollError::UnknownToken)
    ));
    assert!(matches!(
        store.enroll(&expired, &device(1), now).await,
        Err(EnrollError::TokenExpired)
    ));
    let enrolled = store.enroll(&token, &device(1), now).await.unwrap();
    assert_eq!(
        (enrolled.custodian.as_str(), enrolled.revoked_at),
        ("officer@agency.example", None)
    );
    // Bound to its token's retention class; a new binding replaces it, for a known
    // device only, never with no class at all.
    assert_eq!(enrolled.retention, std::slice::from_ref(&class));
    let both = [
        RetentionClass::new("finra-6y").unwrap(),
        RetentionClass::new("permanent").unwrap(),
    ];
    assert!(store.bind_retention(&enrolled.device_id, &both).await.unwrap());
    let bound = store
        .device_by_credential(&SecretHash([1; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.retention, both);
    assert!(
        store
            .bind_retention(&enrolled.device_id, &both[..0])
            .await
            .is_err()
    );
    assert!(
        !store
            .bind_retention(&DeviceId::from_bytes([0x99; 16]).unwrap(), &both)
            .await
            .unwrap()
    );
    assert!(
        store
            .bind_retention(&enrolled.device_id, &both[..1])
            .await
            .unwrap()
    );
    assert!(matches!(
        store.enroll(&token, &device(2), now).await,
        Err(EnrollError::TokenUsed)
    ));
    let again = SecretHash([0xA3; 32]);
    store
        .add_enrollment(&again, &custodian, &class, UnixMillis(now.0 + 60_000))
        .await
        .unwrap();
    assert!(matches!(
        store.enroll(&again, &device(1), now).await,
        Err(EnrollError::DeviceExists(_))
    ));
    assert!(
        store
            .device_by_credential(&SecretHash([2; 32]))
            .await
            .unwrap()
            .is_none(),
        "a refused enrollment stored a device"
    );

    // A credential rotates: the old one stops working, the new one works.
    let id = enrolled.device_id;
    assert!(
        store
            .rotate_credential(&id, &SecretHash([1; 32]), &SecretHash([0x51; 32]))
            .await
            .unwrap()
    );
    assert!(
        store
            .device_by_credential(&SecretHash([1; 32]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .rotate_credential(&id, &SecretHash([1; 32]), &SecretHash([0x52; 32]))
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_credential(&id, &SecretHash([0x51; 32]), &SecretHash([1; 32]))
            .await
            .unwrap()
    );

    let found = store
        .device_by_credential(&SecretHash([1; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, enrolled);
    assert!(
        store
            .revoke(&found.device_id, UnixMillis(now.0 + 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke(&found.device_id, UnixMillis(now.0 + 6))
            .await
            .unwrap()
    );
    let revoked = store
        .device_by_credential(&SecretHash([1; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(UnixMillis(now.0 + 5)));
    assert!(
        !store
            .rotate_credential(&found.device_id, &SecretHash([1; 32]), &SecretHash([0x53; 32]))
            .await
            .unwrap(),
        "a revoked device rotated its credential"
    );
    for statement in ["UPDATE devices SET revoked_at = NULL", "DELETE FROM devices"] {
        assert!(
            backend.sql(statement).await.is_err(),
            "the database allowed: {statement}"
        );
    }

    // Ten enrollments race for one token: exactly one device gets in.
    let contested = SecretHash([0xA4; 32]);
    store
        .add_enrollment(&contested, &custodian, &class, UnixMillis(now.0 + 60_000))
        .await
        .unwrap();
    let racers: Vec<_> = (10..20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.enroll(&contested, &device(n), now).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(EnrollError::TokenUsed) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(won, 1);
}

async fn keyrings_are_consecutive_and_wrapped_keys_are_kept(backend: impl Backend) {
    use vellum_archive::ports::{Holder, KeyError, KeyStore, PublishedKeyring, Wrap};
    use vellum_protocol::ids::UnixMillis;

    let store = backend.open_log().await.unwrap();
    let keyring = |epoch: u64| PublishedKeyring {
        epoch,
        note: format!("vellum/keyring/v1\nepoch {epoch}\n"),
        published_at: UnixMillis(1_764_150_000_000 + epoch),
        published_by: "0123456789abcdef0123456789abcdef".into(),
    };
    let wrap = |epoch: u64, holder: Holder| Wrap {
        epoch,
        wrapped: format!("age file of epoch {epoch} for {}", holder.as_text()).into_bytes(),
        holder,
    };
    let (ann, bo, cy) = (
        Holder::Account([1; 16]),
        Holder::Account([2; 16]),
        Holder::Account([3; 16]),
    );
    assert_eq!(store.latest_keyring().await.unwrap(), None);
    // The first keyring may be any epoch (a deployment starts where its file says).
    store
        .publish_keyring(&keyring(4), &[wrap(4, ann.clone()), wrap(4, Holder::Escrow)])
        .await
        .unwrap();
    for offered in [4, 3, 6] {
        assert!(matches!(
            store.publish_keyring(&keyring(offered), &[]).await,
            Err(KeyError::NotNext { offered: o, newest: 4 }) if o == offered
        ));
    }
    store
        .publish_keyring(
            &keyring(5),
            &[wrap(5, ann.clone()), wrap(5, bo.clone()), wrap(5, Holder::Escrow)],
        )
        .await
        .unwrap();
    assert_eq!(store.latest_keyring().await.unwrap(), Some(keyring(5)));
    assert_eq!(store.keyring_at(4).await.unwrap(), Some(keyring(4)));
    assert_eq!(store.keyring_at(5).await.unwrap(), Some(keyring(5)));
    assert_eq!(store.keyring_at(3).await.unwrap(), None);
    assert_eq!(store.keyring_at(6).await.unwrap(), None);

    // A newcomer gets copies of both epochs; all or none, each once.
    let at = UnixMillis(1_764_150_001_000);
    assert!(matches!(
        store
            .add_wraps(&[wrap(4, cy.clone()), wrap(9, cy.clone())], "x", at)
            .await,
        Err(KeyError::UnknownEpoch(9))
    ));
    assert_eq!(store.wraps_of(&cy).await.unwrap(), vec![]);
    store
        .add_wraps(&[wrap(4, cy.clone()), wrap(5, cy.clone())], "x", at)
        .await
        .unwrap();
    assert!(matches!(
        store.add_wraps(&[wrap(5, cy.clone())], "x", at).await,
        Err(KeyError::WrapExists { epoch: 5, .. })
    ));
    assert_eq!(
        store.wraps_of(&cy).await.unwrap(),
        vec![wrap(4, cy.clone()), wrap(5, cy.clone())]
    );
    assert_eq!(store.wraps_of(&bo).await.unwrap(), vec![wrap(5, bo.clone())]);
    let mut holders = store.holders_of(5).await.unwrap();
    holders.sort_by_key(Holder::as_text);
    assert_eq!(holders, vec![ann.clone(), bo, cy, Holder::Escrow]);

    // An auditor's public recipient and optional sealed identity, replaced whole.
    let auditor = vellum_archive::ports::NewAccount {
        account_id: [1; 16],
        username: "ann".into(),
        role: vellum_archive::ports::Role::Auditor,
        password_phc:
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                .into(),
        must_change_password: false,
        external_id: None,
    };
    vellum_archive::ports::AccountStore::create_account(&store, &auditor, at)
        .await
        .unwrap();
    assert_eq!(store.auditor_key(&[1; 16]).await.unwrap(), None);
    store
        .set_auditor_key(&[1; 16], "age1first", Some(b"scrypt-sealed"), at)
        .await
        .unwrap();
    store
        .set_auditor_key(&[1; 16], "age1second", None, at)
        .await
        .unwrap();
    assert_eq!(
        store.auditor_key(&[1; 16]).await.unwrap(),
        Some(vellum_archive::ports::AuditorKey {
            recipient: "age1second".into(),
            identity: None
        })
    );

    // The database itself keeps keyrings consecutive and both tables append-only.
    for statement in [
        "UPDATE keyrings SET note = 'forged'",
        "DELETE FROM keyrings",
        "UPDATE epoch_wraps SET wrapped = wrapped",
        "DELETE FROM epoch_wraps",
        "INSERT INTO keyrings (epoch, note, published_at, published_by) VALUES (9, 'x', 0, 'x')",
    ] {
        assert!(
            backend.sql(statement).await.is_err(),
            "the database allowed: {statement}"
        );
    }
    assert_eq!(store.latest_keyring().await.unwrap(), Some(keyring(5)));
}

async fn accounts_have_unique_names_and_are_never_deleted(backend: impl Backend) {
    use vellum_archive::error::AccountError;
    use vellum_archive::ports::{Account, AccountStore, NewAccount, Role};
    use vellum_protocol::ids::UnixMillis;

    let store = backend.open_log().await.unwrap();
    let now = UnixMillis(1_764_150_000_000);
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let admin = NewAccount {
        account_id: [1; 16],
        username: "admin".into(),
        role: Role::Admin,
        password_phc: phc.into(),
        must_change_password: true,
        external_id: None,
    };
    assert!(store.account_by_username("admin").await.unwrap().is_none());
    store.create_account(&admin, now).await.unwrap();
    let stored = store.account_by_username("admin").await.unwrap().unwrap();
    assert_eq!(
        (stored.account_id, stored.role, stored.password_phc.as_str()),
        ([1; 16], Role::Admin, phc)
    );
    assert!(stored.must_change_password);
    assert_eq!((stored.created_at, stored.disabled_at), (now, None));

    let rival = NewAccount {
        account_id: [2; 16],
        role: Role::Auditor,
        ..admin.clone()
    };
    assert!(matches!(
        store.create_account(&rival, now).await,
        Err(AccountError::UsernameTaken(name)) if name == "admin"
    ));
    assert_eq!(
        store.account_by_username("admin").await.unwrap().unwrap().role,
        Role::Admin
    );

    // A single sign-on identity is bound to one account.
    let sso = NewAccount {
        account_id: [3; 16],
        username: "ann@agency.example".into(),
        external_id: Some("https://idp.agency.example 248289761001".into()),
        ..admin.clone()
    };
    store.create_account(&sso, now).await.unwrap();
    let found = store
        .account_by_external_id("https://idp.agency.example 248289761001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.account_id, found.external_id),
        ([3; 16], sso.external_id.clone())
    );
    assert!(
        store
            .account_by_external_id("https://idp.agency.example 1")
            .await
            .unwrap()
            .is_none()
    );
    let twin = NewAccount {
        account_id: [4; 16],
        username: "ann.renamed@agency.example".into(),
        ..sso.clone()
    };
    assert!(matches!(
        store.create_account(&twin, now).await,
        Err(AccountError::ExternalIdTaken)
    ));
    assert!(
        store
            .account_by_username("ann.renamed@agency.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .account_by_username("admin")
            .await
            .unwrap()
            .unwrap()
            .external_id,
        None
    );

    // Re-sealing TOTP secrets replaces exactly the values it names, in one go: a
    // change whose account stores another value by now is skipped.
    use vellum_archive::ports::{AccountChange, TotpReseal};
    use zeroize::Zeroizing;
    let value = |b: u8| Zeroizing::new(vec![b; 30]);
    assert!(
        store
            .update_account(&[1; 16], AccountChange::TotpSecret(Some(value(1))))
            .await
            .unwrap()
    );
    let reseal = |from: u8, to: u8| TotpReseal {
        account_id: [1; 16],
        stored: value(from),
        sealed: value(to),
    };
    assert_eq!(store.reseal_totp(&[reseal(1, 2)]).await.unwrap(), 1);
    assert_eq!(store.reseal_totp(&[reseal(1, 3), reseal(9, 4)]).await.unwrap(), 0);
    let secret = |account: Account| account.totp_secret.map(|s| s.to_vec());
    assert_eq!(
        secret(store.account_by_username("admin").await.unwrap().unwrap()),
        Some(vec![2; 30])
    );

    // The database itself refuses what the store never does.
    let refused = [
        "DELETE FROM accounts".to_owned(),
        "UPDATE accounts SET password_phc = 'md5:5f4dcc3b5aa765d61d8327deb882cf99'".to_owned(),
        "UPDATE accounts SET role = 'root'".to_owned(),
    ];
    for statement in &refused {
        assert!(
            backend.sql(statement).await.is_err(),
            "the database allowed: {statement}"
        );
    }
}

async fn sessions_rotate_once_and_a_replay_ends_them(backend: impl Backend) {
    use vellum_archive::ports::{
        AccountChange, AccountStore, NewAccount, NewSession, Refreshed, Role, SecretHash, SessionStore,
    };
    use vellum_protocol::ids::UnixMillis;

    // A session of account [7; 16].
    fn session(
        family_id: [u8; 16],
        refresh: &SecretHash,
        now: UnixMillis,
        expires_at: UnixMillis,
        ends_at: UnixMillis,
    ) -> NewSession<'_> {
        NewSession {
            family_id,
            account_id: [7; 16],
            refresh,
            now,
            expires_at,
            ends_at,
            idp_second_factor: false,
        }
    }

    let store = backend.open_log().await.unwrap();
    let now = UnixMillis(1_764_150_000_000);
    let later = UnixMillis(now.0 + 3_600_000);
    let far = UnixMillis(now.0 + 86_400_000);
    let account = NewAccount {
        account_id: [7; 16],
        username: "auditor".into(),
        role: Role::Auditor,
        password_phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        must_change_password: false,
        external_id: None,
    };
    store.create_account(&account, now).await.unwrap();
    let (family, t1, t2, t3) = (
        [1; 16],
        SecretHash([1; 32]),
        SecretHash([2; 32]),
        SecretHash([3; 32]),
    );
    store
        .start_session(&session(family, &t1, now, later, far))
        .await
        .unwrap();
    let live = store.session_principal(&[7; 16], &family).await.unwrap().unwrap();
    assert_eq!(
        (
            live.role,
            live.live,
            live.totp_enabled,
            live.idp_second_factor,
            live.ends_at
        ),
        (Role::Auditor, true, false, false, far)
    );
    let vouched = ([9; 16], SecretHash([0x90; 32]));
    store
        .start_session(&NewSession {
            idp_second_factor: true,
            ..session(vouched.0, &vouched.1, now, later, far)
        })
        .await
        .unwrap();
    assert!(
        store
            .session_principal(&[7; 16], &vouched.0)
            .await
            .unwrap()
            .unwrap()
            .idp_second_factor
    );
    assert!(store.end_session(&vouched.0, now, "test").await.unwrap());
    assert_eq!(
        store.session_principal(&[8; 16], &family).await.unwrap(),
        None,
        "another account's session"
    );

    assert_eq!(
        store.rotate_refresh(&t1, &t2, now, later).await.unwrap(),
        Refreshed::Rotated {
            account_id: [7; 16],
            family_id: family
        }
    );
    assert_eq!(
        store
            .rotate_refresh(&SecretHash([9; 32]), &t3, now, later)
            .await
            .unwrap(),
        Refreshed::Unknown
    );
    // Replaying the spent token ends the session: its successor is dead too.
    assert_eq!(
        store.rotate_refresh(&t1, &t3, now, later).await.unwrap(),
        Refreshed::Reused { family_id: family }
    );
    assert_eq!(
        store.rotate_refresh(&t2, &t3, now, later).await.unwrap(),
        Refreshed::Ended
    );
    assert!(
        !store
            .session_principal(&[7; 16], &family)
            .await
            .unwrap()
            .unwrap()
            .live
    );

    // Expiry, and a disabled account's sessions.
    let (other, t4) = ([2; 16], SecretHash([4; 32]));
    store
        .start_session(&session(other, &t4, now, UnixMillis(now.0 + 10), far))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh(&t4, &t3, UnixMillis(now.0 + 10), later)
            .await
            .unwrap(),
        Refreshed::Expired
    );
    let (third, t5) = ([3; 16], SecretHash([5; 32]));
    store
        .start_session(&session(third, &t5, now, later, far))
        .await
        .unwrap();
    store
        .update_account(&[7; 16], AccountChange::Disabled(Some(now)))
        .await
        .unwrap();
    assert!(
        !store
            .session_principal(&[7; 16], &third)
            .await
            .unwrap()
            .unwrap()
            .live
    );
    assert_eq!(
        store.rotate_refresh(&t5, &t3, now, later).await.unwrap(),
        Refreshed::Ended
    );
    assert_eq!(store.end_sessions_of(&[7; 16], now, "test").await.unwrap(), 2);

    // Concurrent presentations of one token: one rotation, the rest end the session.
    store
        .update_account(&[7; 16], AccountChange::Disabled(None))
        .await
        .unwrap();
    let (raced, t6) = ([4; 16], SecretHash([6; 32]));
    store
        .start_session(&session(raced, &t6, now, later, far))
        .await
        .unwrap();
    let racers: Vec<_> = (0..8u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_refresh(&t6, &SecretHash([0x80 + n; 32]), now, later)
                    .await
            })
        })
        .collect();
    let mut rotated = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(Refreshed::Rotated { .. }) => rotated += 1,
            Ok(Refreshed::Reused { .. } | Refreshed::Ended) => {}
            Ok(other) => panic!("unexpected: {other:?}"),
            // SQLite may report a busy database to a racer; that racer got nothing.
            Err(_) => {}
        }
    }
    assert_eq!(rotated, 1);
    assert!(
        !store
            .session_principal(&[7; 16], &raced)
            .await
            .unwrap()
            .unwrap()
            .live,
        "the replays did not end the session"
    );

    // A session's absolute end: it rotates before it, and no token outlives it.
    let (bounded, t7, t8) = ([5; 16], SecretHash([0x70; 32]), SecretHash([0x71; 32]));
    let end = UnixMillis(now.0 + 100);
    store
        .start_session(&session(bounded, &t7, now, later, end))
        .await
        .unwrap();
    assert!(matches!(
        store
            .rotate_refresh(&t7, &t8, UnixMillis(now.0 + 50), later)
            .await
            .unwrap(),
        Refreshed::Rotated { .. }
    ));
    assert!(matches!(
        store
            .rotate_refresh(&t8, &SecretHash([0x72; 32]), end, later)
            .await
            .unwrap(),
        Refreshed::Expired | Refreshed::Ended
    ));

    // TOTP steps are used once, in increasing order; recovery codes once.
    assert!(store.use_totp_step(&[7; 16], 100).await.unwrap());
    assert!(!store.use_totp_step(&[7; 16], 100).await.unwrap());
    assert!(!store.use_totp_step(&[7; 16], 99).await.unwrap());
    assert!(store.use_totp_step(&[7; 16], 101).await.unwrap());
    store
        .set_recovery_codes(&[7; 16], &[SecretHash([0x11; 32]), SecretHash([0x12; 32])])
        .await
        .unwrap();
    assert!(
        store
            .use_recovery_code(&[7; 16], &SecretHash([0x11; 32]), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery_code(&[7; 16], &SecretHash([0x11; 32]), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery_code(&[8; 16], &SecretHash([0x12; 32]), now)
            .await
            .unwrap()
    );
    assert_eq!(store.login_failed(&[7; 16]).await.unwrap(), 1);
    assert_eq!(store.login_failed(&[7; 16]).await.unwrap(), 2);
    store
        .update_account(&[7; 16], AccountChange::LoginSucceeded)
        .await
        .unwrap();
    assert_eq!(
        store
            .account_by_id(&[7; 16])
            .await
            .unwrap()
            .unwrap()
            .failed_logins,
        0
    );
}

/// The search index follows the log: filters, keyset pages in every order, counts;
/// and the audit trail reads by subject and by action.
async fn search_pages_through_the_index(backend: impl Backend) {
    use vellum_archive::search::{RecordFilter, RecordQuery, RecordSearch, SortKey, TimeRange};
    use vellum_protocol::blind::BlindToken;
    use vellum_protocol::ids::{Custodian, UnixMillis};

    let (log, blobs) = backend.open().await;
    let archive = open_archive(log.clone(), blobs).await;
    let capturer = Capturer::default();
    const T0: u64 = 1_764_000_000_000;
    // Captured out of log order (i * 7 % 10 hours: two records an hour), so the two
    // sort keys differ and capture times tie.
    let hour = |i: u64| (i * 7) % 10;
    for i in 0..20u64 {
        let submission = capturer.submission_with(RecordId::new_v7(T0 + i), 10, i as u8, |f| {
            f.custodian = Custodian::new(if i % 2 == 0 { "even" } else { "odd" }).unwrap();
            f.captured_at = UnixMillis(T0 + hour(i) * 3_600_000);
            f.tokens = [
                (i % 3 == 0).then_some(BlindToken([3; 16])),
                (i % 4 == 0).then_some(BlindToken([4; 16])),
            ]
            .into_iter()
            .flatten()
            .collect();
        });
        archive.append(submission).await.unwrap();
        archive.audit(audit_event(i)).await.unwrap();
    }
    let query = |filter: RecordFilter, sort: SortKey, ascending: bool| RecordQuery {
        filter,
        sort,
        ascending,
        after: None,
        limit: 3,
        count: true,
    };
    let tokens = RecordFilter {
        tokens: vec![BlindToken([3; 16]), BlindToken([4; 16])],
        ..RecordFilter::default()
    };
    let even_tokens = RecordFilter {
        custodians: vec![Custodian::new("even").unwrap()],
        captured: TimeRange {
            from: Some(UnixMillis(T0 + 3_600_000)),
            to: None,
        },
        ..tokens.clone()
    };
    // With custodians and tokens, the store drives the scan from whichever has fewer
    // rows: both custodians (20 rows, more than the tokens' 12) or one (fewer).
    let both_tokens = RecordFilter {
        custodians: vec![Custodian::new("even").unwrap(), Custodian::new("odd").unwrap()],
        ..tokens.clone()
    };
    for filter in [RecordFilter::default(), tokens, even_tokens, both_tokens] {
        // The records the filter selects, by the rule the store must follow.
        let expected: Vec<u64> = (0..20u64)
            .filter(|i| {
                let t3 = i % 3 == 0;
                let t4 = i % 4 == 0;
                let tokens_ok = filter.tokens.is_empty() || t3 || t4;
                let custodian_ok = filter.custodians.is_empty() || filter.custodians.len() == 2 || i % 2 == 0;
                let time_ok = filter
                    .captured
                    .from
                    .is_none_or(|f| T0 + hour(*i) * 3_600_000 >= f.0);
                tokens_ok && custodian_ok && time_ok
            })
            .collect();
        for (sort, ascending) in [
            (SortKey::Captured, true),
            (SortKey::Captured, false),
            (SortKey::Logged, true),
            (SortKey::Logged, false),
        ] {
            let mut want = expected.clone();
            match sort {
                SortKey::Captured => want.sort_by_key(|i| (hour(*i), *i)),
                SortKey::Logged => want.sort(),
            }
            if !ascending {
                want.reverse();
            }
            let mut q = query(filter.clone(), sort, ascending);
            let mut got = Vec::new();
            loop {
                let page = log.search(&q).await.unwrap();
                let total = page.total.unwrap();
                assert_eq!((total.count, total.more), (expected.len() as u64, false));
                assert!(page.records.len() <= 3);
                // Audit events are leaves too: record i sits at leaf 2 i.
                got.extend(page.records.iter().map(|r| r.leaf_index / 2));
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            assert_eq!(got, want, "{filter:?} {sort:?} ascending={ascending}");
        }
    }
    // Every summary carries its header's fields.
    let first = log
        .search(&query(RecordFilter::default(), SortKey::Logged, true))
        .await
        .unwrap();
    let r = &first.records[0];
    assert_eq!(
        (r.custodian.as_str(), r.channel.as_str(), r.retention.as_str()),
        ("even", "signal", "finra-6y")
    );
    let stored = archive.record(r.record_id).await.unwrap().unwrap();
    assert_eq!((stored.leaf_index, stored.body.len), (r.leaf_index, r.body_len));

    let by_subject = log.audit_of(&audit_event(4).subject, 0, 100).await.unwrap();
    assert!(
        by_subject
            .iter()
            .all(|(_, e)| e.subject == audit_event(4).subject)
    );
    assert!(by_subject.iter().any(|(_, e)| *e == audit_event(4)));
    let by_action = log.audit_by_action(&audit_event(0).action, 0, 5).await.unwrap();
    assert_eq!(by_action.len(), 5);
    assert!(by_action.windows(2).all(|w| w[0].0 < w[1].0));
    // The newest event of one action about one subject, among others about it.
    use vellum_archive::ports::AuditEvent;
    for (actor, action) in [
        ("a", "login"),
        ("a", "account.role"),
        ("b", "account.role"),
        ("c", "login"),
    ] {
        let event = AuditEvent {
            actor: actor.into(),
            action: action.into(),
            subject: "an-account".into(),
            ..audit_event(0)
        };
        archive.audit(event).await.unwrap();
    }
    let last = log
        .last_audit("an-account", "account.role")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.1.actor.as_str(), last.1.action.as_str()),
        ("b", "account.role")
    );
    assert_eq!(
        log.last_audit("an-account", "account.create").await.unwrap(),
        None
    );
    archive.close().await;
}

/// Records archived before the search index existed (their rows removed here, as a
/// database from before migration 5 lacks them) are indexed when the store opens.
async fn older_records_are_indexed_at_open(backend: impl Backend) {
    use vellum_archive::search::{RecordQuery, RecordSearch};
    let capturer = Capturer::default();
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log.clone(), blobs).await;
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let submission = capturer.submission_with(RecordId::new_v7(1_764_000_000_000 + n), 10, 1, |f| {
            f.tokens = vec![vellum_protocol::blind::BlindToken([n as u8; 16])];
        });
        ids.push(submission.header.fields().record_id);
        archive.append(submission).await.unwrap();
    }
    archive.close().await;
    drop((archive, log));
    // As a database from before migration 5: no index rows, the backfill pending.
    for statement in [
        "DELETE FROM record_tokens WHERE leaf_index >= 2",
        "DELETE FROM record_index WHERE leaf_index >= 2",
        "UPDATE search_backfill SET done = 0",
    ] {
        backend.sql(statement).await.unwrap();
    }
    let query = |tokens| RecordQuery {
        filter: vellum_archive::search::RecordFilter {
            tokens,
            ..Default::default()
        },
        sort: vellum_archive::search::SortKey::Logged,
        ascending: true,
        after: None,
        limit: 100,
        count: false,
    };
    let log = backend.open_log().await.unwrap();
    let found = log.search(&query(vec![])).await.unwrap();
    let found: Vec<RecordId> = found.records.iter().map(|r| r.record_id).collect();
    assert_eq!(found, ids);
    let by_token = log
        .search(&query(vec![vellum_protocol::blind::BlindToken([3; 16])]))
        .await
        .unwrap();
    assert_eq!(
        by_token.records.iter().map(|r| r.record_id).collect::<Vec<_>>(),
        [ids[3]]
    );
}

/// One test per story, for one backend.
macro_rules! stories {
    ($backend:expr; $($story:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $story() {
                super::$story($backend).await;
            }
        )*
    };
}

macro_rules! conformance {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            stories!($backend;
                append_and_read_back,
                concurrent_appends_share_batches,
                retries_get_the_same_receipt_and_conflicts_are_refused,
                a_restart_resumes_the_same_log,
                a_corrupted_blob_is_never_returned,
                uploaded_bodies_are_checked_and_nothing_partial_stays,
                a_body_stored_for_another_header_is_refused,
                failed_writes_leave_nothing_and_retries_succeed,
                a_newer_schema_is_refused,
                the_log_and_audit_trail_are_append_only,
                two_gateways_share_one_log,
                audit_events_are_leaves_of_the_log,
                devices_enroll_once_and_revocation_is_final,
                accounts_have_unique_names_and_are_never_deleted,
                keyrings_are_consecutive_and_wrapped_keys_are_kept,
                sessions_rotate_once_and_a_replay_ends_them,
                search_pages_through_the_index,
                older_records_are_indexed_at_open,
            );
        }
    };
}

conformance!(
    sqlite_local,
    Combo {
        meta: SqliteMeta::new(),
        blobs: LocalBlobs::new()
    }
);
conformance!(
    postgres_local,
    Combo {
        meta: PgMeta::new().await,
        blobs: LocalBlobs::new()
    }
);
conformance!(
    sqlite_s3,
    Combo {
        meta: SqliteMeta::new(),
        blobs: S3Blobs::new()
    }
);
conformance!(
    postgres_s3,
    Combo {
        meta: PgMeta::new().await,
        blobs: S3Blobs::new()
    }
);

/// Without Object Lock, S3 takes large blobs as multipart uploads: the upload stories
/// again, on that path.
mod sqlite_s3_multipart {
    use super::*;

    stories!(Combo { meta: SqliteMeta::new(), blobs: S3Blobs::unlocked() };
        uploaded_bodies_are_checked_and_nothing_partial_stays,
        a_body_stored_for_another_header_is_refused,
        a_corrupted_blob_is_never_returned,
    );
}

/// The pipeline: a batch prepared while an earlier batch's commit is failing does not
/// depend on it. The failed batch leaves nothing, the next one lands right after
/// what was stored, and a retry of the failed one lands after that.
#[tokio::test]
async fn a_failed_commit_does_not_take_the_next_batch_with_it() {
    let gated = Gated::new().await;
    let (log, archive) = (&gated.log, &gated.archive);
    let capturer = Capturer::default();
    archive.append(capturer.submission(10)).await.unwrap();

    // Hold commits, so that batch A waits in the committer while B is prepared.
    let gate = log.gate.clone().lock_owned().await;
    log.fail_before.store(true, Ordering::SeqCst);
    let (a, b) = (capturer.submission(10), capturer.submission(10));
    let first = gated.start_append(&a).await;
    let second = gated.start_append(&b).await;
    drop(gate);

    assert!(matches!(first.await.unwrap(), Err(AppendError::Store(_))));
    let receipt = second.await.unwrap().unwrap();
    assert_eq!(
        check_receipt(&receipt, &b),
        1,
        "the next batch did not land after the stored log"
    );
    assert_eq!(
        log.log_size().await.unwrap(),
        2,
        "something of the failed batch was kept"
    );
    let retried = archive.append(a.clone()).await.unwrap();
    assert_eq!(check_receipt(&retried, &a), 2);
    assert_eq!(archive.append(b.clone()).await.unwrap(), receipt);
    archive.close().await;
}

/// Records another gateway stores while this one's batches are under way get that
/// gateway's receipt, not a second leaf: one batch waits for the lock while the other
/// gateway stores its record (found when the log is read back), and the batch queued
/// behind it was classified before that read-back (checked again under the lock, even
/// though the log has not moved since).
#[tokio::test]
async fn records_stored_by_another_gateway_meanwhile_get_its_receipt() {
    let gated = Gated::new().await;
    let (backend, first) = (&gated.backend, &gated.archive);
    let second = open_archive(backend.open_log().await.unwrap(), backend.open_second_blobs()).await;
    let capturer = Capturer::default();

    let gate = gated.log.gate.clone().lock_owned().await;
    let (x, r) = (capturer.submission(10), capturer.submission(10));
    let waiting = gated.start_append(&x).await;
    let queued = gated.start_append(&r).await;
    let stored_x = second.append(x.clone()).await.unwrap();
    let stored_r = second.append(r.clone()).await.unwrap();
    drop(gate);

    assert_eq!(waiting.await.unwrap().unwrap(), stored_x);
    assert_eq!(queued.await.unwrap().unwrap(), stored_r);
    let next = capturer.submission(10);
    let receipt = first.append(next.clone()).await.unwrap();
    assert_eq!(check_receipt(&receipt, &next), 2, "a record got a second leaf");
    first.close().await;
    second.close().await;
}
