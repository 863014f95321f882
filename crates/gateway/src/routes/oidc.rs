//! Single sign-on: the two steps of the OpenID Connect authorization code flow with
//! PKCE (the protocol is in `auth::oidc`). The callback maps the provider's claims to
//! a local account, creating it at first sign-in, and starts a session as a password
//! sign-in would.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vellum_archive::error::AccountError;
use vellum_archive::ports::{AccountChange, BlobStore, NewAccount};
use vellum_protocol::ids::{RecordId, UnixMillis};

use super::auth::{PeopleStore, Tokens, audit, needs_mfa, start_session};
use crate::State;
use crate::auth::jwt::Scope;
use crate::auth::oidc::{Callback, FLOW_SECS, Oidc, OidcError};
use crate::auth::password;
use crate::problem::{ApiError, Problem};

/// Who creates accounts and changes roles on a provider's word, in the audit trail.
const ACTOR: &str = "oidc";

fn provider<L: PeopleStore, B: BlobStore>(state: &State<L, B>) -> Result<&Oidc, ApiError> {
    state
        .oidc()
        .ok_or_else(|| ApiError::NotFound("single sign-on is not configured".into()))
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::State => ApiError::BadRequest(e.to_string()),
            OidcError::Provider(_) => {
                tracing::warn!(error = %e, "single sign-on");
                ApiError::Unavailable
            }
            OidcError::Refused(_) => ApiError::Unauthorized(e.to_string()),
            OidcError::NoRole(_) => ApiError::Forbidden(e.to_string()),
        }
    }
}

fn no_second_factor(role: vellum_archive::ports::Role) -> ApiError {
    ApiError::Forbidden(format!(
        "the {} role needs a second factor, and the identity provider did not report one (amr)",
        role.as_str()
    ))
}

fn cookie(oidc: &Oidc, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    // Over HTTPS the `__Host-` prefix binds the cookie to this host (no sibling domain
    // can plant one); browsers accept that prefix only with `Secure` and `Path=/`.
    let attributes = if oidc.secure_cookie() {
        "Path=/; Secure"
    } else {
        "Path=/v1/auth/oidc"
    };
    HeaderValue::from_str(&format!(
        "{}={value}; {attributes}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
        oidc.cookie_name()
    ))
    .map_err(|_| ApiError::Internal)
}

fn flow_cookie<'h>(oidc: &Oidc, headers: &'h HeaderMap) -> Option<&'h str> {
    let name = oidc.cookie_name();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// `GET /v1/auth/oidc/start`: sends the browser to the identity provider.
