//! Signing keys held by parties other than auditors: device keys (record headers) and
//! named note keys (organisation keyring statements, log checkpoints).
//!
//! Every secret here zeroizes on drop and never prints: `Debug` shows only public parts.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;
use vellum_tlog::note::{NoteError, NoteSigner};
use zeroize::Zeroizing;

/// Fills `buf` from the operating system's random generator.
///
/// A machine that cannot supply randomness cannot seal or sign safely, so this aborts
/// the operation loudly rather than continue with weak bytes.
#[allow(clippy::panic, reason = "no safe way to continue without OS randomness")]
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(err) = getrandom::getrandom(buf) {
        panic!("the operating system random generator failed: {err}");
    }
}

/// A key that could not be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not 32 bytes, or not a valid Ed25519 point, or a weak (small-order) key.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
}

/// A capture device's Ed25519 signing key; it signs every record header.
pub struct DeviceKey(SigningKey);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey(public: {:?})", self.public())
    }
}

impl DeviceKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        fill_random(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// The key from its 32-byte seed (as stored in the device's key file).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The seed, for the device's own key file (mode 0600).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half, registered at enrollment.
    pub fn public(&self) -> DevicePublicKey {
        DevicePublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A device's Ed25519 public key as the gateway stores it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevicePublicKey(VerifyingKey);

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey(")?;
        for b in &self.0.as_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl DevicePublicKey {
    /// Accepts 32 bytes that are a valid, non-weak Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self(key))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Strict RFC 8032 verification (no malleable or small-order signatures).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// A fresh named note key (organisation key, log key) from the OS random generator.
pub fn generate_note_signer(name: &str) -> Result<NoteSigner, NoteError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    fill_random(seed.as_mut());
    NoteSigner::from_seed(name, *seed)
}
