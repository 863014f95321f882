//! [`NoBlobs`]: the blob store of a process that logs events but archives no records,
//! such as `vellum admin` working on a stopped gateway's database.

use vellum_protocol::ids::RetentionClass;
use vellum_protocol::seal::BodyDigest;

use crate::error::StoreError;
use crate::ports::{BlobLocator, BlobPut, BlobStore};

/// Accepts no record: every capture is refused before anything is written, so an
/// archive over it can only add audit events to the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBlobs;

impl BlobStore for NoBlobs {
    async fn put(&self, blobs: &[BlobPut<'_>]) -> Result<Vec<BlobLocator>, StoreError> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        Err(StoreError::Config("this process archives no records".into()))
    }

    fn accepts(&self, _retention: &RetentionClass) -> bool {
        false
    }

    async fn get(&self, _locator: &BlobLocator, _expected: &BodyDigest) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Config("this process reads no records".into()))
    }
}
