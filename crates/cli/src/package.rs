//! Export packages: what `vellum auditor fetch` writes and `vellum verify package`
//! checks offline, with nothing but the log's public key. A package is a folder:
//!
//! ```text
//! manifest.json          format, case, checkpoint, case events and records (below)
//! checkpoint             the signed checkpoint every proof is made against
//! case/LEAF.proof        inclusion proof of each of the case's recorded steps, and of
//!                        each fetch event listed
//! records/ID.header      each record's header, the bytes its device signed
//! records/ID.age         its sealed body (age v1; the package holds no plaintext)
//! records/ID.proof       its inclusion proof (c2sp.org/tlog-proof@v1, entry in extra)
//! listing                the records in the case's scope at a log size (v2)
//! ```
//!
//! Verification proves, for a court or an archive that trusts only the log key: every
//! record, every step of the case and every fetch event listed is in the log at the
//! checkpoint; each body is the one its header names; the case's steps show an
//! approval by another person of exactly the scope recorded; every record lies in
//! that scope; and every record was read by the case's auditor, in a body fetch the
//! gateway recorded within a grant. A v2 package also holds the case's listing: the
//! records in its scope at a log size, whose digest a proven fetch event records, so
//! it proves it leaves none of them out and names any that is missing. It cannot
//! prove that the steps listed are all the case's steps: a package that leaves out a
//! later revocation still verifies. A v1 package (made before listings) verifies, but
//! `vellum verify package` says its completeness is not proven.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vellum_archive::ports::AuditEvent;
use vellum_gateway::cases::{self, Scope};
use vellum_protocol::header::UnverifiedHeader;
use vellum_protocol::ids::{RecordId, UnixMillis};
use vellum_protocol::receipt::LogEntry;
use vellum_tlog::checkpoint::{self, VerifiedCheckpoint};
use vellum_tlog::hash::leaf_hash;
use vellum_tlog::note::{MAX_NOTE_LEN, NoteVerifier};
use vellum_tlog::proof::{MAX_PROOF_TEXT_LEN, TlogProof};

use crate::error::{CliError, Kind};
use crate::files::read_small;

/// The manifest's format name: a package whose listing proves it holds every record
/// of the case's scope.
pub(crate) const FORMAT: &str = "vellum/package/v2";
/// The format of packages made before listings: they verify, but cannot prove that no
/// record was left out.
pub(crate) const FORMAT_V1: &str = "vellum/package/v1";
/// The listing file of a package.
pub(crate) const LISTING: &str = "listing";
/// The largest manifest read.
const MAX_MANIFEST: u64 = 256 << 20;
/// The largest listing read (a million records of 102 bytes, and room).
const MAX_LISTING: u64 = 128 << 20;
/// The largest sealed body read.
const MAX_BODY: u64 = 1 << 30;

/// The package's table of contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// [`FORMAT`].
    pub(crate) format: String,
    /// When the package was made (Unix ms).
    pub(crate) created_at: u64,
    /// The checkpoint file.
    pub(crate) checkpoint: String,
    /// The case the records were read under.
    pub(crate) case: CaseInfo,
    /// The case's recorded steps, each provable in the log.
    pub(crate) case_events: Vec<CaseEvent>,
    /// For each record, the gateway's record of the body fetch that read it under
    /// the case (subject `case:ID:fetch`), each provable in the log.
    pub(crate) fetch_events: Vec<CaseEvent>,
    /// The records, in capture order.
    pub(crate) records: Vec<RecordEntry>,
    /// The listing file ([`LISTING`]; v2): every record in the case's scope at a log
    /// size, whose digest a fetch event of part `listing` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) listing: Option<String>,
}

/// The case, as opened.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaseInfo {
    pub(crate) id: String,
    pub(crate) reason: String,
    pub(crate) scope: Scope,
    pub(crate) scope_sha256: String,
}

/// One recorded event of the case (a step, or a fetch): the audit event's fields but
/// its subject, which the case's id gives, and its proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaseEvent {
    pub(crate) leaf_index: u64,
    pub(crate) at: u64,
    pub(crate) actor: String,
    pub(crate) action: String,
    /// The recorded detail, the exact JSON text the leaf commits to.
    pub(crate) detail: String,
    pub(crate) proof: String,
}

/// One record's files and what they must hash to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordEntry {
    pub(crate) record_id: String,
    pub(crate) leaf_index: u64,
    pub(crate) received_at: u64,
    pub(crate) header: String,
    pub(crate) header_sha256: String,
    pub(crate) body: String,
    pub(crate) body_sha256: String,
    pub(crate) body_len: u64,
    pub(crate) proof: String,
}

