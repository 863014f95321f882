//! The sequencer: extends the log in batches (group commit).
//!
//! Appends queue on a channel; the sequencer takes everything queued (up to
//! [`MAX_BATCH`]) and, for the whole batch, does one blob write, one tree update, one
//! checkpoint signature and one database transaction. Batches grow with load, so the
//! cost per append falls as load rises.
//!
//! Three tasks form a pipeline. The *preparer* classifies a batch (new, repeated within
//! the batch, or a retry of a record stored or in flight), writes its blobs and builds
//! its log entries, none of which depends on where the batch lands in the log. The
//! *committer* then sequences one batch at a time: it opens a sequencing transaction
//! (which holds the database's sequencing lock, so any number of processes can append
//! to one log), places the batch at the size it reads under the lock, and commits.
//! When the stored log is not where the committer left it (another process appended,
//! or the committer's last commit failed), it reads the right edge back and checks it
//! against the newest checkpoint, under the same lock, before building on it; records
//! another process stored meanwhile are answered from storage instead. The *answerer*
//! builds the receipts of a committed batch, off the committer's path. The preparer
//! takes a batch from the queue only once the committer can take it next, so appends
//! wait in the queue, where they join a larger batch.
//!
//! Crash ordering, step by step:
//!
//! 1. **Blobs** are written and fsynced (preparer). A crash after this leaves only
//!    unreferenced bytes; nothing points at them, and the client's retry writes them
//!    again.
//! 2. **The sequencing lock** is taken and the log size read under it; nothing durable.
//! 3. **Leaves, nodes and the checkpoint** are computed and signed in memory (while
//!    the lock is being taken, on the tree as the committer left it; again under the
//!    lock if the log moved); nothing durable.
//! 4. **One transaction** writes records, leaves (with their nodes) and the checkpoint.
//!    Before its commit returns, a crash loses the whole batch and no client holds a
//!    receipt for it; after, everything is durable.
//! 5. **Receipts** are built and returned. A receipt therefore always describes
//!    durable data (invariant I5).
//!
//! The committer never trusts memory from before a failure: after any failed step it
//! reads the log back before sequencing again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use vellum_protocol::header::VerifiedHeader;
use vellum_protocol::ids::{RecordId, UnixMillis};
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::{BodyDigest, SealedBody};
use vellum_tlog::checkpoint::{self, Checkpoint};
use vellum_tlog::hash::{Hash, leaf_hash};
use vellum_tlog::note::NoteSigner;
use vellum_tlog::tree::{Frontier, HashReader, NodeId, ProofPlan, ProveError, prove_inclusion};

use crate::error::{AppendError, StoreError};
use crate::ports::{
    AuditEvent, BlobLocator, BlobPut, BlobStore, CommitBatch, LeafRow, LogState, LogStore, NewAudit,
    NewRecord, Sequencing, StoredRecord,
};

/// The most appends one batch takes.
pub const MAX_BATCH: usize = 4096;

/// A capture to archive: a header whose device signature verified, and its sealed body.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The verified header.
    pub header: VerifiedHeader,
    /// The sealed body the header describes (the caller checked the digest).
    pub body: Body,
}

/// The sealed body of a [`Submission`].
#[derive(Debug, Clone)]
pub enum Body {
    /// In memory: the sequencer writes it with its batch.
    Sealed(SealedBody),
    /// Written already, by an [`crate::Upload`].
    Stored(StoredBody),
}

impl From<SealedBody> for Body {
    fn from(body: SealedBody) -> Self {
        Body::Sealed(body)
    }
}

impl Body {
    /// The body, when it is held in memory.
    pub fn sealed(&self) -> Option<&SealedBody> {
        match self {
            Body::Sealed(body) => Some(body),
            Body::Stored(_) => None,
        }
    }

    /// SHA-256 and length of the ciphertext.
    pub fn digest(&self) -> BodyDigest {
        match self {
            Body::Sealed(body) => body.digest(),
            Body::Stored(body) => body.digest,
        }
    }
}

impl PartialEq<Body> for SealedBody {
    fn eq(&self, other: &Body) -> bool {
        matches!(other, Body::Sealed(body) if body == self)
    }
}

/// A body an [`crate::Upload`] wrote to the blob store and checked on the way: durable,
/// shaped like an age file, and of the digest its header names.
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub(crate) digest: BodyDigest,
    pub(crate) locator: BlobLocator,
}

/// Work for the sequencer: a capture, or an audit event to log.
pub(crate) enum Job {
    Capture(Request),
    Audit(AuditRequest),
}

