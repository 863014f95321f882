//! The auditor's key commands against a running gateway, signed in as the auditor:
//! register one's recipient, fetch and open one's wrapped epoch identities, wrap them
//! for a newcomer, and publish a signed keyring with its wrapped copies. Identities
//! are opened on this machine only; the gateway sees public keys and age files.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use vellum_protocol::seal::{self, Identity, Recipient, SealedBody, format_identity_file};

use crate::admin_api::{Remote, Session};
use crate::auditor::SessionFile;
use crate::error::{CliError, Kind};
use crate::files::{read_small, write_output};
use crate::sealing::read_identities;

/// How to sign in to the gateway, as an auditor (or a records officer).
#[derive(Debug, Args)]
pub(crate) struct Login {
    /// The gateway's URL (https://, or http:// to this machine).
    #[arg(long, value_name = "URL")]
    pub(crate) gateway: String,
    /// The username to sign in as.
    #[arg(long = "as", value_name = "NAME", env = "VELLUM_AUDITOR")]
    pub(crate) as_user: String,
    /// A file (mode 0600) holding the password; without it, one line of standard input.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// A current TOTP code (auditors and officers have a second factor).
    #[arg(long, value_name = "CODE", conflicts_with = "recovery_code")]
    totp: Option<String>,
    /// One of your recovery codes, instead of a TOTP code (each works once).
    #[arg(long, value_name = "CODE")]
    recovery_code: Option<String>,
}

/// How a key command signs in: with the session `vellum auditor login` (or `vellum
/// approver login`, for the records officer's commands) keeps, by default; or afresh
/// with --gateway and --as.
#[derive(Debug, Args)]
pub(crate) struct KeysLogin {
    /// Sign in afresh at this gateway (https://, or http:// to this machine) instead
    /// of using the kept session.
    #[arg(long, value_name = "URL", requires = "as_user")]
    gateway: Option<String>,
    /// The username to sign in as, with --gateway.
    #[arg(long = "as", value_name = "NAME", requires = "gateway")]
    as_user: Option<String>,
    /// A file (mode 0600) holding the password, with --gateway; without it, one line
    /// of standard input.
    #[arg(long, value_name = "FILE", requires = "gateway")]
    password_file: Option<PathBuf>,
    /// A current TOTP code, with --gateway.
    #[arg(
        long,
        value_name = "CODE",
        conflicts_with = "recovery_code",
        requires = "gateway"
    )]
    totp: Option<String>,
    /// One of your recovery codes instead of a TOTP code, with --gateway.
    #[arg(long, value_name = "CODE", requires = "gateway")]
    recovery_code: Option<String>,
    #[command(flatten)]
    kept: SessionFile,
}

/// A signed-in session, and whether it is this command's own (signed out after it) or
/// the kept one (left for the next command).
struct Opened {
    session: Session,
    own: bool,
}

impl KeysLogin {
    /// Signs in afresh, or resumes the kept session (a records officer's for
    /// `approver`).
    async fn open(&self, approver: bool) -> Result<Opened, CliError> {
        let (Some(url), Some(username)) = (&self.gateway, &self.as_user) else {
            let kept = if approver {
                self.kept.as_approver()
            } else {
                self.kept.clone()
            };
            return Ok(Opened {
                session: crate::auditor::resume(&kept).await?,
                own: false,
            });
        };
        let session = Session::open(&Remote {
            url,
            username,
            password_file: self.password_file.as_deref(),
            totp: self.totp.as_deref(),
            recovery_code: self.recovery_code.as_deref(),
        })
        .await?;
        Ok(Opened { session, own: true })
    }
}

