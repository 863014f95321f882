//! [`NoBlobs`]: the blob store of a process that logs events but archives no records,
//! such as `vellum admin` working on a stopped gateway's database.

use vellum_protocol::ids::RetentionClass;
use vellum_protocol::seal::BodyDigest;

use crate::error::StoreError;
use crate::ports::{BlobLocator, BlobPut, BlobStore, BlobUpload};

/// Accepts no record: every capture is refused before anything is written, so an
/// archive over it can only add audit events to the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBlobs;

/// The upload of a store that takes none: there is no value of this type.
#[derive(Debug)]
pub enum NoUpload {}

impl BlobUpload for NoUpload {
    async fn write(&mut self, _chunk: &[u8]) -> Result<(), StoreError> {
        match *self {}
    }

    async fn commit(self) -> Result<BlobLocator, StoreError> {
        match self {}
    }

    async fn abort(self) {
        match self {}
    }
}

impl BlobStore for NoBlobs {
    type Upload = NoUpload;

    async fn upload(
        &self,
        _digest: &BodyDigest,
        _retention: &RetentionClass,
    ) -> Result<NoUpload, StoreError> {
        Err(StoreError::Config("this process archives no records".into()))
    }

    fn upload_holds(&self, _len: u64) -> u64 {
        0
    }

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
