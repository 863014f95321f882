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
    /// Make a one-time enrollment bundle for a capture device of a custodian, through
    /// a running gateway's admin API (audited as `device.enrollment` by the
    /// administrator), adding the blind-index key on this machine.
    DeviceBundle(crate::admin_bundle::BundleArgs),
    /// Capture devices, on the deployment's database.
    #[command(subcommand)]
    Device(crate::admin_device::DeviceCommand),
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
        AdminCommand::DeviceBundle(args) => return crate::admin_bundle::run(args),
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
