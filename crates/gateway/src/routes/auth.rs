//! Sign-in for people: login, refresh, logout, password change, TOTP enrollment.
//!
//! Every password failure a guesser could learn from reads the same ("invalid username
//! or password") and takes at least the same time: unknown accounts, wrong passwords,
//! disabled, locked and single-sign-on accounts. Unknown usernames cost a full Argon2
//! verification too. Only a right password earns the next question (the second
//! factor), as with any two-step sign-in.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vellum_archive::ports::{
    Account, AccountChange, AccountStore, AuditStore, BlobStore, LogStore, NewSession, Refreshed, Role,
    SessionStore,
};
use vellum_protocol::ids::UnixMillis;
use zeroize::Zeroizing;

use super::json;
use crate::State;
use crate::auth::jwt::Scope;
use crate::auth::{KnownDevice, Person, lock_duration, password, totp};
use crate::device::{hash_secret, new_secret};
use crate::problem::{ApiError, Problem};
use vellum_archive::Archive;

/// The stores people's routes need.
pub(crate) trait PeopleStore: LogStore + AccountStore + SessionStore + AuditStore {}
impl<T: LogStore + AccountStore + SessionStore + AuditStore> PeopleStore for T {}

fn invalid_login() -> ApiError {
    ApiError::Unauthorized("invalid username or password".into())
}

/// Records an audit event; a failure to record fails the request (an action that
/// cannot be audited does not happen silently).
pub(crate) async fn audit<L: PeopleStore, B: BlobStore>(
    archive: &Archive<L, B>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    Ok(crate::auth::admin::audit(archive, actor, action, subject, detail).await?)
}

#[derive(Deserialize, ToSchema, zeroize::Zeroize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    username: String,
    password: String,
    /// A current TOTP code, once the account has one.
    #[serde(default)]
    totp: Option<String>,
    /// A recovery code, instead of a TOTP code.
    #[serde(default)]
    recovery_code: Option<String>,
    /// The known-device token of an earlier sign-in on this device: this attempt is
    /// then exempt from the account's lock and per-account rate limit.
    #[serde(default)]
    known_device: Option<String>,
}

/// Tokens for a session.
#[derive(Serialize, ToSchema)]
pub(super) struct Tokens {
    /// The access token (a JWT), sent as `Authorization: Bearer`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: u64,
    /// `full`, or `mfa-setup` when the account must enroll a second factor first.
    scope: Scope,
    /// The refresh token (absent for an `mfa-setup` session): good once.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// A known-device token (after a password sign-in), good for 90 days: present it
    /// at later sign-ins from this device (`known_device`).
    #[serde(skip_serializing_if = "Option::is_none")]
    known_device: Option<String>,
}

/// Whether a role must have a second factor.
pub(crate) fn needs_mfa(role: Role) -> bool {
    matches!(role, Role::Auditor | Role::Approver)
}

fn now_secs() -> u64 {
    crate::now_ms() / 1000
}

/// `POST /v1/auth/login`: password (and second factor) for tokens.
#[utoipa::path(post, path = "/v1/auth/login", tag = "people", request_body = LoginRequest, responses(
    (status = 200, description = "Signed in.", body = Tokens),
    (status = 400, description = "Malformed request.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "Invalid username or password, or second factor.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "The password must be changed first (POST /v1/auth/password).", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many attempts from this address or for this account.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn login<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    peer: crate::server::Peer,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<Tokens>, ApiError> {
    let request = Zeroizing::new(json(body)?);
    let store = state.archive().log_store();
    let factors = Factors {
        username: &request.username,
        password: &request.password,
        totp: request.totp.as_deref(),
        recovery_code: request.recovery_code.as_deref(),
        known_device: request.known_device.as_deref(),
    };
    let account = identify(&state, peer, &factors).await?;
    if account.must_change_password {
        return Err(ApiError::Forbidden(
            "the password must be changed first: POST /v1/auth/password".into(),
        ));
    }
    let subject = hex::encode(account.account_id);
    let scope = if needs_mfa(account.role) && !account.totp_enabled {
        Scope::MfaSetup
    } else {
        Scope::Full
    };
    store
        .update_account(&account.account_id, AccountChange::LoginSucceeded)
        .await?;
    if password::needs_rehash(&account.password_phc, state.auth().password_cost()) {
        // Best effort: when the gateway's password work is rationed away, the
        // stronger hash waits for the next sign-in rather than failing this one.
        match state.auth().hash_password(&request.password).await {
            Ok(phc) => {
                let change = AccountChange::Password {
                    phc,
                    must_change: false,
                };
                store.update_account(&account.account_id, change).await?;
            }
            Err(e) => tracing::info!(error = %e, "password rehash postponed"),
        }
    }
    let mut tokens = start_session(&state, &account, scope, false).await?;
    let account = store
        .account_by_id(&account.account_id)
        .await?
        .ok_or(ApiError::Internal)?;
    tokens.known_device = Some(state.auth().known_device_token(&account, now_secs()));
    audit(
        state.archive(),
        &subject,
        "login",
        &subject,
        serde_json::json!({ "scope": scope }),
    )
    .await?;
    Ok(Json(tokens))
}

/// What a person presents to prove who they are.
struct Factors<'a> {
    username: &'a str,
    password: &'a str,
    totp: Option<&'a str>,
    recovery_code: Option<&'a str>,
    known_device: Option<&'a str>,
}

