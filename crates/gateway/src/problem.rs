//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every handler returns [`ApiError`]; this is the one place that maps errors to
//! status codes and bodies. A problem names what the client can act on and never
//! carries internals: storage failures are answered with a generic 500 or 503 body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vellum_archive::error::AccountError;
use vellum_archive::{AppendError, StoreError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credential was presented.
    #[error("{0}")]
    Unauthorized(String),
    /// The credential is valid but may not do this (a revoked device).
    #[error("{0}")]
    Forbidden(String),
    /// What was asked for does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// The route exists, but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with what is stored (a record id under other bytes, a
    /// token already used).
    #[error("{0}")]
    Conflict(String),
    /// What the request refers to is gone for good (an expired token).
    #[error("{0}")]
    Gone(String),
    /// The request has no `Content-Length`.
    #[error("a Content-Length is required")]
    LengthRequired,
    /// The body is larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed, but not something the archive can take (an unconfigured retention
    /// class).
    #[error("{0}")]
    Unprocessable(String),
    /// Too many attempts (logins); retry after this many seconds.
    #[error("too many attempts")]
    TooManyRequests(u64),
    /// Too many requests are running; the client may retry shortly.
    #[error("too many requests in progress")]
    Busy,
    /// The request took longer than the deadline (a slow body, for instance).
    #[error("request timed out")]
    Timeout,
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
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable kind (the last part of the `type` URI).
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::LengthRequired => "length-required",
            ApiError::TooLarge(_) => "too-large",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests(_) => "too-many-requests",
            ApiError::Busy => "busy",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(&e)
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict(id) => {
                ApiError::Conflict(format!("record {id} is archived already with other bytes"))
            }
            AppendError::UnsupportedRetention(class) => ApiError::Unprocessable(format!(
                "retention class {} is not configured on this archive",
                class.as_str()
            )),
            AppendError::Store(e) => ApiError::from(e.as_ref()),
            AppendError::BadBody(why) => ApiError::BadRequest(why),
            _ => ApiError::Unavailable,
        }
    }
}

impl From<crate::auth::admin::AdminError> for ApiError {
    fn from(e: crate::auth::admin::AdminError) -> Self {
        match e {
            crate::auth::admin::AdminError::Refused(why) => ApiError::Conflict(why.into()),
            crate::auth::admin::AdminError::Failed(e) => e.into(),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::UsernameTaken(name) => {
                ApiError::Conflict(format!("the username {name:?} is taken"))
            }
            AccountError::Store(e) => e.into(),
            other => ApiError::Conflict(other.to_string()),
        }
    }
}

impl From<&StoreError> for ApiError {
    /// Storage errors never reach the client in detail: the kind is enough to act on.
    /// The detail is logged here, once (it names operations and ids, never content).
    fn from(e: &StoreError) -> Self {
        tracing::error!(error = %e, "storage");
        match e {
            StoreError::Backend { .. } | StoreError::Locked(_) => ApiError::Unavailable,
            _ => ApiError::Internal,
        }
    }
}

/// An RFC 9457 problem, as every error body is.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// `urn:vellum:problem:<kind>`, stable for clients to match on.
    #[serde(rename = "type")]
    kind: String,
    /// The HTTP reason phrase.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What to fix, when the client can act on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::BadRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::Conflict(d)
            | ApiError::Gone(d)
            | ApiError::TooLarge(d)
            | ApiError::Unprocessable(d) => Some(d.clone()),
            ApiError::MethodNotAllowed
            | ApiError::LengthRequired
            | ApiError::TooManyRequests(_)
            | ApiError::Busy
            | ApiError::Timeout
            | ApiError::Unavailable
            | ApiError::Internal => None,
        };
        let problem = Problem {
            kind: format!("urn:vellum:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::TooManyRequests(secs) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
