//! Enrollment: a device spends a one-time token an administrator issued, registers
//! its public key, and receives its credential (shown once, stored as a hash).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vellum_archive::error::EnrollError;
use vellum_archive::ports::{BlobStore, DeviceStore, LogStore, NewDevice};
use vellum_protocol::ids::{DeviceId, UnixMillis};
use vellum_protocol::keys::DevicePublicKey;

use crate::State;
use crate::device::{hash_secret, new_secret};
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrollRequest {
    /// The one-time enrollment token (base64url).
    token: String,
    /// The id the device chose (a UUID).
    device_id: String,
    /// The device's Ed25519 public key (base64url, 32 bytes).
    public_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Enrolled {
    /// The device id, as sent.
    device_id: String,
    /// The custodian the enrollment token was issued for.
    custodian: String,
    /// The device credential (base64url): shown this once, never stored.
    credential: String,
}

/// `POST /v1/devices`: enrolls a device.
#[utoipa::path(post, path = "/v1/devices", tag = "capture", request_body = EnrollRequest, responses(
    (status = 201, description = "Enrolled; the credential is shown this once.", body = Enrolled),
    (status = 400, description = "Malformed request.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "Unknown enrollment token.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Token used already, or the device id is enrolled.", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "The token has expired.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn enroll<L: LogStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let token = hash_secret(&request.token)
        .ok_or_else(|| ApiError::Unauthorized("unknown enrollment token".into()))?;
    let device_id =
        DeviceId::parse(&request.device_id).map_err(|e| ApiError::BadRequest(format!("device_id: {e}")))?;
    let key: [u8; 32] = crate::device::decode_key(&request.public_key)
        .ok_or_else(|| ApiError::BadRequest("public_key: expected 32 bytes of base64url".into()))?;
    let public_key =
        DevicePublicKey::from_bytes(&key).map_err(|e| ApiError::BadRequest(format!("public_key: {e}")))?;
    let (credential, hash) = new_secret()?;
    let device = NewDevice {
        device_id,
        public_key,
        credential: hash,
    };
    let now = UnixMillis(crate::now_ms());
    let enrolled = state
        .archive()
        .log_store()
        .enroll(&token, &device, now)
        .await
        .map_err(|e| match e {
            EnrollError::UnknownToken => ApiError::Unauthorized("unknown enrollment token".into()),
            EnrollError::TokenUsed => ApiError::Conflict("the enrollment token was used already".into()),
            EnrollError::TokenExpired => ApiError::Gone("the enrollment token has expired".into()),
            EnrollError::DeviceExists(id) => ApiError::Conflict(format!("device {id} is enrolled already")),
            EnrollError::Store(e) => e.into(),
            _ => ApiError::Internal,
        })?;
    // Enrollment is a leaf of the log, like revocation and rotation.
    let detail = serde_json::json!({
        "custodian": enrolled.custodian.as_str(),
        "public_key": URL_SAFE_NO_PAD.encode(enrolled.public_key.as_bytes()),
    });
    let subject = enrolled.device_id.to_string();
    crate::auth::admin::audit(state.archive(), &subject, "device.enroll", &subject, detail).await?;
    Ok((
        StatusCode::CREATED,
        Json(Enrolled {
            device_id: enrolled.device_id.to_string(),
            custodian: enrolled.custodian.as_str().to_owned(),
            credential,
        }),
    ))
}
