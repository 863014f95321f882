//! TOTP secrets sealed at rest: a copy of the database alone yields no second factor.
//!
//! Each stored secret is `vtotp1` (6 bytes), the 8-byte id of the key that sealed it,
//! a 12-byte random nonce, and the secret's ChaCha20-Poly1305 ciphertext and tag, with
//! the account id as associated data (a sealed secret moved to another account does
//! not open). The key is 32 random bytes in `[auth] totp_key_file`; its id is the first
//! 8 bytes of SHA-256(`vellum/totp-key/v1\n` ‖ key). Keys listed as previous open what
//! they sealed, so a rotation can re-seal every secret under the new key.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::Digest as _;
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"vtotp1";
const KEY_ID_DOMAIN: &[u8] = b"vellum/totp-key/v1\n";
const HEAD: usize = 6 + 8 + 12;

/// A key id, as stored before each sealed secret.
pub type KeyId = [u8; 8];

/// The keys TOTP secrets are sealed under: the current one, and earlier ones that
/// still open what they sealed.
pub struct TotpKeys {
    current: (KeyId, Zeroizing<[u8; 32]>),
    previous: Vec<(KeyId, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for TotpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpKeys")
            .field("current", &hex::encode(self.current.0))
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// Why a stored secret does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpSealError {
    /// Stored in the clear, as before secrets were sealed.
    #[error("stored in the clear")]
    Plain,
    /// Sealed under a key that is not configured.
    #[error("sealed under key {0}, which is not configured")]
    UnknownKey(String),
    /// Not what this module writes, or altered.
    #[error("damaged")]
    Damaged,
}

/// The id of `key`.
pub fn key_id(key: &[u8; 32]) -> KeyId {
    let digest = sha2::Sha256::new_with_prefix(KEY_ID_DOMAIN)
        .chain_update(key)
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

impl TotpKeys {
    /// Sealing under `current`; `previous` open what they sealed.
    pub fn new(current: Zeroizing<[u8; 32]>, previous: Vec<Zeroizing<[u8; 32]>>) -> Self {
        Self {
            current: (key_id(&current), current),
            previous: previous.into_iter().map(|k| (key_id(&k), k)).collect(),
        }
    }

    /// A random key, for a gateway that keeps nothing across restarts.
    pub fn ephemeral() -> Result<Self, getrandom::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(key.as_mut())?;
        Ok(Self::new(key, Vec::new()))
    }

    /// The current key's id.
    pub fn current_id(&self) -> KeyId {
        self.current.0
    }

    /// `secret` sealed under the current key, for `account`.
    pub fn seal(&self, account: &[u8; 16], secret: &[u8]) -> Result<Zeroizing<Vec<u8>>, getrandom::Error> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.current.1.as_slice()));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: account,
                },
            )
            .unwrap_or_default();
        let mut out = Zeroizing::new(Vec::with_capacity(HEAD + sealed.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The key id a stored secret names (`None`: stored in the clear).
    pub fn sealed_by(stored: &[u8]) -> Option<KeyId> {
        (stored.len() > HEAD && stored.starts_with(MAGIC)).then(|| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&stored[6..14]);
            id
        })
    }

    /// The secret a stored value holds for `account`.
    pub fn open(&self, account: &[u8; 16], stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, TotpSealError> {
        let id = Self::sealed_by(stored).ok_or(TotpSealError::Plain)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(k, _)| *k == id)
            .map(|(_, key)| key)
            .ok_or_else(|| TotpSealError::UnknownKey(hex::encode(id)))?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_slice()));
        cipher
            .decrypt(
                Nonce::from_slice(&stored[14..HEAD]),
                Payload {
                    msg: &stored[HEAD..],
                    aad: account,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| TotpSealError::Damaged)
    }

    /// What a stored value should become: `None` when it is sealed under the current
    /// key already; the value sealed under it when it is in the clear or under a
    /// previous key; an error when no configured key opens it.
    pub fn resealed(
        &self,
        account: &[u8; 16],
        stored: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, TotpSealError> {
        let secret = match self.open(account, stored) {
            Ok(_) if Self::sealed_by(stored) == Some(self.current.0) => return Ok(None),
            Ok(secret) => secret,
            Err(TotpSealError::Plain) => Zeroizing::new(stored.to_vec()),
            Err(e) => return Err(e),
        };
        self.seal(account, &secret)
            .map(Some)
            .map_err(|_| TotpSealError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_for_their_account() {
        let old = TotpKeys::new(Zeroizing::new([1; 32]), Vec::new());
        let stored = old.seal(&[7; 16], b"twenty byte secret!!").unwrap();
        assert!(!stored.windows(20).any(|w| w == b"twenty byte secret!!"));
        assert_eq!(&old.open(&[7; 16], &stored).unwrap()[..], b"twenty byte secret!!");
        assert_eq!(old.open(&[8; 16], &stored), Err(TotpSealError::Damaged));
        let mut flipped = stored.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(old.open(&[7; 16], &flipped), Err(TotpSealError::Damaged));
        assert_eq!(
            old.open(&[7; 16], b"twenty byte secret!!"),
            Err(TotpSealError::Plain)
        );

        // Another key does not open it, and says which key it needs.
        let other = TotpKeys::new(Zeroizing::new([2; 32]), Vec::new());
        assert_eq!(
            other.open(&[7; 16], &stored),
            Err(TotpSealError::UnknownKey(hex::encode(key_id(&[1; 32]))))
        );
        assert!(other.resealed(&[7; 16], &stored).is_err());

        // Rotated: the old key as previous; every secret, and a clear one, re-sealed.
        let rotated = TotpKeys::new(Zeroizing::new([2; 32]), vec![Zeroizing::new([1; 32])]);
        let moved = rotated.resealed(&[7; 16], &stored).unwrap().unwrap();
        assert_eq!(TotpKeys::sealed_by(&moved), Some(rotated.current_id()));
        assert_eq!(
            &rotated.open(&[7; 16], &moved).unwrap()[..],
            b"twenty byte secret!!"
        );
        assert_eq!(rotated.resealed(&[7; 16], &moved).unwrap(), None);
        let from_clear = rotated
            .resealed(&[7; 16], b"twenty byte secret!!")
            .unwrap()
            .unwrap();
        assert_eq!(
            &rotated.open(&[7; 16], &from_clear).unwrap()[..],
            b"twenty byte secret!!"
        );
    }
}
