-- DMSs (local registration authorities) and the devices they may no longer enroll.
-- Serials are lower-case hex text: a serial may be 20 octets (RFC 5280 §4.1.2.2).
CREATE TABLE dms.dms (
    name text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('ACTIVE', 'REVOKED')),
    authorized_cas text[] NOT NULL,
    certificate_serial text NOT NULL UNIQUE,
    certificate_der bytea NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revocation_reason text
);

-- Projection of device.status.update events: decommissioned devices never enroll again.
CREATE TABLE dms.decommissioned_devices (
    device_id text PRIMARY KEY,
    decommissioned_at timestamptz NOT NULL
);
