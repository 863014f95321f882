//! `vellum auditor …` and `vellum approver …`: an auditor's whole workflow against a
//! gateway, and the records officer's decisions on it.
//!
//! `login` signs in once (password and second factor) and keeps the session's refresh
//! token in a file of mode 0600 (`--session`, default `~/.config/vellum/session.json`);
//! every later command spends it for a fresh access token and stores the next one.
//! Participants are turned into blind tokens here, with the index key, so the gateway
//! learns only tokens. Sealed records are fetched into an export package and opened
//! on this machine only.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use vellum_gateway::cases::Scope;
use vellum_protocol::blind::{IndexKey, ParticipantId};
use vellum_protocol::time::{parse_utc, rfc3339};
use vellum_tlog::checkpoint;
use vellum_tlog::note::NoteVerifier;
use zeroize::Zeroizing;

use crate::admin_api::Session;
use crate::case_view::shown;
use crate::error::{CliError, Kind};
use crate::files::read_small;
use crate::keys_api::Login;
use crate::package::{self, CaseEvent, CaseInfo, Manifest, RecordEntry};

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("auditor: {e}"))
}

/// Where the session is kept.
#[derive(Debug, Clone, Args)]
pub(crate) struct SessionFile {
    /// The session file (mode 0600) that `login` writes and other commands use (by
    /// default `~/.config/vellum/session.json`, `approver-session.json` for `vellum
    /// approver`).
    #[arg(long, value_name = "FILE", env = "VELLUM_SESSION")]
    session: Option<PathBuf>,
    /// Whether this is a records officer's session (`vellum approver …`): its own
    /// default file, so signing in as an approver never replaces an auditor's session.
    #[arg(skip)]
    approver: bool,
}

impl SessionFile {
    /// The session at `session`, or the default file of an auditor or an approver.
    pub(crate) fn of(session: Option<PathBuf>, approver: bool) -> Self {
        Self { session, approver }
    }

    /// The same file, as a records officer's session.
    pub(crate) fn as_approver(&self) -> Self {
        Self::of(self.session.clone(), true)
    }

    /// The command that signs in to this session.
    fn sign_in(&self) -> &'static str {
        if self.approver {
            "vellum approver login"
        } else {
            "vellum auditor login"
        }
    }

    fn path(&self) -> Result<PathBuf, CliError> {
        if let Some(path) = &self.session {
            return Ok(path.clone());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| fail(Kind::Other, "no home folder: give --session FILE"))?;
        let name = if self.approver {
            "approver-session.json"
        } else {
            "session.json"
        };
        Ok(base.join("vellum").join(name))
    }
}

/// Ends the session kept in `file`, here and at the gateway.
pub(crate) async fn logout(file: &SessionFile) -> Result<(), CliError> {
    let path = file.path()?;
    if !path.exists() {
        return Err(fail(
            Kind::NotFound,
            format!("no session is kept in {}: nothing to sign out of", path.display()),
        ));
    }
    if let Ok(s) = resume(file).await {
        s.close().await;
    }
    std::fs::remove_file(&path).map_err(|e| CliError::io(&path, "remove", &e))?;
    println!("signed out");
    Ok(())
}

/// What a search or a scope selects, as typed by a person.
#[derive(Debug, Args)]
pub(crate) struct Selection {
    /// A custodian (repeatable: any of them).
    #[arg(long = "custodian", value_name = "NAME")]
    custodians: Vec<String>,
    /// A participant: an email address, a phone number in international form
    /// (+…), or a normal form (mailto:, tel:, handle:SERVICE:NAME). Repeatable: any of
    /// them. Turned into a blind token here, with --index-key.
    #[arg(long = "participant", value_name = "ID", requires = "index_key")]
    participants: Vec<String>,
    /// The blind-index key file (base64url of 32 bytes), for --participant.
    #[arg(long, value_name = "FILE")]
    index_key: Option<PathBuf>,
    /// Captured from this UTC date or instant (YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ).
    #[arg(long, value_name = "WHEN")]
    from: Option<String>,
    /// Captured before this UTC date or instant.
    #[arg(long, value_name = "WHEN")]
    to: Option<String>,
}

impl Selection {
    fn tokens(&self) -> Result<Vec<String>, CliError> {
        tokens_of(&self.participants, self.index_key.as_deref())
    }
}

/// The blind token (hex) of each participant, computed here with the index key file.
fn tokens_of(participants: &[String], index_key: Option<&Path>) -> Result<Vec<String>, CliError> {
    if participants.is_empty() {
        return Ok(Vec::new());
    }
    let path = index_key.ok_or_else(|| fail(Kind::Other, "--participant needs --index-key FILE"))?;
    let text = crate::serve::secret_file(path)?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| fail(Kind::Malformed, format!("{}: not an index key", path.display())))?,
    );
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        fail(
            Kind::Malformed,
            format!("{}: an index key is 32 bytes", path.display()),
        )
    })?;
    let key = IndexKey::from_bytes(key);
    participants
        .iter()
        .map(|p| Ok(hex::encode(key.participant(&participant(p)?).0)))
        .collect()
}