impl Opened {
    async fn close(self) {
        if self.own {
            self.session.close().await;
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysApiCommand {
    /// Register your personal recipient (the public half of --identity) with the gateway.
    Register {
        /// Your identity file.
        #[arg(short = 'i', long = "identity", value_name = "FILE")]
        identity: PathBuf,
        #[command(flatten)]
        login: KeysLogin,
    },
    /// Fetch your wrapped epoch identities and open them into --out (one identity file
    /// per epoch, mode 0600).
    Fetch {
        /// Your identity file.
        #[arg(short = 'i', long = "identity", value_name = "FILE")]
        identity: PathBuf,
        /// The folder to write epoch-N.key files into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        login: KeysLogin,
    },
    /// Wrap every epoch you hold to another auditor's registered recipient.
    Share {
        /// Your identity file.
        #[arg(short = 'i', long = "identity", value_name = "FILE")]
        identity: PathBuf,
        /// The auditor who receives them.
        #[arg(long, value_name = "USERNAME")]
        to: String,
        /// Their recipient (`age1…`), as they gave it to you themselves (in person, on
        /// a call): the copies are wrapped only if the gateway lists exactly this one
        /// for them, so neither the gateway nor whoever made their account chooses it.
        #[arg(long, value_name = "AGE1…")]
        recipient: String,
        #[command(flatten)]
        login: KeysLogin,
    },
    /// Fetch the escrow copies of every epoch into --out (epoch-N.age), as the records
    /// officer who starts a recovery with the custodians. Audited.
    EscrowCopies {
        /// The folder to write epoch-N.age files into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        login: KeysLogin,
    },
    /// Record at the gateway a recovery the custodians ran offline: the minute `vellum
    /// escrow recover` wrote, and why. It becomes an audit entry and a leaf of the log.
    RecordRecovery {
        /// The minute (recovery-minute.json).
        #[arg(long, value_name = "FILE")]
        minute: PathBuf,
        /// Why: the regulator's request, the case, the order.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        login: KeysLogin,
    },
}

/// `vellum keyring publish` arguments.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The signed keyring note (`vellum keyring sign`).
    #[arg(long, value_name = "FILE")]
    note: PathBuf,
    /// The wrapped copies (`vellum epoch new`'s wrapped/ folder): USERNAME.age per
    /// auditor, escrow.age for escrow.
    #[arg(long, value_name = "DIR")]
    wraps: PathBuf,
    #[command(flatten)]
    login: KeysLogin,
}

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("keys: {e}"))
}

pub(crate) async fn session(login: &Login) -> Result<Session, CliError> {
    Session::open(&Remote {
        url: &login.gateway,
        username: &login.as_user,
        password_file: login.password_file.as_deref(),
        totp: login.totp.as_deref(),
        recovery_code: login.recovery_code.as_deref(),
    })
    .await
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Kind::Other, e))
}

fn one_identity(path: &Path) -> Result<Identity, CliError> {
    let mut identities = read_identities(&[path.to_path_buf()])?;
    if identities.len() != 1 {
        return Err(fail(
            Kind::Malformed,
            format!("{} must hold exactly one identity", path.display()),
        ));
    }
    Ok(identities.remove(0))
}

/// Your wrapped copies, opened: (epoch, epoch identity).
async fn my_epochs(session: &Session, me: &Identity) -> Result<Vec<(u64, Identity)>, CliError> {
    let wraps = session.call(Method::GET, "/v1/keys/wraps", None).await?;
    let mut out = Vec::new();
    for wrap in wraps.as_array().into_iter().flatten() {
        let epoch = wrap["epoch"]
            .as_u64()
            .ok_or_else(|| fail(Kind::Malformed, "a wrap without an epoch"))?;
        let bytes = STANDARD
            .decode(wrap["wrapped"].as_str().unwrap_or_default())
            .map_err(|_| fail(Kind::Malformed, "a wrap that is not base64"))?;
        let sealed = SealedBody::from_bytes(bytes).map_err(|e| fail(Kind::Malformed, e))?;
        let opened = sealed
            .open(std::slice::from_ref(me))
            .map_err(|e| fail(Kind::WrongKey, format!("epoch {epoch}: {e}")))?;
        let text = std::str::from_utf8(&opened).map_err(|_| fail(Kind::Malformed, "not an identity"))?;
        let identity = seal::parse_identity_file(text)
            .ok()
            .and_then(|mut ids| (ids.len() == 1).then(|| ids.remove(0)))
            .ok_or_else(|| fail(Kind::Malformed, format!("epoch {epoch}: not one identity")))?;
        out.push((epoch, identity));
    }
    Ok(out)
}

