//! Searching records by what the gateway knows of them: the fields of their signed
//! headers (custodian, device, channel, retention class, capture time, blind tokens)
//! and their receipt time. Never their content: the gateway holds none.
//!
//! The sequencer writes one `record_index` row and one `record_tokens` row per blind
//! token in the transaction that appends a record, so a record is searchable as soon
//! as its receipt exists. Pages are keyset-paginated: a [`Cursor`] names the last row
//! of a page, and the next page starts strictly after it, so a page costs the same
//! however deep it is and rows appended meanwhile never shift it.

use std::future::Future;

use vellum_protocol::blind::BlindToken;
use vellum_protocol::header::HeaderFields;
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};

use crate::error::StoreError;

/// The most rows one page holds.
pub const MAX_PAGE: u32 = 1000;
/// Counting stops here: a total above it is reported as "more than".
pub const COUNT_CAP: u64 = 10_000;
/// The largest time or cursor value (what the databases' signed 64-bit integers hold).
pub const MAX_TIME: u64 = i64::MAX as u64;
/// The most values one filter field takes.
pub const MAX_FILTER_VALUES: usize = 256;

/// A half-open range of Unix milliseconds, `[from, to)`; either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// The first millisecond included.
    pub from: Option<UnixMillis>,
    /// The first millisecond excluded.
    pub to: Option<UnixMillis>,
}

impl TimeRange {
    /// Whether `t` lies in the range.
    pub fn contains(&self, t: UnixMillis) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }
}

/// What a search selects. Within one field any value matches (an empty field matches
/// everything); across fields every field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Records of these custodians.
    pub custodians: Vec<Custodian>,
    /// Records captured by these devices.
    pub devices: Vec<DeviceId>,
    /// Records of these channels.
    pub channels: Vec<Channel>,
    /// Records of these retention classes.
    pub retention: Vec<RetentionClass>,
    /// Records whose header carries at least one of these blind tokens.
    pub tokens: Vec<BlindToken>,
    /// The capture time the header claims.
    pub captured: TimeRange,
    /// The gateway's receipt time.
    pub received: TimeRange,
}

impl RecordFilter {
    /// Whether a record with these header fields, received at `received_at`, matches.
    /// The same rule the database applies, for checks made on one record.
    pub fn matches(&self, fields: &HeaderFields, received_at: UnixMillis) -> bool {
        fn any<T: PartialEq>(wanted: &[T], value: &T) -> bool {
            wanted.is_empty() || wanted.contains(value)
        }
        any(&self.custodians, &fields.custodian)
            && any(&self.devices, &fields.device_id)
            && any(&self.channels, &fields.channel)
            && any(&self.retention, &fields.retention)
            && (self.tokens.is_empty() || fields.tokens.iter().any(|t| self.tokens.contains(t)))
            && self.captured.contains(fields.captured_at)
            && self.received.contains(received_at)
    }

    /// Checks the filter's size.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("custodians", self.custodians.len()),
            ("devices", self.devices.len()),
            ("channels", self.channels.len()),
            ("retention", self.retention.len()),
            ("tokens", self.tokens.len()),
        ];
        for (what, n) in sizes {
            if n > MAX_FILTER_VALUES {
                return Err(format!("{what}: at most {MAX_FILTER_VALUES} values"));
            }
        }
        for (what, range) in [("captured", self.captured), ("received", self.received)] {
            if [range.from, range.to]
                .into_iter()
                .flatten()
                .any(|t| t.0 > MAX_TIME)
            {
                return Err(format!("{what}: times are Unix milliseconds up to {MAX_TIME}"));
            }
            if let (Some(from), Some(to)) = (range.from, range.to)
                && from > to
            {
                return Err(format!("{what}: the range ends before it starts"));
            }
        }
        Ok(())
    }
}

/// The order of results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// By the capture time the header claims, ties by leaf index.
    #[default]
    Captured,
    /// By leaf index: the order the log received them.
    Logged,
}

