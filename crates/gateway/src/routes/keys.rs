//! The keyring lifecycle for auditors: publishing the next epoch's keyring with its
//! wrapped copies, fetching one's own wrapped copies, wrapping epochs for a newcomer,
//! auditors' public recipients (and an optional passphrase-sealed identity), and the
//! status that says when a rotation is due.
//!
//! The gateway opens none of it: a keyring statement is checked against the
//! organisation key, and a wrapped copy is checked only for its shape (an age file
//! sealed to exactly one X25519 recipient). Who may hold a copy is checked against
//! the accounts: an active auditor, or the escrow recipient.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use vellum_archive::ports::{Account, BlobStore, Holder, KeyError, KeyStore, PublishedKeyring, Role, Wrap};
use vellum_protocol::age_header;
use vellum_protocol::ids::UnixMillis;
use vellum_protocol::keyring::{self, VerifiedKeyring};

use super::auth::{PeopleStore, audit};
use super::json;
use crate::State;
use crate::auth::Person;
use crate::problem::{ApiError, Problem};

/// What the key routes need of the store.
pub(crate) trait KeysStore: PeopleStore + KeyStore {}
impl<T: PeopleStore + KeyStore> KeysStore for T {}

/// The scrypt work factors (log2) an identity backup may be sealed with: at least
/// age's default, at most 2^22 (512 MiB of memory to open, which a browser can still
/// give).
const SCRYPT_WORK: std::ops::RangeInclusive<u8> = 18..=22;

/// The most wrapped copies one request may carry.
const MAX_WRAPS: usize = 1024;

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(e) => e.into(),
            other => ApiError::Conflict(other.to_string()),
        }
    }
}

/// A wrapped copy: base64 of an age file sealed to exactly one X25519 recipient (so
/// one holder).
fn wrapped_copy(text: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || {
        ApiError::Unprocessable(
            "each wrapped copy is base64 of an age file sealed to exactly one X25519 recipient".into(),
        )
    };
    let bytes = STANDARD.decode(text.trim()).map_err(|_| bad())?;
    let shape = age_header::inspect_file(&bytes).map_err(|_| bad())?;
    // Exactly one X25519 recipient. Other stanza types are tolerated: age adds a
    // random "grease" stanza to every file, so parsers stay open to new types.
    let x25519 = shape.stanzas.iter().filter(|s| s.is_x25519()).count();
    if x25519 != 1 || shape.stanzas.iter().any(|s| s.tag == "scrypt") {
        return Err(bad());
    }
    Ok(bytes)
}

/// The account of `username` if it is an active auditor.
async fn authorised_auditor<L: KeysStore>(store: &L, username: &str) -> Result<Account, ApiError> {
    match store.account_by_username(username).await? {
        Some(a) if a.role == Role::Auditor && a.disabled_at.is_none() => Ok(a),
        _ => Err(ApiError::Forbidden(format!(
            "{username} is not an authorised auditor (an active account with the auditor role)"
        ))),
    }
}

fn now() -> UnixMillis {
    UnixMillis(crate::now_ms())
}

/// Brings this gateway's keyring up to the newest one published (by another gateway,
/// say), checked against the organisation key. Returns the keyring in force.
pub(crate) async fn refresh_keyring<L: KeysStore, B: BlobStore>(
    state: &State<L, B>,
) -> Result<std::sync::Arc<VerifiedKeyring>, ApiError> {
    let current = state.keyring();
    let (Some(org), Some(latest)) = (
        state.org_key(),
        state.archive().log_store().latest_keyring().await?,
    ) else {
        return Ok(current);
    };
    if latest.epoch <= current.statement().epoch.0 {
        return Ok(current);
    }
    match keyring::verify(latest.note.as_bytes(), org, Some(&current), now()) {
        Ok(newer) => {
            state.set_keyring(newer);
            Ok(state.keyring())
        }
        Err(e) => {
            tracing::error!(error = %e, epoch = latest.epoch, "stored keyring does not verify");
            Ok(current)
        }
    }
}

/// A holder and their wrapped copy of the published epoch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HolderWrap {
    /// An auditor's username, or `escrow`.
    holder: String,
    /// Base64 of the age file.
    wrapped: String,
}

/// A keyring statement for the next epoch and its wrapped copies.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishRequest {
    /// The signed keyring note (docs/formats.md).
    note: String,
    /// One copy per authorised auditor who should read the epoch, and one for escrow.
    wraps: Vec<HolderWrap>,
}

