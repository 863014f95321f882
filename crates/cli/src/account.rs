//! `vellum account`: a person's own account at a gateway, on their first day and
//! after: replace a one-time password, set up the second factor (the `otpauth://` URI
//! and a QR code in the terminal, a first code, the recovery codes shown once), and
//! sign out. No step needs a hand-written HTTP call.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::admin_api::Session;
use crate::error::{CliError, Kind};

#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Replace your password (a one-time password first of all). Your other sessions
    /// end; sign in again with the new one.
    Password {
        #[command(flatten)]
        who: Who,
        /// A file (mode 0600) holding the new password (at least 15 characters);
        /// without it, the line after the current password on standard input.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// A current TOTP code, once your account has a second factor.
        #[arg(long, value_name = "CODE", conflicts_with = "recovery_code")]
        totp: Option<String>,
        /// One of your recovery codes, instead of a TOTP code.
        #[arg(long, value_name = "CODE")]
        recovery_code: Option<String>,
    },
    /// Your second factor.
    #[command(subcommand)]
    Totp(TotpCommand),
    /// End the session kept by `vellum auditor login` (or `vellum approver login`).
    Logout {
        /// The session file; by default the auditor's, or the approver's with
        /// `--approver`.
        #[arg(long, value_name = "FILE", env = "VELLUM_SESSION")]
        session: Option<PathBuf>,
        /// End the approver's kept session rather than the auditor's.
        #[arg(long)]
        approver: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TotpCommand {
    /// Set up the second factor an auditor or records officer needs: prints the
    /// `otpauth://` URI, a QR code for an authenticator app and the secret, asks for
    /// the first code the app shows, and prints the recovery codes once.
    Setup {
        #[command(flatten)]
        who: Who,
        /// The first code the app shows (asked for on standard input otherwise).
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
}

/// Which account, at which gateway.
#[derive(Debug, Args)]
pub(crate) struct Who {
    /// The gateway's URL (https://, or http:// to this machine).
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// Your username.
    #[arg(long = "as", value_name = "NAME")]
    as_user: String,
    /// A file (mode 0600) holding your current password; without it, the first line
    /// of standard input (from a pipe, never typed where it would show).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("account: {e}"))
}

pub(crate) fn run(command: &AccountCommand) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Kind::Other, e))?;
    runtime.block_on(async {
        match command {
            AccountCommand::Password {
                who,
                new_password_file,
                totp,
                recovery_code,
            } => {
                let mut input = Input::default();
                let current = input.secret(who.password_file.as_deref(), "--password-file")?;
                let new = input.secret(new_password_file.as_deref(), "--new-password-file")?;
                let mut change = json!({
                    "username": who.as_user,
                    "password": current.as_str(),
                    "new_password": new.as_str(),
                });
                if let Some(code) = totp {
                    change["totp"] = json!(code);
                }
                if let Some(code) = recovery_code {
                    change["recovery_code"] = json!(code);
                }
                let body = Zeroizing::new(change.to_string());
                let session = Session::anonymous(&who.gateway)?;
                session
                    .call(Method::POST, "/v1/auth/password", Some(body.as_str()))
                    .await?;
                println!("password changed for {}; sign in again with it", who.as_user);
                Ok(())
            }
            AccountCommand::Totp(TotpCommand::Setup { who, code }) => totp_setup(who, code.as_deref()).await,
            AccountCommand::Logout { session, approver } => {
                let file = crate::auditor::SessionFile::of(session.clone(), *approver);
                crate::auditor::logout(&file).await
            }
        }
    })
}

/// Secrets read from files, or line by line from standard input.
#[derive(Default)]
struct Input {
    lines: Option<std::io::StdinLock<'static>>,
}

impl Input {
    fn secret(&mut self, file: Option<&std::path::Path>, flag: &str) -> Result<Zeroizing<String>, CliError> {
        if let Some(file) = file {
            return crate::serve::secret_file(file);
        }
        if std::io::stdin().is_terminal() {
            return Err(fail(
                Kind::Other,
                format!(
                    "give {flag} FILE (mode 0600), or the passwords one a line on standard input from a pipe"
                ),
            ));
        }
        let lines = self.lines.get_or_insert_with(|| std::io::stdin().lock());
        let mut line = Zeroizing::new(String::new());
        lines.read_line(&mut line).map_err(|e| fail(Kind::Other, e))?;
        if line.is_empty() {
            return Err(fail(
                Kind::Other,
                format!("standard input ended before {flag}'s password"),
            ));
        }
        Ok(Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned()))
    }
}

async fn totp_setup(who: &Who, code: Option<&str>) -> Result<(), CliError> {
    let mut input = Input::default();
    let password = input.secret(who.password_file.as_deref(), "--password-file")?;
    let session = Session::for_setup(&who.gateway, &who.as_user, &password).await?;
    let setup = session.call(Method::POST, "/v1/auth/totp", Some("{}")).await?;
    let (uri, secret) = match (setup["uri"].as_str(), setup["secret"].as_str()) {
        (Some(uri), Some(secret)) => (uri.to_owned(), secret.to_owned()),
        _ => return Err(fail(Kind::Malformed, "the gateway sent no TOTP secret")),
    };
    println!(
        "Add this account to your authenticator app: scan the QR code, or open the URI, or type the secret."
    );
    println!();
    if let Ok(qr) = qrcode::QrCode::new(uri.as_bytes()) {
        let art = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("{art}");
    }
    println!("uri: {uri}");
    println!("secret: {secret}");
    std::io::stdout().flush().map_err(|e| fail(Kind::Other, e))?;
    let code = match code {
        Some(code) => code.trim().to_owned(),
        None => {
            eprint!("the 6-digit code your app shows now: ");
            let mut line = String::new();
            let read = match &mut input.lines {
                Some(lines) => lines.read_line(&mut line),
                None => std::io::stdin().lock().read_line(&mut line),
            };
            read.map_err(|e| fail(Kind::Other, e))?;
            line.trim().to_owned()
        }
    };
    let confirm = json!({ "code": code }).to_string();
    let answer = session
        .call(Method::POST, "/v1/auth/totp/confirm", Some(&confirm))
        .await?;
    let codes: Vec<&str> = answer["recovery_codes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!();
    println!("Second factor set up. Your recovery codes, shown this once (each replaces a code once;");
    println!("keep them apart from the phone, on paper or in a password manager):");
    for code in codes {
        println!("  {code}");
    }
    println!(
        "Sign in again with a code: vellum auditor login --gateway {} --as {} --totp CODE",
        who.gateway, who.as_user
    );
    Ok(())
}
