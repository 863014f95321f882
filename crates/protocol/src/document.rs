//! The message document: the plaintext a capture client seals, as UTF-8 JSON.
//!
//! Only capture clients and auditors ever see it. Its participant ids are in the
//! normal form of [`crate::blind`], so an auditor who opens a record computes the same
//! tokens the client put in the header. Unknown fields are kept out of the type but
//! tolerated when reading, so newer clients can add fields without breaking older
//! auditors.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::blind::{BlindToken, IndexKey, NormaliseError, ParticipantId};
use crate::ids::{Channel, IdError};

/// The document version this code writes.
pub const DOCUMENT_VERSION: u32 = 1;
/// The largest document accepted, before sealing (attachments travel as separate blobs).
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024 * 1024;

/// Why a document was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not JSON of the expected shape. Only the kind of error and its position are
    /// kept: serde's own messages quote values, which here are message content.
    #[error("malformed message document: {kind} error at line {line}, column {column}")]
    Json {
        /// `syntax`, `data`, `eof` or `io`.
        kind: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A version this code does not read.
    #[error("unsupported message document version {0}")]
    Version(u32),
    /// Larger than [`MAX_DOCUMENT_LEN`].
    #[error("message document is too large")]
    TooLarge,
    /// A participant id not in normal form.
    #[error("participant id not in normal form: {0}")]
    Participant(#[from] NormaliseError),
    /// A participant id that is no address, phone number or handle, in the field named
    /// (`sender.id`, `recipients[2].id`, `deletions[0].by`).
    #[error("{field}: {source}")]
    ParticipantField {
        /// The field.
        field: String,
        /// Why.
        source: NormaliseError,
    },
    /// A field missing or not allowed (named as serde names it; no value is quoted).
    #[error("malformed message document: {0}")]
    Field(String),
    /// An invalid channel.
    #[error("invalid channel: {0}")]
    Channel(#[from] IdError),
    /// An attachment digest that is not 64 lower-case hex characters.
    #[error("attachment digest must be 64 lower-case hex characters")]
    AttachmentDigest,
}

impl From<serde_json::Error> for DocumentError {
    fn from(err: serde_json::Error) -> Self {
        // "missing field `x`" and "unknown field `x`" name a field and quote no value;
        // other messages may quote content, so only their position is kept.
        let text = err.to_string();
        if text.starts_with("missing field") || text.starts_with("unknown field") {
            return DocumentError::Field(text);
        }
        let kind = match err.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        DocumentError::Json {
            kind,
            line: err.line(),
            column: err.column(),
        }
    }
}

/// One message, as captured.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDocument {
    /// Always [`DOCUMENT_VERSION`] when written by this code.
    pub version: u32,
    /// The channel (`signal`, `sms`, `email`, …).
    pub channel: String,
    /// The conversation or thread.
    pub conversation: Conversation,
    /// Who sent it.
    pub sender: Participant,
    /// Who it was sent to.
    pub recipients: Vec<Participant>,
    /// When it was sent, Unix milliseconds (sender's clock as captured).
    pub sent_at_ms: u64,
    /// When the capturing device received it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<u64>,
    /// The content.
    pub body: Body,
    /// Later edits, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<Edit>,
    /// Deletions ("delete for everyone", expiry), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<Deletion>,
    /// Attachments, sealed separately and referenced by the digest of their ciphertext.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
}

impl fmt::Debug for MessageDocument {
    // Content and participants never reach logs or panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageDocument")
            .field("version", &self.version)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// `Debug` that names the type and nothing else: these parts hold personal data.
macro_rules! redacted_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}
redacted_debug!(Conversation, Participant, Body, Edit, Deletion, AttachmentRef);

/// A conversation or thread.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The channel's stable id for it (group id, thread id, phone pair …).
    pub id: String,
    /// Its display title, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A sender or recipient.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Stable id in normal form (`tel:+…`, `mailto:…`, `handle:service:…`).
    pub id: String,
    /// The name shown at capture time, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The id as the source wrote it, when that was not the normal form (an address in
    /// capitals, a formatted phone number): the record keeps what the source said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_written: Option<String>,
}

/// Message content.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// MIME type of `text`, e.g. `text/plain`.
    pub content_type: String,
    /// The content.
    pub text: String,
}

/// An edit of the message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The new content.
    pub text: String,
}

