-- CAs and the certificates they issue. Serials are lower-case hex text: a serial may be
-- 20 octets (RFC 5280 §4.1.2.2), which does not fit in bigint.
CREATE TABLE ca.cas (
    name text PRIMARY KEY,
    parent text REFERENCES ca.cas (name),
    internal boolean NOT NULL DEFAULT false,
    key_type text NOT NULL,
    key_id text NOT NULL,
    engine text NOT NULL,
    serial text NOT NULL UNIQUE,
    subject text NOT NULL,
    status text NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    revoked_at timestamptz,
    revocation_reason text,
    about_to_expire_days integer NOT NULL DEFAULT 30,
    certificate_der bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ca.certificates (
    serial text PRIMARY KEY,
    ca text NOT NULL REFERENCES ca.cas (name),
    subject text NOT NULL,
    issuer text NOT NULL,
    status text NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    revoked_at timestamptz,
    revocation_reason text,
    csr_fingerprint text NOT NULL,
    certificate_der bytea NOT NULL,
    -- Enrollment: the identity this certificate is for, and the idempotency key of
    -- the request that produced it (a retried EST request finds it here).
    device_id text,
    slot text,
    dms text,
    replaces text,
    request_id text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Sweeps select by (status, not_after); listings page by (ca, serial); retried
-- enrollments find their certificate by CSR fingerprint.
CREATE INDEX certificates_status_not_after ON ca.certificates (status, not_after);
CREATE INDEX certificates_ca_serial ON ca.certificates (ca, serial);
CREATE INDEX certificates_csr_fingerprint ON ca.certificates (csr_fingerprint);