/// A search: a filter, an order and a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordQuery {
    /// What to select.
    pub filter: RecordFilter,
    /// The order.
    pub sort: SortKey,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Start after this row (from the previous page).
    pub after: Option<Cursor>,
    /// Rows per page, 1 to [`MAX_PAGE`].
    pub limit: u32,
    /// Count the matches too (up to [`COUNT_CAP`]).
    pub count: bool,
}

/// A position in a result order: the sort key and leaf index of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The row's capture time (for [`SortKey::Captured`]) or leaf index.
    pub key: u64,
    /// The row's leaf index.
    pub leaf: u64,
}

impl Cursor {
    /// The text form: `KEY.LEAF` in decimal.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.key, self.leaf)
    }

    /// Reads [`Cursor::encode`]'s form.
    pub fn decode(text: &str) -> Option<Self> {
        let (key, leaf) = text.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(key) || !digits(leaf) {
            return None;
        }
        let (key, leaf) = (key.parse().ok()?, leaf.parse().ok()?);
        (key <= MAX_TIME && leaf <= MAX_TIME).then_some(Self { key, leaf })
    }
}

/// What a search tells of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    /// The record id.
    pub record_id: RecordId,
    /// Its leaf in the log.
    pub leaf_index: u64,
    /// Whose record it is.
    pub custodian: Custodian,
    /// The device that captured it.
    pub device_id: DeviceId,
    /// The channel.
    pub channel: Channel,
    /// The retention class.
    pub retention: RetentionClass,
    /// The keyring epoch its body is sealed to.
    pub epoch: Epoch,
    /// The capture time the header claims.
    pub captured_at: UnixMillis,
    /// The gateway's receipt time.
    pub received_at: UnixMillis,
    /// The sealed body's length.
    pub body_len: u64,
}

impl RecordSummary {
    /// This row's position in `sort`.
    pub fn cursor(&self, sort: SortKey) -> Cursor {
        let key = match sort {
            SortKey::Captured => self.captured_at.0,
            SortKey::Logged => self.leaf_index,
        };
        Cursor {
            key,
            leaf: self.leaf_index,
        }
    }
}

/// How many records match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Total {
    /// The count, at most [`COUNT_CAP`].
    pub count: u64,
    /// Whether more than [`COUNT_CAP`] match.
    pub more: bool,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPage {
    /// The rows, in the query's order.
    pub records: Vec<RecordSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The number of matches, when counted.
    pub total: Option<Total>,
}

/// The search index.
///
/// **Freshness.** A record is in the index once its append committed: the index is
/// written in the same transaction. **Order.** Rows come strictly in the query's
/// order, ties broken by leaf index, and a page after a cursor holds only rows past
/// it.
pub trait RecordSearch: Send + Sync + 'static {
    /// One page of the records `query` selects.
    fn search(&self, query: &RecordQuery) -> impl Future<Output = Result<SearchPage, StoreError>> + Send;
}