/// A deletion of the message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Who deleted it (normal-form id), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A reference to a separately sealed attachment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// SHA-256 of the attachment's sealed blob, lower-case hex.
    pub sha256: String,
    /// Length of the sealed blob in bytes.
    pub len: u64,
    /// MIME type of the plaintext.
    pub media_type: String,
    /// File name as sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl MessageDocument {
    /// The JSON bytes to seal (zeroized when dropped).
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, DocumentError> {
        self.check()?;
        Ok(Zeroizing::new(serde_json::to_vec(self)?))
    }

    /// Parses and checks opened JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.len() > MAX_DOCUMENT_LEN {
            return Err(DocumentError::TooLarge);
        }
        let doc: Self = serde_json::from_slice(bytes)?;
        doc.check()?;
        Ok(doc)
    }

    /// Parses a document as a source wrote it: as [`Self::from_json`], but a
    /// participant id not in normal form (`Ann@Agency.example`, `+1 (555) 010-0000`,
    /// `mailto:Ann@…`) is put in normal form, its text kept in `as_written`, so tokens
    /// match every other record of that participant. An id that is none of an address,
    /// a phone number in international form or a handle is refused, naming its field.
    pub fn from_json_normalising(bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.len() > MAX_DOCUMENT_LEN {
            return Err(DocumentError::TooLarge);
        }
        let mut doc: Self = serde_json::from_slice(bytes)?;
        let named = |field: String| move |source| DocumentError::ParticipantField { field, source };
        normalise(&mut doc.sender).map_err(named("sender.id".into()))?;
        for (i, p) in doc.recipients.iter_mut().enumerate() {
            normalise(p).map_err(named(format!("recipients[{i}].id")))?;
        }
        for (i, d) in doc.deletions.iter_mut().enumerate() {
            if let Some(by) = &mut d.by
                && ParticipantId::parse(by).is_err()
            {
                *by = normal_form(by)
                    .map_err(named(format!("deletions[{i}].by")))?
                    .as_str()
                    .to_owned();
            }
        }
        doc.check()?;
        Ok(doc)
    }

    fn check(&self) -> Result<(), DocumentError> {
        if self.version != DOCUMENT_VERSION {
            return Err(DocumentError::Version(self.version));
        }
        Channel::new(&self.channel)?;
        for p in std::iter::once(&self.sender).chain(&self.recipients) {
            ParticipantId::parse(&p.id)?;
        }
        for d in &self.deletions {
            if let Some(by) = &d.by {
                ParticipantId::parse(by)?;
            }
        }
        for a in &self.attachments {
            let hex_ok = a.sha256.len() == 64
                && a.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(DocumentError::AttachmentDigest);
            }
        }
        Ok(())
    }

    /// The blind tokens a header for this document carries: every participant, the
    /// conversation and the UTC day it was sent.
    pub fn blind_tokens(&self, key: &IndexKey) -> Result<Vec<BlindToken>, DocumentError> {
        let channel = Channel::new(&self.channel)?;
        let mut tokens = Vec::with_capacity(self.recipients.len() + 3);
        for p in std::iter::once(&self.sender).chain(&self.recipients) {
            tokens.push(key.participant(&ParticipantId::parse(&p.id)?));
        }
        tokens.push(key.conversation(&channel, &self.conversation.id)?);
        tokens.push(key.day(self.sent_at_ms));
        tokens.sort_unstable();
        tokens.dedup();
        Ok(tokens)
    }
}

/// Puts `p`'s id in normal form, keeping the text as written when it changes.
fn normalise(p: &mut Participant) -> Result<(), NormaliseError> {
    if ParticipantId::parse(&p.id).is_ok() {
        return Ok(());
    }
    let id = normal_form(&p.id)?;
    p.as_written = Some(std::mem::replace(&mut p.id, id.as_str().to_owned()));
    Ok(())
}

/// The normal form of an id as a source may write it: `mailto:`/`tel:`/`handle:`
/// forms in any case or formatting, a bare address, or a bare international number.
fn normal_form(raw: &str) -> Result<ParticipantId, NormaliseError> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("mailto:") {
        ParticipantId::email(&raw[7..])
    } else if lower.starts_with("tel:") {
        ParticipantId::phone(&raw[4..], None)
    } else if lower.starts_with("handle:") {
        let (service, id) = raw[7..].split_once(':').ok_or(NormaliseError::Handle)?;
        ParticipantId::handle(service, id)
    } else if raw.contains('@') {
        ParticipantId::email(raw)
    } else if raw.starts_with('+') || raw.starts_with("00") {
        ParticipantId::phone(raw, None)
    } else {
        Err(NormaliseError::Participant)
    }
}

#[cfg(test)]
mod normalising_tests {
    use super::*;

    fn doc(sender: &str, recipient: &str) -> String {
        serde_json::json!({
            "version": 1, "channel": "sms",
            "conversation": { "id": "c1" },
            "sender": { "id": sender },
            "recipients": [{ "id": recipient, "display_name": "Bob" }],
            "sent_at_ms": 1, "body": { "content_type": "text/plain", "text": "hi" }
        })
        .to_string()
    }

    #[test]
    fn ids_as_sources_write_them_are_put_in_normal_form_and_kept_as_written() {
        let parsed =
            MessageDocument::from_json_normalising(doc("Ann@Agency.Example", "+1 (555) 010-0000").as_bytes())
                .unwrap();
        assert_eq!(parsed.sender.id, "mailto:ann@agency.example");
        assert_eq!(parsed.sender.as_written.as_deref(), Some("Ann@Agency.Example"));
        assert_eq!(parsed.recipients[0].id, "tel:+15550100000");
        assert_eq!(
            parsed.recipients[0].as_written.as_deref(),
            Some("+1 (555) 010-0000")
        );
        assert_eq!(parsed.recipients[0].display_name.as_deref(), Some("Bob"));
        // Already normal: nothing added.
        let normal =
            MessageDocument::from_json_normalising(doc("mailto:a@b.example", "tel:+15550100000").as_bytes())
                .unwrap();
        assert!(normal.sender.as_written.is_none() && normal.recipients[0].as_written.is_none());
        // The strict reader still refuses what is not in normal form.
        assert!(
            MessageDocument::from_json(doc("Ann@Agency.Example", "tel:+15550100000").as_bytes()).is_err()
        );
    }

    #[test]
    fn refusals_name_the_field_and_quote_no_content() {
        let bad =
            MessageDocument::from_json_normalising(doc("a@b.example", "nobody in particular").as_bytes());
        let text = bad.err().unwrap().to_string();
        assert!(text.starts_with("recipients[0].id: "), "{text}");
        assert!(!text.contains("nobody"), "{text}");
        let missing = MessageDocument::from_json_normalising(br#"{"version":1}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("missing field `channel`"), "{missing}");
    }
}