/// The account these factors prove, within the rate limits: the password, and the
/// second factor when the account has one.
async fn identify<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    peer: crate::server::Peer,
    factors: &Factors<'_>,
) -> Result<Account, ApiError> {
    let device = factors
        .known_device
        .and_then(|token| state.auth().known_device(token, now_secs()));
    state.login_limits().check_address(peer.ip())?;
    match &device {
        Some(device) => state.login_limits().check_device(device)?,
        None => state.login_limits().check_account(factors.username)?,
    }
    let account = checked_password(state, factors.username, factors.password, device).await?;
    if account.totp_enabled {
        // A known device lifts the lock for the password only: while the account is
        // locked no second factor is evaluated, so a stolen device token and password
        // give no codes to guess.
        if let Some(until) = account.locked_until.filter(|u| u.0 > crate::now_ms()) {
            return Err(ApiError::Unauthorized(format!(
                "the account is locked after failed sign-ins until {}: its second factor is checked once the lock ends",
                vellum_protocol::time::rfc3339(until.0)
            )));
        }
        second_factor(state, &account, factors.totp, factors.recovery_code).await?;
    }
    Ok(account)
}

/// The account whose password this is, counting failures and honouring locks;
/// every failure answers alike.
async fn checked_password<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    username: &str,
    password: &str,
    device: Option<KnownDevice>,
) -> Result<Account, ApiError> {
    let started = tokio::time::Instant::now();
    let refused = checked_password_inner(state, username, password, device).await;
    // (Busy answers come before any account-specific work and are not delayed.)
    if matches!(refused, Err(ApiError::Unauthorized(_))) {
        // Every refusal takes at least this long, whatever it did (an unknown name
        // writes nothing, a known one records the failure): the time tells nothing.
        tokio::time::sleep_until(started + FAILED_LOGIN_FLOOR).await;
    }
    refused
}

/// The least time a refused password check takes.
const FAILED_LOGIN_FLOOR: std::time::Duration = std::time::Duration::from_millis(300);

async fn checked_password_inner<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    username: &str,
    password: &str,
    device: Option<KnownDevice>,
) -> Result<Account, ApiError> {
    let store = state.archive().log_store();
    let account = store.account_by_username(username).await?;
    // A known device exempts only the account and credentials it was issued for from
    // the lock and the per-account limit; any other token counts as none.
    let known = match (&device, &account) {
        (Some(device), Some(account)) => device.holds_for(account),
        _ => false,
    };
    if device.is_some() && !known {
        state.login_limits().check_account(username)?;
    }
    let ok = state
        .auth()
        .check_password(account.as_ref().map(|a| a.password_phc.as_str()), password)
        .await?;
    let Some(account) = account else {
        return Err(invalid_login());
    };
    if account.external_id.is_some() {
        // An account made by single sign-on has no password (its hash matches none):
        // refused like any other, after the same work, and nothing counted, so a
        // password flood cannot lock its owner out of single sign-on.
        return Err(invalid_login());
    }
    let subject = hex::encode(account.account_id);
    let now = UnixMillis(crate::now_ms());
    let locked = !known && account.locked_until.is_some_and(|until| until > now);
    if ok && !locked && account.disabled_at.is_none() {
        return Ok(account);
    }
    if locked {
        // The lock was audited when it began; attempts against it write nothing, so a
        // flood aimed at one account costs the database nothing.
        return Err(invalid_login());
    }
    if !ok {
        count_failure(state, &account).await?;
    }
    let reason = if ok { "account disabled" } else { "wrong password" };
    let detail = serde_json::json!({ "reason": reason });
    audit(state.archive(), "-", "login.failed", &subject, detail).await?;
    Err(invalid_login())
}

