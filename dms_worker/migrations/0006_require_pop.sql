-- Proof-of-possession linking per DMS (issue 14, RFC 7030 §3.5).
ALTER TABLE dms.dms ADD COLUMN require_pop boolean NOT NULL DEFAULT false;
