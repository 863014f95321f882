//! Cases: an auditor's justified, scoped, time-limited access to records, approved by
//! a second person (invariant I7).
//!
//! A case has no table of its own: its history is the audit events whose subject is
//! `case:ID` (each a leaf of the log), and its state is [`fold`] over them, a pure
//! function anyone holding the trail can recompute. Every transition names the leaf
//! of the transition it follows (`prev`); of two transitions made at once from the
//! same state only the first in the log takes effect, and the other stays in the
//! history marked as superseded. The scope is fixed when the case opens; an approval
//! carries the SHA-256 of the scope the approver saw, so what was approved is exactly
//! what is enforced.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use vellum_archive::ports::AuditEvent;
use vellum_archive::search::{RecordFilter, TimeRange};
use vellum_protocol::blind::BlindToken;
use vellum_protocol::ids::{Custodian, UnixMillis};

/// The audit action of each transition.
pub const OPEN: &str = "case.open";
/// An access request.
pub const REQUEST: &str = "case.request";
/// An approval.
pub const APPROVE: &str = "case.approve";
/// A denial.
pub const DENY: &str = "case.deny";
/// A revocation of an approved grant.
pub const REVOKE: &str = "case.revoke";
/// The end of a case.
pub const CLOSE: &str = "case.close";
/// A fetch of a record's header, proof or sealed body under a case (subject
/// `case:ID:fetch`, not a transition).
pub const FETCH: &str = "case.fetch";

/// The actor of the steps the gateway records itself (a grant ending because its
/// approver was disabled or lost the role).
pub const GATEWAY_ACTOR: &str = "gateway";

/// The domain of a listing's digest ([`listing_digest`]).
pub const LISTING_DOMAIN: &[u8] = b"vellum/case-listing/v1\n";

/// The text of a listing: the records in a case's scope at a log size, one line
/// `RECORD_ID HEADER_SHA256` each (the record id as a lowercase UUID, the digest in
/// 64 lowercase hex digits), sorted by record id, each line ending in `\n`.
pub fn listing_text(records: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = records.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::with_capacity(sorted.len() * 102);
    for (record, header_sha256) in sorted {
        text.push_str(record);
        text.push(' ');
        text.push_str(header_sha256);
        text.push('\n');
    }
    text
}

/// The lines of a listing text, each `(record id, header SHA-256)`; refused unless it
/// is exactly what [`listing_text`] writes.
pub fn parse_listing(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.split_terminator('\n').enumerate() {
        let bad = || format!("listing line {}: not `RECORD_ID HEADER_SHA256`", n + 1);
        let (record, digest) = line.split_once(' ').ok_or_else(bad)?;
        let canonical_id = vellum_protocol::ids::RecordId::parse(record)
            .map(|id| id.to_string() == record)
            .unwrap_or(false);
        let hex_digest = digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical_id || !hex_digest {
            return Err(bad());
        }
        if out.last().is_some_and(|(last, _)| last.as_str() >= record) {
            return Err(format!("listing line {}: not sorted by record id", n + 1));
        }
        out.push((record.to_owned(), digest.to_owned()));
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the listing's last line has no line feed".into());
    }
    Ok(out)
}

