-- The retention classes a capture device may archive under (postgres). An enrollment token
-- names the class of its bundle; the device it enrolls is bound to that class, and a
-- capture naming another class is refused. An administrator changes the binding
-- (`vellum admin device set-retention`, audited).
ALTER TABLE enrollment_tokens ADD COLUMN retention TEXT;

CREATE TABLE device_retention (
    device_id BYTEA  NOT NULL,
    retention TEXT NOT NULL,
    PRIMARY KEY (device_id, retention)
);

-- Devices enrolled before: bound to the classes they already used, so no device's
-- captures start failing on upgrade. A device with no record yet is bound by its first
-- capture (audited then).
INSERT INTO device_retention (device_id, retention)
SELECT DISTINCT device_id, retention FROM record_index;

-- The devices this migration bound, until the gateway records each binding as an audit
-- event (`device.retention` by `migration`, a leaf of the log) at its next start.
CREATE TABLE device_retention_unaudited (
    device_id BYTEA NOT NULL PRIMARY KEY
);
INSERT INTO device_retention_unaudited (device_id)
SELECT DISTINCT device_id FROM device_retention;
