//! [`Archive`]: appends through the sequencer, reads with integrity checks.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use vellum_protocol::ids::RecordId;
use vellum_protocol::receipt::Receipt;
use vellum_protocol::seal::SealedBody;
use vellum_tlog::Hash;
use vellum_tlog::note::{NoteSigner, NoteVerifier};
use vellum_tlog::tree::{ProofPlan, ProveError};

use crate::error::{AppendError, StoreError};
use crate::ports::{AuditEvent, AuditStore, BlobStore, LogStore, Sequencing as _, StoredRecord};
use crate::sequencer::{AuditRequest, Job, MAX_BATCH, Request, Sequencer, Submission, checked_frontier};

/// The longest field of an audit event, in bytes.
pub const MAX_AUDIT_FIELD: usize = 64 * 1024;

/// The archive over a metadata store `L` and a blob store `B`.
#[derive(Debug)]
pub struct Archive<L, B> {
    log: Arc<L>,
    blobs: Arc<B>,
    log_key: NoteVerifier,
    /// `None` once closed.
    queue: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    sequencer: Mutex<Option<JoinHandle<()>>>,
}

impl<L: LogStore, B: BlobStore> Archive<L, B> {
    /// Opens the archive: reads the log's right edge back from storage, checks it
    /// against the newest checkpoint (refusing a store whose tree does not match), and
    /// starts the sequencer, which signs checkpoints with `log_signer`.
    pub async fn open(log: L, blobs: B, log_signer: NoteSigner) -> Result<Self, StoreError> {
        let (log, blobs) = (Arc::new(log), Arc::new(blobs));
        let state = log.sequence().await?.load_state().await?;
        let frontier = checked_frontier(state, &log_signer)?;
        let log_key = log_signer.verifier();
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let sequencer = Sequencer {
            log: log.clone(),
            blobs: blobs.clone(),
            signer: log_signer,
            frontier: Some(frontier),
        };
        let task = tokio::spawn(sequencer.run(rx));
        Ok(Self {
            log,
            blobs,
            log_key,
            queue: std::sync::Mutex::new(Some(queue)),
            sequencer: Mutex::new(Some(task)),
        })
    }

    /// Archives one capture. Resolves only when the record, its blob and its log leaf
    /// are durable, to a receipt that proves it. Idempotent by record id: the same
    /// header again gets the same receipt; a different header under the same id is
    /// [`AppendError::Conflict`].
    pub async fn append(&self, submission: Submission) -> Result<Receipt, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Capture(Request { submission, reply })).await?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Adds an event to the audit trail as a leaf of the log. Resolves, to its leaf
    /// index, only when the event and its leaf are durable. Fields longer than
    /// [`MAX_AUDIT_FIELD`] bytes are refused (events are built from bounded inputs).
    pub async fn audit(&self, event: AuditEvent) -> Result<u64, AppendError> {
        let fields = [&event.actor, &event.action, &event.subject, &event.detail];
        if fields.iter().any(|f| f.len() > MAX_AUDIT_FIELD) {
            return Err(AppendError::Store(std::sync::Arc::new(StoreError::Config(
                format!("an audit event field is longer than {MAX_AUDIT_FIELD} bytes"),
            ))));
        }
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Audit(AuditRequest { event, reply })).await?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    async fn enqueue(&self, job: Job) -> Result<(), AppendError> {
        let queue = self
            .queue
            .lock()
            .ok()
            .and_then(|q| q.clone())
            .ok_or(AppendError::Closed)?;
        queue.send(job).await.map_err(|_| AppendError::Closed)
    }

    /// The log's verifier key (what clients pin).
    pub fn log_key(&self) -> &NoteVerifier {
        &self.log_key
    }

    /// The blob store.
    pub(crate) fn blobs(&self) -> &B {
        &self.blobs
    }

    /// The most an [`Archive::upload`] of a `len`-byte body holds in memory at once.
    pub fn upload_holds(&self, len: u64) -> u64 {
        self.blobs.upload_holds(len)
    }

    /// The metadata store.
    pub fn log_store(&self) -> &L {
        &self.log
    }

    /// A stored record.
    pub async fn record(&self, id: RecordId) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.log.records(&[id]).await?.into_iter().next())
    }

    /// The sealed body of a stored record, checked against its digest.
    pub async fn body(&self, record: &StoredRecord) -> Result<SealedBody, StoreError> {
        let bytes = self.blobs.get(&record.blob, &record.body).await?;
        let shape = |bytes| {
            SealedBody::from_bytes(bytes).map_err(|e| StoreError::Integrity(format!("stored body: {e}")))
        };
        // Large bodies are hashed again here: off the runtime's workers.
        if bytes.len() <= 1 << 20 {
            return shape(bytes);
        }
        tokio::task::spawn_blocking(move || shape(bytes))
            .await
            .map_err(|e| StoreError::backend("blob reader task", e))?
    }

    /// Sends the sealed body of a stored record to `sink` in bounded chunks, checking
    /// its digest on the way (see [`BlobStore::read_chunks`]: an `Err` after the last
    /// chunk means the receiver must discard what it got).
    pub async fn read_body(
        &self,
        record: &StoredRecord,
        sink: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.blobs.read_chunks(&record.blob, &record.body, sink).await
    }

    /// The newest checkpoint: `(size, signed note)`.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.log.latest_checkpoint().await
    }

    /// The receipt of an archived record, as first issued.
    pub async fn receipt(&self, record: &StoredRecord) -> Result<Receipt, StoreError> {
        crate::sequencer::replay(self.log.as_ref(), record).await
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub async fn inclusion_proof(&self, size: u64, index: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(size).await?;
        let plan = ProofPlan::inclusion::<StoreError>(size, index).map_err(bad_request)?;
        self.run(plan).await
    }

    /// The consistency proof from `old` to `new` leaves.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(new).await?;
        let plan = ProofPlan::consistency::<StoreError>(old, new).map_err(bad_request)?;
        self.run(plan).await
    }

    async fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let stored = self.log.log_size().await?;
        if size > stored {
            return Err(StoreError::Config(format!(
                "the log has {stored} leaves, not {size}"
            )));
        }
        Ok(())
    }

    async fn run(&self, plan: ProofPlan) -> Result<Vec<Hash>, StoreError> {
        let hashes = self.log.hashes(plan.ids()).await?;
        plan.assemble::<StoreError>(&hashes).map_err(bad_request)
    }

    /// Stops taking appends, lets the sequencer finish what is queued, and waits for it.
    pub async fn close(&self) {
        // The sequencer's loop ends once every sender is gone and the queue is drained.
        drop(self.queue.lock().map(|mut q| q.take()));
        if let Some(task) = self.sequencer.lock().await.take() {
            let _ = task.await;
        }
    }
}

fn bad_request(e: ProveError<StoreError>) -> StoreError {
    match e {
        ProveError::Read(e) => e,
        other => StoreError::Config(other.to_string()),
    }
}

impl<L: LogStore + AuditStore, B: BlobStore> Archive<L, B> {
    /// Up to `limit` audit events from leaf `from` on, in log order, each checked
    /// against the log leaf that commits to it.
    pub async fn audit_trail(&self, from: u64, limit: u32) -> Result<Vec<(u64, AuditEvent)>, StoreError> {
        let events = self.log.audit_from(from, limit).await?;
        for (index, event) in &events {
            if self.log.entry(*index).await?.as_deref() != Some(event.log_entry().to_bytes().as_slice()) {
                return Err(StoreError::Integrity(format!(
                    "audit event {index} does not match its log leaf"
                )));
            }
        }
        Ok(events)
    }
}
