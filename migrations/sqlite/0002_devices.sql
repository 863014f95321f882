-- Capture devices and their one-time enrollment tokens (SQLite).
-- Bearer secrets (enrollment tokens, device credentials) are 256-bit random values
-- stored only as their SHA-256.

CREATE TABLE enrollment_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY,
    custodian  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    device_id  BLOB
) WITHOUT ROWID;

CREATE TABLE devices (
    device_id       BLOB    NOT NULL PRIMARY KEY,
    public_key      BLOB    NOT NULL,
    credential_hash BLOB    NOT NULL UNIQUE,
    custodian       TEXT    NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    revoked_at      INTEGER
) WITHOUT ROWID;

-- A device is never deleted, and a revoked one stays revoked.
CREATE TRIGGER devices_no_delete BEFORE DELETE ON devices BEGIN SELECT RAISE(ABORT, 'devices are never deleted'); END;
CREATE TRIGGER devices_stay_revoked BEFORE UPDATE ON devices
WHEN OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS NULL OR NEW.credential_hash != OLD.credential_hash)
BEGIN SELECT RAISE(ABORT, 'a revoked device stays revoked'); END;
