//! People's accounts and their sessions: the ports ([`AccountStore`],
//! [`SessionStore`]) and their SQL implementation, stamped out for each backend by
//! `sql_accounts!` like the rest of the metadata store.
//!
//! Nothing here hashes or checks a password or a code: the gateway does, and stores
//! only what comes out (Argon2id PHC strings, SHA-256 of random secrets).

use std::fmt;
use std::future::Future;

use vellum_protocol::ids::UnixMillis;
use zeroize::Zeroizing;

use crate::error::{AccountError, StoreError};
use crate::ports::SecretHash;

/// What a person may do. Device principals are separate (`ports::Device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Manages accounts, devices and configuration; cannot read content or approve.
    Admin,
    /// Searches, requests access, reads what was granted.
    Auditor,
    /// Approves or denies access requests (a records officer).
    Approver,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Auditor, Role::Approver];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
        }
    }

    /// The role of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Whether `name` is a valid username: 1 to 64 characters of `a-z`, `0-9`, `.`, `_`,
/// `@` and `-` (so an e-mail address in lower case is one), and not `escrow` (the name
/// the key routes give the escrow recipient).
pub fn valid_username(name: &str) -> bool {
    name != "escrow"
        && (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
}

/// An account to create.
#[derive(Clone)]
pub struct NewAccount {
    /// A fresh id (16 bytes, a UUIDv7).
    pub account_id: [u8; 16],
    /// The login name, unique.
    pub username: String,
    /// The role.
    pub role: Role,
    /// The Argon2id PHC string of the password.
    pub password_phc: String,
    /// The password was issued by someone else (a one-time password) and must be
    /// changed at the first login.
    pub must_change_password: bool,
    /// For an account made by single sign-on: `"ISSUER SUB"`, the only identity that
    /// may sign in to it that way (unique).
    pub external_id: Option<String>,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A stored account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub account_id: [u8; 16],
    /// The login name.
    pub username: String,
    /// The role.
    pub role: Role,
    /// The Argon2id PHC string of the password.
    pub password_phc: String,
    /// Whether the password must be changed at the next login.
    pub must_change_password: bool,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it was disabled; a disabled account cannot log in, and its sessions end.
    pub disabled_at: Option<UnixMillis>,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Until when failed logins lock it.
    pub locked_until: Option<UnixMillis>,
    /// The TOTP secret, once one was issued.
    pub totp_secret: Option<Zeroizing<Vec<u8>>>,
    /// Whether a first code confirmed the secret (then every login needs a code).
    pub totp_enabled: bool,
    /// The single sign-on identity bound to it (see [`NewAccount::external_id`]).
    pub external_id: Option<String>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled_at", &self.disabled_at)
            .field("totp_enabled", &self.totp_enabled)
            .finish_non_exhaustive()
    }
}

/// A stored TOTP secret replaced by the same secret sealed under another key.
pub struct TotpReseal {
    /// Whose secret.
    pub account_id: [u8; 16],
    /// The value stored now; nothing changes if the account stores another.
    pub stored: Zeroizing<Vec<u8>>,
    /// What to store instead.
    pub sealed: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TotpReseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpReseal")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// One change to an account.
#[derive(Clone)]
#[non_exhaustive]
pub enum AccountChange {
    /// A new password hash (also clears failed logins and the lock).
    Password {
        /// The Argon2id PHC string.
        phc: String,
        /// Whether it must be changed at the next login (a reset by an administrator).
        must_change: bool,
    },
    /// A new role.
    Role(Role),
    /// Disabled from this time on, or enabled again (`None`).
    Disabled(Option<UnixMillis>),
    /// A successful login: failed logins and the lock are cleared.
    LoginSucceeded,
    /// Locked until this time.
    LockedUntil(UnixMillis),
    /// A new TOTP secret, not enabled until confirmed; `None` removes TOTP.
    TotpSecret(Option<Zeroizing<Vec<u8>>>),
    /// This TOTP secret is confirmed: every login now needs a code. Nothing changes
    /// if the stored secret is another one (replaced meanwhile).
    TotpEnabled(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for AccountChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountChange::Password { .. } => "Password(..)",
            AccountChange::Role(_) => "Role",
            AccountChange::Disabled(_) => "Disabled",
            AccountChange::LoginSucceeded => "LoginSucceeded",
            AccountChange::LockedUntil(_) => "LockedUntil",
            AccountChange::TotpSecret(_) => "TotpSecret(..)",
            AccountChange::TotpEnabled(_) => "TotpEnabled(..)",
        })
    }
}