#[utoipa::path(get, path = "/v1/auth/oidc/start", tag = "people", responses(
    (status = 303, description = "To the identity provider (Location); sets a short-lived, signed sign-in cookie."),
    (status = 404, description = "Single sign-on is not configured.", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many attempts from this address.", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "The identity provider cannot be reached.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn start<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    peer: crate::server::Peer,
) -> Result<Response, ApiError> {
    let oidc = provider(&state)?;
    state.login_limits().check_address(peer.ip())?;
    let (location, value) = oidc.start(crate::now_ms() / 1000).await?;
    let mut answer = StatusCode::SEE_OTHER.into_response();
    let headers = answer.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| ApiError::Internal)?,
    );
    headers.insert(header::SET_COOKIE, cookie(oidc, &value, FLOW_SECS)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

/// `GET /v1/auth/oidc/callback`: where the identity provider sends the browser back;
/// answers with tokens as a password sign-in does.
#[utoipa::path(get, path = "/v1/auth/oidc/callback", tag = "people", params(Callback), responses(
    (status = 200, description = "Signed in.", body = Tokens),
    (status = 400, description = "The sign-in state is missing, expired or does not match.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "The provider refused, its ID token did not verify, or the account is disabled.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "The claims give no role here (or several), the role needs a second factor the provider did not report, or the username belongs to an account that does not sign in through this provider.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "Single sign-on is not configured.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The username was taken meanwhile by another account.", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many attempts from this address.", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "The identity provider cannot be reached.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn callback<L: PeopleStore, B: BlobStore>(
    state: State<L, B>,
    peer: crate::server::Peer,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Result<Response, ApiError> {
    let oidc = provider(&state)?;
    let Query(callback) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // Before the provider is asked anything; only the address counts (a password
    // flood aimed at a username must not hold its owner off single sign-on).
    state.login_limits().check_address(peer.ip())?;
    let identity = oidc
        .finish(flow_cookie(oidc, &headers), &callback, crate::now_ms() / 1000)
        .await?;
    let store = state.archive().log_store();
    let now = UnixMillis(crate::now_ms());
    let external_id = format!("{} {}", oidc.settings().issuer, identity.subject);
    let second_factor_missing = needs_mfa(identity.role) && !identity.second_factor;
    let account = match store.account_by_external_id(&external_id).await? {
        Some(account) => account,
        None => match store.account_by_username(&identity.username).await? {
            // Made by a racing sign-on of the same person since the lookup above.
            Some(account) if account.external_id.as_deref() == Some(external_id.as_str()) => account,
            Some(_) => {
                // A local account, or one bound to another identity: single sign-on
                // never takes over an account it did not make.
                return Err(ApiError::Forbidden(format!(
                    "the username {} belongs to an account that does not sign in through this provider",
                    identity.username
                )));
            }
            None => {
                if second_factor_missing {
                    return Err(no_second_factor(identity.role));
                }
                let new = NewAccount {
                    account_id: *RecordId::new_v7(now.0).as_bytes(),
                    username: identity.username.clone(),
                    role: identity.role,
                    password_phc: password::unusable().map_err(|_| ApiError::Internal)?,
                    must_change_password: false,
                    external_id: Some(external_id.clone()),
                };
                match store.create_account(&new, now).await {
                    Ok(()) => {
                        let detail = serde_json::json!({ "role": identity.role.as_str(), "via": "oidc" });
                        let subject = hex::encode(new.account_id);
                        audit(state.archive(), ACTOR, "account.create", &subject, detail).await?;
                    }
                    // A racing first sign-in of the same person made it: use that one.
                    Err(AccountError::ExternalIdTaken) => {}
                    Err(e) => return Err(ApiError::from(e)),
                }
                store
                    .account_by_external_id(&external_id)
                    .await?
                    .ok_or(ApiError::Internal)?
            }
        },
    };
    let subject = hex::encode(account.account_id);
    let refuse = async |reason: &str| -> Result<(), ApiError> {
        let detail = serde_json::json!({ "reason": reason, "via": "oidc" });
        audit(state.archive(), "-", "login.failed", &subject, detail).await
    };
    if account.disabled_at.is_some() {
        refuse("account disabled").await?;
        return Err(ApiError::Unauthorized("this account is disabled".into()));
    }
    if second_factor_missing {
        refuse("no second factor at the identity provider").await?;
        return Err(no_second_factor(identity.role));
    }
    if account.role != identity.role {
        // The provider's groups are the source of truth for people who sign in here.
        store
            .update_account(&account.account_id, AccountChange::Role(identity.role))
            .await?;
        let detail = serde_json::json!({ "role": identity.role.as_str(), "via": "oidc" });
        audit(state.archive(), ACTOR, "account.role", &subject, detail).await?;
    }
    store
        .update_account(&account.account_id, AccountChange::LoginSucceeded)
        .await?;
    let account = vellum_archive::ports::Account {
        role: identity.role,
        ..account
    };
    let tokens = start_session(&state, &account, Scope::Full, identity.second_factor).await?;
    let detail = serde_json::json!({ "scope": Scope::Full, "via": "oidc" });
    audit(state.archive(), &subject, "login", &subject, detail).await?;
    let mut answer = Json(tokens).into_response();
    let headers = answer.headers_mut();
    headers.insert(header::SET_COOKIE, cookie(oidc, "", 0)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}
