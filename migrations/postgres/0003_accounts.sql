-- People's accounts and their sessions (PostgreSQL). Passwords are Argon2id PHC
-- strings; refresh tokens and recovery codes are stored only as SHA-256 hashes.
-- Accounts are disabled, never deleted, so the audit trail keeps naming who did what.

CREATE TABLE accounts (
    account_id           BYTEA   NOT NULL PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    role                 TEXT    NOT NULL CHECK (role IN ('admin', 'auditor', 'approver')),
    password_phc         TEXT    NOT NULL CHECK (password_phc LIKE '$argon2id$%'),
    must_change_password BOOLEAN NOT NULL,
    created_at           BIGINT  NOT NULL,
    disabled_at          BIGINT,
    -- Consecutive failed logins, and until when the account is locked because of them.
    failed_logins        BIGINT  NOT NULL DEFAULT 0,
    locked_until         BIGINT,
    -- The TOTP secret (RFC 6238), enabled once a first code confirmed it, and the last
    -- time step accepted (a code is good once).
    totp_secret          BYTEA,
    totp_enabled         BOOLEAN NOT NULL DEFAULT FALSE,
    totp_last_step       BIGINT,
    -- For an account made by single sign-on: the provider's issuer and subject
    -- ("ISSUER SUB"), the only identity that may sign in to it that way.
    external_id          TEXT UNIQUE
);

CREATE FUNCTION vellum_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are never deleted';
END;
$$;
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
FOR EACH ROW EXECUTE FUNCTION vellum_account_guard();

-- One login: its refresh tokens form a family; presenting a rotated token again
-- ends the family.
CREATE TABLE session_families (
    family_id  BYTEA  NOT NULL PRIMARY KEY,
    account_id BYTEA  NOT NULL REFERENCES accounts (account_id),
    created_at BIGINT NOT NULL,
    -- The session's absolute end: no refresh token outlives it, however active.
    ends_at    BIGINT  NOT NULL,
    -- The identity provider vouched for a second factor at the sign-in (amr).
    idp_second_factor BOOLEAN NOT NULL DEFAULT FALSE,
    ended_at   BIGINT,
    end_reason TEXT
);

CREATE INDEX session_families_account ON session_families (account_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA  NOT NULL PRIMARY KEY,
    family_id  BYTEA  NOT NULL REFERENCES session_families (family_id),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE recovery_codes (
    account_id BYTEA  NOT NULL REFERENCES accounts (account_id),
    code_hash  BYTEA  NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (account_id, code_hash)
);