/// Opens record `r` of the package in `dir` with `identities`: its id and the message
/// document's JSON, held in memory only.
pub(crate) fn open_record(
    dir: &Path,
    r: &RecordEntry,
    identities: &[vellum_protocol::seal::Identity],
) -> Result<(RecordId, zeroize::Zeroizing<Vec<u8>>), CliError> {
    // The manifest names files: only a well-formed id and a path inside the package.
    let id = RecordId::parse(&r.record_id).map_err(|_| {
        CliError::new(
            Kind::Malformed,
            format!("manifest: malformed record id {:?}", r.record_id),
        )
    })?;
    let sealed = read_small(&inside(dir, &r.body)?, MAX_BODY)?;
    let sealed = vellum_protocol::seal::SealedBody::from_bytes(sealed)
        .map_err(|e| CliError::new(Kind::Malformed, format!("record {id}: {e}")))?;
    let plain = sealed
        .open(identities)
        .map_err(|e| CliError::new(Kind::WrongKey, format!("record {id}: {e}")))?;
    Ok((id, zeroize::Zeroizing::new(plain.to_vec())))
}

fn failed(what: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::VerifyFailed, format!("package: {what}"))
}

/// A file named by the manifest, which must stay inside the package.
pub(crate) fn inside(dir: &Path, name: &str) -> Result<PathBuf, CliError> {
    let plain = !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !name.contains(['\\', ':'])
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(failed(format!(
            "the manifest names a file outside the package: {name:?}"
        )));
    }
    Ok(dir.join(name))
}

/// The audit event `e` stands for, about `subject`.
pub(crate) fn audit_event(subject: String, e: &CaseEvent) -> AuditEvent {
    AuditEvent {
        at: UnixMillis(e.at),
        actor: e.actor.clone(),
        action: e.action.clone(),
        subject,
        detail: e.detail.clone(),
    }
}

/// The grants the case's effective steps record, by the leaf of their approval: when
/// each began and when it ended (its `until`, or an earlier revocation or closing).
fn grants(case: &cases::Case) -> BTreeMap<u64, (u64, u64)> {
    let mut grants = BTreeMap::new();
    let mut open: Option<u64> = None;
    for step in case.history.iter().filter(|s| s.effective) {
        match step.action.as_str() {
            cases::APPROVE => {
                let until = serde_json::from_str::<cases::StepDetail>(&step.detail)
                    .ok()
                    .and_then(|d| d.until)
                    .unwrap_or(step.at);
                grants.insert(step.leaf_index, (step.at, until));
                open = Some(step.leaf_index);
            }
            cases::REVOKE | cases::CLOSE => {
                if let Some((_, until)) = open.take().and_then(|leaf| grants.get_mut(&leaf)) {
                    *until = (*until).min(step.at);
                }
            }
            _ => {}
        }
    }
    grants
}

/// What a package proved.
pub(crate) struct Verified {
    pub(crate) manifest: Manifest,
    pub(crate) checkpoint: VerifiedCheckpoint,
    /// Who approved the grants the records were read under (account ids).
    pub(crate) approved_by: String,
    /// Whether the package proves it holds every record of its listing (false: a
    /// package made before listings, which cannot tell).
    pub(crate) complete: bool,
}

