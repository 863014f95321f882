//! `vellum serve --config FILE`: the gateway, configured by a TOML file.
//!
//! Secrets are read from files the configuration names (the log key, a database
//! password, S3 credentials, the TLS key), never from the command line or the
//! configuration itself. Relative paths are relative to the configuration file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use vellum_archive::Archive;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::blob::s3::{RetentionPeriod, S3BlobStore, S3Config};
use vellum_archive::ports::{
    AccountStore, AuditStore, BlobStore, DeviceStore, KeyStore, LogStore, SessionStore,
};
use vellum_archive::postgres::PgStore;
use vellum_archive::sqlite::SqliteStore;
use vellum_gateway::auth::Auth;
use vellum_gateway::auth::jwt::JwtKeys;
use vellum_gateway::auth::oidc::{Oidc, OidcSettings};
use vellum_gateway::auth::password::Cost;
use vellum_gateway::{Gateway, Limits};
use vellum_protocol::ids::{RetentionClass, UnixMillis};
use vellum_tlog::note::{NoteSigner, NoteVerifier};
use zeroize::Zeroizing;

use crate::error::{CliError, Kind};

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// Proxies (addresses or networks) in front of the gateway whose
    /// `X-Forwarded-For` names the client; empty: the header is ignored.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    /// File holding the log signing key (a note signer key, mode 0600).
    pub(crate) log_key_file: PathBuf,
    /// The organisation's public (verifier) key: the keyring must be signed by it.
    pub(crate) org_key: String,
    /// File holding the keyring statement to publish (a signed note).
    pub(crate) keyring_file: PathBuf,
    pub(crate) database: Database,
    pub(crate) blobs: Blobs,
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    pub(crate) tls: Option<Tls>,
    pub(crate) auth: Option<AuthConfig>,
    pub(crate) oidc: Option<OidcConfig>,
    #[serde(default)]
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Database {
    /// `sqlite://PATH` or `postgres://USER@HOST[:PORT]/DB` (no password in it).
    pub(crate) url: String,
    /// File holding the PostgreSQL password.
    pub(crate) password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Blobs {
    /// A local folder (one gateway process at a time).
    pub(crate) folder: Option<PathBuf>,
    /// An S3-compatible bucket.
    pub(crate) s3: Option<S3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3 {
    bucket: String,
    #[serde(default)]
    prefix: String,
    region: String,
    endpoint: Option<String>,
    access_key_id_file: PathBuf,
    secret_access_key_file: PathBuf,
    #[serde(default)]
    allow_http: bool,
    #[serde(default = "yes")]
    object_lock: bool,
    /// Retention per class: a number of days, or `"permanent"`.
    #[serde(default)]
    retention: HashMap<String, toml::Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    max_capture_bytes: usize,
    /// Captures larger than this are streamed to the blob store.
    stream_over_bytes: usize,
    max_concurrent_requests: usize,
    queue_timeout_secs: u64,
    request_timeout_secs: u64,
    max_buffered_bytes: usize,
    /// Milliseconds a device's credential lookup is reused (0: never).
    device_cache_ms: u64,
    /// The longest time range of a case scope naming no custodian or participant.
    max_scope_days: u32,
    /// Sealed bodies sent at once, in all.
    max_concurrent_reads: usize,
    /// Sealed bodies sent at once to one account.
    max_reads_per_account: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            max_capture_bytes: d.max_capture_bytes,
            stream_over_bytes: d.stream_over_bytes,
            max_concurrent_requests: d.max_concurrent_requests,
            queue_timeout_secs: d.queue_timeout.as_secs(),
            request_timeout_secs: d.request_timeout.as_secs(),
            max_buffered_bytes: d.max_buffered_bytes,
            device_cache_ms: d.device_cache.as_millis() as u64,
            max_scope_days: d.max_scope_days,
            max_concurrent_reads: d.max_concurrent_reads,
            max_reads_per_account: d.max_reads_per_account,
        }
    }
}

