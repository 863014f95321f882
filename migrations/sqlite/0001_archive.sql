-- Records, the transparency log and the audit trail (SQLite).
-- Released migrations are never edited: add a new file instead.

CREATE TABLE records (
    record_id     BLOB    NOT NULL PRIMARY KEY,
    leaf_index    INTEGER NOT NULL,
    header        BLOB    NOT NULL,
    header_sha256 BLOB    NOT NULL,
    device_id     BLOB    NOT NULL,
    custodian     TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    captured_at   INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    retention     TEXT    NOT NULL,
    body_sha256   BLOB    NOT NULL,
    body_len      INTEGER NOT NULL,
    blob          TEXT    NOT NULL
) WITHOUT ROWID;

-- One row per leaf: the entry and the tree nodes its append completed
-- (level 0 first, 32 bytes each).
CREATE TABLE log_leaves (
    idx    INTEGER NOT NULL PRIMARY KEY,
    entry  BLOB    NOT NULL,
    hashes BLOB    NOT NULL
);

CREATE TABLE checkpoints (
    size INTEGER NOT NULL PRIMARY KEY,
    note TEXT    NOT NULL
);

CREATE TABLE audit_events (
    id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);

-- The log and the audit trail are append-only, whatever the code above them does.
CREATE TRIGGER log_leaves_append_only_u BEFORE UPDATE ON log_leaves BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;
CREATE TRIGGER log_leaves_append_only_d BEFORE DELETE ON log_leaves BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;
CREATE TRIGGER checkpoints_append_only_u BEFORE UPDATE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER checkpoints_append_only_d BEFORE DELETE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER audit_append_only_u BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_append_only_d BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