/// SHA-256 of [`LISTING_DOMAIN`] and a listing's text, in hex: what the listing's
/// fetch event commits to.
pub fn listing_digest(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(LISTING_DOMAIN);
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// The domain of a scope's digest.
pub const SCOPE_DOMAIN: &[u8] = b"vellum/case-scope/v1\n";
/// The longest grant an approver may give, in hours (30 days).
pub const MAX_GRANT_HOURS: u32 = 720;
/// The longest capture-time range, in days, of a scope that names no custodian or
/// participant, by default ([`Scope::check_breadth`]).
pub const DEFAULT_MAX_SCOPE_DAYS: u32 = 366;
const DAY_MS: u64 = 86_400_000;
/// The longest reason or note, in bytes.
pub const MAX_TEXT: usize = 2000;

/// The audit subject of case `id`.
pub fn subject(id: &str) -> String {
    format!("case:{id}")
}

/// The audit subject of case `id`'s fetches.
pub fn fetch_subject(id: &str) -> String {
    format!("case:{id}:fetch")
}

/// Whether `id` has the form of a case id (32 lowercase hex digits).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a case may read: records of these custodians (any, if empty), captured in
/// `[captured_from, captured_to)`, carrying at least one of these blind tokens (any
/// record, if empty). It names custodians or tokens, or a time range with both ends:
/// a case never covers the whole archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Custodians, sorted.
    #[serde(default)]
    pub custodians: Vec<String>,
    /// First capture millisecond included.
    #[serde(default)]
    pub captured_from: Option<u64>,
    /// First capture millisecond excluded.
    #[serde(default)]
    pub captured_to: Option<u64>,
    /// Blind tokens (32 lowercase hex digits each), sorted.
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl Scope {
    /// Checks the scope and puts it in canonical form (sorted, de-duplicated, tokens
    /// in lowercase).
    pub fn canonical(mut self) -> Result<Self, String> {
        for c in &self.custodians {
            Custodian::new(c).map_err(|e| format!("scope custodian {c:?}: {e}"))?;
        }
        for t in &mut self.tokens {
            t.make_ascii_lowercase();
            parse_token(t)?;
        }
        for list in [&mut self.custodians, &mut self.tokens] {
            list.sort_unstable();
            list.dedup();
        }
        let filter = self.filter()?;
        filter.check()?;
        let bounded_time = self.captured_from.is_some() && self.captured_to.is_some();
        if self.custodians.is_empty() && self.tokens.is_empty() && !bounded_time {
            return Err(
                "a scope names custodians, blind tokens or a time range with both ends: never the whole archive".into(),
            );
        }
        Ok(self)
    }

    /// Refuses a scope that covers the whole archive in substance: one that names no
    /// custodian and no blind token must give a capture-time range with both ends,
    /// at most `max_days` long (`captured_from` 0 is an open start, as absent is).
    /// Checked when a case opens; a case opened before a limit was lowered keeps its
    /// scope.
    pub fn check_breadth(&self, max_days: u32) -> Result<(), String> {
        if !self.custodians.is_empty() || !self.tokens.is_empty() {
            return Ok(());
        }
        let from = self.captured_from.filter(|f| *f > 0);
        let (Some(from), Some(to)) = (from, self.captured_to) else {
            return Err("a scope that names no custodian or participant needs a capture-time range with both ends (--from and --to; a start of 0 is no start)".into());
        };
        let days = to.saturating_sub(from).div_ceil(DAY_MS);
        if days > u64::from(max_days) {
            return Err(format!(
                "the scope covers {days} days of every custodian; without a custodian or participant a scope covers at most {max_days} days"
            ));
        }
        Ok(())
    }

    /// The canonical JSON (fields in declaration order, no spaces).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of the domain and the canonical JSON, in hex: what an approval names.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(SCOPE_DOMAIN);
        h.update(self.to_json().as_bytes());
        hex::encode(h.finalize())
    }

    /// The scope as a search filter.
    pub fn filter(&self) -> Result<RecordFilter, String> {
        let custodians = self
            .custodians
            .iter()
            .map(|c| Custodian::new(c).map_err(|e| format!("scope custodian {c:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let tokens = self
            .tokens
            .iter()
            .map(|t| parse_token(t))
            .collect::<Result<_, _>>()?;
        Ok(RecordFilter {
            custodians,
            tokens,
            captured: TimeRange {
                from: self.captured_from.map(UnixMillis),
                to: self.captured_to.map(UnixMillis),
            },
            ..RecordFilter::default()
        })
    }
}

/// A blind token from 32 hex digits.
pub fn parse_token(text: &str) -> Result<BlindToken, String> {
    let bad = || format!("blind token {text:?}: 32 hex digits expected");
    let bytes = hex::decode(text).map_err(|_| bad())?;
    Ok(BlindToken(bytes.try_into().map_err(|_| bad())?))
}

/// The detail of a `case.open` event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenDetail {
    /// Why the case exists (a FOIA request number, a matter, an exam).
    pub reason: String,
    /// What it may read.
    pub scope: Scope,
    /// [`Scope::digest`].
    pub scope_sha256: String,
}

/// The detail of every later transition.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepDetail {
    /// The leaf of the transition this one follows.
    pub prev: u64,
    /// The reason or note given.
    #[serde(default)]
    pub note: String,
    /// Requested or granted hours (request, approve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    /// The scope digest the approver saw (approve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_sha256: Option<String>,
    /// When the grant ends, Unix milliseconds (approve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// Where a case stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Opened; no access requested yet.
    Open,
    /// Access requested, awaiting an approver.
    Requested,
    /// Access granted until `grant_until` (expired once that passes).
    Approved,
    /// The request was denied; the auditor may request again.
    Denied,
    /// The grant was revoked; the auditor may request again.
    Revoked,
    /// The grant ran out; the auditor may request again.
    Expired,
    /// Closed for good.
    Closed,
}

impl std::fmt::Display for State {
    /// The state as the API names it (`requested`, `approved`, …).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Open => "open",
            State::Requested => "requested",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Revoked => "revoked",
            State::Expired => "expired",
            State::Closed => "closed",
        })
    }
}

