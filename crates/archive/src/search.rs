//! Searching records by what the gateway knows of them: the fields of their signed
//! headers (custodian, device, channel, retention class, capture time, blind tokens)
//! and their receipt time. Never their content: the gateway holds none.
//!
//! The index (`record_index`, one row a record, and `record_tokens`, one row a blind
//! token) follows the log: it is derived from the stored headers, off the append path,
//! by [`follow`] in the gateway and by each search, which first indexes whatever
//! records were archived before it began ([`catch_up`]). A watermark says how far it
//! has come. Pages are keyset-paginated: a [`Cursor`] names the last row of a page,
//! and the next page starts strictly after it, so a page costs the same however deep
//! it is and rows appended meanwhile never shift it.

use std::future::Future;
use std::time::{Duration, Instant};

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
/// The most records one indexing transaction takes.
pub const INDEX_CHUNK: u32 = 1000;
/// How long a search spends indexing what was archived before it, at most.
pub const CATCH_UP_BUDGET: Duration = Duration::from_secs(2);
/// How long [`follow`] waits when it has caught up: appends gather meanwhile, so
/// that one indexing transaction takes many.
pub const FOLLOW_PAUSE: Duration = Duration::from_millis(100);

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
    /// How far the index had come when the page was read.
    pub index: IndexProgress,
}

/// How far the search index has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexProgress {
    /// The watermark: every record among the log's first `through` leaves is in the
    /// index.
    pub through: u64,
    /// One past the leaf of the newest record archived (0 when there is none).
    pub records_end: u64,
}

impl IndexProgress {
    /// Whether every record archived is in the index.
    pub fn complete(&self) -> bool {
        self.through >= self.records_end
    }
}

/// The search index.
///
/// **Freshness.** A search first indexes the records archived before it began, for up
/// to [`CATCH_UP_BUDGET`], and its page reports the watermark it read at: when the
/// page's [`IndexProgress`] is complete, every record whose receipt was issued before
/// the search is in it. **Indexing** takes records in leaf order, in transactions
/// that move the watermark only from the value they read, so indexers in any number
/// of processes never index a record twice or skip one. **Order.** Rows come strictly in the query's
/// order, ties broken by leaf index, and a page after a cursor holds only rows past
/// it.
pub trait RecordSearch: Send + Sync + 'static {
    /// One page of the records `query` selects.
    fn search(&self, query: &RecordQuery) -> impl Future<Output = Result<SearchPage, StoreError>> + Send;

    /// The watermark and the newest record.
    fn index_progress(&self) -> impl Future<Output = Result<IndexProgress, StoreError>> + Send;

    /// Indexes up to `limit` records past the watermark, in one transaction, and moves
    /// the watermark past them. Returns how many it indexed: 0 when none wait or when
    /// another indexer took them first.
    fn index_next(&self, limit: u32) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Indexes the records archived before the call, for up to `budget`; returns the
/// progress against the newest record at the call.
pub async fn catch_up<S: RecordSearch + ?Sized>(
    store: &S,
    budget: Duration,
) -> Result<IndexProgress, StoreError> {
    let deadline = Instant::now() + budget;
    let wanted = store.index_progress().await?;
    let mut progress = wanted;
    while progress.through < wanted.records_end && Instant::now() < deadline {
        store.index_next(INDEX_CHUNK).await?;
        progress = store.index_progress().await?;
    }
    Ok(IndexProgress {
        through: progress.through,
        records_end: wanted.records_end,
    })
}

