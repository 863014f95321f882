//! Single sign-on against an OpenID Connect provider that the test runs on loopback:
//! discovery, the authorization code flow with PKCE (the provider checks the
//! verifier), ID tokens verified against its JWKS, claims mapped to roles, and every
//! way a sign-in must fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::*;
use vellum_archive::ports::{AccountChange, AccountStore as _, Role};
use vellum_gateway::auth::oidc::{Oidc, OidcSettings};
use zeroize::Zeroizing;

const CLIENT_ID: &str = "vellum-gateway";
const CLIENT_SECRET: &str = "a client secret the test made up";
const REDIRECT: &str = "http://127.0.0.1/v1/auth/oidc/callback";

/// How the provider's next ID token is made wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    None,
    WrongAudience,
    WrongIssuer,
    Expired,
    NotYetValid,
    WrongNonce,
    ForeignKey,
    HmacWithPublicKey,
    AlgNone,
    SeveralAudiencesNoAzp,
}

/// Who the provider says signs in next.
#[derive(Clone)]
struct Person {
    sub: String,
    email: String,
    groups: Vec<String>,
    amr: Vec<String>,
}

struct Authorization {
    challenge: String,
    nonce: String,
    redirect_uri: String,
}

struct Provider {
    url: String,
    key: SigningKey,
    codes: Mutex<HashMap<String, Authorization>>,
    person: Mutex<Person>,
    flaw: Mutex<Flaw>,
    /// Verifiers the token endpoint was shown, to prove PKCE was used.
    verifiers: Mutex<Vec<String>>,
}

fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    der.extend_from_slice(seed);
    der
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    axum::Json(json!({
        "issuer": p.url,
        "authorization_endpoint": format!("{}/authorize", p.url),
        "token_endpoint": format!("{}/token", p.url),
        "jwks_uri": format!("{}/jwks", p.url),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

async fn jwks(State(p): State<Arc<Provider>>) -> Response {
    let x = URL_SAFE_NO_PAD.encode(p.key.verifying_key().to_bytes());
    axum::Json(json!({ "keys": [
        { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "provider-1", "alg": "EdDSA", "use": "sig" }
    ]}))
    .into_response()
}

/// The person approves at once: straight back to the client with a code.
async fn authorize(State(p): State<Arc<Provider>>, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let code = URL_SAFE_NO_PAD.encode(rand_bytes());
    p.codes.lock().unwrap().insert(
        code.clone(),
        Authorization {
            challenge: q["code_challenge"].clone(),
            nonce: q["nonce"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
        },
    );
    let back = format!("{}?code={code}&state={}", q["redirect_uri"], q["state"]);
    Redirect::to(&back).into_response()
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).unwrap();
    b
}

async fn token(State(p): State<Arc<Provider>>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": error }))).into_response();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{}", CLIENT_SECRET.replace(' ', "+")))
    );
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return refuse("invalid_client");
    }
    // A code is good once.
    let Some(auth) = p.codes.lock().unwrap().remove(&form["code"]) else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    p.verifiers.lock().unwrap().push(verifier.clone());
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != auth.challenge
        || form["redirect_uri"] != auth.redirect_uri
        || form["grant_type"] != "authorization_code"
    {
        return refuse("invalid_grant");
    }
    let flaw = *p.flaw.lock().unwrap();
    let person = p.person.lock().unwrap().clone();
    let t = now();
    let mut claims = json!({
        "iss": p.url, "aud": CLIENT_ID, "sub": person.sub,
        "iat": t, "exp": t + 300, "nonce": auth.nonce,
        "email": person.email, "groups": person.groups, "amr": person.amr,
    });
    match flaw {
        Flaw::WrongAudience => claims["aud"] = json!("another-client"),
        Flaw::WrongIssuer => claims["iss"] = json!("https://impostor.example"),
        Flaw::Expired => {
            claims["iat"] = json!(t - 3600);
            claims["exp"] = json!(t - 600);
        }
        Flaw::NotYetValid => claims["nbf"] = json!(t + 3600),
        Flaw::WrongNonce => claims["nonce"] = json!("another sign-in"),
        Flaw::SeveralAudiencesNoAzp => claims["aud"] = json!([CLIENT_ID, "another-client"]),
        _ => {}
    }
    let id_token = match flaw {
        Flaw::HmacWithPublicKey => {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("provider-1".into());
            let secret = p.key.verifying_key().to_bytes();
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap()
        }
        Flaw::AlgNone => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"provider-1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        _ => {
            let seed = if flaw == Flaw::ForeignKey {
                [7u8; 32]
            } else {
                p.key.to_bytes()
            };
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some("provider-1".into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&pkcs8(&seed))).unwrap()
        }
    };
    axum::Json(json!({ "access_token": "opaque", "token_type": "Bearer", "id_token": id_token }))
        .into_response()
}

