-- DMS certificate renewal (issue 14): the certificate a renewal replaced keeps
-- authenticating the DMS until previous_valid_until (the overlap), so that its
-- gateways and factories can switch over.
ALTER TABLE dms.dms
    ADD COLUMN previous_certificate_serial text UNIQUE,
    ADD COLUMN previous_certificate_der bytea,
    ADD COLUMN previous_valid_until timestamptz;
