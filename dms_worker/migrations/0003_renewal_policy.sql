-- Renewal policy per DMS (issue 14): how long before expiry a device may re-enroll
-- (0: any time), and whether a renewal revokes the certificate it supersedes.
ALTER TABLE dms.dms
    ADD COLUMN reenroll_window_days integer NOT NULL DEFAULT 0
        CHECK (reenroll_window_days >= 0),
    ADD COLUMN revoke_on_reenroll boolean NOT NULL DEFAULT true;