pub(crate) struct Request {
    pub(crate) submission: Submission,
    pub(crate) reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

/// An audit event waiting for its leaf; answered with the leaf index once durable.
pub(crate) struct AuditRequest {
    pub(crate) event: AuditEvent,
    pub(crate) reply: oneshot::Sender<Result<u64, AppendError>>,
}

impl Request {
    fn record_id(&self) -> RecordId {
        self.submission.header.fields().record_id
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The tree a stored state describes, checked against its newest checkpoint, which
/// `signer` must have signed.
pub(crate) fn checked_frontier(state: LogState, signer: &NoteSigner) -> Result<Frontier, StoreError> {
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
    /// The stored tree as last read or written; `None` until read.
    pub(crate) frontier: Option<Frontier>,
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

/// A new record whose blob is durable, waiting for its place in the log.
struct Pending {
    request: Request,
    entry: LogEntry,
    received_at: UnixMillis,
    leaf: Hash,
    blob: BlobLocator,
    /// Repeats of this record within the batch: they get the same receipt.
    repeats: Vec<Request>,
}

/// A batch on its way to the committer.
struct Prepared {
    seq: u64,
    /// New records.
    pending: Vec<Pending>,
    /// Retries of records committed earlier or in flight: answered from storage once
    /// everything before them is done.
    replays: Vec<Request>,
    /// Audit events, logged after the batch's records.
    audits: Vec<AuditRequest>,
}

fn fail_all(requests: impl IntoIterator<Item = Request>, error: &Arc<StoreError>) {
    for request in requests {
        let _ = request.reply.send(Err(AppendError::Store(error.clone())));
    }
}

fn fail_audits(audits: Vec<AuditRequest>, error: &Arc<StoreError>) {
    for audit in audits {
        let _ = audit.reply.send(Err(AppendError::Store(error.clone())));
    }
}

/// Fails everything a batch carried.
fn fail_batch(pending: Vec<Pending>, audits: Vec<AuditRequest>, late: Vec<Request>, error: StoreError) {
    let error = Arc::new(error);
    fail_all(requests_of(pending).chain(late), &error);
    fail_audits(audits, &error);
}

fn requests_of(pending: Vec<Pending>) -> impl Iterator<Item = Request> {
    pending
        .into_iter()
        .flat_map(|p| std::iter::once(p.request).chain(p.repeats))
}

impl<L: LogStore, B: BlobStore> Sequencer<L, B> {
    /// The preparer: runs until every sender of `rx` is gone, then waits for the
    /// committer to finish.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let Self {
            log,
            blobs,
            signer,
            frontier,
        } = self;
        let done = Arc::new(AtomicU64::new(0));
        let classifying = Arc::new(AtomicU64::new(0));
        let (jobs, job_rx) = mpsc::channel(1);
        let (answers, answer_rx) = mpsc::channel(4);
        let answerer = tokio::spawn(answer(log.clone(), answer_rx));
        let committer = Committer {
            log: log.clone(),
            signer,
            frontier,
            done: done.clone(),
            classifying: classifying.clone(),
            recheck_through: 0,
            answers,
        };
        let committer = tokio::spawn(committer.run(job_rx));
        let preparer = Preparer { log, blobs };
        // Record ids of batches sent but perhaps not done, with their batch.
        let mut in_flight: HashMap<RecordId, u64> = HashMap::new();
        let mut seq = 0u64;
        // A batch is taken from the queue only once the committer can take it next,
        // so appends wait in the queue, where they join the next batch, rather than
        // in a small batch waiting for the committer.
        while let Ok(permit) = jobs.reserve().await {
            let Some(first) = rx.recv().await else {
                break;
            };
            let (mut batch, mut audits) = (Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Capture(request) => batch.push(request),
                    Job::Audit(audit) => audits.push(audit),
                }
                if batch.len() + audits.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let finished = done.load(Ordering::SeqCst);
            in_flight.retain(|_, s| *s > finished);
            seq += 1;
            // Published before storage is read, for the committer (see `recheck_through`).
            classifying.store(seq, Ordering::SeqCst);
            let (fresh, replays) = if batch.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                preparer.classify(batch, &in_flight).await.unwrap_or_default()
            };
            let pending = if fresh.is_empty() {
                Vec::new()
            } else {
                match preparer.prepare(fresh).await {
                    Ok(pending) => pending,
                    Err((e, requests)) => {
                        fail_all(requests, &Arc::new(e));
                        Vec::new()
                    }
                }
            };
            for p in &pending {
                in_flight.insert(p.request.record_id(), seq);
            }
            permit.send(Prepared {
                seq,
                pending,
                replays,
                audits,
            });
        }
        drop(jobs);
        let _ = committer.await;
        let _ = answerer.await;
    }
}

/// The preparer's half: classification and step 1.
struct Preparer<L, B> {
    log: Arc<L>,
    blobs: Arc<B>,
}

impl<L: LogStore, B: BlobStore> Preparer<L, B> {
    /// Splits a batch into new records (each with its repeats within the batch) and
    /// retries of records archived or in flight; answers conflicts. `None` when the
    /// lookup failed (every request is answered).
    async fn classify(
        &self,
        batch: Vec<Request>,
        in_flight: &HashMap<RecordId, u64>,
    ) -> Option<(Vec<(Request, Vec<Request>)>, Vec<Request>)> {
        let mut ids: Vec<RecordId> = batch.iter().map(Request::record_id).collect();
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
        let mut fresh: Vec<(Request, Vec<Request>)> = Vec::new();
        let mut first_of: HashMap<RecordId, usize> = HashMap::new();
        let mut replays = Vec::new();
        for request in batch {
            let header = &request.submission.header;
            let id = header.fields().record_id;
            let same = |digest: &[u8; 32]| *digest == header.digest();
            if request.submission.body.digest() != header.fields().body {
                let _ = request.reply.send(Err(AppendError::body_mismatch()));
            } else if let Some(digest) = stored.get(&id) {
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
                let (first, repeats) = &mut fresh[at];
                if same(&first.submission.header.digest()) {
                    repeats.push(request);
                } else {
                    let _ = request.reply.send(Err(AppendError::Conflict(id)));
                }
            } else {
                first_of.insert(id, fresh.len());
                fresh.push((request, Vec::new()));
            }
        }
        Some((fresh, replays))
    }

