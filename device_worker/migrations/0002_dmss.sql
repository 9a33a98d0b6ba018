-- Projection of dms.create / dms.update: a device is registered only for a DMS that
-- exists and is not revoked (issue 14). Never read from the dms schema (DESIGN §1).
CREATE TABLE devices.dmss (
    name text PRIMARY KEY,
    status text NOT NULL
);