/// Checks a package against the log key; the error names the first thing that failed.
pub(crate) fn verify(dir: &Path, log_key: &NoteVerifier) -> Result<Verified, CliError> {
    let manifest: Manifest = serde_json::from_slice(&read_small(&dir.join("manifest.json"), MAX_MANIFEST)?)
        .map_err(|e| failed(format!("manifest.json is not a package manifest: {e}")))?;
    let listed_format = match manifest.format.as_str() {
        FORMAT => true,
        FORMAT_V1 => false,
        other => {
            return Err(failed(format!(
                "manifest format {other:?}, expected {FORMAT} (or the older {FORMAT_V1})"
            )));
        }
    };
    if listed_format != manifest.listing.is_some() {
        return Err(failed(match listed_format {
            true => "the manifest names no listing: a v2 package must hold one",
            false => "a v1 package holds no listing",
        }));
    }
    let checkpoint_path = inside(dir, &manifest.checkpoint)?;
    let note = read_small(&checkpoint_path, MAX_NOTE_LEN as u64)?;
    let checkpoint = checkpoint::open(&note, log_key)
        .map_err(|e| failed(format!("the checkpoint does not verify under the log key: {e}")))?;
    let prove = |file: &str, entry: &[u8], what: &str| -> Result<u64, CliError> {
        let path = inside(dir, file)?;
        let proof = TlogProof::parse(&read_small(&path, MAX_PROOF_TEXT_LEN as u64)?)
            .map_err(|e| failed(format!("{what}: {file}: {e}")))?;
        if proof.extra.as_deref() != Some(entry) {
            return Err(failed(format!("{what}: its proof is for another log entry")));
        }
        proof
            .verify_in(&checkpoint, &leaf_hash(entry))
            .map_err(|e| failed(format!("{what}: not in the log at the package's checkpoint: {e}")))?;
        Ok(proof.index)
    };

    // The case: its scope and steps, each proven, folded to an approval.
    let case = &manifest.case;
    let scope = case.scope.clone().canonical().map_err(failed)?;
    if scope != case.scope || scope.digest() != case.scope_sha256 {
        return Err(failed("the case's scope does not match its digest"));
    }
    let mut events = Vec::with_capacity(manifest.case_events.len());
    for e in &manifest.case_events {
        let event = audit_event(cases::subject(&case.id), e);
        let what = format!("case step {} ({})", e.leaf_index, e.action);
        let index = prove(&e.proof, &event.log_entry().to_bytes(), &what)?;
        if index != e.leaf_index {
            return Err(failed(format!("{what}: proven at leaf {index}")));
        }
        events.push((e.leaf_index, event));
    }
    events.sort_by_key(|(leaf, _)| *leaf);
    let folded = cases::fold(&case.id, &events, UnixMillis(0)).map_err(failed)?;
    if folded.scope_sha256 != case.scope_sha256 || folded.reason != case.reason {
        return Err(failed("the case's opening step records another scope or reason"));
    }
    if !folded
        .history
        .iter()
        .any(|s| s.effective && s.action == cases::APPROVE)
    {
        return Err(failed("no recorded step approves access to this case"));
    }
    let mut approvers = BTreeSet::new();
    // A step that follows one the package leaves out would fold differently: refused.
    let listed: BTreeSet<u64> = events.iter().map(|(leaf, _)| *leaf).collect();
    for step in folded.history.iter().skip(1) {
        let prev = serde_json::from_str::<cases::StepDetail>(&step.detail).map(|d| d.prev);
        if prev.is_ok_and(|p| !listed.contains(&p)) {
            return Err(failed(format!(
                "case step {} follows a step the package does not list",
                step.leaf_index
            )));
        }
    }
    let filter = scope.filter().map_err(failed)?;
    let grants = grants(&folded);

    // The gateway's records of the body fetches: made by the case's auditor, each
    // within a grant, each proven. They tie every record to this case.
    let mut fetched = BTreeMap::new();
    let mut listings = Vec::new();
    for e in &manifest.fetch_events {
        let what = format!("fetch event {}", e.leaf_index);
        let event = audit_event(cases::fetch_subject(&case.id), e);
        let index = prove(&e.proof, &event.log_entry().to_bytes(), &what)?;
        if index != e.leaf_index {
            return Err(failed(format!("{what}: proven at leaf {index}")));
        }
        if e.action != cases::FETCH || e.actor != folded.opened_by {
            return Err(failed(format!("{what} is not a fetch by the case's auditor")));
        }
        let detail: serde_json::Value =
            serde_json::from_str(&e.detail).map_err(|_| failed(format!("{what}: detail is not JSON")))?;
        // The grant it stands on: an approval the package lists, which took effect,
        // recorded before the fetch, running when it was made.
        let grant = detail["grant"].as_u64();
        let window = grant.and_then(|leaf| grants.get(&leaf));
        let within = window.is_some_and(|(from, until)| (*from..*until).contains(&e.at));
        if !within || grant.is_none_or(|g| g >= e.leaf_index) {
            return Err(failed(format!(
                "{what} does not stand on a running grant the case's steps record"
            )));
        }
        if detail["part"] == "listing" {
            listings.push((e.leaf_index, detail.clone()));
        }
        if detail["part"] == "body"
            && let Some(record) = detail["record"].as_str()
        {
            fetched.insert(record.to_owned(), e.leaf_index);
            if let Some(step) = folded.history.iter().find(|s| Some(s.leaf_index) == grant) {
                approvers.insert(step.actor.clone());
            }
        }
    }

    let listed = match &manifest.listing {
        Some(file) => Some(listing(dir, file, &listings, checkpoint.size())?),
        None => None,
    };

    // Each record: header, body and proof agree, and it lies in the scope.
    let mut seen = BTreeMap::new();
    for r in &manifest.records {
        let what = format!("record {}", r.record_id);
        let record_id = RecordId::parse(&r.record_id).map_err(|e| failed(format!("{what}: {e}")))?;
        if seen.insert(record_id, ()).is_some() {
            return Err(failed(format!("{what} is listed twice")));
        }
        let header = read_small(
            &inside(dir, &r.header)?,
            vellum_protocol::header::MAX_HEADER_LEN as u64,
        )?;
        let header_sha256: [u8; 32] = Sha256::digest(&header).into();
        if hex::encode(header_sha256) != r.header_sha256 {
            return Err(failed(format!(
                "{what}: the header was altered (its SHA-256 differs from the manifest's)"
            )));
        }
        let parsed = UnverifiedHeader::parse(&header).map_err(|e| failed(format!("{what}: header: {e}")))?;
        let fields = parsed.archived_fields();
        if fields.record_id != record_id {
            return Err(failed(format!("{what}: the header names another record")));
        }
        let body = read_small(&inside(dir, &r.body)?, MAX_BODY)?;
        let body_sha256: [u8; 32] = Sha256::digest(&body).into();
        if body_sha256 != fields.body.sha256 || body.len() as u64 != fields.body.len {
            return Err(failed(format!(
                "{what}: the sealed body is not the one its header names"
            )));
        }
        if hex::encode(body_sha256) != r.body_sha256 || body.len() as u64 != r.body_len {
            return Err(failed(format!(
                "{what}: the manifest's body digest differs from the body"
            )));
        }
        let entry = LogEntry::RecordAppended {
            record_id,
            header_sha256,
            received_at: UnixMillis(r.received_at),
        };
        let index = prove(&r.proof, &entry.to_bytes(), &what)?;
        if index != r.leaf_index {
            return Err(failed(format!(
                "{what}: proven at leaf {index}, listed at {}",
                r.leaf_index
            )));
        }
        if !filter.matches(fields, UnixMillis(r.received_at)) {
            return Err(failed(format!("{what} lies outside the case's scope")));
        }
        if !fetched.contains_key(&r.record_id) {
            return Err(failed(format!(
                "{what}: no proven fetch under this case's grant reads it"
            )));
        }
        if let Some(listed) = &listed
            && listed.get(&r.record_id) != Some(&r.header_sha256)
        {
            return Err(failed(format!("{what} is not in the case's listing")));
        }
    }
    if let Some(listed) = &listed {
        let missing: Vec<&str> = listed
            .keys()
            .filter(|id| !manifest.records.iter().any(|r| &r.record_id == *id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(failed(format!(
                "the package leaves out {} of the {} records its listing names: {}",
                missing.len(),
                listed.len(),
                missing.join(", ")
            )));
        }
    }
    Ok(Verified {
        complete: listed.is_some(),
        manifest,
        checkpoint,
        approved_by: approvers.into_iter().collect::<Vec<_>>().join(", "),
    })
}

/// The package's listing, checked against the one listing fetch event it holds (already
/// proven): its digest and count are the event's, and its size is one the log had
/// before the event. Answers record id → header SHA-256.
fn listing(
    dir: &Path,
    file: &str,
    events: &[(u64, serde_json::Value)],
    checkpoint_size: u64,
) -> Result<BTreeMap<String, String>, CliError> {
    let [(leaf, detail)] = events else {
        return Err(failed(format!(
            "a v2 package holds exactly one listing fetch event; this one holds {}",
            events.len()
        )));
    };
    let text = read_small(&inside(dir, file)?, MAX_LISTING)?;
    let text = String::from_utf8(text).map_err(|_| failed("the listing is not UTF-8 text"))?;
    if Some(cases::listing_digest(&text).as_str()) != detail["records_sha256"].as_str() {
        return Err(failed(format!(
            "the listing is not the one fetch event {leaf} records (its SHA-256 differs)"
        )));
    }
    let lines = cases::parse_listing(&text).map_err(failed)?;
    let size = detail["size"].as_u64().unwrap_or(u64::MAX);
    if detail["count"].as_u64() != Some(lines.len() as u64) || size > *leaf || size > checkpoint_size {
        return Err(failed(format!(
            "fetch event {leaf} records another count or an impossible log size for the listing"
        )));
    }
    Ok(lines.into_iter().collect())
}
