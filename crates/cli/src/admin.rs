//! `vellum admin user …`: account administration directly on a deployment's
//! database (`--config`), for the first administrator, a lost last administrator, or
//! scripts run while the gateway is stopped; each change is audited as done by
//! `local-admin`. With `--gateway URL`, the same commands go through a running
//! gateway's API instead (`admin_api`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vellum_archive::Archive;
use vellum_archive::blob::none::NoBlobs;
use vellum_archive::error::AccountError;
use vellum_archive::ports::{AccountStore, LogStore, NewAccount, Role, SessionStore};
use vellum_gateway::auth::admin::{self, AdminChange};
use vellum_gateway::auth::password::{self, Cost};
use vellum_protocol::ids::{RecordId, UnixMillis};
use vellum_tlog::note::NoteSigner;

use crate::error::{CliError, Kind};
use crate::keys::now_ms;
use crate::serve::{Config, OpenedStore, open_store};

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Manage people's accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Make a one-time enrollment bundle for a capture device of a custodian, on the
    /// deployment's database (audited as `device.enrollment` by `local-admin`).
    DeviceBundle(BundleArgs),
    /// Capture devices, on the deployment's database.
    #[command(subcommand)]
    Device(crate::admin_device::DeviceCommand),
}

/// `vellum admin device-bundle` arguments.
#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// The gateway's configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The custodian whose records the device captures.
    #[arg(long)]
    custodian: String,
    /// The retention class of its records.
    #[arg(long, default_value = "permanent")]
    retention: String,
    /// The blind-index key file (base64url of 32 bytes; kept offline).
    #[arg(long, value_name = "FILE")]
    index_key: PathBuf,
    /// The gateway URL the device reaches.
    #[arg(long, value_name = "URL")]
    gateway_url: String,
    /// Days the bundle stays good.
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Where to write the bundle (mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Where the accounts are: a deployment's database, or a running gateway's API.
#[derive(Debug, Args)]
#[group(skip)]
pub(crate) struct Deployment {
    /// The gateway's configuration file: work on its database directly (also while
    /// the gateway is stopped); changes are audited as `local-admin`.
    #[arg(long, value_name = "FILE", conflicts_with = "gateway")]
    config: Option<PathBuf>,
    /// A running gateway's URL: work through its API, signed in as an administrator
    /// (changes are audited as that administrator).
    #[arg(long, value_name = "URL", requires = "as_user")]
    gateway: Option<String>,
    /// The administrator to sign in as, with --gateway.
    #[arg(
        long = "as",
        id = "as_user",
        value_name = "NAME",
        requires = "gateway",
        env = "VELLUM_ADMIN_USER"
    )]
    as_user: Option<String>,
    /// A file (mode 0600) holding that administrator's password; without it, the
    /// password is read from standard input (a pipe, never a terminal).
    #[arg(long, value_name = "FILE", requires = "gateway")]
    password_file: Option<PathBuf>,
    /// A current TOTP code, when that administrator has a second factor.
    #[arg(long, value_name = "CODE", requires = "gateway")]
    totp: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account; its one-time password is printed once.
    Add {
        /// The username (1-64 characters of [a-z0-9._@-]).
        username: String,
        /// admin, auditor or approver.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        deployment: Deployment,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        deployment: Deployment,
    },
    /// Disable an account and end its sessions.
    Disable {
        /// The username.
        username: String,
        #[command(flatten)]
        deployment: Deployment,
    },
    /// Enable a disabled account.
    Enable {
        /// The username.
        username: String,
        #[command(flatten)]
        deployment: Deployment,
    },
    /// Give an account a new one-time password (printed once) and end its sessions.
    ResetPassword {
        /// The username.
        username: String,
        #[command(flatten)]
        deployment: Deployment,
    },
    /// Remove an account's second factor and recovery codes (it sets up a new one at
    /// its next sign-in if its role needs one).
    ResetMfa {
        /// The username.
        username: String,
        #[command(flatten)]
        deployment: Deployment,
    },
    /// Change an account's role.
    SetRole {
        /// The username.
        username: String,
        /// admin, auditor or approver.
        role: String,
        #[command(flatten)]
        deployment: Deployment,
    },
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("admin: {e}"))
}

fn role_of(text: &str) -> Result<Role, CliError> {
    Role::parse(text).ok_or_else(|| CliError::new(Kind::Other, "admin: role is admin, auditor or approver"))
}

