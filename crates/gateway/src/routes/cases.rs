//! Auditor access: metadata search, cases and their two-person approval, fetches
//! within an approved scope, and the audit trail. See [`crate::cases`] for how a case
//! is kept. Every search, transition and fetch is an audit event and a log leaf,
//! recorded before the answer is sent.

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vellum_archive::ports::{AuditEvent, BlobStore, Role};
use vellum_archive::search::{
    Cursor, RecordFilter, RecordQuery, RecordSearch, RecordSummary, SortKey, TimeRange,
};
use vellum_protocol::header::UnverifiedHeader;
use vellum_protocol::ids::{Channel, Custodian, DeviceId, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::receipt::LogEntry;

use super::auth::{PeopleStore, audit};
use super::{free_text, json, query};
use crate::State;
use crate::auth::Person;
use crate::cases::{self, Case, Scope, StepDetail};
use crate::problem::{ApiError, Problem};

/// What the case routes need of the metadata store.
pub(crate) trait CaseStore: PeopleStore + RecordSearch {}
impl<T: PeopleStore + RecordSearch> CaseStore for T {}

fn now() -> UnixMillis {
    UnixMillis(crate::now_ms())
}

/// A search of record metadata.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchRequest {
    /// Custodians (any of).
    #[serde(default)]
    custodians: Vec<String>,
    /// Device ids (any of).
    #[serde(default)]
    devices: Vec<String>,
    /// Channels (any of).
    #[serde(default)]
    channels: Vec<String>,
    /// Retention classes (any of).
    #[serde(default)]
    retention: Vec<String>,
    /// Blind tokens, 32 hex digits each (records carrying any of them). The CLI
    /// computes them from participants with the index key; the gateway never sees
    /// who they stand for.
    #[serde(default)]
    tokens: Vec<String>,
    /// Capture time from (Unix ms, included).
    #[serde(default)]
    captured_from: Option<u64>,
    /// Capture time to (Unix ms, excluded).
    #[serde(default)]
    captured_to: Option<u64>,
    /// Receipt time from (Unix ms, included).
    #[serde(default)]
    received_from: Option<u64>,
    /// Receipt time to (Unix ms, excluded).
    #[serde(default)]
    received_to: Option<u64>,
    /// `captured` (default) or `logged` (log order).
    #[serde(default)]
    sort: Option<String>,
    /// `desc` (default, newest first) or `asc`.
    #[serde(default)]
    order: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Count the matches too (up to 10,000).
    #[serde(default)]
    count: bool,
}

impl SearchRequest {
    fn into_query(self) -> Result<RecordQuery, ApiError> {
        fn each<T, E: std::fmt::Display>(
            what: &str,
            values: &[String],
            parse: impl Fn(&str) -> Result<T, E>,
        ) -> Result<Vec<T>, ApiError> {
            values
                .iter()
                .map(|v| parse(v).map_err(|e| ApiError::BadRequest(format!("{what} {v:?}: {e}"))))
                .collect()
        }
        let filter = RecordFilter {
            custodians: each("custodian", &self.custodians, Custodian::new)?,
            devices: each("device", &self.devices, DeviceId::parse)?,
            channels: each("channel", &self.channels, Channel::new)?,
            retention: each("retention class", &self.retention, RetentionClass::new)?,
            tokens: each("token", &self.tokens, cases::parse_token)?,
            captured: TimeRange {
                from: self.captured_from.map(UnixMillis),
                to: self.captured_to.map(UnixMillis),
            },
            received: TimeRange {
                from: self.received_from.map(UnixMillis),
                to: self.received_to.map(UnixMillis),
            },
        };
        filter.check().map_err(ApiError::BadRequest)?;
        let sort = match self.sort.as_deref() {
            None | Some("captured") => SortKey::Captured,
            Some("logged") => SortKey::Logged,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "sort {other:?}: captured or logged"
                )));
            }
        };
        let ascending = match self.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => return Err(ApiError::BadRequest(format!("order {other:?}: asc or desc"))),
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=vellum_archive::search::MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest("limit: 1 to 1000".into()));
        }
        let after = self
            .cursor
            .as_deref()
            .map(|c| {
                Cursor::decode(c)
                    .ok_or_else(|| ApiError::BadRequest("cursor: the next of a previous page".into()))
            })
            .transpose()?;
        Ok(RecordQuery {
            filter,
            sort,
            ascending,
            after,
            limit,
            count: self.count,
        })
    }
}

/// One record's metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct RecordRow {
    record_id: String,
    leaf_index: u64,
    custodian: String,
    device_id: String,
    channel: String,
    retention: String,
    epoch: u64,
    /// Unix ms, as the capture client claims.
    captured_at: u64,
    /// Unix ms, the gateway's receipt.
    received_at: u64,
    body_len: u64,
}

