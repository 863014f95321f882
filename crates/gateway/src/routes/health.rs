//! Liveness and readiness probes.

use vellum_archive::ports::{BlobStore, LogStore};

use crate::State;
use crate::problem::ApiError;

/// `GET /healthz`: the process is serving.
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: storage answers (migrations were applied when it was opened).
pub(super) async fn ready<L: LogStore, B: BlobStore>(state: State<L, B>) -> Result<&'static str, ApiError> {
    state.archive().log_store().log_size().await?;
    Ok("ready\n")
}
