//! Auditor access over the router and a real SQLite archive: metadata search with
//! keyset pages, cases with two-person approval, fetches held to the approved scope,
//! and a case history that must match the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::{Fixture, assert_problem, call, fixture, full_session, person};
use vellum_archive::Submission;
use vellum_archive::ports::{AccountChange, AccountStore as _, Role, SecretHash};
use vellum_protocol::blind::BlindToken;
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::LogEntry;
use vellum_protocol::seal::{self, Identity};
use vellum_tlog::proof::TlogProof;

const DAY: u64 = 86_400_000;
const T0: u64 = 1_764_000_000_000;
const CUSTODIANS: [&str; 3] = ["alice", "bob", "carol"];

fn token(n: u8) -> BlindToken {
    BlindToken([n; 16])
}

/// Archives 30 records: custodian `i % 3`, captured a day apart, each carrying
/// token 1 when `i % 2 == 0` and token 2 when `i % 5 == 0`; channel `sms` for
/// `i % 4 == 0`, else `signal`. Returns their ids in capture order.
async fn archive_records(f: &Fixture) -> Vec<RecordId> {
    let device = DeviceKey::generate();
    let device_id = DeviceId::parse(support::DEMO_DEVICE).unwrap();
    let recipient = Identity::generate().to_public();
    let mut ids = Vec::new();
    for i in 0..30u64 {
        let body = seal::seal(
            std::slice::from_ref(&recipient),
            format!("message {i}").as_bytes(),
        )
        .unwrap();
        let mut tokens = Vec::new();
        if i % 2 == 0 {
            tokens.push(token(1));
        }
        if i % 5 == 0 {
            tokens.push(token(2));
        }
        let fields = HeaderFields {
            record_id: RecordId::new_v7(T0 + i),
            device_id,
            custodian: Custodian::new(CUSTODIANS[(i % 3) as usize]).unwrap(),
            channel: Channel::new(if i % 4 == 0 { "sms" } else { "signal" }).unwrap(),
            captured_at: UnixMillis(T0 + i * DAY),
            epoch: Epoch(1),
            retention: RetentionClass::new("finra-6y").unwrap(),
            body: body.digest(),
            tokens,
        };
        let signed = fields.sign(&device).unwrap();
        let header = UnverifiedHeader::parse(signed.as_bytes())
            .unwrap()
            .verify(&device.public())
            .unwrap();
        f.gateway
            .archive()
            .append(Submission {
                header,
                body: body.into(),
            })
            .await
            .unwrap();
        ids.push(fields.record_id);
    }
    ids
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).expect(body)
}

/// The ids of a page of cases.
fn case_ids(body: &str) -> Vec<String> {
    let page = parse(body);
    let cases = page["cases"].as_array().expect(body);
    cases
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(f: &Fixture, token: &str, filter: Value) -> Value {
    let (status, _, body) = call(f, "POST", "/v1/records/search", token, Some(filter)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    parse(&body)
}

fn captured(page: &Value) -> Vec<u64> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["captured_at"].as_u64().unwrap() - T0) / DAY)
        .collect()
}

