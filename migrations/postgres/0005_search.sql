-- The search index (PostgreSQL): the fields of each record's signed header that
-- auditors search on, written after the append by the indexer that follows the log.
-- Derived data: every column is read from records.header, which stays the
-- authority. Each index ends in the leaf index, which orders ties and carries the
-- keyset cursor.
CREATE TABLE record_index (
    leaf_index  BIGINT NOT NULL PRIMARY KEY,
    custodian   TEXT   NOT NULL,
    device_id   BYTEA  NOT NULL,
    channel     TEXT   NOT NULL,
    retention   TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    captured_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    body_len    BIGINT NOT NULL
);
CREATE INDEX record_index_captured ON record_index (captured_at, leaf_index);
CREATE INDEX record_index_custodian ON record_index (custodian, captured_at, leaf_index);
CREATE INDEX record_index_channel ON record_index (channel, captured_at, leaf_index);
-- A custodian's records of one channel, newest first, without scanning the channel.
CREATE INDEX record_index_custodian_channel ON record_index (custodian, channel, captured_at, leaf_index);
CREATE INDEX record_index_device ON record_index (device_id, captured_at, leaf_index);

-- One row per blind token of a record, ordered for the newest-first scan of one token.
CREATE TABLE record_tokens (
    token       BYTEA  NOT NULL,
    captured_at BIGINT NOT NULL,
    leaf_index  BIGINT NOT NULL,
    custodian   TEXT   NOT NULL,
    PRIMARY KEY (token, captured_at, leaf_index)
);
-- One custodian's records with one participant, newest first: the usual scope of a
-- request, answered from this index alone.
CREATE INDEX record_tokens_custodian ON record_tokens (custodian, token, captured_at, leaf_index);

-- A case's history is the audit events whose subject is the case; cases are listed
-- by their opening events.
CREATE INDEX audit_events_subject ON audit_events (subject, leaf_index);
CREATE INDEX audit_events_action ON audit_events (action, leaf_index);

-- How far the index has come: every record among the log's first indexed_through
-- leaves has its rows. Indexers (the gateway's follower, and each search for the
-- records archived before it) read records past it in leaf order and move it in the
-- transaction that writes their rows, only from the value they read. Setting it back
-- to 0 rebuilds the index (rows present are kept).
CREATE TABLE search_watermark (indexed_through BIGINT NOT NULL);
INSERT INTO search_watermark (indexed_through) VALUES (0);