/// One step of a case's history.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Step {
    /// Its leaf in the log (also its audit id).
    pub leaf_index: u64,
    /// The action (`case.open`, `case.request`, …).
    pub action: String,
    /// The account that took it (hex id).
    pub actor: String,
    /// When, Unix milliseconds.
    pub at: u64,
    /// The event's detail as recorded (JSON text: the bytes its leaf commits to, so
    /// anyone can rebuild the event and prove it in the log).
    pub detail: String,
    /// Whether it took effect (false: it followed a transition another had already
    /// superseded, or was not allowed from the state it met).
    pub effective: bool,
}

/// A case as its history makes it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Case {
    /// The case id.
    pub id: String,
    /// The auditor who opened it (hex account id), the only one who may request.
    pub opened_by: String,
    /// When, Unix milliseconds.
    pub opened_at: u64,
    /// Why.
    pub reason: String,
    /// What it may read.
    pub scope: Scope,
    /// The scope's digest.
    pub scope_sha256: String,
    /// Where it stands (at the time of reading).
    pub state: State,
    /// The approver of the current or last grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When the current or last grant ends, Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<u64>,
    /// The hours asked for by the pending or last request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_hours: Option<u32>,
    /// The leaf of the last effective transition: what the next one names as `prev`.
    pub head: u64,
    /// Every transition, in log order.
    pub history: Vec<Step>,
}

impl Case {
    /// Whether the case grants access at `now`.
    pub fn grants(&self, now: UnixMillis) -> bool {
        self.state == State::Approved && self.grant_until.is_some_and(|u| now.0 < u)
    }
}

