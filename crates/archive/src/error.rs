//! Errors of the archive. Messages name the operation that failed and never the data
//! involved; a backend's own error is kept as the source, for the log, not the client.

use std::error::Error as StdError;
use std::sync::Arc;

use thiserror::Error;
use vellum_protocol::ids::{RecordId, RetentionClass};

/// A storage failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database or blob store failed.
    #[error("storage failed during {op}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Stored data does not match what it must be: a blob whose bytes do not hash to
    /// its digest, or a log whose stored tree does not match its checkpoint.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The database was written by a newer Vellum.
    #[error(
        "the database schema is version {found}, newer than this program knows ({known}): \
         upgrade vellum, or point it at the data it wrote"
    )]
    SchemaTooNew {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this program carries.
        known: i64,
    },
    /// Another process holds the data folder.
    #[error("{0} is in use by another vellum process")]
    Locked(String),
    /// An earlier batch in the pipeline failed, and this one was built on it (or was a
    /// retry of a record in it): nothing of it was kept, and retrying is safe.
    #[error("an earlier batch failed; nothing of this append was kept")]
    Aborted,
    /// A configuration or URL that cannot work.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Wraps a backend error with the operation it interrupted.
    pub fn backend(op: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend {
            op,
            source: Box::new(source),
        }
    }
}

/// Why an append did not produce a receipt.
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
pub enum AppendError {
    /// The record id is archived already with a different header.
    #[error("record {0} exists with different content")]
    Conflict(RecordId),
    /// Storage failed. Whether the append was kept may be unknown (a commit can fail
    /// after it landed); retrying is always safe: a retry of a kept record gets its
    /// receipt.
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
    /// The blob store has no retention period for this record's class, so it cannot
    /// keep the record for as long as it must. Nothing was stored.
    #[error("retention class {0} is not configured for this archive")]
    UnsupportedRetention(RetentionClass),
    /// The body is not what the header describes (digest or length), or not shaped
    /// like an age file. Nothing was stored.
    #[error("{0}")]
    BadBody(String),
    /// The archive is shutting down.
    #[error("the archive is shutting down")]
    Closed,
}

/// Why an account was not created. Nothing was stored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Another account has this username.
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    /// Another account is bound to this single sign-on identity.
    #[error("another account is bound to this single sign-on identity")]
    ExternalIdTaken,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an enrollment was refused. Nothing was stored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// No such enrollment token.
    #[error("unknown enrollment token")]
    UnknownToken,
    /// The token enrolled a device already.
    #[error("the enrollment token was used already")]
    TokenUsed,
    /// The token's time ran out.
    #[error("the enrollment token has expired")]
    TokenExpired,
    /// A device with this id is enrolled already.
    #[error("device {0} is enrolled already")]
    DeviceExists(vellum_protocol::ids::DeviceId),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppendError {
    /// The body's digest or length is not the one its header names.
    pub fn body_mismatch() -> Self {
        AppendError::BadBody("the body's digest or length does not match the header".into())
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        AppendError::Store(Arc::new(e))
    }
}