/// Keeps the index following the log, for as long as the task runs: indexes what
/// waits, then pauses [`FOLLOW_PAUSE`] once it has caught up. A failure is logged and
/// tried again after a few seconds (the index is derived: nothing is lost meanwhile,
/// and searches say how far it has come).
pub async fn follow<S: RecordSearch>(store: S) {
    loop {
        match store.index_next(INDEX_CHUNK).await {
            Ok(n) if n == u64::from(INDEX_CHUNK) => {}
            Ok(_) => tokio::time::sleep(FOLLOW_PAUSE).await,
            Err(e) => {
                tracing::error!(error = %e, "the search index could not take the next records");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Implements `RecordSearch` for `$store`: an sqlx pool of `$db` in field `pool`, and a
/// `begin_indexing` method that begins an indexing transaction, with a guard held
/// through it that keeps the store's own sequencing transactions out of its way.
macro_rules! sql_search {
    (store: $store:ty, db: $db:ty $(,)?) => {
        impl $crate::search::RecordSearch for $store {
            async fn index_progress(&self) -> Result<$crate::search::IndexProgress, $crate::error::StoreError> {
                use sqlx::Row as _;
                let err = |e| $crate::error::StoreError::backend("read the search index's watermark", e);
                let row = sqlx::query(
                    "SELECT (SELECT indexed_through FROM search_watermark), (SELECT MAX(leaf_index) FROM records)",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
                let through: i64 = row.try_get(0).map_err(err)?;
                let newest: Option<i64> = row.try_get(1).map_err(err)?;
                Ok($crate::search::IndexProgress {
                    through: $crate::sql::to_u64(through, "watermark")?,
                    records_end: newest.map_or(Ok(0), |n| $crate::sql::to_u64(n, "leaf index").map(|n| n + 1))?,
                })
            }

            async fn index_next(&self, limit: u32) -> Result<u64, $crate::error::StoreError> {
                use sqlx::{QueryBuilder, Row as _};
                let err = |e| $crate::error::StoreError::backend("index records", e);
                let through: i64 = sqlx::query_scalar("SELECT indexed_through FROM search_watermark")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(err)?;
                // Records are immutable and committed in leaf order: these rows, read
                // before any lock is taken, are the next ones whatever else commits.
                let rows = sqlx::query(
                    "SELECT leaf_index, header, received_at FROM records WHERE leaf_index >= $1 \
                     ORDER BY leaf_index LIMIT $2",
                )
                .bind(through)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
                let Some(last) = rows.last() else {
                    return Ok(0);
                };
                let next: i64 = last.try_get::<i64, _>(0).map_err(err)? + 1;
                let mut parsed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let leaf: i64 = row.try_get(0).map_err(err)?;
                    let header: &[u8] = row.try_get(1).map_err(err)?;
                    let received: i64 = row.try_get(2).map_err(err)?;
                    let header = vellum_protocol::header::UnverifiedHeader::parse(header).map_err(|e| {
                        $crate::error::StoreError::Integrity(format!("stored header of leaf {leaf}: {e}"))
                    })?;
                    parsed.push((leaf, received, header));
                }
                let mut columns = Vec::with_capacity(parsed.len());
                for (leaf, received, header) in &parsed {
                    let fields = header.archived_fields();
                    columns.push((*leaf, *received, $crate::sql::IndexColumns::of(fields)?, &fields.tokens));
                }
                let (_turn, mut tx) = self.begin_indexing().await?;
                // Moving the watermark first claims the records: another indexer that
                // read the same watermark finds it moved and takes nothing.
                let moved = sqlx::query("UPDATE search_watermark SET indexed_through = $1 WHERE indexed_through = $2")
                    .bind(next)
                    .bind(through)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?
                    .rows_affected();
                if moved != 1 {
                    return Ok(0);
                }
                for chunk in columns.chunks($crate::sql::ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO record_index (leaf_index, custodian, device_id, channel, retention, \
                         epoch, captured_at, received_at, body_len) ",
                    );
                    q.push_values(chunk, |mut b, (leaf, received, f, _)| {
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
                    // Rows already present (a watermark set back to rebuild) stay.
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *tx).await.map_err(err)?;
                }
                let tokens: Vec<(&[u8], i64, i64, &str)> = columns
                    .iter()
                    .flat_map(|(leaf, _, f, tokens)| {
                        tokens.iter().map(move |t| (t.0.as_slice(), f.captured_at, *leaf, f.custodian))
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
                    q.build().execute(&mut *tx).await.map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok(rows.len() as u64)
            }

            async fn search(
                &self,
                query: &$crate::search::RecordQuery,
            ) -> Result<$crate::search::SearchPage, $crate::error::StoreError> {
                use sqlx::{QueryBuilder, Row as _};
                use $crate::search::SortKey;
                use $crate::sql::to_i64;
                let index = $crate::search::catch_up(self, $crate::search::CATCH_UP_BUDGET).await?;
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
                    index,
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
