//! The metadata store over SQL, shared by the SQLite and PostgreSQL backends: the log
//! reads, the device registry and the audit trail, through sqlx. Each backend writes
//! its own batches (its sequencing transaction lives in its module).
//!
//! The SQL is the same for both: `IN (…)` lookups built with sqlx's `QueryBuilder`, so
//! a batch of lookups costs one statement (on SQLite each statement is a round trip to
//! a worker thread, ≈ 50 µs). The implementations are stamped out for each concrete
//! sqlx database by `sql_store!`: sqlx's traits do not compose into a usable generic
//! bound across databases, and the text is identical.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Custodian, DeviceId, IdError, RecordId, UnixMillis};
use vellum_protocol::keys::DevicePublicKey;
use vellum_tlog::Hash;
use vellum_tlog::tree::NodeId;

use crate::error::StoreError;
use crate::ports::{AuditEvent, BlobLocator, CommitBatch, Device, LeafRow, NewRecord, StoredRecord};

/// Rows per multi-row statement: well under SQLite's 32,766 and PostgreSQL's 65,535
/// bound parameters for the widest table (5 columns).
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// The newest checkpoint of at least `$1` leaves (bind 0 for the newest of all).
pub(crate) const LATEST_CHECKPOINT: &str =
    "SELECT size, note FROM checkpoints WHERE size >= $1 ORDER BY size DESC LIMIT 1";
/// The oldest checkpoint of at least `$1` leaves.
pub(crate) const CHECKPOINT_AT_LEAST: &str =
    "SELECT size, note FROM checkpoints WHERE size >= $1 ORDER BY size LIMIT 1";
/// The log size.
pub(crate) const LOG_SIZE: &str = "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves";

/// The row holding node `id`, and the node's offset in that row's `hashes`.
pub(crate) fn node_location(id: &NodeId) -> (i64, usize) {
    let row = ((id.index + 1) << id.level) - 1;
    (row as i64, usize::from(id.level) * 32)
}

/// Picks each node's hash out of the rows that hold them.
pub(crate) fn hashes_from_rows(
    ids: &[NodeId],
    rows: &HashMap<i64, Vec<u8>>,
) -> Result<Vec<Hash>, StoreError> {
    ids.iter()
        .map(|id| {
            let (row, offset) = node_location(id);
            rows.get(&row)
                .and_then(|h| h.get(offset..offset + 32))
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .map(Hash)
                .ok_or_else(|| StoreError::Integrity(format!("tree node {id:?} is missing")))
        })
        .collect()
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Integrity(format!("{what} out of range")))
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Integrity(format!("stored {what} is negative")))
}

pub(crate) fn to_array<const N: usize>(v: Vec<u8>, what: &str) -> Result<[u8; N], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Integrity(format!("stored {what} has the wrong length")))
}

fn bad_id(e: IdError) -> StoreError {
    StoreError::Integrity(format!("stored record id: {e}"))
}

