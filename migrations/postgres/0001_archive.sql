-- Records, the transparency log and the audit trail (PostgreSQL).
-- Released migrations are never edited: add a new file instead.

CREATE TABLE records (
    record_id     BYTEA  NOT NULL PRIMARY KEY,
    leaf_index    BIGINT NOT NULL,
    header        BYTEA  NOT NULL,
    header_sha256 BYTEA  NOT NULL,
    device_id     BYTEA  NOT NULL,
    custodian     TEXT   NOT NULL,
    channel       TEXT   NOT NULL,
    captured_at   BIGINT NOT NULL,
    received_at   BIGINT NOT NULL,
    epoch         BIGINT NOT NULL,
    retention     TEXT   NOT NULL,
    body_sha256   BYTEA  NOT NULL,
    body_len      BIGINT NOT NULL,
    blob          TEXT   NOT NULL
);

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

CREATE TABLE audit_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);

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
