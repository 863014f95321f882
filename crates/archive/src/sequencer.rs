//! The sequencer: the single task that extends the log, in batches (group commit).
//!
//! Appends queue on a channel; the sequencer takes everything queued (up to
//! [`MAX_BATCH`]) and, for the whole batch, does one blob write, one tree update, one
//! checkpoint signature and one database transaction. While it commits, the next
//! batch queues up, so batches grow with load and the cost per append falls.
//!
//! Crash ordering, step by step (see [`Sequencer::sequence`]):
//!
//! 1. **Blobs** are written and fsynced. A crash after this leaves only unreferenced
//!    bytes; nothing points at them, and the client's retry writes them again.
//! 2. **Leaves and nodes** are computed in memory from the frontier; nothing durable.
//! 3. **The checkpoint** for the new size is signed in memory; nothing durable.
//! 4. **One transaction** writes records, leaves (with their nodes) and the checkpoint.
//!    Before its commit returns, a crash loses the whole batch and no client holds a
//!    receipt for it; after, everything is durable.
//! 5. **Receipts** are built and returned. A receipt therefore always describes
//!    durable data (invariant I5).
//!
//! On restart the frontier is read back from storage and checked against the newest
//! stored checkpoint; the sequencer never trusts memory from before a failure.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use vellum_protocol::header::VerifiedHeader;
use vellum_protocol::ids::{RecordId, UnixMillis};
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::SealedBody;
use vellum_tlog::checkpoint::{self, Checkpoint};
use vellum_tlog::hash::{Hash, leaf_hash};
use vellum_tlog::note::NoteSigner;
use vellum_tlog::tree::{Frontier, HashReader, NodeId, ProofPlan, ProveError, prove_inclusion};

use crate::error::{AppendError, StoreError};
use crate::ports::{BlobPut, BlobStore, CommitBatch, LeafRow, LogStore, NewRecord, StoredRecord};

/// The most appends one batch takes.
pub const MAX_BATCH: usize = 4096;

/// A capture to archive: a header whose device signature verified, and its sealed body.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The verified header.
    pub header: VerifiedHeader,
    /// The sealed body the header describes (the caller checked the digest).
    pub body: SealedBody,
}

pub(crate) struct Request {
    pub(crate) submission: Submission,
    pub(crate) reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the frontier and checks it against the newest checkpoint, signed by `signer`.
pub(crate) async fn load_frontier<L: LogStore>(log: &L, signer: &NoteSigner) -> Result<Frontier, StoreError> {
    let state = log.load_state().await?;
    let frontier = Frontier::from_hashes(state.size, state.frontier)
        .map_err(|e| StoreError::Integrity(e.to_string()))?;
    match state.checkpoint {
        None if state.size == 0 => Ok(frontier),
        None => Err(StoreError::Integrity(format!(
            "{} leaves but no checkpoint",
            state.size
        ))),
        Some((size, note)) => {
            let verified = checkpoint::open(note.as_bytes(), &signer.verifier())
                .map_err(|e| StoreError::Integrity(format!("newest checkpoint: {e}")))?;
            if size != state.size || verified.size() != state.size || *verified.root() != frontier.root() {
                return Err(StoreError::Integrity(format!(
                    "stored tree of {} leaves does not match the newest checkpoint (size {})",
                    state.size,
                    verified.size()
                )));
            }
            Ok(frontier)
        }
    }
}

pub(crate) struct Sequencer<L, B> {
    pub(crate) log: Arc<L>,
    pub(crate) blobs: Arc<B>,
    pub(crate) signer: NoteSigner,
    pub(crate) frontier: Frontier,
    /// Set when a commit failed: its outcome is unknown until storage is read again.
    pub(crate) stale: bool,
}

/// Hash lookups served from memory: the frontier before a batch plus every node the
/// batch completed. That is every node an inclusion proof of a new leaf needs.
struct KnownNodes(HashMap<NodeId, Hash>);

impl HashReader for KnownNodes {
    type Error = StoreError;

    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        ids.iter()
            .map(|id| {
                self.0
                    .get(id)
                    .copied()
                    .ok_or_else(|| StoreError::Integrity(format!("node {id:?} not in batch")))
            })
            .collect()
    }
}

fn proof_error<E: Into<StoreError>>(e: ProveError<E>) -> StoreError {
    match e {
        ProveError::Read(e) => e.into(),
        other => StoreError::Integrity(format!("proof: {other}")),
    }
}

