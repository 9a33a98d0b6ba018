-- The cloud proxy's projection of the PKI (fed by ca.*, certificate.* and device.*
-- events, never read from another schema), its connections, and how far each item
-- got in each connector. Serials are lower-case hex text, as in schema ca.
CREATE TABLE cloud.connections (
    ca text NOT NULL,
    connector text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('register', 'jitp', 'sni-only')),
    policy text,
    thing_group text,
    provisioning_role_arn text,
    created_at timestamptz NOT NULL,
    -- Set once the CA and the certificates it issued before the connection existed
    -- have been read from the CA worker (the projection starts with the proxy).
    backfilled_at timestamptz,
    PRIMARY KEY (ca, connector)
);

CREATE TABLE cloud.cas (
    name text PRIMARY KEY,
    certificate_pem text NOT NULL,
    status text NOT NULL
);

CREATE TABLE cloud.certificates (
    serial text PRIMARY KEY,
    ca text NOT NULL,
    device_id text NOT NULL,
    slot text NOT NULL,
    status text NOT NULL,
    certificate_pem text NOT NULL,
    -- The serial of the certificate a re-enrollment issued in its place.
    replaced_by text
);
CREATE INDEX certificates_ca ON cloud.certificates (ca);
CREATE INDEX certificates_device ON cloud.certificates (device_id);

CREATE TABLE cloud.decommissioned_devices (
    id text PRIMARY KEY,
    decommissioned_at timestamptz NOT NULL
);

-- One row per (connector, CA or certificate) the proxy must keep in step. "pending"
-- rows are due at next_attempt_at; a claimer pushes next_attempt_at forward as a lease,
-- so replicas never work on one item at once.
CREATE TABLE cloud.items (
    connector text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('ca', 'certificate')),
    key text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'synced', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text,
    last_error_at timestamptz,
    synced_at timestamptz,
    -- Bumped by every change of what the item should be: a sync that started before
    -- the change does not mark the item synced (or failed) when it ends.
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (connector, kind, key)
);
CREATE INDEX items_due ON cloud.items (next_attempt_at) WHERE state <> 'synced';

-- A reconciliation asked for (by the schedule or cloud.reconcile) and not yet run.
CREATE TABLE cloud.reconciliations (
    connector text PRIMARY KEY,
    requested_at timestamptz,
    reconciled_at timestamptz
);