/// Recomputes case `id` from its events (leaf order), as of time `now`. Fails if the
/// first event is not a well-formed opening whose scope matches its digest.
pub fn fold(id: &str, events: &[(u64, AuditEvent)], now: UnixMillis) -> Result<Case, String> {
    let ((first_leaf, first), rest) = events
        .split_first()
        .ok_or_else(|| format!("case {id} has no history"))?;
    if first.action != OPEN {
        return Err(format!("case {id} does not begin with {OPEN}"));
    }
    let open: OpenDetail =
        serde_json::from_str(&first.detail).map_err(|e| format!("case {id}: opening detail: {e}"))?;
    let scope = open.scope.clone().canonical()?;
    if scope != open.scope || scope.digest() != open.scope_sha256 {
        return Err(format!("case {id}: the recorded scope does not match its digest"));
    }
    let mut case = Case {
        id: id.to_owned(),
        opened_by: first.actor.clone(),
        opened_at: first.at.0,
        reason: open.reason,
        scope_sha256: open.scope_sha256,
        scope,
        state: State::Open,
        approved_by: None,
        grant_until: None,
        requested_hours: None,
        head: *first_leaf,
        history: vec![step(*first_leaf, first, true)],
    };
    for (leaf, event) in rest {
        let effective = serde_json::from_str::<StepDetail>(&event.detail)
            .ok()
            .filter(|d| d.prev == case.head)
            .is_some_and(|d| apply(&mut case, event, &d).is_ok());
        if effective {
            case.head = *leaf;
        }
        case.history.push(step(*leaf, event, effective));
    }
    if case.state == State::Approved && !case.grants(now) {
        case.state = State::Expired;
    }
    Ok(case)
}

fn step(leaf: u64, event: &AuditEvent, effective: bool) -> Step {
    Step {
        leaf_index: leaf,
        action: event.action.clone(),
        actor: event.actor.clone(),
        at: event.at.0,
        detail: event.detail.clone(),
        effective,
    }
}

