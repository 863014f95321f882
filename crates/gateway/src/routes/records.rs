//! Capture: a device submits a signed header and the sealed body it describes; the
//! answer is the receipt, given only once the record is durable (invariant I5).
//!
//! The body is `application/vnd.vellum.record`: the header's length as a big-endian
//! `u32`, the header bytes exactly as signed, then the sealed body (an age file).
//!
//! A capture up to [`Limits::stream_over_bytes`](crate::Limits) is read whole and
//! checked in memory, and its body is stored with the sequencer's batch. A larger one
//! is streamed: its header is read and verified first, then its body goes to the blob
//! store as it arrives ([`vellum_archive::Upload`], which hashes it on the way and
//! keeps it only if it matches the header), so the gateway holds a few MiB of it at
//! any time, however large it is.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use vellum_archive::ports::BlobUpload;
use vellum_archive::ports::Device;
use vellum_archive::ports::{BlobStore, DeviceStore, SecretHash};
use vellum_archive::{AppendError, Submission, Upload};
use vellum_protocol::header::{MAX_HEADER_LEN, UnverifiedHeader, VerifiedHeader};
use vellum_protocol::ids::{Epoch, RetentionClass};
use vellum_protocol::receipt::Receipt;
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
    let streaming = declared > state.limits().stream_over_bytes;
    // A budget bounds the capture bytes held in memory at once, whatever the number of
    // requests: a capture read whole holds its size until it is archived; a streamed
    // one what its upload holds.
    let holds = match streaming {
        true => usize::try_from(state.archive().upload_holds(declared as u64))
            .unwrap_or(usize::MAX)
            .saturating_add(STREAM_HEAD_BYTES),
        false => declared,
    };
    let _budget = state.reserve_body(holds).await?;
    let submission = if streaming {
        match streamed(&state, &device, &credential, body, declared).await? {
            Streamed::New(submission) => submission,
            Streamed::Archived(receipt) => return Ok(text(receipt.to_text())),
        }
    } else {
        let bytes = read_limited(body, declared).await?;
        let check = |epoch| checked(&bytes, &device, epoch);
        let submission = with_current_epoch(&state, check).await?;
        still_enrolled(&state, &credential).await?;
        submission
    };
    if device.retention.is_empty() {
        bind_first_class(&state, &device, &submission.header.fields().retention).await?;
    }
    let record_id = submission.header.fields().record_id;
    let receipt = state.archive().append(submission).await?;
    // Debug, not info: the request's own line already logs each capture, and at tens
    // of thousands a second a second line costs throughput (docs/performance.md).
    tracing::debug!(
        record = %record_id,
        device = %device.device_id,
        bytes = declared,
        "record archived"
    );
    Ok(text(receipt.to_text()))
}

/// Binds a device enrolled before bindings existed, which had archived nothing, to the
/// retention class of its first capture: what its enrollment bundle wrote into every
/// header it signs. Audited; the device cache forgets it, so the binding holds at once.
async fn bind_first_class<L: super::keys::KeysStore + DeviceStore, B: BlobStore>(
    state: &State<L, B>,
    device: &Device,
    class: &RetentionClass,
) -> Result<(), ApiError> {
    let store = state.archive().log_store();
    store
        .bind_retention(&device.device_id, std::slice::from_ref(class))
        .await?;
    state.forget_device(&device.device_id);
    let subject = device.device_id.to_string();
    let detail = serde_json::json!({ "retention": [class.as_str()], "by": "first capture" });
    crate::auth::admin::audit(state.archive(), &subject, "device.retention", &subject, detail).await?;
    Ok(())
}

/// What a streamed capture comes to before the sequencer.
enum Streamed {
    /// A body stored and checked, for the sequencer.
    New(Submission),
    /// The record was archived already with this header (a client's retry): its
    /// receipt, and the body was not read.
    Archived(Receipt),
}

/// What a streamed capture holds in memory besides its upload: the frame's head and
/// the bytes of one read.
const STREAM_HEAD_BYTES: usize = 1 << 20;

/// Runs `check` under the current keyring epoch. When it answers that the record is
/// sealed under another epoch, perhaps another gateway published a newer keyring:
/// this one takes it up and checks once more.
async fn with_current_epoch<L, B, T, F>(
    state: &State<L, B>,
    check: impl Fn(Epoch) -> F,
) -> Result<T, ApiError>
where
    L: super::keys::KeysStore + DeviceStore,
    B: BlobStore,
    F: Future<Output = Result<T, ApiError>>,
{
    let epoch = state.keyring().statement().epoch;
    match check(epoch).await {
        Err(ApiError::Conflict(why)) => {
            let current = super::keys::refresh_keyring(state).await?.statement().epoch;
            if current == epoch {
                return Err(ApiError::Conflict(why));
            }
            check(current).await
        }
        other => other,
    }
}

