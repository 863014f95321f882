//! `vellum admin user … --gateway URL`: the same account administration through a
//! running gateway's API, signed in as an administrator. Every change is then audited
//! as that administrator's, and the gateway's rules apply (nobody changes their own
//! account this way).

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::admin::UserCommand;
use crate::error::{CliError, Kind};

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, e.to_string())
}

/// A sign-in refusal naming the request's fields as the flags a person types.
fn flags_for_fields(e: CliError) -> CliError {
    let text = e
        .to_string()
        .replace("(totp)", "(--totp)")
        .replace("(recovery_code)", "(--recovery-code)");
    CliError::new(e.kind(), text)
}

/// How often a call answered 503 is tried again.
const RETRIES: u32 = 5;

/// Where to sign in, and as whom.
pub(crate) struct Remote<'a> {
    pub(crate) url: &'a str,
    pub(crate) username: &'a str,
    pub(crate) password_file: Option<&'a Path>,
    pub(crate) totp: Option<&'a str>,
    /// A recovery code, instead of a TOTP code.
    pub(crate) recovery_code: Option<&'a str>,
}

/// A signed-in administrator's session with a gateway.
pub(crate) struct Session {
    http: reqwest::Client,
    base: String,
    access: Zeroizing<String>,
    /// The refresh token of the sign-in, good once.
    refresh: Option<Zeroizing<String>>,
}

/// The administrator's password: from the file, or one line of standard input (never
/// typed at a terminal, where it would be echoed).
fn password(file: Option<&Path>) -> Result<Zeroizing<String>, CliError> {
    if let Some(file) = file {
        return crate::serve::secret_file(file);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(fail(
            "give the account's password with --password-file FILE, or on standard input from a pipe",
        ));
    }
    let mut line = Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line).map_err(fail)?;
    Ok(Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// The access token of a sign-in or refresh answer.
fn access_token(tokens: &Value) -> Result<Zeroizing<String>, CliError> {
    tokens["access_token"]
        .as_str()
        .map(|t| Zeroizing::new(t.to_owned()))
        .ok_or_else(|| fail("the gateway sent no access token"))
}

/// The problem's detail, or the status, as an error of the right kind.
fn refused(status: StatusCode, body: &str) -> CliError {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|p| {
            p.get("detail")
                .or_else(|| p.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| status.to_string());
    let kind = match status {
        StatusCode::NOT_FOUND => Kind::NotFound,
        StatusCode::CONFLICT => Kind::Exists,
        _ => Kind::Other,
    };
    CliError::new(
        kind,
        format!(
            "the gateway refused ({}): {}",
            status.as_u16(),
            crate::case_view::shown(&detail)
        ),
    )
}

impl Session {
    /// A session not yet signed in, to the gateway at `url`.
    fn unsigned(url: &str) -> Result<Self, CliError> {
        // Never follow a redirect: it would carry the password elsewhere, perhaps in clear.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .map_err(fail)?;
        let base = url.trim_end_matches('/').to_owned();
        if !vellum_gateway::auth::oidc::https_or_loopback(&base) {
            return Err(fail(
                "--gateway must be an https:// URL (plain http:// only to this machine): credentials cross it",
            ));
        }
        Ok(Session {
            http,
            base,
            access: Zeroizing::new(String::new()),
            refresh: None,
        })
    }

    /// Takes the access and refresh tokens of a sign-in or refresh answer.
    fn signed_in(&mut self, tokens: &Value) -> Result<(), CliError> {
        if tokens["scope"] != "full" {
            return Err(fail(
                "this account must set up its second factor first: vellum account totp setup --gateway URL --as NAME",
            ));
        }
        self.access = access_token(tokens)?;
        self.refresh = tokens["refresh_token"]
            .as_str()
            .map(|t| Zeroizing::new(t.to_owned()));
        Ok(())
    }

    /// Spends a refresh token at the gateway of `url`: the session, and the next
    /// refresh token (the one given is spent).
    pub(crate) async fn refresh(url: &str, token: &str) -> Result<(Self, Zeroizing<String>), CliError> {
        let mut session = Self::unsigned(url)?;
        let body = Zeroizing::new(json!({ "refresh_token": token }).to_string());
        let tokens = session
            .call(Method::POST, "/v1/auth/refresh", Some(body.as_str()))
            .await?;
        session.signed_in(&tokens)?;
        let next = session
            .refresh
            .clone()
            .ok_or_else(|| fail("the gateway sent no next refresh token"))?;
        Ok((session, next))
    }

    /// The sign-in's refresh token.
    pub(crate) fn refresh_token(&self) -> Option<&str> {
        self.refresh.as_deref().map(String::as_str)
    }

    /// A session that signs in to nothing: for the calls that take no token (a
    /// password change).
    pub(crate) fn anonymous(url: &str) -> Result<Self, CliError> {
        Self::unsigned(url)
    }

    /// Signs in to set up a second factor: the limited session an auditor or approver
    /// gets before they have one.
    pub(crate) async fn for_setup(url: &str, username: &str, password: &str) -> Result<Self, CliError> {
        let mut session = Self::unsigned(url)?;
        let body = Zeroizing::new(json!({ "username": username, "password": password }).to_string());
        let tokens = session
            .call(Method::POST, "/v1/auth/login", Some(body.as_str()))
            .await?;
        if tokens["scope"] != "mfa-setup" {
            session.access = Zeroizing::new(tokens["access_token"].as_str().unwrap_or_default().to_owned());
            session.close().await;
            return Err(fail(
                "this account has a second factor already (an administrator's `vellum admin user reset-mfa` removes a lost one)",
            ));
        }
        session.access = access_token(&tokens)?;
        Ok(session)
    }

    pub(crate) async fn open(remote: &Remote<'_>) -> Result<Self, CliError> {
        let mut session = Self::unsigned(remote.url)?;
        let password = password(remote.password_file)?;
        let mut login = json!({ "username": remote.username, "password": password.as_str() });
        if let Some(code) = remote.totp {
            login["totp"] = json!(code);
        }
        if let Some(code) = remote.recovery_code {
            login["recovery_code"] = json!(code);
        }
        let body = Zeroizing::new(login.to_string());
        let tokens = session
            .call(Method::POST, "/v1/auth/login", Some(body.as_str()))
            .await
            .map_err(flags_for_fields)?;
        session.signed_in(&tokens)?;
        Ok(session)
    }

    /// One API call. A 503 (the gateway's password work is rationed, so sign-ins and
    /// new passwords may have to wait their turn) is retried after its Retry-After.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, CliError> {
        let bytes = self.raw(method, path, body).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `GET path`, answered with text (a checkpoint, a proof).
    pub(crate) async fn text(&self, path: &str) -> Result<String, CliError> {
        String::from_utf8(self.raw(Method::GET, path, None).await?)
            .map_err(|_| fail("the gateway answered with something not text"))
    }

    /// `GET path`, answered with bytes (a sealed body).
    pub(crate) async fn bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        self.raw(Method::GET, path, None).await
    }

    async fn raw(&self, method: Method, path: &str, body: Option<&str>) -> Result<Vec<u8>, CliError> {
        let mut attempts = 0;
        loop {
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
            if !self.access.is_empty() {
                request = request.bearer_auth(self.access.as_str());
            }
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_owned());
            }
            let answer = request.send().await.map_err(|e| {
                fail(format!(
                    "cannot reach the gateway at {}: {}",
                    self.base,
                    cause(&e)
                ))
            })?;
            let status = answer.status();
            let wait = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 5);
            let bytes = answer.bytes().await.map_err(fail)?;
            if status == StatusCode::SERVICE_UNAVAILABLE && attempts < RETRIES {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            if !status.is_success() {
                return Err(refused(status, &String::from_utf8_lossy(&bytes)));
            }
            return Ok(bytes.to_vec());
        }
    }

    /// Ends the session (its refresh token, if any, dies with it).
    pub(crate) async fn close(self) {
        let _ = self.call(Method::POST, "/v1/auth/logout", Some("{}")).await;
    }
}