impl From<RecordSummary> for RecordRow {
    fn from(r: RecordSummary) -> Self {
        Self {
            record_id: r.record_id.to_string(),
            leaf_index: r.leaf_index,
            custodian: r.custodian.to_string(),
            device_id: r.device_id.to_string(),
            channel: r.channel.to_string(),
            retention: r.retention.to_string(),
            epoch: r.epoch.0,
            captured_at: r.captured_at.0,
            received_at: r.received_at.0,
            body_len: r.body_len,
        }
    }
}

/// A page of records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct RecordPage {
    records: Vec<RecordRow>,
    /// The cursor of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    /// The number of matches when asked (`count`), at most 10,000.
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    /// More than `total` match.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_more: Option<bool>,
}

async fn page<L: CaseStore>(store: &L, query: &RecordQuery) -> Result<RecordPage, ApiError> {
    let found = store.search(query).await?;
    Ok(RecordPage {
        records: found.records.into_iter().map(RecordRow::from).collect(),
        next: found.next.map(|c| c.encode()),
        total: found.total.map(|t| t.count),
        total_more: found.total.map(|t| t.more),
    })
}

/// `POST /v1/records/search`: records by what the gateway knows of them (never
/// content). Audited as `records.search` with the filter.
#[utoipa::path(post, path = "/v1/records/search", tag = "auditors", request_body = SearchRequest,
    security(("access_token" = [])), responses(
    (status = 200, description = "One page, in the order asked.", body = RecordPage),
    (status = 400, description = "A malformed filter, order or cursor.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor or approver.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn search<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<RecordPage>, ApiError> {
    let request = json(body)?;
    let detail = serde_json::to_value(&request).map_err(|_| ApiError::Internal)?;
    // The filter is the audit event's detail, whose size is bounded.
    if detail.to_string().len() > vellum_archive::MAX_AUDIT_FIELD {
        return Err(ApiError::BadRequest(format!(
            "the filter is longer than {} bytes: search in parts",
            vellum_archive::MAX_AUDIT_FIELD
        )));
    }
    let query = request.into_query()?;
    let archive = state.archive();
    audit(archive, &person.id_text(), "records.search", "records", detail).await?;
    Ok(Json(page(archive.log_store(), &query).await?))
}

/// Reads case `id` from its history, checking each event against its log leaf.
async fn load<L: CaseStore, B: BlobStore>(state: &State<L, B>, id: &str) -> Result<Case, ApiError> {
    if !cases::valid_id(id) {
        return Err(ApiError::NotFound("no such case".into()));
    }
    let store = state.archive().log_store();
    let events = store.audit_of(&cases::subject(id), 0, u32::MAX).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound("no such case".into()));
    }
    for (leaf, event) in &events {
        let entry = store.entry(*leaf).await?;
        if entry.as_deref() != Some(event.log_entry().to_bytes().as_slice()) {
            tracing::error!(case = id, leaf, "a case event does not match its log leaf");
            return Err(ApiError::Conflict(format!(
                "case {id}: its recorded history does not match the log at leaf {leaf}; access is refused"
            )));
        }
    }
    let case = cases::fold(id, &events, now()).map_err(|e| {
        tracing::error!(case = id, error = %e, "case history");
        ApiError::Conflict(format!(
            "case {id}: its recorded history is not valid; access is refused"
        ))
    })?;
    end_orphaned_grant(state, case).await
}

/// A running grant ends when its approver is disabled or is no longer an approver:
/// the second person who vouched for it can no longer answer for it. The gateway
/// records the end as a revocation (actor [`cases::GATEWAY_ACTOR`], a log leaf like any
/// other step), so the history shows why and the auditor may request again.
async fn end_orphaned_grant<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    case: Case,
) -> Result<Case, ApiError> {
    let approver = match (&case.state, &case.approved_by) {
        (cases::State::Approved, Some(approver)) => approver.clone(),
        _ => return Ok(case),
    };
    let store = state.archive().log_store();
    let account = account_of(store, &approver).await?;
    let why = match &account {
        None => format!("its approver {approver} is unknown"),
        Some(a) if a.disabled_at.is_some() => format!("its approver {} was disabled", a.username),
        Some(a) if a.role != Role::Approver => {
            format!("its approver {} is no longer an approver", a.username)
        }
        Some(_) => return Ok(case),
    };
    let detail = StepDetail {
        prev: case.head,
        note: format!("the grant ends: {why}"),
        ..StepDetail::default()
    };
    tracing::info!(case = %case.id, "a grant ends with its approver's role");
    let id = case.id.clone();
    // Two readers may both record the end; the second is kept as superseded.
    match Box::pin(transition(
        state,
        case,
        cases::GATEWAY_ACTOR,
        cases::REVOKE,
        detail,
        now(),
    ))
    .await
    {
        Ok(_) | Err(ApiError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    Box::pin(load(state, &id)).await
}

/// A person a case names, as the approver reviewing it needs to see them: not only an
/// account id, but the name, and who made the account and gave it its role (so one
/// administrator who made both the requester and the approver shows).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct PersonView {
    /// The username (or, for an actor that is no account, the actor as recorded:
    /// `gateway`, `local-admin`, `oidc`).
    username: String,
    /// The role now (absent for an actor that is no account).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// Whether the account is disabled now.
    #[serde(default)]
    disabled: bool,
    /// Who created the account (a username, `local-admin` or `oidc`), per the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    /// Who gave the account its current role (its creator, when no change followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    role_by: Option<String>,
}

/// People already looked up, by account id (hex) or actor.
type People = BTreeMap<String, PersonView>;

/// A case with the people it names.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CaseView {
    #[serde(flatten)]
    case: Case,
    /// Each account the case names (its opener, each step's actor), by account id.
    people: People,
}