/// The body may have taken a while to arrive: a device revoked meanwhile is refused
/// (as soon as this gateway knows: see `Limits::device_cache`).
async fn still_enrolled<L: super::keys::KeysStore + DeviceStore, B: BlobStore>(
    state: &State<L, B>,
    credential: &SecretHash,
) -> Result<(), ApiError> {
    let current = state.device(credential).await?;
    if current.is_none_or(|d| d.revoked_at.is_some()) {
        return Err(ApiError::Forbidden("this device was revoked".into()));
    }
    Ok(())
}

/// A capture too large to hold: the frame's head (length and header) is read and the
/// header verified, then the body is streamed into the blob store. Refused before
/// anything is stored when the header does not verify or does not describe a body of
/// the frame's length; nothing stays when the body turns out not to match it.
async fn streamed<L: super::keys::KeysStore + DeviceStore, B: BlobStore>(
    state: &State<L, B>,
    device: &Device,
    credential: &SecretHash,
    body: Body,
    declared: usize,
) -> Result<Streamed, ApiError> {
    let mut frames = Frames(body);
    let (header_bytes, first) = read_head(&mut frames).await?;
    let header = with_current_epoch(state, |epoch| {
        let checked = check_header(&header_bytes, device, epoch);
        async move { checked }
    })
    .await?;
    // Hyper delivers no more than the declared length; checked all the same.
    let body_len = declared
        .checked_sub(4 + header_bytes.len())
        .ok_or_else(|| bad_frame("longer than its Content-Length"))?;
    if header.fields().body.len != body_len as u64 {
        return Err(AppendError::body_mismatch().into());
    }
    // Known record ids are answered before any body byte is stored: a retry gets its
    // receipt, another header under the id its conflict, and neither leaves a blob.
    let id = header.fields().record_id;
    if let Some(stored) = state.archive().record(id).await? {
        if stored.header_sha256 != header.digest() {
            return Err(AppendError::Conflict(id).into());
        }
        return Ok(Streamed::Archived(state.archive().receipt(&stored).await?));
    }
    let mut upload = state.archive().upload(header).await?;
    let written = match write_body(&mut upload, &first, &mut frames).await {
        Ok(()) => still_enrolled(state, credential).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => Ok(Streamed::New(upload.finish().await?)),
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

async fn write_body<U: BlobUpload>(
    upload: &mut Upload<U>,
    first: &[u8],
    frames: &mut Frames,
) -> Result<(), ApiError> {
    upload.write(first).await?;
    while let Some(chunk) = frames.next().await? {
        upload.write(&chunk).await?;
    }
    Ok(())
}

/// A request body read frame by frame.
struct Frames(Body);

impl Frames {
    /// The next bytes, `None` at the end; 400 when the body cannot be read.
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(_)) => {
                    return Err(ApiError::BadRequest("the body could not be read whole".into()));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Reads a frame's length prefix and header; returns the header and the bytes read
/// past it (the body's first).
async fn read_head(frames: &mut Frames) -> Result<(Bytes, Bytes), ApiError> {
    let mut head = Vec::new();
    loop {
        if let Some(len) = header_len(&head)?
            && head.len() >= 4 + len
        {
            let head = Bytes::from(head);
            return Ok((head.slice(4..4 + len), head.slice(4 + len..)));
        }
        match frames.next().await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return Err(bad_frame("shorter than its header")),
        }
    }
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
    let header = check_header(&header, device, epoch)?;
    let body =
        SealedBody::from_bytes(body.to_vec()).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    if body.digest() != header.fields().body {
        return Err(AppendError::body_mismatch().into());
    }
    Ok(Submission {
        header,
        body: body.into(),
    })
}

/// The header's signature by `device`, its epoch and its custodian.
fn check_header(header: &[u8], device: &Device, epoch: Epoch) -> Result<VerifiedHeader, ApiError> {
    let unverified =
        UnverifiedHeader::parse(header).map_err(|e| ApiError::BadRequest(format!("header: {e}")))?;
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
    let class = &header.fields().retention;
    if !device.retention.is_empty() && !device.retention.contains(class) {
        let bound: Vec<&str> = device.retention.iter().map(RetentionClass::as_str).collect();
        return Err(ApiError::Forbidden(format!(
            "this device archives under retention class {}, not {}: an administrator changes its binding \
             with `vellum admin device set-retention`",
            bound.join(", "),
            class.as_str()
        )));
    }
    Ok(header)
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

fn bad_frame(what: &str) -> ApiError {
    ApiError::BadRequest(format!("capture frame: {what}"))
}

/// The header length a frame's prefix declares; `None` before four bytes.
fn header_len(bytes: &[u8]) -> Result<Option<usize>, ApiError> {
    let Some(prefix) = bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HEADER_LEN {
        return Err(bad_frame("header longer than any valid header"));
    }
    Ok(Some(len))
}

/// The header and the body of a capture frame.
fn split_frame(bytes: &Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let len = header_len(bytes)?.ok_or_else(|| bad_frame("shorter than its length prefix"))?;
    if bytes.len() < 4 + len {
        return Err(bad_frame("shorter than its header"));
    }
    Ok((bytes.slice(4..4 + len), bytes.slice(4 + len..)))
}
