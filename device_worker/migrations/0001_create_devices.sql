-- Devices and the certificate each of their slots holds: a projection of the CA's
-- certificate events, never read from the CA schema (DESIGN §4). Serials are
-- lower-case hex text, as in schema ca.
CREATE TABLE devices.devices (
    id text PRIMARY KEY,
    dms text,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    decommissioned_at timestamptz
);

CREATE TABLE devices.slots (
    device_id text NOT NULL REFERENCES devices.devices (id),
    name text NOT NULL,
    serial text,
    certificate_status text,
    not_before timestamptz,
    not_after timestamptz,
    -- The serial this certificate renewed, so it outranks that one (device_worker.status).
    replaces text,
    PRIMARY KEY (device_id, name),
    CHECK ((serial IS NULL) = (certificate_status IS NULL)
       AND (serial IS NULL) = (not_before IS NULL)
       AND (serial IS NULL) = (not_after IS NULL))
);

-- Status updates find the slot by serial; listings filter by status and page by id.
CREATE INDEX slots_serial ON devices.slots (serial);
CREATE INDEX devices_status_id ON devices.devices (status, id);
