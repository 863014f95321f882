//! Proofs as text files.
//!
//! * [`TlogProof`]: C2SP `tlog-proof@v1` — an entry's index, its inclusion proof and the
//!   checkpoint it is proved against, with optional opaque `extra` data (Vellum puts the
//!   log entry there so a receipt is self-contained).
//! * [`ConsistencyProof`]: Vellum's own text for a consistency proof between two sizes:
//!
//! ```text
//! vellum/consistency-proof/v1
//! old <size>
//! new <size>
//! <base64 hash>   zero or more lines, in RFC 6962 order
//! ```

use base64::{Engine as _, engine::general_purpose::STANDARD};
use thiserror::Error;

use crate::checkpoint::{self, CheckpointError, VerifiedCheckpoint, parse_decimal};
use crate::hash::Hash;
use crate::note::{MAX_NOTE_LEN, NoteVerifier};
use crate::tree::MAX_PROOF_HASHES;
use crate::verify::{self, VerifyError};

const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
const CONSISTENCY_HEADER: &str = "vellum/consistency-proof/v1";
/// The largest `extra` payload accepted, in decoded bytes.
pub const MAX_EXTRA_LEN: usize = 16 * 1024;
/// The largest proof text accepted, in bytes.
pub const MAX_PROOF_TEXT_LEN: usize = MAX_NOTE_LEN + 2 * MAX_EXTRA_LEN + 64 * MAX_PROOF_HASHES;

/// Why a proof file was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// Larger than [`MAX_PROOF_TEXT_LEN`].
    #[error("proof is too large")]
    TooLarge,
    /// Not the expected text.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The embedded checkpoint was refused.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The proof does not hold.
    #[error("proof does not verify: {0}")]
    Verify(#[from] VerifyError),
}

/// A C2SP `tlog-proof@v1`: an inclusion proof bundled with its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque application data, **not authenticated** by the proof itself.
    pub extra: Option<Vec<u8>>,
    /// The zero-based index of the entry.
    pub index: u64,
    /// The inclusion proof, leaf's sibling first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// Formats the proof as text.
    pub fn to_text(&self) -> String {
        let mut out = String::from(TLOG_PROOF_HEADER);
        out.push('\n');
        if let Some(extra) = &self.extra {
            out.push_str("extra ");
            out.push_str(&STANDARD.encode(extra));
            out.push('\n');
        }
        out.push_str(&format!("index {}\n", self.index));
        push_hashes(&mut out, &self.hashes);
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses the text; checks nothing cryptographic.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > MAX_PROOF_TEXT_LEN {
            return Err(ProofError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ProofError::Malformed("not UTF-8"))?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or(ProofError::Malformed("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(TLOG_PROOF_HEADER) {
            return Err(ProofError::Malformed("not a c2sp.org/tlog-proof@v1"));
        }
        let mut extra = None;
        if let Some(value) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            if value.len() > MAX_EXTRA_LEN.div_ceil(3) * 4 {
                return Err(ProofError::TooLarge);
            }
            let decoded = STANDARD
                .decode(value)
                .map_err(|_| ProofError::Malformed("extra is not base64"))?;
            if decoded.len() > MAX_EXTRA_LEN {
                return Err(ProofError::TooLarge);
            }
            extra = Some(decoded);
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(parse_decimal)
            .ok_or(ProofError::Malformed("bad index line"))?;
        let hashes = parse_hashes(lines)?;
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies the checkpoint against the pinned log key and that the leaf with hash
    /// `leaf` sits at [`TlogProof::index`] in it.
    pub fn verify(&self, log_key: &NoteVerifier, leaf: &Hash) -> Result<VerifiedCheckpoint, ProofError> {
        let checkpoint = checkpoint::open(self.checkpoint.as_bytes(), log_key)?;
        self.verify_in(&checkpoint, leaf)?;
        Ok(checkpoint)
    }

    /// Verifies that the leaf with hash `leaf` sits at [`TlogProof::index`] in
    /// `checkpoint`, one that already verified against the pinned log key: the proof
    /// must carry exactly that checkpoint's note. Proofs of one batch share a
    /// checkpoint, so its signature need be checked once, not once per proof.
    pub fn verify_in(&self, checkpoint: &VerifiedCheckpoint, leaf: &Hash) -> Result<(), ProofError> {
        if checkpoint.note() != self.checkpoint {
            return Err(ProofError::Malformed("the proof carries another checkpoint"));
        }
        verify::inclusion(
            self.index,
            checkpoint.size(),
            leaf,
            &self.hashes,
            checkpoint.root(),
        )?;
        Ok(())
    }
}

/// A consistency proof between two tree sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
    /// The proof hashes, in RFC 6962 order.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Formats the proof as text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{CONSISTENCY_HEADER}\nold {}\nnew {}\n", self.old, self.new);
        push_hashes(&mut out, &self.hashes);
        out
    }

    /// Parses the text.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > MAX_PROOF_TEXT_LEN {
            return Err(ProofError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ProofError::Malformed("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or(ProofError::Malformed("no final newline"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(CONSISTENCY_HEADER) {
            return Err(ProofError::Malformed("not a vellum/consistency-proof/v1"));
        }
        let old = parse_size_line(lines.next(), "old ")?;
        let new = parse_size_line(lines.next(), "new ")?;
        let hashes = parse_hashes(lines)?;
        Ok(Self { old, new, hashes })
    }

    /// Verifies the proof between two checkpoints of the same log.
    pub fn verify(&self, old: &VerifiedCheckpoint, new: &VerifiedCheckpoint) -> Result<(), ProofError> {
        if old.size() != self.old || new.size() != self.new {
            return Err(ProofError::Malformed("proof sizes differ from the checkpoints"));
        }
        verify::consistency(self.old, self.new, old.root(), new.root(), &self.hashes)?;
        Ok(())
    }
}

fn parse_size_line(line: Option<&str>, prefix: &str) -> Result<u64, ProofError> {
    line.and_then(|l| l.strip_prefix(prefix))
        .and_then(parse_decimal)
        .ok_or(ProofError::Malformed("bad size line"))
}

fn push_hashes(out: &mut String, hashes: &[Hash]) {
    for hash in hashes {
        out.push_str(&hash.to_base64());
        out.push('\n');
    }
}

fn parse_hashes<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<Hash>, ProofError> {
    let mut hashes = Vec::new();
    for line in lines {
        if hashes.len() == MAX_PROOF_HASHES {
            return Err(ProofError::TooLarge);
        }
        hashes.push(Hash::from_base64(line).ok_or(ProofError::Malformed("bad proof hash line"))?);
    }
    Ok(hashes)
}