/// `[auth]`: sign-in for people.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthConfig {
    /// File holding the Ed25519 seed that signs access tokens (32 bytes, base64url).
    jwt_key_file: PathBuf,
    /// File holding the key TOTP secrets are sealed under (32 bytes, base64url).
    totp_key_file: Option<PathBuf>,
    /// Files of earlier TOTP keys: secrets sealed under them are re-sealed under
    /// `totp_key_file` at start.
    #[serde(default)]
    totp_previous_key_files: Vec<PathBuf>,
    /// Public keys (base64url) of earlier signing keys whose tokens are still accepted.
    #[serde(default)]
    jwt_previous_public_keys: Vec<String>,
    /// The `iss` and `aud` of tokens.
    #[serde(default = "default_issuer")]
    issuer: String,
    #[serde(default = "default_access_secs")]
    access_token_secs: u64,
    #[serde(default = "default_refresh_secs")]
    refresh_token_secs: u64,
    /// Argon2 computations at once (each about 19 MiB).
    #[serde(default = "default_parallel_hashes")]
    parallel_password_hashes: usize,
    /// Password computations a second for the whole gateway.
    #[serde(default = "default_hashes_per_second")]
    password_hashes_per_second: u32,
    #[serde(default = "default_per_address")]
    logins_per_minute_per_address: u32,
    #[serde(default = "default_per_account")]
    logins_per_minute_per_account: u32,
    /// The longest a session lasts, however active.
    #[serde(default = "default_session_secs")]
    session_secs: u64,
    /// Argon2id memory in KiB for new password hashes (at least 19456).
    #[serde(default = "default_memory_kib")]
    password_memory_kib: u32,
    /// Argon2id passes (at least 2).
    #[serde(default = "default_iterations")]
    password_iterations: u32,
    /// Argon2id lanes (at least 1).
    #[serde(default = "default_parallelism")]
    password_parallelism: u32,
}

/// `[oidc]`: single sign-on through an OpenID Connect provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OidcConfig {
    /// The provider's issuer identifier (its discovery document is under it).
    issuer: String,
    client_id: String,
    /// File holding the client secret (a confidential client); none for a public one.
    client_secret_file: Option<PathBuf>,
    /// This gateway's `/v1/auth/oidc/callback` URL, as registered at the provider.
    redirect_uri: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    username_claim: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    /// Group name → `admin`, `auditor` or `approver`.
    roles: std::collections::BTreeMap<String, String>,
    /// `amr` values that count as a second factor.
    #[serde(default = "default_mfa_amr")]
    mfa_amr: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_username_claim() -> String {
    "email".into()
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_mfa_amr() -> Vec<String> {
    // Only "mfa" says more than one factor was used: "otp", "swk" and the like name one
    // method, which a passwordless sign-in may have used alone (RFC 8176).
    vec!["mfa".into()]
}
fn default_session_secs() -> u64 {
    vellum_gateway::auth::DEFAULT_SESSION_SECS
}
fn default_memory_kib() -> u32 {
    vellum_gateway::auth::password::MEMORY_KIB
}
fn default_iterations() -> u32 {
    vellum_gateway::auth::password::ITERATIONS
}
fn default_parallelism() -> u32 {
    vellum_gateway::auth::password::PARALLELISM
}

impl AuthConfig {
    fn password_cost(&self) -> Result<Cost, CliError> {
        Cost::new(
            self.password_memory_kib,
            self.password_iterations,
            self.password_parallelism,
        )
        .map_err(|e| fail(format!("[auth] {e}")))
    }
}

/// The single sign-on provider of `[oidc]`; its sign-in cookies are signed with a key
/// derived from the access-token key, so every gateway of a deployment shares it.
fn oidc_settings(config: &OidcConfig, state_key: &[u8; 32]) -> Result<Oidc, CliError> {
    let mut roles = Vec::new();
    for (group, role) in &config.roles {
        let role = vellum_archive::ports::Role::parse(role)
            .ok_or_else(|| fail(format!("[oidc.roles] {group:?}: admin, auditor or approver")))?;
        roles.push((group.clone(), role));
    }
    let client_secret = match &config.client_secret_file {
        Some(file) => Some(secret_file(file)?),
        None => None,
    };
    let settings = OidcSettings {
        issuer: config.issuer.clone(),
        client_id: config.client_id.clone(),
        client_secret,
        redirect_uri: config.redirect_uri.clone(),
        scopes: config.scopes.clone(),
        username_claim: config.username_claim.clone(),
        roles_claim: config.roles_claim.clone(),
        roles,
        mfa_amr: config.mfa_amr.clone(),
    };
    Oidc::new(settings, *state_key).map_err(|e| fail(format!("[oidc] {e}")))
}

fn default_issuer() -> String {
    "vellum".into()
}
fn default_access_secs() -> u64 {
    vellum_gateway::auth::jwt::MAX_TTL_SECS
}
fn default_refresh_secs() -> u64 {
    vellum_gateway::auth::DEFAULT_REFRESH_SECS
}
fn default_parallel_hashes() -> usize {
    2
}
fn default_hashes_per_second() -> u32 {
    vellum_gateway::auth::DEFAULT_HASHES_PER_SECOND
}
fn default_per_address() -> u32 {
    vellum_gateway::DEFAULT_LOGINS_PER_ADDRESS
}
fn default_per_account() -> u32 {
    vellum_gateway::DEFAULT_LOGINS_PER_ACCOUNT
}

fn decode_32(text: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, CliError> {
    use base64::Engine as _;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| fail(format!("{what}: not base64url")))?,
    );
    let array: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| fail(format!("{what}: not 32 bytes")))?;
    Ok(Zeroizing::new(array))
}

