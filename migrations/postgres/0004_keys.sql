-- The keyring lifecycle (PostgreSQL): every keyring statement the gateway published,
-- one per epoch, and the wrapped copies of each epoch identity (age files sealed to
-- one auditor or to the escrow recipient, which the gateway cannot open). Auditors'
-- public recipients, and optionally their identity wrapped under their passphrase.

CREATE TABLE keyrings (
    epoch        BIGINT NOT NULL PRIMARY KEY,
    note         TEXT   NOT NULL,
    published_at BIGINT NOT NULL,
    published_by TEXT   NOT NULL
);

-- Epochs follow each other: after the first, each is the one after the newest.
CREATE FUNCTION vellum_consecutive_keyring() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM keyrings) AND NEW.epoch <> (SELECT MAX(epoch) + 1 FROM keyrings) THEN
        RAISE EXCEPTION 'keyrings must be consecutive';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER keyrings_consecutive BEFORE INSERT ON keyrings
    FOR EACH ROW EXECUTE FUNCTION vellum_consecutive_keyring();

-- holder: an account id in hex, or 'escrow'.
CREATE TABLE epoch_wraps (
    epoch    BIGINT NOT NULL REFERENCES keyrings (epoch),
    holder   TEXT   NOT NULL,
    wrapped  BYTEA  NOT NULL,
    added_at BIGINT NOT NULL,
    added_by TEXT   NOT NULL,
    PRIMARY KEY (epoch, holder)
);

CREATE INDEX epoch_wraps_holder ON epoch_wraps (holder);

CREATE TABLE auditor_keys (
    account_id BYTEA  NOT NULL PRIMARY KEY REFERENCES accounts (account_id),
    -- The auditor's personal age recipient (public): what others wrap epochs to.
    recipient  TEXT   NOT NULL,
    -- Optional: the auditor's identity sealed with age's scrypt recipient under their
    -- key passphrase, for the portal to open in the browser. Never opened here.
    identity   BYTEA,
    updated_at BIGINT NOT NULL
);

CREATE TRIGGER keyrings_append_only BEFORE UPDATE OR DELETE ON keyrings
    FOR EACH ROW EXECUTE FUNCTION vellum_append_only();
CREATE TRIGGER epoch_wraps_append_only BEFORE UPDATE OR DELETE ON epoch_wraps
    FOR EACH ROW EXECUTE FUNCTION vellum_append_only();
