//! People over the router and a real archive: sign-in with Argon2id passwords, TOTP,
//! refresh-token rotation with reuse detection, logout, locks and rate limits, the
//! administrator's account routes, and the allow/deny matrix of every documented
//! operation for every kind of caller.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use support::*;
use vellum_archive::ports::{AccountChange, AccountStore as _, NewAccount, Role, SecretHash};
use vellum_gateway::auth::{password, totp};
use vellum_protocol::ids::UnixMillis;

const PASSWORD: &str = "correct horse battery staple";

async fn add_account(f: &Fixture, username: &str, role: Role, must_change: bool) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..username.len().min(16)].copy_from_slice(&username.as_bytes()[..username.len().min(16)]);
    id[15] = role as u8 + 1;
    let account = NewAccount {
        account_id: id,
        username: username.into(),
        role,
        password_phc: password::hash(PASSWORD).unwrap(),
        must_change_password: must_change,
        external_id: None,
    };
    f.gateway
        .archive()
        .log_store()
        .create_account(&account, UnixMillis(now_ms()))
        .await
        .unwrap();
    id
}

async fn post(f: &Fixture, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, String, String) {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(&f.app, request.body(Body::from(body.to_string())).unwrap()).await
}

async fn get_as(f: &Fixture, path: &str, bearer: &str) -> (StatusCode, String, String) {
    let request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(Body::empty())
        .unwrap();
    send(&f.app, request).await
}

async fn login(f: &Fixture, username: &str, password: &str, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({ "username": username, "password": password });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, _, text) = post(f, "/v1/auth/login", None, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .to_owned()
}

