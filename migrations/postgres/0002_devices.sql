-- Capture devices and their one-time enrollment tokens (PostgreSQL).
-- Bearer secrets (enrollment tokens, device credentials) are 256-bit random values
-- stored only as their SHA-256.

CREATE TABLE enrollment_tokens (
    token_hash BYTEA  NOT NULL PRIMARY KEY,
    custodian  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    device_id  BYTEA
);

CREATE TABLE devices (
    device_id       BYTEA  NOT NULL PRIMARY KEY,
    public_key      BYTEA  NOT NULL,
    credential_hash BYTEA  NOT NULL UNIQUE,
    custodian       TEXT   NOT NULL,
    enrolled_at     BIGINT NOT NULL,
    revoked_at      BIGINT
);

-- A device is never deleted, and a revoked one stays revoked.
CREATE FUNCTION vellum_device_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'devices are never deleted';
    END IF;
    IF OLD.revoked_at IS NOT NULL
        AND (NEW.revoked_at IS NULL OR NEW.credential_hash <> OLD.credential_hash) THEN
        RAISE EXCEPTION 'a revoked device stays revoked';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER devices_guard BEFORE UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION vellum_device_guard();
