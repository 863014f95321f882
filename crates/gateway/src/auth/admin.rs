//! Changes an administrator makes to an account, one place for both ways of making
//! them (the admin routes and `vellum admin user` on the database): each change, the
//! sessions it ends, and its audit entry.

use vellum_archive::ports::{
    AccountChange, AccountStore, AuditEvent, BlobStore, LogStore, Role, SessionStore,
};
use vellum_archive::{AppendError, Archive};
use vellum_protocol::ids::UnixMillis;

/// A change to someone's account.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminChange {
    /// Disable it and end its sessions.
    Disable,
    /// Enable it again.
    Enable,
    /// Give it another role (effective at its next request).
    SetRole(Role),
    /// Replace its password with this one-time password's hash and end its sessions.
    ResetPassword {
        /// The Argon2id PHC string of the one-time password.
        phc: String,
    },
    /// Remove its second factor and recovery codes and end its sessions.
    ResetMfa,
}

/// Why an administrator's change was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The change does not apply to this account (nothing changed).
    #[error("{0}")]
    Refused(&'static str),
    /// Storage or the log failed.
    #[error(transparent)]
    Failed(#[from] AppendError),
}

impl From<vellum_archive::StoreError> for AdminError {
    fn from(e: vellum_archive::StoreError) -> Self {
        AdminError::Failed(e.into())
    }
}

/// Records an audit event: durable, and a leaf of the log, when this resolves.
pub async fn audit<L: LogStore, B: BlobStore>(
    archive: &Archive<L, B>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), AppendError> {
    let event = AuditEvent {
        at: UnixMillis(crate::now_ms()),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail: detail.to_string(),
    };
    archive.audit(event).await.map(drop)
}

/// Applies `change` to account `id` on behalf of `actor`, ends the sessions it ends,
/// and audits it.
pub async fn apply<L: LogStore + AccountStore + SessionStore, B: BlobStore>(
    archive: &Archive<L, B>,
    actor: &str,
    id: &[u8; 16],
    change: AdminChange,
) -> Result<(), AdminError> {
    let store = archive.log_store();
    let now = UnixMillis(crate::now_ms());
    let single_sign_on = store
        .account_by_id(id)
        .await?
        .is_some_and(|a| a.external_id.is_some());
    if single_sign_on {
        match change {
            AdminChange::ResetPassword { .. } => {
                return Err(AdminError::Refused(
                    "this account signs in through single sign-on and has no password here",
                ));
            }
            AdminChange::SetRole(_) => {
                return Err(AdminError::Refused(
                    "this account's role comes from the identity provider's groups at each sign-in",
                ));
            }
            _ => {}
        }
    }
    let (action, detail, ends_sessions) = match change {
        AdminChange::Disable => {
            store
                .update_account(id, AccountChange::Disabled(Some(now)))
                .await?;
            ("account.disable", serde_json::json!({}), Some("account disabled"))
        }
        AdminChange::Enable => {
            store.update_account(id, AccountChange::Disabled(None)).await?;
            ("account.enable", serde_json::json!({}), None)
        }
        AdminChange::SetRole(role) => {
            store.update_account(id, AccountChange::Role(role)).await?;
            ("account.role", serde_json::json!({ "role": role.as_str() }), None)
        }
        AdminChange::ResetPassword { phc } => {
            let change = AccountChange::Password {
                phc,
                must_change: true,
            };
            store.update_account(id, change).await?;
            (
                "account.reset-password",
                serde_json::json!({}),
                Some("password reset"),
            )
        }
        AdminChange::ResetMfa => {
            store.update_account(id, AccountChange::TotpSecret(None)).await?;
            store.set_recovery_codes(id, &[]).await?;
            ("mfa.reset", serde_json::json!({}), Some("second factor reset"))
        }
    };
    if let Some(reason) = ends_sessions {
        store.end_sessions_of(id, now, reason).await?;
    }
    Ok(audit(archive, actor, action, &hex::encode(id), detail).await?)
}
