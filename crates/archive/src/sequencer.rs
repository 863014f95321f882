//! The sequencer: the single task that extends the log, in batches (group commit).
//!
//! Appends queue on a channel; the sequencer takes everything queued (up to
//! [`MAX_BATCH`]) and, for the whole batch, does one blob write, one tree update, one
//! checkpoint signature and one database transaction. Batches grow with load, so the
//! cost per append falls as load rises.
//!
//! Two tasks form a pipeline: the *preparer* classifies a batch, writes its blobs and
//! computes its leaves and checkpoint on top of the batch before it, while the
//! *committer* commits the previous batch and answers it. If a commit fails, every batch
//! prepared on top of it is failed too (its leaves assumed the failed ones), and the
//! preparer re-reads the log from storage before preparing anything else.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// State the two pipeline stages share.
#[derive(Debug, Default)]
struct Shared {
    /// A commit failed: batches prepared after it must fail, and the preparer must
    /// re-read the log before preparing another.
    poisoned: AtomicBool,
    /// The sequence number of the newest committed batch.
    committed: AtomicU64,
}

pub(crate) struct Sequencer<L, B> {
    pub(crate) log: Arc<L>,
    pub(crate) blobs: Arc<B>,
    pub(crate) signer: NoteSigner,
    pub(crate) frontier: Frontier,
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

/// A prepared batch on its way to the committer.
struct Prepared {
    seq: u64,
    batch: CommitBatch,
    first_index: u64,
    known: KnownNodes,
    entries: Vec<LogEntry>,
    fresh: Vec<Request>,
    /// Repeats of `fresh[i]` within the same batch: they get the same receipt.
    repeats: Vec<(usize, Request)>,
}

impl Prepared {
    /// Every request of the batch, for answering them all alike.
    fn into_requests(self) -> impl Iterator<Item = Request> {
        self.fresh
            .into_iter()
            .chain(self.repeats.into_iter().map(|(_, r)| r))
    }
}

/// Work for the committer, in order.
enum Job {
    Commit(Prepared),
    /// Retries of records committed earlier or in flight: answered from storage once
    /// everything before them has committed.
    Replays(Vec<Request>),
    /// Answered when every earlier job is done.
    Barrier(oneshot::Sender<()>),
}

fn fail_all(requests: impl IntoIterator<Item = Request>, error: &Arc<StoreError>) {
    for request in requests {
        let _ = request.reply.send(Err(AppendError::Store(error.clone())));
    }
}

impl<L: LogStore, B: BlobStore> Sequencer<L, B> {
    /// The preparer: runs until every sender of `rx` is gone, then waits for the
    /// committer to finish.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let shared = Arc::new(Shared::default());
        let (jobs, job_rx) = mpsc::channel(1);
        let committer = tokio::spawn(commit_jobs(self.log.clone(), job_rx, shared.clone()));
        // Record ids of batches sent but perhaps not committed: (header digest, batch).
        let mut in_flight: HashMap<RecordId, ([u8; 32], u64)> = HashMap::new();
        let mut seq = 0u64;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if shared.poisoned.load(Ordering::SeqCst) {
                if let Err(e) = self.recover(&jobs, &shared).await {
                    fail_all(batch, &Arc::new(e));
                    continue;
                }
                in_flight.clear();
            }
            let committed = shared.committed.load(Ordering::SeqCst);
            in_flight.retain(|_, (_, s)| *s > committed);
            seq += 1;
            let Some((fresh, repeats, replays)) = self.classify(batch, &in_flight).await else {
                continue;
            };
            if !replays.is_empty() && jobs.send(Job::Replays(replays)).await.is_err() {
                break;
            }
            if fresh.is_empty() {
                continue;
            }
            match self.prepare(seq, fresh, repeats).await {
                Ok(prepared) => {
                    for request in &prepared.fresh {
                        let header = &request.submission.header;
                        in_flight.insert(header.fields().record_id, (header.digest(), seq));
                    }
                    if jobs.send(Job::Commit(prepared)).await.is_err() {
                        break;
                    }
                }
                Err((e, requests)) => fail_all(requests, &Arc::new(e)),
            }
        }
        drop(jobs);
        let _ = committer.await;
    }

    /// After a failed commit: wait until the committer has drained every job prepared
    /// on top of it, then read the log back from storage.
    async fn recover(&mut self, jobs: &mpsc::Sender<Job>, shared: &Shared) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        let closed = || StoreError::Integrity("the committer stopped".into());
        jobs.send(Job::Barrier(ack)).await.map_err(|_| closed())?;
        done.await.map_err(|_| closed())?;
        self.frontier = load_frontier(self.log.as_ref(), &self.signer).await?;
        shared.poisoned.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Splits a batch into new records, repeats of a new record within the batch, and
    /// retries of records archived or in flight; answers conflicts. `None` when the
    /// lookup failed (every request is answered).
    #[allow(clippy::type_complexity, reason = "three lists, named at the call site")]
    async fn classify(
        &self,
        batch: Vec<Request>,
        in_flight: &HashMap<RecordId, ([u8; 32], u64)>,
    ) -> Option<(Vec<Request>, Vec<(usize, Request)>, Vec<Request>)> {
        let mut ids: Vec<RecordId> = batch
            .iter()
            .map(|r| r.submission.header.fields().record_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let stored: HashMap<RecordId, [u8; 32]> = match self.log.records(&ids).await {
            Ok(found) => found
                .into_iter()
                .map(|r| (r.record_id, r.header_sha256))
                .collect(),
            Err(e) => {
                fail_all(batch, &Arc::new(e));
                return None;
            }
        };
        let mut fresh: Vec<Request> = Vec::new();
        let mut first_of: HashMap<RecordId, usize> = HashMap::new();
        let mut repeats = Vec::new();
        let mut replays = Vec::new();
        for request in batch {
            let header = &request.submission.header;
            let id = header.fields().record_id;
            let same = |digest: &[u8; 32]| *digest == header.digest();
            if let Some(digest) = stored.get(&id) {
                if same(digest) {
                    replays.push(request);
                } else {
                    let _ = request.reply.send(Err(AppendError::Conflict(id)));
                }
            } else if in_flight.contains_key(&id) {
                // Whether the earlier attempt lands is not known yet: the committer
                // answers once it is (receipt, conflict, or aborted).
                replays.push(request);
            } else if !self.blobs.accepts(&header.fields().retention) {
                let class = header.fields().retention.clone();
                let _ = request.reply.send(Err(AppendError::UnsupportedRetention(class)));
            } else if let Some(&at) = first_of.get(&id) {
                if same(&fresh[at].submission.header.digest()) {
                    repeats.push((at, request));
                } else {
                    let _ = request.reply.send(Err(AppendError::Conflict(id)));
                }
            } else {
                first_of.insert(id, fresh.len());
                fresh.push(request);
            }
        }
        Some((fresh, repeats, replays))
    }

    /// Steps 1-3 of the crash ordering: blobs (durable), leaves and nodes, checkpoint.
    /// On failure the requests come back with the error, and nothing changed.
    async fn prepare(
        &mut self,
        seq: u64,
        fresh: Vec<Request>,
        repeats: Vec<(usize, Request)>,
    ) -> Result<Prepared, (StoreError, Vec<Request>)> {
        // The receipt time is fixed before the blobs are written, so a blob store that
        // locks blobs for a period from "now" never locks them for less than the
        // record's retention, which counts from this time.
        let received_at = UnixMillis(now_ms());
        let give_back = |e, fresh: Vec<Request>, repeats: Vec<(usize, Request)>| {
            (
                e,
                fresh
                    .into_iter()
                    .chain(repeats.into_iter().map(|(_, r)| r))
                    .collect(),
            )
        };
        // 1. Blobs, durable.
        let puts: Vec<BlobPut<'_>> = fresh
            .iter()
            .map(|r| BlobPut {
                digest: r.submission.body.digest(),
                bytes: r.submission.body.as_bytes(),
                retention: &r.submission.header.fields().retention,
            })
            .collect();
        let locators = match self.blobs.put(&puts).await {
            Ok(locators) => locators,
            Err(e) => {
                drop(puts);
                return Err(give_back(e, fresh, repeats));
            }
        };

        // 2. Leaves and the nodes they complete, in memory.
        let first_index = self.frontier.size();
        let mut known = KnownNodes(self.frontier.nodes().collect());
        let mut entries = Vec::with_capacity(fresh.len());
        let mut leaves = Vec::with_capacity(fresh.len());
        let mut records = Vec::with_capacity(fresh.len());
        let mut next = self.frontier.clone();
        for (request, blob) in fresh.iter().zip(locators) {
            let header = &request.submission.header;
            let fields = header.fields();
            let header_sha256 = header.digest();
            let index = next.size();
            let entry = LogEntry::RecordAppended {
                record_id: fields.record_id,
                header_sha256,
                received_at,
            };
            let entry_bytes = entry.to_bytes();
            let completed = next.push(leaf_hash(&entry_bytes));
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
                received_at,
                blob,
            });
            entries.push(entry);
        }

        // 3. One signature for the batch.
        let size = next.size();
        let note = match Checkpoint::new(self.signer.name(), size, next.root()).sign(&self.signer) {
            Ok(note) => note,
            Err(e) => {
                let e = StoreError::Integrity(format!("signing checkpoint: {e}"));
                return Err(give_back(e, fresh, repeats));
            }
        };
        self.frontier = next;
        Ok(Prepared {
            seq,
            batch: CommitBatch {
                records,
                leaves,
                size,
                checkpoint: note,
            },
            first_index,
            known,
            entries,
            fresh,
            repeats,
        })
    }
}

