//! Log access for anyone holding the log key: the newest checkpoint, and inclusion
//! and consistency proofs in the text formats `vellum verify` checks offline.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use vellum_archive::ports::{BlobStore, LogStore};
use vellum_tlog::proof::{ConsistencyProof, TlogProof};

use super::{query, text};
use crate::State;
use crate::problem::{ApiError, Problem};

/// The newest checkpoint: `(size, note)`, or 404 while the log is empty.
async fn latest<L: LogStore, B: BlobStore>(state: &State<L, B>) -> Result<(u64, String), ApiError> {
    state
        .archive()
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::NotFound("the log is empty: no checkpoint yet".into()))
}

/// `GET /v1/log/checkpoint`: the newest signed checkpoint (a C2SP signed note).
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log", responses(
    (status = 200, description = "The newest checkpoint, a C2SP signed note.", body = String, content_type = "text/plain"),
    (status = 404, description = "The log is empty.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn checkpoint<L: LogStore, B: BlobStore>(state: State<L, B>) -> Result<Response, ApiError> {
    Ok(text(latest(&state).await?.1))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InclusionQuery {
    /// The leaf.
    #[serde(deserialize_with = "super::position")]
    index: u64,
    /// A tree size that has a checkpoint; the newest if absent.
    #[serde(default, deserialize_with = "super::some_position")]
    size: Option<u64>,
}

/// `GET /v1/log/proof/inclusion?index=I[&size=N]`: a `c2sp.org/tlog-proof@v1` for leaf
/// `I` (its log entry in `extra`) against the checkpoint of size `N`, or the newest.
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log", params(InclusionQuery), responses(
    (status = 200, description = "A c2sp.org/tlog-proof@v1 with the leaf's log entry.", body = String, content_type = "text/plain"),
    (status = 400, description = "The leaf is not in the tree.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No checkpoint of that size.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn inclusion<L: LogStore, B: BlobStore>(
    state: State<L, B>,
    params: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let InclusionQuery { index, size } = query(params)?;
    Ok(text(inclusion_proof(&state, index, size).await?.to_text()))
}

/// The `c2sp.org/tlog-proof@v1` of leaf `index` (its entry in `extra`) against the
/// checkpoint of `size` leaves, or the newest.
pub(super) async fn inclusion_proof<L: LogStore, B: BlobStore>(
    state: &State<L, B>,
    index: u64,
    size: Option<u64>,
) -> Result<TlogProof, ApiError> {
    let archive = state.archive();
    let (size, checkpoint) = match size {
        None => latest(state).await?,
        Some(size) if size > archive.log_store().log_size().await? => {
            return Err(ApiError::NotFound(format!(
                "no checkpoint of size {size}: the log is smaller"
            )));
        }
        Some(size) => archive
            .log_store()
            .checkpoint_at_least(size)
            .await?
            .filter(|(found, _)| *found == size)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no checkpoint of size {size} (one is signed per batch; omit size for the newest)"
                ))
            })?,
    };
    if index >= size {
        return Err(ApiError::BadRequest(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let entry = archive
        .log_store()
        .entry(index)
        .await?
        .ok_or(ApiError::Internal)?;
    let proof = TlogProof {
        extra: Some(entry),
        index,
        hashes: archive.inclusion_proof(size, index).await?,
        checkpoint,
    };
    Ok(proof)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    /// The smaller tree size (at least 1).
    #[serde(deserialize_with = "super::position")]
    old: u64,
    /// The larger tree size (at most the log size).
    #[serde(deserialize_with = "super::position")]
    new: u64,
}

/// `GET /v1/log/proof/consistency?old=M&new=N`: a `vellum/consistency-proof/v1`
/// showing that the tree of `M` leaves is a prefix of the tree of `N`.
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log", params(ConsistencyQuery), responses(
    (status = 200, description = "A vellum/consistency-proof/v1 (docs/formats.md).", body = String, content_type = "text/plain"),
    (status = 400, description = "The sizes are out of range.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn consistency<L: LogStore, B: BlobStore>(
    state: State<L, B>,
    params: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ConsistencyQuery { old, new } = query(params)?;
    let size = state.archive().log_store().log_size().await?;
    if old == 0 || old > new || new > size {
        return Err(ApiError::BadRequest(format!(
            "need 0 < old <= new <= {size} (the log size), got old {old}, new {new}"
        )));
    }
    let proof = ConsistencyProof {
        old,
        new,
        hashes: state.archive().consistency_proof(old, new).await?,
    };
    Ok(text(proof.to_text()))
}
