//! The public routes. Each module owns its handlers; [`router`] is the whole surface.
//!
//! The OpenAPI document ([`openapi`], generated from the handlers' annotations and
//! committed as `docs/openapi.json`) is also the allow-list: a request whose method
//! and path it does not name is answered 404 or 405 before any handler runs, so a
//! route added without documentation is unreachable (invariant I2).

mod admin;
mod auth;
mod cases;
mod credential;
mod devices;
mod health;
mod keyring;
mod keys;
mod log;
mod oidc;
mod records;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use vellum_archive::ports::{
    AccountStore, AuditStore, BlobStore, DeviceStore, KeyStore, LogStore, Role, SessionStore,
};
use vellum_archive::search::RecordSearch;

use crate::Gateway;
use crate::problem::ApiError;

pub use keys::starting_keyring;
pub use records::RECORD_MEDIA_TYPE;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Vellum gateway",
        description = "Capture, keyring and log access of a Vellum archive. Errors are RFC 9457 problems.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        devices::enroll,
        credential::rotate,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::change_password,
        auth::totp_setup,
        auth::totp_confirm,
        admin::list,
        admin::create,
        admin::set_role,
        admin::disable,
        admin::enable,
        admin::reset_password,
        admin::reset_mfa,
        oidc::start,
        oidc::callback,
        keys::publish,
        keys::own_wraps,
        keys::add_wraps,
        keys::set_recipient,
        keys::recipients,
        keys::identity,
        keys::status,
        keys::escrow_copies,
        keys::record_recovery,
        admin::revoke_device,
        admin::enroll,
        records::capture,
        cases::search,
        cases::open,
        cases::list,
        cases::show,
        cases::request,
        cases::approve,
        cases::deny,
        cases::revoke,
        cases::close,
        cases::records,
        cases::listing,
        cases::record,
        cases::body,
        cases::fetches,
        cases::trail,
        keyring::current,
        log::checkpoint,
        log::inclusion,
        log::consistency,
        health::live,
        health::ready,
    ),
    modifiers(&DeviceCredential)
)]
struct ApiDoc;

struct DeviceCredential;

impl utoipa::Modify for DeviceCredential {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let device = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
        components.add_security_scheme("device_credential", device);
        let mut person = Http::new(HttpAuthScheme::Bearer);
        person.bearer_format = Some("JWT".into());
        components.add_security_scheme("access_token", SecurityScheme::Http(person));
    }
}

