-- Records, the transparency log and the audit trail (PostgreSQL).
-- Released migrations are never edited: add a new file instead.

-- Only what the append path must make durable: every other field of a record (custodian,
-- channel, times, epoch, retention, body digest, blind tokens) is inside the signed header.
CREATE TABLE records (
    record_id   BYTEA  NOT NULL PRIMARY KEY,
    leaf_index  BIGINT NOT NULL,
    header      BYTEA  NOT NULL,
    received_at BIGINT NOT NULL,
    blob        TEXT   NOT NULL
);

CREATE UNIQUE INDEX records_leaf_index ON records (leaf_index);
CREATE FUNCTION vellum_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never rewritten', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
    FOR EACH ROW EXECUTE FUNCTION vellum_no_update();

-- One row per leaf: the entry and the tree nodes its append completed
-- (level 0 first, 32 bytes each).
CREATE TABLE log_leaves (
    idx    BIGINT NOT NULL PRIMARY KEY,
    entry  BYTEA  NOT NULL,
    hashes BYTEA  NOT NULL
);

CREATE TABLE checkpoints (
    size BIGINT NOT NULL PRIMARY KEY,
    note TEXT   NOT NULL
);

-- The audit trail. Each event is also a leaf of the log (kind 0x02, committing to the
-- event's SHA-256), written in the same transaction; its id is that leaf's index.
CREATE TABLE audit_events (
    leaf_index BIGINT NOT NULL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    detail     TEXT   NOT NULL
);

-- Leaves are consecutive from 0: a second sequencer, or one working from stale state,
-- cannot leave a gap (and the primary key stops it from overwriting).
CREATE FUNCTION vellum_consecutive_leaf() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idx <> (SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves) THEN
        RAISE EXCEPTION 'log_leaves must be consecutive';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER log_leaves_consecutive BEFORE INSERT ON log_leaves
    FOR EACH ROW EXECUTE FUNCTION vellum_consecutive_leaf();

-- The log and the audit trail are append-only, whatever the code above them does.
CREATE FUNCTION vellum_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER log_leaves_append_only BEFORE UPDATE OR DELETE ON log_leaves
    FOR EACH ROW EXECUTE FUNCTION vellum_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION vellum_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION vellum_append_only();