/// The committer: steps 4 and 5 of the crash ordering, one job at a time, in order.
async fn commit_jobs<L: LogStore>(log: Arc<L>, mut jobs: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Barrier(ack) => {
                let _ = ack.send(());
            }
            Job::Replays(requests) => answer_replays(log.as_ref(), requests).await,
            Job::Commit(prepared) => {
                let requests = prepared.fresh.len() + prepared.repeats.len();
                if shared.poisoned.load(Ordering::SeqCst) {
                    let e = Arc::new(StoreError::Aborted);
                    fail_all(prepared.into_requests(), &e);
                    continue;
                }
                // 4. One durable transaction.
                if let Err(e) = log.commit(&prepared.batch).await {
                    shared.poisoned.store(true, Ordering::SeqCst);
                    let e = Arc::new(e);
                    fail_all(prepared.into_requests(), &e);
                    continue;
                }
                shared.committed.store(prepared.seq, Ordering::SeqCst);
                // 5. Receipts, from memory.
                let receipts = receipts(&prepared);
                debug_assert_eq!(receipts.len() + prepared.repeats.len(), requests);
                for (at, request) in prepared.repeats {
                    let _ = request.reply.send(receipts[at].clone());
                }
                for (request, receipt) in prepared.fresh.into_iter().zip(receipts) {
                    let _ = request.reply.send(receipt);
                }
            }
        }
    }
}

