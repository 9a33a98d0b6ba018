-- The validation authority's projection of CA and certificate events (it never reads
-- schema ca), the CRLs it serves, and its delegated OCSP responders. Serials are
-- lower-case hex text, as in schema ca; a serial is unique per issuing CA.
CREATE TABLE va.cas (
    name text PRIMARY KEY,
    certificate_der bytea NOT NULL,
    status text NOT NULL,
    -- When to ask the CA worker for the next full / delta CRL (crl.sign).
    full_crl_due timestamptz,
    delta_crl_due timestamptz,
    -- The latest revocation time seen: a CRL signed before it does not cover it.
    last_revocation_at timestamptz
);

CREATE TABLE va.certificates (
    ca text NOT NULL,
    serial text NOT NULL,
    status text NOT NULL,
    revoked_at timestamptz,
    revocation_reason text,
    PRIMARY KEY (ca, serial)
);

-- The latest full and delta CRL of each CA; a lower number never replaces a higher.
CREATE TABLE va.crls (
    ca text NOT NULL,
    delta boolean NOT NULL,
    number numeric NOT NULL,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL,
    entries integer NOT NULL,
    der bytea NOT NULL,
    PRIMARY KEY (ca, delta)
);

-- Each CA's delegated responder (RFC 6960 §4.2.2.2): the key id in the VA's engine and
-- the certificate the CA worker issued for it, plus the request in flight for the next.
CREATE TABLE va.responders (
    ca text PRIMARY KEY,
    key_id text,
    certificate_der bytea,
    not_after timestamptz,
    pending_key_id text,
    pending_csr_fingerprint text,
    requested_at timestamptz
);

-- The CRL and responder upkeep looks for what is due.
CREATE INDEX cas_full_crl_due ON va.cas (full_crl_due);
CREATE INDEX cas_delta_crl_due ON va.cas (delta_crl_due);
