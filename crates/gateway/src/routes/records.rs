//! Capture: a device submits a signed header and the sealed body it describes; the
//! answer is the receipt, given only once the record is durable (invariant I5).
//!
//! The body is `application/vnd.vellum.record`: the header's length as a big-endian
//! `u32`, the header bytes exactly as signed, then the sealed body (an age file).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use vellum_archive::Submission;
use vellum_archive::ports::Device;
use vellum_archive::ports::{BlobStore, DeviceStore};
use vellum_protocol::header::{MAX_HEADER_LEN, UnverifiedHeader};
use vellum_protocol::ids::Epoch;
use vellum_protocol::seal::SealedBody;

use super::text;
use crate::State;
use crate::device::EnrolledDevice;
use crate::problem::{ApiError, Problem};

/// The media type of a capture.
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.vellum.record";

/// `POST /v1/records`: archives one capture of the authenticated device.
#[utoipa::path(post, path = "/v1/records", tag = "capture",
    request_body(content = Vec<u8>, content_type = "application/vnd.vellum.record",
        description = "u32 big-endian header length, the signed header, the sealed body (docs/formats.md)."),
    security(("device_credential" = [])),
    responses(
    (status = 200, description = "Durable; the receipt, a c2sp.org/tlog-proof@v1.", body = String, content_type = "text/plain"),
    (status = 400, description = "Malformed frame, header, signature, body or digest.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid device credential.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Another device's or custodian's record, or a revoked device.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Record id archived with other bytes, or a keyring epoch that is not current.", body = Problem, content_type = "application/problem+json"),
    (status = 411, description = "No Content-Length.", body = Problem, content_type = "application/problem+json"),
    (status = 413, description = "Over the size limit.", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Retention class not configured.", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "Busy (the buffered-bytes budget or the concurrency limit), or storage unavailable; retry.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn capture<L: super::keys::KeysStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    EnrolledDevice { device, credential }: EnrolledDevice,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let media_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if media_type != Some(RECORD_MEDIA_TYPE) {
        return Err(ApiError::BadRequest(format!(
            "the body must be {RECORD_MEDIA_TYPE}"
        )));
    }
    let limit = state.limits().max_capture_bytes;
    let declared = declared_length(&headers, limit)?;
    // Bodies are held in memory while checked and stored: a budget bounds the bytes
    // held at once, whatever the number of requests.
    let _budget = state.reserve_body(declared).await?;
    let bytes = read_limited(body, declared).await?;
    let frame_bytes = bytes.len();
    let epoch = state.keyring().statement().epoch;
    let submission = match checked(&bytes, &device, epoch).await {
        // Sealed under another epoch: perhaps another gateway published a newer
        // keyring; take it up, and check once more.
        Err(ApiError::Conflict(why)) => {
            let current = super::keys::refresh_keyring(&state).await?.statement().epoch;
            if current == epoch {
                return Err(ApiError::Conflict(why));
            }
            checked(&bytes, &device, current).await?
        }
        other => other?,
    };
    // The body may have taken a while to arrive: a device revoked meanwhile is refused
    // (as soon as this gateway knows: see `Limits::device_cache`).
    let current = state.device(&credential).await?;
    if current.is_none_or(|d| d.revoked_at.is_some()) {
        return Err(ApiError::Forbidden("this device was revoked".into()));
    }
    let record_id = submission.header.fields().record_id;
    let receipt = state.archive().append(submission).await?;
    // Debug, not info: the request's own line already logs each capture, and at tens
    // of thousands a second a second line costs throughput (docs/performance.md).
    tracing::debug!(
        record = %record_id,
        device = %device.device_id,
        bytes = frame_bytes,
        "record archived"
    );
    Ok(text(receipt.to_text()))
}

/// Captures up to this size are checked on the runtime's thread.
const INLINE_CHECK_BYTES: usize = 256 * 1024;

/// Everything the gateway can check of a capture without storage: the frame, the
/// header and its signature by `device`, the epoch and custodian, the body's shape
/// and digest.
/// [`check`], off the runtime's worker when the body is large (hashing and verifying
/// it would stall the worker).
async fn checked(bytes: &Bytes, device: &Device, epoch: Epoch) -> Result<Submission, ApiError> {
    if bytes.len() <= INLINE_CHECK_BYTES {
        return check(bytes, device, epoch);
    }
    let (bytes, device) = (bytes.clone(), device.clone());
    tokio::task::spawn_blocking(move || check(&bytes, &device, epoch))
        .await
        .map_err(|_| ApiError::Internal)?
}

fn check(bytes: &Bytes, device: &Device, epoch: Epoch) -> Result<Submission, ApiError> {
    let (header, body) = split_frame(bytes)?;
    let unverified =
        UnverifiedHeader::parse(&header).map_err(|e| ApiError::BadRequest(format!("header: {e}")))?;
    if unverified.claimed_device() != device.device_id {
        return Err(ApiError::Forbidden("the header names another device".into()));
    }
    let header = unverified.verify(&device.public_key).map_err(|_| {
        ApiError::BadRequest("the header signature does not verify under this device's key".into())
    })?;
    if header.fields().epoch != epoch {
        return Err(ApiError::Conflict(format!(
            "the record is sealed under keyring epoch {}, but the current epoch is {epoch}: \
             fetch /v1/keyring and seal again",
            header.fields().epoch
        )));
    }
    if header.fields().custodian != device.custodian {
        return Err(ApiError::Forbidden(
            "the header names a custodian this device was not enrolled for".into(),
        ));
    }
    let body =
        SealedBody::from_bytes(body.to_vec()).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    if body.digest() != header.fields().body {
        return Err(ApiError::BadRequest(
            "the body's digest or length does not match the header".into(),
        ));
    }
    Ok(Submission { header, body })
}

/// The declared length of the body: required (a capture's size is known before it is
/// sent), and refused with 413 above `limit`.
fn declared_length(headers: &HeaderMap, limit: usize) -> Result<usize, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(ApiError::LengthRequired)?;
    if declared > limit as u64 {
        return Err(ApiError::TooLarge(format!("a capture is at most {limit} bytes")));
    }
    Ok(declared as usize)
}

/// Reads exactly the declared body; 400 when it cannot be read whole.
async fn read_limited(body: Body, declared: usize) -> Result<Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, declared)
        .await
        .map_err(|_| ApiError::BadRequest("the body could not be read whole".into()))?;
    if bytes.len() != declared {
        return Err(ApiError::BadRequest(
            "the body is shorter than its Content-Length".into(),
        ));
    }
    Ok(bytes)
}

/// The header and the body of a capture frame.
fn split_frame(bytes: &Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let bad = |what: &str| ApiError::BadRequest(format!("capture frame: {what}"));
    let len: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("shorter than its length prefix"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER_LEN {
        return Err(bad("header longer than any valid header"));
    }
    if bytes.len() < 4 + len {
        return Err(bad("shorter than its header"));
    }
    Ok((bytes.slice(4..4 + len), bytes.slice(4 + len..)))
}