/// What `[auth]` and `[oidc]` configure.
struct People {
    auth: Auth,
    per_address: u32,
    per_account: u32,
    oidc: Option<Oidc>,
}

fn people_settings(config: &Config, queue_timeout: Duration) -> Result<People, CliError> {
    let Some(auth_config) = config.auth.as_ref() else {
        if config.oidc.is_some() {
            return Err(fail(
                "[oidc] needs an [auth] section: its jwt_key_file also signs the sign-in cookies",
            ));
        }
        tracing::warn!(
            "no [auth] section: access tokens are signed, and TOTP secrets sealed, with random keys \
             that do not survive a restart (a restart then refuses to start until those second \
             factors are reset)"
        );
        return Ok(People {
            auth: Auth::ephemeral("vellum").map_err(fail)?,
            per_address: default_per_address(),
            per_account: default_per_account(),
            oidc: None,
        });
    };
    let seed = decode_32(&secret_file(&auth_config.jwt_key_file)?, "jwt_key_file")?;
    let mut previous = Vec::new();
    for key in &auth_config.jwt_previous_public_keys {
        previous.push(*decode_32(key, "jwt_previous_public_keys")?);
    }
    let jwt = JwtKeys::new(
        &auth_config.issuer,
        &auth_config.issuer,
        auth_config.access_token_secs,
        &seed,
        &previous,
    )
    .map_err(|e| fail(format!("[auth] {e}")))?;
    if !(60..=30 * 86_400).contains(&auth_config.refresh_token_secs) {
        return Err(fail("[auth] refresh_token_secs is 60 to 2592000 (30 days)"));
    }
    if !(auth_config.refresh_token_secs..=30 * 86_400).contains(&auth_config.session_secs) {
        return Err(fail(
            "[auth] session_secs is at least refresh_token_secs and at most 2592000 (30 days)",
        ));
    }
    let auth = Auth::new(
        jwt,
        auth_config.refresh_token_secs,
        auth_config.parallel_password_hashes,
        queue_timeout,
    )
    .map_err(fail)?
    .with_hashes_per_second(auth_config.password_hashes_per_second)
    .with_session_secs(auth_config.session_secs)
    .with_password_cost(auth_config.password_cost()?)
    .map_err(fail)?
    .with_totp_keys(totp_keys(auth_config)?);
    let oidc = match &config.oidc {
        Some(oidc) => Some(oidc_settings(oidc, &auth.jwt().derive_key("oidc-flow"))?),
        None => None,
    };
    Ok(People {
        auth,
        per_address: auth_config.logins_per_minute_per_address,
        per_account: auth_config.logins_per_minute_per_account,
        oidc,
    })
}

/// The keys of `[auth]`'s `totp_key_file` and `totp_previous_key_files`.
fn totp_keys(auth: &AuthConfig) -> Result<vellum_gateway::auth::totp_seal::TotpKeys, CliError> {
    let file = auth.totp_key_file.as_ref().ok_or_else(|| {
        fail(
            "[auth] totp_key_file is required: people's TOTP secrets are stored sealed under it. \
             Make one as docs/operations.md shows (\"The TOTP key\"), mode 0600, and keep it with \
             the backups",
        )
    })?;
    let current = decode_32(&secret_file(file)?, "totp_key_file")?;
    let mut previous = Vec::new();
    for file in &auth.totp_previous_key_files {
        previous.push(decode_32(&secret_file(file)?, "totp_previous_key_files")?);
    }
    Ok(vellum_gateway::auth::totp_seal::TotpKeys::new(current, previous))
}

