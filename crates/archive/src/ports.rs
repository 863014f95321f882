//! The storage ports: what the archive needs from a metadata database and a blob store,
//! with the guarantees each implementation must give. Backends live in their own
//! modules; library code is generic over these traits and only the binary picks one.

use std::future::Future;

use vellum_protocol::header::HeaderFields;
use vellum_protocol::ids::{Custodian, DeviceId, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::DevicePublicKey;
use vellum_protocol::receipt::LogEntry;
use vellum_protocol::seal::BodyDigest;
use vellum_tlog::Hash;
use vellum_tlog::tree::{NodeId, frontier_ids};

use crate::error::{EnrollError, StoreError};

/// Where a blob store keeps one blob; opaque to everyone but that store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobLocator(pub String);

/// A record as the sequencer writes it. Every other field is inside the header.
#[derive(Clone, Debug)]
pub struct NewRecord {
    /// The record id (the idempotency key).
    pub record_id: RecordId,
    /// Its leaf in the log.
    pub leaf_index: u64,
    /// The header bytes exactly as the device signed them.
    pub header: Vec<u8>,
    /// The gateway's receipt time (in the log entry; retention counts from it).
    pub received_at: UnixMillis,
    /// Where the sealed body is.
    pub blob: BlobLocator,
    /// What the header says, for the search index (written in the same transaction).
    pub fields: HeaderFields,
}

/// What the archive reads back about a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record id.
    pub record_id: RecordId,
    /// Its leaf in the log.
    pub leaf_index: u64,
    /// The header bytes as signed.
    pub header: Vec<u8>,
    /// SHA-256 of `header`.
    pub header_sha256: [u8; 32],
    /// The gateway's receipt time.
    pub received_at: UnixMillis,
    /// Digest and length of the sealed body (from the header).
    pub body: BodyDigest,
    /// Where the sealed body is.
    pub blob: BlobLocator,
}

/// One leaf of the log with the tree nodes its append completed.
#[derive(Clone, Debug)]
pub struct LeafRow {
    /// The leaf index.
    pub index: u64,
    /// The log entry (leaf data).
    pub entry: Vec<u8>,
    /// The hashes of `nodes_completed_by(index)`, level 0 first, 32 bytes each. Node
    /// `(level, i)` therefore lives in the row of leaf `((i + 1) << level) - 1`.
    pub hashes: Vec<u8>,
}

/// An audit event as the sequencer writes it, beside the leaf that commits to it.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// Its leaf in the log (also its id in the audit trail).
    pub leaf_index: u64,
    /// The event.
    pub event: AuditEvent,
}

/// Everything one sequencer batch writes, in one transaction.
#[derive(Clone, Debug)]
pub struct CommitBatch {
    /// New records.
    pub records: Vec<NewRecord>,
    /// New audit events.
    pub audits: Vec<NewAudit>,
    /// New leaves, consecutive from the current log size.
    pub leaves: Vec<LeafRow>,
    /// The tree size after this batch.
    pub size: u64,
    /// The checkpoint for `size`, signed.
    pub checkpoint: String,
}

/// A log as stored: its size, right edge and newest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    /// Number of leaves.
    pub size: u64,
    /// Hashes of `frontier_ids(size)`.
    pub frontier: Vec<Hash>,
    /// The newest checkpoint, if any batch was committed.
    pub checkpoint: Option<(u64, String)>,
}

/// Metadata storage: records, the transparency log and checkpoints.
///
/// **Durability.** When [`Sequencing::commit`] resolves `Ok`, the whole batch is on
/// stable storage (an fsynced WAL or a committed PostgreSQL transaction) and survives a
/// crash or power loss. **Atomicity.** A batch is visible whole or not at all: after
/// any failure or crash, the store holds either every row of the batch or none.
/// **Consistency.** Leaves are consecutive from 0; the newest checkpoint's size is the
/// number of leaves. A commit whose leaves do not start at the stored size fails
/// (enforced by the database itself, so two sequencers can never both extend the log).
/// **One sequencer at a time.** [`LogStore::sequence`] takes the database's sequencing
/// lock; any number of processes may hold a store, and each batch is sequenced by
/// whichever holds the lock, on the state it reads under it.
pub trait LogStore: Send + Sync + 'static {
    /// A sequencing transaction of this store.
    type Sequencing: Sequencing;

    /// Begins a sequencing transaction, waiting for the sequencing lock (held by at
    /// most one transaction at a time, across every process using the database).
    fn sequence(&self) -> impl Future<Output = Result<Self::Sequencing, StoreError>> + Send;

    /// The number of leaves.
    fn log_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The records with these ids, in no particular order; absent ids are skipped.
    fn records(&self, ids: &[RecordId])
    -> impl Future<Output = Result<Vec<StoredRecord>, StoreError>> + Send;

    /// The stored tree hashes of `ids`, in the same order; every id must be complete.
    fn hashes(&self, ids: &[NodeId]) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// The log entry of leaf `index`.
    fn entry(&self, index: u64) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// The oldest checkpoint whose size is at least `size`.
    fn checkpoint_at_least(
        &self,
        size: u64,
    ) -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;

    /// The newest checkpoint.
    fn latest_checkpoint(&self) -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;
}

