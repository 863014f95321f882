-- People's accounts (SQLite). Passwords are Argon2id PHC strings; nothing else about
-- a password is stored. Accounts are disabled, never deleted, so the audit trail
-- keeps naming who did what.

CREATE TABLE accounts (
    account_id           BLOB    NOT NULL PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    role                 TEXT    NOT NULL CHECK (role IN ('admin', 'auditor', 'approver')),
    password_phc         TEXT    NOT NULL CHECK (password_phc LIKE '$argon2id$%'),
    must_change_password INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    disabled_at          INTEGER
) WITHOUT ROWID;

CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;