/// `POST /v1/keys/keyring`: publishes the next epoch's keyring; captures are sealed to
/// it from now on.
#[utoipa::path(post, path = "/v1/keys/keyring", tag = "keys", request_body = PublishRequest,
    security(("access_token" = [])), responses(
    (status = 201, description = "Published: /v1/keyring serves it now."),
    (status = 400, description = "Malformed request, or the escrow copy missing or given twice.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor, or a holder is not an authorised auditor.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "This gateway was started without the organisation key, so it publishes no keyring.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Not the next epoch (a rollback, a gap, or another publisher first).", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "The statement is unsigned, tampered, expired, or equivocates; or a copy is not an age file for one recipient.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn publish<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json(body)?;
    let org = state.org_key().ok_or_else(|| {
        ApiError::NotFound("this gateway publishes no keyring (no organisation key)".into())
    })?;
    let current = refresh_keyring(&state).await?;
    let verified = keyring::verify(request.note.as_bytes(), org, Some(&current), now())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let epoch = verified.statement().epoch.0;
    let next = current.statement().epoch.0 + 1;
    if epoch != next {
        return Err(ApiError::Conflict(format!(
            "epoch {epoch} is not the next epoch ({next})"
        )));
    }
    if request.wraps.len() > MAX_WRAPS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_WRAPS} wrapped copies"
        )));
    }
    let store = state.archive().log_store();
    let mut wraps: Vec<Wrap> = Vec::with_capacity(request.wraps.len());
    let mut names = Vec::new();
    for wrap in &request.wraps {
        let holder = if wrap.holder == "escrow" {
            Holder::Escrow
        } else {
            Holder::Account(authorised_auditor(store, &wrap.holder).await?.account_id)
        };
        if wraps.iter().any(|w| w.holder == holder) {
            return Err(ApiError::BadRequest(format!("{} holds two copies", wrap.holder)));
        }
        wraps.push(Wrap {
            epoch,
            holder,
            wrapped: wrapped_copy(&wrap.wrapped)?,
        });
        names.push(wrap.holder.clone());
    }
    if !wraps.iter().any(|w| w.holder == Holder::Escrow) {
        return Err(ApiError::BadRequest(
            "the escrow copy is missing: without it, no quorum can recover this epoch".into(),
        ));
    }
    let published = PublishedKeyring {
        epoch,
        note: request.note.clone(),
        published_at: now(),
        published_by: person.id_text(),
    };
    store.publish_keyring(&published, &wraps).await?;
    state.set_keyring(verified);
    let detail = serde_json::json!({ "epoch": epoch, "holders": names });
    audit(
        state.archive(),
        &person.id_text(),
        "keyring.publish",
        &epoch.to_string(),
        detail,
    )
    .await?;
    tracing::info!(epoch, "keyring published");
    Ok(StatusCode::CREATED)
}

/// A wrapped copy of one epoch.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EpochWrap {
    /// The epoch.
    epoch: u64,
    /// Base64 of the age file.
    wrapped: String,
}

impl From<Wrap> for EpochWrap {
    fn from(w: Wrap) -> Self {
        EpochWrap {
            epoch: w.epoch,
            wrapped: STANDARD.encode(w.wrapped),
        }
    }
}

/// `GET /v1/keys/wraps`: the caller's own wrapped copies, oldest epoch first.
#[utoipa::path(get, path = "/v1/keys/wraps", tag = "keys", security(("access_token" = [])), responses(
    (status = 200, description = "The caller's wrapped copies.", body = Vec<EpochWrap>),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn own_wraps<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
) -> Result<Json<Vec<EpochWrap>>, ApiError> {
    let wraps = state
        .archive()
        .log_store()
        .wraps_of(&Holder::Account(person.account_id))
        .await?;
    Ok(Json(wraps.into_iter().map(EpochWrap::from).collect()))
}

