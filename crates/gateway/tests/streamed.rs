//! Captures larger than `Limits::stream_over_bytes`, over the router and a real
//! archive: the body goes to the blob store as it arrives, in whatever pieces the
//! connection delivers, and a body cut off or not matching its header leaves nothing.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use support::*;
use vellum_archive::ports::LogStore as _;
use vellum_protocol::ids::{DeviceId, RecordId};
use vellum_protocol::receipt::Receipt;
use vellum_protocol::seal::{self, Identity};

/// A capture whose body arrives as `pieces`, then ends (or fails, with `fail`).
async fn capture_in_pieces(
    f: &Fixture,
    credential: &str,
    len: usize,
    pieces: Vec<Vec<u8>>,
    fail: bool,
) -> (StatusCode, String, String) {
    let mut items: Vec<Result<Bytes, std::io::Error>> =
        pieces.into_iter().map(|p| Ok(Bytes::from(p))).collect();
    if fail {
        items.push(Err(std::io::Error::other("connection reset")));
    }
    let request = Request::post("/v1/records")
        .header(header::CONTENT_TYPE, vellum_gateway::RECORD_MEDIA_TYPE)
        .header(header::CONTENT_LENGTH, len)
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .body(Body::from_stream(futures_util::stream::iter(items)))
        .unwrap();
    send(&f.app, request).await
}

/// A frame split into small pieces at first (the header arrives in many), larger after.
fn pieces(frame: &[u8]) -> Vec<Vec<u8>> {
    let (head, rest) = frame.split_at(frame.len().min(20_000));
    head.chunks(777)
        .chain(rest.chunks(100_000))
        .map(<[u8]>::to_vec)
        .collect()
}

/// A sealed record of `len` plaintext bytes: its frame and header digest.
fn large_record(key: &vellum_protocol::keys::DeviceKey, n: u64, len: usize) -> (Vec<u8>, RecordId, [u8; 32]) {
    large_record_of(key, RecordId::new_v7(1_764_150_000_000 + n), len, n as u8)
}

/// [`large_record`] under record id `id`, of plaintext bytes `fill`.
fn large_record_of(
    key: &vellum_protocol::keys::DeviceKey,
    id: RecordId,
    len: usize,
    fill: u8,
) -> (Vec<u8>, RecordId, [u8; 32]) {
    let body = seal::seal(&[Identity::generate().to_public()], &vec![fill; len]).unwrap();
    let header = signed_header(key, DeviceId::parse(DEVICE).unwrap(), id, body.digest());
    let digest = vellum_protocol::header::UnverifiedHeader::parse(&header)
        .unwrap()
        .verify(&key.public())
        .unwrap()
        .digest();
    (frame(&header, body.as_bytes()), id, digest)
}

#[tokio::test]
async fn a_large_capture_is_streamed_into_a_blob_of_its_own() {
    let f = fixture().await;
    let (key, credential) = enrolled_device(&f).await;
    let (framed, id, header_digest) = large_record(&key, 1, 3 << 20);

    let answer = capture_in_pieces(&f, &credential, framed.len(), pieces(&framed), false).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    let receipt = Receipt::parse(answer.2.as_bytes()).unwrap();
    // Leaf 0 is the device's enrollment.
    assert_eq!(receipt.verify(&f.log_key, &id, &header_digest).unwrap().index, 1);
    let stored = f.gateway.archive().record(id).await.unwrap().unwrap();
    assert!(stored.blob.0.starts_with("sha256/"), "{:?}", stored.blob);
    let header_len = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
    let body = f.gateway.archive().body(&stored).await.unwrap();
    assert_eq!(body.as_bytes(), &framed[4 + header_len..]);
    assert_eq!((large_blobs(&f), unfinished_uploads(&f)), (1, 0));

    // A retry gets the same receipt, another body under the id its conflict, and
    // neither stores anything; a small capture goes the batched way beside them.
    let again = capture_in_pieces(&f, &credential, framed.len(), pieces(&framed), false).await;
    assert_eq!((again.0, &again.2), (StatusCode::OK, &answer.2));
    let (rival, _, _) = large_record_of(&key, id, 3 << 20, 0xEE);
    let conflict = capture_in_pieces(&f, &credential, rival.len(), pieces(&rival), false).await;
    assert_problem(&conflict, StatusCode::CONFLICT);
    assert_eq!((large_blobs(&f), unfinished_uploads(&f)), (1, 0));
    let small = submission_of(&key, DeviceId::parse(DEVICE).unwrap(), 2);
    let framed = frame(small.header.as_bytes(), small.body.sealed().unwrap().as_bytes());
    assert_eq!(capture(&f, Some(&credential), framed).await.0, StatusCode::OK);
    // The enrollment's leaf, and the two records.
    assert_eq!(f.gateway.archive().log_store().log_size().await.unwrap(), 3);
    assert_eq!(large_blobs(&f), 1);
}

#[tokio::test]
async fn a_streamed_body_cut_off_or_damaged_leaves_nothing() {
    let f = fixture().await;
    let (key, credential) = enrolled_device(&f).await;
    let (framed, id, _) = large_record(&key, 1, 2 << 20);

    // The connection fails half-way.
    let half = pieces(&framed[..framed.len() / 2]);
    let cut = capture_in_pieces(&f, &credential, framed.len(), half, true).await;
    assert_problem(&cut, StatusCode::BAD_REQUEST);
    // One byte changed on the way: the digest shows it once the body is whole.
    let mut damaged = framed.clone();
    let at = damaged.len() - 100;
    damaged[at] ^= 1;
    let bad = capture_in_pieces(&f, &credential, damaged.len(), pieces(&damaged), false).await;
    assert_problem(&bad, StatusCode::BAD_REQUEST);
    assert!(bad.2.contains("digest"), "{}", bad.2);
    assert_eq!((large_blobs(&f), unfinished_uploads(&f)), (0, 0));
    assert!(f.gateway.archive().record(id).await.unwrap().is_none());
    // Only the enrollment's leaf.
    assert_eq!(f.gateway.archive().log_store().log_size().await.unwrap(), 1);

    // The same capture, whole, is archived.
    let whole = capture_in_pieces(&f, &credential, framed.len(), pieces(&framed), false).await;
    assert_eq!(whole.0, StatusCode::OK, "{}", whole.2);
}