/// A JSON request body, or 400 with what is wrong with it.
fn json<T>(body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|axum::Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Query parameters, or 400 with what is wrong with them.
fn query<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// The OpenAPI 3.1 document of every public route.
pub fn openapi() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The gateway's router: every documented route, behind the allow-list, the
/// concurrency limit and the request deadline.
pub fn router<L, B>(gateway: Arc<Gateway<L, B>>) -> Router
where
    L: LogStore + DeviceStore + AccountStore + SessionStore + AuditStore + KeyStore + RecordSearch,
    B: BlobStore,
{
    let limits = Arc::new(Limiter {
        permits: Semaphore::new(gateway.limits().max_concurrent_requests),
        queue_timeout: gateway.limits().queue_timeout,
        request_timeout: gateway.limits().request_timeout,
    });
    let router = Router::new()
        .route("/v1/devices", post(devices::enroll::<L, B>))
        .route("/v1/devices/credential", post(credential::rotate::<L, B>))
        .route("/v1/records", post(records::capture::<L, B>))
        .route("/v1/records/search", post(cases::search::<L, B>))
        .route("/v1/cases", post(cases::open::<L, B>).get(cases::list::<L, B>))
        .route("/v1/cases/{case}", get(cases::show::<L, B>))
        .route("/v1/cases/{case}/request", post(cases::request::<L, B>))
        .route("/v1/cases/{case}/approve", post(cases::approve::<L, B>))
        .route("/v1/cases/{case}/deny", post(cases::deny::<L, B>))
        .route("/v1/cases/{case}/revoke", post(cases::revoke::<L, B>))
        .route("/v1/cases/{case}/close", post(cases::close::<L, B>))
        .route("/v1/cases/{case}/records", get(cases::records::<L, B>))
        .route("/v1/cases/{case}/listing", post(cases::listing::<L, B>))
        .route("/v1/cases/{case}/records/{record}", get(cases::record::<L, B>))
        .route("/v1/cases/{case}/records/{record}/body", get(cases::body::<L, B>))
        .route("/v1/cases/{case}/fetches", get(cases::fetches::<L, B>))
        .route("/v1/audit", get(cases::trail::<L, B>))
        .route("/v1/keyring", get(keyring::current::<L, B>))
        .route("/v1/auth/login", post(auth::login::<L, B>))
        .route("/v1/auth/refresh", post(auth::refresh::<L, B>))
        .route("/v1/auth/logout", post(auth::logout::<L, B>))
        .route("/v1/auth/password", post(auth::change_password::<L, B>))
        .route("/v1/auth/totp", post(auth::totp_setup::<L, B>))
        .route("/v1/auth/totp/confirm", post(auth::totp_confirm::<L, B>))
        .route(
            "/v1/admin/accounts",
            get(admin::list::<L, B>).post(admin::create::<L, B>),
        )
        .route(
            "/v1/admin/accounts/{username}/role",
            post(admin::set_role::<L, B>),
        )
        .route(
            "/v1/admin/accounts/{username}/disable",
            post(admin::disable::<L, B>),
        )
        .route(
            "/v1/admin/accounts/{username}/enable",
            post(admin::enable::<L, B>),
        )
        .route(
            "/v1/admin/accounts/{username}/reset-password",
            post(admin::reset_password::<L, B>),
        )
        .route(
            "/v1/admin/accounts/{username}/reset-mfa",
            post(admin::reset_mfa::<L, B>),
        )
        .route("/v1/keys/keyring", post(keys::publish::<L, B>))
        .route(
            "/v1/keys/wraps",
            get(keys::own_wraps::<L, B>).post(keys::add_wraps::<L, B>),
        )
        .route("/v1/keys/recipient", post(keys::set_recipient::<L, B>))
        .route("/v1/keys/recipients", get(keys::recipients::<L, B>))
        .route("/v1/keys/identity", get(keys::identity::<L, B>))
        .route("/v1/keys/status", get(keys::status::<L, B>))
        .route("/v1/keys/escrow", get(keys::escrow_copies::<L, B>))
        .route("/v1/keys/escrow/recoveries", post(keys::record_recovery::<L, B>))
        .route("/v1/auth/oidc/start", get(oidc::start::<L, B>))
        .route("/v1/auth/oidc/callback", get(oidc::callback::<L, B>))
        .route(
            "/v1/admin/devices/{device_id}/revoke",
            post(admin::revoke_device::<L, B>),
        )
        .route("/v1/admin/enrollments", post(admin::enroll::<L, B>))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready::<L, B>))
        .route("/v1/log/checkpoint", get(log::checkpoint::<L, B>))
        .route("/v1/log/proof/inclusion", get(log::inclusion::<L, B>))
        .route("/v1/log/proof/consistency", get(log::consistency::<L, B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway.clone())
        .layer(middleware::from_fn_with_state(gateway, authorize::<L, B>))
        .layer(middleware::from_fn_with_state(limits, limit));
    // Traced outermost, so refused probes are logged too.
    documented_only(router).layer(middleware::from_fn(trace))
}

/// `router` behind the allow-list of [`openapi`]: whatever else it routes is 404/405.
pub fn documented_only(router: Router) -> Router {
    router.layer(middleware::from_fn_with_state(
        Arc::new(AllowList::of(&openapi())),
        only_documented,
    ))
}

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (what it serves is public, or it checks its own secret: an enrollment
    /// token, a password, a refresh token).
    Public,
    /// An enrolled, unrevoked device with its credential (checked by the handler's
    /// extractor; a person's token is not a device credential).
    Device,
    /// A signed-in person with one of these roles; `mfa_setup` admits the limited
    /// session of a first login that must still enroll a second factor.
    People {
        /// The roles admitted.
        roles: &'static [Role],
        /// Whether an `mfa-setup` session is admitted.
        mfa_setup: bool,
    },
}

const ADMIN: Access = Access::People {
    roles: &[Role::Admin],
    mfa_setup: false,
};
const AUDITOR: Access = Access::People {
    roles: &[Role::Auditor],
    mfa_setup: false,
};
const RECORDS_OFFICER: Access = Access::People {
    roles: &[Role::Approver],
    mfa_setup: false,
};
const KEY_STATUS: Access = Access::People {
    roles: &[Role::Admin, Role::Auditor],
    mfa_setup: false,
};
const READERS: Access = Access::People {
    roles: &[Role::Auditor, Role::Approver],
    mfa_setup: false,
};
const TRAIL_READERS: Access = Access::People {
    roles: &[Role::Approver, Role::Admin],
    mfa_setup: false,
};
const SIGNED_IN: Access = Access::People {
    roles: &Role::ALL,
    mfa_setup: true,
};

