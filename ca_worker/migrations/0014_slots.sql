-- The certificate each device slot holds now (issue 14): only it may be renewed
-- (RFC 7030 §4.2.2), and simpleenroll replaces it only when the DMS allows. Numbered
-- after the issue so that migrations written alongside keep their numbers.
CREATE TABLE ca.slots (
    device_id text NOT NULL,
    slot text NOT NULL,
    serial text NOT NULL REFERENCES ca.certificates (serial),
    PRIMARY KEY (device_id, slot)
);

INSERT INTO ca.slots (device_id, slot, serial)
SELECT DISTINCT ON (device_id, coalesce(slot, 'default'))
       device_id, coalesce(slot, 'default'), serial
FROM ca.certificates
WHERE device_id IS NOT NULL
ORDER BY device_id, coalesce(slot, 'default'), created_at DESC, not_before DESC;

-- Decommissioning revokes every certificate a device was ever issued (issue 14).
CREATE INDEX certificates_device_id ON ca.certificates (device_id)
    WHERE device_id IS NOT NULL;
