//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every handler returns [`ApiError`]; this is the one place that maps errors to
//! status codes and bodies. A problem names what the client can act on and never
//! carries internals: storage failures are answered with a generic 500 or 503 body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vellum_archive::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// What was asked for does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// Storage cannot be reached; the client may retry.
    #[error("storage unavailable")]
    Unavailable,
    /// Anything else; the detail stays on the server.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable kind (the last part of the `type` URI).
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::NotFound(_) => "not-found",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    /// Storage errors never reach the client in detail: the kind is enough to act on.
    /// The detail is logged here, once (it names operations and ids, never content).
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage");
        match e {
            StoreError::Backend { .. } | StoreError::Locked(_) => ApiError::Unavailable,
            _ => ApiError::Internal,
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::BadRequest(d) | ApiError::NotFound(d) => Some(d.clone()),
            ApiError::Unavailable | ApiError::Internal => None,
        };
        let problem = Problem {
            kind: format!("urn:vellum:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}