/// A write transaction that holds the log's sequencing lock: while it lives, nobody
/// else extends the log, so what it reads stays true until it commits. Dropped
/// without [`Sequencing::commit`], it writes nothing and lets the lock go.
pub trait Sequencing: Send {
    /// The number of leaves, read after the lock was taken.
    fn size(&self) -> u64;

    /// [`LogStore::hashes`], read in this transaction.
    fn hashes(&mut self, ids: &[NodeId]) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// [`LogStore::latest_checkpoint`], read in this transaction.
    fn latest_checkpoint(&mut self)
    -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;

    /// [`LogStore::records`], read in this transaction.
    fn records(
        &mut self,
        ids: &[RecordId],
    ) -> impl Future<Output = Result<Vec<StoredRecord>, StoreError>> + Send;

    /// Writes the batch, whose leaves start at [`Sequencing::size`], and commits (see
    /// [`LogStore`] for the guarantees).
    fn commit(self, batch: CommitBatch) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Size, right edge and newest checkpoint, read in this transaction.
    fn load_state(&mut self) -> impl Future<Output = Result<LogState, StoreError>> + Send {
        async {
            let size = self.size();
            let frontier = self.hashes(&frontier_ids(size)).await?;
            let checkpoint = self.latest_checkpoint().await?;
            Ok(LogState {
                size,
                frontier,
                checkpoint,
            })
        }
    }
}

/// One audit-trail event: who did what to which subject.
///
/// Each event is a leaf of the transparency log (a `LogEntry::AuditRecorded` carrying
/// [`AuditEvent::digest`]), written in the same transaction as the event, so the trail
/// can be checked against signed checkpoints like the records are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When.
    pub at: UnixMillis,
    /// Who (an account or device id; never a credential).
    pub actor: String,
    /// What (`record.fetch`, `case.approve`, …).
    pub action: String,
    /// On what (a record, case or account id).
    pub subject: String,
    /// Further structured detail (JSON), never message content.
    pub detail: String,
}

impl AuditEvent {
    /// The canonical bytes: `at` as a big-endian `u64`, then `actor`, `action`,
    /// `subject` and `detail`, each as a big-endian `u32` byte length and its UTF-8.
    pub fn to_bytes(&self) -> Vec<u8> {
        let fields = [&self.actor, &self.action, &self.subject, &self.detail];
        let mut out = Vec::with_capacity(8 + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
        out.extend_from_slice(&self.at.0.to_be_bytes());
        for field in fields {
            // Events are built by the gateway from bounded inputs; a field of 4 GiB
            // cannot arise, and saturating keeps the encoding total.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// SHA-256 of [`AuditEvent::to_bytes`]: what its log leaf commits to.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.to_bytes()).into()
    }

    /// Its log entry.
    pub fn log_entry(&self) -> LogEntry {
        LogEntry::AuditRecorded {
            event_sha256: self.digest(),
            at: self.at,
        }
    }
}

/// The audit trail, read in log order. Events are written only with their log leaves,
/// by the sequencer ([`crate::Archive::audit`]); the trail is append-only.
pub trait AuditStore: Send + Sync + 'static {
    /// Up to `limit` events whose leaf index is at least `from`, in log order, each with
    /// its leaf index.
    fn audit_from(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, AuditEvent)>, StoreError>> + Send;

    /// Up to `limit` events about `subject` whose leaf index is at least `from`, in
    /// log order, each with its leaf index.
    fn audit_of(
        &self,
        subject: &str,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, AuditEvent)>, StoreError>> + Send;

    /// Up to `limit` events of `action` whose leaf index is at least `from`, in log
    /// order, each with its leaf index.
    fn audit_by_action(
        &self,
        action: &str,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, AuditEvent)>, StoreError>> + Send;

    /// The newest event of `action` about `subject`, with its leaf index, however many
    /// other events there are about it.
    fn last_audit(
        &self,
        subject: &str,
        action: &str,
    ) -> impl Future<Output = Result<Option<(u64, AuditEvent)>, StoreError>> + Send;
}

/// One blob to store.
#[derive(Clone, Copy, Debug)]
pub struct BlobPut<'a> {
    /// SHA-256 and length of `bytes`.
    pub digest: BodyDigest,
    /// The sealed bytes.
    pub bytes: &'a [u8],
    /// The retention class of the record it belongs to (stores with WORM retention
    /// use it to set how long the blob is locked).
    pub retention: &'a RetentionClass,
}