impl Selection {
    fn times(&self) -> Result<(Option<u64>, Option<u64>), CliError> {
        let when = |t: &Option<String>| {
            t.as_deref()
                .map(|t| {
                    parse_utc(t).ok_or_else(|| {
                        fail(
                            Kind::Other,
                            format!("{t:?}: a UTC date YYYY-MM-DD or instant YYYY-MM-DDThh:mm:ssZ"),
                        )
                    })
                })
                .transpose()
        };
        Ok((when(&self.from)?, when(&self.to)?))
    }

    fn scope(&self) -> Result<Scope, CliError> {
        let (captured_from, captured_to) = self.times()?;
        Scope {
            custodians: self.custodians.clone(),
            captured_from,
            captured_to,
            tokens: self.tokens()?,
        }
        .canonical()
        .map_err(|e| fail(Kind::Other, e))
    }
}

/// A participant as typed, in normal form.
fn participant(text: &str) -> Result<ParticipantId, CliError> {
    let bad = |e: &dyn std::fmt::Display| fail(Kind::Other, format!("participant {text:?}: {e}"));
    if text.starts_with("mailto:") || text.starts_with("tel:") || text.starts_with("handle:") {
        ParticipantId::parse(text).map_err(|e| bad(&e))
    } else if text.contains('@') {
        ParticipantId::email(text).map_err(|e| bad(&e))
    } else if text.starts_with('+') {
        ParticipantId::phone(text, None).map_err(|e| bad(&e))
    } else {
        Err(bad(
            &"an email address, +phone number, or mailto:/tel:/handle: normal form",
        ))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditorCommand {
    /// Sign in and keep the session for the other commands.
    #[command(name = "login")]
    SignIn {
        #[command(flatten)]
        login: Login,
        #[command(flatten)]
        session: SessionFile,
    },
    /// End the session here and at the gateway.
    Logout {
        #[command(flatten)]
        session: SessionFile,
    },
    /// Search records by what the gateway knows of them (audited).
    Search {
        #[command(flatten)]
        selection: Selection,
        /// A channel (repeatable).
        #[arg(long = "channel", value_name = "NAME")]
        channels: Vec<String>,
        /// Rows per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this cursor (the `next` a page printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Oldest first.
        #[arg(long)]
        oldest_first: bool,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        session: SessionFile,
    },
    /// The blind token of each participant, computed on this machine with the index
    /// key: what a search or a case's scope names for them (an approver checks a
    /// scope's participants this way). Nothing is sent.
    Token {
        /// A participant: an email address, a phone number in international form
        /// (+…), or a normal form (mailto:, tel:, handle:SERVICE:NAME). Repeatable.
        #[arg(long = "participant", value_name = "ID", required = true)]
        participants: Vec<String>,
        /// The blind-index key file (base64url of 32 bytes).
        #[arg(long, value_name = "FILE")]
        index_key: PathBuf,
    },
    /// Cases: open, request access, list, show, close.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Fetch every record of an approved case into an export package (sealed bodies,
    /// headers, proofs, the checkpoint and the case's steps), checking each proof.
    Fetch {
        /// The case id.
        case: String,
        /// The package folder to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// Export a package's records as EML (a folder of messages), MBOX, JSON Lines or a
    /// CSV load file with SHA-256 digests: the package is verified and each sealed body
    /// opened again, in memory, with your epoch identities.
    Export {
        /// The package folder: it is verified, and its sealed bodies opened again in
        /// memory (never read from `opened/`).
        dir: PathBuf,
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// Epoch identity files (`vellum keys fetch` writes them), repeatable.
        #[arg(short = 'i', long = "identity", value_name = "FILE", required = true)]
        identities: Vec<PathBuf>,
        /// The format.
        #[arg(long, value_enum)]
        format: crate::export::Format,
        /// The file (a folder for EML) to create.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Full-text search of the opened records of a package, in memory only: records
    /// holding every word of QUERY ("quoted phrases" as written).
    Grep {
        /// The package folder (after `vellum auditor open`).
        dir: PathBuf,
        /// Words, and "quoted phrases".
        query: String,
    },
    /// Verify a package, then open its sealed bodies with epoch identities into
    /// DIR/opened/ID.json (plaintext, on this machine only; mode 0600).
    Open {
        /// The package folder.
        dir: PathBuf,
        /// The log's verifier key (`name+id+key`), or a file holding it: the package
        /// is verified against it before anything is opened.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// Epoch identity files (`vellum keys fetch` writes them), repeatable.
        #[arg(short = 'i', long = "identity", value_name = "FILE", required = true)]
        identities: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaseCommand {
    /// Open a case with a reason and a scope (fixed for the case's life).
    Open {
        /// Why: the FOIA request, the matter, the examination.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        session: SessionFile,
    },
    /// Ask an approver for access to the case's scope for some hours.
    Request {
        /// The case id.
        case: String,
        /// Hours of access (1 to 720).
        #[arg(long)]
        hours: u32,
        /// A note for the approver.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// Your cases (all of them, for an approver).
    List {
        /// Only the cases in this state now (`requested`: those awaiting an approver).
        #[arg(long, value_parser = ["open", "requested", "approved", "denied", "revoked", "expired", "closed"])]
        state: Option<String>,
        #[command(flatten)]
        session: SessionFile,
    },
    /// A case, its scope and its history.
    Show {
        /// The case id.
        case: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// Close a case for good.
    Close {
        /// The case id.
        case: String,
        /// Why.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        session: SessionFile,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApproverCommand {
    /// Sign in and keep the session for the other commands.
    #[command(name = "login")]
    SignIn {
        #[command(flatten)]
        login: Login,
        #[command(flatten)]
        session: SessionFile,
    },
    /// Approve a pending request whose scope you reviewed with `vellum approver show`:
    /// give the scope digest it printed (computed on your machine).
    Approve {
        /// The case id.
        case: String,
        /// The scope digest `vellum approver show` printed for the scope you reviewed.
        #[arg(long, value_name = "HEX")]
        scope_sha256: String,
        /// Hours of access (at most those requested; default all of them).
        #[arg(long)]
        hours: Option<u32>,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// The requests awaiting a records officer's decision.
    Queue {
        #[command(flatten)]
        session: SessionFile,
    },
    /// A case as you review it: its scope and the digest computed here first, then who
    /// asked for what, the grant, the steps, and last the reason and notes.
    Show {
        /// The case id.
        case: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// End the session kept here.
    Logout {
        #[command(flatten)]
        session: SessionFile,
    },
    /// Deny a pending request.
    Deny {
        /// The case id.
        case: String,
        /// Why.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// A case's audit trail (its steps and every fetch under it), each event proven
    /// in the log against the log key.
    Trail {
        /// The case id.
        case: String,
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        #[command(flatten)]
        session: SessionFile,
    },
    /// End a running grant.
    Revoke {
        /// The case id.
        case: String,
        /// Why.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        session: SessionFile,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Kind::Other, e))
}

/// The stored session: the gateway, who signed in, and the next refresh token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    gateway: String,
    username: String,
    refresh_token: String,
}

/// Writes `bytes` to `path` (mode 0600), replacing what is there, atomically.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, "create folder", &e))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".vellum-partial-")
        .tempfile_in(dir)
        .map_err(|e| CliError::io(dir, "write in", &e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| CliError::io(path, "write", &e))?;
    temp.persist(path)
        .map_err(|e| CliError::io(path, "write", &e.error))?;
    Ok(())
}

fn save(path: &Path, stored: &Stored) -> Result<(), CliError> {
    let text = Zeroizing::new(serde_json::to_string(stored).map_err(|e| fail(Kind::Other, e))?);
    replace_file(path, text.as_bytes())
}

/// Signs in with the stored session's refresh token, storing the next one.
pub(crate) async fn resume(file: &SessionFile) -> Result<Session, CliError> {
    let path = file.path()?;
    if !path.exists() {
        return Err(fail(
            Kind::NotFound,
            format!(
                "no session at {}: sign in with `{}` first",
                path.display(),
                file.sign_in()
            ),
        ));
    }
    let text = crate::serve::secret_file(&path)?;
    let stored: Stored = serde_json::from_str(&text).map_err(|_| {
        fail(
            Kind::Malformed,
            format!("{} is not a session file", path.display()),
        )
    })?;
    let (session, next) = Session::refresh(&stored.gateway, &stored.refresh_token)
        .await
        .map_err(|e| {
            fail(
                e.kind(),
                format!(
                    "{e} (the session may have ended: sign in again with `{}`)",
                    file.sign_in()
                ),
            )
        })?;
    save(
        &path,
        &Stored {
            refresh_token: next.to_string(),
            ..stored
        },
    )?;
    Ok(session)
}

async fn login(login: &Login, file: &SessionFile) -> Result<(), CliError> {
    let path = file.path()?;
    let session = crate::keys_api::session(login).await?;
    let refresh = session
        .refresh_token()
        .ok_or_else(|| fail(Kind::Other, "the gateway gave no refresh token"))?;
    save(
        &path,
        &Stored {
            gateway: login.gateway.trim_end_matches('/').to_owned(),
            username: login.as_user.clone(),
            refresh_token: refresh.to_string(),
        },
    )?;
    println!(
        "signed in as {}; session kept in {}",
        login.as_user,
        path.display()
    );
    Ok(())
}

pub(crate) fn run(command: &AuditorCommand) -> Result<(), CliError> {
    runtime()?.block_on(async {
        match command {
            AuditorCommand::SignIn { login: l, session } => login(l, session).await,
            AuditorCommand::Logout { session } => logout(session).await,
            AuditorCommand::Search {
                selection,
                channels,
                limit,
                cursor,
                oldest_first,
                json: as_json,
                session,
            } => {
                let (captured_from, captured_to) = selection.times()?;
                let body = json!({
                    "custodians": selection.custodians,
                    "channels": channels,
                    "tokens": selection.tokens()?,
                    "captured_from": captured_from,
                    "captured_to": captured_to,
                    "limit": limit,
                    "cursor": cursor,
                    "order": if *oldest_first { "asc" } else { "desc" },
                    "count": true,
                });
                let s = resume(session).await?;
                let page = s
                    .call(Method::POST, "/v1/records/search", Some(&body.to_string()))
                    .await?;
                if *as_json {
                    println!("{page}");
                } else {
                    print_page(&page);
                }
                Ok(())
            }
            AuditorCommand::Token {
                participants,
                index_key,
            } => {
                let tokens = tokens_of(participants, Some(index_key))?;
                for (participant, token) in participants.iter().zip(tokens) {
                    println!("{token}  {participant}");
                }
                Ok(())
            }
            AuditorCommand::Case(command) => case_command(command).await,
            AuditorCommand::Fetch {
                case,
                out,
                log_key,
                session,
            } => {
                let key = crate::verify::log_verifier(log_key)?;
                fetch(session, case, out, &key).await
            }
            AuditorCommand::Open {
                dir,
                log_key,
                identities,
            } => {
                warn_unproven(&package::verify(dir, &crate::verify::log_verifier(log_key)?)?);
                open_package(dir, identities)
            }
            AuditorCommand::Export {
                dir,
                log_key,
                identities,
                format,
                out,
            } => {
                warn_unproven(&package::verify(dir, &crate::verify::log_verifier(log_key)?)?);
                let identities = crate::sealing::read_identities(identities)?;
                crate::export::export(dir, *format, out, &identities)
            }
            AuditorCommand::Grep { dir, query } => crate::export::grep(dir, query),
        }
    })
}

fn print_page(page: &Value) {
    let total = page["total"].as_u64().unwrap_or_default();
    let more = if page["total_more"] == true {
        "more than "
    } else {
        ""
    };
    println!("{more}{total} records match");
    for r in page["records"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  {:<24} {:<8} {} bytes  leaf {}",
            r["record_id"].as_str().unwrap_or_default(),
            rfc3339(r["captured_at"].as_u64().unwrap_or_default()),
            r["custodian"].as_str().unwrap_or_default(),
            r["channel"].as_str().unwrap_or_default(),
            r["body_len"],
            r["leaf_index"],
        );
    }
    if let Some(next) = page["next"].as_str() {
        println!("next page: --cursor {next}");
    }
}

/// The digest of a case's scope, computed here from the scope the gateway sent.
fn local_digest(case: &Value) -> Result<String, CliError> {
    crate::case_view::local_digest(case).map_err(|e| fail(Kind::Malformed, e))
}

fn print_case(case: &Value) {
    print!("{}", crate::case_view::render(case));
}

fn case_path(case: &str, action: &str) -> Result<String, CliError> {
    if !vellum_gateway::cases::valid_id(case) {
        return Err(fail(
            Kind::Other,
            format!("{case:?} is not a case id (32 hex digits)"),
        ));
    }
    Ok(if action.is_empty() {
        format!("/v1/cases/{case}")
    } else {
        format!("/v1/cases/{case}/{action}")
    })
}

async fn case_command(command: &CaseCommand) -> Result<(), CliError> {
    match command {
        CaseCommand::Open {
            reason,
            selection,
            session,
        } => {
            let body = json!({ "reason": reason, "scope": selection.scope()? });
            let s = resume(session).await?;
            let case = s.call(Method::POST, "/v1/cases", Some(&body.to_string())).await?;
            print_case(&case);
            println!(
                "request access with: vellum auditor case request {} --hours N",
                case["id"].as_str().unwrap_or_default()
            );
        }
        CaseCommand::Request {
            case,
            hours,
            note,
            session,
        } => {
            let body = json!({ "hours": hours, "note": note });
            let s = resume(session).await?;
            print_case(
                &s.call(
                    Method::POST,
                    &case_path(case, "request")?,
                    Some(&body.to_string()),
                )
                .await?,
            );
        }
        CaseCommand::List { state, session } => {
            let s = resume(session).await?;
            list_cases(&s, state.as_deref()).await?;
        }
        CaseCommand::Show { case, session } => {
            let s = resume(session).await?;
            print_case(&s.call(Method::GET, &case_path(case, "")?, None).await?);
        }
        CaseCommand::Close { case, note, session } => {
            let s = resume(session).await?;
            let body = json!({ "note": note }).to_string();
            print_case(
                &s.call(Method::POST, &case_path(case, "close")?, Some(&body))
                    .await?,
            );
        }
    }
    Ok(())
}

/// Prints every case the session may see (in `state` only, if given), a line each.
async fn list_cases(s: &Session, state: Option<&str>) -> Result<(), CliError> {
    let filter = state.map(|w| format!("&state={w}")).unwrap_or_default();
    let mut from = 0;
    loop {
        let page = s
            .call(Method::GET, &format!("/v1/cases?from={from}{filter}"), None)
            .await?;
        for case in page["cases"].as_array().into_iter().flatten() {
            println!("{}", crate::case_view::list_line(case));
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(())
}

pub(crate) fn run_approver(command: &ApproverCommand) -> Result<(), CliError> {
    runtime()?.block_on(async {
        match command {
            ApproverCommand::SignIn { login: l, session } => login(l, &session.as_approver()).await,
            ApproverCommand::Logout { session } => logout(&session.as_approver()).await,
            ApproverCommand::Queue { session } => {
                let s = resume(&session.as_approver()).await?;
                list_cases(&s, Some("requested")).await
            }
            ApproverCommand::Show { case, session } => {
                let s = resume(&session.as_approver()).await?;
                print_case(&s.call(Method::GET, &case_path(case, "")?, None).await?);
                Ok(())
            }
            ApproverCommand::Approve {
                case,
                scope_sha256,
                hours,
                note,
                session,
            } => {
                let s = resume(&session.as_approver()).await?;
                let current = s.call(Method::GET, &case_path(case, "")?, None).await?;
                // The digest approved is the one the approver reviewed (`case show`
                // prints it, computed here from the scope it prints), and it must
                // still be the digest of the case's scope, computed here again.
                let digest = local_digest(&current)?;
                if !scope_sha256.eq_ignore_ascii_case(&digest) {
                    print_case(&current);
                    return Err(fail(
                        Kind::VerifyFailed,
                        "the case's scope is not the one whose digest you gave: review it again (vellum approver show CASE)",
                    ));
                }
                let body = json!({ "hours": hours, "note": note, "scope_sha256": digest });
                let after = s
                    .call(
                        Method::POST,
                        &case_path(case, "approve")?,
                        Some(&body.to_string()),
                    )
                    .await?;
                println!("approved:");
                print_case(&after);
                Ok(())
            }
            ApproverCommand::Trail {
                case,
                log_key,
                session,
            } => {
                let key = crate::verify::log_verifier(log_key)?;
                let s = resume(&session.as_approver()).await?;
                trail(&s, case, &key).await
            }
            ApproverCommand::Deny { case, note, session }
            | ApproverCommand::Revoke { case, note, session } => {
                let action = if matches!(command, ApproverCommand::Deny { .. }) {
                    "deny"
                } else {
                    "revoke"
                };
                let s = resume(&session.as_approver()).await?;
                let body = json!({ "note": note }).to_string();
                print_case(
                    &s.call(Method::POST, &case_path(case, action)?, Some(&body))
                        .await?,
                );
                Ok(())
            }
        }
    })
}

/// Progress on standard error: a line that rewrites itself at a terminal, a line
/// every 10 % otherwise.
struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    tty: bool,
    last_tenth: u64,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn step(&mut self) {
        self.done += 1;
        let total = self.total.max(self.done);
        let tenth = self.done * 10 / total.max(1);
        if self.tty {
            eprint!("\r{}: {}/{}", self.what, self.done, total);
            if self.done == total {
                eprintln!();
            }
        } else if tenth > self.last_tenth || self.done == total {
            eprintln!("{}: {}/{}", self.what, self.done, total);
        }
        self.last_tenth = tenth;
    }
}

/// How long a session's access token is used before the session is renewed (access
/// tokens live 15 minutes).
const RENEW_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// A session kept fresh through a long command: renewed from the session file (which
/// then holds the next refresh token) once its access token is old.
struct Fresh<'a> {
    file: &'a SessionFile,
    session: Session,
    since: Instant,
}

impl<'a> Fresh<'a> {
    async fn new(file: &'a SessionFile) -> Result<Self, CliError> {
        Ok(Self {
            file,
            session: resume(file).await?,
            since: Instant::now(),
        })
    }

    async fn get(&mut self) -> Result<&Session, CliError> {
        if self.since.elapsed() > RENEW_AFTER {
            self.session = resume(self.file).await?;
            self.since = Instant::now();
        }
        Ok(&self.session)
    }
}

/// The inclusion proof of leaf `leaf` against the checkpoint of `size` leaves.
async fn proof_at(fresh: &mut Fresh<'_>, leaf: u64, size: u64) -> Result<String, CliError> {
    let path = format!("/v1/log/proof/inclusion?index={leaf}&size={size}");
    fresh.get().await?.text(&path).await
}

/// One step or fetch event as the gateway lists it, with its proof's file name.
fn listed_event(e: &Value, proof: String) -> CaseEvent {
    CaseEvent {
        leaf_index: e["leaf_index"].as_u64().unwrap_or(u64::MAX),
        at: e["at"].as_u64().unwrap_or_default(),
        actor: e["actor"].as_str().unwrap_or_default().into(),
        action: e["action"].as_str().unwrap_or_default().into(),
        detail: e["detail"].as_str().unwrap_or_default().into(),
        proof,
    }
}

async fn fetch(file: &SessionFile, case: &str, out: &Path, key: &NoteVerifier) -> Result<(), CliError> {
    let mut fresh = Fresh::new(file).await?;
    let records_path = case_path(case, "records")?;
    if out.exists() {
        return Err(fail(
            Kind::Exists,
            format!("{} exists already; refusing to overwrite it", out.display()),
        ));
    }
    // Built beside its destination and moved there whole once it verifies.
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".vellum-package-")
        .permissions(crate::files::private_folder())
        .tempdir_in(parent)
        .map_err(|e| CliError::io(parent, "write in", &e))?;
    let dir = work.path();
    for sub in ["records", "case"] {
        let path = dir.join(sub);
        std::fs::create_dir(&path).map_err(|e| CliError::io(&path, "create folder", &e))?;
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| CliError::io(&path, "write", &e))
    };

    // The listing of the case's scope (itself a fetch event, committing to every
    // record the package must hold); then each header and body (each read is a fetch
    // event at the gateway).
    let listing = fresh
        .get()
        .await?
        .call(Method::POST, &case_path(case, "listing")?, Some("{}"))
        .await?;
    let listing_text = listing["listing"].as_str().unwrap_or_default().to_owned();
    let listing_sha256 = vellum_gateway::cases::listing_digest(&listing_text);
    if listing["records_sha256"].as_str() != Some(listing_sha256.as_str()) {
        return Err(fail(
            Kind::VerifyFailed,
            "the gateway's listing does not match the digest it gave",
        ));
    }
    // Parsing checks each id: ids name files and paths, so only well-formed ones.
    let rows = vellum_gateway::cases::parse_listing(&listing_text)
        .map_err(|e| fail(Kind::Malformed, format!("the gateway's listing: {e}")))?;
    write(package::LISTING, listing_text.as_bytes())?;
    let mut progress = Progress::new("fetching records", rows.len() as u64);
    let mut records = Vec::with_capacity(rows.len());
    for (record_id, listed_sha256) in rows {
        let s = fresh.get().await?;
        let answer = s
            .call(Method::GET, &format!("{records_path}/{record_id}"), None)
            .await?;
        let header = STANDARD
            .decode(answer["header"].as_str().unwrap_or_default())
            .map_err(|_| {
                fail(
                    Kind::Malformed,
                    format!("record {record_id}: header is not base64"),
                )
            })?;
        if hex::encode(Sha256::digest(&header)) != listed_sha256 {
            return Err(fail(
                Kind::VerifyFailed,
                format!("record {record_id}: the header is not the one the listing names"),
            ));
        }
        let body = s.bytes(&format!("{records_path}/{record_id}/body")).await?;
        let (header_name, body_name, proof_name) = (
            format!("records/{record_id}.header"),
            format!("records/{record_id}.age"),
            format!("records/{record_id}.proof"),
        );
        write(&header_name, &header)?;
        write(&body_name, &body)?;
        records.push(RecordEntry {
            record_id,
            leaf_index: answer["leaf_index"].as_u64().unwrap_or(u64::MAX),
            received_at: answer["received_at"].as_u64().unwrap_or_default(),
            header: header_name,
            header_sha256: hex::encode(Sha256::digest(&header)),
            body: body_name,
            body_sha256: hex::encode(Sha256::digest(&body)),
            body_len: body.len() as u64,
            proof: proof_name,
        });
        progress.step();
    }

    // One checkpoint, taken after every fetch was recorded, proves it all.
    let s = fresh.get().await?;
    let checkpoint_note = s.text("/v1/log/checkpoint").await?;
    let verified = checkpoint::open(checkpoint_note.as_bytes(), key)
        .map_err(|e| fail(Kind::VerifyFailed, format!("the gateway's checkpoint: {e}")))?;
    let size = verified.size();
    write("checkpoint", checkpoint_note.as_bytes())?;
    let mut progress = Progress::new("proving records", records.len() as u64);
    for r in &records {
        let proof = proof_at(&mut fresh, r.leaf_index, size).await?;
        write(&r.proof, proof.as_bytes())?;
        progress.step();
    }
    // The case's steps and the fetch events of the bodies read, with their proofs.
    let current = fresh
        .get()
        .await?
        .call(Method::GET, &case_path(case, "")?, None)
        .await?;
    let mut case_events = Vec::new();
    for step in current["history"].as_array().into_iter().flatten() {
        let event = listed_event(step, format!("case/{}.proof", step["leaf_index"]));
        if event.leaf_index < size {
            write(
                &event.proof,
                proof_at(&mut fresh, event.leaf_index, size).await?.as_bytes(),
            )?;
            case_events.push(event);
        }
    }
    let mut body_fetches = std::collections::BTreeMap::new();
    let mut listing_event = None;
    let mut from = 0;
    loop {
        let page = fresh
            .get()
            .await?
            .call(
                Method::GET,
                &format!("{}?from={from}", case_path(case, "fetches")?),
                None,
            )
            .await?;
        for e in page["events"].as_array().into_iter().flatten() {
            let detail: Value =
                serde_json::from_str(e["detail"].as_str().unwrap_or_default()).unwrap_or(Value::Null);
            let leaf = e["leaf_index"].as_u64().unwrap_or(u64::MAX);
            if detail["part"] == "listing"
                && detail["records_sha256"] == listing_sha256.as_str()
                && leaf < size
            {
                listing_event = Some(e.clone());
            }
            if let (Some(record), "body", true) = (
                detail["record"].as_str(),
                detail["part"].as_str().unwrap_or_default(),
                leaf < size,
            ) {
                body_fetches.insert(record.to_owned(), e.clone());
            }
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    let mut fetch_events = Vec::new();
    let e = listing_event.ok_or_else(|| {
        fail(
            Kind::VerifyFailed,
            "the gateway lists no fetch event for the listing it gave",
        )
    })?;
    let event = listed_event(&e, format!("case/{}.proof", e["leaf_index"]));
    write(
        &event.proof,
        proof_at(&mut fresh, event.leaf_index, size).await?.as_bytes(),
    )?;
    fetch_events.push(event);
    for r in &records {
        let e = body_fetches.get(&r.record_id).ok_or_else(|| {
            fail(
                Kind::VerifyFailed,
                format!("record {}: the gateway lists no fetch of it", r.record_id),
            )
        })?;
        let event = listed_event(e, format!("case/{}.proof", e["leaf_index"]));
        write(
            &event.proof,
            proof_at(&mut fresh, event.leaf_index, size).await?.as_bytes(),
        )?;
        fetch_events.push(event);
    }
    let scope: Scope = serde_json::from_value(current["scope"].clone())
        .map_err(|e| fail(Kind::Malformed, format!("the case's scope: {e}")))?;
    let manifest = Manifest {
        format: package::FORMAT.into(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        checkpoint: "checkpoint".into(),
        case: CaseInfo {
            id: current["id"].as_str().unwrap_or_default().into(),
            reason: current["reason"].as_str().unwrap_or_default().into(),
            scope,
            scope_sha256: current["scope_sha256"].as_str().unwrap_or_default().into(),
        },
        case_events,
        fetch_events,
        records,
        listing: Some(package::LISTING.into()),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| fail(Kind::Other, e))?;
    write("manifest.json", &text)?;
    // What was written is checked as a court would check it, then moved into place.
    let checked = package::verify(dir, key)?;
    let kept = work.keep();
    if let Err(e) = std::fs::rename(&kept, out) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(CliError::io(out, "move the package to", &e));
    }
    println!(
        "fetched {} records of case {} into {}; verified against checkpoint {} (approved by {})",
        checked.manifest.records.len(),
        case,
        out.display(),
        checked.checkpoint.size(),
        checked.approved_by
    );
    Ok(())
}

/// Says on stderr that an older package cannot prove it holds every record.
fn warn_unproven(checked: &package::Verified) {
    if !checked.complete {
        eprintln!("vellum: warning: completeness not proven (older package): records may have been left out");
    }
}

fn open_package(dir: &Path, identity_files: &[PathBuf]) -> Result<(), CliError> {
    let identities = crate::sealing::read_identities(identity_files)?;
    let manifest: Manifest = serde_json::from_slice(&read_small(&dir.join("manifest.json"), 256 << 20)?)
        .map_err(|e| fail(Kind::Malformed, format!("manifest.json: {e}")))?;
    let opened = dir.join("opened");
    if opened.exists() {
        return Err(fail(
            Kind::Exists,
            format!("{} exists already; refusing to overwrite it", opened.display()),
        ));
    }
    // Opened into a private folder (mode 0700) beside its destination, moved into place
    // whole: a failure leaves nothing behind, so the next try starts clean.
    let work = tempfile::Builder::new()
        .prefix(".vellum-opening-")
        .permissions(crate::files::private_folder())
        .tempdir_in(dir)
        .map_err(|e| CliError::io(dir, "write in", &e))?;
    let mut progress = Progress::new("opening records", manifest.records.len() as u64);
    for r in &manifest.records {
        let (id, plain) = package::open_record(dir, r, &identities)?;
        crate::files::write_output(Some(&work.path().join(format!("{id}.json"))), &plain)?;
        progress.step();
    }
    let kept = work.keep();
    if let Err(e) = std::fs::rename(&kept, &opened) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(CliError::io(&opened, "move the opened records to", &e));
    }
    println!(
        "opened {} records into {}",
        manifest.records.len(),
        opened.display()
    );
    Ok(())
}

/// Prints and proves every audit event of case `case` (its steps, then its fetches).
async fn trail(s: &Session, case: &str, key: &NoteVerifier) -> Result<(), CliError> {
    // The case names its people: each step's actor is shown with who made their
    // account and who gave their role.
    let people = s.call(Method::GET, &case_path(case, "")?, None).await?;
    let note = s.text("/v1/log/checkpoint").await?;
    let checkpoint = checkpoint::open(note.as_bytes(), key)
        .map_err(|e| fail(Kind::VerifyFailed, format!("the gateway's checkpoint: {e}")))?;
    let size = checkpoint.size();
    let mut proven = 0;
    for subject in [
        vellum_gateway::cases::subject(case),
        vellum_gateway::cases::fetch_subject(case),
    ] {
        let mut from = 0;
        loop {
            let page = s
                .call(
                    Method::GET,
                    &format!("/v1/audit?subject={subject}&from={from}&limit=1000"),
                    None,
                )
                .await?;
            for e in page["events"].as_array().into_iter().flatten() {
                let leaf = e["leaf_index"].as_u64().unwrap_or(u64::MAX);
                let event = vellum_archive::ports::AuditEvent {
                    at: vellum_protocol::ids::UnixMillis(e["at"].as_u64().unwrap_or_default()),
                    actor: e["actor"].as_str().unwrap_or_default().into(),
                    action: e["action"].as_str().unwrap_or_default().into(),
                    subject: e["subject"].as_str().unwrap_or_default().into(),
                    detail: e["detail"].as_str().unwrap_or_default().into(),
                };
                let mark = if leaf < size {
                    let proof = s
                        .text(&format!("/v1/log/proof/inclusion?index={leaf}&size={size}"))
                        .await?;
                    let proof = vellum_tlog::proof::TlogProof::parse(proof.as_bytes())
                        .map_err(|e| fail(Kind::Malformed, format!("leaf {leaf}: {e}")))?;
                    let entry = event.log_entry().to_bytes();
                    if proof.extra.as_deref() != Some(entry.as_slice()) || proof.index != leaf {
                        return Err(fail(
                            Kind::VerifyFailed,
                            format!("leaf {leaf}: the event is not the log's entry"),
                        ));
                    }
                    proof
                        .verify_in(&checkpoint, &vellum_tlog::hash::leaf_hash(&entry))
                        .map_err(|e| fail(Kind::VerifyFailed, format!("leaf {leaf}: {e}")))?;
                    proven += 1;
                    "proven"
                } else {
                    "after the checkpoint"
                };
                println!(
                    "leaf {leaf:>6}  {}  {:<13} by {}  [{mark}]  {}",
                    rfc3339(event.at.0),
                    shown(&event.action),
                    crate::case_view::who(&people, &event.actor),
                    shown(&event.detail)
                );
            }
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    println!("{proven} events proven in the log at size {size}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approver_keeps_a_session_apart_from_an_auditor() {
        let auditor = SessionFile::of(None, false).path().unwrap();
        let approver = SessionFile::of(None, false).as_approver().path().unwrap();
        assert!(auditor.ends_with("vellum/session.json"), "{}", auditor.display());
        assert!(
            approver.ends_with("vellum/approver-session.json"),
            "{}",
            approver.display()
        );
        assert_eq!(auditor.parent(), approver.parent());
        // A file given by name is used as given, by either.
        let named = SessionFile::of(Some(PathBuf::from("ro.session")), false).as_approver();
        assert_eq!(named.path().unwrap(), PathBuf::from("ro.session"));
    }
}