impl CaseView {
    async fn of<L: CaseStore>(store: &L, case: Case, known: &mut People) -> Result<Self, ApiError> {
        let mut people = People::new();
        let actors = std::iter::once(&case.opened_by).chain(case.history.iter().map(|s| &s.actor));
        for actor in actors {
            if !people.contains_key(actor) {
                let person = person_view(store, actor, known).await?;
                people.insert(actor.clone(), person);
            }
        }
        Ok(Self { case, people })
    }
}

async fn view<L: CaseStore, B: BlobStore>(state: &State<L, B>, case: Case) -> Result<CaseView, ApiError> {
    CaseView::of(state.archive().log_store(), case, &mut People::new()).await
}

/// The username an actor stands for: an account's, or the actor as recorded.
async fn username_of<L: CaseStore>(store: &L, actor: &str) -> Result<String, ApiError> {
    Ok(match account_of(store, actor).await? {
        Some(account) => account.username,
        None => actor.to_owned(),
    })
}

async fn account_of<L: CaseStore>(
    store: &L,
    actor: &str,
) -> Result<Option<vellum_archive::ports::Account>, ApiError> {
    match <[u8; 16]>::try_from(hex::decode(actor).unwrap_or_default()) {
        Ok(id) => Ok(store.account_by_id(&id).await?),
        Err(_) => Ok(None),
    }
}

async fn person_view<L: CaseStore>(
    store: &L,
    actor: &str,
    known: &mut People,
) -> Result<PersonView, ApiError> {
    if let Some(found) = known.get(actor) {
        return Ok(found.clone());
    }
    let view = match account_of(store, actor).await? {
        None => PersonView {
            username: actor.to_owned(),
            role: None,
            disabled: false,
            created_by: None,
            role_by: None,
        },
        Some(account) => {
            // The newest of each, however many sign-ins the account's trail holds.
            let by = |action: &'static str| async move {
                Ok::<_, ApiError>(store.last_audit(actor, action).await?.map(|(_, e)| e.actor))
            };
            let created_by = by("account.create").await?;
            let role_by = by("account.role").await?.or_else(|| created_by.clone());
            PersonView {
                username: account.username,
                role: Some(account.role.as_str().to_owned()),
                disabled: account.disabled_at.is_some(),
                created_by: match created_by {
                    Some(a) => Some(username_of(store, &a).await?),
                    None => None,
                },
                role_by: match role_by {
                    Some(a) => Some(username_of(store, &a).await?),
                    None => None,
                },
            }
        }
    };
    known.insert(actor.to_owned(), view.clone());
    Ok(view)
}

/// Who may see a case: its opener and approvers.
fn may_see(person: &Person, case: &Case) -> Result<(), ApiError> {
    if person.role == Role::Approver || person.id_text() == case.opened_by {
        Ok(())
    } else {
        Err(ApiError::NotFound("no such case".into()))
    }
}

/// Opening a case.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenRequest {
    /// Why: the FOIA request, the matter, the examination.
    reason: String,
    /// What the case may read; fixed for the case's life.
    scope: Scope,
}

/// A reason or note: free text without controls (see `vellum_protocol::text`), at most
/// [`cases::MAX_TEXT`] bytes, not blank when `required`.
fn text_of(what: &str, text: &str, required: bool) -> Result<String, ApiError> {
    free_text(what, text)?;
    let text = text.trim();
    if (required && text.is_empty()) || text.len() > cases::MAX_TEXT {
        let least = if required { 1 } else { 0 };
        return Err(ApiError::BadRequest(format!(
            "{what}: {least} to {} bytes",
            cases::MAX_TEXT
        )));
    }
    Ok(text.to_owned())
}