    /// Step 1 of the crash ordering: blobs (durable), and the log entries. On failure
    /// the requests come back with the error, and nothing changed.
    async fn prepare(
        &self,
        fresh: Vec<(Request, Vec<Request>)>,
    ) -> Result<Vec<Pending>, (StoreError, Vec<Request>)> {
        // The receipt time is fixed before the blobs are written, so a blob store that
        // locks blobs for a period from "now" never locks them for less than the
        // record's retention, which counts from this time. (Uploaded blobs were written
        // earlier, and locked from a day after their upload began: see
        // `crate::upload::UPLOAD_DEADLINE`.)
        let received_at = UnixMillis(now_ms());
        // Bodies in memory are written now, in one call; uploaded ones are stored.
        let puts: Vec<BlobPut<'_>> = fresh
            .iter()
            .filter_map(|(r, _)| match &r.submission.body {
                Body::Sealed(body) => Some(BlobPut {
                    digest: body.digest(),
                    bytes: body.as_bytes(),
                    retention: &r.submission.header.fields().retention,
                }),
                Body::Stored(_) => None,
            })
            .collect();
        // A batch of uploaded bodies only has nothing to write (and nothing to sync).
        let written = match puts.is_empty() {
            true => Ok(Vec::new()),
            false => self.blobs.put(&puts).await,
        };
        drop(puts);
        let locators = written.and_then(|written| {
            let mut written = written.into_iter();
            fresh
                .iter()
                .map(|(r, _)| match &r.submission.body {
                    Body::Sealed(_) => written.next().ok_or_else(|| {
                        StoreError::Integrity("the blob store answered for fewer blobs".into())
                    }),
                    Body::Stored(body) => Ok(body.locator.clone()),
                })
                .collect::<Result<Vec<_>, _>>()
        });
        let locators = match locators {
            Ok(locators) => locators,
            Err(e) => {
                let requests = fresh
                    .into_iter()
                    .flat_map(|(r, repeats)| std::iter::once(r).chain(repeats));
                return Err((e, requests.collect()));
            }
        };
        Ok(fresh
            .into_iter()
            .zip(locators)
            .map(|((request, repeats), blob)| {
                let header = &request.submission.header;
                let entry = LogEntry::RecordAppended {
                    record_id: header.fields().record_id,
                    header_sha256: header.digest(),
                    received_at,
                };
                Pending {
                    leaf: leaf_hash(&entry.to_bytes()),
                    entry,
                    received_at,
                    blob,
                    request,
                    repeats,
                }
            })
            .collect())
    }
}

/// The committer: steps 2 to 5 of the crash ordering, one batch at a time, in order.
struct Committer<L> {
    log: Arc<L>,
    signer: NoteSigner,
    /// The stored tree as this committer last read or wrote it; `None` after a failure.
    frontier: Option<Frontier>,
    /// The sequence number of the newest batch done (committed or failed).
    done: Arc<AtomicU64>,
    /// The sequence number of the newest batch the preparer has begun to classify.
    classifying: Arc<AtomicU64>,
    /// Batches up to this one were classified before this committer last read the log
    /// back, so records another process stored (and this committer then built on) may
    /// be among them as new: they are checked again under the lock.
    recheck_through: u64,
    /// Where step 5 happens.
    answers: mpsc::Sender<Answer>,
}

/// Work for the answerer, in order.
enum Answer {
    /// A committed batch: receipts from memory.
    Receipts {
        placed: Placed,
        first_index: u64,
        pending: Vec<Pending>,
        audits: Vec<AuditRequest>,
    },
    /// Retries, answered from storage.
    Replays(Vec<Request>),
}

/// The answerer: step 5 of the crash ordering, off the committer's path, in order.
async fn answer<L: LogStore>(log: Arc<L>, mut answers: mpsc::Receiver<Answer>) {
    while let Some(answer) = answers.recv().await {
        match answer {
            Answer::Replays(requests) => answer_replays(log.as_ref(), requests).await,
            Answer::Receipts {
                placed,
                first_index,
                pending,
                audits,
            } => {
                let audits_from = first_index + pending.len() as u64;
                for (i, p) in pending.into_iter().enumerate() {
                    let receipt = receipt(&placed, first_index + i as u64, &p.entry);
                    for request in std::iter::once(p.request).chain(p.repeats) {
                        let _ = request.reply.send(receipt.clone());
                    }
                }
                for (i, audit) in audits.into_iter().enumerate() {
                    let _ = audit.reply.send(Ok(audits_from + i as u64));
                }
            }
        }
    }
}

/// What the receipts of a batch placed in the log need.
struct Placed {
    size: u64,
    checkpoint: String,
    next: Frontier,
    known: KnownNodes,
}

impl<L: LogStore> Committer<L> {
    async fn run(mut self, mut jobs: mpsc::Receiver<Prepared>) {
        while let Some(prepared) = jobs.recv().await {
            if !prepared.pending.is_empty() || !prepared.audits.is_empty() {
                self.commit(prepared.seq, prepared.pending, prepared.audits).await;
            }
            self.done.store(prepared.seq, Ordering::SeqCst);
            self.answer(Answer::Replays(prepared.replays)).await;
        }
    }