impl From<std::convert::Infallible> for StoreError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl<L: LogStore, B: BlobStore> Sequencer<L, B> {
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    async fn process(&mut self, batch: Vec<Request>) {
        let mut ids: Vec<RecordId> = batch
            .iter()
            .map(|r| r.submission.header.fields().record_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let existing: HashMap<RecordId, StoredRecord> = match self.log.records(&ids).await {
            Ok(found) => found.into_iter().map(|r| (r.record_id, r)).collect(),
            Err(e) => {
                let e = Arc::new(e);
                for request in batch {
                    let _ = request.reply.send(Err(AppendError::Store(e.clone())));
                }
                return;
            }
        };

        // Classify: new records, repeats of a new record within this batch, and
        // retries of records archived earlier.
        let mut fresh: Vec<Request> = Vec::new();
        let mut first_of: HashMap<RecordId, usize> = HashMap::new();
        let mut repeats: Vec<(usize, Request)> = Vec::new();
        let mut replays: Vec<(StoredRecord, Request)> = Vec::new();
        for request in batch {
            let header = &request.submission.header;
            let id = header.fields().record_id;
            if let Some(stored) = existing.get(&id) {
                if stored.header_sha256 == header.digest() {
                    replays.push((stored.clone(), request));
                } else {
                    let _ = request.reply.send(Err(AppendError::Conflict(id)));
                }
            } else if let Some(&at) = first_of.get(&id) {
                if fresh[at].submission.header.digest() == header.digest() {
                    repeats.push((at, request));
                } else {
                    let _ = request.reply.send(Err(AppendError::Conflict(id)));
                }
            } else {
                first_of.insert(id, fresh.len());
                fresh.push(request);
            }
        }

        if !fresh.is_empty() {
            match self.sequence(&fresh).await {
                Ok(receipts) => {
                    for (at, request) in repeats {
                        let _ = request.reply.send(Ok(receipts[at].clone()));
                    }
                    for (request, receipt) in fresh.into_iter().zip(receipts) {
                        let _ = request.reply.send(Ok(receipt));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for request in fresh.into_iter().chain(repeats.into_iter().map(|(_, r)| r)) {
                        let _ = request.reply.send(Err(AppendError::Store(e.clone())));
                    }
                }
            }
        }
        for (stored, request) in replays {
            let receipt = replay(self.log.as_ref(), &stored)
                .await
                .map_err(|e| AppendError::Store(Arc::new(e)));
            let _ = request.reply.send(receipt);
        }
    }

    /// Sequences new records; see the module docs for the crash ordering.
    async fn sequence(&mut self, fresh: &[Request]) -> Result<Vec<Receipt>, StoreError> {
        if self.stale {
            self.frontier = load_frontier(self.log.as_ref(), &self.signer).await?;
            self.stale = false;
        }
        // 1. Blobs, durable.
        let puts: Vec<BlobPut<'_>> = fresh
            .iter()
            .map(|r| BlobPut {
                digest: r.submission.body.digest(),
                bytes: r.submission.body.as_bytes(),
                retention: &r.submission.header.fields().retention,
            })
            .collect();
        let locators = self.blobs.put(&puts).await?;

        // 2. Leaves and the nodes they complete, in memory.
        let received_at = UnixMillis(now_ms());
        let before = self.frontier.clone();
        let mut known = KnownNodes(before.nodes().collect());
        let mut entries = Vec::with_capacity(fresh.len());
        let mut leaves = Vec::with_capacity(fresh.len());
        let mut records = Vec::with_capacity(fresh.len());
        for (request, blob) in fresh.iter().zip(locators) {
            let header = &request.submission.header;
            let fields = header.fields();
            let index = self.frontier.size();
            let entry = LogEntry::RecordAppended {
                record_id: fields.record_id,
                header_sha256: header.digest(),
                received_at,
            };
            let entry_bytes = entry.to_bytes();
            let completed = self.frontier.push(leaf_hash(&entry_bytes));
            let mut hashes = Vec::with_capacity(32 * completed.len());
            for (id, hash) in completed {
                hashes.extend_from_slice(hash.as_bytes());
                known.0.insert(id, hash);
            }
            leaves.push(LeafRow {
                index,
                entry: entry_bytes,
                hashes,
            });
            records.push(NewRecord {
                record_id: fields.record_id,
                leaf_index: index,
                header: header.as_bytes().to_vec(),
                header_sha256: header.digest(),
                device_id: fields.device_id,
                custodian: fields.custodian.clone(),
                channel: fields.channel.clone(),
                captured_at: fields.captured_at,
                received_at,
                epoch: fields.epoch,
                retention: fields.retention.clone(),
                body: fields.body,
                blob,
            });
            entries.push(entry);
        }

        // 3. One signature for the batch.
        let size = self.frontier.size();
        let note = Checkpoint::new(self.signer.name(), size, self.frontier.root())
            .sign(&self.signer)
            .map_err(|e| StoreError::Integrity(format!("signing checkpoint: {e}")))?;

        // 4. One durable transaction.
        let batch = CommitBatch {
            records,
            leaves,
            size,
            checkpoint: note.clone(),
        };
        if let Err(e) = self.log.commit(&batch).await {
            // The commit may or may not have landed: read the truth before the next batch.
            self.frontier = before;
            self.stale = true;
            return Err(e);
        }

        // 5. Receipts, from memory.
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let index = before.size() + i as u64;
                let proof = prove_inclusion(size, index, &known).map_err(proof_error)?;
                Ok(Receipt::new(entry, index, proof, note.clone()))
            })
            .collect()
    }
}

/// The receipt of a record archived earlier: the same entry, index and checkpoint as
/// the first time (the first checkpoint that covered it), so a retry gets the same bytes.
pub(crate) async fn replay<L: LogStore>(log: &L, stored: &StoredRecord) -> Result<Receipt, StoreError> {
    let (size, note) = log
        .checkpoint_at_least(stored.leaf_index + 1)
        .await?
        .ok_or_else(|| StoreError::Integrity(format!("no checkpoint covers leaf {}", stored.leaf_index)))?;
    let plan = ProofPlan::inclusion::<StoreError>(size, stored.leaf_index).map_err(proof_error)?;
    let hashes = log.hashes(plan.ids()).await?;
    let proof = plan.assemble::<StoreError>(&hashes).map_err(proof_error)?;
    let entry = LogEntry::RecordAppended {
        record_id: stored.record_id,
        header_sha256: stored.header_sha256,
        received_at: stored.received_at,
    };
    Ok(Receipt::new(&entry, stored.leaf_index, proof, note))
}