#[tokio::test]
async fn an_administrator_signs_in_refreshes_once_per_token_and_a_replay_ends_the_session() {
    let f = fixture().await;
    add_account(&f, "root.admin", Role::Admin, false).await;
    let (status, tokens) = login(&f, "root.admin", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "full");
    assert_eq!(tokens["expires_in"], 900);
    let access = field(&tokens, "access_token");
    let first_refresh = field(&tokens, "refresh_token");
    assert_eq!(get_as(&f, "/v1/admin/accounts", &access).await.0, StatusCode::OK);

    let (status, _, text) = post(
        &f,
        "/v1/auth/refresh",
        None,
        json!({ "refresh_token": first_refresh }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let rotated: Value = serde_json::from_str(&text).unwrap();
    let second_refresh = field(&rotated, "refresh_token");
    assert_ne!(second_refresh, first_refresh);

    // The first refresh token is replayed: refused, and the whole session ends.
    let replay = post(
        &f,
        "/v1/auth/refresh",
        None,
        json!({ "refresh_token": first_refresh }),
    )
    .await;
    assert_problem(&replay, StatusCode::UNAUTHORIZED);
    let after = post(
        &f,
        "/v1/auth/refresh",
        None,
        json!({ "refresh_token": second_refresh }),
    )
    .await;
    assert_problem(&after, StatusCode::UNAUTHORIZED);
    assert_problem(
        &get_as(&f, "/v1/admin/accounts", &access).await,
        StatusCode::UNAUTHORIZED,
    );
    let audit = f.gateway.archive().audit_trail(0, 1000).await.unwrap();
    assert!(
        audit.iter().any(|(_, e)| e.action == "session.reuse"),
        "{audit:?}"
    );

    // Logout ends a session too.
    let (_, tokens) = login(&f, "root.admin", PASSWORD, json!({})).await;
    let access = field(&tokens, "access_token");
    assert_eq!(
        post(&f, "/v1/auth/logout", Some(&access), json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_problem(
        &get_as(&f, "/v1/admin/accounts", &access).await,
        StatusCode::UNAUTHORIZED,
    );
    let refresh = post(
        &f,
        "/v1/auth/refresh",
        None,
        json!({ "refresh_token": field(&tokens, "refresh_token") }),
    )
    .await;
    assert_problem(&refresh, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_unknown_names_and_locks_all_read_the_same() {
    let f = fixture().await;
    let id = add_account(&f, "clerk", Role::Admin, false).await;
    let wrong = login(&f, "clerk", "not the password at all", json!({})).await;
    let unknown = login(&f, "nobody-here", PASSWORD, json!({})).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong, unknown,
        "a guesser can tell unknown names from wrong passwords"
    );

    for _ in 0..4 {
        assert_eq!(
            login(&f, "clerk", "still not it!!", json!({})).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Five failures: locked, so even the right password is refused, alike.
    let locked = login(&f, "clerk", PASSWORD, json!({})).await;
    assert_eq!(locked, wrong);
    // The lock is temporary: once it has passed, the right password works again.
    let store = f.gateway.archive().log_store();
    store
        .update_account(&id, AccountChange::LockedUntil(UnixMillis(now_ms() - 1)))
        .await
        .unwrap();
    assert_eq!(login(&f, "clerk", PASSWORD, json!({})).await.0, StatusCode::OK);
    assert_eq!(store.account_by_id(&id).await.unwrap().unwrap().failed_logins, 0);
}

#[tokio::test]
async fn logins_beyond_the_rate_limit_get_429_without_a_password_check() {
    let mut f = fixture().await;
    f.app = axum::Router::new(); // drops the router's share of the gateway
    let gateway = std::sync::Arc::try_unwrap(f.gateway)
        .ok()
        .unwrap()
        .with_login_limits(100, 3);
    f.gateway = std::sync::Arc::new(gateway);
    f.app = vellum_gateway::router(f.gateway.clone());
    add_account(&f, "busy", Role::Admin, false).await;
    for _ in 0..3 {
        assert_eq!(
            login(&f, "busy", "wrong wrong wrong", json!({})).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, _, body) = post(
        &f,
        "/v1/auth/login",
        None,
        json!({ "username": "BUSY", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Another account is not affected.
    add_account(&f, "calm", Role::Admin, false).await;
    assert_eq!(login(&f, "calm", PASSWORD, json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn password_work_beyond_the_gateway_wide_rate_is_refused_without_hashing() {
    let mut f = fixture().await;
    f.app = axum::Router::new();
    let gateway = std::sync::Arc::try_unwrap(f.gateway).ok().unwrap();
    let gateway = gateway.with_auth(
        vellum_gateway::auth::Auth::ephemeral("test")
            .unwrap()
            .with_hashes_per_second(2),
    );
    f.gateway = std::sync::Arc::new(gateway);
    f.app = vellum_gateway::router(f.gateway.clone());
    add_account(&f, "rated", Role::Admin, false).await;
    // Four at once: the allowance of two is spent by two of them, whichever.
    let attempt = || login(&f, "rated", "a wrong password!!", json!({}));
    let (a, b, c, d) = tokio::join!(attempt(), attempt(), attempt(), attempt());
    let mut answers = vec![a.0, b.0, c.0, d.0];
    answers.sort();
    assert_eq!(
        &answers[..2],
        [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED]
    );
    assert!(
        answers[2..].iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    // Only the two hashed attempts counted as failures.
    let account = f
        .gateway
        .archive()
        .log_store()
        .account_by_username("rated")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.failed_logins, 2);
}

#[tokio::test]
async fn a_setup_session_opens_nothing_else_whatever_the_role_becomes() {
    let f = fixture().await;
    add_account(&f, "newcomer", Role::Auditor, false).await;
    let (_, tokens) = login(&f, "newcomer", PASSWORD, json!({})).await;
    assert_eq!(tokens["scope"], "mfa-setup");
    let setup = field(&tokens, "access_token");
    // Promoted to administrator meanwhile: the role would admit it, the scope does not.
    let store = f.gateway.archive().log_store();
    let id = store
        .account_by_username("newcomer")
        .await
        .unwrap()
        .unwrap()
        .account_id;
    store
        .update_account(&id, AccountChange::Role(Role::Admin))
        .await
        .unwrap();
    let answer = get_as(&f, "/v1/admin/accounts", &setup).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    assert!(answer.2.contains("second factor"), "{}", answer.2);
}

#[tokio::test]
async fn a_one_time_password_must_be_changed_and_weak_passwords_are_refused() {
    let f = fixture().await;
    add_account(&f, "fresh", Role::Admin, true).await;
    let (status, problem) = login(&f, "fresh", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(field(&problem, "detail").contains("/v1/auth/password"));

    let change = |new: &str| json!({ "username": "fresh", "password": PASSWORD, "new_password": new });
    for weak in ["short", "Password2026!", "fresh-and-long-enough"] {
        let answer = post(&f, "/v1/auth/password", None, change(weak)).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
    }
    let wrong = post(
        &f,
        "/v1/auth/password",
        None,
        json!({ "username": "fresh", "password": "wrong password!!", "new_password": "a much better passphrase" }),
    )
    .await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED);
    let answer = post(&f, "/v1/auth/password", None, change("a much better passphrase")).await;
    assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.2);
    assert_eq!(
        login(&f, "fresh", PASSWORD, json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&f, "fresh", "a much better passphrase", json!({})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn auditors_enroll_totp_at_first_login_and_codes_work_once() {
    let f = fixture().await;
    add_account(&f, "auditor", Role::Auditor, false).await;
    let (status, tokens) = login(&f, "auditor", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["scope"], "mfa-setup");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let setup_token = field(&tokens, "access_token");
    // The limited session does nothing but set up the second factor.
    assert_problem(
        &get_as(&f, "/v1/admin/accounts", &setup_token).await,
        StatusCode::FORBIDDEN,
    );

    let (status, _, text) = post(&f, "/v1/auth/totp", Some(&setup_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let setup: Value = serde_json::from_str(&text).unwrap();
    assert!(field(&setup, "uri").starts_with("otpauth://totp/Vellum:auditor?secret="));
    let store = f.gateway.archive().log_store();
    let account = store.account_by_username("auditor").await.unwrap().unwrap();
    let stored = account.totp_secret.clone().unwrap();
    // The database holds the secret sealed, naming the key: never the secret itself.
    let keys = f.gateway.auth().totp_keys();
    assert_eq!(
        vellum_gateway::auth::totp_seal::TotpKeys::sealed_by(&stored),
        Some(keys.current_id())
    );
    let secret = keys.open(&account.account_id, &stored).unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_slice()));
    assert_eq!(totp::base32(&secret), field(&setup, "secret"));
    let now = now_ms() / 1000;
    let wrong = post(
        &f,
        "/v1/auth/totp/confirm",
        Some(&setup_token),
        json!({ "code": "000000" }),
    )
    .await;
    if totp::code_at(&secret, now) != "000000" {
        assert_problem(&wrong, StatusCode::BAD_REQUEST);
    }
    let (status, _, text) = post(
        &f,
        "/v1/auth/totp/confirm",
        Some(&setup_token),
        json!({ "code": totp::code_at(&secret, now) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let recovery: Value = serde_json::from_str(&text).unwrap();
    let codes: Vec<String> = serde_json::from_value(recovery["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    // Enabling ends the setup session.
    assert_problem(
        &post(&f, "/v1/auth/totp", Some(&setup_token), json!({})).await,
        StatusCode::UNAUTHORIZED,
    );

    // Now a code is required, and a code works once (the confirm used this step).
    assert_eq!(
        login(&f, "auditor", PASSWORD, json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );
    let next = totp::code_at(&secret, now + 30);
    let (status, tokens) = login(&f, "auditor", PASSWORD, json!({ "totp": next })).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "full");
    assert_eq!(
        login(&f, "auditor", PASSWORD, json!({ "totp": next })).await.0,
        StatusCode::UNAUTHORIZED
    );
    let stale = totp::code_at(&secret, now - 120);
    assert_eq!(
        login(&f, "auditor", PASSWORD, json!({ "totp": stale })).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A recovery code replaces a code, once.
    let recovery = json!({ "recovery_code": codes[3] });
    assert_eq!(
        login(&f, "auditor", PASSWORD, recovery.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        login(&f, "auditor", PASSWORD, recovery).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Changing the password needs the second factor too.
    let change =
        json!({ "username": "auditor", "password": PASSWORD, "new_password": "another long passphrase" });
    assert_problem(
        &post(&f, "/v1/auth/password", None, change).await,
        StatusCode::UNAUTHORIZED,
    );

    // Wrong codes count like wrong passwords: enough of them lock the account.
    for _ in 0..5 {
        let wrong = login(&f, "auditor", PASSWORD, json!({ "totp": "999999" })).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    }
    let account = store.account_by_username("auditor").await.unwrap().unwrap();
    assert!(account.failed_logins >= 5, "{}", account.failed_logins);
    assert!(account.locked_until.is_some_and(|t| t.0 > now_ms()), "not locked");
    // Locked, even the next valid code is refused.
    let good = totp::code_at(&secret, now + 30);
    assert_eq!(
        login(&f, "auditor", PASSWORD, json!({ "totp": good })).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A known device lifts the lock for the password only: no code is evaluated while
    // locked, a wrong one counts nothing, and the right one waits for the lock's end.
    let device = field(&tokens, "known_device");
    let before = store.account_by_username("auditor").await.unwrap().unwrap();
    for code in ["999999", "123456", good.as_str()] {
        let (status, problem) = login(
            &f,
            "auditor",
            PASSWORD,
            json!({ "totp": code, "known_device": device }),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("locked"),
            "{problem}"
        );
    }
    let after = store.account_by_username("auditor").await.unwrap().unwrap();
    assert_eq!(
        after.failed_logins, before.failed_logins,
        "a code was evaluated while locked"
    );
    assert_eq!(after.locked_until, before.locked_until);
    store
        .update_account(
            &after.account_id,
            AccountChange::LockedUntil(UnixMillis(now_ms() - 1)),
        )
        .await
        .unwrap();
    let (status, _) = login(
        &f,
        "auditor",
        PASSWORD,
        json!({ "recovery_code": codes[4], "known_device": device }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        login(&f, "auditor", PASSWORD, json!({ "totp": "999999" })).await;
    }

    // A lost phone: an administrator resets the second factor over the API, and the
    // auditor enrolls again at the next sign-in (once the lock has passed).
    add_account(&f, "helpdesk", Role::Admin, false).await;
    let (_, admin) = login(&f, "helpdesk", PASSWORD, json!({})).await;
    let admin = field(&admin, "access_token");
    let reset = post(
        &f,
        "/v1/admin/accounts/auditor/reset-mfa",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(reset.0, StatusCode::NO_CONTENT, "{}", reset.2);
    let account = store.account_by_username("auditor").await.unwrap().unwrap();
    assert!(!account.totp_enabled && account.totp_secret.is_none());
    store
        .update_account(&account.account_id, AccountChange::LockedUntil(UnixMillis(0)))
        .await
        .unwrap();
    let (status, tokens) = login(&f, "auditor", PASSWORD, json!({})).await;
    assert_eq!(
        (status, tokens["scope"].as_str()),
        (StatusCode::OK, Some("mfa-setup"))
    );
    let trail = f.gateway.archive().audit_trail(0, 1000).await.unwrap();
    assert!(trail.iter().any(|(_, e)| e.action == "mfa.reset"), "{trail:?}");
}

#[tokio::test]
async fn administrators_manage_accounts_but_never_their_own_and_a_disabled_account_loses_its_tokens() {
    let f = fixture().await;
    add_account(&f, "boss", Role::Admin, false).await;
    let (_, tokens) = login(&f, "boss", PASSWORD, json!({})).await;
    let admin = field(&tokens, "access_token");

    let (status, _, text) = post(
        &f,
        "/v1/admin/accounts",
        Some(&admin),
        json!({ "username": "ops", "role": "admin" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let one_time = field(&created, "one_time_password");
    assert_eq!(
        login(&f, "ops", &one_time, json!({})).await.0,
        StatusCode::FORBIDDEN,
        "must change first"
    );
    let taken = post(
        &f,
        "/v1/admin/accounts",
        Some(&admin),
        json!({ "username": "ops", "role": "auditor" }),
    )
    .await;
    assert_problem(&taken, StatusCode::CONFLICT);
    let bad = post(
        &f,
        "/v1/admin/accounts",
        Some(&admin),
        json!({ "username": "Bad Name", "role": "auditor" }),
    )
    .await;
    assert_problem(&bad, StatusCode::BAD_REQUEST);

    for own in ["disable", "reset-password"] {
        let answer = post(
            &f,
            &format!("/v1/admin/accounts/boss/{own}"),
            Some(&admin),
            json!({}),
        )
        .await;
        assert_problem(&answer, StatusCode::FORBIDDEN);
    }
    let demote = post(
        &f,
        "/v1/admin/accounts/boss/role",
        Some(&admin),
        json!({ "role": "auditor" }),
    )
    .await;
    assert_problem(&demote, StatusCode::FORBIDDEN);

    // A live token of an account that gets disabled stops working at once.
    let changed = post(
        &f,
        "/v1/auth/password",
        None,
        json!({ "username": "ops", "password": one_time, "new_password": "operations passphrase 1" }),
    )
    .await;
    assert_eq!(changed.0, StatusCode::NO_CONTENT, "{}", changed.2);
    let (_, tokens) = login(&f, "ops", "operations passphrase 1", json!({})).await;
    let ops = field(&tokens, "access_token");
    assert_eq!(get_as(&f, "/v1/admin/accounts", &ops).await.0, StatusCode::OK);
    assert_eq!(
        post(&f, "/v1/admin/accounts/ops/disable", Some(&admin), json!({}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_problem(
        &get_as(&f, "/v1/admin/accounts", &ops).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        login(&f, "ops", "operations passphrase 1", json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A demoted administrator loses administration on the next request.
    assert_eq!(
        post(&f, "/v1/admin/accounts/ops/enable", Some(&admin), json!({}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, tokens) = login(&f, "ops", "operations passphrase 1", json!({})).await;
    let ops = field(&tokens, "access_token");
    let ops_refresh = field(&tokens, "refresh_token");
    let demoted = post(
        &f,
        "/v1/admin/accounts/ops/role",
        Some(&admin),
        json!({ "role": "approver" }),
    )
    .await;
    assert_eq!(demoted.0, StatusCode::NO_CONTENT);
    assert_problem(
        &get_as(&f, "/v1/admin/accounts", &ops).await,
        StatusCode::FORBIDDEN,
    );
    // An approver needs a second factor: the session cannot go on without one.
    let refreshed = post(
        &f,
        "/v1/auth/refresh",
        None,
        json!({ "refresh_token": ops_refresh }),
    )
    .await;
    assert_problem(&refreshed, StatusCode::UNAUTHORIZED);

    let (status, _, listing) = get_as(&f, "/v1/admin/accounts", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!listing.contains("argon2"), "the listing shows password hashes");
    // Each event is checked against the log leaf that commits to it.
    let audit = f.gateway.archive().audit_trail(0, 1000).await.unwrap();
    for action in [
        "account.create",
        "account.disable",
        "account.enable",
        "account.role",
        "login",
        "login.failed",
    ] {
        assert!(
            audit.iter().any(|(_, e)| e.action == action),
            "no {action} in the audit trail"
        );
    }
}

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Nobody,
    Device,
    Person(Role),
}

/// The expected policy, written out independently of the gateway's table.
fn allowed(method: &Method, path: &str, caller: Caller) -> bool {
    let person = matches!(caller, Caller::Person(_));
    match (method.as_str(), path) {
        ("POST", "/v1/records" | "/v1/devices/credential") => caller == Caller::Device,
        ("POST", "/v1/auth/logout" | "/v1/auth/totp" | "/v1/auth/totp/confirm") => person,
        (_, p) if p.starts_with("/v1/admin/") => caller == Caller::Person(Role::Admin),
        ("GET", "/v1/auth/oidc/start" | "/v1/auth/oidc/callback") => true,
        ("GET", "/v1/keys/status") => matches!(caller, Caller::Person(Role::Admin | Role::Auditor)),
        ("GET", "/v1/keys/escrow") | ("POST", "/v1/keys/escrow/recoveries") => {
            caller == Caller::Person(Role::Approver)
        }
        (_, p) if p.starts_with("/v1/keys/") => caller == Caller::Person(Role::Auditor),
        ("GET", "/v1/audit") => matches!(caller, Caller::Person(Role::Approver | Role::Admin)),
        ("POST", "/v1/cases" | "/v1/cases/{case}/request") => caller == Caller::Person(Role::Auditor),
        ("POST", "/v1/cases/{case}/approve" | "/v1/cases/{case}/deny") => {
            caller == Caller::Person(Role::Approver)
        }
        (_, p) if p.starts_with("/v1/cases/{case}/records") => caller == Caller::Person(Role::Auditor),
        ("POST", "/v1/cases/{case}/listing") => caller == Caller::Person(Role::Auditor),
        ("POST", "/v1/records/search")
        | (_, "/v1/cases" | "/v1/cases/{case}" | "/v1/cases/{case}/fetches")
        | ("POST", "/v1/cases/{case}/revoke" | "/v1/cases/{case}/close") => {
            matches!(caller, Caller::Person(Role::Auditor | Role::Approver))
        }
        ("GET", "/healthz" | "/readyz" | "/v1/keyring" | "/v1/log/checkpoint")
        | ("GET", "/v1/log/proof/inclusion" | "/v1/log/proof/consistency")
        | ("POST", "/v1/devices" | "/v1/auth/login" | "/v1/auth/refresh" | "/v1/auth/password") => true,
        other => panic!("the test has no expectation for {other:?}: add one"),
    }
}

#[tokio::test]
async fn every_operation_admits_exactly_the_callers_its_policy_names() {
    let f = fixture().await;
    let (_, device_credential) = enrolled_device(&f).await;
    let mut people = Vec::new();
    for role in Role::ALL {
        people.push((
            role,
            add_account(&f, &format!("matrix-{}", role.as_str()), role, false).await,
        ));
    }
    let doc = vellum_gateway::openapi();
    let mut checked = 0;
    for (template, item) in &doc.paths.paths {
        let path = template
            .replace("{username}", "someone-else")
            .replace("{device_id}", DEMO_DEVICE);
        let methods = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
        ];
        for (method, _) in methods.into_iter().filter(|(_, present)| *present) {
            assert!(
                vellum_gateway::policy(&method, &path).is_some(),
                "no policy for {method} {template}"
            );
            let mut callers = vec![Caller::Nobody, Caller::Device];
            callers.extend(Role::ALL.map(Caller::Person));
            for caller in callers {
                let bearer = match caller {
                    Caller::Nobody => None,
                    Caller::Device => Some(device_credential.clone()),
                    Caller::Person(role) => {
                        let account = people.iter().find(|(r, _)| *r == role).unwrap().1;
                        let mut session = [0u8; 16];
                        session[..8].copy_from_slice(&now_ms().to_be_bytes());
                        session[8] = checked as u8;
                        session[9] = role as u8;
                        let mut refresh = SecretHash([checked as u8 ^ role as u8; 32]);
                        refresh.0[..16].copy_from_slice(&session);
                        let token = full_session(&f, account, role, session, refresh).await;
                        Some(token)
                    }
                };
                let mut request = Request::builder()
                    .method(&method)
                    .uri(&path)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, 2);
                if let Some(bearer) = &bearer {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
                }
                let answer = send(&f.app, request.body(Body::from("{}")).unwrap()).await;
                let denied = matches!(answer.0, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
                let expected = allowed(&method, template, caller);
                assert_eq!(
                    !denied, expected,
                    "{method} {template} as {caller:?}: {} {}",
                    answer.0, answer.2
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5 * 20, "only {checked} checks");
    // And the table names nothing the document lacks.
    for (method, template, _) in vellum_gateway::POLICIES {
        let item = doc
            .paths
            .paths
            .get(*template)
            .unwrap_or_else(|| panic!("{template} is not documented"));
        let present = match *method {
            "GET" => item.get.is_some(),
            "POST" => item.post.is_some(),
            _ => false,
        };
        assert!(
            present,
            "{method} {template} is in the policy table but not documented"
        );
    }
}

/// Raising the configured Argon2id cost takes effect at each account's next sign-in:
/// the stored hash is redone with the new parameters, and the password still works.
#[tokio::test]
async fn hashes_are_redone_at_sign_in_when_the_configured_cost_rises() {
    let cost = password::Cost::new(24_576, 3, 1).unwrap();
    let auth = vellum_gateway::auth::Auth::ephemeral("test")
        .unwrap()
        .with_hashes_per_second(100_000)
        .with_password_cost(cost)
        .unwrap();
    let f = fixture_built(Default::default(), move |g| g.with_auth(auth)).await;
    add_account(&f, "steady", Role::Admin, false).await;
    let store = f.gateway.archive().log_store();
    let before = store.account_by_username("steady").await.unwrap().unwrap();
    assert!(before.password_phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));

    assert_eq!(login(&f, "steady", PASSWORD, json!({})).await.0, StatusCode::OK);
    let after = store.account_by_username("steady").await.unwrap().unwrap();
    assert!(
        after.password_phc.starts_with("$argon2id$v=19$m=24576,t=3,p=1$"),
        "{}",
        after.password_phc
    );
    assert_eq!(login(&f, "steady", PASSWORD, json!({})).await.0, StatusCode::OK);
    let again = store.account_by_username("steady").await.unwrap().unwrap();
    assert_eq!(again.password_phc, after.password_phc, "rehashed without need");
    // A wrong password changes nothing.
    assert_eq!(
        login(&f, "steady", "not the password at all", json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );
    let refused = store.account_by_username("steady").await.unwrap().unwrap();
    assert_eq!(refused.password_phc, after.password_phc);
}

/// Whoever floods an account with wrong passwords locks it and exhausts its
/// per-account limit, but its owner, on a device that signed in before, still gets in.
#[tokio::test]
async fn a_flood_locks_an_account_but_not_its_owner_on_a_known_device() {
    let f = fixture_built(Default::default(), |g| g.with_login_limits(1000, 6)).await;
    add_account(&f, "owner", Role::Admin, false).await;
    add_account(&f, "other", Role::Admin, false).await;
    let (status, tokens) = login(&f, "owner", PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let device = field(&tokens, "known_device");
    let (_, other) = login(&f, "other", PASSWORD, json!({})).await;
    let others_device = field(&other, "known_device");

    for _ in 0..5 {
        let wrong = login(&f, "owner", "a guess that is wrong", json!({})).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    }
    let store = f.gateway.archive().log_store();
    let locked = store.account_by_username("owner").await.unwrap().unwrap();
    assert!(locked.locked_until.is_some_and(|t| t.0 > now_ms()), "not locked");
    // The per-account budget (6 a minute) is spent: without the device, 429.
    assert_eq!(
        login(&f, "owner", PASSWORD, json!({})).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    for refused in [
        json!({ "known_device": others_device }),
        json!({ "known_device": format!("{device}A") }),
        json!({ "known_device": "kd1.AAAA.AAAA" }),
    ] {
        assert_eq!(
            login(&f, "owner", PASSWORD, refused.clone()).await.0,
            StatusCode::TOO_MANY_REQUESTS,
            "{refused}"
        );
    }
    // With it: a wrong password is refused (and counted, as every failure is); the
    // right one gets in, lock or no lock.
    let known = json!({ "known_device": device });
    assert_eq!(
        login(&f, "owner", "a guess that is wrong", known.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let after = store.account_by_username("owner").await.unwrap().unwrap();
    assert_eq!(after.failed_logins, locked.failed_logins + 1);
    let (status, tokens) = login(&f, "owner", PASSWORD, known.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // The token has a budget of its own (6 a minute here): 2 used, 4 left.
    for _ in 0..4 {
        login(&f, "owner", "a guess that is wrong", known.clone()).await;
    }
    assert_eq!(
        login(&f, "owner", PASSWORD, known).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "a known-device token gave unlimited guesses"
    );

    // A new password voids the token issued under the old one.
    let fresh = field(&tokens, "known_device");
    store
        .update_account(
            &locked.account_id,
            AccountChange::Password {
                phc: password::hash("another long passphrase").unwrap(),
                must_change: false,
            },
        )
        .await
        .unwrap();
    let stale = json!({ "known_device": fresh });
    assert_eq!(
        login(&f, "owner", "another long passphrase", stale).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "a token outlived the password it was issued under"
    );
}
