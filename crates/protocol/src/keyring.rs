//! The keyring statement: which age recipients capture clients seal to, signed by the
//! organisation key that clients pin at enrollment.
//!
//! It is a C2SP signed note (see `vellum_tlog::note`) whose text is:
//!
//! ```text
//! vellum/keyring/v1
//! epoch <decimal>
//! archive <age1… recipient of the epoch archive identity>
//! escrow <age1… recipient of the escrow identity>
//! valid-from <Unix milliseconds>
//! valid-until <Unix milliseconds>
//! ```
//!
//! A client accepts a statement only if the pinned organisation key signed it, the
//! current time is inside its validity, and its epoch is not older than the last one
//! the client accepted. A different statement for the epoch it already holds is
//! equivocation and is refused too.

use thiserror::Error;
use vellum_tlog::note::{self, NoteError, NoteSigner, NoteVerifier};

use crate::ids::{Epoch, UnixMillis};
use crate::seal::Recipient;

const FIRST_LINE: &str = "vellum/keyring/v1";

/// Why a keyring statement was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringError {
    /// The note or its text is malformed.
    #[error("malformed keyring statement: {0}")]
    Malformed(String),
    /// Not signed by the pinned organisation key.
    #[error("keyring statement is not signed by the pinned organisation key")]
    UnpinnedKey,
    /// Signed under the pinned key's name and id, but the signature is wrong.
    #[error("keyring statement signature does not verify")]
    BadSignature,
    /// An older epoch than one already accepted.
    #[error("keyring rollback: epoch {offered} is older than accepted epoch {accepted}")]
    Rollback {
        /// The epoch already accepted.
        accepted: Epoch,
        /// The epoch offered.
        offered: Epoch,
    },
    /// A different statement for the epoch already accepted.
    #[error("keyring equivocation: a different statement for accepted epoch {0}")]
    Equivocation(Epoch),
    /// The validity period has not started.
    #[error("keyring statement is not valid yet")]
    NotYetValid,
    /// The validity period has ended.
    #[error("keyring statement has expired")]
    Expired,
}

/// What a keyring statement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringStatement {
    /// The epoch number.
    pub epoch: Epoch,
    /// The recipient of the epoch's archive identity.
    pub archive: Recipient,
    /// The recipient of the escrow identity.
    pub escrow: Recipient,
    /// Start of validity.
    pub valid_from: UnixMillis,
    /// End of validity (exclusive).
    pub valid_until: UnixMillis,
}

impl KeyringStatement {
    /// The note text.
    pub fn to_text(&self) -> String {
        format!(
            "{FIRST_LINE}\nepoch {}\narchive {}\nescrow {}\nvalid-from {}\nvalid-until {}\n",
            self.epoch, self.archive, self.escrow, self.valid_from.0, self.valid_until.0
        )
    }

    /// Signs the statement with the organisation key; returns the signed note.
    pub fn sign(&self, org_key: &NoteSigner) -> Result<String, KeyringError> {
        if self.valid_until <= self.valid_from {
            return Err(KeyringError::Malformed("validity ends before it starts".into()));
        }
        org_key
            .sign(&self.to_text())
            .map_err(|e| KeyringError::Malformed(e.to_string()))
    }

    /// Parses the text (of a verified note).
    pub fn parse_text(text: &str) -> Result<Self, KeyringError> {
        let malformed = |what: &str| KeyringError::Malformed(what.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("no final newline"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(FIRST_LINE) {
            return Err(malformed("not a vellum/keyring/v1 statement"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or_else(|| malformed(&format!("missing {name} line")))
        };
        let number = |text: &str| parse_decimal(text).ok_or_else(|| malformed("bad number"));
        let epoch = Epoch(number(field("epoch")?)?);
        let archive: Recipient = field("archive")?
            .parse()
            .map_err(|_| malformed("bad archive recipient"))?;
        let escrow: Recipient = field("escrow")?
            .parse()
            .map_err(|_| malformed("bad escrow recipient"))?;
        let valid_from = UnixMillis(number(field("valid-from")?)?);
        let valid_until = UnixMillis(number(field("valid-until")?)?);
        if lines.next().is_some() {
            return Err(malformed("unexpected extra line"));
        }
        let statement = Self {
            epoch,
            archive,
            escrow,
            valid_from,
            valid_until,
        };
        // Canonical form only: recipients re-encode to the same text.
        if statement.to_text() != text {
            return Err(malformed("not in canonical form"));
        }
        if valid_until <= valid_from {
            return Err(malformed("validity ends before it starts"));
        }
        Ok(statement)
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A keyring statement that passed every check against the pinned organisation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKeyring {
    statement: KeyringStatement,
    note: String,
}

impl VerifiedKeyring {
    /// The statement.
    pub fn statement(&self) -> &KeyringStatement {
        &self.statement
    }

    /// The signed note as received, for the client to keep as its rollback floor.
    pub fn note(&self) -> &str {
        &self.note
    }
}

/// The statement of a keyring note the organisation key signed, whatever its validity
/// period: for keyrings of the past (the escrow recipient an old epoch named, say).
/// A keyring to seal to is checked with [`verify`].
pub fn signed_statement(note_bytes: &[u8], org_key: &NoteVerifier) -> Result<KeyringStatement, KeyringError> {
    let verified = note::open(note_bytes, org_key).map_err(|err| match err {
        NoteError::NoTrustedSignature => KeyringError::UnpinnedKey,
        NoteError::InvalidSignature(_) => KeyringError::BadSignature,
        other => KeyringError::Malformed(other.to_string()),
    })?;
    KeyringStatement::parse_text(verified.text())
}

/// Verifies a signed keyring statement.
///
/// `accepted` is the last statement this client accepted (from its own state, never
/// from the server); `now` is the client's clock.
pub fn verify(
    note_bytes: &[u8],
    org_key: &NoteVerifier,
    accepted: Option<&VerifiedKeyring>,
    now: UnixMillis,
) -> Result<VerifiedKeyring, KeyringError> {
    let statement = signed_statement(note_bytes, org_key)?;
    if let Some(accepted) = accepted {
        let held = &accepted.statement;
        if statement.epoch < held.epoch {
            return Err(KeyringError::Rollback {
                accepted: held.epoch,
                offered: statement.epoch,
            });
        }
        if statement.epoch == held.epoch && statement != *held {
            return Err(KeyringError::Equivocation(held.epoch));
        }
    }
    if now < statement.valid_from {
        return Err(KeyringError::NotYetValid);
    }
    if now >= statement.valid_until {
        return Err(KeyringError::Expired);
    }
    Ok(VerifiedKeyring {
        statement,
        note: String::from_utf8_lossy(note_bytes).into_owned(),
    })
}
