//! Object Lock on S3: every blob, written with its batch or uploaded as a stream, is
//! locked in COMPLIANCE mode for at least its record's retention and cannot be
//! deleted before then; a class with no configured period is
//! refused before anything is stored. Checked with boto3, an S3 client independent of
//! the one that wrote the blobs.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use support::*;
use vellum_archive::AppendError;
use vellum_protocol::ids::RecordId;

const DAY_MS: u64 = 86_400_000;

#[tokio::test]
async fn blobs_are_locked_for_their_retention_and_cannot_be_deleted() {
    let backend = Combo {
        meta: SqliteMeta::new(),
        blobs: S3Blobs::new(),
    };
    let (log, blobs) = backend.open().await;
    let archive = open_archive(log, blobs).await;
    let capturer = Capturer::default();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    let classes = [("finra-6y", 6 * 366), ("permanent", 100 * 366)];
    for ((class, days), uploaded) in classes.iter().flat_map(|c| [(*c, false), (*c, true)]) {
        let id = RecordId::new_v7(before + days + u64::from(uploaded));
        let submission = capturer.submission_in(class, id, 300 + usize::from(uploaded) * (6 << 20), 1);
        if uploaded {
            let mut upload = archive.upload(submission.header.clone()).await.unwrap();
            upload
                .write(submission.body.sealed().unwrap().as_bytes())
                .await
                .unwrap();
            archive.append(upload.finish().await.unwrap()).await.unwrap();
        } else {
            archive.append(submission.clone()).await.unwrap();
        }
        let record = archive
            .record(submission.header.fields().record_id)
            .await
            .unwrap()
            .unwrap();

        let key = record
            .blob
            .0
            .split_once('#')
            .map_or(record.blob.0.as_str(), |(key, _)| key);
        let retention = s3ctl(&["retention", &backend.blobs.bucket, key]);
        let (mode, until) = retention.trim().split_once(' ').unwrap();
        assert_eq!(mode, "COMPLIANCE");
        let minimum = vellum_protocol::time::rfc3339(before + days * DAY_MS);
        // Same fixed-width format, so text order is time order.
        assert!(
            until >= minimum.as_str(),
            "{class}: locked until {until}, needs at least {minimum}"
        );

        let deleted = s3ctl(&["delete-versions", &backend.blobs.bucket, key]);
        assert!(
            !deleted.is_empty() && deleted.lines().all(|l| l.starts_with("refused")),
            "{deleted}"
        );
        assert_eq!(archive.body(&record).await.unwrap(), submission.body);
    }

    let unknown = capturer.submission_in("unlisted-class", RecordId::new_v7(before), 300, 2);
    assert!(matches!(
        archive.append(unknown.clone()).await,
        Err(AppendError::UnsupportedRetention(class)) if class.as_str() == "unlisted-class"
    ));
    assert!(matches!(
        archive.upload(unknown.header.clone()).await,
        Err(AppendError::UnsupportedRetention(_))
    ));
    assert!(
        archive
            .record(unknown.header.fields().record_id)
            .await
            .unwrap()
            .is_none()
    );
    archive.close().await;
}
