//! The keyring lifecycle in storage: published keyring statements (one per epoch,
//! consecutive, never rewritten), the wrapped copies of each epoch identity, and
//! auditors' public recipients (with, optionally, their identity sealed under their
//! own passphrase). The port is [`KeyStore`]; its SQL is stamped out for each backend
//! by `sql_keys!`.
//!
//! Everything stored here is public or ciphertext the gateway cannot open: a keyring
//! statement is signed by the organisation key, a wrapped epoch identity is an age
//! file sealed to one auditor or to the escrow recipient.

use std::future::Future;

use vellum_protocol::ids::UnixMillis;

use crate::error::StoreError;

/// Who holds a wrapped copy: an auditor's account, or the escrow recipient.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// An auditor's account.
    Account([u8; 16]),
    /// The escrow recipient (the custodians' quorum).
    Escrow,
}

impl Holder {
    /// The stored form: the account id in hex, or `escrow`.
    pub fn as_text(&self) -> String {
        match self {
            Holder::Account(id) => id.iter().map(|b| format!("{b:02x}")).collect(),
            Holder::Escrow => "escrow".to_owned(),
        }
    }

    /// Reads the stored form.
    pub fn from_text(text: &str) -> Option<Self> {
        if text == "escrow" {
            return Some(Holder::Escrow);
        }
        if text.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Holder::Account(id))
    }
}

/// One wrapped copy of an epoch identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrap {
    /// The epoch.
    pub epoch: u64,
    /// Whose.
    pub holder: Holder,
    /// The age file.
    pub wrapped: Vec<u8>,
}

/// An auditor's keys as stored: their public recipient, and optionally their
/// identity sealed under their own passphrase (never opened here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditorKey {
    /// The `age1…` recipient.
    pub recipient: String,
    /// The passphrase-sealed identity, if the auditor stored one.
    pub identity: Option<Vec<u8>>,
}

/// A published keyring statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKeyring {
    /// Its epoch.
    pub epoch: u64,
    /// The signed note, as published.
    pub note: String,
    /// When.
    pub published_at: UnixMillis,
    /// By whom (an account id in hex, or `config` for the one a gateway started with).
    pub published_by: String,
}