pub(crate) fn run(command: &AdminCommand) -> Result<(), CliError> {
    let user = match command {
        AdminCommand::User(user) => user,
        AdminCommand::DeviceBundle(args) => return device_bundle(args),
        AdminCommand::Device(command) => return crate::admin_device::run(command),
    };
    let deployment = match user {
        UserCommand::Add { deployment, .. }
        | UserCommand::List { deployment }
        | UserCommand::Disable { deployment, .. }
        | UserCommand::Enable { deployment, .. }
        | UserCommand::ResetPassword { deployment, .. }
        | UserCommand::ResetMfa { deployment, .. }
        | UserCommand::SetRole { deployment, .. } => deployment,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let Some(config) = &deployment.config else {
        if deployment.gateway.is_none() {
            return Err(fail(
                "say where the accounts are: --config FILE (the database) or --gateway URL --as NAME (the API)",
            ));
        }
        let remote = crate::admin_api::Remote {
            url: deployment.gateway.as_deref().unwrap_or_default(),
            username: deployment.as_user.as_deref().unwrap_or_default(),
            password_file: deployment.password_file.as_deref(),
            totp: deployment.totp.as_deref(),
            recovery_code: None,
        };
        return runtime.block_on(crate::admin_api::run(&remote, user));
    };
    let config = Config::load(config)?;
    let log_key = config.log_signer()?;
    let cost = config.password_cost()?;
    runtime.block_on(async {
        match open_store(&config.database).await? {
            OpenedStore::Sqlite(store) => local(store, log_key, cost, user).await,
            OpenedStore::Postgres(store) => local(store, log_key, cost, user).await,
        }
    })
}

/// Who local changes are audited as.
const ACTOR: &str = "local-admin";

/// The archive that audit events go through: the deployment's log, and no blobs.
type Local<L> = Archive<L, NoBlobs>;

async fn local<L: LogStore + AccountStore + SessionStore>(
    store: L,
    log_key: NoteSigner,
    cost: Cost,
    user: &UserCommand,
) -> Result<(), CliError> {
    let archive = Archive::open(store, NoBlobs, log_key).await.map_err(fail)?;
    let done = user_command(&archive, cost, user).await;
    archive.close().await;
    done
}

async fn apply<L: LogStore + AccountStore + SessionStore>(
    archive: &Local<L>,
    username: &str,
    change: AdminChange,
) -> Result<(), CliError> {
    let id = account_id(archive.log_store(), username).await?;
    admin::apply(archive, ACTOR, &id, change).await.map_err(fail)
}

async fn account_id<S: AccountStore>(store: &S, username: &str) -> Result<[u8; 16], CliError> {
    store
        .account_by_username(username)
        .await
        .map_err(fail)?
        .map(|a| a.account_id)
        .ok_or_else(|| CliError::new(Kind::NotFound, format!("admin: no account {username:?}")))
}

async fn user_command<L: LogStore + AccountStore + SessionStore>(
    archive: &Local<L>,
    cost: Cost,
    command: &UserCommand,
) -> Result<(), CliError> {
    let store = archive.log_store();
    let now = UnixMillis(now_ms());
    match command {
        UserCommand::Add { username, role, .. } => {
            if !vellum_archive::ports::valid_username(username) {
                return Err(CliError::new(
                    Kind::Other,
                    "admin: username is 1-64 characters of [a-z0-9._@-]",
                ));
            }
            let role = role_of(role)?;
            let one_time = password::one_time_password().map_err(fail)?;
            let account = NewAccount {
                account_id: *RecordId::new_v7(now.0).as_bytes(),
                username: username.clone(),
                role,
                password_phc: password::hash_with(cost, &one_time).map_err(fail)?,
                must_change_password: true,
                external_id: None,
            };
            store.create_account(&account, now).await.map_err(|e| match e {
                AccountError::UsernameTaken(_) => CliError::new(Kind::Exists, format!("admin: {e}")),
                other => fail(other),
            })?;
            let detail = serde_json::json!({ "role": role.as_str() });
            admin::audit(
                archive,
                ACTOR,
                "account.create",
                &account
                    .account_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
                detail,
            )
            .await
            .map_err(fail)?;
            println!(
                "created {username} ({}); one-time password, shown only now:",
                role.as_str()
            );
            println!("  {}", one_time.as_str());
        }
        UserCommand::List { .. } => {
            for a in store.list_accounts().await.map_err(fail)? {
                let mut flags = Vec::new();
                if a.disabled_at.is_some() {
                    flags.push("disabled");
                }
                if a.must_change_password {
                    flags.push("must-change-password");
                }
                if a.totp_enabled {
                    flags.push("totp");
                }
                println!("{:<24} {:<9} {}", a.username, a.role.as_str(), flags.join(","));
            }
        }
        UserCommand::Disable { username, .. } => {
            apply(archive, username, AdminChange::Disable).await?;
            println!("disabled {username}; its sessions ended");
        }
        UserCommand::Enable { username, .. } => {
            apply(archive, username, AdminChange::Enable).await?;
            println!("enabled {username}");
        }
        UserCommand::ResetPassword { username, .. } => {
            let one_time = password::one_time_password().map_err(fail)?;
            let phc = password::hash_with(cost, &one_time).map_err(fail)?;
            apply(archive, username, AdminChange::ResetPassword { phc }).await?;
            println!("reset {username}; one-time password, shown only now:");
            println!("  {}", one_time.as_str());
        }
        UserCommand::ResetMfa { username, .. } => {
            apply(archive, username, AdminChange::ResetMfa).await?;
            println!("removed the second factor of {username}; its sessions ended");
        }
        UserCommand::SetRole { username, role, .. } => {
            let role = role_of(role)?;
            apply(archive, username, AdminChange::SetRole(role)).await?;
            println!("{username} is now {}", role.as_str());
        }
    }
    Ok(())
}

fn device_bundle(args: &BundleArgs) -> Result<(), CliError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use vellum_archive::ports::{DeviceStore, SecretHash};
    use vellum_protocol::bundle::Bundle;
    use vellum_protocol::ids::{Custodian, RetentionClass};
    use zeroize::Zeroizing;

    let config = Config::load(&args.config)?;
    let log_key = config.log_signer()?;
    let org_key = vellum_tlog::note::NoteVerifier::from_vkey(&config.org_key).map_err(fail)?;
    let custodian = Custodian::new(&args.custodian).map_err(fail)?;
    let retention = RetentionClass::new(&args.retention).map_err(fail)?;
    let index_text = crate::serve::secret_file(&args.index_key)?;
    let index_bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(index_text.as_bytes())
            .map_err(|_| fail("--index-key: not an index key (base64url)"))?,
    );
    let index_key = vellum_protocol::blind::IndexKey::from_bytes(
        index_bytes
            .as_slice()
            .try_into()
            .map_err(|_| fail("--index-key: an index key is 32 bytes"))?,
    );
    if !(1..=90).contains(&args.days) {
        return Err(fail("--days: 1 to 90"));
    }
    let mut token = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(token.as_mut()).map_err(fail)?;
    let expires_at = UnixMillis(now_ms() + args.days * 86_400_000);
    let bundle = Bundle {
        gateway: args.gateway_url.trim_end_matches('/').to_owned(),
        org_key,
        log_key: log_key.verifier(),
        index_key,
        token: Zeroizing::new(URL_SAFE_NO_PAD.encode(*token)),
        custodian: custodian.clone(),
        retention,
        expires_at,
        ca_cert: None,
    };
    // Checked before the token is registered: a bundle a device would refuse is never made.
    let json = bundle.to_json();
    Bundle::from_json(json.as_bytes()).map_err(fail)?;
    let mut out = crate::files::Output::create(Some(&args.out))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(async {
        async fn register<L: LogStore + DeviceStore>(
            store: L,
            log_key: NoteSigner,
            token: &SecretHash,
            (custodian, retention): (&Custodian, &RetentionClass),
            expires_at: UnixMillis,
        ) -> Result<(), CliError> {
            store
                .add_enrollment(token, custodian, retention, expires_at)
                .await
                .map_err(fail)?;
            let archive = Archive::open(store, NoBlobs, log_key).await.map_err(fail)?;
            let detail = serde_json::json!({ "expires_at": expires_at.0, "retention": retention.as_str() });
            let done = admin::audit(&archive, ACTOR, "device.enrollment", custodian.as_str(), detail).await;
            archive.close().await;
            done.map_err(fail)
        }
        use sha2::Digest as _;
        let hash = SecretHash(sha2::Sha256::digest(*token).into());
        match open_store(&config.database).await? {
            OpenedStore::Sqlite(store) => {
                register(store, log_key, &hash, (&custodian, &bundle.retention), expires_at).await
            }
            OpenedStore::Postgres(store) => {
                register(store, log_key, &hash, (&custodian, &bundle.retention), expires_at).await
            }
        }
    })?;
    std::io::Write::write_all(&mut out.writer(), json.as_bytes()).map_err(fail)?;
    out.commit()?;
    println!(
        "enrollment bundle for a device of {} written to {} (works once, until {})",
        custodian,
        args.out.display(),
        vellum_protocol::time::rfc3339(expires_at.0)
    );
    Ok(())
}
