//! Liveness and readiness probes.

use vellum_archive::ports::{BlobStore, LogStore};

use crate::State;
use crate::problem::{ApiError, Problem};

/// `GET /healthz`: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is serving.", body = String, content_type = "text/plain")))]
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: storage answers (migrations were applied when it was opened).
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Storage answers and is migrated.", body = String, content_type = "text/plain"),
    (status = 503, description = "Storage cannot be reached.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn ready<L: LogStore, B: BlobStore>(state: State<L, B>) -> Result<&'static str, ApiError> {
    state.archive().log_store().log_size().await?;
    Ok("ready\n")
}