fn wrap_to(identity: &Identity, to: &Recipient) -> Result<String, CliError> {
    let sealed = seal::seal(std::slice::from_ref(to), identity.to_secret_string().as_bytes())
        .map_err(|e| fail(Kind::Other, e))?;
    Ok(STANDARD.encode(sealed.as_bytes()))
}

pub(crate) fn run(command: &KeysApiCommand) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let login = match command {
            KeysApiCommand::Register { login, .. }
            | KeysApiCommand::Fetch { login, .. }
            | KeysApiCommand::Share { login, .. }
            | KeysApiCommand::EscrowCopies { login, .. }
            | KeysApiCommand::RecordRecovery { login, .. } => login,
        };
        let approver = matches!(
            command,
            KeysApiCommand::EscrowCopies { .. } | KeysApiCommand::RecordRecovery { .. }
        );
        let opened = login.open(approver).await?;
        let done = keys_command(&opened.session, command).await;
        opened.close().await;
        done
    })
}

async fn keys_command(session: &Session, command: &KeysApiCommand) -> Result<(), CliError> {
    match command {
        KeysApiCommand::Register { identity, .. } => {
            let me = one_identity(identity)?.to_public().to_string();
            let body = json!({ "recipient": me }).to_string();
            session
                .call(Method::POST, "/v1/keys/recipient", Some(&body))
                .await?;
            println!("registered {me}");
        }
        KeysApiCommand::Fetch { identity, out, login } => {
            let me = one_identity(identity)?;
            if !out.is_dir() {
                crate::files::create_new_dir(out)?;
            }
            let epochs = my_epochs(session, &me).await?;
            if epochs.is_empty() {
                return Err(fail(
                    Kind::NotFound,
                    format!(
                        "the gateway holds no epoch copy for {}: no auditor has shared an epoch with you yet \
                         (another auditor runs `vellum keys share --to {} --recipient YOUR_RECIPIENT`)",
                        login.as_user.as_deref().unwrap_or("this account"),
                        login.as_user.as_deref().unwrap_or("YOUR_USERNAME")
                    ),
                ));
            }
            for (epoch, identity) in epochs {
                let path = out.join(format!("epoch-{epoch}.key"));
                write_output(
                    Some(&path),
                    format_identity_file(&identity, crate::keys::now_ms()).as_bytes(),
                )?;
                println!("epoch {epoch}: {}", path.display());
            }
        }
        KeysApiCommand::Share {
            identity,
            to,
            recipient: given,
            ..
        } => {
            let me = one_identity(identity)?;
            let given: Recipient = given.trim().parse().map_err(|_| {
                fail(
                    Kind::Malformed,
                    format!("--recipient {given:?} is not an age recipient (age1…)"),
                )
            })?;
            let listed = session.call(Method::GET, "/v1/keys/recipients", None).await?;
            let recipient: Recipient = listed
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["username"] == to.as_str())
                .and_then(|a| a["recipient"].as_str())
                .ok_or_else(|| {
                    fail(
                        Kind::NotFound,
                        format!("{to} is not an active auditor with a registered recipient"),
                    )
                })?
                .parse()
                .map_err(|_| fail(Kind::Malformed, "the gateway listed a bad recipient"))?;
            if recipient.to_string() != given.to_string() {
                return Err(fail(
                    Kind::VerifyFailed,
                    format!(
                        "the gateway lists another recipient for {to} than the one you gave: nothing was shared; \
                         ask {to} for their recipient again, and their administrator who registered it"
                    ),
                ));
            }
            let wraps = my_epochs(session, &me)
                .await?
                .iter()
                .map(|(epoch, identity)| {
                    Ok(json!({ "epoch": epoch, "wrapped": wrap_to(identity, &recipient)? }))
                })
                .collect::<Result<Vec<Value>, CliError>>()?;
            let count = wraps.len();
            let body = json!({ "holder": to, "wraps": wraps }).to_string();
            session.call(Method::POST, "/v1/keys/wraps", Some(&body)).await?;
            println!("wrapped {count} epoch(s) for {to}");
        }
        KeysApiCommand::EscrowCopies { out, .. } => {
            if !out.is_dir() {
                crate::files::create_new_dir(out)?;
            }
            let copies = session.call(Method::GET, "/v1/keys/escrow", None).await?;
            let Some(copies) = copies.as_array() else {
                return Err(fail(
                    Kind::Malformed,
                    "the gateway's answer is not a list of copies",
                ));
            };
            if copies.is_empty() {
                println!("no escrow copies: no epoch was published with one");
            }
            for copy in copies {
                let (Some(epoch), Some(Ok(bytes))) = (
                    copy["epoch"].as_u64(),
                    copy["wrapped"].as_str().map(|w| STANDARD.decode(w)),
                ) else {
                    return Err(fail(
                        Kind::Malformed,
                        "the gateway served a malformed escrow copy",
                    ));
                };
                let path = out.join(format!("epoch-{epoch}.age"));
                write_output(Some(&path), &bytes)?;
                println!("epoch {epoch}: {}", path.display());
            }
        }
        KeysApiCommand::RecordRecovery { minute, reason, .. } => {
            let text = read_small(minute, 64 * 1024)?;
            let mut body: Value = serde_json::from_slice(&text)
                .map_err(|e| fail(Kind::Malformed, format!("{}: {e}", minute.display())))?;
            let Some(fields) = body.as_object_mut() else {
                return Err(fail(
                    Kind::Malformed,
                    format!("{}: not a recovery minute", minute.display()),
                ));
            };
            fields.insert("reason".into(), Value::from(reason.as_str()));
            let recorded = session
                .call(
                    Method::POST,
                    "/v1/keys/escrow/recoveries",
                    Some(&body.to_string()),
                )
                .await?;
            let epochs: Vec<String> = recorded["epochs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            match epochs.as_slice() {
                [] => println!("recorded the recovery (of no epoch whose escrow copy this gateway serves)"),
                [one] => println!("recorded the recovery of epoch {one}"),
                many => println!("recorded the recovery of epochs {}", many.join(", ")),
            }
            let unmatched = recorded["unmatched"].as_array().map_or(0, Vec::len);
            if unmatched > 0 {
                println!(
                    "{unmatched} copy(ies) are not escrow copies the gateway serves: recorded as unmatched"
                );
            }
        }
    }
    Ok(())
}

