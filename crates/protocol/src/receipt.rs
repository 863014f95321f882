//! Log entries and capture receipts.
//!
//! Every archive event is one leaf of the transparency log; the leaf's data is a
//! [`LogEntry`] in this binary form (integers big-endian):
//!
//! ```text
//! version   1   0x01
//! kind      1   0x01 = record appended
//! record id 16  the header's record id
//! header   32   SHA-256 of the header bytes exactly as signed
//! received  8   u64, the gateway's receipt time in Unix milliseconds
//!
//! version   1   0x01
//! kind      1   0x02 = audit event recorded
//! event    32   SHA-256 of the event's canonical bytes (see the archive's `AuditEvent`)
//! at        8   u64, when it happened, Unix milliseconds
//! ```
//!
//! The receipt a capture client gets is a C2SP `tlog-proof@v1` whose `extra` line
//! carries that entry: the client checks the checkpoint against the pinned log key,
//! that the entry names its own record and header, and that the entry's leaf is
//! included at the stated index.

use thiserror::Error;
use vellum_tlog::checkpoint::VerifiedCheckpoint;
use vellum_tlog::hash::{Hash, leaf_hash};
use vellum_tlog::note::NoteVerifier;
use vellum_tlog::proof::{ProofError, TlogProof};

use crate::ids::{IdError, RecordId, UnixMillis};

const ENTRY_VERSION: u8 = 1;
const KIND_RECORD_APPENDED: u8 = 1;
const KIND_AUDIT_RECORDED: u8 = 2;
const RECORD_APPENDED_LEN: usize = 2 + 16 + 32 + 8;
const AUDIT_RECORDED_LEN: usize = 2 + 32 + 8;

/// Why log-entry bytes were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// A version this code does not read.
    #[error("unknown log entry version {0}")]
    UnknownVersion(u8),
    /// A kind this code does not read.
    #[error("unknown log entry kind {0}")]
    UnknownKind(u8),
    /// The wrong length for its kind.
    #[error("log entry has the wrong length")]
    BadLength,
    /// A field breaks its rules.
    #[error("invalid log entry field: {0}")]
    Field(#[from] IdError),
}

/// One event in the transparency log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogEntry {
    /// A record was archived.
    RecordAppended {
        /// The record.
        record_id: RecordId,
        /// SHA-256 of its header bytes.
        header_sha256: [u8; 32],
        /// When the gateway received it; retention counts from here.
        received_at: UnixMillis,
    },
    /// An event was added to the audit trail (a sign-in, a role change, a grant…).
    AuditRecorded {
        /// SHA-256 of the event's canonical bytes.
        event_sha256: [u8; 32],
        /// When it happened.
        at: UnixMillis,
    },
}

impl LogEntry {
    /// The canonical bytes (the leaf data).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            LogEntry::RecordAppended {
                record_id,
                header_sha256,
                received_at,
            } => {
                let mut out = Vec::with_capacity(RECORD_APPENDED_LEN);
                out.extend_from_slice(&[ENTRY_VERSION, KIND_RECORD_APPENDED]);
                out.extend_from_slice(record_id.as_bytes());
                out.extend_from_slice(header_sha256);
                out.extend_from_slice(&received_at.0.to_be_bytes());
                out
            }
            LogEntry::AuditRecorded { event_sha256, at } => {
                let mut out = Vec::with_capacity(AUDIT_RECORDED_LEN);
                out.extend_from_slice(&[ENTRY_VERSION, KIND_AUDIT_RECORDED]);
                out.extend_from_slice(event_sha256);
                out.extend_from_slice(&at.0.to_be_bytes());
                out
            }
        }
    }

    /// Parses the canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        match bytes {
            [ENTRY_VERSION, KIND_RECORD_APPENDED, rest @ ..] => {
                let (id, rest) = rest.split_first_chunk::<16>().ok_or(EntryError::BadLength)?;
                let (header, rest) = rest.split_first_chunk::<32>().ok_or(EntryError::BadLength)?;
                let received: &[u8; 8] = rest.try_into().map_err(|_| EntryError::BadLength)?;
                Ok(LogEntry::RecordAppended {
                    record_id: RecordId::from_bytes(*id)?,
                    header_sha256: *header,
                    received_at: UnixMillis(u64::from_be_bytes(*received)),
                })
            }
            [ENTRY_VERSION, KIND_AUDIT_RECORDED, rest @ ..] => {
                let (event, rest) = rest.split_first_chunk::<32>().ok_or(EntryError::BadLength)?;
                let at: &[u8; 8] = rest.try_into().map_err(|_| EntryError::BadLength)?;
                Ok(LogEntry::AuditRecorded {
                    event_sha256: *event,
                    at: UnixMillis(u64::from_be_bytes(*at)),
                })
            }
            [ENTRY_VERSION] | [] => Err(EntryError::BadLength),
            [ENTRY_VERSION, kind, ..] => Err(EntryError::UnknownKind(*kind)),
            [version, ..] => Err(EntryError::UnknownVersion(*version)),
        }
    }

    /// The RFC 6962 leaf hash of this entry.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.to_bytes())
    }
}

