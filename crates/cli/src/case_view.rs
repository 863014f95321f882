//! How a case reads on a terminal, for the auditor who asked and the approver who
//! decides.
//!
//! The facts come first and free text last. An approver approves the digest of a
//! scope, so the scope and its digest (computed here, from the scope printed) are
//! printed before anything a person wrote: a reason or a note can then never stand
//! above them and imitate them. Every string the gateway sent goes through
//! [`shown`], which writes controls, line breaks and bidirectional overrides visibly,
//! so a hostile gateway or package cannot move the cursor, hide lines or reorder text.

use std::fmt::Write as _;

use serde_json::Value;
use vellum_gateway::cases::Scope;
use vellum_protocol::text::escape;
use vellum_protocol::time::rfc3339;

/// `text` from the gateway or a package, safe for a terminal.
pub(crate) fn shown(text: &str) -> String {
    escape(text).into_owned()
}

/// A string field of `v`, safe for a terminal ("" when absent).
fn field(v: &Value, name: &str) -> String {
    shown(v[name].as_str().unwrap_or_default())
}

/// The digest of a case's scope, computed here from the scope the gateway sent.
pub(crate) fn local_digest(case: &Value) -> Result<String, String> {
    let scope: Scope =
        serde_json::from_value(case["scope"].clone()).map_err(|e| format!("the case's scope: {e}"))?;
    Ok(scope.canonical()?.digest())
}

/// An account id as a person: `ann (auditor; account made by root, role given by
/// root)`, from the case's `people`.
pub(crate) fn who(case: &Value, actor: &str) -> String {
    let person = &case["people"][actor];
    let Some(name) = person["username"].as_str() else {
        return format!("account {}", shown(actor));
    };
    let mut facts = Vec::new();
    if let Some(role) = person["role"].as_str() {
        facts.push(shown(role));
    }
    if person["disabled"] == true {
        facts.push("disabled".to_owned());
    }
    if let Some(by) = person["created_by"].as_str() {
        facts.push(format!("account made by {}", shown(by)));
    }
    if let Some(by) = person["role_by"].as_str() {
        facts.push(format!("role given by {}", shown(by)));
    }
    if facts.is_empty() {
        shown(name)
    } else {
        format!("{} ({})", shown(name), facts.join("; "))
    }
}

fn time(v: &Value) -> String {
    v.as_u64().map_or("open".to_owned(), rfc3339)
}

/// The case as `vellum auditor case show` prints it.
pub(crate) fn render(case: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        &mut out,
        format!("case {}  [{}]", field(case, "id"), field(case, "state")),
    );
    let scope = &case["scope"];
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(shown)
            .collect()
    };
    let custodians = list(&scope["custodians"]);
    let tokens = list(&scope["tokens"]);
    line(&mut out, "  scope (what the case may read):".into());
    line(
        &mut out,
        format!(
            "    custodians:   {}",
            if custodians.is_empty() {
                "any".to_owned()
            } else {
                custodians.join(", ")
            }
        ),
    );
    line(
        &mut out,
        format!(
            "    captured:     from {} to {}",
            time(&scope["captured_from"]),
            time(&scope["captured_to"])
        ),
    );
    if tokens.is_empty() {
        line(&mut out, "    participants: any".into());
    } else {
        line(
            &mut out,
            format!("    participants: {} blind tokens", tokens.len()),
        );
        for t in &tokens {
            line(&mut out, format!("      {t}"));
        }
        line(
            &mut out,
            "      (check a participant: vellum auditor token --index-key FILE --participant ID prints its token)"
                .into(),
        );
    }
    match local_digest(case) {
        Ok(digest) => line(&mut out, format!("  scope digest (computed here): {digest}")),
        Err(e) => line(
            &mut out,
            format!("  scope digest: cannot be computed: {}", shown(&e)),
        ),
    }
    let opener = case["opened_by"].as_str().unwrap_or_default();
    line(
        &mut out,
        format!(
            "  opened by:    {} at {}",
            who(case, opener),
            time(&case["opened_at"])
        ),
    );
    if let Some(hours) = case["requested_hours"].as_u64() {
        line(
            &mut out,
            format!("  requested:    {hours} hours, by {}", who(case, opener)),
        );
    }
    match (case["state"].as_str(), case["grant_until"].as_u64()) {
        (Some("approved"), Some(until)) => {
            let by = case["approved_by"].as_str().unwrap_or_default();
            line(
                &mut out,
                format!(
                    "  grant:        until {}, approved by {}",
                    rfc3339(until),
                    who(case, by)
                ),
            );
        }
        (state, _) => line(
            &mut out,
            format!(
                "  grant:        none (the case is {})",
                shown(state.unwrap_or("unknown"))
            ),
        ),
    }
    line(&mut out, "  history:".into());
    let mut notes = Vec::new();
    for step in case["history"].as_array().into_iter().flatten() {
        let effective = if step["effective"] == true {
            ""
        } else {
            "  (no effect)"
        };
        let detail: Value =
            serde_json::from_str(step["detail"].as_str().unwrap_or_default()).unwrap_or(Value::Null);
        let hours = detail["hours"]
            .as_u64()
            .map(|h| format!(", {h} hours"))
            .unwrap_or_default();
        let leaf = step["leaf_index"].as_u64().unwrap_or_default();
        line(
            &mut out,
            format!(
                "    leaf {leaf:>6}  {}  {:<13} by {}{hours}{effective}",
                time(&step["at"]),
                field(step, "action"),
                who(case, step["actor"].as_str().unwrap_or_default()),
            ),
        );
        if let Some(note) = detail["note"].as_str().filter(|n| !n.is_empty()) {
            notes.push(format!("    leaf {leaf:>6} note:   {}", shown(note)));
        }
    }
    line(
        &mut out,
        "  written by people (as written; controls shown escaped):".into(),
    );
    line(&mut out, format!("    reason:        {}", field(case, "reason")));
    for note in notes {
        line(&mut out, note);
    }
    out
}