/// Brings every stored TOTP secret under the current key before serving: one stored in
/// the clear (before secrets were sealed) or under a previous key is re-sealed, all in
/// one transaction; one sealed under a key that is not configured stops the start, since
/// its owner could not sign in.
async fn reseal_totp_secrets<L: AccountStore>(
    store: &L,
    keys: &vellum_gateway::auth::totp_seal::TotpKeys,
) -> Result<(), CliError> {
    let mut changes = Vec::new();
    for account in store.list_accounts().await.map_err(fail)? {
        let Some(stored) = account.totp_secret else {
            continue;
        };
        match keys.resealed(&account.account_id, &stored) {
            Ok(None) => {}
            Ok(Some(sealed)) => changes.push(vellum_archive::ports::TotpReseal {
                account_id: account.account_id,
                stored,
                sealed,
            }),
            Err(e) => {
                return Err(fail(format!(
                    "the TOTP secret of account {:?} is {e}: add the key that sealed it to [auth] \
                     totp_previous_key_files, or reset that account's second factor \
                     (vellum admin user reset-mfa)",
                    account.username
                )));
            }
        }
    }
    if !changes.is_empty() {
        let done = store.reseal_totp(&changes).await.map_err(fail)?;
        tracing::info!(resealed = done, "TOTP secrets re-sealed under the current key");
    }
    Ok(())
}

/// Records, as audit events (leaves of the log), the retention bindings an upgrade gave
/// devices enrolled before bindings existed: `device.retention` by `migration`, each
/// once (a start cut off between the event and its note finds the event and writes no
/// second one).
async fn audit_upgrade_bindings<L: LogStore + DeviceStore + AuditStore, B: BlobStore>(
    archive: &Archive<L, B>,
) -> Result<(), CliError> {
    let store = archive.log_store();
    for (device, classes) in store.unaudited_bindings().await.map_err(fail)? {
        let subject = device.to_string();
        let recorded = store
            .last_audit(&subject, "device.retention")
            .await
            .map_err(fail)?
            .is_some_and(|(_, e)| e.actor == "migration");
        if !recorded {
            let names: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
            let detail = serde_json::json!({ "retention": names, "by": "migration" });
            vellum_gateway::auth::admin::audit(archive, "migration", "device.retention", &subject, detail)
                .await
                .map_err(fail)?;
        }
        store.binding_audited(&device).await.map_err(fail)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn config_error(path: &Path, what: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Malformed, format!("{}: {what}", path.display()))
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("serve: {e}"))
}

impl Config {
    /// The Argon2id parameters new password hashes get (`[auth]`, or the minimum).
    pub(crate) fn password_cost(&self) -> Result<Cost, CliError> {
        self.auth
            .as_ref()
            .map_or(Ok(Cost::MINIMUM), AuthConfig::password_cost)
    }

    /// The log's signing key, from its mode-0600 file.
    pub(crate) fn log_signer(&self) -> Result<NoteSigner, CliError> {
        NoteSigner::from_skey(&secret_file(&self.log_key_file)?)
            .map_err(|e| config_error(&self.log_key_file, e))
    }

    /// Reads `path`; relative paths inside become relative to its folder.
    pub(crate) fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, "read", &e))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| config_error(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.log_key_file);
        rebase(&mut config.keyring_file);
        if let Some(p) = &mut config.database.password_file {
            rebase(p);
        }
        if let Some(rest) = config.database.url.strip_prefix("sqlite://")
            && Path::new(rest).is_relative()
        {
            config.database.url = format!("sqlite://{}", base.join(rest).display());
        }
        if let Some(p) = &mut config.blobs.folder {
            rebase(p);
        }
        if let Some(s3) = &mut config.blobs.s3 {
            rebase(&mut s3.access_key_id_file);
            rebase(&mut s3.secret_access_key_file);
        }
        if let Some(auth) = &mut config.auth {
            rebase(&mut auth.jwt_key_file);
            if let Some(p) = &mut auth.totp_key_file {
                rebase(p);
            }
            for p in &mut auth.totp_previous_key_files {
                rebase(p);
            }
        }
        if let Some(p) = config.oidc.as_mut().and_then(|o| o.client_secret_file.as_mut()) {
            rebase(p);
        }
        if let Some(tls) = &mut config.tls {
            rebase(&mut tls.cert_file);
            rebase(&mut tls.key_file);
        }
        if config.blobs.folder.is_some() == config.blobs.s3.is_some() {
            return Err(config_error(
                path,
                "[blobs] needs exactly one of folder or [blobs.s3]",
            ));
        }
        Ok(config)
    }
}

