-- The search index (SQLite): the fields of each record's signed header that auditors
-- search on, written by the sequencer in the transaction that appends the record.
-- Derived data: every column is read from records.header, which stays the authority.
-- Indexes on record_index end in its rowid (the leaf index), which orders ties and
-- carries the keyset cursor.
CREATE TABLE record_index (
    leaf_index  INTEGER NOT NULL PRIMARY KEY,
    custodian   TEXT    NOT NULL,
    device_id   BLOB    NOT NULL,
    channel     TEXT    NOT NULL,
    retention   TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    captured_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body_len    INTEGER NOT NULL
);
CREATE INDEX record_index_captured ON record_index (captured_at);
CREATE INDEX record_index_custodian ON record_index (custodian, captured_at);
CREATE INDEX record_index_channel ON record_index (channel, captured_at);
-- A custodian's records of one channel, newest first, without scanning the channel.
CREATE INDEX record_index_custodian_channel ON record_index (custodian, channel, captured_at);
CREATE INDEX record_index_device ON record_index (device_id, captured_at);

-- One row per blind token of a record, ordered for the newest-first scan of one token.
CREATE TABLE record_tokens (
    token       BLOB    NOT NULL,
    captured_at INTEGER NOT NULL,
    leaf_index  INTEGER NOT NULL,
    custodian   TEXT    NOT NULL,
    PRIMARY KEY (token, captured_at, leaf_index)
) WITHOUT ROWID;
-- One custodian's records with one participant, newest first: the usual scope of a
-- request, answered from this index alone.
CREATE INDEX record_tokens_custodian ON record_tokens (custodian, token, captured_at);

-- A case's history is the audit events whose subject is the case; cases are listed
-- by their opening events.
CREATE INDEX audit_events_subject ON audit_events (subject, leaf_index);
CREATE INDEX audit_events_action ON audit_events (action, leaf_index);

-- Records archived before this index existed are indexed once, when the store opens
-- (rows written since are indexed as they are appended); this row says whether that
-- is done. Stop gateways of older versions before upgrading: what they append after
-- the backfill is not indexed.
CREATE TABLE search_backfill (done INTEGER NOT NULL);
INSERT INTO search_backfill (done) VALUES (0);