/// Sealed-blob storage, content-addressed by the SHA-256 of the ciphertext.
///
/// **Durability.** When [`BlobStore::put`] resolves `Ok`, every blob of the call is on
/// stable storage. **Immutability.** A stored blob never changes; putting the same
/// bytes again succeeds. **Integrity.** [`BlobStore::get`] returns bytes only if they
/// hash to the expected digest and length, and fails with
/// [`StoreError::Integrity`] otherwise: corrupted data is never returned.
///
/// Large blobs arrive as a stream instead ([`BlobStore::upload`]): they are written
/// as they come, one at a time, never held in memory whole, and outside the batched
/// [`BlobStore::put`] so that a slow upload never delays other captures.
pub trait BlobStore: Send + Sync + 'static {
    /// A blob being written from a stream.
    type Upload: BlobUpload;

    /// Stores the blobs; returns their locators in the same order.
    fn put(&self, blobs: &[BlobPut<'_>])
    -> impl Future<Output = Result<Vec<BlobLocator>, StoreError>> + Send;

    /// Starts writing the blob whose digest will be `digest`, of a record of class
    /// `retention`. Nothing is readable, and nothing needs removing, until
    /// [`BlobUpload::commit`] returns.
    fn upload(
        &self,
        digest: &BodyDigest,
        retention: &RetentionClass,
    ) -> impl Future<Output = Result<Self::Upload, StoreError>> + Send;

    /// The most an upload of a `len`-byte blob holds in memory at once, for callers
    /// that bound memory across requests.
    fn upload_holds(&self, len: u64) -> u64;

    /// Whether blobs of this retention class can be stored for as long as the class
    /// requires. The sequencer refuses other records before writing anything.
    fn accepts(&self, retention: &RetentionClass) -> bool {
        let _ = retention;
        true
    }

    /// Reads a blob back, checking it against `expected`.
    fn get(
        &self,
        locator: &BlobLocator,
        expected: &BodyDigest,
    ) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;

    /// Reads a blob back into `sink` in chunks of at most [`READ_CHUNK`] bytes, so a
    /// reader holds a bounded amount of it however large it is. The blob is hashed on
    /// the way: `Err(StoreError::Integrity)` after the last chunk means what was sent
    /// does not match `expected`, and the receiver must discard it. A receiver that
    /// hangs up ends the read early with `Ok`. The default reads the blob whole with
    /// [`BlobStore::get`]; the folder and S3 stores stream.
    fn read_chunks(
        &self,
        locator: &BlobLocator,
        expected: &BodyDigest,
        sink: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let bytes = self.get(locator, expected).await?;
            for chunk in bytes.chunks(READ_CHUNK) {
                if sink.send(chunk.to_vec()).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// The largest chunk [`BlobStore::read_chunks`] sends: 256 KiB.
pub const READ_CHUNK: usize = 256 << 10;

/// A blob being written piece by piece ([`BlobStore::upload`]).
///
/// **Durability.** When [`BlobUpload::commit`] resolves `Ok`, the blob is on stable
/// storage under the digest it was started with, and its locator reads it back.
/// **Nothing partial.** An upload dropped, aborted or failed before its commit leaves
/// nothing that [`BlobStore::get`] can reach, and no lasting claim on storage beyond
/// what the store reclaims itself (a local store removes the part file, an S3 store
/// aborts the multipart upload). The store does not check the digest: the caller
/// commits only bytes it hashed (`vellum_archive::Archive::upload` does).
pub trait BlobUpload: Send + 'static {
    /// Appends `chunk`.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes everything written durable under the upload's digest.
    fn commit(self) -> impl Future<Output = Result<BlobLocator, StoreError>> + Send;

    /// Gives the upload up; nothing of it stays.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// The SHA-256 of a 256-bit random bearer secret (an enrollment token or a device
/// credential): all a store ever holds of one. A fast hash suffices because the
/// secret is random, not chosen by a person.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A device registering with a one-time enrollment token.
#[derive(Clone, Debug)]
pub struct NewDevice {
    /// The id the device chose.
    pub device_id: DeviceId,
    /// The Ed25519 key its headers are signed with.
    pub public_key: DevicePublicKey,
    /// The hash of the credential the gateway issued it.
    pub credential: SecretHash,
}

/// An enrolled capture device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its id.
    pub device_id: DeviceId,
    /// The key its headers must be signed with.
    pub public_key: DevicePublicKey,
    /// The custodian its enrollment token was issued for.
    pub custodian: Custodian,
    /// When it enrolled.
    pub enrolled_at: UnixMillis,
    /// When it was revoked; a revoked device can no longer capture.
    pub revoked_at: Option<UnixMillis>,
    /// The retention classes it may archive under, sorted (empty: a device enrolled
    /// before bindings existed that has archived nothing yet; its first capture binds
    /// it).
    pub retention: Vec<RetentionClass>,
}

/// Capture devices and their enrollment tokens.
///
/// **Durability.** Every method that changes something has done so durably when it
/// resolves `Ok`. **One use.** An enrollment token enrolls at most one device, however
/// many requests race for it: [`DeviceStore::enroll`] marks the token used and adds
/// the device in one transaction. **Revocation is final.** A revoked device stays
/// revoked and is never deleted (the database refuses otherwise).
pub trait DeviceStore: Send + Sync + 'static {
    /// Issues an enrollment token for a device of `custodian` archiving under
    /// `retention`, valid until `expires_at`.
    fn add_enrollment(
        &self,
        token: &SecretHash,
        custodian: &Custodian,
        retention: &RetentionClass,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Spends `token` on `device` at time `now`, binding the device to the token's
    /// retention class.
    fn enroll(
        &self,
        token: &SecretHash,
        device: &NewDevice,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Device, EnrollError>> + Send;

    /// The device holding this credential, revoked or not.
    fn device_by_credential(
        &self,
        credential: &SecretHash,
    ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send;

    /// Replaces the credential of a device that is not revoked and holds `current`
    /// with `next`; `false` if it does not (or another device holds `next`).
    fn rotate_credential(
        &self,
        device_id: &DeviceId,
        current: &SecretHash,
        next: &SecretHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Binds a device to exactly these retention classes (at least one), replacing its
    /// binding (and an upgrade's binding not yet recorded, see
    /// [`Self::unaudited_bindings`]); `false` if the device is unknown.
    fn bind_retention(
        &self,
        device_id: &DeviceId,
        classes: &[RetentionClass],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The devices an upgrade bound to the retention classes they had used, whose
    /// binding is not yet an audit event: each with its classes.
    fn unaudited_bindings(
        &self,
    ) -> impl Future<Output = Result<Vec<(DeviceId, Vec<RetentionClass>)>, StoreError>> + Send;

    /// Notes that the binding of `device_id` is now an audit event.
    fn binding_audited(&self, device_id: &DeviceId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Revokes a device at `at`; `false` if it is unknown or already revoked.
    fn revoke(
        &self,
        device_id: &DeviceId,
        at: UnixMillis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

pub use crate::accounts::{
    Account, AccountChange, AccountStore, NewAccount, NewSession, Refreshed, Role, SessionPrincipal,
    SessionStore, TotpReseal, valid_username,
};
pub use crate::keys::{AuditorKey, Holder, KeyError, KeyStore, PublishedKeyring, Wrap};

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/formats.md.
    #[test]
    fn audit_events_have_one_canonical_encoding() {
        let event = AuditEvent {
            at: UnixMillis(1),
            actor: "a".into(),
            action: "login".into(),
            subject: "s".into(),
            detail: "{}".into(),
        };
        let hex: String = event.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "00000000000000010000000161000000056c6f67696e0000000173000000027b7d"
        );
        // Moving a byte between fields changes the encoding.
        let shifted = AuditEvent {
            actor: "al".into(),
            action: "ogin".into(),
            ..event.clone()
        };
        assert_ne!(shifted.digest(), event.digest());
        let LogEntry::AuditRecorded { event_sha256, at } = event.log_entry() else {
            panic!("an audit event's entry is an audit entry");
        };
        assert_eq!((event_sha256, at), (event.digest(), UnixMillis(1)));
    }
}
