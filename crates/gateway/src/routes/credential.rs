//! Credential rotation: a device replaces its bearer credential with a new one it
//! generated. The device keeps the new one as pending before it asks, so an answer
//! lost on the way cannot lock it out: it tries the pending one next.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::ToSchema;
use vellum_archive::ports::{BlobStore, DeviceStore, LogStore};
use vellum_protocol::ids::UnixMillis;
use vellum_protocol::keys::Rotation;

use crate::State;
use crate::device::{EnrolledDevice, hash_secret};
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    /// The new credential: 32 random bytes the device generated, base64url.
    credential: String,
    /// When the device asked, Unix ms: within 5 minutes of the gateway's clock.
    at: u64,
    /// 16 random bytes, base64url, fresh for each request.
    nonce: String,
    /// The device key's Ed25519 signature over the rotation (docs/formats.md), base64url.
    signature: String,
}

/// How far a rotation's time may be from the gateway's clock.
const ROTATION_SKEW_MS: u64 = 5 * 60 * 1000;

/// `POST /v1/devices/credential`: replaces the presented credential.
#[utoipa::path(post, path = "/v1/devices/credential", tag = "capture", request_body = RotateRequest,
    security(("device_credential" = [])),
    responses(
    (status = 204, description = "Rotated: the presented credential no longer works, the new one does."),
    (status = 400, description = "Not 32 bytes of base64url, the same credential, a malformed signature or nonce, or a time more than 5 minutes off.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid device credential.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "The device was revoked, or the device key did not sign this rotation.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The credential changed meanwhile, or the new one is taken.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn rotate<L: LogStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    EnrolledDevice { device, credential }: EnrolledDevice,
    body: Result<Json<RotateRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let next = hash_secret(&request.credential)
        .ok_or_else(|| ApiError::BadRequest("credential: expected 32 bytes of base64url".into()))?;
    if next == credential {
        return Err(ApiError::BadRequest(
            "the new credential is the current one".into(),
        ));
    }
    let decode = |what: &str, text: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ApiError::BadRequest(format!("{what}: expected base64url")))
    };
    let nonce: [u8; 16] = decode("nonce", &request.nonce)?
        .try_into()
        .map_err(|_| ApiError::BadRequest("nonce: expected 16 bytes".into()))?;
    let signature: [u8; 64] = decode("signature", &request.signature)?
        .try_into()
        .map_err(|_| ApiError::BadRequest("signature: expected 64 bytes".into()))?;
    let now = crate::now_ms();
    if request.at.abs_diff(now) > ROTATION_SKEW_MS {
        return Err(ApiError::BadRequest(
            "at: more than 5 minutes from the gateway's clock (check the device's clock)".into(),
        ));
    }
    let rotation = Rotation {
        device_id: device.device_id,
        current: credential.0,
        next: next.0,
        at: UnixMillis(request.at),
        nonce,
    };
    if !rotation.verify(&device.public_key, &signature) {
        return Err(ApiError::Forbidden(
            "the rotation is not signed by this device's key".into(),
        ));
    }
    let rotated = state
        .archive()
        .log_store()
        .rotate_credential(&device.device_id, &credential, &next)
        .await?;
    state.forget_device(&device.device_id);
    if !rotated {
        return Err(ApiError::Conflict(
            "the credential was not rotated: it changed meanwhile, or the new one is taken".into(),
        ));
    }
    tracing::info!(device = %device.device_id, "device credential rotated");
    let detail = serde_json::json!({ "custodian": device.custodian.as_str() });
    crate::auth::admin::audit(
        state.archive(),
        &device.device_id.to_string(),
        "device.credential",
        &device.device_id.to_string(),
        detail,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
