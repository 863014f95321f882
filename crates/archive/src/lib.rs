//! Vellum's archive: where captures become durable, provable records.
//!
//! * [`ports`]: the storage traits ([`ports::LogStore`], [`ports::AuditStore`],
//!   [`ports::BlobStore`]) with their durability and consistency contracts;
//! * backends: [`sqlite::SqliteStore`] and [`postgres::PgStore`] for metadata,
//!   [`blob::local::LocalBlobStore`] for sealed bodies;
//! * [`Archive`]: appends through one batching sequencer ([`sequencer`], whose module
//!   docs give the crash ordering) and reads with integrity checks; [`Upload`] takes
//!   a body too large to hold in memory into the blob store as it arrives.
//!
//! Library code is generic over the ports; only the binary picks backends.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod accounts;
mod archive;
pub mod blob;
pub mod error;
mod keys;
mod migrate;
pub mod ports;
pub mod postgres;
pub mod search;
pub mod sequencer;
mod sql;
pub mod sqlite;
mod upload;

pub use archive::{Archive, MAX_AUDIT_FIELD};
pub use error::{AppendError, StoreError};
pub use sequencer::{Body, StoredBody, Submission};
pub use upload::{UPLOAD_DEADLINE, Upload};