/// Starts the provider on a loopback port.
async fn provider() -> Arc<Provider> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    let provider = Arc::new(Provider {
        url,
        key: SigningKey::from_bytes(&seed),
        codes: Mutex::new(HashMap::new()),
        person: Mutex::new(Person {
            sub: "subject-ann".into(),
            email: "ann@agency.example".into(),
            groups: vec!["it-admins".into()],
            amr: vec!["pwd".into()],
        }),
        flaw: Mutex::new(Flaw::None),
        verifiers: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    provider
}

async fn fixture_for(provider: &Provider) -> Fixture {
    let settings = OidcSettings {
        issuer: provider.url.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(Zeroizing::new(CLIENT_SECRET.into())),
        redirect_uri: REDIRECT.into(),
        scopes: vec!["email".into(), "profile".into()],
        username_claim: "email".into(),
        roles_claim: "groups".into(),
        roles: vec![
            ("it-admins".into(), Role::Admin),
            ("auditors".into(), Role::Auditor),
            ("records-officers".into(), Role::Approver),
        ],
        mfa_amr: vec!["mfa".into(), "otp".into()],
    };
    let oidc = Oidc::new(settings, [42; 32]).unwrap();
    fixture_built(Default::default(), move |g| g.with_oidc(oidc)).await
}

/// The browser's side: start at the gateway, follow to the provider, come back.
/// Returns the callback's answer.
async fn sign_in(f: &Fixture) -> (StatusCode, String, String) {
    let (cookie, callback) = to_provider_and_back(f).await;
    callback_with(f, &callback, Some(&cookie)).await
}

async fn to_provider_and_back(f: &Fixture) -> (String, String) {
    let response = tower::ServiceExt::oneshot(
        f.app.clone(),
        Request::get("/v1/auth/oidc/start").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let set_cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let at_provider = client.get(&location).send().await.unwrap();
    assert_eq!(at_provider.status(), StatusCode::SEE_OTHER);
    let back = at_provider.headers()["location"].to_str().unwrap().to_owned();
    let callback = back.strip_prefix("http://127.0.0.1").unwrap().to_owned();
    (cookie, callback)
}

async fn callback_with(f: &Fixture, callback: &str, cookie: Option<&str>) -> (StatusCode, String, String) {
    let mut request = Request::get(callback);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(&f.app, request.body(Body::empty()).unwrap()).await
}

async fn role_of(f: &Fixture, username: &str) -> Option<Role> {
    let store = f.gateway.archive().log_store();
    store.account_by_username(username).await.unwrap().map(|a| a.role)
}

fn set_person(p: &Provider, email: &str, groups: &[&str], amr: &[&str]) {
    *p.person.lock().unwrap() = Person {
        sub: format!("subject-{email}"),
        email: email.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        amr: amr.iter().map(|a| (*a).to_owned()).collect(),
    };
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_with_pkce_and_gets_the_mapped_role() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    let (status, _, body) = sign_in(&f).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tokens["scope"], "full");
    // PKCE: the verifier the provider saw matches the challenge it was sent (the
    // provider refuses otherwise) and is a 43-character secret.
    assert_eq!(p.verifiers.lock().unwrap().last().unwrap().len(), 43);
    // The account was created with the mapped role and works at once.
    assert_eq!(role_of(&f, "ann@agency.example").await, Some(Role::Admin));
    let access = tokens["access_token"].as_str().unwrap();
    let request = Request::get("/v1/admin/accounts")
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, listing) = send(&f.app, request).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    // The account has no password: any password is refused, and not counted against it.
    for password in ["", "correct horse battery staple"] {
        let login = Request::post("/v1/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "username": "ann@agency.example", "password": password }).to_string(),
            ))
            .unwrap();
        assert_problem(&send(&f.app, login).await, StatusCode::UNAUTHORIZED);
    }
    let ann = f
        .gateway
        .archive()
        .log_store()
        .account_by_username("ann@agency.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ann.failed_logins, 0,
        "password attempts counted against a sign-on account"
    );

    // The provider moves her to the auditors, with a second factor: the role follows.
    // (Her subject stays the same: that, not the e-mail, is the binding.)
    *p.person.lock().unwrap() = Person {
        sub: "subject-ann".into(),
        email: "ann@agency.example".into(),
        groups: vec!["auditors".into()],
        amr: vec!["pwd".into(), "mfa".into()],
    };
    let (status, _, body) = sign_in(&f).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(role_of(&f, "ann@agency.example").await, Some(Role::Auditor));
    // The provider vouched for her second factor: the session is a full one, and it
    // refreshes (an auditor without a second factor could do neither).
    let tokens: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tokens["scope"], "full");
    let refresh = Request::post("/v1/auth/refresh")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "refresh_token": tokens["refresh_token"] }).to_string(),
        ))
        .unwrap();
    let (status, _, refreshed) = send(&f.app, refresh).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // Her e-mail changes at the provider: the same account, under its first name.
    *p.person.lock().unwrap() = Person {
        sub: "subject-ann".into(),
        email: "ann.married@agency.example".into(),
        groups: vec!["auditors".into()],
        amr: vec!["mfa".into()],
    };
    assert_eq!(sign_in(&f).await.0, StatusCode::OK);
    assert_eq!(role_of(&f, "ann.married@agency.example").await, None);

    let trail = f.gateway.archive().audit_trail(0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .map(|(_, e)| (e.actor.as_str(), e.action.as_str()))
        .collect();
    for expected in [("oidc", "account.create"), ("oidc", "account.role")] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
    assert_eq!(
        trail.iter().filter(|(_, e)| e.action == "login").count(),
        3,
        "{actions:?}"
    );
}

