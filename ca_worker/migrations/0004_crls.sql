-- CRL numbering per CA (RFC 5280 §5.2.3: full and delta CRLs share one increasing
-- sequence) and the base a delta CRL refers to: the latest full CRL's number and
-- thisUpdate. The CRLs themselves are published as crl.create events; the VA keeps them.
CREATE TABLE ca.crls (
    ca text PRIMARY KEY REFERENCES ca.cas (name),
    last_number numeric NOT NULL,
    full_number numeric NOT NULL,
    full_this_update timestamptz NOT NULL
);

-- A CRL lists a CA's revoked certificates: read them without visiting the others.
CREATE INDEX certificates_revoked ON ca.certificates (ca, revoked_at)
    WHERE status = 'REVOKED';