    async fn answer(&self, answer: Answer) {
        if let Answer::Replays(requests) = &answer
            && requests.is_empty()
        {
            return;
        }
        if let Err(mpsc::error::SendError(lost)) = self.answers.send(answer).await {
            // The answerer only stops when the committer does; dropping the requests
            // tells their callers the archive closed.
            drop(lost);
        }
    }

    async fn commit(&mut self, seq: u64, pending: Vec<Pending>, audits: Vec<AuditRequest>) {
        let frontier = self.frontier.take();
        // 2. The sequencing lock, and the size under it. While the lock is being
        // taken, step 3 is done on the tree as this committer left it, which is where
        // the batch lands unless another process appended meanwhile.
        let (tx, speculative) = tokio::join!(self.log.sequence(), async {
            frontier
                .as_ref()
                .map(|frontier| (frontier.size(), self.place(frontier, &pending, &audits)))
        });
        let mut tx = match tx {
            Ok(tx) => tx,
            Err(e) => return fail_batch(pending, audits, Vec::new(), e),
        };
        let (first_index, placed, pending, late) = match speculative {
            Some((at, placed)) if at == tx.size() && seq > self.recheck_through => {
                (at, placed, pending, Vec::new())
            }
            // Another process appended, our last commit failed, or the batch was
            // classified before the last read-back: read the log back under the lock,
            // leave out what was stored meanwhile, and do step 3 again.
            _ => {
                let reloaded = self.reload(&mut tx, pending).await;
                // Read after the read-back: a batch numbered higher began classifying
                // after it, so its own look at storage saw at least as much.
                self.recheck_through = self.classifying.load(Ordering::SeqCst);
                match reloaded {
                    Ok((frontier, pending, late)) => {
                        let placed = self.place(&frontier, &pending, &audits);
                        (frontier.size(), placed, pending, late)
                    }
                    Err((e, requests)) => return fail_batch(Vec::new(), audits, requests, e),
                }
            }
        };
        if pending.is_empty() && audits.is_empty() {
            drop(tx);
            self.frontier = placed.ok().map(|(_, placed)| placed.next);
            return self.answer(Answer::Replays(late)).await;
        }
        let (batch, placed) = match placed {
            Ok(placed) => placed,
            Err(e) => return fail_batch(pending, audits, late, e),
        };
        // 4. One durable transaction.
        if let Err(e) = tx.commit(batch).await {
            return fail_batch(pending, audits, late, e);
        }
        self.frontier = Some(placed.next.clone());
        // 5. Receipts, from memory, and the records stored meanwhile, from storage.
        self.answer(Answer::Receipts {
            placed,
            first_index,
            pending,
            audits,
        })
        .await;
        self.answer(Answer::Replays(late)).await;
    }