/// What went wrong with a request, down to its root cause ("Connection refused").
fn cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    text
}

fn account_path(username: &str, action: &str) -> String {
    let name: String = form_urlencoded::byte_serialize(username.as_bytes()).collect();
    format!("/v1/admin/accounts/{name}/{action}")
}

/// Runs `command` through the gateway at `remote`.
pub(crate) async fn run(remote: &Remote<'_>, command: &UserCommand) -> Result<(), CliError> {
    let session = Session::open(remote).await?;
    let done = user_command(&session, command).await;
    session.close().await;
    done
}

async fn user_command(session: &Session, command: &UserCommand) -> Result<(), CliError> {
    let post = |path: String| async move { session.call(Method::POST, &path, Some("{}")).await };
    match command {
        UserCommand::Add { username, role, .. } => {
            let body = json!({ "username": username, "role": role }).to_string();
            let created = session
                .call(Method::POST, "/v1/admin/accounts", Some(&body))
                .await?;
            println!("created {username} ({role}); one-time password, shown only now:");
            println!("  {}", created["one_time_password"].as_str().unwrap_or_default());
        }
        UserCommand::List { .. } => {
            let listing = session.call(Method::GET, "/v1/admin/accounts", None).await?;
            for a in listing.as_array().into_iter().flatten() {
                let mut flags = Vec::new();
                for (field, flag) in [
                    ("disabled", "disabled"),
                    ("must_change_password", "must-change-password"),
                    ("totp_enabled", "totp"),
                ] {
                    if a[field].as_bool() == Some(true) {
                        flags.push(flag);
                    }
                }
                println!(
                    "{:<24} {:<9} {}",
                    a["username"].as_str().unwrap_or_default(),
                    a["role"].as_str().unwrap_or_default(),
                    flags.join(",")
                );
            }
        }
        UserCommand::Disable { username, .. } => {
            post(account_path(username, "disable")).await?;
            println!("disabled {username}; its sessions ended");
        }
        UserCommand::Enable { username, .. } => {
            post(account_path(username, "enable")).await?;
            println!("enabled {username}");
        }
        UserCommand::ResetPassword { username, .. } => {
            let reset = post(account_path(username, "reset-password")).await?;
            println!("reset {username}; one-time password, shown only now:");
            println!("  {}", reset["one_time_password"].as_str().unwrap_or_default());
        }
        UserCommand::ResetMfa { username, .. } => {
            post(account_path(username, "reset-mfa")).await?;
            println!("removed the second factor of {username}; its sessions ended");
        }
        UserCommand::SetRole { username, role, .. } => {
            let body = json!({ "role": role }).to_string();
            session
                .call(Method::POST, &account_path(username, "role"), Some(&body))
                .await?;
            println!("{username} is now {role}");
        }
    }
    Ok(())
}
