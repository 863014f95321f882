-- The keyring lifecycle (SQLite): every keyring statement the gateway published, one
-- per epoch, and the wrapped copies of each epoch identity (age files sealed to one
-- auditor or to the escrow recipient, which the gateway cannot open). Auditors'
-- public recipients, and optionally their identity wrapped under their passphrase.

CREATE TABLE keyrings (
    epoch        INTEGER NOT NULL PRIMARY KEY,
    note         TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    published_by TEXT    NOT NULL
);

-- Epochs follow each other: after the first, each is the one after the newest.
CREATE TRIGGER keyrings_consecutive BEFORE INSERT ON keyrings
WHEN EXISTS (SELECT 1 FROM keyrings) AND NEW.epoch != (SELECT MAX(epoch) + 1 FROM keyrings)
BEGIN SELECT RAISE(ABORT, 'keyrings must be consecutive'); END;

-- holder: an account id in hex, or 'escrow'.
CREATE TABLE epoch_wraps (
    epoch    INTEGER NOT NULL REFERENCES keyrings (epoch),
    holder   TEXT    NOT NULL,
    wrapped  BLOB    NOT NULL,
    added_at INTEGER NOT NULL,
    added_by TEXT    NOT NULL,
    PRIMARY KEY (epoch, holder)
) WITHOUT ROWID;

CREATE INDEX epoch_wraps_holder ON epoch_wraps (holder);

CREATE TABLE auditor_keys (
    account_id BLOB    NOT NULL PRIMARY KEY REFERENCES accounts (account_id),
    -- The auditor's personal age recipient (public): what others wrap epochs to.
    recipient  TEXT    NOT NULL,
    -- Optional: the auditor's identity sealed with age's scrypt recipient under their
    -- key passphrase, for the portal to open in the browser. Never opened here.
    identity   BLOB,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER keyrings_append_only_u BEFORE UPDATE ON keyrings BEGIN SELECT RAISE(ABORT, 'keyrings is append-only'); END;
CREATE TRIGGER keyrings_append_only_d BEFORE DELETE ON keyrings BEGIN SELECT RAISE(ABORT, 'keyrings is append-only'); END;
CREATE TRIGGER epoch_wraps_append_only_u BEFORE UPDATE ON epoch_wraps BEGIN SELECT RAISE(ABORT, 'epoch_wraps is append-only'); END;
CREATE TRIGGER epoch_wraps_append_only_d BEFORE DELETE ON epoch_wraps BEGIN SELECT RAISE(ABORT, 'epoch_wraps is append-only'); END;