/// Every operation's access policy, in one place. An operation missing here is
/// refused to everyone (deny by default), and a test checks that every documented
/// operation is here.
pub const POLICIES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
    ("GET", "/v1/keyring", Access::Public),
    ("GET", "/v1/log/checkpoint", Access::Public),
    ("GET", "/v1/log/proof/inclusion", Access::Public),
    ("GET", "/v1/log/proof/consistency", Access::Public),
    ("POST", "/v1/devices", Access::Public),
    ("POST", "/v1/devices/credential", Access::Device),
    ("POST", "/v1/records", Access::Device),
    ("POST", "/v1/auth/login", Access::Public),
    ("POST", "/v1/auth/refresh", Access::Public),
    ("POST", "/v1/auth/password", Access::Public),
    ("POST", "/v1/auth/logout", SIGNED_IN),
    ("POST", "/v1/auth/totp", SIGNED_IN),
    ("POST", "/v1/auth/totp/confirm", SIGNED_IN),
    ("GET", "/v1/admin/accounts", ADMIN),
    ("POST", "/v1/admin/accounts", ADMIN),
    ("POST", "/v1/admin/accounts/{username}/role", ADMIN),
    ("POST", "/v1/admin/accounts/{username}/disable", ADMIN),
    ("POST", "/v1/admin/accounts/{username}/enable", ADMIN),
    ("POST", "/v1/admin/accounts/{username}/reset-password", ADMIN),
    ("POST", "/v1/admin/accounts/{username}/reset-mfa", ADMIN),
    ("POST", "/v1/keys/keyring", AUDITOR),
    ("GET", "/v1/keys/wraps", AUDITOR),
    ("POST", "/v1/keys/wraps", AUDITOR),
    ("POST", "/v1/keys/recipient", AUDITOR),
    ("GET", "/v1/keys/recipients", AUDITOR),
    ("GET", "/v1/keys/identity", AUDITOR),
    ("GET", "/v1/keys/status", KEY_STATUS),
    ("GET", "/v1/keys/escrow", RECORDS_OFFICER),
    ("POST", "/v1/keys/escrow/recoveries", RECORDS_OFFICER),
    ("GET", "/v1/auth/oidc/start", Access::Public),
    ("GET", "/v1/auth/oidc/callback", Access::Public),
    ("POST", "/v1/admin/devices/{device_id}/revoke", ADMIN),
    ("POST", "/v1/admin/enrollments", ADMIN),
    ("POST", "/v1/records/search", READERS),
    ("POST", "/v1/cases", AUDITOR),
    ("GET", "/v1/cases", READERS),
    ("GET", "/v1/cases/{case}", READERS),
    ("POST", "/v1/cases/{case}/request", AUDITOR),
    ("POST", "/v1/cases/{case}/approve", RECORDS_OFFICER),
    ("POST", "/v1/cases/{case}/deny", RECORDS_OFFICER),
    ("POST", "/v1/cases/{case}/revoke", READERS),
    ("POST", "/v1/cases/{case}/close", READERS),
    ("GET", "/v1/cases/{case}/records", AUDITOR),
    ("POST", "/v1/cases/{case}/listing", AUDITOR),
    ("GET", "/v1/cases/{case}/records/{record}", AUDITOR),
    ("GET", "/v1/cases/{case}/records/{record}/body", AUDITOR),
    ("GET", "/v1/cases/{case}/fetches", READERS),
    ("GET", "/v1/audit", TRAIL_READERS),
];

/// The policy of the operation `method path` matches, if any.
pub fn policy(method: &Method, path: &str) -> Option<Access> {
    POLICIES.iter().find_map(|(m, template, access)| {
        let segments: Vec<String> = template.split('/').map(str::to_owned).collect();
        (m.as_bytes() == method.as_str().as_bytes() && matches(&segments, path)).then_some(*access)
    })
}

/// Enforces [`POLICIES`]: admits the request, or answers 401/403 before the handler.
async fn authorize<L, B>(
    State(gateway): State<Arc<Gateway<L, B>>>,
    mut request: Request,
    next: Next,
) -> Response
where
    L: LogStore + SessionStore,
    B: BlobStore,
{
    let Some(access) = policy(request.method(), request.uri().path()) else {
        return ApiError::Forbidden("no access policy covers this operation".into()).into_response();
    };
    let Access::People { roles, mfa_setup } = access else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let person = match crate::auth::authenticate(gateway.auth(), gateway.archive().log_store(), bearer).await
    {
        Ok(person) => person,
        Err(refusal) => return refusal.into_response(),
    };
    if !roles.contains(&person.role) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return ApiError::Forbidden(format!("this needs the role {}", names.join(" or "))).into_response();
    }
    if person.scope == crate::auth::jwt::Scope::MfaSetup && !mfa_setup {
        return ApiError::Forbidden("set up a second factor first: POST /v1/auth/totp".into())
            .into_response();
    }
    request.extensions_mut().insert(person);
    next.run(request).await
}

