//! Single sign-on with OpenID Connect: the authorization code flow with PKCE
//! (RFC 7636, `S256`), the gateway as a confidential or public client.
//!
//! `start` sends the browser to the identity provider with a fresh `state`, `nonce`
//! and code challenge; the three secrets travel in a short-lived cookie that the
//! gateway signs (HMAC-SHA256), so any gateway of a deployment can finish the flow
//! and nothing is kept in memory. `finish` checks the cookie against the `state`
//! that came back, redeems the code with its verifier, and verifies the ID token:
//! an asymmetric algorithm only, a key from the provider's JWKS, `iss`, `aud` (and
//! `azp` when there are several audiences), `exp`, `nbf`, `iat` and the `nonce`.
//! Claims then map to a local role by configuration.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::RwLock;
use vellum_archive::ports::{Role, valid_username};
use zeroize::Zeroizing;

/// The name of the cookie that carries a sign-in in progress (over plain HTTP on
/// loopback; over HTTPS it is [`SECURE_COOKIE`]).
pub const COOKIE: &str = "vellum_oidc";
/// The cookie's name over HTTPS: the `__Host-` prefix makes browsers refuse it from
/// any other host or path.
pub const SECURE_COOKIE: &str = "__Host-vellum_oidc";

/// How long discovery is not retried after it failed.
const DISCOVERY_BACKOFF: Duration = Duration::from_secs(30);

/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/v1/auth/oidc/callback";

/// How long a sign-in may take at the identity provider.
pub const FLOW_SECS: u64 = 600;

/// The least time between two fetches of the provider's keys for an unknown `kid`.
const JWKS_REFRESH: Duration = Duration::from_secs(60);

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 60;

/// The identity provider and how its claims map to local accounts.
#[derive(Clone)]
pub struct OidcSettings {
    /// The issuer identifier, exactly as the provider's tokens carry it.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// The client secret, for a confidential client (`client_secret_basic`).
    pub client_secret: Option<Zeroizing<String>>,
    /// Where the provider sends the browser back: this gateway's
    /// `/v1/auth/oidc/callback`, as registered at the provider.
    pub redirect_uri: String,
    /// The scopes asked for; `openid` is always among them.
    pub scopes: Vec<String>,
    /// The claim whose value is the local username (such as `email`).
    pub username_claim: String,
    /// The claim listing the person's groups (a string or an array of strings).
    pub roles_claim: String,
    /// Which group gives which role. A person whose groups give no role, or more
    /// than one, is refused.
    pub roles: Vec<(String, Role)>,
    /// `amr` values that count as a second factor; roles that need one are refused
    /// a session unless the ID token carries one of them.
    pub mfa_amr: Vec<String>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Why single sign-on did not produce an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The `state` cookie is missing, forged, expired or for another sign-in.
    #[error("the sign-in state is missing, expired or does not match: start again")]
    State,
    /// The provider could not be reached or answered something unusable.
    #[error("the identity provider failed: {0}")]
    Provider(String),
    /// The provider refused, or its answer did not verify.
    #[error("single sign-on refused: {0}")]
    Refused(String),
    /// The person's claims give no role here, or more than one.
    #[error("{0}")]
    NoRole(String),
}

/// A person the provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The local username (from the configured claim).
    pub username: String,
    /// The role the configured groups give.
    pub role: Role,
    /// The provider's subject identifier.
    pub subject: String,
    /// Whether the ID token says a second factor was used.
    pub second_factor: bool,
}

/// What the provider publishes about itself, and its keys.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    jwks: JwkSet,
    jwks_at: Instant,
}

/// A configured identity provider.
pub struct Oidc {
    settings: OidcSettings,
    state_key: Zeroizing<[u8; 32]>,
    http: reqwest::Client,
    provider: RwLock<Option<Provider>>,
    /// When discovery last failed: it is not retried for [`DISCOVERY_BACKOFF`].
    failed_at: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The signed contents of the cookie.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    expires: u64,
}