fn receipts(prepared: &Prepared) -> Vec<Result<Receipt, AppendError>> {
    let size = prepared.batch.size;
    prepared
        .entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let index = prepared.first_index + i as u64;
            let proof = prove_inclusion(size, index, &prepared.known).map_err(proof_error)?;
            Ok(Receipt::new(
                entry,
                index,
                proof,
                prepared.batch.checkpoint.clone(),
            ))
        })
        .map(|r: Result<Receipt, StoreError>| r.map_err(|e| AppendError::Store(Arc::new(e))))
        .collect()
}

/// Answers retries from storage: by now every earlier batch has committed or failed.
async fn answer_replays<L: LogStore>(log: &L, requests: Vec<Request>) {
    let ids: Vec<RecordId> = requests
        .iter()
        .map(|r| r.submission.header.fields().record_id)
        .collect();
    let stored: HashMap<RecordId, StoredRecord> = match log.records(&ids).await {
        Ok(found) => found.into_iter().map(|r| (r.record_id, r)).collect(),
        Err(e) => return fail_all(requests, &Arc::new(e)),
    };
    for request in requests {
        let header = &request.submission.header;
        let answer = match stored.get(&header.fields().record_id) {
            Some(record) if record.header_sha256 == header.digest() => replay(log, record)
                .await
                .map_err(|e| AppendError::Store(Arc::new(e))),
            Some(_) => Err(AppendError::Conflict(header.fields().record_id)),
            // The batch it was in flight with failed: nothing was kept.
            None => Err(AppendError::Store(Arc::new(StoreError::Aborted))),
        };
        let _ = request.reply.send(answer);
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
    // The record row must agree with the leaf the log committed to.
    if log.entry(stored.leaf_index).await?.as_deref() != Some(entry.to_bytes().as_slice()) {
        return Err(StoreError::Integrity(format!(
            "record {} does not match log leaf {}",
            stored.record_id, stored.leaf_index
        )));
    }
    Ok(Receipt::new(&entry, stored.leaf_index, proof, note))
}
