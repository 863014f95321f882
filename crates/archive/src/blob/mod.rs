//! Blob store backends.

pub mod local;
pub mod none;
pub mod s3;

use sha2::{Digest, Sha256};
use vellum_protocol::seal::BodyDigest;

use crate::error::StoreError;

/// The lower-case hex of a blob's SHA-256: what names it in a folder or a bucket.
pub(crate) fn sha256_hex(digest: &BodyDigest) -> String {
    digest.sha256.iter().map(|b| format!("{b:02x}")).collect()
}

/// The error of an upload used after its commit or abort.
pub(crate) fn upload_finished() -> StoreError {
    StoreError::Integrity("the upload was committed or given up already".into())
}

/// Checks bytes read back against the digest they were stored under.
pub(crate) fn verify(bytes: &[u8], expected: &BodyDigest, locator: &str) -> Result<(), StoreError> {
    let actual: [u8; 32] = Sha256::digest(bytes).into();
    if bytes.len() as u64 != expected.len || actual != expected.sha256 {
        return Err(StoreError::Integrity(format!(
            "blob {locator} does not match its digest"
        )));
    }
    Ok(())
}

/// The digest of a blob read in chunks, checked at its end.
pub(crate) struct Hashing {
    hasher: Sha256,
    len: u64,
}

impl Hashing {
    pub(crate) fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
    }

    /// Whether everything hashed is the blob `expected` names.
    pub(crate) fn check(self, expected: &BodyDigest, locator: &str) -> Result<(), StoreError> {
        let actual: [u8; 32] = self.hasher.finalize().into();
        if self.len != expected.len || actual != expected.sha256 {
            return Err(StoreError::Integrity(format!(
                "blob {locator} does not match its digest"
            )));
        }
        Ok(())
    }
}