/// Why a keyring or a wrap was not stored. Nothing was stored in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The epoch is not the one after the newest published (a rollback, a gap, or a
    /// race with another publisher).
    #[error("epoch {offered} is not the next epoch (the newest published is {newest})")]
    NotNext {
        /// The epoch offered.
        offered: u64,
        /// The newest published epoch.
        newest: u64,
    },
    /// No keyring is published for this epoch.
    #[error("no keyring is published for epoch {0}")]
    UnknownEpoch(u64),
    /// This holder has a copy of this epoch already.
    #[error("{holder} holds a wrapped copy of epoch {epoch} already")]
    WrapExists {
        /// The epoch.
        epoch: u64,
        /// The holder, as stored.
        holder: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keyrings, wrapped epoch identities and auditors' keys.
///
/// **Append-only.** Published keyrings and wraps are never rewritten or deleted (the
/// database refuses it). **Consecutive.** After the first, a keyring is stored only
/// for the epoch after the newest. **Atomic.** A keyring and its wraps are stored
/// together or not at all.
pub trait KeyStore: Send + Sync + 'static {
    /// Publishes a keyring statement with its wrapped copies.
    fn publish_keyring(
        &self,
        keyring: &PublishedKeyring,
        wraps: &[Wrap],
    ) -> impl Future<Output = Result<(), KeyError>> + Send;

    /// The newest published keyring.
    fn latest_keyring(&self) -> impl Future<Output = Result<Option<PublishedKeyring>, StoreError>> + Send;

    /// The keyring published for `epoch`, if any.
    fn keyring_at(
        &self,
        epoch: u64,
    ) -> impl Future<Output = Result<Option<PublishedKeyring>, StoreError>> + Send;

    /// Adds wrapped copies of published epochs (for a new auditor), all or none.
    fn add_wraps(
        &self,
        wraps: &[Wrap],
        by: &str,
        at: UnixMillis,
    ) -> impl Future<Output = Result<(), KeyError>> + Send;

    /// Every wrapped copy `holder` has, oldest epoch first.
    fn wraps_of(&self, holder: &Holder) -> impl Future<Output = Result<Vec<Wrap>, StoreError>> + Send;

    /// Who holds a copy of `epoch`.
    fn holders_of(&self, epoch: u64) -> impl Future<Output = Result<Vec<Holder>, StoreError>> + Send;

    /// Sets an auditor's recipient (and identity backup, when given), replacing them.
    fn set_auditor_key(
        &self,
        account_id: &[u8; 16],
        recipient: &str,
        identity: Option<&[u8]>,
        at: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// An auditor's recipient and identity backup, if set.
    fn auditor_key(
        &self,
        account_id: &[u8; 16],
    ) -> impl Future<Output = Result<Option<AuditorKey>, StoreError>> + Send;
}

macro_rules! sql_keys {
    (store: $store:ty $(,)?) => {
        impl $store {
            /// The keyring of `epoch`, or the newest for `None`.
            async fn keyring_where(
                &self,
                epoch: Option<i64>,
            ) -> Result<Option<$crate::keys::PublishedKeyring>, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read keyring", e);
                let row = sqlx::query(
                    "SELECT epoch, note, published_at, published_by FROM keyrings \
                     WHERE $1 IS NULL OR epoch = $1 ORDER BY epoch DESC LIMIT 1",
                )
                .bind(epoch)
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;

                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::keys::PublishedKeyring {
                    epoch: $crate::sql::to_u64(row.try_get(0).map_err(err)?, "epoch")?,
                    note: row.try_get(1).map_err(err)?,
                    published_at: vellum_protocol::ids::UnixMillis($crate::sql::to_u64(
                        row.try_get(2).map_err(err)?,
                        "time",
                    )?),
                    published_by: row.try_get(3).map_err(err)?,
                }))
            }
        }

        impl $crate::keys::KeyStore for $store {
            async fn publish_keyring(
                &self,
                keyring: &$crate::keys::PublishedKeyring,
                wraps: &[$crate::keys::Wrap],
            ) -> Result<(), $crate::keys::KeyError> {
                use $crate::error::StoreError;
                use $crate::keys::KeyError;
                let err = |e| KeyError::Store(StoreError::backend("publish keyring", e));
                let to_i64 = $crate::sql::to_i64;
                let mut tx = self.pool.begin().await.map_err(err)?;
                // The write comes first (it takes SQLite's write lock at once, and makes
                // racing publishers queue on PostgreSQL), conditional on being the next.
                let epoch = to_i64(keyring.epoch, "epoch")?;
                let inserted = sqlx::query(
                    "INSERT INTO keyrings (epoch, note, published_at, published_by) \
                     SELECT $1, $2, $3, $4 WHERE COALESCE((SELECT MAX(epoch) FROM keyrings) + 1, $1) = $1 \
                     ON CONFLICT (epoch) DO NOTHING",
                )
                .bind(epoch)
                .bind(keyring.note.as_str())
                .bind(to_i64(keyring.published_at.0, "time")?)
                .bind(keyring.published_by.as_str())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                if inserted.rows_affected() != 1 {
                    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(epoch) FROM keyrings")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                    tx.rollback().await.map_err(err)?;
                    return Err(KeyError::NotNext {
                        offered: keyring.epoch,
                        newest: newest.map(|n| $crate::sql::to_u64(n, "epoch")).transpose()?.unwrap_or_default(),
                    });
                }
                for wrap in wraps {
                    sqlx::query(
                        "INSERT INTO epoch_wraps (epoch, holder, wrapped, added_at, added_by) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(to_i64(wrap.epoch, "epoch")?)
                    .bind(wrap.holder.as_text())
                    .bind(wrap.wrapped.as_slice())
                    .bind(to_i64(keyring.published_at.0, "time")?)
                    .bind(keyring.published_by.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                }
                tx.commit().await.map_err(err)
            }

            async fn latest_keyring(
                &self,
            ) -> Result<Option<$crate::keys::PublishedKeyring>, $crate::error::StoreError> {
                self.keyring_where(None).await
            }

            async fn keyring_at(
                &self,
                epoch: u64,
            ) -> Result<Option<$crate::keys::PublishedKeyring>, $crate::error::StoreError> {
                self.keyring_where(Some($crate::sql::to_i64(epoch, "epoch")?)).await
            }

            async fn add_wraps(
                &self,
                wraps: &[$crate::keys::Wrap],
                by: &str,
                at: vellum_protocol::ids::UnixMillis,
            ) -> Result<(), $crate::keys::KeyError> {
                use $crate::error::StoreError;
                use $crate::keys::KeyError;
                let err = |e| KeyError::Store(StoreError::backend("add wrapped keys", e));
                let to_i64 = $crate::sql::to_i64;
                let mut tx = self.pool.begin().await.map_err(err)?;
                for wrap in wraps {
                    let epoch = to_i64(wrap.epoch, "epoch")?;
                    let holder = wrap.holder.as_text();
                    // Writes first (see publish_keyring); why nothing was written is read after.
                    let added = sqlx::query(
                        "INSERT INTO epoch_wraps (epoch, holder, wrapped, added_at, added_by) \
                         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM keyrings WHERE epoch = $1) \
                         ON CONFLICT (epoch, holder) DO NOTHING",
                    )
                    .bind(epoch)
                    .bind(holder.as_str())
                    .bind(wrap.wrapped.as_slice())
                    .bind(to_i64(at.0, "time")?)
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    if added.rows_affected() != 1 {
                        let published: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keyrings WHERE epoch = $1")
                            .bind(epoch)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err)?;
                        tx.rollback().await.map_err(err)?;
                        return Err(if published == 0 {
                            KeyError::UnknownEpoch(wrap.epoch)
                        } else {
                            KeyError::WrapExists {
                                epoch: wrap.epoch,
                                holder,
                            }
                        });
                    }
                }
                tx.commit().await.map_err(err)
            }

            async fn wraps_of(
                &self,
                holder: &$crate::keys::Holder,
            ) -> Result<Vec<$crate::keys::Wrap>, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read wrapped keys", e);
                let rows = sqlx::query("SELECT epoch, wrapped FROM epoch_wraps WHERE holder = $1 ORDER BY epoch")
                    .bind(holder.as_text())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err)?;
                rows.into_iter()
                    .map(|row| {
                        Ok($crate::keys::Wrap {
                            epoch: $crate::sql::to_u64(row.try_get(0).map_err(err)?, "epoch")?,
                            holder: holder.clone(),
                            wrapped: row.try_get(1).map_err(err)?,
                        })
                    })
                    .collect()
            }

            async fn holders_of(&self, epoch: u64) -> Result<Vec<$crate::keys::Holder>, $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("read wrapped keys", e);
                let holders: Vec<String> = sqlx::query_scalar("SELECT holder FROM epoch_wraps WHERE epoch = $1 ORDER BY holder")
                    .bind($crate::sql::to_i64(epoch, "epoch")?)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err)?;
                holders
                    .iter()
                    .map(|h| {
                        $crate::keys::Holder::from_text(h).ok_or_else(|| {
                            $crate::error::StoreError::Integrity("stored wrap: bad holder".into())
                        })
                    })
                    .collect()
            }

            async fn set_auditor_key(
                &self,
                account_id: &[u8; 16],
                recipient: &str,
                identity: Option<&[u8]>,
                at: vellum_protocol::ids::UnixMillis,
            ) -> Result<(), $crate::error::StoreError> {
                sqlx::query(
                    "INSERT INTO auditor_keys (account_id, recipient, identity, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account_id) DO UPDATE SET recipient = excluded.recipient, \
                     identity = excluded.identity, updated_at = excluded.updated_at",
                )
                .bind(account_id.as_slice())
                .bind(recipient)
                .bind(identity)
                .bind($crate::sql::to_i64(at.0, "time")?)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("set auditor key", e))?;
                Ok(())
            }

            async fn auditor_key(
                &self,
                account_id: &[u8; 16],
            ) -> Result<Option<$crate::keys::AuditorKey>, $crate::error::StoreError> {
                let row: Option<(String, Option<Vec<u8>>)> =
                    sqlx::query_as("SELECT recipient, identity FROM auditor_keys WHERE account_id = $1")
                        .bind(account_id.as_slice())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::error::StoreError::backend("read auditor key", e))?;
                Ok(row.map(|(recipient, identity)| $crate::keys::AuditorKey { recipient, identity }))
            }
        }
    };
}

pub(crate) use sql_keys;