/// `POST /v1/cases`: an auditor opens a case with a reason and a scope.
#[utoipa::path(post, path = "/v1/cases", tag = "auditors", request_body = OpenRequest,
    security(("access_token" = [])), responses(
    (status = 201, description = "Opened (audited as case.open).", body = CaseView),
    (status = 400, description = "No reason, or a malformed or unbounded scope.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn open<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<OpenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CaseView>), ApiError> {
    let request = json(body)?;
    let reason = text_of("reason", &request.reason, true)?;
    let scope = request.scope.canonical().map_err(ApiError::BadRequest)?;
    scope
        .check_breadth(state.limits().max_scope_days)
        .map_err(ApiError::BadRequest)?;
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).map_err(|_| ApiError::Unavailable)?;
    let id = hex::encode(id);
    let detail = cases::OpenDetail {
        reason,
        scope_sha256: scope.digest(),
        scope,
    };
    let detail = serde_json::to_value(&detail).map_err(|_| ApiError::Internal)?;
    audit(
        state.archive(),
        &person.id_text(),
        cases::OPEN,
        &cases::subject(&id),
        detail,
    )
    .await?;
    let case = load(&state, &id).await?;
    Ok((StatusCode::CREATED, Json(view(&state, case).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Cases opened at or after this leaf (the `next` of a previous page).
    #[serde(default, deserialize_with = "super::position")]
    from: u64,
    /// Only the cases in this state now (the page may then hold fewer than 100;
    /// follow `next` to the end).
    state: Option<cases::State>,
}

/// Cases, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CaseList {
    cases: Vec<CaseView>,
    /// Where the next page starts (`from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
}

const CASES_PER_PAGE: u32 = 100;

/// `GET /v1/cases`: an auditor's own cases; every case for an approver.
#[utoipa::path(get, path = "/v1/cases", tag = "auditors", params(ListQuery),
    security(("access_token" = [])), responses(
    (status = 200, description = "Up to 100 cases, oldest first.", body = CaseList),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an auditor or approver.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<CaseList>, ApiError> {
    let ListQuery { from, state: wanted } = query(params)?;
    let store = state.archive().log_store();
    let opened = store.audit_by_action(cases::OPEN, from, CASES_PER_PAGE).await?;
    let next = (opened.len() == CASES_PER_PAGE as usize).then(|| opened.last().map(|(leaf, _)| leaf + 1));
    let mut found = Vec::new();
    let mut known = People::new();
    for (_, event) in opened {
        let visible = person.role == Role::Approver || event.actor == person.id_text();
        if let (true, Some(id)) = (visible, event.subject.strip_prefix("case:")) {
            let case = load(&state, id).await?;
            if wanted.is_none_or(|w| case.state == w) {
                found.push(CaseView::of(state.archive().log_store(), case, &mut known).await?);
            }
        }
    }
    Ok(Json(CaseList {
        cases: found,
        next: next.flatten(),
    }))
}

/// `GET /v1/cases/{case}`: a case, its state and its whole history.
#[utoipa::path(get, path = "/v1/cases/{case}", tag = "auditors", params(("case" = String, Path, description = "The case id.")),
    security(("access_token" = [])), responses(
    (status = 200, description = "The case.", body = CaseView),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case, or not one of the caller's.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Its history does not match the log.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn show<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path(id): Path<String>,
) -> Result<Json<CaseView>, ApiError> {
    let case = load(&state, &id).await?;
    may_see(&person, &case)?;
    Ok(Json(view(&state, case).await?))
}

/// A transition of a case.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StepRequest {
    /// The reason or note (required to deny, revoke and close).
    #[serde(default)]
    note: String,
    /// Hours of access asked for (request) or granted (approve, at most those asked).
    #[serde(default)]
    hours: Option<u32>,
    /// The scope digest the approver reviewed (approve): it must be the case's.
    #[serde(default)]
    scope_sha256: Option<String>,
}

/// Hours of access asked for or granted: 1 to [`cases::MAX_GRANT_HOURS`], or 400.
fn hours_of(hours: Option<u32>) -> Result<u32, ApiError> {
    hours
        .filter(|h| (1..=cases::MAX_GRANT_HOURS).contains(h))
        .ok_or_else(|| ApiError::BadRequest(format!("hours: 1 to {}", cases::MAX_GRANT_HOURS)))
}

/// Makes the transition `action` on case `id` for `person`, after the checks its
/// role and the case's state allow; answers the case after it.
async fn step<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    person: &Person,
    id: &str,
    action: &'static str,
    request: StepRequest,
) -> Result<Case, ApiError> {
    let case = load(state, id).await?;
    may_see(person, &case)?;
    let actor = person.id_text();
    let is_opener = actor == case.opened_by;
    let note_required = matches!(action, cases::DENY | cases::REVOKE | cases::CLOSE);
    let mut detail = StepDetail {
        prev: case.head,
        note: text_of("note", &request.note, note_required)?,
        ..StepDetail::default()
    };
    match action {
        cases::REQUEST if !is_opener => {
            return Err(ApiError::Forbidden(
                "only the auditor who opened the case requests access".into(),
            ));
        }
        cases::REQUEST => detail.hours = Some(hours_of(request.hours)?),
        cases::APPROVE | cases::DENY if is_opener => {
            return Err(ApiError::Forbidden(
                "nobody approves or denies their own request".into(),
            ));
        }
        cases::APPROVE => {
            let offered = request.scope_sha256.as_deref().map(str::to_ascii_lowercase);
            if offered.as_deref() != Some(case.scope_sha256.as_str()) {
                return Err(ApiError::Conflict(
                    "scope_sha256 is not the case's scope digest: review the case's scope again".into(),
                ));
            }
            let at = now();
            let hours = match request.hours {
                Some(h) => Some(hours_of(Some(h))?),
                None => case.requested_hours,
            };
            detail.hours = hours;
            detail.scope_sha256 = offered;
            detail.until = hours.map(|h| at.0 + u64::from(h) * 3_600_000);
            return transition(state, case, &actor, action, detail, at).await;
        }
        cases::REVOKE | cases::CLOSE if !(is_opener || person.role == Role::Approver) => {
            return Err(ApiError::Forbidden(
                "only the case's auditor or an approver".into(),
            ));
        }
        _ => {}
    }
    transition(state, case, &actor, action, detail, now()).await
}

/// Checks the transition against the case's history as of `at`, records it, and
/// answers the case after it (409 if another transition won the race).
async fn transition<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    case: Case,
    actor: &str,
    action: &'static str,
    detail: StepDetail,
    at: UnixMillis,
) -> Result<Case, ApiError> {
    let subject = cases::subject(&case.id);
    let event = AuditEvent {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.clone(),
        detail: serde_json::to_string(&detail).map_err(|_| ApiError::Internal)?,
    };
    let mut after = case.clone();
    cases::apply(&mut after, &event, &detail).map_err(ApiError::Conflict)?;
    let leaf = state.archive().audit(event).await?;
    let after = load(state, &case.id).await?;
    if !after.history.iter().any(|s| s.leaf_index == leaf && s.effective) {
        return Err(ApiError::Conflict(
            "the case changed meanwhile; this step was recorded but took no effect: read the case again"
                .into(),
        ));
    }
    Ok(after)
}