#[tokio::test]
async fn roles_that_need_a_second_factor_and_unmapped_people_are_refused() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    set_person(&p, "bo@agency.example", &["auditors"], &["pwd"]);
    assert_problem(&sign_in(&f).await, StatusCode::FORBIDDEN);
    assert_eq!(
        role_of(&f, "bo@agency.example").await,
        None,
        "a refused sign-in made an account"
    );
    set_person(&p, "cy@agency.example", &["staff"], &["pwd", "mfa"]);
    assert_problem(&sign_in(&f).await, StatusCode::FORBIDDEN);
    assert_eq!(
        role_of(&f, "cy@agency.example").await,
        None,
        "an unmapped person got an account"
    );
    set_person(&p, "di@agency.example", &["auditors", "it-admins"], &["mfa"]);
    assert_problem(&sign_in(&f).await, StatusCode::FORBIDDEN);
    assert_eq!(role_of(&f, "di@agency.example").await, None);

    // A disabled account stays out, whatever the provider says.
    set_person(&p, "ed@agency.example", &["it-admins"], &[]);
    assert_eq!(sign_in(&f).await.0, StatusCode::OK);
    let store = f.gateway.archive().log_store();
    let ed = store
        .account_by_username("ed@agency.example")
        .await
        .unwrap()
        .unwrap();
    store
        .update_account(
            &ed.account_id,
            AccountChange::Disabled(Some(vellum_protocol::ids::UnixMillis(1))),
        )
        .await
        .unwrap();
    assert_problem(&sign_in(&f).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_flawed_id_token_is_refused_and_creates_nothing() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    for (n, flaw) in [
        Flaw::WrongAudience,
        Flaw::WrongIssuer,
        Flaw::Expired,
        Flaw::NotYetValid,
        Flaw::WrongNonce,
        Flaw::ForeignKey,
        Flaw::HmacWithPublicKey,
        Flaw::AlgNone,
        Flaw::SeveralAudiencesNoAzp,
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("flaw{n}@agency.example");
        set_person(&p, &email, &["it-admins"], &[]);
        *p.flaw.lock().unwrap() = flaw;
        let answer = sign_in(&f).await;
        assert_problem(&answer, StatusCode::UNAUTHORIZED);
        assert!(answer.2.contains("ID token"), "{flaw:?}: {}", answer.2);
        assert_eq!(role_of(&f, &email).await, None, "{flaw:?} created an account");
    }
    *p.flaw.lock().unwrap() = Flaw::None;
    set_person(&p, "fi@agency.example", &["it-admins"], &[]);
    assert_eq!(
        sign_in(&f).await.0,
        StatusCode::OK,
        "the provider works when nothing is wrong"
    );
}

