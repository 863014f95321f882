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
