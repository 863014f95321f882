//! The record header: the small, signed, canonical description of one sealed body.
//!
//! The capture client builds [`HeaderFields`], signs them with its device key and sends
//! the resulting bytes; the gateway stores exactly those bytes and never re-serialises.
//! Layout (all integers big-endian):
//!
//! ```text
//! magic            4   "VLH" 0x01 (format version 1)
//! record id       16   UUIDv7
//! device id       16   UUID, not nil
//! captured at      8   u64 ≤ 2^63-1, Unix milliseconds (the client's claim)
//! keyring epoch    8   u64 ≤ 2^63-1
//! body length      8   u64 ≤ 2^63-1, bytes of the sealed body
//! body sha-256    32
//! custodian      1+n   u8 length n, then n bytes ([`Custodian`] rules)
//! channel        1+n   u8 length n, then n bytes ([`Channel`] rules)
//! retention      1+n   u8 length n, then n bytes ([`RetentionClass`] rules)
//! token count      2   u16, at most MAX_TOKENS
//! tokens        16·k   blind tokens, strictly ascending
//! signature       64   Ed25519 over "vellum/record-header/v1\n" || every byte above
//! ```
//!
//! The encoding is canonical: every field has one spelling and tokens are sorted, so
//! equal fields always give equal bytes. Reading is parse-then-verify: [`UnverifiedHeader`]
//! exposes only the device id (to find the key); [`VerifiedHeader`] is the only way
//! to reach the other fields.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::blind::BlindToken;
use crate::ids::{Channel, Custodian, DeviceId, Epoch, IdError, RecordId, RetentionClass, UnixMillis};
use crate::keys::{DeviceKey, DevicePublicKey};
use crate::seal::BodyDigest;

/// The magic and version that open every header.
pub const MAGIC: [u8; 4] = *b"VLH\x01";
/// The signature's domain-separation prefix.
pub const SIGNATURE_DOMAIN: &[u8] = b"vellum/record-header/v1\n";
/// The most blind tokens one header carries.
pub const MAX_TOKENS: usize = 256;
/// The largest possible header.
pub const MAX_HEADER_LEN: usize =
    4 + 16 + 16 + 8 + 8 + 8 + 32 + (1 + 128) + (1 + 32) + (1 + 64) + 2 + 16 * MAX_TOKENS + 64;

const FIXED_LEN: usize = 92;

/// Why a header was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer bytes than the fields need.
    #[error("header is truncated")]
    Truncated,
    /// More than [`MAX_HEADER_LEN`] bytes, or bytes after the signature.
    #[error("header is too long")]
    TooLong,
    /// Not a Vellum header, or a version this code does not read.
    #[error("not a version-1 Vellum record header")]
    BadMagic,
    /// An id or text field breaks its rules.
    #[error("invalid header field: {0}")]
    Field(#[from] IdError),
    /// More than [`MAX_TOKENS`] tokens.
    #[error("more than {MAX_TOKENS} blind tokens")]
    TooManyTokens,
    /// Tokens not strictly ascending (unsorted or duplicated).
    #[error("blind tokens are not strictly ascending")]
    TokensNotCanonical,
    /// A number above [`MAX_NUMBER`].
    #[error("the {0} is above 2^63 - 1")]
    OutOfRange(&'static str),
    /// The signature does not verify under the device's key.
    #[error("header signature does not verify under the device key")]
    BadSignature,
    /// The sealed body's digest or length differs from the header's.
    #[error("sealed body does not match the header's digest and length")]
    BodyMismatch,
}

/// What a header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    /// The record id (UUIDv7), chosen by the client; the idempotency key.
    pub record_id: RecordId,
    /// The capturing device.
    pub device_id: DeviceId,
    /// Whose record this is.
    pub custodian: Custodian,
    /// The messaging channel.
    pub channel: Channel,
    /// When the client captured the message (its claim).
    pub captured_at: UnixMillis,
    /// The keyring epoch whose archive recipient sealed the body.
    pub epoch: Epoch,
    /// The retention class.
    pub retention: RetentionClass,
    /// SHA-256 and length of the sealed body.
    pub body: BodyDigest,
    /// Blind tokens; [`HeaderFields::sign`] sorts and de-duplicates them.
    pub tokens: Vec<BlindToken>,
}

/// The largest capture time, epoch and body length a header holds: what the
/// databases' signed 64-bit integers hold, so that a header accepted is one stored.
pub const MAX_NUMBER: u64 = i64::MAX as u64;

impl HeaderFields {
    /// Refuses numbers above [`MAX_NUMBER`].
    fn check_numbers(&self) -> Result<(), HeaderError> {
        for (what, n) in [
            ("capture time", self.captured_at.0),
            ("epoch", self.epoch.0),
            ("body length", self.body.len),
        ] {
            if n > MAX_NUMBER {
                return Err(HeaderError::OutOfRange(what));
            }
        }
        Ok(())
    }

