//! Blind tokens: what lets auditors find records by participant, conversation or day
//! while the gateway learns neither names nor numbers.
//!
//! `token = HMAC-SHA256(index_key, kind || normalised value)[..16]`, where `kind` is one
//! byte ([`TokenKind`]) and the value is UTF-8 in the normal form below. Capture clients
//! and auditors hold the index key; the gateway never does. Both sides must normalise
//! identically, or an auditor's search silently misses records, so the rules are
//! exact and tested:
//!
//! | kind | normal form | example |
//! |---|---|---|
//! | phone | `tel:+` and 7-15 digits (E.164) | `+1 (555) 010-0000` → `tel:+15550100000` |
//! | email | `mailto:` and the address, trimmed, lower-cased | `Ann@Agency.GOV` → `mailto:ann@agency.gov` |
//! | handle | `handle:<service>:<id>`, id trimmed, leading `@` removed, lower-cased | `@JDoe` on slack → `handle:slack:jdoe` |
//! | conversation | `<channel>:<id>`, id trimmed, case kept | `signal:Zm9vYmFy` |
//! | day | `YYYY-MM-DD` in UTC | `2026-11-26` |
//!
//! Phone numbers are parsed with libphonenumber's rules (the `phonenumber` crate, which
//! carries Google's metadata): a leading `+` or `00` marks an international number;
//! otherwise the number is national to the caller's default region (trunk prefixes such
//! as the UK's `0` or the NANP's `1` handled per country), or, with no default region,
//! taken as digits that include the country code. Letters are read as keypad digits.
//! The result is E.164: 7 to 15 digits, not starting with 0.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ids::Channel;

/// Why a value could not be normalised.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormaliseError {
    /// Not a phone number after the rules above.
    #[error("not a phone number (E.164 allows 7-15 digits)")]
    Phone,
    /// Not a single `local@domain` address.
    #[error("not an email address")]
    Email,
    /// An empty handle, or a service outside `[a-z0-9-]`.
    #[error("not a handle")]
    Handle,
    /// An empty conversation id.
    #[error("empty conversation id")]
    Conversation,
    /// A normalised participant string in none of the forms above.
    #[error("not a normalised participant id (tel:, mailto: or handle:)")]
    Participant,
}

/// The kind byte that separates token domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    /// A sender or recipient.
    Participant = 1,
    /// A conversation or thread.
    Conversation = 2,
    /// The UTC day the message was sent.
    Day = 3,
}

/// A participant identifier in normal form (`tel:…`, `mailto:…`, `handle:…:…`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(String);

impl fmt::Debug for ParticipantId {
    // Participant ids are personal data: keep them out of logs and panics by default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParticipantId(…)")
    }
}

impl ParticipantId {
    /// A phone number, read as libphonenumber reads it. `default_region` is the ISO
    /// 3166 region (`US`, `GB`, …) whose national dialling rules apply to a number
    /// written without `+` or `00`; without one, such digits are taken to include
    /// their country code.
    pub fn phone(raw: &str, default_region: Option<&str>) -> Result<Self, NormaliseError> {
        let trimmed = raw.trim();
        let text = if let Some(rest) = trimmed.strip_prefix("00") {
            format!("+{rest}")
        } else if default_region.is_none() && !trimmed.starts_with('+') {
            format!("+{trimmed}")
        } else {
            trimmed.to_owned()
        };
        let region = match default_region {
            Some(code) => Some(
                code.parse::<phonenumber::country::Id>()
                    .map_err(|_| NormaliseError::Phone)?,
            ),
            None => None,
        };
        let number = phonenumber::parse(region, &text).map_err(|_| NormaliseError::Phone)?;
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let digits = e164.strip_prefix('+').ok_or(NormaliseError::Phone)?;
        if !(7..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(NormaliseError::Phone);
        }
        Ok(Self(format!("tel:{e164}")))
    }

    /// An email address.
    pub fn email(raw: &str) -> Result<Self, NormaliseError> {
        let address = raw.trim().to_lowercase();
        let (local, domain) = address.split_once('@').ok_or(NormaliseError::Email)?;
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || address.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(NormaliseError::Email);
        }
        Ok(Self(format!("mailto:{address}")))
    }

    /// A handle on a service (`slack`, `signal`, `teams`, …).
    pub fn handle(service: &str, raw: &str) -> Result<Self, NormaliseError> {
        let service = service.trim().to_ascii_lowercase();
        let id = raw.trim();
        let id = id.strip_prefix('@').unwrap_or(id).to_lowercase();
        let service_ok = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !service_ok || id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NormaliseError::Handle);
        }
        Ok(Self(format!("handle:{service}:{id}")))
    }

    /// Accepts a string already in normal form (as stored in a message document),
    /// checking that normalising it again changes nothing.
    pub fn parse(normalised: &str) -> Result<Self, NormaliseError> {
        let again = if let Some(number) = normalised.strip_prefix("tel:") {
            Self::phone(number, None)
        } else if let Some(address) = normalised.strip_prefix("mailto:") {
            Self::email(address)
        } else if let Some(rest) = normalised.strip_prefix("handle:") {
            let (service, id) = rest.split_once(':').ok_or(NormaliseError::Participant)?;
            Self::handle(service, id)
        } else {
            return Err(NormaliseError::Participant);
        };
        match again {
            Ok(id) if id.0 == normalised => Ok(id),
            _ => Err(NormaliseError::Participant),
        }
    }

    /// The normal form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A 16-byte blind token as it appears in record headers and searches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlindToken(pub [u8; 16]);

