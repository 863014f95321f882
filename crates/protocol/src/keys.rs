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

/// The domain of a credential rotation's signature.
pub const ROTATION_DOMAIN: &[u8] = b"vellum/credential-rotation/v1\n";

/// What a device signs to replace its bearer credential: the holder of the
/// credential alone cannot rotate it, only the holder of the device key.
///
/// The signed message is [`ROTATION_DOMAIN`] followed by the device id (16 bytes), the
/// SHA-256 of the current credential and of the new one (32 bytes each), `at` (Unix
/// milliseconds, `u64` big-endian) and `nonce` (16 random bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The device.
    pub device_id: crate::ids::DeviceId,
    /// SHA-256 of the credential presented.
    pub current: [u8; 32],
    /// SHA-256 of the credential it is replaced with.
    pub next: [u8; 32],
    /// When the device asked (the gateway takes it within a few minutes of its clock).
    pub at: crate::ids::UnixMillis,
    /// Random bytes, fresh for each request.
    pub nonce: [u8; 16],
}

impl Rotation {
    fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(ROTATION_DOMAIN.len() + 16 + 64 + 8 + 16);
        m.extend_from_slice(ROTATION_DOMAIN);
        m.extend_from_slice(self.device_id.as_bytes());
        m.extend_from_slice(&self.current);
        m.extend_from_slice(&self.next);
        m.extend_from_slice(&self.at.0.to_be_bytes());
        m.extend_from_slice(&self.nonce);
        m
    }

    /// The device's signature over it.
    pub fn sign(&self, key: &DeviceKey) -> [u8; 64] {
        key.sign(&self.message())
    }

    /// Whether `signature` is the device key's over it (strict RFC 8032).
    pub fn verify(&self, key: &DevicePublicKey, signature: &[u8; 64]) -> bool {
        key.verifies(&self.message(), signature)
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use crate::ids::{DeviceId, UnixMillis};

    #[test]
    fn only_the_device_key_signs_exactly_this_rotation() {
        let key = DeviceKey::from_seed(&[7; 32]);
        let rotation = Rotation {
            device_id: DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap(),
            current: [1; 32],
            next: [2; 32],
            at: UnixMillis(1_764_150_000_000),
            nonce: [3; 16],
        };
        let signature = rotation.sign(&key);
        assert!(rotation.verify(&key.public(), &signature));
        assert!(!rotation.verify(&DeviceKey::from_seed(&[8; 32]).public(), &signature));
        for changed in [
            Rotation {
                next: [9; 32],
                ..rotation.clone()
            },
            Rotation {
                current: [9; 32],
                ..rotation.clone()
            },
            Rotation {
                at: UnixMillis(1),
                ..rotation.clone()
            },
            Rotation {
                nonce: [9; 16],
                ..rotation.clone()
            },
        ] {
            assert!(!changed.verify(&key.public(), &signature));
        }
        // The message, for docs/formats.md.
        assert_eq!(
            rotation.message().len(),
            ROTATION_DOMAIN.len() + 16 + 32 + 32 + 8 + 16
        );
    }
}