/// `vellum keyring publish`.
pub(crate) fn publish(args: &PublishArgs) -> Result<(), CliError> {
    let note = String::from_utf8(read_small(&args.note, 64 * 1024)?)
        .map_err(|_| fail(Kind::Malformed, "the note is not text"))?;
    let mut wraps = Vec::new();
    let entries = std::fs::read_dir(&args.wraps).map_err(|e| CliError::io(&args.wraps, "read", &e))?;
    for entry in entries {
        let path = entry.map_err(|e| CliError::io(&args.wraps, "read", &e))?.path();
        let (Some(holder), Some("age")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            continue;
        };
        let bytes = read_small(&path, 64 * 1024)?;
        wraps.push(json!({ "holder": holder, "wrapped": STANDARD.encode(bytes) }));
    }
    if wraps.is_empty() {
        return Err(fail(
            Kind::NotFound,
            format!("no NAME.age files in {}", args.wraps.display()),
        ));
    }
    let count = wraps.len();
    let body = json!({ "note": note, "wraps": wraps }).to_string();
    runtime()?.block_on(async {
        let opened = args.login.open(false).await?;
        let done = opened
            .session
            .call(Method::POST, "/v1/keys/keyring", Some(&body))
            .await;
        opened.close().await;
        done
    })?;
    println!("published the keyring with {count} wrapped copies");
    Ok(())
}