#[tokio::test]
async fn search_selects_by_header_fields_and_pages_by_keyset() {
    let f = fixture().await;
    archive_records(&f).await;
    let (_, auditor) = person(&f, "ann", Role::Auditor, 1).await;
    let t1 = hex::encode([1u8; 16]);
    let t2 = hex::encode([2u8; 16]);

    // Newest first by default.
    let all = search(&f, &auditor, json!({ "count": true })).await;
    assert_eq!(captured(&all), (0..30).rev().collect::<Vec<_>>());
    assert_eq!(
        (all["total"].as_u64(), all["total_more"].as_bool()),
        (Some(30), Some(false))
    );

    let bob = search(&f, &auditor, json!({ "custodians": ["bob"], "order": "asc" })).await;
    assert_eq!(captured(&bob), (0..30).filter(|i| i % 3 == 1).collect::<Vec<_>>());

    // Any of several tokens, each record once; with another field, both must hold.
    let either = search(&f, &auditor, json!({ "tokens": [t1, t2], "order": "asc" })).await;
    assert_eq!(
        captured(&either),
        (0..30).filter(|i| i % 2 == 0 || i % 5 == 0).collect::<Vec<_>>()
    );
    let carol_sms = search(
        &f,
        &auditor,
        json!({ "custodians": ["carol"], "channels": ["sms"], "tokens": [t1] }),
    )
    .await;
    assert_eq!(captured(&carol_sms), [20, 8]);
    let window = json!({ "captured_from": T0 + 3 * DAY, "captured_to": T0 + 6 * DAY, "order": "asc" });
    assert_eq!(captured(&search(&f, &auditor, window).await), [3, 4, 5]);

    // Keyset pages: 7 + 7 + 1 rows of token 1, in order, none twice, in both orders
    // and both sort keys.
    for (sort, order) in [
        ("captured", "asc"),
        ("captured", "desc"),
        ("logged", "asc"),
        ("logged", "desc"),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = json!({ "tokens": [t1], "limit": 7, "sort": sort, "order": order });
            if let Some(c) = &cursor {
                q["cursor"] = json!(c);
            }
            let page = search(&f, &auditor, q).await;
            seen.extend(captured(&page));
            pages += 1;
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut expected: Vec<u64> = (0..30).filter(|i| i % 2 == 0).collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!((seen, pages), (expected, 3), "{sort} {order}");
    }

    // Bad input is refused, and an admin cannot search.
    for bad in [
        json!({ "custodians": ["not valid!"] }),
        json!({ "tokens": ["abc"] }),
        json!({ "limit": 0 }),
        json!({ "cursor": "x" }),
        json!({ "sort": "sender" }),
        json!({ "captured_from": 10, "captured_to": 5 }),
        json!({ "captured_to": u64::MAX }),
        json!({ "cursor": "9223372036854775808.1" }),
        json!({ "body": "anything" }),
    ] {
        let answer = call(&f, "POST", "/v1/records/search", &auditor, Some(bad.clone())).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
    }
    // Each list within bounds, the whole too long to be the search's audit detail.
    let long = json!({
        "custodians": (0..256).map(|n| format!("{n:0>128}")).collect::<Vec<_>>(),
        "retention": (0..256).map(|n| format!("{n:0>64}")).collect::<Vec<_>>(),
        "channels": (0..256).map(|n| format!("{n:0>32}")).collect::<Vec<_>>(),
        "devices": (0..256).map(|n| format!("00000000-0000-4000-8000-{n:012}")).collect::<Vec<_>>(),
    });
    let answer = call(&f, "POST", "/v1/records/search", &auditor, Some(long)).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert!(answer.2.contains("search in parts"), "{}", answer.2);
    let (_, admin) = person(&f, "root", Role::Admin, 3).await;
    let answer = call(&f, "POST", "/v1/records/search", &admin, Some(json!({}))).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
}