/// Counts a failed password or second factor, locking the account for a while once
/// there were too many in a row.
async fn count_failure<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    account: &Account,
) -> Result<(), ApiError> {
    let store = state.archive().log_store();
    let failures = store.login_failed(&account.account_id).await?;
    if let Some(lock) = lock_duration(failures) {
        let until = UnixMillis(crate::now_ms() + lock.as_millis() as u64);
        store
            .update_account(&account.account_id, AccountChange::LockedUntil(until))
            .await?;
        let detail = serde_json::json!({ "failures": failures, "until": until.0 });
        audit(
            state.archive(),
            "-",
            "account.locked",
            &hex::encode(account.account_id),
            detail,
        )
        .await?;
    }
    Ok(())
}

/// The TOTP secret an account's stored value holds. One that does not open (a key
/// missing since the gateway started, a damaged value) is logged and refused as the
/// gateway's own failure.
fn open_secret<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    account: &Account,
    stored: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
    state
        .auth()
        .totp_keys()
        .open(&account.account_id, stored)
        .map_err(|e| {
            tracing::error!(error = %e, "a stored TOTP secret does not open");
            ApiError::Internal
        })
}

/// Checks a TOTP code (each step once) or spends a recovery code.
async fn second_factor<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    account: &Account,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<(), ApiError> {
    let store = state.archive().log_store();
    let subject = hex::encode(account.account_id);
    let secret = match account.totp_secret.as_ref() {
        Some(stored) => Some(open_secret(state, account, stored)?),
        None => None,
    };
    let accepted = match (code, recovery, secret.as_ref()) {
        (Some(code), _, Some(secret)) => match totp::matching_step(secret, code, now_secs()) {
            Some(step) => store.use_totp_step(&account.account_id, step).await?,
            None => false,
        },
        (None, Some(recovery), _) => match recovery_hash(recovery) {
            Some(hash) => {
                store
                    .use_recovery_code(&account.account_id, &hash, UnixMillis(crate::now_ms()))
                    .await?
            }
            None => false,
        },
        _ => false,
    };
    if accepted {
        return Ok(());
    }
    count_failure(state, account).await?;
    audit(
        state.archive(),
        "-",
        "login.failed",
        &subject,
        serde_json::json!({ "reason": "second factor" }),
    )
    .await?;
    Err(ApiError::Unauthorized(
        "a valid TOTP code (totp) or recovery code (recovery_code) is required".into(),
    ))
}

/// The stored form of a recovery code: SHA-256 of its 16 base32 characters, with
/// dashes and spaces dropped and letters upper-cased (so it may be typed loosely).
fn recovery_hash(code: &str) -> Option<vellum_archive::ports::SecretHash> {
    use sha2::{Digest as _, Sha256};
    let normalised: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (normalised.len() == 16)
        .then(|| vellum_archive::ports::SecretHash(Sha256::digest(normalised.as_bytes()).into()))
}

/// A recovery code: 80 random bits as 16 base32 characters, `XXXX-XXXX-XXXX-XXXX`.
fn new_recovery_code() -> Result<Zeroizing<String>, ApiError> {
    let mut raw = [0u8; 10];
    getrandom::getrandom(&mut raw).map_err(|_| ApiError::Internal)?;
    let text = totp::base32(&raw);
    let groups: Vec<&str> = (0..4).map(|i| &text[i * 4..i * 4 + 4]).collect();
    Ok(Zeroizing::new(groups.join("-")))
}