/// Implements `RecordSearch` for `$store` (an sqlx pool of `$db` in field `pool`).
macro_rules! sql_search {
    (store: $store:ty, db: $db:ty $(,)?) => {
        impl $crate::search::RecordSearch for $store {
            async fn search(
                &self,
                query: &$crate::search::RecordQuery,
            ) -> Result<$crate::search::SearchPage, $crate::error::StoreError> {
                use sqlx::{QueryBuilder, Row as _};
                use $crate::search::SortKey;
                use $crate::sql::to_i64;
                let err = |e| $crate::error::StoreError::backend("search records", e);
                let filter = &query.filter;
                let by_token = !filter.tokens.is_empty();
                // With tokens the scan runs over record_tokens, whose key orders each
                // token's rows by capture time, and whose custodian column (indexed
                // with the token) answers a custodian's records with a participant
                // without visiting the participant's other records.
                let (time, leaf) = if by_token {
                    ("t.captured_at", "t.leaf_index")
                } else {
                    ("i.captured_at", "i.leaf_index")
                };
                let push_where =
                    |q: &mut QueryBuilder<'_, $db>, cursor: bool| -> Result<(), $crate::error::StoreError> {
                        q.push(" WHERE 1 = 1");
                        if by_token {
                            q.push(" AND t.token IN (");
                            let mut list = q.separated(", ");
                            for token in &filter.tokens {
                                list.push_bind(token.0.to_vec());
                            }
                            q.push(")");
                        }
                        macro_rules! any_of {
                            ($column:literal, $values:expr, $bind:expr) => {
                                if !$values.is_empty() {
                                    q.push(concat!(" AND ", $column, " IN ("));
                                    let mut list = q.separated(", ");
                                    for v in $values {
                                        list.push_bind($bind(v));
                                    }
                                    q.push(")");
                                }
                            };
                        }
                        if by_token {
                            any_of!(
                                "t.custodian",
                                &filter.custodians,
                                |v: &vellum_protocol::ids::Custodian| v.as_str().to_owned()
                            );
                        } else {
                            any_of!(
                                "i.custodian",
                                &filter.custodians,
                                |v: &vellum_protocol::ids::Custodian| v.as_str().to_owned()
                            );
                        }
                        any_of!(
                            "i.device_id",
                            &filter.devices,
                            |v: &vellum_protocol::ids::DeviceId| v.as_bytes().to_vec()
                        );
                        any_of!(
                            "i.channel",
                            &filter.channels,
                            |v: &vellum_protocol::ids::Channel| v.as_str().to_owned()
                        );
                        any_of!(
                            "i.retention",
                            &filter.retention,
                            |v: &vellum_protocol::ids::RetentionClass| v.as_str().to_owned()
                        );
                        let ranges = [(time, filter.captured), ("i.received_at", filter.received)];
                        for (column, range) in ranges {
                            if let Some(from) = range.from {
                                q.push(format!(" AND {column} >= "))
                                    .push_bind(to_i64(from.0, "time")?);
                            }
                            if let Some(to) = range.to {
                                q.push(format!(" AND {column} < "))
                                    .push_bind(to_i64(to.0, "time")?);
                            }
                        }
                        if let (true, Some(after)) = (cursor, query.after) {
                            let op = if query.ascending { ">" } else { "<" };
                            match query.sort {
                                SortKey::Captured => {
                                    q.push(format!(" AND ({time}, {leaf}) {op} ("))
                                        .push_bind(to_i64(after.key, "cursor")?)
                                        .push(", ")
                                        .push_bind(to_i64(after.leaf, "cursor")?)
                                        .push(")");
                                }
                                SortKey::Logged => {
                                    q.push(format!(" AND {leaf} {op} "))
                                        .push_bind(to_i64(after.leaf, "cursor")?);
                                }
                            }
                        }
                        Ok(())
                    };
                let from = if by_token {
                    " FROM record_tokens t JOIN record_index i ON i.leaf_index = t.leaf_index"
                } else {
                    " FROM record_index i"
                };
                // A record carrying two of the tokens is met twice. (The sort columns
                // are selected too: PostgreSQL orders DISTINCT rows only by those.)
                let distinct = if filter.tokens.len() > 1 {
                    "DISTINCT "
                } else {
                    ""
                };

                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {distinct}r.record_id, i.leaf_index, i.custodian, i.device_id, i.channel, \
                     i.retention, i.epoch, i.captured_at, i.received_at, i.body_len, {time}, {leaf}"
                ));
                q.push(from)
                    .push(" JOIN records r ON r.leaf_index = i.leaf_index");
                push_where(&mut q, true)?;
                let dir = if query.ascending { "ASC" } else { "DESC" };
                match query.sort {
                    SortKey::Captured => q.push(format!(" ORDER BY {time} {dir}, {leaf} {dir}")),
                    SortKey::Logged => q.push(format!(" ORDER BY {leaf} {dir}")),
                };
                let limit = query.limit.clamp(1, $crate::search::MAX_PAGE);
                // One row more than the page tells whether another page follows.
                q.push(" LIMIT ").push_bind(i64::from(limit) + 1);
                let rows = q.build().fetch_all(&self.pool).await.map_err(err)?;
                let mut records = Vec::with_capacity(rows.len());
                for row in &rows {
                    records.push($crate::search::summary_from(
                        row.try_get(0).map_err(err)?,
                        row.try_get(1).map_err(err)?,
                        row.try_get(2).map_err(err)?,
                        row.try_get(3).map_err(err)?,
                        row.try_get(4).map_err(err)?,
                        row.try_get(5).map_err(err)?,
                        [
                            row.try_get(6).map_err(err)?,
                            row.try_get(7).map_err(err)?,
                            row.try_get(8).map_err(err)?,
                            row.try_get(9).map_err(err)?,
                        ],
                    )?);
                }
                let next = if records.len() > limit as usize {
                    records.truncate(limit as usize);
                    records.last().map(|r| r.cursor(query.sort))
                } else {
                    None
                };
                let total = if query.count {
                    let mut q = QueryBuilder::<$db>::new(format!(
                        "SELECT COUNT(*) FROM (SELECT {distinct}i.leaf_index"
                    ));
                    q.push(from);
                    push_where(&mut q, false)?;
                    q.push(" LIMIT ")
                        .push_bind(to_i64($crate::search::COUNT_CAP + 1, "count")?);
                    q.push(") AS matches");
                    let n: i64 = q
                        .build()
                        .fetch_one(&self.pool)
                        .await
                        .map_err(err)?
                        .try_get(0)
                        .map_err(err)?;
                    let n = $crate::sql::to_u64(n, "count")?;
                    Some($crate::search::Total {
                        count: n.min($crate::search::COUNT_CAP),
                        more: n > $crate::search::COUNT_CAP,
                    })
                } else {
                    None
                };
                Ok($crate::search::SearchPage {
                    records,
                    next,
                    total,
                })
            }
        }
    };
}
pub(crate) use sql_search;

