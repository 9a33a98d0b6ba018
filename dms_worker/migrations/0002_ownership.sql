-- Device ownership: a device belongs to the DMS that registered or first enrolled it,
-- and only that DMS enrolls it until an admin transfers it.
ALTER TABLE dms.dms ADD COLUMN allow_replace boolean NOT NULL DEFAULT false;

CREATE TABLE dms.devices (
    device_id text PRIMARY KEY,
    dms text NOT NULL REFERENCES dms.dms (name),
    since timestamptz NOT NULL
);
