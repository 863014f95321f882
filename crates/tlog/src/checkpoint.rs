//! C2SP `tlog-checkpoint`: the signed statement of a log's size and root hash.
//!
//! ```text
//! <origin>\n            the log's identity; Vellum requires it to equal the log key's name
//! <size>\n              decimal, no leading zeros
//! <base64 root hash>\n  standard base64 of 32 bytes
//! [extension lines]\n   optional, non-empty, carried but not interpreted
//! ```
//! The body is the text of a signed note (see [`crate::note`]).

use thiserror::Error;

use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// Why a checkpoint was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signed note around it was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The origin line is not the name of the key that signed it.
    #[error("checkpoint origin {found:?} is not the log {expected:?}")]
    WrongOrigin {
        /// The origin the verifier expects (its key name).
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
}

/// A checkpoint body: origin, tree size, root hash and extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint of the tree of `size` leaves with root `root`, for the log `origin`.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Extension lines, uninterpreted.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text of the body.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64());
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint body (the verified text of a note).
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(CheckpointError::Malformed("empty origin"))?;
        let size = lines
            .next()
            .and_then(parse_decimal)
            .ok_or(CheckpointError::Malformed("bad tree size"))?;
        let root = lines
            .next()
            .and_then(Hash::from_base64)
            .ok_or(CheckpointError::Malformed("bad root hash"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint as a note. The origin must be the signer's key name, which
    /// makes the text valid by construction.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if self.origin != signer.name() {
            return Err(CheckpointError::WrongOrigin {
                expected: signer.name().to_owned(),
                found: self.origin.clone(),
            });
        }
        if self.extensions.iter().any(|l| l.is_empty() || l.contains('\n')) {
            return Err(CheckpointError::Malformed("bad extension line"));
        }
        Ok(signer.sign_checked_text(&self.to_text()))
    }
}

/// A checkpoint whose note the log key signed. Only [`open`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    body: Checkpoint,
    note: String,
}

impl VerifiedCheckpoint {
    /// The tree size.
    pub fn size(&self) -> u64 {
        self.body.size
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        &self.body.root
    }

    /// The checkpoint body.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.body
    }

    /// The signed note exactly as received, to store or pass on to witnesses.
    pub fn note(&self) -> &str {
        &self.note
    }
}

/// Verifies a signed checkpoint against the pinned log key, and that its origin is
/// that key's name.
pub fn open(bytes: &[u8], log_key: &NoteVerifier) -> Result<VerifiedCheckpoint, CheckpointError> {
    let verified = note::open(bytes, log_key)?;
    let body = Checkpoint::parse_text(verified.text())?;
    if body.origin != log_key.name() {
        return Err(CheckpointError::WrongOrigin {
            expected: log_key.name().to_owned(),
            found: body.origin,
        });
    }
    let note = String::from_utf8_lossy(bytes).into_owned();
    Ok(VerifiedCheckpoint { body, note })
}

/// Parses an ASCII decimal with no sign and no leading zeros (except `0` itself).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn sign_open_round_trip() {
        let signer = NoteSigner::from_seed("log.example/a", [1; 32]).unwrap();
        let cp = Checkpoint::new("log.example/a", 5, leaf_hash(b"x"));
        let note = cp.sign(&signer).unwrap();
        let verified = open(note.as_bytes(), &signer.verifier()).unwrap();
        assert_eq!(verified.checkpoint(), &cp);
        assert_eq!(verified.note(), note);
    }

    #[test]
    fn origin_must_be_the_key_name() {
        let signer = NoteSigner::from_seed("log.example/a", [1; 32]).unwrap();
        let cp = Checkpoint::new("log.example/b", 5, leaf_hash(b"x"));
        assert!(matches!(
            cp.sign(&signer),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn body_parsing_is_strict() {
        let root = leaf_hash(b"r").to_base64();
        assert!(Checkpoint::parse_text(&format!("o\n5\n{root}\n")).is_ok());
        assert!(Checkpoint::parse_text(&format!("o\n05\n{root}\n")).is_err());
        assert!(Checkpoint::parse_text(&format!("o\n-5\n{root}\n")).is_err());
        assert!(Checkpoint::parse_text(&format!("\n5\n{root}\n")).is_err());
        assert!(Checkpoint::parse_text(&format!("o\n5\n{root}")).is_err());
        assert!(Checkpoint::parse_text(&format!("o\n5\n{root}\n\next\n")).is_err());
        assert!(Checkpoint::parse_text("o\n5\nAAAA\n").is_err());
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal("18446744073709551616"), None);
        assert_eq!(parse_decimal("0"), Some(0));
    }
}