async fn step(
    f: &Fixture,
    token: &str,
    case: &str,
    action: &str,
    body: Value,
) -> (StatusCode, String, String) {
    call(
        f,
        "POST",
        &format!("/v1/cases/{case}/{action}"),
        token,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_case_reads_only_its_approved_scope_for_its_time() {
    let f = fixture().await;
    let ids = archive_records(&f).await;
    let (ann_id, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (_, olga) = person(&f, "olga", Role::Approver, 2).await;
    let (_, root) = person(&f, "root", Role::Admin, 3).await;
    let (_, ben) = person(&f, "ben", Role::Auditor, 4).await;
    let t1 = hex::encode([1u8; 16]);

    // A scope must bound something; an approver cannot open a case.
    for unbounded in [
        json!({}),
        json!({ "captured_from": 0 }),
        json!({ "custodians": ["bob"], "captured_to": u64::MAX }),
    ] {
        let opening = json!({ "reason": "FOIA-7", "scope": unbounded });
        assert_problem(
            &call(&f, "POST", "/v1/cases", &ann, Some(opening)).await,
            StatusCode::BAD_REQUEST,
        );
    }
    let no_reason = json!({ "reason": " ", "scope": { "custodians": ["bob"] } });
    assert_problem(
        &call(&f, "POST", "/v1/cases", &ann, Some(no_reason)).await,
        StatusCode::BAD_REQUEST,
    );
    let opening = json!({ "reason": "FOIA-7", "scope": { "custodians": ["bob"], "tokens": [t1] } });
    let refused = call(&f, "POST", "/v1/cases", &olga, Some(opening.clone())).await;
    assert_problem(&refused, StatusCode::FORBIDDEN);

    let (status, _, body) = call(&f, "POST", "/v1/cases", &ann, Some(opening)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let case = parse(&body);
    let id = case["id"].as_str().unwrap().to_owned();
    let digest = case["scope_sha256"].as_str().unwrap().to_owned();
    assert_eq!(case["state"], "open");

    // Nothing is read before approval.
    let list = format!("/v1/cases/{id}/records");
    assert_problem(&call(&f, "GET", &list, &ann, None).await, StatusCode::FORBIDDEN);
    assert_problem(
        &call(&f, "POST", &format!("/v1/cases/{id}/listing"), &ann, None).await,
        StatusCode::FORBIDDEN,
    );

    // Approving before a request, denying one's own, hours out of range.
    let approval = json!({ "scope_sha256": digest, "note": "ok" });
    assert_problem(
        &step(&f, &olga, &id, "approve", approval.clone()).await,
        StatusCode::CONFLICT,
    );
    for bad in [json!({ "hours": 0 }), json!({}), json!({ "hours": 721 })] {
        assert_problem(
            &step(&f, &ann, &id, "request", bad).await,
            StatusCode::BAD_REQUEST,
        );
    }
    assert_problem(
        &step(&f, &ben, &id, "request", json!({ "hours": 8 })).await,
        StatusCode::NOT_FOUND,
    );
    let (status, _, body) = step(&f, &ann, &id, "request", json!({ "hours": 8, "note": "exam" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse(&body)["state"], "requested");

    // The approver's queue: the cases awaiting a decision, and only those.
    let (status, _, body) = call(&f, "GET", "/v1/cases?state=requested", &olga, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(case_ids(&body), [id.as_str()]);
    let (status, _, body) = call(&f, "GET", "/v1/cases?state=approved", &olga, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(case_ids(&body).is_empty(), "{body}");
    assert_problem(
        &call(&f, "GET", "/v1/cases?state=pending", &olga, None).await,
        StatusCode::BAD_REQUEST,
    );

    // The requester cannot approve (not an approver), nor can an admin; an approver
    // must name the scope digest of the case.
    assert_problem(
        &step(&f, &ann, &id, "approve", approval.clone()).await,
        StatusCode::FORBIDDEN,
    );
    assert_problem(
        &step(&f, &root, &id, "approve", approval.clone()).await,
        StatusCode::FORBIDDEN,
    );
    let forged = json!({ "scope_sha256": hex::encode([0u8; 32]) });
    assert_problem(
        &step(&f, &olga, &id, "approve", forged).await,
        StatusCode::CONFLICT,
    );
    let too_long = json!({ "scope_sha256": digest, "hours": 9 });
    assert_problem(
        &step(&f, &olga, &id, "approve", too_long).await,
        StatusCode::CONFLICT,
    );
    let (status, _, body) = step(&f, &olga, &id, "approve", approval.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let approved = parse(&body);
    assert_eq!(approved["state"], "approved");
    let until = approved["grant_until"].as_u64().unwrap();
    assert!(until > support::now_ms() + 7 * 3_600_000 && until <= support::now_ms() + 8 * 3_600_000);

    // The listing: exactly the in-scope records, each with its header digest, under a
    // digest the fetch event records.
    let (status, _, body) = call(&f, "POST", &format!("/v1/cases/{id}/listing"), &ann, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listing = parse(&body);
    let text = listing["listing"].as_str().unwrap();
    let listed = vellum_gateway::cases::parse_listing(text).unwrap();
    let mut in_scope: Vec<String> = (0..30u64)
        .filter(|i| i % 3 == 1 && i % 2 == 0)
        .map(|i| ids[i as usize].to_string())
        .collect();
    in_scope.sort();
    assert_eq!(
        listed.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
        in_scope
    );
    assert_eq!(listing["count"].as_u64(), Some(in_scope.len() as u64));
    assert_eq!(
        listing["records_sha256"].as_str(),
        Some(vellum_gateway::cases::listing_digest(text).as_str())
    );
    for (record, digest) in &listed {
        let stored = f
            .gateway
            .archive()
            .record(RecordId::parse(record).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&hex::encode(Sha256::digest(&stored.header)), digest);
    }
    assert_problem(
        &call(&f, "POST", &format!("/v1/cases/{id}/listing"), &ben, None).await,
        StatusCode::FORBIDDEN,
    );

    // Exactly the in-scope records: bob's with token 1.
    let (status, _, body) = call(&f, "GET", &list, &ann, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = parse(&body);
    let expected: Vec<u64> = (0..30).filter(|i| i % 3 == 1 && i % 2 == 0).collect();
    assert_eq!(captured(&page), expected);
    assert_eq!(page["total"].as_u64(), Some(expected.len() as u64));

    // Each fetched header proves its leaf; each body matches the header's digest.
    let checkpoint = f.gateway.archive().latest_checkpoint().await.unwrap().unwrap();
    for i in &expected {
        let record = ids[*i as usize];
        let uri = format!("/v1/cases/{id}/records/{record}?size={}", checkpoint.0);
        let (status, _, body) = call(&f, "GET", &uri, &ann, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer = parse(&body);
        let header = STANDARD.decode(answer["header"].as_str().unwrap()).unwrap();
        let proof = TlogProof::parse(answer["proof"].as_str().unwrap().as_bytes()).unwrap();
        let entry = LogEntry::RecordAppended {
            record_id: record,
            header_sha256: Sha256::digest(&header).into(),
            received_at: UnixMillis(answer["received_at"].as_u64().unwrap()),
        };
        let verified = proof.verify(&f.log_key, &entry.leaf_hash()).unwrap();
        assert_eq!(
            (verified.size(), proof.extra.as_deref()),
            (checkpoint.0, Some(entry.to_bytes().as_slice()))
        );
        let request = axum::http::Request::get(format!("/v1/cases/{id}/records/{record}/body"))
            .header("authorization", format!("Bearer {ann}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let (status, content_type, sealed) = support::send_bytes(&f.app, request).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/octet-stream")
        );
        let claimed = UnverifiedHeader::parse(&header).unwrap().body_digest();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&sealed)), claimed.sha256);
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    }

    // Outside the scope, an unknown record, another auditor: refused.
    for outside in [ids[0], ids[1] /* bob, no token 1 */, ids[3] /* alice */] {
        for part in ["", "/body"] {
            let uri = format!("/v1/cases/{id}/records/{outside}{part}");
            assert_problem(&call(&f, "GET", &uri, &ann, None).await, StatusCode::FORBIDDEN);
        }
    }
    let unknown = RecordId::new_v7(T0);
    let uri = format!("/v1/cases/{id}/records/{unknown}");
    assert_problem(&call(&f, "GET", &uri, &ann, None).await, StatusCode::FORBIDDEN);
    assert_problem(&call(&f, "GET", &list, &ben, None).await, StatusCode::FORBIDDEN);

    // Revoked: nothing more is read. A new request can be approved again.
    let (status, _, body) = step(&f, &olga, &id, "revoke", json!({ "note": "exam over" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_problem(&call(&f, "GET", &list, &ann, None).await, StatusCode::FORBIDDEN);
    let in_scope = format!("/v1/cases/{id}/records/{}/body", ids[4]);
    assert_problem(
        &call(&f, "GET", &in_scope, &ann, None).await,
        StatusCode::FORBIDDEN,
    );

    // An auditor promoted to approver still cannot approve their own request.
    let (status, _, _) = step(&f, &ann, &id, "request", json!({ "hours": 1 })).await;
    assert_eq!(status, StatusCode::OK);
    let store = f.gateway.archive().log_store();
    store
        .update_account(&ann_id, AccountChange::Role(Role::Approver))
        .await
        .unwrap();
    let ann_officer = full_session(&f, ann_id, Role::Approver, [0x77; 16], SecretHash([0x77; 32])).await;
    assert_problem(
        &step(&f, &ann_officer, &id, "approve", approval.clone()).await,
        StatusCode::FORBIDDEN,
    );
    let (status, _, body) = step(&f, &olga, &id, "deny", json!({ "note": "no" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse(&body)["state"], "denied");
    let (status, _, body) = step(&f, &olga, &id, "close", json!({ "note": "done" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_problem(
        &step(&f, &olga, &id, "close", json!({ "note": "again" })).await,
        StatusCode::CONFLICT,
    );

    // The trail holds every step and every fetch, each matching its log leaf.
    let (status, _, body) = call(&f, "GET", &format!("/v1/cases/{id}"), &olga, None).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<String> = parse(&body)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "case.open",
            "case.request",
            "case.approve",
            "case.revoke",
            "case.request",
            "case.deny",
            "case.close"
        ]
    );
    let uri = format!("/v1/audit?subject=case:{id}:fetch&limit=1000");
    let (status, _, body) = call(&f, "GET", &uri, &root, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fetches = parse(&body)["events"].as_array().unwrap().clone();
    // One listing, one list, then a header and a body per in-scope record.
    assert_eq!(fetches.len(), 2 + 2 * expected.len());
    let listing_detail: Value = serde_json::from_str(fetches[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(listing_detail["part"], "listing");
    assert_eq!(listing_detail["records_sha256"], listing["records_sha256"]);
    for event in &fetches {
        let recorded = vellum_archive::ports::AuditEvent {
            at: UnixMillis(event["at"].as_u64().unwrap()),
            actor: event["actor"].as_str().unwrap().into(),
            action: event["action"].as_str().unwrap().into(),
            subject: event["subject"].as_str().unwrap().into(),
            detail: event["detail"].as_str().unwrap().into(),
        };
        let leaf = event["leaf_index"].as_u64().unwrap();
        let proof = f.gateway.archive().log_store();
        let stored = vellum_archive::ports::LogStore::entry(proof, leaf).await.unwrap();
        assert_eq!(stored, Some(recorded.log_entry().to_bytes()));
    }
    assert_problem(
        &call(&f, "GET", "/v1/audit", &ben, None).await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn a_case_whose_recorded_scope_was_altered_grants_nothing() {
    let f = fixture().await;
    let ids = archive_records(&f).await;
    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (_, olga) = person(&f, "olga", Role::Approver, 2).await;
    let opening = json!({ "reason": "matter 12", "scope": { "custodians": ["bob"] } });
    let (_, _, body) = call(&f, "POST", "/v1/cases", &ann, Some(opening)).await;
    let case = parse(&body);
    let id = case["id"].as_str().unwrap().to_owned();
    step(&f, &ann, &id, "request", json!({ "hours": 2 })).await;
    let approval = json!({ "scope_sha256": case["scope_sha256"] });
    let (status, _, _) = step(&f, &olga, &id, "approve", approval).await;
    assert_eq!(status, StatusCode::OK);
    let alice = format!("/v1/cases/{id}/records/{}/body", ids[0]);
    assert_problem(&call(&f, "GET", &alice, &ann, None).await, StatusCode::FORBIDDEN);

    // Someone with the database widens the scope to alice, digest and all, past
    // the append-only trigger: the history no longer matches the log.
    let db = rusqlite::Connection::open(f._dir.path().join("meta.db")).unwrap();
    let detail: String = db
        .query_row(
            "SELECT detail FROM audit_events WHERE subject = ?1 AND action = 'case.open'",
            [format!("case:{id}")],
            |r| r.get(0),
        )
        .unwrap();
    let mut widened = parse(&detail);
    let scope = vellum_gateway::cases::Scope {
        custodians: vec!["alice".into(), "bob".into()],
        captured_from: None,
        captured_to: None,
        tokens: vec![],
    };
    widened["scope_sha256"] = json!(scope.digest());
    widened["scope"] = serde_json::to_value(&scope).unwrap();
    db.execute_batch("DROP TRIGGER audit_append_only_u").unwrap();
    db.execute(
        "UPDATE audit_events SET detail = ?1 WHERE subject = ?2 AND action = 'case.open'",
        [widened.to_string(), format!("case:{id}")],
    )
    .unwrap();
    drop(db);
    let answer = call(&f, "GET", &alice, &ann, None).await;
    assert_problem(&answer, StatusCode::CONFLICT);
    assert!(answer.2.contains("does not match the log"), "{}", answer.2);
    let bob = format!("/v1/cases/{id}/records/{}/body", ids[1]);
    assert_problem(&call(&f, "GET", &bob, &ann, None).await, StatusCode::CONFLICT);
}

/// The hostile review's findings on the approver's review: free text that could
/// imitate a scope is refused, a scope of every custodian is bounded in time, the
/// approver sees who asked for what and who made their accounts, and a grant ends
/// with its approver's role.
#[tokio::test]
async fn the_approvers_review_cannot_be_spoofed() {
    let f = fixture().await;
    let ids = archive_records(&f).await;
    let store = f.gateway.archive().log_store();
    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (root_id, root) = person(&f, "root", Role::Admin, 3).await;
    let (_, rita) = person(&f, "rita", Role::Admin, 5).await;

    // The approver's account is made by one administrator, its role given by another.
    let made = json!({ "username": "olga", "role": "auditor" });
    let (status, _, body) = call(&f, "POST", "/v1/admin/accounts", &root, Some(made)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = call(
        &f,
        "POST",
        "/v1/admin/accounts/olga/role",
        &rita,
        Some(json!({ "role": "approver" })),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let olga_id = store
        .account_by_username("olga")
        .await
        .unwrap()
        .unwrap()
        .account_id;
    let olga = full_session(&f, olga_id, Role::Approver, [0x55; 16], SecretHash([0x55; 32])).await;

    // Controls, line breaks and bidirectional overrides are refused in every free text,
    // naming the field, and nothing is recorded.
    let size_before = f.gateway.archive().latest_checkpoint().await.unwrap().unwrap().0;
    let scope = json!({ "custodians": ["bob"] });
    for bad in [
        "FOIA 7\n  custodians:  alice",
        "FOIA 7\x1b[8m",
        "FOIA\t7",
        "FOIA 7\u{202e}",
        "FOIA 7\u{2066}",
        "FOIA 7\u{2028}",
        "FOIA 7\u{9b}2J",
        "FOIA 7\r",
    ] {
        let answer = call(
            &f,
            "POST",
            "/v1/cases",
            &ann,
            Some(json!({ "reason": bad, "scope": scope })),
        )
        .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.2.contains("reason: "), "{}", answer.2);
    }
    let trail = call(&f, "GET", "/v1/audit?limit=1000", &root, None).await;
    assert!(!trail.2.contains("case.open"), "{}", trail.2);
    assert_eq!(
        f.gateway.archive().latest_checkpoint().await.unwrap().unwrap().0,
        size_before
    );

    // A scope of every custodian and participant is refused beyond 366 days, and a
    // start of 0 is no start.
    let day = DAY;
    for (scope, ok) in [
        (
            json!({ "captured_from": T0, "captured_to": T0 + 366 * day }),
            true,
        ),
        (
            json!({ "captured_from": T0, "captured_to": T0 + 367 * day }),
            false,
        ),
        (json!({ "captured_from": 0, "captured_to": T0 }), false),
        (json!({ "captured_from": 0, "captured_to": 1 }), false),
        (
            json!({ "custodians": ["bob"], "captured_from": 0, "captured_to": T0 }),
            true,
        ),
    ] {
        let answer = call(
            &f,
            "POST",
            "/v1/cases",
            &ann,
            Some(json!({ "reason": "FOIA 8", "scope": scope })),
        )
        .await;
        match ok {
            true => assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2),
            false => assert_problem(&answer, StatusCode::BAD_REQUEST),
        }
    }

    let (status, _, body) = call(
        &f,
        "POST",
        "/v1/cases",
        &ann,
        Some(json!({ "reason": "FOIA 9", "scope": scope })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let case = parse(&body);
    let id = case["id"].as_str().unwrap().to_owned();
    let digest = case["scope_sha256"].as_str().unwrap().to_owned();
    for bad in ["see\nbelow", "\u{202e}", "a\x00b"] {
        let answer = step(&f, &ann, &id, "request", json!({ "hours": 8, "note": bad })).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.2.contains("note: "), "{}", answer.2);
    }
    let (status, _, body) = step(&f, &ann, &id, "request", json!({ "hours": 8, "note": "hearing" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The approver sees who asked, for how long, and who made whose account.
    let (_, _, body) = call(&f, "GET", &format!("/v1/cases/{id}"), &olga, None).await;
    let shown = parse(&body);
    assert_eq!(shown["requested_hours"], 8);
    let opener = shown["opened_by"].as_str().unwrap();
    assert_eq!(shown["people"][opener]["username"], "ann");
    assert_eq!(shown["people"][opener]["role"], "auditor");
    let (_, _, body) = call(&f, "GET", "/v1/cases?state=requested", &olga, None).await;
    assert_eq!(parse(&body)["cases"][0]["people"][opener]["username"], "ann");

    // Too many hours: the refusal says how many were asked.
    let answer = step(
        &f,
        &olga,
        &id,
        "approve",
        json!({ "scope_sha256": digest, "hours": 9 }),
    )
    .await;
    assert_problem(&answer, StatusCode::CONFLICT);
    assert!(
        answer.2.contains("9 hours is more than the 8 hours requested"),
        "{}",
        answer.2
    );
    let (status, _, body) = step(&f, &olga, &id, "approve", json!({ "scope_sha256": digest })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let approved = parse(&body);
    let olga_hex = hex::encode(olga_id);
    assert_eq!(approved["approved_by"], olga_hex.as_str());
    assert_eq!(approved["people"][olga_hex.as_str()]["username"], "olga");
    assert_eq!(approved["people"][olga_hex.as_str()]["created_by"], "root");
    assert_eq!(approved["people"][olga_hex.as_str()]["role_by"], "rita");
    let list = format!("/v1/cases/{id}/records");
    assert_eq!(call(&f, "GET", &list, &ann, None).await.0, StatusCode::OK);

    // The approver loses the role: the grant ends, recorded as the gateway's revocation.
    store
        .update_account(&olga_id, AccountChange::Role(Role::Auditor))
        .await
        .unwrap();
    let answer = call(&f, "GET", &list, &ann, None).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    let body_uri = format!("/v1/cases/{id}/records/{}/body", ids[1]);
    assert_problem(
        &call(&f, "GET", &body_uri, &ann, None).await,
        StatusCode::FORBIDDEN,
    );
    let (_, _, body) = call(&f, "GET", &format!("/v1/cases/{id}"), &ann, None).await;
    let ended = parse(&body);
    assert_eq!(ended["state"], "revoked", "{body}");
    let last = ended["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("case.revoke"), Some("gateway"))
    );
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("olga is no longer an approver"),
        "{last}"
    );
    // Exactly one revocation, however often the case is read.
    call(&f, "GET", &format!("/v1/cases/{id}"), &ann, None).await;
    let (_, _, body) = call(&f, "GET", &format!("/v1/cases/{id}"), &ann, None).await;
    let revocations = parse(&body)["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "case.revoke")
        .count();
    assert_eq!(revocations, 1);

    // A disabled approver's grant ends too; the auditor may then ask again.
    store
        .update_account(&olga_id, AccountChange::Role(Role::Approver))
        .await
        .unwrap();
    let (status, _, body) = step(&f, &ann, &id, "request", json!({ "hours": 2 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = step(&f, &olga, &id, "approve", json!({ "scope_sha256": digest })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(call(&f, "GET", &list, &ann, None).await.0, StatusCode::OK);
    let (status, _, _) = call(&f, "POST", "/v1/admin/accounts/olga/disable", &root, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_problem(&call(&f, "GET", &list, &ann, None).await, StatusCode::FORBIDDEN);
    let (_, _, body) = call(&f, "GET", &format!("/v1/cases/{id}"), &ann, None).await;
    assert_eq!(parse(&body)["state"], "revoked");
    assert!(body.contains("olga was disabled"), "{body}");
    let _ = root_id;
}

/// Positions beyond what the stores index are a 400 naming the limit, never a 500.
#[tokio::test]
async fn positions_beyond_the_largest_are_refused_plainly() {
    let f = fixture().await;
    archive_records(&f).await;
    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (_, root) = person(&f, "root", Role::Admin, 3).await;
    let opening = json!({ "reason": "FOIA 7", "scope": { "custodians": ["bob"] } });
    let (_, _, body) = call(&f, "POST", "/v1/cases", &ann, Some(opening)).await;
    let id = parse(&body)["id"].as_str().unwrap().to_owned();
    let record = RecordId::new_v7(T0 + 1);
    let beyond = (i64::MAX as u64) + 1;
    for (who, uri) in [
        (&ann, format!("/v1/cases?from={beyond}")),
        (&ann, format!("/v1/cases?from={}", u64::MAX)),
        (&ann, format!("/v1/cases/{id}/fetches?from={beyond}")),
        (&root, format!("/v1/audit?from={beyond}")),
        (&ann, format!("/v1/cases/{id}/records/{record}?size={beyond}")),
        (&ann, format!("/v1/log/proof/inclusion?index={beyond}")),
        (&ann, format!("/v1/log/proof/inclusion?index=0&size={beyond}")),
        (&ann, format!("/v1/log/proof/consistency?old=1&new={beyond}")),
    ] {
        let answer = call(&f, "GET", &uri, who, None).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.2.contains("9223372036854775807"), "{uri}: {}", answer.2);
    }
    // The largest position itself is an ordinary, empty answer.
    let (status, _, body) = call(&f, "GET", &format!("/v1/cases?from={}", i64::MAX), &ann, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call(&f, "GET", &format!("/v1/audit?from={}", i64::MAX), &root, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Bodies are sent in bounded chunks under a read budget of their own: one account
/// runs at most its share of reads at once (more get 429), and reads in flight never
/// hold up a capture.
#[tokio::test]
async fn bodies_stream_under_a_read_budget_that_spares_captures() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let f = support::fixture_with(vellum_gateway::Limits {
        max_reads_per_account: 2,
        ..Default::default()
    })
    .await;
    let (device, credential) = support::enrolled_device(&f).await;
    let device_id = DeviceId::parse(support::DEVICE).unwrap();
    let recipient = Identity::generate().to_public();
    let plaintext: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big = seal::seal(std::slice::from_ref(&recipient), &plaintext).unwrap();
    let big_id = RecordId::new_v7(T0);
    let header = support::signed_header(&device, device_id, big_id, big.digest());
    let (status, _, body) =
        support::capture(&f, Some(&credential), support::frame(&header, big.as_bytes())).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, ann) = person(&f, "ann", Role::Auditor, 1).await;
    let (_, olga) = person(&f, "olga", Role::Approver, 2).await;
    let opening = json!({ "reason": "FOIA 11", "scope": { "custodians": ["officer@agency.example"] } });
    let (_, _, body) = call(&f, "POST", "/v1/cases", &ann, Some(opening)).await;
    let case = parse(&body);
    let id = case["id"].as_str().unwrap().to_owned();
    step(&f, &ann, &id, "request", json!({ "hours": 1 })).await;
    let (status, _, body) = step(
        &f,
        &olga,
        &id,
        "approve",
        json!({ "scope_sha256": case["scope_sha256"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let fetch = || {
        let request = axum::http::Request::get(format!("/v1/cases/{id}/records/{big_id}/body"))
            .header("authorization", format!("Bearer {ann}"))
            .body(axum::body::Body::empty())
            .unwrap();
        f.app.clone().oneshot(request)
    };
    // Read whole: the sealed body, byte for byte, in several frames of at most 256 KiB.
    let response = fetch().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        big.as_bytes().len().to_string()
    );
    let mut body = response.into_body();
    let (mut got, mut frames) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.len() <= vellum_archive::ports::READ_CHUNK);
        got.extend_from_slice(&data);
        frames += 1;
    }
    assert_eq!(got, big.as_bytes());
    assert!(frames >= 12, "{frames} frames");

    // Two reads held open (their bodies not taken): the account's third gets 429.
    let held = [fetch().await.unwrap(), fetch().await.unwrap()];
    assert!(held.iter().all(|r| r.status() == StatusCode::OK));
    let third = fetch().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));

    // Meanwhile captures go on.
    let small = seal::seal(std::slice::from_ref(&recipient), b"captured while reads run").unwrap();
    let small_id = RecordId::new_v7(T0 + 1);
    let header = support::signed_header(&device, device_id, small_id, small.digest());
    let (status, _, body) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        support::capture(&f, Some(&credential), support::frame(&header, small.as_bytes())),
    )
    .await
    .expect("a capture waited on reads");
    assert_eq!(status, StatusCode::OK, "{body}");

    // A read given up returns its share (once its task sees the client gone).
    drop(held);
    let mut again = fetch().await.unwrap();
    for _ in 0..200 {
        if again.status() == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        again = fetch().await.unwrap();
    }
    assert_eq!(again.status(), StatusCode::OK);
    let bytes = again.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], big.as_bytes());
}
