//! Credential rotation: a device replaces its bearer credential with a new one it
//! generated. The device keeps the new one as pending before it asks, so an answer
//! lost on the way cannot lock it out: it tries the pending one next.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use vellum_archive::ports::{BlobStore, DeviceStore, LogStore};

use crate::State;
use crate::device::{EnrolledDevice, hash_secret};
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    /// The new credential: 32 random bytes the device generated, base64url.
    credential: String,
}

/// `POST /v1/devices/credential`: replaces the presented credential.
#[utoipa::path(post, path = "/v1/devices/credential", tag = "capture", request_body = RotateRequest,
    security(("device_credential" = [])),
    responses(
    (status = 204, description = "Rotated: the presented credential no longer works, the new one does."),
    (status = 400, description = "Not 32 bytes of base64url, or the same credential.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid device credential.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "The device was revoked.", body = Problem, content_type = "application/problem+json"),
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
    Ok(StatusCode::NO_CONTENT)
}
