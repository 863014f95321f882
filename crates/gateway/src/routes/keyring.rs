//! The keyring statement capture clients seal to, as the organisation signed it.

use axum::response::Response;
use vellum_archive::ports::BlobStore;

use super::text;
use crate::State;

/// `GET /v1/keyring`: the current signed keyring statement (a C2SP signed note).
/// Clients check it against the organisation key they pinned; the gateway cannot
/// forge one.
#[utoipa::path(get, path = "/v1/keyring", tag = "capture", responses(
    (status = 200, description = "The current keyring statement, a signed note (docs/formats.md).", body = String, content_type = "text/plain")))]
pub(super) async fn current<L: super::keys::KeysStore, B: BlobStore>(
    state: State<L, B>,
) -> Result<Response, crate::problem::ApiError> {
    // Another gateway of the deployment may have published a newer one.
    let keyring = super::keys::refresh_keyring(&state).await?;
    Ok(text(keyring.note().to_owned()))
}