/// `GET /v1/keys/escrow`: the escrow copies of every published epoch, for the records
/// officer who runs a recovery with the custodians (the regulator path). Useless without
/// a quorum of custodians' shares; every fetch is audited, so the log shows when the
/// path was started and by whom.
#[utoipa::path(get, path = "/v1/keys/escrow", tag = "keys", security(("access_token" = [])), responses(
    (status = 200, description = "The escrow copies, oldest epoch first.", body = Vec<EpochWrap>),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an approver (records officer).", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn escrow_copies<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
) -> Result<Json<Vec<EpochWrap>>, ApiError> {
    let wraps = state.archive().log_store().wraps_of(&Holder::Escrow).await?;
    let epochs: Vec<u64> = wraps.iter().map(|w| w.epoch).collect();
    let detail = serde_json::json!({ "epochs": epochs });
    audit(
        state.archive(),
        &person.id_text(),
        "keys.escrow.fetch",
        "escrow",
        detail,
    )
    .await?;
    Ok(Json(wraps.into_iter().map(EpochWrap::from).collect()))
}

/// The minute of a recovery the custodians ran offline (`vellum escrow recover` writes
/// it): which split and shares rebuilt the escrow identity, which escrow copies were
/// re-wrapped and to whom. No secret is in it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecoveryMinute {
    /// The escrow recipient rebuilt (`age1…`): this deployment's.
    escrow_recipient: String,
    /// The split the shares came from (as printed on each share).
    split_id: String,
    /// The indexes of the shares used.
    shares: Vec<u8>,
    /// SHA-256 (64 hex digits) of each escrow copy re-wrapped: those `GET
    /// /v1/keys/escrow` serves name their epochs; others (a copy kept outside the
    /// gateway) are recorded as unmatched.
    copies: Vec<String>,
    /// Who the epoch identities were re-wrapped to (`age1…`).
    to: Vec<String>,
    /// Why: the regulator's request, the case, the order.
    reason: String,
}

/// The recovery as recorded.
#[derive(Serialize, ToSchema)]
pub(super) struct RecordedRecovery {
    /// The epochs of the copies the gateway serves.
    epochs: Vec<u64>,
    /// The digests of copies the gateway does not serve, as given.
    unmatched: Vec<String>,
}

/// The most characters of a recovery's reason.
const MAX_REASON: usize = 2000;

/// `POST /v1/keys/escrow/recoveries`: the records officer records a recovery the
/// custodians ran offline, so the log holds it with who recorded it and why. The
/// gateway checks what it can: a digest of an escrow copy it serves names that epoch,
/// whose keyring must name the minute's escrow recipient; with no such digest, some
/// published keyring must name it. Other digests are recorded as unmatched.
#[utoipa::path(post, path = "/v1/keys/escrow/recoveries", tag = "keys", request_body = RecoveryMinute,
    security(("access_token" = [])), responses(
    (status = 201, description = "Recorded: an audit entry and a leaf of the log.", body = RecordedRecovery),
    (status = 400, description = "Malformed minute.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an approver (records officer).", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "An escrow recipient the keyrings do not name.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn record_recovery<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<RecoveryMinute>, JsonRejection>,
) -> Result<(StatusCode, Json<RecordedRecovery>), ApiError> {
    let minute = json(body)?;
    super::free_text("reason", &minute.reason)?;
    let reason = minute.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::BadRequest(format!(
            "a reason of 1 to {MAX_REASON} characters is required"
        )));
    }
    let mut shares = minute.shares.clone();
    shares.sort_unstable();
    shares.dedup();
    if shares.is_empty() || shares.len() != minute.shares.len() || shares.contains(&0) {
        return Err(ApiError::BadRequest(
            "shares: distinct share indexes, 1 to 255".into(),
        ));
    }
    let split_ok = !minute.split_id.is_empty()
        && minute.split_id.len() <= 64
        && minute.split_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !split_ok {
        return Err(ApiError::BadRequest(
            "split_id: the split's id in hex, as printed on its shares".into(),
        ));
    }
    if minute.copies.is_empty()
        || minute.copies.len() > MAX_WRAPS
        || minute.to.is_empty()
        || minute.to.len() > 16
    {
        return Err(ApiError::BadRequest(format!(
            "1 to {MAX_WRAPS} copies and 1 to 16 recipients"
        )));
    }
    let to = minute
        .to
        .iter()
        .map(|r| {
            r.parse::<vellum_protocol::seal::Recipient>()
                .map(|r| r.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::BadRequest("to: age1… recipients".into()))?;
    let mut digests = Vec::with_capacity(minute.copies.len());
    for digest in &minute.copies {
        let digest = digest.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::BadRequest(
                "copies: SHA-256 digests, 64 hex digits each".into(),
            ));
        }
        digests.push(digest);
    }
    let store = state.archive().log_store();
    let served: std::collections::HashMap<String, u64> = store
        .wraps_of(&Holder::Escrow)
        .await?
        .into_iter()
        .map(|w| (hex::encode(Sha256::digest(&w.wrapped)), w.epoch))
        .collect();
    let (mut epochs, mut unmatched) = (Vec::new(), Vec::new());
    for digest in digests {
        match served.get(&digest) {
            Some(epoch) => epochs.push(*epoch),
            None => unmatched.push(digest),
        }
    }
    epochs.sort_unstable();
    epochs.dedup();
    let escrow = minute.escrow_recipient.as_str();
    let current = refresh_keyring(&state).await?;
    for &epoch in &epochs {
        if escrow_named_by(&state, &current, epoch).await?.as_deref() != Some(escrow) {
            return Err(ApiError::Unprocessable(format!(
                "escrow_recipient is not the escrow recipient epoch {epoch}'s keyring names"
            )));
        }
    }
    if epochs.is_empty() {
        let mut epoch = current.statement().epoch.0;
        loop {
            match escrow_named_by(&state, &current, epoch).await? {
                Some(named) if named == escrow => break,
                Some(_) if epoch > 0 => epoch -= 1,
                _ => {
                    return Err(ApiError::Unprocessable(
                        "escrow_recipient is not the escrow recipient of any published keyring".into(),
                    ));
                }
            }
        }
    }
    let detail = serde_json::json!({
        "escrow_recipient": escrow,
        "split_id": minute.split_id,
        "shares": shares,
        "epochs": epochs,
        "unmatched": unmatched,
        "to": to,
        "reason": reason,
    });
    audit(
        state.archive(),
        &person.id_text(),
        "keys.escrow.recover",
        "escrow",
        detail,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(RecordedRecovery { epochs, unmatched })))
}