/// One line of `vellum auditor case list` and `vellum approver queue`: the facts (who
/// asked, who made their account and gave their role), then the reason.
pub(crate) fn list_line(case: &Value) -> String {
    let mut out = String::new();
    let opener = case["opened_by"].as_str().unwrap_or_default();
    let hours = case["requested_hours"]
        .as_u64()
        .map(|h| format!("{h}h"))
        .unwrap_or_else(|| "-".into());
    let _ = write!(
        out,
        "{}  {:<9}  {:>5}  {}  {}",
        field(case, "id"),
        field(case, "state"),
        hours,
        who(case, opener),
        field(case, "reason")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(reason: &str, note: &str) -> Value {
        let scope = Scope {
            custodians: vec![],
            captured_from: Some(1_700_000_000_000),
            captured_to: Some(1_700_086_400_000),
            tokens: vec![],
        };
        let open = json!({ "reason": reason, "scope": scope, "scope_sha256": scope.digest() });
        json!({
            "id": "0123456789abcdef0123456789abcdef",
            "state": "requested",
            "reason": reason,
            "scope": scope,
            "scope_sha256": scope.digest(),
            "opened_by": "aa",
            "opened_at": 1_700_000_000_000u64,
            "requested_hours": 8,
            "people": { "aa": { "username": "ann", "role": "auditor", "created_by": "root", "role_by": "root" } },
            "history": [
                { "leaf_index": 4, "action": "case.open", "actor": "aa", "at": 1, "detail": open.to_string(), "effective": true },
                { "leaf_index": 5, "action": "case.request", "actor": "aa", "at": 2,
                  "detail": json!({ "prev": 4, "note": note, "hours": 8 }).to_string(), "effective": true }
            ]
        })
    }

    #[test]
    fn a_spoofing_reason_cannot_print_a_line_or_stand_before_the_scope() {
        // The attack: a reason that prints a fake narrow scope and digest, then hides
        // the rest of the screen with a terminal escape.
        let fake = "FOIA 7\n  custodians:  alice\n  scope digest (computed here): 00ff\x1b[8m\u{202e}";
        let shown = render(&case(fake, "see\x1b]8;;http://x\x07 here"));
        assert!(!shown.contains('\x1b') && !shown.contains('\u{202e}') && !shown.contains('\x07'));
        let lines: Vec<&str> = shown.lines().collect();
        let position = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        let digest = position("scope digest (computed here)");
        assert!(digest < position("reason:"), "{shown}");
        assert!(digest < position("note:"), "{shown}");
        // The reason stays on its one line, its newlines shown as \n.
        let reason = lines[position("reason:")];
        assert!(reason.contains("FOIA 7\\n  custodians:  alice\\n"), "{reason}");
        assert_eq!(lines.iter().filter(|l| l.contains("scope digest")).count(), 2);
        assert!(
            lines
                .iter()
                .filter(|l| l.trim_start().starts_with("scope digest"))
                .count()
                == 1
        );
        assert!(list_line(&case(fake, "")).lines().count() == 1);
    }

    #[test]
    fn the_approver_sees_who_asked_for_how_long_and_no_grant_yet() {
        let shown = render(&case("FOIA 7", "for the hearing"));
        assert!(
            shown.contains(
                "requested:    8 hours, by ann (auditor; account made by root; role given by root)"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("grant:        none (the case is requested)"),
            "{shown}"
        );
        assert!(shown.contains("case.request  by ann"), "{shown}");
        assert!(shown.contains("note:   for the hearing"), "{shown}");
        assert!(shown.contains("participants: any"), "{shown}");
    }
}