/// A batch's rows with their integers converted for SQL (both databases store
/// `INTEGER`/`BIGINT`, signed 64-bit), checked before any SQL is built.
pub(crate) struct BatchRows<'a> {
    pub(crate) records: Vec<(&'a NewRecord, i64, i64)>,
    pub(crate) leaves: Vec<(&'a LeafRow, i64)>,
    /// Each audit event with its leaf index and time.
    pub(crate) audits: Vec<(&'a AuditEvent, i64, i64)>,
    pub(crate) size: i64,
}

impl<'a> BatchRows<'a> {
    pub(crate) fn new(batch: &'a CommitBatch) -> Result<Self, StoreError> {
        let records = batch
            .records
            .iter()
            .map(|r| {
                let leaf = to_i64(r.leaf_index, "leaf index")?;
                Ok((r, leaf, to_i64(r.received_at.0, "receipt time")?))
            })
            .collect::<Result<_, StoreError>>()?;
        let leaves = batch
            .leaves
            .iter()
            .map(|l| Ok((l, to_i64(l.index, "leaf index")?)))
            .collect::<Result<_, StoreError>>()?;
        let audits = batch
            .audits
            .iter()
            .map(|a| {
                let leaf = to_i64(a.leaf_index, "leaf index")?;
                Ok((&a.event, leaf, to_i64(a.event.at.0, "audit time")?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            records,
            leaves,
            audits,
            size: to_i64(batch.size, "log size")?,
        })
    }
}

/// A record's `record_index` columns, from its header's fields.
pub(crate) struct IndexColumns<'a> {
    pub(crate) custodian: &'a str,
    pub(crate) device_id: &'a [u8],
    pub(crate) channel: &'a str,
    pub(crate) retention: &'a str,
    pub(crate) epoch: i64,
    pub(crate) captured_at: i64,
    pub(crate) body_len: i64,
}

impl<'a> IndexColumns<'a> {
    pub(crate) fn of(fields: &'a HeaderFields) -> Result<Self, StoreError> {
        Ok(Self {
            custodian: fields.custodian.as_str(),
            device_id: fields.device_id.as_bytes().as_slice(),
            channel: fields.channel.as_str(),
            retention: fields.retention.as_str(),
            epoch: to_i64(fields.epoch.0, "epoch")?,
            captured_at: to_i64(fields.captured_at.0, "capture time")?,
            body_len: to_i64(fields.body.len, "body length")?,
        })
    }
}

/// The columns of a stored record, as read.
pub(crate) struct RecordColumns {
    pub(crate) record_id: Vec<u8>,
    pub(crate) leaf_index: i64,
    pub(crate) header: Vec<u8>,
    pub(crate) received_at: i64,
    pub(crate) blob: String,
}

impl RecordColumns {
    /// The stored record; the body digest comes from the stored header, whose
    /// signature was verified when it was appended.
    pub(crate) fn into_record(self) -> Result<StoredRecord, StoreError> {
        let record_id = RecordId::from_bytes(to_array(self.record_id, "record id")?).map_err(bad_id)?;
        let header = UnverifiedHeader::parse(&self.header)
            .map_err(|e| StoreError::Integrity(format!("stored header of {record_id}: {e}")))?;
        let body = header.body_digest();
        Ok(StoredRecord {
            record_id,
            leaf_index: to_u64(self.leaf_index, "leaf index")?,
            header_sha256: Sha256::digest(&self.header).into(),
            header: self.header,
            received_at: UnixMillis(to_u64(self.received_at, "receipt time")?),
            body,
            blob: BlobLocator(self.blob),
        })
    }
}

/// The columns of a stored device, as read.
pub(crate) struct DeviceColumns {
    pub(crate) device_id: Vec<u8>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) custodian: String,
    pub(crate) enrolled_at: i64,
    pub(crate) revoked_at: Option<i64>,
}

impl DeviceColumns {
    pub(crate) fn into_device(self) -> Result<Device, StoreError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Integrity(format!("stored device {what}: {e}"))
        };
        let device_id =
            DeviceId::from_bytes(to_array(self.device_id, "device id")?).map_err(|e| bad("id", &e))?;
        let public_key = DevicePublicKey::from_bytes(&to_array(self.public_key, "device key")?)
            .map_err(|e| bad("key", &e))?;
        Ok(Device {
            device_id,
            public_key,
            custodian: Custodian::new(&self.custodian).map_err(|e| bad("custodian", &e))?,
            enrolled_at: UnixMillis(to_u64(self.enrolled_at, "enrollment time")?),
            revoked_at: self
                .revoked_at
                .map(|at| to_u64(at, "revocation time").map(UnixMillis))
                .transpose()?,
            retention: Vec::new(),
        })
    }
}

/// The device columns, in [`DeviceColumns`] order.
pub(crate) const DEVICE_COLUMNS: &str = "device_id, public_key, custodian, enrolled_at, revoked_at";

pub(crate) fn audit_event(
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: String,
) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        at: UnixMillis(to_u64(at, "audit time")?),
        actor,
        action,
        subject,
        detail,
    })
}