/// Applies one transition to `case`, if the state and the actor allow it. What the
/// actor's role allows is the gateway's check when the event is made; here, what the
/// history alone can tell: who opened, who requested, when grants end.
pub fn apply(case: &mut Case, event: &AuditEvent, detail: &StepDetail) -> Result<(), String> {
    let now = event.at;
    let state = if case.state == State::Approved && !case.grants(now) {
        State::Expired
    } else {
        case.state
    };
    let requester = event.actor == case.opened_by;
    match event.action.as_str() {
        REQUEST => {
            if !requester {
                return Err("only the auditor who opened the case requests access".into());
            }
            if !matches!(
                state,
                State::Open | State::Denied | State::Revoked | State::Expired
            ) {
                return Err(format!("access cannot be requested while the case is {state}"));
            }
            let hours = detail.hours.filter(|h| (1..=MAX_GRANT_HOURS).contains(h));
            let hours = hours.ok_or_else(|| format!("a request asks for 1 to {MAX_GRANT_HOURS} hours"))?;
            case.state = State::Requested;
            case.requested_hours = Some(hours);
        }
        APPROVE => {
            if requester {
                return Err("nobody approves their own request".into());
            }
            if state != State::Requested {
                return Err(format!("only a pending request is approved; the case is {state}"));
            }
            if detail.scope_sha256.as_deref() != Some(case.scope_sha256.as_str()) {
                return Err("the approval names another scope than the case's".into());
            }
            let asked = case.requested_hours.unwrap_or(0);
            let hours = detail.hours.filter(|h| (1..=asked).contains(h));
            let hours = hours.ok_or_else(|| match detail.hours {
                Some(given) if given > asked => {
                    format!("{given} hours is more than the {asked} hours requested: grant 1 to {asked}")
                }
                _ => format!("a grant lasts 1 to the {asked} hours requested"),
            })?;
            let until = now.0 + u64::from(hours) * 3_600_000;
            if detail.until != Some(until) {
                return Err("the grant's end does not match its hours".into());
            }
            case.state = State::Approved;
            case.approved_by = Some(event.actor.clone());
            case.grant_until = Some(until);
        }
        DENY => {
            if requester {
                return Err("nobody decides their own request".into());
            }
            if state != State::Requested {
                return Err(format!("only a pending request is denied; the case is {state}"));
            }
            case.state = State::Denied;
        }
        REVOKE => {
            if state != State::Approved {
                return Err(format!("only a running grant is revoked; the case is {state}"));
            }
            case.state = State::Revoked;
        }
        CLOSE => {
            if state == State::Closed {
                return Err("the case is already closed".into());
            }
            case.state = State::Closed;
        }
        other => return Err(format!("{other} is not a case transition")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDITOR: &str = "aa";
    const OFFICER: &str = "bb";

    fn event(at: u64, actor: &str, action: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            at: UnixMillis(at),
            actor: actor.into(),
            action: action.into(),
            subject: subject("c"),
            detail: detail.to_string(),
        }
    }

    fn scope() -> Scope {
        Scope {
            custodians: vec!["bob".into(), "alice".into()],
            captured_from: None,
            captured_to: Some(10),
            tokens: vec!["00112233445566778899AABBCCDDEEFF".into()],
        }
        .canonical()
        .unwrap()
    }

    fn opened() -> Vec<(u64, AuditEvent)> {
        let scope = scope();
        let detail =
            serde_json::json!({ "reason": "FOIA 1", "scope_sha256": scope.digest(), "scope": scope });
        vec![(5, event(1000, AUDITOR, OPEN, detail))]
    }

    fn step_detail(prev: u64) -> serde_json::Value {
        serde_json::json!({ "prev": prev, "note": "n", "hours": 2 })
    }

    fn approval(prev: u64, at: u64) -> serde_json::Value {
        serde_json::json!({ "prev": prev, "hours": 2, "until": at + 7_200_000, "scope_sha256": scope().digest() })
    }

    #[test]
    fn scopes_have_one_canonical_form_and_never_cover_everything() {
        let s = scope();
        assert_eq!(s.custodians, ["alice", "bob"]);
        assert_eq!(s.tokens, ["00112233445566778899aabbccddeeff"]);
        assert_eq!(
            s.to_json(),
            r#"{"custodians":["alice","bob"],"captured_from":null,"captured_to":10,"tokens":["00112233445566778899aabbccddeeff"]}"#
        );
        let empty = Scope {
            custodians: vec![],
            captured_from: None,
            captured_to: None,
            tokens: vec![],
        };
        assert!(empty.clone().canonical().is_err());
        let open_ended = Scope {
            captured_from: Some(0),
            ..empty.clone()
        };
        assert!(open_ended.canonical().is_err());
        let window = Scope {
            captured_from: Some(0),
            captured_to: Some(1),
            ..empty
        };
        assert!(window.canonical().is_ok());
        let too_late = Scope {
            captured_to: Some(u64::MAX),
            ..scope()
        };
        assert!(too_late.canonical().is_err());
        let bad = Scope {
            tokens: vec!["zz".into()],
            ..scope()
        };
        assert!(bad.canonical().is_err());
        let backwards = Scope {
            captured_from: Some(11),
            ..scope()
        };
        assert!(backwards.canonical().is_err());
    }

    #[test]
    fn a_scope_of_every_custodian_is_bounded_in_time() {
        let days = |from: Option<u64>, to: Option<u64>| Scope {
            custodians: vec![],
            captured_from: from,
            captured_to: to,
            tokens: vec![],
        };
        let start = 1_700_000_000_000;
        assert!(
            days(Some(start), Some(start + 366 * DAY_MS))
                .check_breadth(366)
                .is_ok()
        );
        let long = days(Some(start), Some(start + 366 * DAY_MS + 1)).check_breadth(366);
        assert!(long.unwrap_err().contains("367 days"));
        // 0 is an open start: the whole past.
        assert!(days(Some(0), Some(start)).check_breadth(366).is_err());
        assert!(days(Some(0), Some(DAY_MS)).check_breadth(366).is_err());
        assert!(days(None, Some(start)).check_breadth(366).is_err());
        // Naming a custodian or a participant bounds it otherwise.
        let named = Scope {
            custodians: vec!["bob".into()],
            ..days(Some(0), Some(start))
        };
        assert!(named.check_breadth(366).is_ok());
        assert!(scope().check_breadth(1).is_ok());
    }

    #[test]
    fn a_listing_has_one_text_and_one_digest() {
        let a = ("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00".to_owned(), "ab".repeat(32));
        let b = ("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a01".to_owned(), "cd".repeat(32));
        let text = listing_text(&[b.clone(), a.clone(), b.clone()]);
        assert_eq!(text, format!("{} {}\n{} {}\n", a.0, a.1, b.0, b.1));
        assert_eq!(parse_listing(&text).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(listing_text(&[]), "");
        assert!(parse_listing("").unwrap().is_empty());
        // The digest is of the domain and the text: another order, another digest.
        assert_ne!(listing_digest(&text), listing_digest(""));
        let swapped = format!("{} {}\n{} {}\n", b.0, b.1, a.0, a.1);
        assert!(parse_listing(&swapped).is_err());
        for bad in [
            format!("{} {}", a.0, a.1),
            format!("{} {}\n", a.0.to_uppercase(), a.1),
            format!("{}  {}\n", a.0, a.1),
            format!("{} {}\n", a.0, a.1.to_uppercase()),
            format!("{} {}\n{} {}\n", a.0, a.1, a.0, a.1),
        ] {
            assert!(parse_listing(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_case_goes_from_request_to_grant_to_expiry() {
        let mut events = opened();
        events.push((6, event(2000, AUDITOR, REQUEST, step_detail(5))));
        let case = fold("c", &events, UnixMillis(2001)).unwrap();
        assert_eq!(
            (case.state, case.head, case.requested_hours),
            (State::Requested, 6, Some(2))
        );
        events.push((9, event(3000, OFFICER, APPROVE, approval(6, 3000))));
        let case = fold("c", &events, UnixMillis(3001)).unwrap();
        assert_eq!(case.state, State::Approved);
        assert!(case.grants(UnixMillis(3000 + 7_199_999)));
        let later = fold("c", &events, UnixMillis(3000 + 7_200_000)).unwrap();
        assert_eq!(later.state, State::Expired);
        assert!(!later.grants(UnixMillis(3000 + 7_200_000)));
    }

    #[test]
    fn refused_and_racing_transitions_take_no_effect() {
        let mut events = opened();
        events.push((6, event(2000, AUDITOR, REQUEST, step_detail(5))));
        // The requester approving: recorded, not effective.
        events.push((7, event(2100, AUDITOR, APPROVE, approval(6, 2100))));
        // A denial and an approval racing from the same state: the first wins.
        events.push((8, event(2200, OFFICER, DENY, step_detail(6))));
        events.push((9, event(2300, OFFICER, APPROVE, approval(6, 2300))));
        let case = fold("c", &events, UnixMillis(2400)).unwrap();
        assert_eq!(case.state, State::Denied);
        let effective: Vec<bool> = case.history.iter().map(|s| s.effective).collect();
        assert_eq!(effective, [true, true, false, true, false]);
        // Approving more hours than requested, or with another scope: not effective.
        events.push((10, event(2400, AUDITOR, REQUEST, step_detail(8))));
        let long = serde_json::json!({ "prev": 10, "hours": 3, "until": 2500 + 10_800_000, "scope_sha256": scope().digest() });
        events.push((11, event(2500, OFFICER, APPROVE, long)));
        let other =
            serde_json::json!({ "prev": 10, "hours": 2, "until": 2600 + 7_200_000, "scope_sha256": "00" });
        events.push((12, event(2600, OFFICER, APPROVE, other)));
        let case = fold("c", &events, UnixMillis(2700)).unwrap();
        assert_eq!((case.state, case.head), (State::Requested, 10));
    }

    #[test]
    fn a_tampered_opening_is_refused() {
        let mut events = opened();
        let mut detail: serde_json::Value = serde_json::from_str(&events[0].1.detail).unwrap();
        detail["scope"]["custodians"] = serde_json::json!(["alice", "bob", "carol"]);
        events[0].1.detail = detail.to_string();
        assert!(fold("c", &events, UnixMillis(2000)).is_err());
        assert!(fold("c", &[], UnixMillis(0)).is_err());
    }
}
