//! Identifiers and small values every format shares, each parsed once and then trusted.
//!
//! The textual ones (custodian, channel, retention class) are visible to the gateway
//! by design, so their alphabets are narrow: nothing in them can smuggle a message
//! body, and nothing needs escaping in logs, file names or URLs.

use std::fmt;

use thiserror::Error;
use uuid::Uuid;

/// A value that does not meet its type's rules.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// A record id that is not a UUIDv7.
    #[error("record id must be a UUIDv7")]
    NotUuidV7,
    /// Not a UUID in lower- or upper-case hyphenated form (`8-4-4-4-12` hex digits).
    #[error("not a UUID in hyphenated form")]
    BadUuid,
    /// The nil UUID where an id is required.
    #[error("id must not be the nil UUID")]
    Nil,
    /// Text that is empty, too long, or outside the allowed alphabet.
    #[error("{what} must be 1-{max} characters of [{alphabet}]")]
    BadText {
        /// Which kind of value.
        what: &'static str,
        /// The longest allowed length in bytes.
        max: usize,
        /// The allowed characters.
        alphabet: &'static str,
    },
}

/// A record's id: a UUIDv7 the capture client chooses, also the idempotency key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(Uuid);

impl RecordId {
    /// A fresh UUIDv7 from the clock and the OS random generator.
    pub fn new_v7(unix_ms: u64) -> Self {
        let mut random = [0u8; 10];
        crate::keys::fill_random(&mut random);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        bytes[6] = 0x70 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        Self(Uuid::from_bytes(bytes))
    }

    /// Accepts the 16 bytes if they are a UUIDv7 (version 7, RFC 9562 variant).
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        let uuid = Uuid::from_bytes(bytes);
        if uuid.get_version_num() != 7 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return Err(IdError::NotUuidV7);
        }
        Ok(Self(uuid))
    }
}

/// A capture device's id, assigned at enrollment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Uuid);

impl DeviceId {
    /// Accepts any non-nil UUID.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        let uuid = Uuid::from_bytes(bytes);
        if uuid.is_nil() {
            return Err(IdError::Nil);
        }
        Ok(Self(uuid))
    }
}

/// Parses exactly the 36-character hyphenated form (no braces, no `urn:uuid:`).
fn parse_hyphenated(text: &str) -> Result<Uuid, IdError> {
    if text.len() != 36 {
        return Err(IdError::BadUuid);
    }
    Uuid::try_parse(text).map_err(|_| IdError::BadUuid)
}

/// What both UUID ids share: the text form (parsed through each type's own
/// `from_bytes` rules), the bytes, `Display` and `Debug`.
macro_rules! uuid_id {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Parses the hyphenated text form.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                let uuid = parse_hyphenated(text)?;
                Self::from_bytes(*uuid.as_bytes())
            }

            /// The 16 bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0.hyphenated())
            }
        }
    )*};
}
uuid_id!(RecordId, DeviceId);

/// Rules for a short textual id.
struct TextRule {
    what: &'static str,
    max: usize,
    alphabet: &'static str,
    allowed: fn(u8) -> bool,
}

impl TextRule {
    fn check(&self, text: &str) -> Result<(), IdError> {
        if text.is_empty() || text.len() > self.max || !text.bytes().all(self.allowed) {
            return Err(IdError::BadText {
                what: self.what,
                max: self.max,
                alphabet: self.alphabet,
            });
        }
        Ok(())
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $ty:ident, $rule:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            const RULE: TextRule = $rule;

            /// Accepts the text if it meets the type's rules.
            pub fn new(text: &str) -> Result<Self, IdError> {
                Self::RULE.check(text)?;
                Ok(Self(text.to_owned()))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.0)
            }
        }
    };
}

text_id!(
    /// The person (or mailbox) whose records these are: 1-128 bytes of `[A-Za-z0-9._@+-]`.
    /// The gateway sees it; it is how retention schedules and holds are scoped.
    Custodian,
    TextRule {
        what: "custodian",
        max: 128,
        alphabet: "A-Za-z0-9._@+-",
        allowed: |b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b),
    }
);

text_id!(
    /// The messaging channel (`signal`, `sms`, `email`, `slack`, …): 1-32 bytes of `[a-z0-9-]`.
    Channel,
    TextRule {
        what: "channel",
        max: 32,
        alphabet: "a-z0-9-",
        allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
    }
);

text_id!(
    /// A named retention class (`permanent`, `3y`, `finra-6y`, …): 1-64 bytes of `[a-z0-9_-]`.
    RetentionClass,
    TextRule {
        what: "retention class",
        max: 64,
        alphabet: "a-z0-9_-",
        allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_',
    }
);

/// A keyring epoch number; records name the epoch whose archive key sealed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixMillis(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_must_be_v7() {
        let id = RecordId::new_v7(1_764_150_000_000);
        assert_eq!(RecordId::from_bytes(*id.as_bytes()), Ok(id));
        assert_eq!(RecordId::parse(&id.to_string()), Ok(id));
        let v4 = *Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef).as_bytes();
        assert_eq!(RecordId::from_bytes(v4), Err(IdError::NotUuidV7));
        assert_eq!(DeviceId::from_bytes([0; 16]), Err(IdError::Nil));
        assert_eq!(DeviceId::parse("not-a-uuid"), Err(IdError::BadUuid));
        let braced = format!("{{{id}}}");
        assert_eq!(RecordId::parse(&braced), Err(IdError::BadUuid));
    }

    #[test]
    fn text_ids_have_narrow_alphabets() {
        assert!(Custodian::new("j.doe@agency.gov").is_ok());
        assert!(Custodian::new("").is_err());
        assert!(Custodian::new("has space").is_err());
        assert!(Custodian::new(&"a".repeat(129)).is_err());
        assert!(Channel::new("signal").is_ok());
        assert!(Channel::new("Signal").is_err());
        assert!(RetentionClass::new("finra_6y").is_ok());
        assert!(RetentionClass::new("6 years").is_err());
    }
}