/// People's accounts. **Never deleted**: an account is disabled instead, so the
/// audit trail keeps naming who did what. Every change is durable when it resolves.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account at `now`; refused if its single sign-on identity is bound to
    /// another account ([`AccountError::ExternalIdTaken`], checked first) or its
    /// username is taken.
    fn create_account(
        &self,
        account: &NewAccount,
        now: UnixMillis,
    ) -> impl Future<Output = Result<(), AccountError>> + Send;

    /// The account of `username`, if any.
    fn account_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// The account bound to this single sign-on identity, if any.
    fn account_by_external_id(
        &self,
        external_id: &str,
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// The account with this id, if any.
    fn account_by_id(
        &self,
        id: &[u8; 16],
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Every account, by username.
    fn list_accounts(&self) -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;

    /// Applies `change`; `false` if there is no such account.
    fn update_account(
        &self,
        id: &[u8; 16],
        change: AccountChange,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Counts one more failed login; returns the count.
    fn login_failed(&self, id: &[u8; 16]) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Replaces stored TOTP secrets all in one transaction, each only if its account
    /// still stores the value it replaces: re-sealing every secret under a new key
    /// either happens whole or not at all. Answers how many were replaced.
    fn reseal_totp(&self, changes: &[TotpReseal]) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Accepts TOTP time step `step` only if it is later than every step accepted
    /// before, so a code works once.
    fn use_totp_step(
        &self,
        id: &[u8; 16],
        step: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the account's recovery codes (their hashes).
    fn set_recovery_codes(
        &self,
        id: &[u8; 16],
        codes: &[SecretHash],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Spends a recovery code; `false` if it is unknown or spent.
    fn use_recovery_code(
        &self,
        id: &[u8; 16],
        code: &SecretHash,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// What presenting a refresh token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refreshed {
    /// It was current: it is spent now and its successor stored.
    Rotated {
        /// The account.
        account_id: [u8; 16],
        /// The session.
        family_id: [u8; 16],
    },
    /// It was spent already: someone replayed it, and the whole session has ended.
    Reused {
        /// The session that ended.
        family_id: [u8; 16],
    },
    /// No such token.
    Unknown,
    /// It expired.
    Expired,
    /// Its session ended (logout, reuse, a disabled account).
    Ended,
}

/// An access token's account and session as they stand now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPrincipal {
    /// The account's role now.
    pub role: Role,
    /// Whether the account may act: not disabled, the session not ended.
    pub live: bool,
    /// Whether the account has a confirmed second factor.
    pub totp_enabled: bool,
    /// Whether the identity provider vouched for a second factor at this session's
    /// sign-in.
    pub idp_second_factor: bool,
    /// The session's absolute end.
    pub ends_at: UnixMillis,
}

/// A session to start: its first refresh token and its limits.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    /// The session (refresh-token family) id.
    pub family_id: [u8; 16],
    /// Whose.
    pub account_id: [u8; 16],
    /// The first refresh token's hash.
    pub refresh: &'a SecretHash,
    /// Now.
    pub now: UnixMillis,
    /// When the first refresh token expires.
    pub expires_at: UnixMillis,
    /// The session's absolute end: no refresh token outlives it, none rotates after it.
    pub ends_at: UnixMillis,
    /// The identity provider vouched for a second factor at this sign-in.
    pub idp_second_factor: bool,
}

/// Login sessions: families of refresh tokens, each token good once.
pub trait SessionStore: Send + Sync + 'static {
    /// Starts a session with its first refresh token.
    fn start_session(&self, session: &NewSession<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Spends `presented` and stores `next` in its place, in one transaction; a token
    /// presented a second time ends its session instead.
    fn rotate_refresh(
        &self,
        presented: &SecretHash,
        next: &SecretHash,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<Refreshed, StoreError>> + Send;

    /// Ends a session; `false` if it had ended already (or does not exist).
    fn end_session(
        &self,
        family_id: &[u8; 16],
        now: UnixMillis,
        reason: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends every session of an account; returns how many were live.
    fn end_sessions_of(
        &self,
        account_id: &[u8; 16],
        now: UnixMillis,
        reason: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The account and session an access token names, as they stand now.
    fn session_principal(
        &self,
        account_id: &[u8; 16],
        family_id: &[u8; 16],
    ) -> impl Future<Output = Result<Option<SessionPrincipal>, StoreError>> + Send;
}

/// The account columns, in the order `account_from_row` reads them.
pub(crate) const ACCOUNT_COLUMNS: &str = "account_id, username, role, password_phc, must_change_password, \
     created_at, disabled_at, failed_logins, locked_until, totp_secret, totp_enabled, external_id";

macro_rules! sql_accounts {
    (store: $store:ty, row: $row:ty $(,)?) => {
        fn account_from_row(row: &$row) -> Result<$crate::ports::Account, $crate::error::StoreError> {
            use sqlx::Row as _;
            use vellum_protocol::ids::UnixMillis;
            use $crate::error::StoreError;
            let err = |e| StoreError::backend("read account", e);
            let bad = |what: &str| StoreError::Integrity(format!("stored account: bad {what}"));
            let time = |v: Option<i64>| -> Result<Option<UnixMillis>, StoreError> {
                v.map(|t| $crate::sql::to_u64(t, "time").map(UnixMillis))
                    .transpose()
            };
            let id: Vec<u8> = row.try_get(0).map_err(err)?;
            let role: String = row.try_get(2).map_err(err)?;
            let failed: i64 = row.try_get(7).map_err(err)?;
            let secret: Option<Vec<u8>> = row.try_get(9).map_err(err)?;
            Ok($crate::ports::Account {
                account_id: $crate::sql::to_array(id, "account id")?,
                username: row.try_get(1).map_err(err)?,
                role: $crate::ports::Role::parse(&role).ok_or_else(|| bad("role"))?,
                password_phc: row.try_get(3).map_err(err)?,
                must_change_password: row.try_get(4).map_err(err)?,
                created_at: UnixMillis($crate::sql::to_u64(row.try_get(5).map_err(err)?, "time")?),
                disabled_at: time(row.try_get(6).map_err(err)?)?,
                failed_logins: u32::try_from(failed).map_err(|_| bad("failed logins"))?,
                locked_until: time(row.try_get(8).map_err(err)?)?,
                totp_secret: secret.map(zeroize::Zeroizing::new),
                totp_enabled: row.try_get(10).map_err(err)?,
                external_id: row.try_get(11).map_err(err)?,
            })
        }

        /// The account whose unique `column` holds `value`.
        async fn account_where<V>(
            pool: &sqlx::Pool<<$row as sqlx::Row>::Database>,
            column: &'static str,
            value: V,
        ) -> Result<Option<$crate::ports::Account>, $crate::error::StoreError>
        where
            V: Send + for<'q> sqlx::Encode<'q, <$row as sqlx::Row>::Database> + sqlx::Type<<$row as sqlx::Row>::Database>,
        {
            let sql = format!(
                "SELECT {} FROM accounts WHERE {column} = $1",
                $crate::accounts::ACCOUNT_COLUMNS
            );
            sqlx::query(&sql)
                .bind(value)
                .fetch_optional(pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("read account", e))?
                .map(|row| account_from_row(&row))
                .transpose()
        }

        impl $crate::ports::AccountStore for $store {
            async fn create_account(
                &self,
                account: &$crate::ports::NewAccount,
                now: vellum_protocol::ids::UnixMillis,
            ) -> Result<(), $crate::error::AccountError> {
                use $crate::error::{AccountError, StoreError};
                let created = sqlx::query(
                    "INSERT INTO accounts (account_id, username, role, password_phc, \
                     must_change_password, created_at, external_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(account.account_id.as_slice())
                .bind(&account.username)
                .bind(account.role.as_str())
                .bind(&account.password_phc)
                .bind(account.must_change_password)
                .bind($crate::sql::to_i64(now.0, "time")?)
                .bind(account.external_id.as_deref())
                .execute(&self.pool)
                .await
                .map_err(|e| StoreError::backend("create account", e))?;
                if created.rows_affected() == 0 {
                    // The identity first: the same person racing themselves takes both
                    // the name and the identity, and should find the account made.
                    let bound: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE external_id = $1")
                        .bind(account.external_id.as_deref())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| StoreError::backend("create account", e))?;
                    return Err(if bound > 0 {
                        AccountError::ExternalIdTaken
                    } else {
                        AccountError::UsernameTaken(account.username.clone())
                    });
                }
                Ok(())
            }

            async fn account_by_username(
                &self,
                username: &str,
            ) -> Result<Option<$crate::ports::Account>, $crate::error::StoreError> {
                account_where(&self.pool, "username", username.to_owned()).await
            }

            async fn account_by_external_id(
                &self,
                external_id: &str,
            ) -> Result<Option<$crate::ports::Account>, $crate::error::StoreError> {
                account_where(&self.pool, "external_id", external_id.to_owned()).await
            }

            async fn account_by_id(
                &self,
                id: &[u8; 16],
            ) -> Result<Option<$crate::ports::Account>, $crate::error::StoreError> {
                account_where(&self.pool, "account_id", id.to_vec()).await
            }

            async fn list_accounts(&self) -> Result<Vec<$crate::ports::Account>, $crate::error::StoreError> {
                let sql = format!(
                    "SELECT {} FROM accounts ORDER BY username",
                    $crate::accounts::ACCOUNT_COLUMNS
                );
                sqlx::query(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("list accounts", e))?
                    .iter()
                    .map(account_from_row)
                    .collect()
            }

            async fn update_account(
                &self,
                id: &[u8; 16],
                change: $crate::ports::AccountChange,
            ) -> Result<bool, $crate::error::StoreError> {
                use $crate::ports::AccountChange;
                let time = |t: vellum_protocol::ids::UnixMillis| $crate::sql::to_i64(t.0, "time");
                let id = id.as_slice();
                let query = match &change {
                    AccountChange::Password { phc, must_change } => sqlx::query(
                        "UPDATE accounts SET password_phc = $1, must_change_password = $2, \
                         failed_logins = 0, locked_until = NULL WHERE account_id = $3",
                    )
                    .bind(phc.as_str())
                    .bind(*must_change)
                    .bind(id),
                    AccountChange::Role(role) => {
                        sqlx::query("UPDATE accounts SET role = $1 WHERE account_id = $2")
                            .bind(role.as_str())
                            .bind(id)
                    }
                    AccountChange::Disabled(at) => {
                        sqlx::query("UPDATE accounts SET disabled_at = $1 WHERE account_id = $2")
                            .bind(at.map(time).transpose()?)
                            .bind(id)
                    }
                    AccountChange::LoginSucceeded => sqlx::query(
                        "UPDATE accounts SET failed_logins = 0, locked_until = NULL WHERE account_id = $1",
                    )
                    .bind(id),
                    AccountChange::LockedUntil(until) => {
                        sqlx::query("UPDATE accounts SET locked_until = $1 WHERE account_id = $2")
                            .bind(time(*until)?)
                            .bind(id)
                    }
                    AccountChange::TotpSecret(secret) => sqlx::query(
                        "UPDATE accounts SET totp_secret = $1, totp_enabled = $2, \
                         totp_last_step = NULL WHERE account_id = $3",
                    )
                    .bind(secret.as_ref().map(|s| s.to_vec()))
                    .bind(false)
                    .bind(id),
                    AccountChange::TotpEnabled(secret) => sqlx::query(
                        "UPDATE accounts SET totp_enabled = $1 WHERE account_id = $2 \
                         AND totp_secret = $3",
                    )
                    .bind(true)
                    .bind(id)
                    .bind(secret.to_vec()),
                };
                let done = query
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("update account", e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn reseal_totp(
                &self,
                changes: &[$crate::accounts::TotpReseal],
            ) -> Result<usize, $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("re-seal TOTP secrets", e);
                let mut tx = self.pool.begin().await.map_err(err)?;
                let mut replaced = 0;
                for change in changes {
                    let done = sqlx::query(
                        "UPDATE accounts SET totp_secret = $1 WHERE account_id = $2 AND totp_secret = $3",
                    )
                    .bind(change.sealed.to_vec())
                    .bind(change.account_id.as_slice())
                    .bind(change.stored.to_vec())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    replaced += done.rows_affected() as usize;
                }
                tx.commit().await.map_err(err)?;
                Ok(replaced)
            }

            async fn login_failed(&self, id: &[u8; 16]) -> Result<u32, $crate::error::StoreError> {
                let count: Option<i64> = sqlx::query_scalar(
                    "UPDATE accounts SET failed_logins = failed_logins + 1 WHERE account_id = $1 \
                     RETURNING failed_logins",
                )
                .bind(id.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("count failed login", e))?;
                Ok(count.and_then(|c| u32::try_from(c).ok()).unwrap_or(0))
            }

            async fn use_totp_step(
                &self,
                id: &[u8; 16],
                step: u64,
            ) -> Result<bool, $crate::error::StoreError> {
                let done = sqlx::query(
                    "UPDATE accounts SET totp_last_step = $1 WHERE account_id = $2 \
                     AND (totp_last_step IS NULL OR totp_last_step < $1)",
                )
                .bind($crate::sql::to_i64(step, "time step")?)
                .bind(id.as_slice())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("use TOTP code", e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_recovery_codes(
                &self,
                id: &[u8; 16],
                codes: &[$crate::ports::SecretHash],
            ) -> Result<(), $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("set recovery codes", e);
                let mut tx = self.pool.begin().await.map_err(err)?;
                sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
                    .bind(id.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                for code in codes {
                    sqlx::query("INSERT INTO recovery_codes (account_id, code_hash) VALUES ($1, $2)")
                        .bind(id.as_slice())
                        .bind(code.0.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                tx.commit().await.map_err(err)
            }

            async fn use_recovery_code(
                &self,
                id: &[u8; 16],
                code: &$crate::ports::SecretHash,
                now: vellum_protocol::ids::UnixMillis,
            ) -> Result<bool, $crate::error::StoreError> {
                let done = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 WHERE account_id = $2 \
                     AND code_hash = $3 AND used_at IS NULL",
                )
                .bind($crate::sql::to_i64(now.0, "time")?)
                .bind(id.as_slice())
                .bind(code.0.as_slice())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("use recovery code", e))?;
                Ok(done.rows_affected() == 1)
            }
        }

        impl $crate::ports::SessionStore for $store {
            async fn start_session(
                &self,
                session: &$crate::ports::NewSession<'_>,
            ) -> Result<(), $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("start session", e);
                let (family_id, refresh) = (&session.family_id, session.refresh);
                let now = $crate::sql::to_i64(session.now.0, "time")?;
                let expires_at = vellum_protocol::ids::UnixMillis(session.expires_at.0.min(session.ends_at.0));
                let mut tx = self.pool.begin().await.map_err(err)?;
                sqlx::query(
                    "INSERT INTO session_families (family_id, account_id, created_at, ends_at, idp_second_factor) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(family_id.as_slice())
                .bind(session.account_id.as_slice())
                .bind(now)
                .bind($crate::sql::to_i64(session.ends_at.0, "time")?)
                .bind(session.idp_second_factor)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(refresh.0.as_slice())
                .bind(family_id.as_slice())
                .bind(now)
                .bind($crate::sql::to_i64(expires_at.0, "time")?)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)
            }

            async fn rotate_refresh(
                &self,
                presented: &$crate::ports::SecretHash,
                next: &$crate::ports::SecretHash,
                now: vellum_protocol::ids::UnixMillis,
                expires_at: vellum_protocol::ids::UnixMillis,
            ) -> Result<$crate::ports::Refreshed, $crate::error::StoreError> {
                use sqlx::Row as _;
                use $crate::ports::Refreshed;
                let err = |e| $crate::error::StoreError::backend("refresh session", e);
                let now_i = $crate::sql::to_i64(now.0, "time")?;
                // An unknown token is answered from a plain read: guessed tokens never
                // take the write lock (on SQLite, the one the capture path needs). A
                // hash that is not stored now cannot be stored later, so this is safe.
                let known: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT token_hash FROM refresh_tokens WHERE token_hash = $1")
                        .bind(presented.0.as_slice())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err)?;
                if known.is_none() {
                    return Ok(Refreshed::Unknown);
                }
                let mut tx = self.pool.begin().await.map_err(err)?;
                // Writing first takes the write lock at once (SQLite) and makes racing
                // presentations of one token queue on its row (PostgreSQL).
                let spent = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 \
                     AND used_at IS NULL AND expires_at > $1 RETURNING family_id",
                )
                .bind(now_i)
                .bind(presented.0.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let family: Vec<u8> = match spent {
                    Some(row) => row.try_get(0).map_err(err)?,
                    None => {
                        let row = sqlx::query(
                            "SELECT family_id, used_at FROM refresh_tokens WHERE token_hash = $1",
                        )
                        .bind(presented.0.as_slice())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                        let Some(row) = row else {
                            return Ok(Refreshed::Unknown);
                        };
                        let family: Vec<u8> = row.try_get(0).map_err(err)?;
                        let used: Option<i64> = row.try_get(1).map_err(err)?;
                        if used.is_none() {
                            return Ok(Refreshed::Expired);
                        }
                        sqlx::query(
                            "UPDATE session_families SET ended_at = $1, end_reason = $2 \
                             WHERE family_id = $3 AND ended_at IS NULL",
                        )
                        .bind(now_i)
                        .bind("refresh token reused")
                        .bind(family.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                        tx.commit().await.map_err(err)?;
                        return Ok(Refreshed::Reused {
                            family_id: $crate::sql::to_array(family, "session id")?,
                        });
                    }
                };
                let session = sqlx::query(
                    "SELECT f.account_id, f.ends_at FROM session_families f JOIN accounts a \
                     ON a.account_id = f.account_id \
                     WHERE f.family_id = $1 AND f.ended_at IS NULL AND a.disabled_at IS NULL \
                     AND f.ends_at > $2",
                )
                .bind(family.as_slice())
                .bind(now_i)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let Some(session) = session else {
                    // Dropping the transaction rolls the spend back: the token stays as it was.
                    return Ok(Refreshed::Ended);
                };
                let account: Vec<u8> = session.try_get(0).map_err(err)?;
                let ends_at: i64 = session.try_get(1).map_err(err)?;
                let expires_at = $crate::sql::to_i64(expires_at.0, "time")?.min(ends_at);
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(next.0.as_slice())
                .bind(family.as_slice())
                .bind(now_i)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(Refreshed::Rotated {
                    account_id: $crate::sql::to_array(account, "account id")?,
                    family_id: $crate::sql::to_array(family, "session id")?,
                })
            }

            async fn end_session(
                &self,
                family_id: &[u8; 16],
                now: vellum_protocol::ids::UnixMillis,
                reason: &str,
            ) -> Result<bool, $crate::error::StoreError> {
                let done = sqlx::query(
                    "UPDATE session_families SET ended_at = $1, end_reason = $2 \
                     WHERE family_id = $3 AND ended_at IS NULL",
                )
                .bind($crate::sql::to_i64(now.0, "time")?)
                .bind(reason)
                .bind(family_id.as_slice())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("end session", e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn end_sessions_of(
                &self,
                account_id: &[u8; 16],
                now: vellum_protocol::ids::UnixMillis,
                reason: &str,
            ) -> Result<u64, $crate::error::StoreError> {
                let done = sqlx::query(
                    "UPDATE session_families SET ended_at = $1, end_reason = $2 \
                     WHERE account_id = $3 AND ended_at IS NULL",
                )
                .bind($crate::sql::to_i64(now.0, "time")?)
                .bind(reason)
                .bind(account_id.as_slice())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("end sessions", e))?;
                Ok(done.rows_affected())
            }

            async fn session_principal(
                &self,
                account_id: &[u8; 16],
                family_id: &[u8; 16],
            ) -> Result<Option<$crate::ports::SessionPrincipal>, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read session", e);
                let row = sqlx::query(
                    "SELECT a.role, a.disabled_at, f.ended_at, a.totp_enabled, f.idp_second_factor, f.ends_at \
                     FROM session_families f \
                     JOIN accounts a ON a.account_id = f.account_id \
                     WHERE f.family_id = $1 AND f.account_id = $2",
                )
                .bind(family_id.as_slice())
                .bind(account_id.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
                let Some(row) = row else { return Ok(None) };
                let role: String = row.try_get(0).map_err(err)?;
                let disabled: Option<i64> = row.try_get(1).map_err(err)?;
                let ended: Option<i64> = row.try_get(2).map_err(err)?;
                Ok(Some($crate::ports::SessionPrincipal {
                    role: $crate::ports::Role::parse(&role).ok_or_else(|| {
                        $crate::error::StoreError::Integrity("stored account: bad role".into())
                    })?,
                    live: disabled.is_none() && ended.is_none(),
                    totp_enabled: row.try_get(3).map_err(err)?,
                    idp_second_factor: row.try_get(4).map_err(err)?,
                    ends_at: vellum_protocol::ids::UnixMillis($crate::sql::to_u64(
                        row.try_get(5).map_err(err)?,
                        "time",
                    )?),
                }))
            }
        }
    };
}

pub(crate) use sql_accounts;