macro_rules! transition_route {
    ($name:ident, $action:expr, $path:literal, $who:literal) => {
        #[doc = concat!("`POST ", $path, "`: ", $who)]
        #[utoipa::path(post, path = $path, tag = "auditors", request_body = StepRequest,
            params(("case" = String, Path, description = "The case id.")),
            security(("access_token" = [])), responses(
            (status = 200, description = "The case after the step (audited, a log leaf).", body = CaseView),
            (status = 400, description = "A malformed request.", body = Problem, content_type = "application/problem+json"),
            (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
            (status = 403, description = "This person may not take this step.", body = Problem, content_type = "application/problem+json"),
            (status = 404, description = "No such case.", body = Problem, content_type = "application/problem+json"),
            (status = 409, description = "Not allowed from the case's state, another scope, or another step won a race.", body = Problem, content_type = "application/problem+json")))]
        pub(super) async fn $name<L: CaseStore, B: BlobStore>(
            state: State<L, B>,
            Extension(person): Extension<Person>,
            Path(id): Path<String>,
            body: Result<Json<StepRequest>, JsonRejection>,
        ) -> Result<Json<CaseView>, ApiError> {
            let case = step(&state, &person, &id, $action, json(body)?).await?;
            Ok(Json(view(&state, case).await?))
        }
    };
}

transition_route!(
    request,
    cases::REQUEST,
    "/v1/cases/{case}/request",
    "the case's auditor asks for access for `hours` (1 to 720)."
);
transition_route!(
    approve,
    cases::APPROVE,
    "/v1/cases/{case}/approve",
    "an approver other than the requester grants access for `hours` (at most those asked), naming the scope digest reviewed."
);
transition_route!(
    deny,
    cases::DENY,
    "/v1/cases/{case}/deny",
    "an approver other than the requester denies the request, with a note."
);
transition_route!(
    revoke,
    cases::REVOKE,
    "/v1/cases/{case}/revoke",
    "the case's auditor or an approver ends a running grant, with a note."
);
transition_route!(
    close,
    cases::CLOSE,
    "/v1/cases/{case}/close",
    "the case's auditor or an approver closes the case for good, with a note."
);

