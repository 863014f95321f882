-- People's accounts and their sessions (SQLite). Passwords are Argon2id PHC strings;
-- refresh tokens and recovery codes are stored only as SHA-256 hashes. Accounts are
-- disabled, never deleted, so the audit trail keeps naming who did what.

CREATE TABLE accounts (
    account_id           BLOB    NOT NULL PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    role                 TEXT    NOT NULL CHECK (role IN ('admin', 'auditor', 'approver')),
    password_phc         TEXT    NOT NULL CHECK (password_phc LIKE '$argon2id$%'),
    must_change_password INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    disabled_at          INTEGER,
    -- Consecutive failed logins, and until when the account is locked because of them.
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    locked_until         INTEGER,
    -- The TOTP secret (RFC 6238), enabled once a first code confirmed it, and the last
    -- time step accepted (a code is good once).
    totp_secret          BLOB,
    totp_enabled         INTEGER NOT NULL DEFAULT 0,
    totp_last_step       INTEGER,
    -- For an account made by single sign-on: the provider's issuer and subject
    -- ("ISSUER SUB"), the only identity that may sign in to it that way.
    external_id          TEXT UNIQUE
) WITHOUT ROWID;

CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;

-- One login: its refresh tokens form a family; presenting a rotated token again
-- ends the family.
CREATE TABLE session_families (
    family_id  BLOB    NOT NULL PRIMARY KEY,
    account_id BLOB    NOT NULL REFERENCES accounts (account_id),
    created_at INTEGER NOT NULL,
    -- The session's absolute end: no refresh token outlives it, however active.
    ends_at    INTEGER NOT NULL,
    -- The identity provider vouched for a second factor at the sign-in (amr).
    idp_second_factor INTEGER NOT NULL DEFAULT 0,
    ended_at   INTEGER,
    end_reason TEXT
) WITHOUT ROWID;

CREATE INDEX session_families_account ON session_families (account_id);

CREATE TABLE refresh_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY,
    family_id  BLOB    NOT NULL REFERENCES session_families (family_id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;

CREATE TABLE recovery_codes (
    account_id BLOB    NOT NULL REFERENCES accounts (account_id),
    code_hash  BLOB    NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (account_id, code_hash)
) WITHOUT ROWID;