/// The escrow recipient the keyring of `epoch` named: read from the store and checked
/// against the organisation key (the keyring in force when the gateway has none).
async fn escrow_named_by<L: KeysStore, B: BlobStore>(
    state: &State<L, B>,
    current: &VerifiedKeyring,
    epoch: u64,
) -> Result<Option<String>, ApiError> {
    if current.statement().epoch.0 == epoch {
        return Ok(Some(current.statement().escrow.to_string()));
    }
    let (Some(org_key), Some(published)) = (
        state.org_key(),
        state.archive().log_store().keyring_at(epoch).await?,
    ) else {
        return Ok(None);
    };
    match keyring::signed_statement(published.note.as_bytes(), org_key) {
        Ok(statement) => Ok(Some(statement.escrow.to_string())),
        Err(e) => {
            tracing::error!(error = %e, epoch, "stored keyring does not verify");
            Err(ApiError::Internal)
        }
    }
}

/// Wrapped copies for another auditor.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddWrapsRequest {
    /// The auditor who receives them.
    holder: String,
    /// One copy per epoch.
    wraps: Vec<EpochWrap>,
}

/// `POST /v1/keys/wraps`: wrapped copies of published epochs for an authorised auditor
/// (an existing auditor unwrapped them on their own machine and wrapped them to the
/// newcomer's recipient). All or none.
#[utoipa::path(post, path = "/v1/keys/wraps", tag = "keys", request_body = AddWrapsRequest,
    security(("access_token" = [])), responses(
    (status = 201, description = "Stored; the holder can fetch them."),
    (status = 400, description = "Malformed request.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor, or the holder is not an authorised auditor.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "An epoch not published, or a copy the holder has already.", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "A copy is not an age file for one recipient.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn add_wraps<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<AddWrapsRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json(body)?;
    if request.wraps.is_empty() || request.wraps.len() > MAX_WRAPS {
        return Err(ApiError::BadRequest(format!("1 to {MAX_WRAPS} wrapped copies")));
    }
    let store = state.archive().log_store();
    let holder = Holder::Account(authorised_auditor(store, &request.holder).await?.account_id);
    let wraps = request
        .wraps
        .iter()
        .map(|w| {
            Ok(Wrap {
                epoch: w.epoch,
                holder: holder.clone(),
                wrapped: wrapped_copy(&w.wrapped)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    store.add_wraps(&wraps, &person.id_text(), now()).await?;
    let epochs: Vec<u64> = wraps.iter().map(|w| w.epoch).collect();
    let detail = serde_json::json!({ "holder": request.holder, "epochs": epochs });
    audit(
        state.archive(),
        &person.id_text(),
        "keys.wrap",
        &holder.as_text(),
        detail,
    )
    .await?;
    Ok(StatusCode::CREATED)
}

/// An auditor's public recipient, and optionally their identity sealed under their
/// key passphrase.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecipientRequest {
    /// The auditor's personal age recipient (`age1…`).
    recipient: String,
    /// Base64 of an age file sealed with age's scrypt (passphrase) recipient alone.
    #[serde(default)]
    identity: Option<String>,
}

/// `POST /v1/keys/recipient`: sets the caller's recipient (and identity backup).
#[utoipa::path(post, path = "/v1/keys/recipient", tag = "keys", request_body = RecipientRequest,
    security(("access_token" = [])), responses(
    (status = 204, description = "Stored."),
    (status = 400, description = "Malformed request.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor.", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Not an age1… recipient, or the identity is not sealed to a passphrase alone.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn set_recipient<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<RecipientRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json(body)?;
    request
        .recipient
        .parse::<vellum_protocol::seal::Recipient>()
        .map_err(|_| ApiError::Unprocessable("recipient: an age1… X25519 recipient".into()))?;
    let identity = match &request.identity {
        None => None,
        Some(text) => {
            let bad = || {
                ApiError::Unprocessable(
                    "identity: base64 of an age file sealed to a passphrase (scrypt) alone".into(),
                )
            };
            let bytes = STANDARD.decode(text.trim()).map_err(|_| bad())?;
            let shape = age_header::inspect_file(&bytes).map_err(|_| bad())?;
            let [only] = shape.stanzas.as_slice() else {
                return Err(bad());
            };
            // `-> scrypt <salt> <log2 of the work factor>`.
            let work = match (only.tag.as_str(), only.args.as_slice()) {
                ("scrypt", [_, work]) => work.parse::<u8>().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            if !SCRYPT_WORK.contains(&work) {
                return Err(ApiError::Unprocessable(format!(
                    "identity: the passphrase's scrypt work factor is 2^{work}; between 2^{} (age's \
                     default) and 2^{} is required, so that a copy of the database does not make \
                     passphrase guessing cheap",
                    SCRYPT_WORK.start(),
                    SCRYPT_WORK.end()
                )));
            }
            Some(bytes)
        }
    };
    let store = state.archive().log_store();
    store
        .set_auditor_key(&person.account_id, &request.recipient, identity.as_deref(), now())
        .await?;
    let detail = serde_json::json!({ "recipient": request.recipient, "identity_backup": identity.is_some() });
    audit(
        state.archive(),
        &person.id_text(),
        "keys.recipient",
        &person.id_text(),
        detail,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An auditor and their recipient.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditorRecipient {
    /// The username.
    username: String,
    /// Their age recipient, if they set one.
    recipient: Option<String>,
}

/// `GET /v1/keys/recipients`: every active auditor and their recipient (what epochs
/// are wrapped to).
#[utoipa::path(get, path = "/v1/keys/recipients", tag = "keys", security(("access_token" = [])), responses(
    (status = 200, description = "Active auditors and their recipients.", body = Vec<AuditorRecipient>),
    (status = 403, description = "Not an auditor.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn recipients<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
) -> Result<Json<Vec<AuditorRecipient>>, ApiError> {
    let store = state.archive().log_store();
    let mut out = Vec::new();
    for account in store.list_accounts().await? {
        if account.role == Role::Auditor && account.disabled_at.is_none() {
            let recipient = store.auditor_key(&account.account_id).await?.map(|k| k.recipient);
            out.push(AuditorRecipient {
                username: account.username,
                recipient,
            });
        }
    }
    Ok(Json(out))
}

/// The caller's identity backup.
#[derive(Serialize, ToSchema)]
pub(super) struct IdentityBackup {
    /// Base64 of the passphrase-sealed age file.
    identity: String,
}

/// `GET /v1/keys/identity`: the caller's own passphrase-sealed identity, if stored.
#[utoipa::path(get, path = "/v1/keys/identity", tag = "keys", security(("access_token" = [])), responses(
    (status = 200, description = "The sealed identity; the gateway cannot open it.", body = IdentityBackup),
    (status = 403, description = "Not an auditor.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "None stored.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn identity<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
) -> Result<Json<IdentityBackup>, ApiError> {
    let stored = state
        .archive()
        .log_store()
        .auditor_key(&person.account_id)
        .await?;
    match stored.and_then(|k| k.identity) {
        Some(bytes) => Ok(Json(IdentityBackup {
            identity: STANDARD.encode(bytes),
        })),
        None => Err(ApiError::NotFound("no identity backup stored".into())),
    }
}

/// Who holds the current epoch, and whether a rotation is due.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyringStatus {
    /// The epoch captures are sealed to now.
    epoch: u64,
    /// Holders of a wrapped copy of it: usernames, and `escrow`.
    holders: Vec<String>,
    /// Holders who are no longer active auditors: while any is listed, a rotation to a
    /// new epoch is due (they could still open this epoch's records).
    removed: Vec<String>,
    /// Whether a rotation is due.
    rotation_required: bool,
}

/// `GET /v1/keys/status`: the current epoch's holders and whether a rotation is due
/// (an auditor who held it was disabled or changed role).
#[utoipa::path(get, path = "/v1/keys/status", tag = "keys", security(("access_token" = [])), responses(
    (status = 200, description = "The current epoch and its holders.", body = KeyringStatus),
    (status = 403, description = "Not an administrator or auditor.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn status<L: KeysStore, B: BlobStore>(
    state: State<L, B>,
) -> Result<Json<KeyringStatus>, ApiError> {
    let epoch = refresh_keyring(&state).await?.statement().epoch.0;
    let store = state.archive().log_store();
    let (mut holders, mut removed) = (Vec::new(), Vec::new());
    for holder in store.holders_of(epoch).await? {
        match holder {
            Holder::Escrow => holders.push("escrow".to_owned()),
            Holder::Account(id) => {
                let account = store.account_by_id(&id).await?;
                let name = account
                    .as_ref()
                    .map_or_else(|| holder.as_text(), |a| a.username.clone());
                if !account.is_some_and(|a| a.role == Role::Auditor && a.disabled_at.is_none()) {
                    removed.push(name.clone());
                }
                holders.push(name);
            }
        }
    }
    Ok(Json(KeyringStatus {
        epoch,
        rotation_required: !removed.is_empty(),
        holders,
        removed,
    }))
}

/// The keyring a gateway starts with, given the one its configuration names: the
/// newest published (when another gateway or an auditor published a later one), or
/// the configured one, published first when the store has none or it is the next
/// epoch. A configured keyring that contradicts the store (another statement for a
/// stored epoch, or a gap) is refused with the reason.
pub async fn starting_keyring<L: KeyStore + vellum_archive::ports::LogStore, B: BlobStore>(
    archive: &vellum_archive::Archive<L, B>,
    org_key: &vellum_tlog::note::NoteVerifier,
    configured: VerifiedKeyring,
) -> Result<VerifiedKeyring, String> {
    let store = archive.log_store();
    let epoch = configured.statement().epoch.0;
    let latest = store.latest_keyring().await.map_err(|e| e.to_string())?;
    // Published from the file: in the log like any publication, with `config` as the
    // publisher and no holders (the file's keyring has no stored copies).
    let published = || async {
        let detail = serde_json::json!({ "epoch": epoch, "holders": [], "from": "keyring_file" });
        crate::auth::admin::audit(archive, "config", "keyring.publish", &epoch.to_string(), detail)
            .await
            .map_err(|e| e.to_string())
    };
    let publish = |configured: &VerifiedKeyring| PublishedKeyring {
        epoch,
        note: configured.note().to_owned(),
        published_at: now(),
        published_by: "config".into(),
    };
    match latest {
        None => {
            store
                .publish_keyring(&publish(&configured), &[])
                .await
                .map_err(|e| e.to_string())?;
            published().await?;
            Ok(configured)
        }
        Some(latest) if latest.epoch > epoch => {
            keyring::verify(latest.note.as_bytes(), org_key, Some(&configured), now())
                .map_err(|e| format!("the newest published keyring (epoch {}): {e}", latest.epoch))
        }
        Some(latest) if latest.epoch == epoch => {
            if latest.note.trim() == configured.note().trim() {
                Ok(configured)
            } else {
                Err(format!(
                    "keyring_file holds another statement for epoch {epoch} than the one published"
                ))
            }
        }
        Some(latest) if latest.epoch + 1 == epoch => {
            store
                .publish_keyring(&publish(&configured), &[])
                .await
                .map_err(|e| e.to_string())?;
            published().await?;
            Ok(configured)
        }
        Some(latest) => Err(format!(
            "keyring_file is epoch {epoch}, but the newest published is {}: epochs go one at a time",
            latest.epoch
        )),
    }
}