impl fmt::Display for BlindToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BlindToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindToken({self})")
    }
}

/// The organisation's blind-index key (32 bytes), held by clients and auditors only.
pub struct IndexKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(…)")
    }
}

impl IndexKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        crate::keys::fill_random(key.as_mut());
        Self(key)
    }

    /// The key from its 32 bytes (as carried in an enrollment bundle).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The 32 bytes, for the enrollment bundle.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0)
    }

    /// `HMAC-SHA256(key, kind || value)[..16]` for an already normalised value.
    pub fn token(&self, kind: TokenKind, normalised: &str) -> BlindToken {
        #[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("HMAC takes any key length");
        mac.update(&[kind as u8]);
        mac.update(normalised.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(&full[..16]);
        BlindToken(token)
    }

    /// The token of a participant.
    pub fn participant(&self, id: &ParticipantId) -> BlindToken {
        self.token(TokenKind::Participant, id.as_str())
    }

    /// The token of a conversation on a channel.
    pub fn conversation(&self, channel: &Channel, id: &str) -> Result<BlindToken, NormaliseError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(NormaliseError::Conversation);
        }
        Ok(self.token(TokenKind::Conversation, &format!("{channel}:{id}")))
    }

    /// The token of the UTC day containing `unix_ms`.
    pub fn day(&self, unix_ms: u64) -> BlindToken {
        self.token(TokenKind::Day, &crate::time::iso_date(unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(raw: &str, cc: Option<&str>) -> Result<String, NormaliseError> {
        ParticipantId::phone(raw, cc).map(|p| p.0)
    }

    #[test]
    fn phone_numbers_in_every_spelling_meet() {
        let want = Ok("tel:+15550100000");
        for raw in [
            "+1 (555) 010-0000",
            "15550100000",
            "+15550100000",
            "001-555-010-0000",
            "1.555.010.0000",
        ] {
            assert_eq!(phone(raw, None).as_deref(), want, "{raw}");
        }
        for raw in [
            "(555) 010-0000",
            "555 010 0000",
            "1 555 010 0000",
            "+1 555 010 0000",
        ] {
            assert_eq!(phone(raw, Some("US")).as_deref(), want, "{raw}");
        }
        assert_eq!(
            phone("020 7946 0000", Some("GB")).as_deref(),
            Ok("tel:+442079460000")
        );
        assert_eq!(
            phone("+44 20 7946 0000", Some("US")).as_deref(),
            Ok("tel:+442079460000")
        );
        // Italy keeps its leading 0 after the country code; Kazakhstan dials a trunk 8.
        assert_eq!(
            phone("06 6982 0000", Some("IT")).as_deref(),
            Ok("tel:+390669820000")
        );
        assert_eq!(
            phone("+39 06 6982 0000", None).as_deref(),
            Ok("tel:+390669820000")
        );
        assert_eq!(
            phone("8 701 234 5678", Some("KZ")),
            phone("+7 701 234 5678", None)
        );
        // Keypad letters are digits.
        assert_eq!(phone("+1 800 FLOWERS", None), phone("+1 800 3569377", None));
        assert_eq!(phone("12345", None), Err(NormaliseError::Phone));
        assert_eq!(phone("1234567890123456789", None), Err(NormaliseError::Phone));
        assert_eq!(phone("555 0100", Some("NOWHERE")), Err(NormaliseError::Phone));
    }

    #[test]
    fn emails_and_handles_fold_case() {
        assert_eq!(
            ParticipantId::email(" Ann@Agency.GOV ").unwrap().0,
            "mailto:ann@agency.gov"
        );
        assert!(ParticipantId::email("no-at-sign").is_err());
        assert!(ParticipantId::email("a@b@c").is_err());
        assert_eq!(
            ParticipantId::handle("Slack", "@JDoe").unwrap().0,
            "handle:slack:jdoe"
        );
        assert!(ParticipantId::handle("sl ack", "x").is_err());
        assert!(ParticipantId::handle("slack", "@").is_err());
    }

    #[test]
    fn parse_accepts_only_normal_forms() {
        assert!(ParticipantId::parse("tel:+15550100000").is_ok());
        assert!(ParticipantId::parse("tel:+1 555 010 0000").is_err());
        assert!(ParticipantId::parse("mailto:Ann@agency.gov").is_err());
        assert!(ParticipantId::parse("handle:slack:jdoe").is_ok());
        assert!(ParticipantId::parse("jdoe").is_err());
    }

    #[test]
    fn tokens_separate_kinds_and_keys() {
        let key = IndexKey::from_bytes([1; 32]);
        let other = IndexKey::from_bytes([2; 32]);
        let id = ParticipantId::email("a@b.c").unwrap();
        assert_eq!(
            key.participant(&id),
            key.participant(&ParticipantId::email("A@B.C").unwrap())
        );
        assert_ne!(key.participant(&id), other.participant(&id));
        assert_ne!(
            key.token(TokenKind::Participant, "x"),
            key.token(TokenKind::Conversation, "x")
        );
        assert_eq!(
            key.day(1_764_150_000_000),
            key.token(TokenKind::Day, "2025-11-26")
        );
    }
}