/// Refuses a secret file that other users could read.
/// Refuses to serve from storage that other users may read: the SQLite database file
/// and its folder, and the blob folder, each with the `chmod` that fixes it. Ciphertext
/// is still the archive's, and the database holds credentials' hashes and the audit
/// trail.
fn refuse_open_storage(config: &Config) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt as _;
    let open = |path: &Path, fix: &str| -> Result<(), CliError> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CliError::new(
                Kind::Other,
                format!(
                    "{} may be read by other users of this machine: run `chmod {fix} {}` and start again",
                    path.display(),
                    path.display()
                ),
            ));
        }
        Ok(())
    };
    if let Some(file) = config.database.url.strip_prefix("sqlite://") {
        let file = Path::new(file.split('?').next().unwrap_or(file));
        if let Some(folder) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            open(folder, "700")?;
        }
        open(file, "600")?;
    }
    if let Some(folder) = &config.blobs.folder {
        open(folder, "700")?;
    }
    Ok(())
}

fn refuse_shared(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(path, "read", &e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CliError::new(
            Kind::Other,
            format!(
                "{} is readable by other users: chmod 600 it (it holds a secret)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// A secret read from a file: trimmed, and the file must not be readable by others.
pub(crate) fn secret_file(path: &Path) -> Result<Zeroizing<String>, CliError> {
    refuse_shared(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::io(path, "read", &e))?);
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// `url` with `password` inserted as its userinfo password (percent-encoded).
fn with_password(url: &str, password: &str) -> Result<Zeroizing<String>, CliError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| fail("database url has no scheme"))?;
    let (user, host) = rest.split_once('@').ok_or_else(|| {
        fail("database url needs a user (postgres://USER@HOST/DB) to go with password_file")
    })?;
    if user.contains(':') {
        return Err(fail(
            "the database url must not hold a password: use password_file",
        ));
    }
    let mut encoded = String::new();
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(Zeroizing::new(format!("{scheme}://{user}:{encoded}@{host}")))
}

fn retention_period(class: &str, value: &toml::Value) -> Result<RetentionPeriod, CliError> {
    match value {
        toml::Value::Integer(days) if *days > 0 => u32::try_from(*days)
            .map(RetentionPeriod::Days)
            .map_err(|_| fail(format!("retention of {class}: too many days"))),
        toml::Value::String(s) if s == "permanent" => Ok(RetentionPeriod::Permanent),
        _ => Err(fail(format!(
            "retention of {class}: a positive number of days or \"permanent\""
        ))),
    }
}

/// Runs the gateway of `config` until SIGINT or SIGTERM.
pub(crate) fn run(config: Config) -> Result<(), CliError> {
    vellum_gateway::server::harden_process().map_err(|e| fail(format!("process hardening: {e}")))?;
    let _telemetry = crate::telemetry::init(&config.telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(open_and_serve(config))
}

async fn open_and_serve(config: Config) -> Result<(), CliError> {
    refuse_open_storage(&config)?;
    let log_key = config.log_signer()?;
    let org_key = NoteVerifier::from_vkey(&config.org_key).map_err(|e| fail(format!("org_key: {e}")))?;
    let note =
        std::fs::read(&config.keyring_file).map_err(|e| CliError::io(&config.keyring_file, "read", &e))?;
    let keyring = vellum_protocol::keyring::verify(&note, &org_key, None, UnixMillis(now_ms()))
        .map_err(|e| config_error(&config.keyring_file, e))?;

    let store = open_store(&config.database).await?;
    let blobs = open_blobs(&config.blobs)?;
    match (store, blobs) {
        (OpenedStore::Sqlite(l), OpenedBlobs::Folder(b)) => {
            serve(&config, l, b, log_key, (org_key, keyring)).await
        }
        (OpenedStore::Sqlite(l), OpenedBlobs::S3(b)) => {
            serve(&config, l, b, log_key, (org_key, keyring)).await
        }
        (OpenedStore::Postgres(l), OpenedBlobs::Folder(b)) => {
            serve(&config, l, b, log_key, (org_key, keyring)).await
        }
        (OpenedStore::Postgres(l), OpenedBlobs::S3(b)) => {
            serve(&config, l, b, log_key, (org_key, keyring)).await
        }
    }
}

/// The metadata store of a configuration.
pub(crate) enum OpenedStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Opens (and migrates) the configured database.
pub(crate) async fn open_store(database: &Database) -> Result<OpenedStore, CliError> {
    let url = match &database.password_file {
        Some(file) => with_password(&database.url, &secret_file(file)?)?,
        None => Zeroizing::new(database.url.clone()),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(OpenedStore::Postgres(PgStore::open(&url).await.map_err(fail)?))
    } else {
        Ok(OpenedStore::Sqlite(SqliteStore::open(&url).await.map_err(fail)?))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum OpenedBlobs {
    Folder(LocalBlobStore),
    S3(S3BlobStore),
}

fn open_blobs(blobs: &Blobs) -> Result<OpenedBlobs, CliError> {
    if let Some(folder) = &blobs.folder {
        return Ok(OpenedBlobs::Folder(LocalBlobStore::open(folder).map_err(fail)?));
    }
    let Some(s3) = &blobs.s3 else {
        return Err(fail("no blob store configured"));
    };
    let mut retention = HashMap::new();
    for (class, value) in &s3.retention {
        let name = RetentionClass::new(class).map_err(fail)?;
        retention.insert(name, retention_period(class, value)?);
    }
    let store = S3BlobStore::new(S3Config {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone(),
        endpoint: s3.endpoint.clone(),
        access_key_id: secret_file(&s3.access_key_id_file)?.to_string(),
        secret_access_key: secret_file(&s3.secret_access_key_file)?.to_string(),
        allow_http: s3.allow_http,
        object_lock: s3.object_lock,
        retention,
    })
    .map_err(fail)?;
    Ok(OpenedBlobs::S3(store))
}

async fn serve<L, B>(
    config: &Config,
    log: L,
    blobs: B,
    log_key: NoteSigner,
    (org_key, keyring): (NoteVerifier, vellum_protocol::keyring::VerifiedKeyring),
) -> Result<(), CliError>
where
    L: LogStore
        + DeviceStore
        + AccountStore
        + SessionStore
        + AuditStore
        + KeyStore
        + vellum_archive::search::RecordSearch,
    B: BlobStore,
{
    let tls = match &config.tls {
        Some(tls) => {
            refuse_shared(&tls.key_file)?;
            Some(vellum_gateway::server::tls_acceptor(&tls.cert_file, &tls.key_file).map_err(fail)?)
        }
        None => None,
    };
    if tls.is_none() && vellum_gateway::server::plain_http_is_exposed(&config.listen) {
        tracing::warn!(
            listen = %config.listen,
            "SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS: device credentials and enrollment \
             tokens cross the network in the clear. Configure [tls] or put a TLS proxy on loopback."
        );
        eprintln!(
            "vellum: WARNING: serving plain HTTP on {} (not loopback): configure [tls] in the configuration",
            config.listen
        );
    }
    if config.limits.device_cache_ms > 60_000 {
        return Err(fail(
            "limits.device_cache_ms is at most 60000: a revocation made elsewhere must be seen within a minute",
        ));
    }
    let limits = Limits {
        max_capture_bytes: config.limits.max_capture_bytes,
        stream_over_bytes: config.limits.stream_over_bytes,
        max_concurrent_requests: config.limits.max_concurrent_requests.max(1),
        queue_timeout: Duration::from_secs(config.limits.queue_timeout_secs),
        request_timeout: Duration::from_secs(config.limits.request_timeout_secs.max(1)),
        max_buffered_bytes: config.limits.max_buffered_bytes,
        device_cache: Duration::from_millis(config.limits.device_cache_ms),
        max_scope_days: config.limits.max_scope_days,
        max_concurrent_reads: config.limits.max_concurrent_reads,
        max_reads_per_account: config.limits.max_reads_per_account,
    };
    let archive = Archive::open(log, blobs, log_key).await.map_err(fail)?;
    let keyring = vellum_gateway::starting_keyring(&archive, &org_key, keyring)
        .await
        .map_err(|e| fail(format!("keyring: {e}")))?;
    let epoch = keyring.statement().epoch;
    let people = people_settings(config, limits.queue_timeout)?;
    reseal_totp_secrets(archive.log_store(), people.auth.totp_keys()).await?;
    audit_upgrade_bindings(&archive).await?;
    let proxies = vellum_gateway::server::TrustedProxies::parse(&config.trusted_proxies)
        .map_err(|e| fail(format!("trusted_proxies: {e}")))?;
    let mut gateway = Gateway::new(archive, keyring, people.auth)
        .with_org_key(org_key)
        .with_limits(limits)
        .with_login_limits(people.per_address, people.per_account);
    if let Some(oidc) = people.oidc {
        gateway = gateway.with_oidc(oidc);
    }
    let gateway = Arc::new(gateway);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| fail(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener.local_addr().map_err(fail)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, epoch = epoch.0, "serving");
    eprintln!("vellum: serving on {scheme}://{address} (keyring epoch {epoch}); Ctrl-C stops");
    let mut app = vellum_gateway::router(gateway.clone());
    if !proxies.is_empty() {
        app = vellum_gateway::server::behind_proxies(app, proxies);
    }
    vellum_gateway::server::serve(listener, app, tls, shutdown_signal()).await;
    gateway.archive().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// A configuration in a fresh folder with a token key; `extra` is appended.
    fn config(extra: &str) -> (tempfile::TempDir, Result<Config, CliError>) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("jwt.key");
        std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let totp = dir.path().join("totp.key");
        std::fs::write(&totp, "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA\n").unwrap();
        std::fs::set_permissions(&totp, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "log_key_file = \"log.skey\"\norg_key = \"x\"\nkeyring_file = \"keyring.note\"\n\
             trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n\
             [database]\nurl = \"sqlite://meta.db\"\n[blobs]\nfolder = \"blobs\"\n{extra}"
        );
        let path = dir.path().join("vellum.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(&path);
        (dir, loaded)
    }

    const AUTH: &str = "[auth]\njwt_key_file = \"jwt.key\"\ntotp_key_file = \"totp.key\"\n";
    const OIDC: &str = "[oidc]\nissuer = \"https://idp.agency.example\"\nclient_id = \"vellum\"\n\
        redirect_uri = \"https://vellum.agency.example/v1/auth/oidc/callback\"\n\
        [oidc.roles]\n\"records-officers\" = \"approver\"\nauditors = \"auditor\"\n";

    fn people(extra: &str) -> Result<People, CliError> {
        let (_dir, loaded) = config(extra);
        people_settings(&loaded?, Duration::from_secs(1))
    }

    #[test]
    fn sign_in_settings_are_checked_when_the_gateway_starts() {
        let ok = people(&format!("{AUTH}{OIDC}")).unwrap();
        let oidc = ok.oidc.unwrap();
        assert_eq!(oidc.settings().roles.len(), 2);
        assert_eq!(oidc.settings().username_claim, "email");
        assert_eq!(ok.auth.password_cost(), Cost::MINIMUM);

        let raised = people(&format!(
            "{AUTH}password_memory_kib = 65536\npassword_iterations = 3\n"
        ))
        .unwrap();
        assert_eq!(raised.auth.password_cost(), Cost::new(65_536, 3, 1).unwrap());

        for (bad, says) in [
            (OIDC.to_owned(), "needs an [auth]"),
            (
                "[auth]\njwt_key_file = \"jwt.key\"\n".to_owned(),
                "totp_key_file is required",
            ),
            (format!("{AUTH}password_memory_kib = 4096\n"), "below the minimum"),
            (format!("{AUTH}session_secs = 60\n"), "session_secs"),
            (
                format!("{AUTH}{OIDC}admins = \"root\"\n"),
                "admin, auditor or approver",
            ),
            (
                format!("{AUTH}{}", OIDC.replace("https://idp", "http://idp")),
                "https",
            ),
            (
                format!("{AUTH}{}", OIDC.replace("/v1/auth/oidc/callback", "/sso")),
                "/v1/auth/oidc/callback",
            ),
        ] {
            let refused = people(&bad).err().unwrap_or_else(|| panic!("accepted: {bad}"));
            assert!(refused.to_string().contains(says), "{bad}: {refused}");
        }
        let (_dir, unknown) = config("[oidc]\nissuer = \"https://idp\"\nsecret = \"inline\"\n");
        assert!(
            unknown.is_err(),
            "an unknown [oidc] key (an inline secret) was accepted"
        );
    }
}
