//! Vellum's HTTP gateway: the routes capture clients, auditors and witnesses call.
//!
//! The gateway holds an [`Archive`] over whatever storage the binary chose and serves
//! it through [`router`]. It sees only what capture clients sealed and signed: it
//! checks structure and signatures, stores ciphertext, and answers with proofs.
//!
//! ```no_run
//! # async fn serve(
//! #     archive: vellum_archive::Archive<vellum_archive::sqlite::SqliteStore, vellum_archive::blob::local::LocalBlobStore>,
//! # ) -> std::io::Result<()> {
//! use std::sync::Arc;
//!
//! let app = vellum_gateway::router(Arc::new(vellum_gateway::Gateway::new(archive)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Every error is an RFC 9457 problem ([`problem`]); nothing internal is ever sent.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod problem;
mod routes;

use std::sync::Arc;

use vellum_archive::Archive;
use vellum_archive::ports::{BlobStore, LogStore};

pub use routes::router;

/// What every route shares: the archive.
#[derive(Debug)]
pub struct Gateway<L, B> {
    archive: Archive<L, B>,
}

impl<L: LogStore, B: BlobStore> Gateway<L, B> {
    /// A gateway over an opened archive.
    pub fn new(archive: Archive<L, B>) -> Self {
        Self { archive }
    }

    /// The archive.
    pub fn archive(&self) -> &Archive<L, B> {
        &self.archive
    }
}

/// The shared state handlers receive.
pub(crate) type State<L, B> = axum::extract::State<Arc<Gateway<L, B>>>;