/// The case, if `person` opened it and it grants access now; 403 otherwise.
async fn granted<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    person: &Person,
    id: &str,
) -> Result<Case, ApiError> {
    let case = load(state, id).await?;
    if person.id_text() != case.opened_by {
        return Err(ApiError::Forbidden(
            "only the auditor who opened the case reads under it".into(),
        ));
    }
    if !case.grants(now()) {
        return Err(ApiError::Forbidden(format!(
            "the case grants no access now (it is {}): request access and have it approved",
            case.state
        )));
    }
    Ok(case)
}

/// Records a fetch under `case`'s running grant; the detail gains `grant`, the leaf of
/// the approval the fetch stands on (the case's head while it grants access).
async fn record_fetch<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    person: &Person,
    case: &Case,
    mut detail: serde_json::Value,
) -> Result<(), ApiError> {
    detail["grant"] = serde_json::json!(case.head);
    audit(
        state.archive(),
        &person.id_text(),
        cases::FETCH,
        &cases::fetch_subject(&case.id),
        detail,
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CaseRecordsQuery {
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `GET /v1/cases/{case}/records`: the records in the case's scope, oldest capture
/// first, under a running grant. Audited as `case.fetch` (part `list`).
#[utoipa::path(get, path = "/v1/cases/{case}/records", tag = "auditors",
    params(("case" = String, Path, description = "The case id."), CaseRecordsQuery),
    security(("access_token" = [])), responses(
    (status = 200, description = "One page of in-scope records.", body = RecordPage),
    (status = 400, description = "A malformed cursor or limit.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not the case's auditor, or no running grant.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn records<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path(id): Path<String>,
    params: Result<Query<CaseRecordsQuery>, QueryRejection>,
) -> Result<Json<RecordPage>, ApiError> {
    let params = query(params)?;
    let case = granted(&state, &person, &id).await?;
    let search = SearchRequest {
        sort: Some("captured".into()),
        order: Some("asc".into()),
        limit: params.limit,
        cursor: params.cursor.clone(),
        count: true,
        ..SearchRequest::default()
    };
    let mut query = search.into_query()?;
    query.filter = case.scope.filter().map_err(|_| ApiError::Internal)?;
    record_fetch(
        &state,
        &person,
        &case,
        serde_json::json!({ "part": "list", "cursor": params.cursor }),
    )
    .await?;
    Ok(Json(page(state.archive().log_store(), &query).await?))
}

/// The most records one listing names; a wider case is split into narrower ones.
const MAX_LISTING: usize = 1_000_000;

/// The records in a case's scope at a log size, committed to by a fetch event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Listing {
    /// The log size (a signed checkpoint's) the listing holds at: every record of the
    /// scope among the first `size` leaves.
    size: u64,
    /// How many records it names.
    count: u64,
    /// SHA-256 of `vellum/case-listing/v1\n` and `listing` (docs/formats.md).
    records_sha256: String,
    /// One line `RECORD_ID HEADER_SHA256` per record, sorted by record id.
    listing: String,
}

/// `POST /v1/cases/{case}/listing`: every record in the case's scope at the newest
/// checkpoint, under a running grant. The listing's digest is recorded as a
/// `case.fetch` event (part `listing`), so an export package can prove it holds every
/// record the case covered, and name any it leaves out.
#[utoipa::path(post, path = "/v1/cases/{case}/listing", tag = "auditors",
    params(("case" = String, Path, description = "The case id.")),
    security(("access_token" = [])), responses(
    (status = 200, description = "The listing (audited as case.fetch, part listing).", body = Listing),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not the case's auditor, or no running grant.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case, or the log is empty.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The scope holds more records than one listing names: open narrower cases.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn listing<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path(id): Path<String>,
) -> Result<Json<Listing>, ApiError> {
    let case = granted(&state, &person, &id).await?;
    let store = state.archive().log_store();
    let (size, _) = state
        .archive()
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::NotFound("the log is empty: no checkpoint yet".into()))?;
    let mut query = SearchRequest {
        sort: Some("logged".into()),
        order: Some("asc".into()),
        limit: Some(vellum_archive::search::MAX_PAGE),
        ..SearchRequest::default()
    }
    .into_query()?;
    query.filter = case.scope.filter().map_err(|_| ApiError::Internal)?;
    let mut records = Vec::new();
    'pages: loop {
        let page = store.search(&query).await?;
        for r in &page.records {
            if r.leaf_index >= size {
                break 'pages;
            }
            let entry = store.entry(r.leaf_index).await?.ok_or(ApiError::Internal)?;
            let header_sha256 = match LogEntry::from_bytes(&entry) {
                Ok(LogEntry::RecordAppended { header_sha256, .. }) => header_sha256,
                _ => {
                    tracing::error!(leaf = r.leaf_index, "a record's leaf is not its log entry");
                    return Err(ApiError::Internal);
                }
            };
            records.push((r.record_id.to_string(), hex::encode(header_sha256)));
            if records.len() > MAX_LISTING {
                return Err(ApiError::Conflict(format!(
                    "the case's scope holds more than {MAX_LISTING} records: open narrower cases"
                )));
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let listing = cases::listing_text(&records);
    let answer = Listing {
        size,
        count: records.len() as u64,
        records_sha256: cases::listing_digest(&listing),
        listing,
    };
    let detail = serde_json::json!({
        "part": "listing",
        "size": answer.size,
        "count": answer.count,
        "records_sha256": answer.records_sha256,
    });
    record_fetch(&state, &person, &case, detail).await?;
    Ok(Json(answer))
}

/// The stored record `record`, if it lies in the case's scope; 403 otherwise (and
/// for an unknown record, so a case cannot probe what exists outside it).
async fn in_scope<L: CaseStore, B: BlobStore>(
    state: &State<L, B>,
    case: &Case,
    record: &str,
) -> Result<vellum_archive::ports::StoredRecord, ApiError> {
    let outside = || ApiError::Forbidden("this record is outside the case's scope".into());
    let id =
        RecordId::parse(record).map_err(|_| ApiError::BadRequest("record: a record id (UUID)".into()))?;
    let stored = state.archive().record(id).await?.ok_or_else(outside)?;
    let header = UnverifiedHeader::parse(&stored.header)
        .map_err(|e| vellum_archive::StoreError::Integrity(format!("stored header of {id}: {e}")))?;
    let filter = case.scope.filter().map_err(|_| ApiError::Internal)?;
    if !filter.matches(header.archived_fields(), stored.received_at) {
        return Err(outside());
    }
    Ok(stored)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ProofQuery {
    /// Prove against the checkpoint of this size (the newest if absent), so every
    /// record of an export shares one checkpoint.
    #[serde(default, deserialize_with = "super::some_position")]
    size: Option<u64>,
}

/// A record's header and its inclusion proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct CaseRecord {
    record_id: String,
    leaf_index: u64,
    /// The header bytes as the device signed them, base64.
    header: String,
    /// The gateway's receipt time (Unix ms), in the log entry.
    received_at: u64,
    /// The `c2sp.org/tlog-proof@v1` of the record's leaf, with its entry and checkpoint.
    proof: String,
}

/// `GET /v1/cases/{case}/records/{record}`: an in-scope record's signed header and
/// inclusion proof. Audited as `case.fetch` (part `header`).
#[utoipa::path(get, path = "/v1/cases/{case}/records/{record}", tag = "auditors",
    params(("case" = String, Path, description = "The case id."), ("record" = String, Path, description = "The record id."), ProofQuery),
    security(("access_token" = [])), responses(
    (status = 200, description = "The header and its proof.", body = CaseRecord),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "No running grant, or the record is outside the scope.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case, or no checkpoint of that size.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn record<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path((id, record)): Path<(String, String)>,
    params: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<CaseRecord>, ApiError> {
    let ProofQuery { size } = query(params)?;
    let case = granted(&state, &person, &id).await?;
    let stored = in_scope(&state, &case, &record).await?;
    let proof = super::log::inclusion_proof(&state, stored.leaf_index, size).await?;
    let detail = serde_json::json!({ "part": "header", "record": stored.record_id.to_string() });
    record_fetch(&state, &person, &case, detail).await?;
    Ok(Json(CaseRecord {
        record_id: stored.record_id.to_string(),
        leaf_index: stored.leaf_index,
        header: STANDARD.encode(&stored.header),
        received_at: stored.received_at.0,
        proof: proof.to_text(),
    }))
}

/// `GET /v1/cases/{case}/records/{record}/body`: an in-scope record's sealed body
/// (age ciphertext the gateway cannot open). Audited as `case.fetch` (part `body`).
#[utoipa::path(get, path = "/v1/cases/{case}/records/{record}/body", tag = "auditors",
    params(("case" = String, Path, description = "The case id."), ("record" = String, Path, description = "The record id.")),
    security(("access_token" = [])), responses(
    (status = 200, description = "The sealed body (age v1).", content_type = "application/octet-stream"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "No running grant, or the record is outside the scope.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn body<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path((id, record)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let case = granted(&state, &person, &id).await?;
    let stored = in_scope(&state, &case, &record).await?;
    // Reads have a budget of their own, never the captures'.
    let permit = state.reserve_read(person.account_id).await?;
    let detail = serde_json::json!({ "part": "body", "record": stored.record_id.to_string() });
    record_fetch(&state, &person, &case, detail).await?;
    // A revocation recorded between the check and the fetch's own leaf wins.
    granted(&state, &person, &id).await?;
    let len = stored.body.len;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        streamed_body(state.0.clone(), stored, permit),
    )
        .into_response())
}

/// A stored body sent in bounded chunks as the client takes them: the blob store fills
/// a channel of two chunks, the response drains it. A body that fails its digest on
/// the way is cut off (the client sees an incomplete response, and checks the digest
/// itself anyway) and logged. The read's share of the budget is held until the last
/// chunk is sent or the client is gone.
fn streamed_body<L: CaseStore, B: BlobStore>(
    gateway: std::sync::Arc<crate::Gateway<L, B>>,
    stored: vellum_archive::ports::StoredRecord,
    permit: crate::reads::ReadPermit,
) -> axum::body::Body {
    type Channel = http_body_util::channel::Channel<axum::body::Bytes, std::io::Error>;
    let (mut sender, body) = Channel::new(1);
    tokio::spawn(async move {
        let _permit = permit;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let reading = gateway.archive().read_body(&stored, tx);
        // Owns the receiver: when the client is gone it ends, dropping the receiver,
        // and the read stops at its next chunk.
        let forwarding = async move {
            while let Some(chunk) = rx.recv().await {
                sender.send_data(chunk.into()).await.ok()?;
            }
            Some(sender)
        };
        let (read, sender) = tokio::join!(reading, forwarding);
        if let Err(e) = read {
            tracing::error!(record = %stored.record_id, error = %e, "a body read back failed");
            if let Some(sender) = sender {
                sender.abort(std::io::Error::other("the stored body failed its check"));
            }
        }
    });
    axum::body::Body::new(body)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FetchesQuery {
    /// The first leaf index (default 0).
    #[serde(default, deserialize_with = "super::position")]
    from: u64,
}

/// `GET /v1/cases/{case}/fetches`: the case's fetch events (`case.fetch`, subject
/// `case:ID:fetch`), up to 1000 from leaf `from`, for the case's auditor (to prove in
/// an export package what was read under the grant) and approvers.
#[utoipa::path(get, path = "/v1/cases/{case}/fetches", tag = "auditors",
    params(("case" = String, Path, description = "The case id."), FetchesQuery),
    security(("access_token" = [])), responses(
    (status = 200, description = "One page of fetch events.", body = AuditPage),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such case, or not one of the caller's.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn fetches<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    Path(id): Path<String>,
    params: Result<Query<FetchesQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let FetchesQuery { from } = query(params)?;
    let case = load(&state, &id).await?;
    may_see(&person, &case)?;
    let store = state.archive().log_store();
    let events = store.audit_of(&cases::fetch_subject(&id), from, 1000).await?;
    Ok(Json(AuditPage::of(events, 1000)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// The first leaf index (default 0).
    #[serde(default, deserialize_with = "super::position")]
    from: u64,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Only events about this subject (`case:ID`, `case:ID:fetch`, an account id…).
    subject: Option<String>,
}

/// One audit event with its leaf.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct AuditRow {
    /// Its leaf in the log: prove it with `GET /v1/log/proof/inclusion?index=`.
    leaf_index: u64,
    /// Unix ms.
    at: u64,
    actor: String,
    action: String,
    subject: String,
    /// The detail as recorded (JSON text: the bytes the leaf commits to).
    detail: String,
}

/// A page of the audit trail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct AuditPage {
    events: Vec<AuditRow>,
    /// The `from` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
}

/// `GET /v1/audit`: the audit trail in log order, for records officers and
/// administrators. Each event is a leaf of the log; its canonical bytes are in
/// `docs/formats.md`, so anyone can prove it.
#[utoipa::path(get, path = "/v1/audit", tag = "auditors", params(AuditQuery),
    security(("access_token" = [])), responses(
    (status = 200, description = "One page of events.", body = AuditPage),
    (status = 400, description = "A malformed query.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an approver or administrator.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn trail<L: CaseStore, B: BlobStore>(
    state: State<L, B>,
    params: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let AuditQuery { from, limit, subject } = query(params)?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit: 1 to 1000".into()));
    }
    let store = state.archive().log_store();
    let events = match subject {
        Some(subject) => store.audit_of(&subject, from, limit).await?,
        None => store.audit_from(from, limit).await?,
    };
    Ok(Json(AuditPage::of(events, limit)))
}

impl AuditPage {
    /// A page of `events`, read `limit` at most.
    fn of(events: Vec<(u64, AuditEvent)>, limit: u32) -> Self {
        let next = (events.len() == limit as usize)
            .then(|| events.last().map(|(leaf, _)| leaf + 1))
            .flatten();
        AuditPage {
            events: events
                .into_iter()
                .map(|(leaf, e)| AuditRow {
                    leaf_index: leaf,
                    at: e.at.0,
                    actor: e.actor,
                    action: e.action,
                    subject: e.subject,
                    detail: e.detail,
                })
                .collect(),
            next,
        }
    }
}
