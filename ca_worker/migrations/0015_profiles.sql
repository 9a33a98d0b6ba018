-- Issuance profiles (issue 14): named rules for what a leaf may say. The spec is the
-- ProfileSpec contract as JSON: configuration read whole, never queried by field.
CREATE TABLE ca.profiles (
    name text PRIMARY KEY,
    spec jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

-- The profile a CA issues under unless a DMS or the request names another; NULL: the
-- built-in 'client' profile, what every CA issued before.
ALTER TABLE ca.cas ADD COLUMN profile text;