/// A summary from its columns: record id, leaf index, custodian, device id, channel,
/// retention, then epoch, capture time, receipt time and body length.
pub(crate) fn summary_from(
    record_id: Vec<u8>,
    leaf_index: i64,
    custodian: String,
    device_id: Vec<u8>,
    channel: String,
    retention: String,
    numbers: [i64; 4],
) -> Result<RecordSummary, StoreError> {
    use crate::sql::{to_array, to_u64};
    let bad =
        |what: &str, e: vellum_protocol::ids::IdError| StoreError::Integrity(format!("indexed {what}: {e}"));
    let [epoch, captured_at, received_at, body_len] = numbers;
    Ok(RecordSummary {
        record_id: RecordId::from_bytes(to_array(record_id, "record id")?)
            .map_err(|e| bad("record id", e))?,
        leaf_index: to_u64(leaf_index, "leaf index")?,
        custodian: Custodian::new(&custodian).map_err(|e| bad("custodian", e))?,
        device_id: DeviceId::from_bytes(to_array(device_id, "device id")?)
            .map_err(|e| bad("device id", e))?,
        channel: Channel::new(&channel).map_err(|e| bad("channel", e))?,
        retention: RetentionClass::new(&retention).map_err(|e| bad("retention class", e))?,
        epoch: Epoch(to_u64(epoch, "epoch")?),
        captured_at: UnixMillis(to_u64(captured_at, "capture time")?),
        received_at: UnixMillis(to_u64(received_at, "receipt time")?),
        body_len: to_u64(body_len, "body length")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_other_text() {
        let c = Cursor {
            key: 1_700_000_000_000,
            leaf: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "-1.2",
            "1.x",
            "99999999999999999999.1",
            "+1.2",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
