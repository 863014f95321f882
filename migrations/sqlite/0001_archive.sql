-- Records, the transparency log and the audit trail (SQLite).
-- Released migrations are never edited: add a new file instead.

-- Only what the append path must make durable: every other field of a record (custodian,
-- channel, times, epoch, retention, body digest, blind tokens) is inside the signed header.
-- Keyed by leaf index, so each batch appends at the right edge of the table; the record
-- id (the idempotency key) has its own unique index.
CREATE TABLE records (
    leaf_index  INTEGER NOT NULL PRIMARY KEY,
    record_id   BLOB    NOT NULL UNIQUE,
    header      BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    blob        TEXT    NOT NULL
);
CREATE TRIGGER records_no_update BEFORE UPDATE ON records BEGIN SELECT RAISE(ABORT, 'records are never rewritten'); END;

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

-- The audit trail. Each event is also a leaf of the log (kind 0x02, committing to the
-- event's SHA-256), written in the same transaction; its id is that leaf's index.
CREATE TABLE audit_events (
    leaf_index INTEGER NOT NULL PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    detail     TEXT   NOT NULL
);

-- Leaves are consecutive from 0: a second sequencer, or one working from stale state,
-- cannot leave a gap (and the primary key stops it from overwriting).
CREATE TRIGGER log_leaves_consecutive BEFORE INSERT ON log_leaves
WHEN NEW.idx != (SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves)
BEGIN SELECT RAISE(ABORT, 'log_leaves must be consecutive'); END;

-- The log and the audit trail are append-only, whatever the code above them does.
CREATE TRIGGER log_leaves_append_only_u BEFORE UPDATE ON log_leaves BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;
CREATE TRIGGER log_leaves_append_only_d BEFORE DELETE ON log_leaves BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;
CREATE TRIGGER checkpoints_append_only_u BEFORE UPDATE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER checkpoints_append_only_d BEFORE DELETE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER audit_append_only_u BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_append_only_d BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