/// The documented operations: `(method, path template)`.
#[derive(Debug)]
struct AllowList(Vec<(Method, Vec<String>)>);

impl AllowList {
    /// Every operation of `doc`.
    fn of(doc: &OpenApi) -> Self {
        let mut operations = Vec::new();
        for (path, item) in &doc.paths.paths {
            let segments: Vec<String> = path.split('/').map(str::to_owned).collect();
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::DELETE, item.delete.is_some()),
                (Method::OPTIONS, item.options.is_some()),
                (Method::HEAD, item.head.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::TRACE, item.trace.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    operations.push((method, segments.clone()));
                }
            }
        }
        Self(operations)
    }

    /// Whether `path` matches a documented path, and whether with `method`.
    fn check(&self, method: &Method, path: &str) -> Result<(), ApiError> {
        let mut path_known = false;
        for (allowed, template) in &self.0 {
            if matches(template, path) {
                if allowed == method {
                    return Ok(());
                }
                path_known = true;
            }
        }
        Err(if path_known {
            ApiError::MethodNotAllowed
        } else {
            ApiError::NotFound("no such route".into())
        })
    }
}

/// `{name}` in a template matches one non-empty segment; anything else itself.
fn matches(template: &[String], path: &str) -> bool {
    let mut segments = path.split('/');
    let all = template.iter().all(|expected| {
        segments.next().is_some_and(|segment| {
            let variable = expected.starts_with('{') && expected.ends_with('}');
            if variable {
                !segment.is_empty()
            } else {
                segment == expected
            }
        })
    });
    all && segments.next().is_none()
}

async fn only_documented(State(allowed): State<Arc<AllowList>>, request: Request, next: Next) -> Response {
    match allowed.check(request.method(), request.uri().path()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

struct Limiter {
    permits: Semaphore,
    queue_timeout: Duration,
    request_timeout: Duration,
}

/// At most `max_concurrent_requests` requests run at once; one that waits longer
/// than the queue timeout for its turn gets 503, one that runs (reading its body
/// included) longer than the request timeout gets 408.
async fn limit(State(limits): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    let Ok(Ok(_permit)) = tokio::time::timeout(limits.queue_timeout, limits.permits.acquire()).await else {
        return ApiError::Busy.into_response();
    };
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// One span per request and one log line when it ends: method, path, status and
/// duration. Never headers (credentials), queries or bodies.
async fn trace(request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(parent: &span, status, ms, "request done");
    response
}

/// A plain-text answer (signed notes, proofs, receipts).
fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Free text a person sent as `field` (a reason, a note), refused with 400 naming the
/// field when it holds a control character, a line break or a bidirectional control.
fn free_text(field: &str, text: &str) -> Result<(), ApiError> {
    vellum_protocol::text::check_free_text(field, text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The largest leaf index, log size or listing position the stores index (they keep
/// positions as signed 64-bit integers).
const MAX_POSITION: u64 = i64::MAX as u64;

/// A position in a query (`from`, `size`, `index`): a number up to [`MAX_POSITION`], so
/// a larger one is a 400 naming its limit, never a store error.
fn position<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = <u64 as serde::Deserialize>::deserialize(d)?;
    if n > MAX_POSITION {
        return Err(serde::de::Error::custom(format!(
            "{n} is beyond the largest position, {MAX_POSITION}"
        )));
    }
    Ok(n)
}

/// [`position`], when the parameter may be absent.
fn some_position<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    position(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        let t = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(matches(&t("/v1/cases/{id}"), "/v1/cases/42"));
        assert!(!matches(&t("/v1/cases/{id}"), "/v1/cases/"));
        assert!(!matches(&t("/v1/cases/{id}"), "/v1/cases/42/x"));
        assert!(!matches(&t("/v1/cases"), "/v1/cases/"));
        assert!(!matches(&t("/v1/cases"), "/v1/case"));
        assert!(matches(&t("/healthz"), "/healthz"));
        assert!(!matches(&t("/healthz"), "/healthz/"));
    }
}
