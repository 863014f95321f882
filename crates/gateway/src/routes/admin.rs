//! Administration of accounts and devices (administrators only; see the policy table
//! in `routes/mod.rs`). An administrator never sees a password: new and reset
//! accounts get a one-time password shown once, to be changed at first sign-in.

use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vellum_archive::ports::{BlobStore, DeviceStore, NewAccount, Role, valid_username};
use vellum_protocol::ids::{Custodian, DeviceId, RecordId, RetentionClass, UnixMillis};

use super::auth::{PeopleStore, audit};
use super::json;
use crate::State;
use crate::auth::admin::{self, AdminChange};
use crate::auth::{Person, password};
use crate::problem::{ApiError, Problem};

/// Applies an administrator's `change` to another account: 204, or why not.
async fn change<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: &State<L, B>,
    admin: &Person,
    username: &str,
    change: AdminChange,
) -> Result<StatusCode, ApiError> {
    let id = other_account(state, admin, username).await?;
    admin::apply(state.archive(), &admin.id_text(), &id, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn role_of(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| ApiError::BadRequest("role: admin, auditor or approver".into()))
}

/// An account as administrators see it (no password hash, no TOTP secret).
#[derive(Serialize, ToSchema)]
pub(super) struct AccountView {
    username: String,
    role: String,
    disabled: bool,
    must_change_password: bool,
    totp_enabled: bool,
    created_at: u64,
}

/// `GET /v1/admin/accounts`: every account.
#[utoipa::path(get, path = "/v1/admin/accounts", tag = "admin", security(("access_token" = [])), responses(
    (status = 200, description = "Every account, by username.", body = Vec<AccountView>),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    let accounts = state.archive().log_store().list_accounts().await?;
    Ok(Json(
        accounts
            .into_iter()
            .map(|a| AccountView {
                username: a.username,
                role: a.role.as_str().to_owned(),
                disabled: a.disabled_at.is_some(),
                must_change_password: a.must_change_password,
                totp_enabled: a.totp_enabled,
                created_at: a.created_at.0,
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAccountRequest {
    /// 1-64 characters of `[a-z0-9._@-]`.
    username: String,
    /// `admin`, `auditor` or `approver`.
    role: String,
}

/// A one-time password, shown once.
#[derive(Serialize, ToSchema)]
pub(super) struct OneTimePassword {
    username: String,
    /// To be changed at first sign-in (POST /v1/auth/password).
    one_time_password: String,
}

/// `POST /v1/admin/accounts`: creates an account with a one-time password.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", request_body = NewAccountRequest, security(("access_token" = [])), responses(
    (status = 201, description = "Created; the one-time password is shown this once.", body = OneTimePassword),
    (status = 400, description = "Bad username or role.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The username is taken.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn create<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    body: Result<Json<NewAccountRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<OneTimePassword>), ApiError> {
    let request = json(body)?;
    if !valid_username(&request.username) {
        return Err(ApiError::BadRequest(
            "username: 1-64 characters of [a-z0-9._@-]".into(),
        ));
    }
    let role = role_of(&request.role)?;
    let one_time = password::one_time_password().map_err(|_| ApiError::Internal)?;
    let account = NewAccount {
        account_id: *RecordId::new_v7(crate::now_ms()).as_bytes(),
        username: request.username.clone(),
        role,
        password_phc: state.auth().hash_password(&one_time).await?,
        must_change_password: true,
        external_id: None,
    };
    let store = state.archive().log_store();
    store
        .create_account(&account, UnixMillis(crate::now_ms()))
        .await?;
    let subject = hex::encode(account.account_id);
    audit(
        state.archive(),
        &admin.id_text(),
        "account.create",
        &subject,
        serde_json::json!({ "role": role.as_str() }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(OneTimePassword {
            username: request.username,
            one_time_password: one_time.to_string(),
        }),
    ))
}

/// The account named in the path, refused if it is the caller's own (an
/// administrator cannot demote, disable or reset themselves: another one must).
async fn other_account<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: &State<L, B>,
    admin: &Person,
    username: &str,
) -> Result<[u8; 16], ApiError> {
    let account = state
        .archive()
        .log_store()
        .account_by_username(username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {username:?}")))?;
    if account.account_id == admin.account_id {
        return Err(ApiError::Forbidden(
            "another administrator must change your own account".into(),
        ));
    }
    Ok(account.account_id)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleRequest {
    /// `admin`, `auditor` or `approver`.
    role: String,
}

/// `POST /v1/admin/accounts/{username}/role`: changes an account's role (effective at
/// once, for live sessions too).
#[utoipa::path(post, path = "/v1/admin/accounts/{username}/role", tag = "admin", request_body = RoleRequest,
    params(("username" = String, Path, description = "The account.")),
    security(("access_token" = [])), responses(
    (status = 204, description = "Changed."),
    (status = 400, description = "Bad role.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator, or the caller's own account.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The account signs in through single sign-on: the provider sets its role and it has no password here.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn set_role<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(username): Path<String>,
    body: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let role = role_of(&json(body)?.role)?;
    change(&state, &admin, &username, AdminChange::SetRole(role)).await
}

/// `POST /v1/admin/accounts/{username}/disable`: disables an account and ends its
/// sessions at once.
#[utoipa::path(post, path = "/v1/admin/accounts/{username}/disable", tag = "admin",
    params(("username" = String, Path, description = "The account.")),
    security(("access_token" = [])), responses(
    (status = 204, description = "Disabled; its tokens no longer work."),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator, or the caller's own account.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn disable<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &admin, &username, AdminChange::Disable).await
}

/// `POST /v1/admin/accounts/{username}/enable`: enables a disabled account.
#[utoipa::path(post, path = "/v1/admin/accounts/{username}/enable", tag = "admin",
    params(("username" = String, Path, description = "The account.")),
    security(("access_token" = [])), responses(
    (status = 204, description = "Enabled."),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator, or the caller's own account.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn enable<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &admin, &username, AdminChange::Enable).await
}

/// `POST /v1/admin/accounts/{username}/reset-mfa`: removes the account's second
/// factor and recovery codes (a lost phone) and ends its sessions; an auditor or
/// approver enrolls a new one at their next sign-in.
#[utoipa::path(post, path = "/v1/admin/accounts/{username}/reset-mfa", tag = "admin",
    params(("username" = String, Path, description = "The account.")),
    security(("access_token" = [])), responses(
    (status = 204, description = "Second factor removed; its sessions ended."),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator, or the caller's own account.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn reset_mfa<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &admin, &username, AdminChange::ResetMfa).await
}

/// `POST /v1/admin/accounts/{username}/reset-password`: a new one-time password; the
/// account's sessions end.
#[utoipa::path(post, path = "/v1/admin/accounts/{username}/reset-password", tag = "admin",
    params(("username" = String, Path, description = "The account.")),
    security(("access_token" = [])), responses(
    (status = 200, description = "The one-time password, shown this once.", body = OneTimePassword),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator, or the caller's own account.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such account.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "The account signs in through single sign-on: the provider sets its role and it has no password here.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn reset_password<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(username): Path<String>,
) -> Result<Json<OneTimePassword>, ApiError> {
    let id = other_account(&state, &admin, &username).await?;
    let one_time = password::one_time_password().map_err(|_| ApiError::Internal)?;
    let phc = state.auth().hash_password(&one_time).await?;
    admin::apply(
        state.archive(),
        &admin.id_text(),
        &id,
        AdminChange::ResetPassword { phc },
    )
    .await?;
    Ok(Json(OneTimePassword {
        username,
        one_time_password: one_time.to_string(),
    }))
}

/// `POST /v1/admin/devices/{device_id}/revoke`: revokes a capture device for good.
#[utoipa::path(post, path = "/v1/admin/devices/{device_id}/revoke", tag = "admin",
    params(("device_id" = String, Path, description = "The device (a UUID).")),
    security(("access_token" = [])), responses(
    (status = 204, description = "Revoked; its credential no longer works."),
    (status = 400, description = "Not a device id.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such device, or revoked already.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn revoke_device<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device = DeviceId::parse(&device_id).map_err(|e| ApiError::BadRequest(format!("device id: {e}")))?;
    let store = state.archive().log_store();
    let revoked = store.revoke(&device, UnixMillis(crate::now_ms())).await?;
    state.forget_device(&device);
    if !revoked {
        return Err(ApiError::NotFound(format!(
            "no device {device} that is not revoked"
        )));
    }
    audit(
        state.archive(),
        &admin.id_text(),
        "device.revoke",
        &device.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn default_retention() -> String {
    "permanent".to_owned()
}

fn default_days() -> u64 {
    7
}

/// What an enrollment token is for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEnrollment {
    /// The custodian whose records the device will capture.
    custodian: String,
    /// The retention class the device archives under (default `permanent`).
    #[serde(default = "default_retention")]
    retention: String,
    /// Days the token stays good: 1 to 90 (default 7).
    #[serde(default = "default_days")]
    days: u64,
}

/// A one-time enrollment token, shown once; the gateway keeps only its hash. The
/// administrator's machine puts it in a bundle with the blind-index key, which never
/// reaches the gateway.
#[derive(Serialize, ToSchema)]
pub(super) struct Enrollment {
    /// 32 random bytes, base64url: spent by the first `POST /v1/devices` that presents it.
    token: String,
    custodian: String,
    retention: String,
    /// Unix milliseconds after which the token is refused.
    expires_at: u64,
}

/// `POST /v1/admin/enrollments`: a one-time enrollment token for a capture device of
/// a custodian, bound to a retention class; audited as `device.enrollment`.
#[utoipa::path(post, path = "/v1/admin/enrollments", tag = "admin", request_body = NewEnrollment,
    security(("access_token" = [])), responses(
    (status = 201, description = "Issued; the token is shown this once.", body = Enrollment),
    (status = 400, description = "A bad custodian, retention class or number of days.", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "Not an administrator.", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn enroll<L: PeopleStore + DeviceStore, B: BlobStore>(
    state: State<L, B>,
    Extension(admin): Extension<Person>,
    body: Result<Json<NewEnrollment>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrollment>), ApiError> {
    let request = json(body)?;
    let custodian =
        Custodian::new(&request.custodian).map_err(|e| ApiError::BadRequest(format!("custodian: {e}")))?;
    let retention = RetentionClass::new(&request.retention)
        .map_err(|e| ApiError::BadRequest(format!("retention: {e}")))?;
    if !(1..=90).contains(&request.days) {
        return Err(ApiError::BadRequest("days: 1 to 90".into()));
    }
    let expires_at = UnixMillis(crate::now_ms() + request.days * 86_400_000);
    let (token, hash) = crate::device::new_secret()?;
    state
        .archive()
        .log_store()
        .add_enrollment(&hash, &custodian, &retention, expires_at)
        .await?;
    let detail = serde_json::json!({ "expires_at": expires_at.0, "retention": retention.as_str() });
    audit(
        state.archive(),
        &admin.id_text(),
        "device.enrollment",
        custodian.as_str(),
        detail,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Enrollment {
            token,
            custodian: custodian.as_str().to_owned(),
            retention: retention.as_str().to_owned(),
            expires_at: expires_at.0,
        }),
    ))
}