    /// Reads the stored tree in `tx` and checks it against the newest checkpoint;
    /// splits off the records that were stored meanwhile (to be answered from storage).
    #[allow(clippy::type_complexity, reason = "three values, named at the call site")]
    async fn reload(
        &self,
        tx: &mut L::Sequencing,
        pending: Vec<Pending>,
    ) -> Result<(Frontier, Vec<Pending>, Vec<Request>), (StoreError, Vec<Request>)> {
        let read = async {
            let frontier = checked_frontier(tx.load_state().await?, &self.signer)?;
            let ids: Vec<RecordId> = pending.iter().map(|p| p.request.record_id()).collect();
            let stored = tx.records(&ids).await?;
            Ok::<_, StoreError>((frontier, stored))
        };
        let (frontier, stored) = match read.await {
            Ok(found) => found,
            Err(e) => return Err((e, requests_of(pending).collect())),
        };
        let stored: std::collections::HashSet<RecordId> = stored.into_iter().map(|r| r.record_id).collect();
        let (late, pending): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| stored.contains(&p.request.record_id()));
        Ok((frontier, pending, requests_of(late).collect()))
    }

    /// Step 3: the batch's leaves on top of `frontier` (its records, then its audit
    /// events), the nodes they complete, and the signed checkpoint: what to write, and
    /// what the receipts need.
    fn place(
        &self,
        frontier: &Frontier,
        pending: &[Pending],
        audit_requests: &[AuditRequest],
    ) -> Result<(CommitBatch, Placed), StoreError> {
        let mut known = KnownNodes(frontier.nodes().collect());
        let mut leaves = Vec::with_capacity(pending.len() + audit_requests.len());
        let mut records = Vec::with_capacity(pending.len());
        let mut audits = Vec::with_capacity(audit_requests.len());
        let mut next = frontier.clone();
        let mut push = |entry: Vec<u8>, leaf: Hash| {
            let index = next.size();
            let completed = next.push(leaf);
            let mut hashes = Vec::with_capacity(32 * completed.len());
            for (id, hash) in completed {
                hashes.extend_from_slice(hash.as_bytes());
                known.0.insert(id, hash);
            }
            leaves.push(LeafRow { index, entry, hashes });
            index
        };
        for p in pending {
            let index = push(p.entry.to_bytes(), p.leaf);
            let header = &p.request.submission.header;
            records.push(NewRecord {
                record_id: header.fields().record_id,
                leaf_index: index,
                header: header.as_bytes().to_vec(),
                received_at: p.received_at,
                blob: p.blob.clone(),
                fields: header.fields().clone(),
            });
        }
        for audit in audit_requests {
            let entry = audit.event.log_entry().to_bytes();
            let leaf = leaf_hash(&entry);
            let leaf_index = push(entry, leaf);
            audits.push(NewAudit {
                leaf_index,
                event: audit.event.clone(),
            });
        }
        let size = next.size();
        let checkpoint = Checkpoint::new(self.signer.name(), size, next.root())
            .sign(&self.signer)
            .map_err(|e| StoreError::Integrity(format!("signing checkpoint: {e}")))?;
        let placed = Placed {
            size,
            checkpoint: checkpoint.clone(),
            next,
            known,
        };
        let batch = CommitBatch {
            records,
            audits,
            leaves,
            size,
            checkpoint,
        };
        Ok((batch, placed))
    }
}

fn receipt(placed: &Placed, index: u64, entry: &LogEntry) -> Result<Receipt, AppendError> {
    prove_inclusion(placed.size, index, &placed.known)
        .map_err(proof_error)
        .map(|proof| Receipt::new(entry, index, proof, placed.checkpoint.clone()))
        .map_err(|e: StoreError| AppendError::Store(Arc::new(e)))
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
