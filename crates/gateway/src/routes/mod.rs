//! The public routes. Each module owns its handlers; [`router`] is the whole surface,
//! and nothing else is served (invariant I2).

mod devices;
mod health;
mod keyring;
mod log;
mod records;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vellum_archive::ports::{BlobStore, DeviceStore, LogStore};

use crate::Gateway;
use crate::problem::ApiError;

/// The gateway's router: every public route, and a problem+json 404 for anything else.
pub fn router<L: LogStore + DeviceStore, B: BlobStore>(gateway: Arc<Gateway<L, B>>) -> Router {
    Router::new()
        .route("/v1/devices", post(devices::enroll::<L, B>))
        .route("/v1/records", post(records::capture::<L, B>))
        .route("/v1/keyring", get(keyring::current::<L, B>))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready::<L, B>))
        .route("/v1/log/checkpoint", get(log::checkpoint::<L, B>))
        .route("/v1/log/proof/inclusion", get(log::inclusion::<L, B>))
        .route("/v1/log/proof/consistency", get(log::consistency::<L, B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

pub use records::RECORD_MEDIA_TYPE;

/// A plain-text answer (signed notes, proofs, receipts).
fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