/// Implements `LogStore` and `AuditStore` for `$store`, whose field `pool` is an sqlx
/// pool of `$db` with connections `$conn`, and the read helpers both use. Sequencing is each backend's own:
/// `LogStore::sequence` calls the inherent `begin_sequencing`, which returns `$seq`.
macro_rules! sql_store {
    (
        store: $store:ty,
        db: $db:ty,
        conn: $conn:ty,
        sequencing: $seq:ty $(,)?
    ) => {
        async fn read_size(conn: &mut $conn) -> Result<u64, $crate::error::StoreError> {
            let err = |e| $crate::error::StoreError::backend("read log size", e);
            let size: i64 = sqlx::query_scalar($crate::sql::LOG_SIZE)
                .fetch_one(conn)
                .await
                .map_err(err)?;
            $crate::sql::to_u64(size, "log size")
        }

        /// Writes the search rows of records, `(leaf index, receipt time, header
        /// fields)`: one `record_index` row each and one `record_tokens` row a blind
        /// token, in multi-row statements. Rows present already are kept (the backfill
        /// may meet records indexed meanwhile).
        async fn write_search_rows(
            conn: &mut $conn,
            records: &[(i64, i64, &vellum_protocol::header::HeaderFields)],
        ) -> Result<(), $crate::error::StoreError> {
            use sqlx::QueryBuilder;
            let err = |e| $crate::error::StoreError::backend("write search rows", e);
            let columns = records
                .iter()
                .map(|(leaf, received, fields)| Ok((*leaf, *received, $crate::sql::IndexColumns::of(fields)?)))
                .collect::<Result<Vec<_>, $crate::error::StoreError>>()?;
            for chunk in columns.chunks($crate::sql::ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO record_index (leaf_index, custodian, device_id, channel, retention, \
                     epoch, captured_at, received_at, body_len) ",
                );
                q.push_values(chunk, |mut b, (leaf, received, f)| {
                    b.push_bind(*leaf)
                        .push_bind(f.custodian)
                        .push_bind(f.device_id)
                        .push_bind(f.channel)
                        .push_bind(f.retention)
                        .push_bind(f.epoch)
                        .push_bind(f.captured_at)
                        .push_bind(*received)
                        .push_bind(f.body_len);
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(&mut *conn).await.map_err(err)?;
            }
            let tokens: Vec<(&[u8], i64, i64, &str)> = columns
                .iter()
                .zip(records)
                .flat_map(|((leaf, _, f), (_, _, fields))| {
                    fields.tokens.iter().map(move |t| (t.0.as_slice(), f.captured_at, *leaf, f.custodian))
                })
                .collect();
            for chunk in tokens.chunks($crate::sql::ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO record_tokens (token, captured_at, leaf_index, custodian) ",
                );
                q.push_values(chunk, |mut b, (token, captured_at, leaf, custodian)| {
                    b.push_bind(*token).push_bind(*captured_at).push_bind(*leaf).push_bind(*custodian);
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(&mut *conn).await.map_err(err)?;
            }
            Ok(())
        }

        async fn read_records(
            conn: &mut $conn,
            ids: &[vellum_protocol::ids::RecordId],
        ) -> Result<Vec<$crate::ports::StoredRecord>, $crate::error::StoreError> {
            use sqlx::{QueryBuilder, Row as _};
            let err = |e| $crate::error::StoreError::backend("read records", e);
            let mut out = Vec::new();
            for chunk in ids.chunks($crate::sql::ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT record_id, leaf_index, header, received_at, blob FROM records WHERE record_id IN (",
                );
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_bytes().as_slice());
                }
                q.push(")");
                for row in q.build().fetch_all(&mut *conn).await.map_err(err)? {
                    let columns = $crate::sql::RecordColumns {
                        record_id: row.try_get(0).map_err(err)?,
                        leaf_index: row.try_get(1).map_err(err)?,
                        header: row.try_get(2).map_err(err)?,
                        received_at: row.try_get(3).map_err(err)?,
                        blob: row.try_get(4).map_err(err)?,
                    };
                    out.push(columns.into_record()?);
                }
            }
            Ok(out)
        }

        async fn read_hashes(
            conn: &mut $conn,
            ids: &[vellum_tlog::tree::NodeId],
        ) -> Result<Vec<vellum_tlog::Hash>, $crate::error::StoreError> {
            use sqlx::{QueryBuilder, Row as _};
            let err = |e| $crate::error::StoreError::backend("read tree nodes", e);
            let mut rows: Vec<i64> = ids.iter().map(|id| $crate::sql::node_location(id).0).collect();
            rows.sort_unstable();
            rows.dedup();
            let mut found = std::collections::HashMap::with_capacity(rows.len());
            for chunk in rows.chunks($crate::sql::ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<$db>::new("SELECT idx, hashes FROM log_leaves WHERE idx IN (");
                let mut list = q.separated(", ");
                for row in chunk {
                    list.push_bind(*row);
                }
                q.push(")");
                for row in q.build().fetch_all(&mut *conn).await.map_err(err)? {
                    found.insert(row.try_get::<i64, _>(0).map_err(err)?, row.try_get::<Vec<u8>, _>(1).map_err(err)?);
                }
            }
            $crate::sql::hashes_from_rows(ids, &found)
        }

        async fn read_checkpoint(
            conn: &mut $conn,
            query: &'static str,
            size: i64,
        ) -> Result<Option<(u64, String)>, $crate::error::StoreError> {
            use sqlx::Row as _;
            let err = |e| $crate::error::StoreError::backend("read checkpoint", e);
            let row = sqlx::query(query).bind(size).fetch_optional(conn).await.map_err(err)?;
            row.map(|r| Ok(($crate::sql::to_u64(r.try_get(0).map_err(err)?, "size")?, r.try_get(1).map_err(err)?)))
                .transpose()
        }


        impl $store {
            /// Indexes the records archived before the search index existed (migration
            /// 5), once: the migration leaves a marker that this clears when done. Run
            /// at open, before any sequencing. Returns how many it indexed.
            async fn backfill_search_index(pool: &sqlx::Pool<$db>) -> Result<u64, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("index older records", e);
                let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM search_backfill WHERE done = 0")
                    .fetch_one(pool)
                    .await
                    .map_err(err)?;
                if pending == 0 {
                    return Ok(0);
                }
                let mut done = 0;
                let mut after: i64 = -1;
                loop {
                    let rows = sqlx::query(
                        "SELECT r.leaf_index, r.header, r.received_at FROM records r WHERE r.leaf_index > $1 \
                         AND NOT EXISTS (SELECT 1 FROM record_index i WHERE i.leaf_index = r.leaf_index) \
                         ORDER BY r.leaf_index LIMIT 1000",
                    )
                    .bind(after)
                    .fetch_all(pool)
                    .await
                    .map_err(err)?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut parsed = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let leaf: i64 = row.try_get(0).map_err(err)?;
                        let header: Vec<u8> = row.try_get(1).map_err(err)?;
                        let received: i64 = row.try_get(2).map_err(err)?;
                        let fields = vellum_protocol::header::UnverifiedHeader::parse(&header)
                            .map_err(|e| {
                                $crate::error::StoreError::Integrity(format!("stored header of leaf {leaf}: {e}"))
                            })?
                            .archived_fields()
                            .clone();
                        parsed.push((leaf, received, fields));
                        after = leaf;
                    }
                    let mut tx = pool.begin().await.map_err(err)?;
                    let records: Vec<_> = parsed.iter().map(|(leaf, received, fields)| (*leaf, *received, fields)).collect();
                    write_search_rows(&mut tx, &records).await?;
                    tx.commit().await.map_err(err)?;
                    done += rows.len() as u64;
                }
                sqlx::query("UPDATE search_backfill SET done = 1").execute(pool).await.map_err(err)?;
                Ok(done)
            }

            async fn connection(&self) -> Result<sqlx::pool::PoolConnection<$db>, $crate::error::StoreError> {
                self.pool
                    .acquire()
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("connect to the database", e))
            }
        }

        impl $crate::ports::LogStore for $store {
            type Sequencing = $seq;

            async fn sequence(&self) -> Result<Self::Sequencing, $crate::error::StoreError> {
                self.begin_sequencing().await
            }

            async fn log_size(&self) -> Result<u64, $crate::error::StoreError> {
                read_size(&mut *self.connection().await?).await
            }

            async fn records(
                &self,
                ids: &[vellum_protocol::ids::RecordId],
            ) -> Result<Vec<$crate::ports::StoredRecord>, $crate::error::StoreError> {
                read_records(&mut *self.connection().await?, ids).await
            }

            async fn hashes(
                &self,
                ids: &[vellum_tlog::tree::NodeId],
            ) -> Result<Vec<vellum_tlog::Hash>, $crate::error::StoreError> {
                read_hashes(&mut *self.connection().await?, ids).await
            }

            async fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("read log entry", e);
                sqlx::query_scalar("SELECT entry FROM log_leaves WHERE idx = $1")
                    .bind($crate::sql::to_i64(index, "leaf index")?)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(err)
            }

            async fn checkpoint_at_least(&self, size: u64) -> Result<Option<(u64, String)>, $crate::error::StoreError> {
                let size = $crate::sql::to_i64(size, "log size")?;
                read_checkpoint(&mut *self.connection().await?, $crate::sql::CHECKPOINT_AT_LEAST, size).await
            }

            async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, $crate::error::StoreError> {
                read_checkpoint(&mut *self.connection().await?, $crate::sql::LATEST_CHECKPOINT, 0).await
            }
        }

        impl $crate::ports::DeviceStore for $store {
            async fn add_enrollment(
                &self,
                token: &$crate::ports::SecretHash,
                custodian: &vellum_protocol::ids::Custodian,
                retention: &vellum_protocol::ids::RetentionClass,
                expires_at: vellum_protocol::ids::UnixMillis,
            ) -> Result<(), $crate::error::StoreError> {
                sqlx::query(
                    "INSERT INTO enrollment_tokens (token_hash, custodian, retention, expires_at) VALUES ($1, $2, $3, $4)",
                )
                    .bind(token.0.as_slice())
                    .bind(custodian.as_str())
                    .bind(retention.as_str())
                    .bind($crate::sql::to_i64(expires_at.0, "expiry")?)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("add enrollment token", e))?;
                Ok(())
            }

            async fn enroll(
                &self,
                token: &$crate::ports::SecretHash,
                device: &$crate::ports::NewDevice,
                now: vellum_protocol::ids::UnixMillis,
            ) -> Result<$crate::ports::Device, $crate::error::EnrollError> {
                use $crate::error::{EnrollError, StoreError};
                let err = |e| EnrollError::Store(StoreError::backend("enroll device", e));
                let now_i64 = $crate::sql::to_i64(now.0, "time")?;
                let mut tx = self.pool.begin().await.map_err(err)?;
                // Spending the token first makes racing enrollments queue on its row.
                let spent: Option<(String, Option<String>)> = sqlx::query_as(
                    "UPDATE enrollment_tokens SET used_at = $1, device_id = $2 \
                     WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING custodian, retention",
                )
                .bind(now_i64)
                .bind(device.device_id.as_bytes().as_slice())
                .bind(token.0.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let Some((custodian, retention)) = spent else {
                    let token_row: Option<(i64, Option<i64>)> =
                        sqlx::query_as("SELECT expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1")
                            .bind(token.0.as_slice())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(err)?;
                    return Err(match token_row {
                        None => EnrollError::UnknownToken,
                        Some((_, Some(_))) => EnrollError::TokenUsed,
                        Some(_) => EnrollError::TokenExpired,
                    });
                };
                let custodian = vellum_protocol::ids::Custodian::new(&custodian)
                    .map_err(|e| StoreError::Integrity(format!("stored custodian: {e}")))?;
                // A device id taken already, even by an enrollment racing this one,
                // inserts nothing; the transaction then rolls back, token included.
                let inserted = sqlx::query(
                    "INSERT INTO devices (device_id, public_key, credential_hash, custodian, enrolled_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id) DO NOTHING",
                )
                .bind(device.device_id.as_bytes().as_slice())
                .bind(device.public_key.as_bytes().as_slice())
                .bind(device.credential.0.as_slice())
                .bind(custodian.as_str())
                .bind(now_i64)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                if inserted.rows_affected() != 1 {
                    return Err(EnrollError::DeviceExists(device.device_id));
                }
                let retention = retention
                    .map(|r| vellum_protocol::ids::RetentionClass::new(&r))
                    .transpose()
                    .map_err(|e| StoreError::Integrity(format!("stored retention class: {e}")))?;
                if let Some(class) = &retention {
                    sqlx::query("INSERT INTO device_retention (device_id, retention) VALUES ($1, $2)")
                        .bind(device.device_id.as_bytes().as_slice())
                        .bind(class.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok($crate::ports::Device {
                    device_id: device.device_id,
                    public_key: device.public_key.clone(),
                    custodian,
                    enrolled_at: now,
                    revoked_at: None,
                    retention: retention.into_iter().collect(),
                })
            }

            async fn device_by_credential(
                &self,
                credential: &$crate::ports::SecretHash,
            ) -> Result<Option<$crate::ports::Device>, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read device", e);
                let query = format!(
                    "SELECT {} FROM devices WHERE credential_hash = $1",
                    $crate::sql::DEVICE_COLUMNS
                );
                let row = sqlx::query(&query)
                    .bind(credential.0.as_slice())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(err)?;
                let Some(r) = row else {
                    return Ok(None);
                };
                let mut device = $crate::sql::DeviceColumns {
                    device_id: r.try_get(0).map_err(err)?,
                    public_key: r.try_get(1).map_err(err)?,
                    custodian: r.try_get(2).map_err(err)?,
                    enrolled_at: r.try_get(3).map_err(err)?,
                    revoked_at: r.try_get(4).map_err(err)?,
                }
                .into_device()?;
                let classes: Vec<String> = sqlx::query_scalar(
                    "SELECT retention FROM device_retention WHERE device_id = $1 ORDER BY retention",
                )
                .bind(device.device_id.as_bytes().as_slice())
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
                device.retention = classes
                    .iter()
                    .map(|c| vellum_protocol::ids::RetentionClass::new(c))
                    .collect::<Result<_, _>>()
                    .map_err(|e| $crate::error::StoreError::Integrity(format!("stored retention class: {e}")))?;
                Ok(Some(device))
            }

            async fn bind_retention(
                &self,
                device_id: &vellum_protocol::ids::DeviceId,
                classes: &[vellum_protocol::ids::RetentionClass],
            ) -> Result<bool, $crate::error::StoreError> {
                let err = |e| $crate::error::StoreError::backend("bind device retention", e);
                if classes.is_empty() {
                    return Err($crate::error::StoreError::Config(
                        "a device is bound to at least one retention class".into(),
                    ));
                }
                let mut tx = self.pool.begin().await.map_err(err)?;
                let known: Option<i64> = sqlx::query_scalar("SELECT enrolled_at FROM devices WHERE device_id = $1")
                    .bind(device_id.as_bytes().as_slice())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err)?;
                if known.is_none() {
                    return Ok(false);
                }
                // A binding set now supersedes one an upgrade made and has not yet
                // recorded: that one is not recorded as standing.
                for table in ["device_retention", "device_retention_unaudited"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE device_id = $1"))
                        .bind(device_id.as_bytes().as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                for class in classes {
                    sqlx::query(
                        "INSERT INTO device_retention (device_id, retention) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(device_id.as_bytes().as_slice())
                    .bind(class.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok(true)
            }

            async fn unaudited_bindings(
                &self,
            ) -> Result<
                Vec<(vellum_protocol::ids::DeviceId, Vec<vellum_protocol::ids::RetentionClass>)>,
                $crate::error::StoreError,
            > {
                let err = |e| $crate::error::StoreError::backend("read unaudited device bindings", e);
                let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
                    "SELECT r.device_id, r.retention FROM device_retention r \
                     JOIN device_retention_unaudited u ON u.device_id = r.device_id \
                     ORDER BY r.device_id, r.retention",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
                let mut out: Vec<(vellum_protocol::ids::DeviceId, Vec<vellum_protocol::ids::RetentionClass>)> =
                    Vec::new();
                for (id, class) in rows {
                    let bad = |e: &dyn std::fmt::Display| {
                        $crate::error::StoreError::Integrity(format!("stored device binding: {e}"))
                    };
                    let id: [u8; 16] = id.as_slice().try_into().map_err(|_| bad(&"a device id is 16 bytes"))?;
                    let id = vellum_protocol::ids::DeviceId::from_bytes(id).map_err(|e| bad(&e))?;
                    let class = vellum_protocol::ids::RetentionClass::new(&class).map_err(|e| bad(&e))?;
                    match out.last_mut() {
                        Some((last, classes)) if *last == id => classes.push(class),
                        _ => out.push((id, vec![class])),
                    }
                }
                Ok(out)
            }

            async fn binding_audited(
                &self,
                device_id: &vellum_protocol::ids::DeviceId,
            ) -> Result<(), $crate::error::StoreError> {
                sqlx::query("DELETE FROM device_retention_unaudited WHERE device_id = $1")
                    .bind(device_id.as_bytes().as_slice())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("note an audited device binding", e))?;
                Ok(())
            }

            async fn rotate_credential(
                &self,
                device_id: &vellum_protocol::ids::DeviceId,
                current: &$crate::ports::SecretHash,
                next: &$crate::ports::SecretHash,
            ) -> Result<bool, $crate::error::StoreError> {
                let done = sqlx::query(
                    "UPDATE devices SET credential_hash = $1 WHERE device_id = $2 \
                     AND credential_hash = $3 AND revoked_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM devices WHERE credential_hash = $1)",
                )
                .bind(next.0.as_slice())
                .bind(device_id.as_bytes().as_slice())
                .bind(current.0.as_slice())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("rotate device credential", e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke(
                &self,
                device_id: &vellum_protocol::ids::DeviceId,
                at: vellum_protocol::ids::UnixMillis,
            ) -> Result<bool, $crate::error::StoreError> {
                let done = sqlx::query("UPDATE devices SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
                    .bind($crate::sql::to_i64(at.0, "revocation time")?)
                    .bind(device_id.as_bytes().as_slice())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::StoreError::backend("revoke device", e))?;
                Ok(done.rows_affected() == 1)
            }
        }

        async fn read_audit(
            rows: Vec<<$db as sqlx::Database>::Row>,
        ) -> Result<Vec<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read audit events", e);
                rows.into_iter()
                    .map(|r| {
                        let id = $crate::sql::to_u64(r.try_get(0).map_err(err)?, "leaf index")?;
                        let event = $crate::sql::audit_event(
                            r.try_get(1).map_err(err)?,
                            r.try_get(2).map_err(err)?,
                            r.try_get(3).map_err(err)?,
                            r.try_get(4).map_err(err)?,
                            r.try_get(5).map_err(err)?,
                        )?;
                        Ok((id, event))
                    })
                    .collect()
        }

        /// Audit events in log order from leaf `from`, at most `limit`, where `column`
        /// (a fixed column name) equals the given value, if one is given.
        async fn select_audit(
            pool: &sqlx::Pool<$db>,
            filter: Option<(&'static str, &str)>,
            from: u64,
            limit: i64,
        ) -> Result<Vec<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
            const COLUMNS: &str = "SELECT leaf_index, at, actor, action, subject, detail FROM audit_events WHERE";
            let from = $crate::sql::to_i64(from, "leaf index")?;
            let sql = match filter {
                None => format!("{COLUMNS} leaf_index >= $1 ORDER BY leaf_index LIMIT $2"),
                Some((column, _)) => {
                    format!("{COLUMNS} {column} = $1 AND leaf_index >= $2 ORDER BY leaf_index LIMIT $3")
                }
            };
            let mut query = sqlx::query(&sql);
            if let Some((_, value)) = filter {
                query = query.bind(value);
            }
            let rows = query
                .bind(from)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("read audit events", e))?;
            read_audit(rows).await
        }

        impl $crate::ports::AuditStore for $store {
            async fn audit_from(
                &self,
                from: u64,
                limit: u32,
            ) -> Result<Vec<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
                select_audit(&self.pool, None, from, i64::from(limit)).await
            }

            async fn audit_of(
                &self,
                subject: &str,
                from: u64,
                limit: u32,
            ) -> Result<Vec<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
                select_audit(&self.pool, Some(("subject", subject)), from, i64::from(limit)).await
            }

            async fn audit_by_action(
                &self,
                action: &str,
                from: u64,
                limit: u32,
            ) -> Result<Vec<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
                select_audit(&self.pool, Some(("action", action)), from, i64::from(limit)).await
            }

            async fn last_audit(
                &self,
                subject: &str,
                action: &str,
            ) -> Result<Option<(u64, $crate::ports::AuditEvent)>, $crate::error::StoreError> {
                let rows = sqlx::query(
                    "SELECT leaf_index, at, actor, action, subject, detail FROM audit_events \
                     WHERE subject = $1 AND action = $2 ORDER BY leaf_index DESC LIMIT 1",
                )
                .bind(subject)
                .bind(action)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| $crate::error::StoreError::backend("read audit events", e))?;
                Ok(read_audit(rows).await?.pop())
            }
        }
    };
}
pub(crate) use sql_store;
