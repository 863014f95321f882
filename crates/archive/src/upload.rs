//! [`Upload`]: a capture whose body is too large to hold in memory. The body is
//! written to the blob store as it arrives, hashed on the way, and checked against its
//! header before it is committed; the submission that comes out goes through the
//! sequencer like any other, with its blob already durable.
//!
//! The crash ordering is the sequencer's (its step 1, the blob, happens here instead):
//! a crash before the record's commit leaves at most an unreferenced blob, and the
//! client, holding no receipt, sends the capture again.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use vellum_protocol::age_header;
use vellum_protocol::header::VerifiedHeader;
use vellum_protocol::seal::{BodyDigest, check_sealed_prefix};

use crate::archive::Archive;
use crate::error::AppendError;
use crate::ports::{BlobStore, BlobUpload, LogStore};
use crate::sequencer::{Body, StoredBody, Submission};

/// A body on its way into the blob store, for the header that describes it.
///
/// Write the body with [`Upload::write`], then [`Upload::finish`] it into a
/// [`Submission`] for [`Archive::append`]. After an error, or to give up, call
/// [`Upload::abort`]: nothing of the body stays.
#[derive(Debug)]
pub struct Upload<U> {
    header: VerifiedHeader,
    blob: U,
    hasher: Sha256,
    written: u64,
    /// The body's first bytes, held until they show an age header; `None` once they
    /// did and went to the store.
    prefix: Option<Vec<u8>>,
    started: Instant,
}

/// The longest an upload may take from [`Archive::upload`] to [`Upload::finish`]: a
/// blob store that locks blobs counts their lock from a day after the upload starts,
/// so that the record's receipt time, which follows, is always within it.
pub const UPLOAD_DEADLINE: Duration = Duration::from_secs(12 * 3600);

impl<L: LogStore, B: BlobStore> Archive<L, B> {
    /// Starts storing the body `header` describes. Refused, with nothing written, when
    /// the blob store cannot keep the header's retention class.
    pub async fn upload(&self, header: VerifiedHeader) -> Result<Upload<B::Upload>, AppendError> {
        let fields = header.fields();
        if !self.blobs().accepts(&fields.retention) {
            return Err(AppendError::UnsupportedRetention(fields.retention.clone()));
        }
        let blob = self.blobs().upload(&fields.body, &fields.retention).await?;
        Ok(Upload {
            header,
            blob,
            hasher: Sha256::new(),
            written: 0,
            prefix: Some(Vec::new()),
            started: Instant::now(),
        })
    }
}

impl<U: BlobUpload> Upload<U> {
    fn expected(&self) -> BodyDigest {
        self.header.fields().body
    }

    /// Takes the next bytes of the body. Refuses bytes beyond the header's length, and
    /// a beginning that is not an age file, before they are stored.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), AppendError> {
        let expected = self.expected().len;
        if self.written.saturating_add(chunk.len() as u64) > expected {
            return Err(AppendError::BadBody(
                "the body is longer than its header says".into(),
            ));
        }
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        let Some(prefix) = self.prefix.as_mut() else {
            return Ok(self.blob.write(chunk).await?);
        };
        prefix.extend_from_slice(chunk);
        if prefix.len() < age_header::prefix_len(expected) {
            return Ok(());
        }
        check_sealed_prefix(prefix, expected).map_err(|e| AppendError::BadBody(format!("body: {e}")))?;
        let prefix = self.prefix.take().unwrap_or_default();
        Ok(self.blob.write(&prefix).await?)
    }

    /// Checks the whole body against the header (length and SHA-256) and makes it
    /// durable. On any failure nothing of the body stays.
    pub async fn finish(self) -> Result<Submission, AppendError> {
        let expected = self.expected();
        let sha256: [u8; 32] = self.hasher.clone().finalize().into();
        if self.prefix.is_some() || self.written != expected.len || sha256 != expected.sha256 {
            self.blob.abort().await;
            return Err(AppendError::body_mismatch());
        }
        if self.started.elapsed() > UPLOAD_DEADLINE {
            self.blob.abort().await;
            return Err(AppendError::BadBody(
                "the body took more than 12 hours to arrive: send it again".into(),
            ));
        }
        let locator = self.blob.commit().await?;
        Ok(Submission {
            header: self.header,
            body: Body::Stored(StoredBody {
                digest: expected,
                locator,
            }),
        })
    }

    /// Gives the upload up; nothing of it stays.
    pub async fn abort(self) {
        self.blob.abort().await;
    }
}