/// Why a receipt was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The proof text, its checkpoint or the inclusion proof failed.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The receipt carries no log entry.
    #[error("receipt carries no log entry")]
    MissingEntry,
    /// The carried entry does not parse.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The entry is for another record or another header.
    #[error("receipt is for a different record or header")]
    WrongRecord,
}

/// A capture receipt: the log entry, its index, inclusion proof and checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt(TlogProof);

impl Receipt {
    /// Bundles an entry with its proof and the checkpoint it is proved against.
    pub fn new(entry: &LogEntry, index: u64, proof: Vec<Hash>, checkpoint_note: String) -> Self {
        Receipt(TlogProof {
            extra: Some(entry.to_bytes()),
            index,
            hashes: proof,
            checkpoint: checkpoint_note,
        })
    }

    /// Parses receipt text (a `tlog-proof@v1`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ReceiptError> {
        Ok(Receipt(TlogProof::parse(bytes)?))
    }

    /// The receipt text.
    pub fn to_text(&self) -> String {
        self.0.to_text()
    }

    /// Verifies the receipt for the record `record_id` whose header bytes hash to
    /// `header_sha256`, against the pinned log key.
    pub fn verify(
        &self,
        log_key: &NoteVerifier,
        record_id: &RecordId,
        header_sha256: &[u8; 32],
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let (entry, received_at) = self.entry_for(record_id, header_sha256)?;
        let checkpoint = self.0.verify(log_key, &entry.leaf_hash())?;
        Ok(VerifiedReceipt {
            index: self.0.index,
            received_at,
            checkpoint,
        })
    }

    /// The checkpoint note the receipt's proof is against, verbatim.
    pub fn checkpoint_note(&self) -> &str {
        &self.0.checkpoint
    }

    /// As [`Receipt::verify`], against `checkpoint`, which verified before under the
    /// pinned log key and must be exactly the receipt's: the receipts of one batch
    /// share a checkpoint, so a client that keeps it checks its signature once. A
    /// verified checkpoint does not say which key verified it: keep those of one log
    /// apart from another's.
    pub fn verify_in(
        &self,
        checkpoint: &VerifiedCheckpoint,
        record_id: &RecordId,
        header_sha256: &[u8; 32],
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let (entry, received_at) = self.entry_for(record_id, header_sha256)?;
        self.0.verify_in(checkpoint, &entry.leaf_hash())?;
        Ok(VerifiedReceipt {
            index: self.0.index,
            received_at,
            checkpoint: checkpoint.clone(),
        })
    }

    /// The carried entry, if it is for record `record_id` with header `header_sha256`,
    /// and its receipt time.
    fn entry_for(
        &self,
        record_id: &RecordId,
        header_sha256: &[u8; 32],
    ) -> Result<(LogEntry, UnixMillis), ReceiptError> {
        let bytes = self.0.extra.as_deref().ok_or(ReceiptError::MissingEntry)?;
        let entry = LogEntry::from_bytes(bytes)?;
        match &entry {
            LogEntry::RecordAppended {
                record_id: entry_id,
                header_sha256: entry_header,
                received_at,
            } if entry_id == record_id && entry_header == header_sha256 => {
                let at = *received_at;
                Ok((entry, at))
            }
            _ => Err(ReceiptError::WrongRecord),
        }
    }
}

/// A receipt that verified: the record is leaf `index` of a log the pinned key signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The leaf index.
    pub index: u64,
    /// The gateway's receipt time.
    pub received_at: UnixMillis,
    /// The checkpoint the proof holds against.
    pub checkpoint: VerifiedCheckpoint,
}
