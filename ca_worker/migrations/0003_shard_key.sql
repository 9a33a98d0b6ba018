-- Each sweep shard reads only its own rows (DESIGN §4). The shard key is the serial's
-- low 32 bits (serials carry at least 64 random bits, so they are a uniform hash), and
-- shard k of n is the range [k * 2^32 / n, (k + 1) * 2^32 / n) of it: a range, unlike a
-- modulo, is an index condition. As the index's third column it is checked on the
-- index entry, so a shard visits the heap only for its own due rows.
ALTER TABLE ca.certificates
    ADD COLUMN shard_key bigint NOT NULL
    GENERATED ALWAYS AS (('x' || lpad(right(serial, 8), 8, '0'))::bit(32)::bigint) STORED;

DROP INDEX ca.certificates_status_not_after;
CREATE INDEX certificates_status_not_after_shard
    ON ca.certificates (status, not_after, shard_key);