/// What the provider sends the browser back with.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` sent with the request.
    pub state: Option<String>,
    /// The provider's error code, when it refused.
    pub error: Option<String>,
}

/// Whether a secret may be sent to this URL: HTTPS, or plain HTTP to this machine.
pub fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(h, port)| !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}

fn random_text(bytes: usize) -> Result<String, OidcError> {
    let mut raw = Zeroizing::new(vec![0u8; bytes]);
    getrandom::getrandom(&mut raw).map_err(|_| OidcError::Provider("no randomness".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(&*raw))
}

/// A short, printable form of what a provider said, for errors (it is not trusted).
fn sanitized(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-. ".contains(*c))
        .take(80)
        .collect()
}

impl Oidc {
    /// A provider with these settings; `state_key` signs the sign-in cookies (every
    /// gateway of a deployment must use the same one).
    pub fn new(settings: OidcSettings, state_key: [u8; 32]) -> Result<Self, String> {
        for (name, url) in [
            ("issuer", &settings.issuer),
            ("redirect_uri", &settings.redirect_uri),
        ] {
            if !https_or_loopback(url) {
                return Err(format!(
                    "oidc {name} must be an https:// URL (plain http only on loopback)"
                ));
            }
        }
        if !settings
            .redirect_uri
            .split(['?', '#'])
            .next()
            .is_some_and(|u| u.ends_with(CALLBACK_PATH))
        {
            return Err(format!(
                "oidc redirect_uri must be this gateway's {CALLBACK_PATH} (the sign-in cookie is sent only there)"
            ));
        }
        if settings.client_id.is_empty() || settings.username_claim.is_empty() || settings.roles.is_empty() {
            return Err("oidc needs client_id, username_claim and at least one role mapping".into());
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("oidc http client: {e}"))?;
        Ok(Self {
            settings,
            state_key: Zeroizing::new(state_key),
            http,
            provider: RwLock::new(None),
            failed_at: std::sync::Mutex::new(None),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Whether the cookie must be `Secure` (the gateway is reached over HTTPS).
    pub fn secure_cookie(&self) -> bool {
        self.settings.redirect_uri.starts_with("https://")
    }

    /// The flow cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookie() {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }

    /// Begins a sign-in at `now` (Unix seconds): the provider URL to send the browser
    /// to, and the cookie value that must come back with it.
    pub async fn start(&self, now: u64) -> Result<(String, String), OidcError> {
        let endpoint = self.with_provider(|p| p.authorization_endpoint.clone()).await?;
        let flow = Flow {
            state: random_text(16)?,
            nonce: random_text(16)?,
            verifier: random_text(32)?,
            expires: now + FLOW_SECS,
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(flow.verifier.as_bytes()));
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(self.settings.scopes.iter().filter(|s| *s != "openid").cloned());
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok((format!("{endpoint}{separator}{query}"), self.seal(&flow)?))
    }

    /// Finishes a sign-in: checks `cookie` against the callback's `state`, redeems
    /// the code and verifies the ID token; at `now` (Unix seconds).
    pub async fn finish(
        &self,
        cookie: Option<&str>,
        callback: &Callback,
        now: u64,
    ) -> Result<Identity, OidcError> {
        let flow = cookie.and_then(|c| self.open(c)).ok_or(OidcError::State)?;
        let returned = callback.state.as_deref().unwrap_or_default();
        if flow.expires < now || !bool::from(returned.as_bytes().ct_eq(flow.state.as_bytes())) {
            return Err(OidcError::State);
        }
        if let Some(error) = &callback.error {
            return Err(OidcError::Refused(format!(
                "the identity provider answered {}",
                sanitized(error)
            )));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OidcError::Refused("the identity provider sent no code".into()))?;
        let id_token = self.redeem(code, &flow.verifier).await?;
        let claims = self.verify(&id_token, now).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(flow.nonce.as_str()) {
            return Err(OidcError::Refused(
                "the ID token is for another sign-in (nonce)".into(),
            ));
        }
        self.identity(&claims)
    }

    /// The identity these verified claims describe, by the configured mapping.
    pub fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, OidcError> {
        let s = &self.settings;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let username = claims
            .get(&s.username_claim)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|u| valid_username(u))
            .ok_or_else(|| {
                OidcError::NoRole(format!(
                    "the identity provider sent no usable {} claim (1-64 characters of a-z 0-9 . _ @ -)",
                    s.username_claim
                ))
            })?;
        let groups: Vec<&str> = match claims.get(&s.roles_claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = s
            .roles
            .iter()
            .filter(|(group, _)| groups.contains(&group.as_str()))
            .map(|(_, role)| *role)
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        let role = match roles.as_slice() {
            [role] => *role,
            [] => {
                return Err(OidcError::NoRole(format!(
                    "{username} has no role here: none of their {} is mapped to one",
                    s.roles_claim
                )));
            }
            _ => {
                return Err(OidcError::NoRole(format!(
                    "{username}'s {} map to more than one role; a person has one role",
                    s.roles_claim
                )));
            }
        };
        let second_factor = match claims.get("amr") {
            Some(Value::Array(amr)) => amr
                .iter()
                .filter_map(Value::as_str)
                .any(|m| s.mfa_amr.iter().any(|wanted| wanted == m)),
            _ => false,
        };
        Ok(Identity {
            username,
            role,
            subject,
            second_factor,
        })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&*self.state_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"vellum oidc flow v1\n");
        mac.update(payload);
        mac
    }

    fn seal(&self, flow: &Flow) -> Result<String, OidcError> {
        let payload = serde_json::to_vec(flow).map_err(|e| OidcError::Provider(e.to_string()))?;
        let tag = self.mac(&payload).finalize().into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    fn open(&self, cookie: &str) -> Option<Flow> {
        let (payload, tag) = cookie.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }

    /// Reads what the provider publishes, once, then answers `f` from it.
    async fn with_provider<T>(&self, f: impl Fn(&Provider) -> T) -> Result<T, OidcError> {
        if let Some(p) = self.provider.read().await.as_ref() {
            return Ok(f(p));
        }
        let backing_off = |at: &Option<Instant>| at.is_some_and(|t| t.elapsed() < DISCOVERY_BACKOFF);
        if self.failed_at.lock().is_ok_and(|at| backing_off(&at)) {
            return Err(OidcError::Provider(
                "the identity provider was unreachable moments ago; try again shortly".into(),
            ));
        }
        let mut slot = self.provider.write().await;
        // Requests that queued for the lock while discovery failed do not retry it.
        if slot.is_none() && self.failed_at.lock().is_ok_and(|at| backing_off(&at)) {
            return Err(OidcError::Provider(
                "the identity provider was unreachable moments ago; try again shortly".into(),
            ));
        }
        if slot.is_none() {
            match self.discover().await {
                Ok(provider) => *slot = Some(provider),
                Err(e) => {
                    if let Ok(mut at) = self.failed_at.lock() {
                        *at = Some(Instant::now());
                    }
                    return Err(e);
                }
            }
        }
        slot.as_ref()
            .map(f)
            .ok_or_else(|| OidcError::Provider("no provider".into()))
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        if !https_or_loopback(url) {
            return Err(OidcError::Provider(
                "the provider published a URL that is neither https nor loopback".into(),
            ));
        }
        let answer = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("GET {url}: {}", e.without_url())))?;
        if !answer.status().is_success() {
            return Err(OidcError::Provider(format!(
                "GET {url}: HTTP {}",
                answer.status()
            )));
        }
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| OidcError::Provider(format!("GET {url}: {}", e.without_url())))?;
        serde_json::from_slice(&bytes).map_err(|_| OidcError::Provider(format!("GET {url}: not JSON")))
    }

    async fn discover(&self) -> Result<Provider, OidcError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let document = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        let field = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| OidcError::Provider(format!("discovery document has no {name}")))
        };
        // OpenID Connect Discovery §4.3: the document must name the issuer asked for.
        if field("issuer")? != self.settings.issuer {
            return Err(OidcError::Provider(
                "the discovery document names another issuer".into(),
            ));
        }
        let jwks_uri = field("jwks_uri")?;
        let authorization_endpoint = field("authorization_endpoint")?;
        if !https_or_loopback(&authorization_endpoint) {
            return Err(OidcError::Provider(
                "the provider's authorization endpoint is neither https nor loopback".into(),
            ));
        }
        let jwks = self.fetch_jwks(&jwks_uri).await?;
        Ok(Provider {
            authorization_endpoint,
            token_endpoint: field("token_endpoint")?,
            jwks_uri,
            jwks,
            jwks_at: Instant::now(),
        })
    }

    async fn fetch_jwks(&self, url: &str) -> Result<JwkSet, OidcError> {
        serde_json::from_value(self.get_json(url).await?)
            .map_err(|_| OidcError::Provider("the provider's JWKS does not parse".into()))
    }

    /// Redeems the code (with the PKCE verifier) for an ID token.
    async fn redeem(&self, code: &str, verifier: &str) -> Result<String, OidcError> {
        let endpoint = self.with_provider(|p| p.token_endpoint.clone()).await?;
        if !https_or_loopback(&endpoint) {
            return Err(OidcError::Provider(
                "the provider's token endpoint is neither https nor loopback".into(),
            ));
        }
        let s = &self.settings;
        let form = Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &s.redirect_uri)
                .append_pair("client_id", &s.client_id)
                .append_pair("code_verifier", verifier)
                .finish(),
        );
        let mut request = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form.as_bytes().to_vec());
        if let Some(secret) = &s.client_secret {
            // RFC 6749 §2.3.1: each part form-encoded, then Basic.
            let enc = |t: &str| form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>();
            let basic = Zeroizing::new(STANDARD.encode(format!("{}:{}", enc(&s.client_id), enc(secret))));
            request = request.header("authorization", format!("Basic {}", basic.as_str()));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {}", e.without_url())))?;
        let status = answer.status();
        let body: Value = answer
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if !status.is_success() {
            let error = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error code");
            return Err(OidcError::Refused(format!(
                "the identity provider refused the code ({})",
                sanitized(error)
            )));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Provider("the token answer has no id_token".into()))
    }

    /// The claims of a valid ID token: asymmetric signature by a key of the
    /// provider's JWKS, and issuer, audience and times right.
    async fn verify(&self, id_token: &str, now: u64) -> Result<Map<String, Value>, OidcError> {
        let refused = |what: &str| OidcError::Refused(format!("the ID token {what}"));
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| refused("is malformed"))?;
        // Only signatures a public key can check: never HMAC (the provider's public
        // key is no secret), never `none` (which does not even parse).
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(refused("uses an algorithm that is not accepted"));
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg).await? {
            Some(key) => key,
            None => {
                self.refresh_jwks().await?;
                self.key_for(header.kid.as_deref(), header.alg)
                    .await?
                    .ok_or_else(|| refused("is signed by a key the provider does not publish"))?
            }
        };
        let s = &self.settings;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&s.issuer]);
        validation.set_audience(&[&s.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| refused(&format!("does not verify ({})", sanitized(&e.to_string()))))?
            .claims;
        if claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_none_or(|iat| iat > now + LEEWAY_SECS)
        {
            return Err(refused("was issued in the future"));
        }
        if let Some(Value::Array(audiences)) = claims.get("aud")
            && audiences.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(s.client_id.as_str())
        {
            return Err(refused("names several audiences but not this client as azp"));
        }
        Ok(claims)
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, OidcError> {
        let guard = self.provider.read().await;
        let Some(provider) = guard.as_ref() else {
            return Ok(None);
        };
        let jwk = match kid {
            Some(kid) => provider.jwks.find(kid),
            None if provider.jwks.keys.len() == 1 => provider.jwks.keys.first(),
            None => None,
        };
        let Some(jwk) = jwk else {
            return Ok(None);
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|a| a != KeyAlgorithm::from(alg))
        {
            return Err(OidcError::Refused(
                "the ID token's algorithm is not its key's".into(),
            ));
        }
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|_| OidcError::Provider("a key in the provider's JWKS is unusable".into()))
    }

    /// Fetches the provider's keys again (after a rotation), at most once a minute:
    /// the write lock is held across the fetch, so racing callbacks fetch once.
    async fn refresh_jwks(&self) -> Result<(), OidcError> {
        let mut guard = self.provider.write().await;
        let Some(provider) = guard.as_mut() else {
            return Ok(());
        };
        if provider.jwks_at.elapsed() < JWKS_REFRESH {
            return Ok(());
        }
        // Whatever the outcome, the next attempt waits its minute.
        provider.jwks_at = Instant::now();
        provider.jwks = self.fetch_jwks(&provider.jwks_uri).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> Oidc {
        let settings = OidcSettings {
            issuer: "https://idp.agency.example".into(),
            client_id: "vellum".into(),
            client_secret: None,
            redirect_uri: "https://vellum.agency.example/v1/auth/oidc/callback".into(),
            scopes: vec!["email".into()],
            username_claim: "email".into(),
            roles_claim: "groups".into(),
            roles: vec![
                ("records-officers".into(), Role::Approver),
                ("auditors".into(), Role::Auditor),
                ("it-admins".into(), Role::Admin),
            ],
            mfa_amr: vec!["mfa".into()],
        };
        Oidc::new(settings, [9; 32]).unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn claims_map_to_exactly_one_role() {
        let oidc = oidc();
        let id = oidc
            .identity(&claims(serde_json::json!({
                "sub": "1", "email": "Ann@Agency.example", "groups": ["staff", "auditors"], "amr": ["pwd", "mfa"]
            })))
            .unwrap();
        assert_eq!(
            (id.username.as_str(), id.role, id.second_factor),
            ("ann@agency.example", Role::Auditor, true)
        );
        let single = oidc
            .identity(&claims(
                serde_json::json!({"sub": "1", "email": "a@b", "groups": "it-admins"}),
            ))
            .unwrap();
        assert_eq!((single.role, single.second_factor), (Role::Admin, false));
        for refused in [
            serde_json::json!({"sub": "1", "email": "a@b", "groups": ["staff"]}),
            serde_json::json!({"sub": "1", "email": "a@b"}),
            serde_json::json!({"sub": "1", "email": "a@b", "groups": ["auditors", "it-admins"]}),
            serde_json::json!({"sub": "1", "groups": ["auditors"]}),
            serde_json::json!({"sub": "1", "email": "with space@b", "groups": ["auditors"]}),
        ] {
            assert!(
                matches!(oidc.identity(&claims(refused.clone())), Err(OidcError::NoRole(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_flow_cookie_is_bound_to_its_key() {
        let oidc = oidc();
        let flow = Flow {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            expires: 10,
        };
        let cookie = oidc.seal(&flow).unwrap();
        assert_eq!(oidc.open(&cookie).map(|f| f.state), Some("s".into()));
        let other = Oidc::new(oidc.settings.clone(), [8; 32]).unwrap();
        assert!(other.open(&cookie).is_none(), "another key's cookie was accepted");
        let (payload, tag) = cookie.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"state":"s","nonce":"n","verifier":"v","expires":99}"#);
        assert!(oidc.open(&format!("{forged}.{tag}")).is_none());
        assert!(oidc.open(payload).is_none());
    }

    #[test]
    fn only_https_or_loopback_is_spoken_to() {
        assert!(https_or_loopback("https://idp.example/x"));
        assert!(https_or_loopback("http://127.0.0.1:8080/x"));
        assert!(https_or_loopback("http://localhost/x"));
        assert!(https_or_loopback("http://[::1]:9/x"));
        assert!(!https_or_loopback("http://idp.example/x"));
        assert!(!https_or_loopback("http://127.0.0.1.evil.example/x"));
        assert!(!https_or_loopback("ftp://127.0.0.1/x"));
    }
}