#[tokio::test]
async fn the_callback_needs_its_own_state_cookie_and_a_code_works_once() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    let (cookie, callback) = to_provider_and_back(&f).await;
    // No cookie, or the cookie of another sign-in: refused before the code is used.
    assert_problem(&callback_with(&f, &callback, None).await, StatusCode::BAD_REQUEST);
    let (other_cookie, _) = to_provider_and_back(&f).await;
    assert_problem(
        &callback_with(&f, &callback, Some(&other_cookie)).await,
        StatusCode::BAD_REQUEST,
    );
    let (value_name, value) = cookie.split_once('=').unwrap();
    let forged = format!("{value_name}={}x", value);
    assert_problem(
        &callback_with(&f, &callback, Some(&forged)).await,
        StatusCode::BAD_REQUEST,
    );
    // The right cookie signs in once; the same code again is refused by the provider.
    assert_eq!(
        callback_with(&f, &callback, Some(&cookie)).await.0,
        StatusCode::OK
    );
    assert_problem(
        &callback_with(&f, &callback, Some(&cookie)).await,
        StatusCode::UNAUTHORIZED,
    );
    // The provider's own refusal comes back as one.
    let state = callback.split("state=").nth(1).unwrap();
    let refused = format!("/v1/auth/oidc/callback?error=access_denied&state={state}");
    assert_problem(
        &callback_with(&f, &refused, Some(&cookie)).await,
        StatusCode::UNAUTHORIZED,
    );
}

#[tokio::test]
async fn without_a_provider_the_routes_say_so() {
    let f = fixture().await;
    assert_problem(
        &support::get(&f.app, "/v1/auth/oidc/start").await,
        StatusCode::NOT_FOUND,
    );
    assert_problem(
        &support::get(&f.app, "/v1/auth/oidc/callback?code=x&state=y").await,
        StatusCode::NOT_FOUND,
    );
}

/// Single sign-on never takes over an account it did not make: a local account, or
/// one bound to another subject, with the same username is refused.
#[tokio::test]
async fn a_provider_cannot_take_over_a_local_account() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    let store = f.gateway.archive().log_store();
    let local = vellum_archive::ports::NewAccount {
        account_id: [0x55; 16],
        username: "root@agency.example".into(),
        role: Role::Admin,
        password_phc: vellum_gateway::auth::password::unusable().unwrap(),
        must_change_password: false,
        external_id: None,
    };
    store
        .create_account(&local, vellum_protocol::ids::UnixMillis(1))
        .await
        .unwrap();
    set_person(&p, "root@agency.example", &["it-admins"], &["mfa"]);
    let refused = sign_in(&f).await;
    assert_problem(&refused, StatusCode::FORBIDDEN);
    assert!(
        refused.2.contains("does not sign in through this provider"),
        "{}",
        refused.2
    );

    // Someone else at the provider takes a name an earlier person's account holds.
    set_person(&p, "gus@agency.example", &["it-admins"], &[]);
    assert_eq!(sign_in(&f).await.0, StatusCode::OK);
    *p.person.lock().unwrap() = Person {
        sub: "a-different-person".into(),
        email: "gus@agency.example".into(),
        groups: vec!["it-admins".into()],
        amr: vec![],
    };
    assert_problem(&sign_in(&f).await, StatusCode::FORBIDDEN);
    let gus = store
        .account_by_username("gus@agency.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        gus.external_id.as_deref(),
        Some(format!("{} subject-gus@agency.example", p.url).as_str())
    );
}

/// The same person's two first sign-ons at once make one account, and both get in.
#[tokio::test]
async fn racing_first_sign_ons_share_one_account() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    set_person(&p, "hal@agency.example", &["it-admins"], &[]);
    let (one, two) = tokio::join!(sign_in(&f), sign_in(&f));
    assert_eq!(
        (one.0, two.0),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        one.2,
        two.2
    );
    let trail = f.gateway.archive().audit_trail(0, 100).await.unwrap();
    assert_eq!(
        trail.iter().filter(|(_, e)| e.action == "account.create").count(),
        1
    );
}

/// An administrator cannot give a sign-on account a password or a role of their own
/// choosing: the provider decides both.
#[tokio::test]
async fn administrators_cannot_override_the_provider() {
    let p = provider().await;
    let f = fixture_for(&p).await;
    let (status, _, body) = sign_in(&f).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    set_person(&p, "ivy@agency.example", &["it-admins"], &[]);
    let (status, _, body) = sign_in(&f).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    for action in ["reset-password", "role"] {
        let request = Request::post(format!("/v1/admin/accounts/ann@agency.example/{action}"))
            .header(header::AUTHORIZATION, format!("Bearer {access}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({ "role": "auditor" }).to_string()))
            .unwrap();
        let refused = send(&f.app, request).await;
        assert_problem(&refused, StatusCode::CONFLICT);
    }
    assert_eq!(role_of(&f, "ann@agency.example").await, Some(Role::Admin));
    // Disabling still works: that is how an administrator stops one at once.
    let request = Request::post("/v1/admin/accounts/ann@agency.example/disable")
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, request).await.0, StatusCode::NO_CONTENT);
}
