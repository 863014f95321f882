-- People's accounts (PostgreSQL). Passwords are Argon2id PHC strings; nothing else
-- about a password is stored. Accounts are disabled, never deleted, so the audit
-- trail keeps naming who did what.

CREATE TABLE accounts (
    account_id           BYTEA   NOT NULL PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    role                 TEXT    NOT NULL CHECK (role IN ('admin', 'auditor', 'approver')),
    password_phc         TEXT    NOT NULL CHECK (password_phc LIKE '$argon2id$%'),
    must_change_password BOOLEAN NOT NULL,
    created_at           BIGINT  NOT NULL,
    disabled_at          BIGINT
);

CREATE FUNCTION vellum_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are never deleted';
END;
$$;
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
FOR EACH ROW EXECUTE FUNCTION vellum_account_guard();