    /// Encodes the fields canonically and signs them with the device key.
    pub fn sign(&self, key: &DeviceKey) -> Result<SignedHeader, HeaderError> {
        self.check_numbers()?;
        let mut tokens = self.tokens.clone();
        tokens.sort_unstable();
        tokens.dedup();
        if tokens.len() > MAX_TOKENS {
            return Err(HeaderError::TooManyTokens);
        }
        let mut out = Vec::with_capacity(FIXED_LEN + 240 + 16 * tokens.len() + 64);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.record_id.as_bytes());
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.captured_at.0.to_be_bytes());
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.extend_from_slice(&self.body.len.to_be_bytes());
        out.extend_from_slice(&self.body.sha256);
        for text in [
            self.custodian.as_str(),
            self.channel.as_str(),
            self.retention.as_str(),
        ] {
            // The id types cap these at 128 bytes, so the length fits in one byte.
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(tokens.len() as u16).to_be_bytes());
        for token in &tokens {
            out.extend_from_slice(&token.0);
        }
        let signature = key.sign(&signed_message(&out));
        out.extend_from_slice(&signature);
        Ok(SignedHeader(out))
    }
}

/// Header bytes as the device signed them, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeader(Vec<u8>);

impl SignedHeader {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// SHA-256 of the bytes: what the log entry commits to.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.0).into()
    }
}

fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + unsigned.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(unsigned);
    message
}

/// A header whose structure parsed but whose signature is not yet checked.
#[derive(Debug)]
pub struct UnverifiedHeader<'a> {
    bytes: &'a [u8],
    fields: HeaderFields,
}

impl<'a> UnverifiedHeader<'a> {
    /// Parses the structure. Nothing it says may be trusted until [`Self::verify`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HeaderError> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong);
        }
        let mut r = Reader(bytes);
        if r.take::<4>()? != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let record_id = RecordId::from_bytes(r.take()?)?;
        let device_id = DeviceId::from_bytes(r.take()?)?;
        let captured_at = UnixMillis(u64::from_be_bytes(r.take()?));
        let epoch = Epoch(u64::from_be_bytes(r.take()?));
        let len = u64::from_be_bytes(r.take()?);
        let sha256 = r.take()?;
        let custodian = Custodian::new(r.short_text()?)?;
        let channel = Channel::new(r.short_text()?)?;
        let retention = RetentionClass::new(r.short_text()?)?;
        let count = usize::from(u16::from_be_bytes(r.take()?));
        if count > MAX_TOKENS {
            return Err(HeaderError::TooManyTokens);
        }
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            let token = BlindToken(r.take()?);
            if tokens.last().is_some_and(|last| *last >= token) {
                return Err(HeaderError::TokensNotCanonical);
            }
            tokens.push(token);
        }
        r.take::<64>()?;
        if !r.0.is_empty() {
            return Err(HeaderError::TooLong);
        }
        let fields = HeaderFields {
            record_id,
            device_id,
            custodian,
            channel,
            captured_at,
            epoch,
            retention,
            body: BodyDigest { sha256, len },
            tokens,
        };
        fields.check_numbers()?;
        Ok(Self { bytes, fields })
    }

    /// The device that claims to have signed: look up its key, then [`Self::verify`].
    pub fn claimed_device(&self) -> DeviceId {
        self.fields.device_id
    }

    /// The body digest the header claims. For stored headers whose signature was
    /// verified when they were archived; never a substitute for [`Self::verify`].
    pub fn body_digest(&self) -> BodyDigest {
        self.fields.body
    }

    /// Every field the header claims. For stored headers whose signature was
    /// verified when they were archived; never a substitute for [`Self::verify`].
    pub fn archived_fields(&self) -> &HeaderFields {
        &self.fields
    }

    /// Checks the signature under the device's registered key.
    pub fn verify(self, key: &DevicePublicKey) -> Result<VerifiedHeader, HeaderError> {
        let (unsigned, signature) = self.bytes.split_at(self.bytes.len() - 64);
        let signature: &[u8; 64] = signature.try_into().map_err(|_| HeaderError::Truncated)?;
        if !key.verifies(&signed_message(unsigned), signature) {
            return Err(HeaderError::BadSignature);
        }
        Ok(VerifiedHeader {
            bytes: self.bytes.to_vec(),
            fields: self.fields,
        })
    }
}

/// A header whose device signature verified. The only way to reach its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHeader {
    bytes: Vec<u8>,
    fields: HeaderFields,
}

impl VerifiedHeader {
    /// The verified fields.
    pub fn fields(&self) -> &HeaderFields {
        &self.fields
    }

    /// The bytes exactly as signed, to store verbatim.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the bytes: what the log entry commits to.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// Checks that a sealed body is the one this header describes.
    pub fn check_body(&self, body: &BodyDigest) -> Result<(), HeaderError> {
        if *body != self.fields.body {
            return Err(HeaderError::BodyMismatch);
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let (head, tail) = self.0.split_first_chunk::<N>().ok_or(HeaderError::Truncated)?;
        self.0 = tail;
        Ok(*head)
    }

    fn short_text(&mut self) -> Result<&str, HeaderError> {
        let [len] = self.take::<1>()?;
        let len = usize::from(len);
        if self.0.len() < len {
            return Err(HeaderError::Truncated);
        }
        let (text, tail) = self.0.split_at(len);
        self.0 = tail;
        // Non-UTF-8 bytes fail the id rules just like other forbidden characters.
        Ok(std::str::from_utf8(text).unwrap_or("\u{0}"))
    }
}
