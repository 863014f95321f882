//! The public routes. Each module owns its handlers; [`router`] is the whole surface,
//! and nothing else is served (invariant I2).

mod health;
mod log;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use vellum_archive::ports::{BlobStore, LogStore};

use crate::Gateway;
use crate::problem::ApiError;

/// The gateway's router: every public route, and a problem+json 404 for anything else.
pub fn router<L: LogStore, B: BlobStore>(gateway: Arc<Gateway<L, B>>) -> Router {
    Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready::<L, B>))
        .route("/v1/log/checkpoint", get(log::checkpoint::<L, B>))
        .route("/v1/log/proof/inclusion", get(log::inclusion::<L, B>))
        .route("/v1/log/proof/consistency", get(log::consistency::<L, B>))
        .fallback(not_found)
        .with_state(gateway)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