pub(super) async fn start_session<L: PeopleStore, B: BlobStore>(
    state: &State<L, B>,
    account: &Account,
    scope: Scope,
    idp_second_factor: bool,
) -> Result<Tokens, ApiError> {
    let store = state.archive().log_store();
    let auth = state.auth();
    let mut session = [0u8; 16];
    getrandom::getrandom(&mut session).map_err(|_| ApiError::Internal)?;
    let now = crate::now_ms();
    let (refresh, refresh_hash) = new_secret()?;
    let expires = UnixMillis(now + auth.refresh_secs() * 1000);
    store
        .start_session(&NewSession {
            family_id: session,
            account_id: account.account_id,
            refresh: &refresh_hash,
            now: UnixMillis(now),
            expires_at: expires,
            ends_at: UnixMillis(now + auth.session_secs() * 1000),
            idp_second_factor,
        })
        .await?;
    let access = auth
        .jwt()
        .issue(&account.account_id, &session, account.role, scope, now / 1000)
        .map_err(|_| ApiError::Internal)?;
    Ok(Tokens {
        access_token: access,
        token_type: "Bearer",
        expires_in: auth.jwt().ttl_secs(),
        scope,
        refresh_token: (scope == Scope::Full).then_some(refresh),
        known_device: None,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// `POST /v1/auth/refresh`: a refresh token for a new pair; each is good once.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "people", request_body = RefreshRequest, responses(
    (status = 200, description = "New tokens; the presented refresh token is spent.", body = Tokens),
    (status = 401, description = "Unknown, expired or spent refresh token; a spent one ends its session.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn refresh<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Json<Tokens>, ApiError> {
    let request = json(body)?;
    let refused = || ApiError::Unauthorized("invalid refresh token".into());
    let presented = hash_secret(&request.refresh_token).ok_or_else(refused)?;
    let store = state.archive().log_store();
    let auth = state.auth();
    let (next, next_hash) = new_secret()?;
    let now = crate::now_ms();
    let expires = UnixMillis(now + auth.refresh_secs() * 1000);
    match store
        .rotate_refresh(&presented, &next_hash, UnixMillis(now), expires)
        .await?
    {
        Refreshed::Rotated {
            account_id,
            family_id,
        } => {
            let account = store.account_by_id(&account_id).await?.ok_or_else(refused)?;
            let vouched = store
                .session_principal(&account_id, &family_id)
                .await?
                .is_some_and(|p| p.idp_second_factor);
            if needs_mfa(account.role) && !account.totp_enabled && !vouched {
                // A role that needs a second factor, without one (a promotion since
                // sign-in): no full session until one is set up.
                store
                    .end_session(&family_id, UnixMillis(now), "second factor required")
                    .await?;
                return Err(ApiError::Unauthorized(
                    "this role needs a second factor: sign in again to set one up".into(),
                ));
            }
            let access = auth
                .jwt()
                .issue(&account_id, &family_id, account.role, Scope::Full, now / 1000)
                .map_err(|_| ApiError::Internal)?;
            Ok(Json(Tokens {
                access_token: access,
                token_type: "Bearer",
                expires_in: auth.jwt().ttl_secs(),
                scope: Scope::Full,
                refresh_token: Some(next),
                known_device: None,
            }))
        }
        Refreshed::Reused { family_id } => {
            let session = hex::encode(family_id);
            audit(
                state.archive(),
                "-",
                "session.reuse",
                &session,
                serde_json::json!({}),
            )
            .await?;
            Err(refused())
        }
        _ => Err(refused()),
    }
}

/// `POST /v1/auth/logout`: ends the session of the access token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "people", security(("access_token" = [])), responses(
    (status = 204, description = "The session ended: its refresh and access tokens no longer work."),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn logout<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
) -> Result<StatusCode, ApiError> {
    let store = state.archive().log_store();
    store
        .end_session(&person.session, UnixMillis(crate::now_ms()), "logout")
        .await?;
    let actor = person.id_text();
    audit(
        state.archive(),
        &actor,
        "logout",
        &hex::encode(person.session),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema, zeroize::Zeroize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    username: String,
    password: String,
    new_password: String,
    /// A current TOTP code, when the account has a second factor.
    #[serde(default)]
    totp: Option<String>,
    /// A recovery code, instead of a TOTP code.
    #[serde(default)]
    recovery_code: Option<String>,
    /// The known-device token of an earlier sign-in on this device: this attempt is
    /// then exempt from the account's lock and per-account rate limit.
    #[serde(default)]
    known_device: Option<String>,
}

/// `POST /v1/auth/password`: changes a password, given the current one. Other sessions
/// of the account end.
#[utoipa::path(post, path = "/v1/auth/password", tag = "people", request_body = PasswordChange, responses(
    (status = 204, description = "Changed; sign in again."),
    (status = 400, description = "The new password breaks a rule (the detail says which).", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "Invalid username or password.", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many attempts.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn change_password<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    peer: crate::server::Peer,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = Zeroizing::new(json(body)?);
    let factors = Factors {
        username: &request.username,
        password: &request.password,
        totp: request.totp.as_deref(),
        recovery_code: request.recovery_code.as_deref(),
        known_device: request.known_device.as_deref(),
    };
    let account = identify(&state, peer, &factors).await?;
    password::check_new(&request.new_password, &request.username).map_err(ApiError::BadRequest)?;
    if request.new_password == request.password {
        return Err(ApiError::BadRequest(
            "the new password must differ from the current one".into(),
        ));
    }
    let phc = state.auth().hash_password(&request.new_password).await?;
    let store = state.archive().log_store();
    store
        .update_account(
            &account.account_id,
            AccountChange::Password {
                phc,
                must_change: false,
            },
        )
        .await?;
    store
        .end_sessions_of(
            &account.account_id,
            UnixMillis(crate::now_ms()),
            "password changed",
        )
        .await?;
    let subject = hex::encode(account.account_id);
    audit(
        state.archive(),
        &subject,
        "password.change",
        &subject,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new TOTP secret, to be confirmed with a first code.
#[derive(Serialize, ToSchema)]
pub(super) struct TotpSetup {
    /// The secret, base32 (what authenticator apps take by hand).
    secret: String,
    /// The `otpauth://` URI (what they take from a QR code).
    uri: String,
}

/// `POST /v1/auth/totp`: issues a TOTP secret for the signed-in account.
#[utoipa::path(post, path = "/v1/auth/totp", tag = "people", security(("access_token" = [])), responses(
    (status = 200, description = "A secret to confirm with POST /v1/auth/totp/confirm.", body = TotpSetup),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The account has a confirmed second factor already.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn totp_setup<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
) -> Result<Json<TotpSetup>, ApiError> {
    let store = state.archive().log_store();
    let account = store
        .account_by_id(&person.account_id)
        .await?
        .ok_or(ApiError::Internal)?;
    if account.totp_enabled {
        return Err(ApiError::Conflict("a second factor is set up already".into()));
    }
    let secret = totp::new_secret().map_err(|_| ApiError::Internal)?;
    let setup = TotpSetup {
        secret: totp::base32(&secret),
        uri: totp::provisioning_uri("Vellum", &account.username, &secret),
    };
    // Stored sealed: a copy of the database alone yields no second factor.
    let sealed = state
        .auth()
        .totp_keys()
        .seal(&person.account_id, &secret)
        .map_err(|_| ApiError::Internal)?;
    store
        .update_account(&person.account_id, AccountChange::TotpSecret(Some(sealed)))
        .await?;
    Ok(Json(setup))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpConfirm {
    /// A current code from the authenticator.
    code: String,
}

/// Recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub(super) struct RecoveryCodes {
    /// Ten single-use codes (`XXXX-XXXX-XXXX-XXXX`); each replaces a TOTP code once.
    recovery_codes: Vec<String>,
}

/// `POST /v1/auth/totp/confirm`: enables the second factor with a first code and
/// returns recovery codes. The session ends: sign in again with a code.
#[utoipa::path(post, path = "/v1/auth/totp/confirm", tag = "people", request_body = TotpConfirm, security(("access_token" = [])), responses(
    (status = 200, description = "Enabled; the recovery codes are shown this once.", body = RecoveryCodes),
    (status = 400, description = "Wrong code, or no secret issued.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn totp_confirm<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    Extension(person): Extension<Person>,
    body: Result<Json<TotpConfirm>, JsonRejection>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let request = json(body)?;
    let store = state.archive().log_store();
    let account = store
        .account_by_id(&person.account_id)
        .await?
        .ok_or(ApiError::Internal)?;
    let wrong = || ApiError::BadRequest("the code does not match the issued secret".into());
    let (Some(stored), false) = (account.totp_secret.as_ref(), account.totp_enabled) else {
        return Err(ApiError::BadRequest(
            "no unconfirmed TOTP secret: POST /v1/auth/totp first".into(),
        ));
    };
    let secret = open_secret(&state, &account, stored)?;
    let step = totp::matching_step(&secret, &request.code, now_secs()).ok_or_else(wrong)?;
    if !store.use_totp_step(&person.account_id, step).await? {
        return Err(wrong());
    }
    // Enables exactly the secret the code was checked against: if another request
    // issued a new one meanwhile, nothing is enabled.
    let confirmed = AccountChange::TotpEnabled(stored.clone());
    if !store.update_account(&person.account_id, confirmed).await? {
        return Err(ApiError::Conflict(
            "a new TOTP secret was issued meanwhile: confirm that one".into(),
        ));
    }
    let mut codes = Vec::with_capacity(10);
    let mut hashes = Vec::with_capacity(10);
    for _ in 0..10 {
        let code = new_recovery_code()?;
        hashes.push(recovery_hash(&code).ok_or(ApiError::Internal)?);
        codes.push(code.to_string());
    }
    store.set_recovery_codes(&person.account_id, &hashes).await?;
    store
        .end_session(
            &person.session,
            UnixMillis(crate::now_ms()),
            "second factor enabled",
        )
        .await?;
    let subject = person.id_text();
    audit(
        state.archive(),
        &subject,
        "mfa.enable",
        &subject,
        serde_json::json!({ "kind": "totp" }),
    )
    .await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}
